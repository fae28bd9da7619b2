import { parseArgs } from 'node:util';
import type { RequestTimings } from '../engine/client.ts';
import { createEngine, type InProcessEngine } from '../engine/engine.ts';
import { benchModels, benchRequest, commitId, median, printTable } from './common.ts';

/**
 * Prefix reuse: N concurrent requests share a long prefix (a "system prompt") and differ in a short
 * question. With reuse on, the first request computes the prefix and the others copy its KV and
 * prefill only their question. Measured from the engine's timings: prefill time (admitted → prefill
 * done) and TTFT (arrival → first token, queueing included), reuse off vs on in the same run,
 * rounds alternating, warm-up excluded.
 */
export async function runPrefixBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      requests: { type: 'string', default: '8' },
      prefix: { type: 'string', default: '300' },
      question: { type: 'string', default: '12' },
      tokens: { type: 'string', default: '4' },
      rounds: { type: 'string', default: '5' },
    },
  });
  const requests = Number(values.requests);
  const questionLength = Number(values.question);
  const tokens = Number(values.tokens);
  const rounds = Number(values.rounds);
  console.log(
    `bench prefix: ${requests} concurrent requests, ${values.prefix}-token shared prefix + ${questionLength}-token question, ${tokens} greedy tokens, ${rounds} rounds per mode (alternating), commit ${commitId()}`,
  );
  for (const { name, model } of await benchModels()) {
    const prefixLength = Math.min(
      Number(values.prefix),
      model.config.maxSeqLen - questionLength - tokens - 1,
    );
    const vocab = model.config.vocabSize;
    const prefix = [
      1,
      ...Array.from({ length: prefixLength - 1 }, (_, i) => 3 + ((i * 37 + 11) % (vocab - 3))),
    ];
    const promptsFor = (round: number): number[][] =>
      Array.from({ length: requests }, (_, q) => [
        ...prefix,
        3 + ((round * requests + q) % (vocab - 3)), // distinct first question token
        ...Array.from(
          { length: questionLength - 1 },
          (_, i) => 3 + ((q * 97 + i * 13 + round) % (vocab - 3)),
        ),
      ]);
    const off = await createEngine({ model, servedModelName: name });
    const on = await createEngine({ model, servedModelName: name, prefixReuse: { minPrefixTokens: 16 } });
    const results = { off: [] as RequestTimings[][], on: [] as RequestTimings[][] };
    for (let round = -1; round < rounds; round++) {
      for (const mode of ['off', 'on'] as const) {
        const timings = await runRound(mode === 'off' ? off : on, name, promptsFor(round + 1), tokens);
        if (round >= 0) results[mode].push(timings); // round -1 is the warm-up
      }
    }
    const reused = on.core.prefixReusedTokens;
    await off.close();
    await on.close();

    const prefillMs = (t: RequestTimings): number => t.prefillEndMs! - t.scheduledMs!;
    const ttftMs = (t: RequestTimings): number => t.firstTokenMs! - t.arrivalMs;
    const summary = (mode: 'off' | 'on') => {
      const all = results[mode].flat();
      // Per round, the first admitted request has no donor; the others can reuse its prefix.
      const followers = results[mode].flatMap((r) =>
        [...r].sort((a, b) => a.scheduledMs! - b.scheduledMs!).slice(1),
      );
      return {
        prefill: median(all.map(prefillMs)),
        followerPrefill: median(followers.map(prefillMs)),
        ttft: median(all.map(ttftMs)),
        lastFirstToken: median(
          results[mode].map(
            (r) => Math.max(...r.map((t) => t.firstTokenMs!)) - Math.min(...r.map((t) => t.arrivalMs)),
          ),
        ),
      };
    };
    const base = summary('off');
    const reuse = summary('on');
    const row = (mode: string, s: typeof base): (string | number)[] => [
      `${name} reuse ${mode}`,
      s.prefill.toFixed(2),
      s.followerPrefill.toFixed(2),
      s.ttft.toFixed(2),
      s.lastFirstToken.toFixed(2),
    ];
    const ratio = (a: number, b: number): string => `${(a / b).toFixed(2)}×`;
    printTable(
      ['model / mode', 'prefill p50 ms', 'followers prefill p50 ms', 'TTFT p50 ms', 'last first token ms'],
      [
        row('off', base),
        row('on', reuse),
        [
          'on/off',
          ratio(reuse.prefill, base.prefill),
          ratio(reuse.followerPrefill, base.followerPrefill),
          ratio(reuse.ttft, base.ttft),
          ratio(reuse.lastFirstToken, base.lastFirstToken),
        ],
      ],
    );
    const expected = (rounds + 1) * (requests - 1) * prefixLength;
    console.log(
      `prefix ${prefixLength} tokens; reused tokens with reuse on: ${reused} (expected ${expected})\n`,
    );
  }
  return 0;
}

async function runRound(
  engine: InProcessEngine,
  variant: string,
  prompts: number[][],
  tokens: number,
): Promise<RequestTimings[]> {
  return Promise.all(
    prompts.map(async (prompt) => {
      for await (const event of engine.generate(benchRequest(variant, prompt, tokens))) {
        if (event.type === 'finish') return event.timings;
      }
      throw new Error('no finish event');
    }),
  );
}
