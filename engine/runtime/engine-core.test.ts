import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateEvent, type GenerateRequest } from '../client.ts';
import type { ForwardInput, ForwardOutput } from '../graph/io.ts';
import type { ModelConfig } from '../model/config.ts';
import { EngineCore, type EngineCoreOptions } from './engine-core.ts';
import type { ForwardRunner } from './forward-runner.ts';

/**
 * The engine core over a fake model that reads its KV: each new position's key is (token, position),
 * and the next token is a hash of every key the past tensor holds for the row plus the fed token.
 * A row whose cache lost, duplicated or misplaced a position — a wrong preemption recompute, a bad
 * prefix copy, rows mixed up after a removal — generates different tokens than an unconstrained run.
 */
const config: ModelConfig = {
  architecture: 'llama',
  dim: 4,
  hiddenDim: 8,
  numLayers: 3,
  numHeads: 1,
  numKvHeads: 1,
  headDim: 2,
  vocabSize: 97,
  maxSeqLen: 200,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeInterleaved: true,
  hasQkvBias: false,
  tieWordEmbeddings: false,
  bosTokenId: 1,
  eosTokenIds: [],
};

class HashingRunner implements ForwardRunner {
  runs: ForwardInput[] = [];

  async run(input: ForwardInput): Promise<ForwardOutput> {
    this.runs.push(input);
    const { batchSize: B, seqLen: S, pastCapacity: P } = input;
    const layers = input.mask.attnKeep;
    const newKeys = layers.map((keep) => (keep ? new Float32Array(B * S * 2) : null));
    const newValues = layers.map((keep) => (keep ? new Float32Array(B * S * 2) : null));
    const logits = new Float32Array(input.logitsIndex.length * config.vocabSize);
    const wanted = new Map(input.logitsIndex.map((flat, i) => [flat, i]));
    for (let b = 0; b < B; b++) {
      // Hash of the cached positions, from every kept layer's past (they must agree).
      let hash = 0;
      layers.forEach((keep, l) => {
        if (!keep) return;
        const past = input.past[l]!.key;
        let h = 0;
        for (let q = 0; q < input.pastLengths[b]!; q++) {
          const at = (b * P + q) * 2;
          if (past[at + 1] !== q) throw new Error(`layer ${l} row ${b}: position ${q} holds ${past[at + 1]}`);
          h = (h * 31 + past[at]! * (q + 1)) % 1_000_003;
        }
        hash = h;
      });
      for (let s = 0; s < S; s++) {
        const flat = b * S + s;
        const token = Number(input.inputIds[flat]);
        const position = Number(input.positionIds[flat]);
        hash = (hash * 31 + token * (position + 1)) % 1_000_003;
        layers.forEach((keep, l) => {
          if (!keep) return;
          newKeys[l]!.set([token, position], flat * 2);
          newValues[l]!.set([token, position], flat * 2);
        });
        const i = wanted.get(flat);
        if (i !== undefined) logits[i * config.vocabSize + 2 + (hash % (config.vocabSize - 2))] = 10;
      }
    }
    return {
      logits,
      newKeys,
      newValues,
      ...(input.wantHiddenStates ? { hiddenStates: hiddenStates(input) } : {}),
    };
  }

  async release(): Promise<void> {}
}

/**
 * Residual streams whose change across each sublayer depends on the row's first token, so different
 * prompts find different sublayers least influential (an adaptive variant's choice).
 */
function hiddenStates(input: ForwardInput): Float32Array[] {
  const { batchSize: B, seqLen: S } = input;
  return Array.from({ length: 2 * config.numLayers + 1 }, (_, k) => {
    const h = new Float32Array(B * S * config.dim);
    for (let b = 0; b < B; b++) {
      const first = Number(input.inputIds[b * S]);
      for (let s = 0; s < S; s++) {
        const at = (b * S + s) * config.dim;
        h[at] = 1;
        h[at + 1] = ((k * (first + 3)) % 7) / 3;
      }
    }
    return h;
  });
}

const bytesPerToken = (keptLayers: number): number => 2 * keptLayers * 1 * 2 * 4;

function makeCore(options: Partial<EngineCoreOptions>, runner = new HashingRunner()) {
  const core = new EngineCore({
    config,
    runner,
    variants: [
      { id: 'm', spec: { dropAttention: [], dropMlp: [] } },
      { id: 'm:attn-1', spec: { dropAttention: [1], dropMlp: [] } },
    ],
    kvCacheBytes: 1 << 20,
    maxQueue: 1000,
    ...options,
  });
  return { core, runner };
}

function request(id: string, variant: string, prompt: number[], maxTokens: number): GenerateRequest {
  return {
    requestId: id,
    variant,
    promptTokenIds: prompt,
    maxTokens,
    sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
  };
}

function generate(core: EngineCore, req: GenerateRequest): Promise<GenerateEvent[]> {
  return new Promise((resolve) => {
    const events: GenerateEvent[] = [];
    core.submit(req, (event) => {
      events.push(event);
      if (event.type === 'finish') resolve(events);
    });
  });
}

const tokensOf = (events: GenerateEvent[]): number[] =>
  events.flatMap((e) => (e.type === 'token' ? [e.tokenId] : []));

/** 24 requests of mixed prompt and output lengths over both variants. */
const workload = (): GenerateRequest[] =>
  Array.from({ length: 24 }, (_, i) =>
    request(
      `r${i}`,
      i % 3 === 0 ? 'm:attn-1' : 'm',
      Array.from({ length: 3 + ((i * 7) % 13) }, (_, k) => 2 + ((i * 11 + k * 5) % 90)),
      5 + ((i * 17) % 60),
    ),
  );

describe('EngineCore: KV on demand', () => {
  it('preempts under a tight budget and still produces, token for token, the unconstrained output', async () => {
    const free = makeCore({});
    const expected = await Promise.all(workload().map((r) => generate(free.core, r)));
    await free.core.close();

    // Room for about four full-model rows of 80 tokens: far less than 24 sequences need.
    const tight = makeCore({ kvCacheBytes: 4 * 80 * bytesPerToken(3), kvBlockTokens: 8 });
    let peakAllocated = 0;
    tight.core.onStepEnd = () => {
      peakAllocated = Math.max(peakAllocated, tight.core.kvMemory().allocatedBytes);
    };
    const actual = await Promise.all(workload().map((r) => generate(tight.core, r)));
    const preemptions = tight.core.variants().reduce((sum, v) => sum + v.numPreemptions, 0);
    await tight.core.close();

    expect(preemptions).toBeGreaterThan(0);
    expect(peakAllocated).toBeLessThanOrEqual(4 * 80 * bytesPerToken(3));
    actual.forEach((events, i) => {
      expect(tokensOf(events), `request r${i}`).toEqual(tokensOf(expected[i]!));
      // Nothing sent twice: token indices run 0..n-1 once each.
      const indices = events.flatMap((e) => (e.type === 'token' ? [e.index] : []));
      expect(indices).toEqual(indices.map((_, k) => k));
      expect(events.at(-1)).toMatchObject({ type: 'finish', reason: 'length' });
    });
  });

  it('an adaptive variant preempted under a tight budget recomputes under the drops it chose, same tokens', async () => {
    const adaptiveVariants = [
      { id: 'm', spec: { dropAttention: [], dropMlp: [] } },
      { id: 'm:auto', spec: { dropAttention: [], dropMlp: [] }, adaptive: { attention: 1, mlp: 0 } },
    ];
    const run = async (kvCacheBytes: number) => {
      const { core } = makeCore({ variants: adaptiveVariants, kvCacheBytes, kvBlockTokens: 8 });
      const events = await Promise.all(
        workload().map((r, i) => generate(core, { ...r, variant: i % 2 === 0 ? 'm:auto' : 'm' })),
      );
      const info = core.variants().find((v) => v.id === 'm:auto')!;
      await core.close();
      return { events, info };
    };
    const free = await run(1 << 20);
    const tight = await run(4 * 80 * bytesPerToken(3));
    expect(tight.info.numPreemptions).toBeGreaterThan(0);
    expect(free.info.adaptive?.distinctMasks).toBeGreaterThan(1);
    tight.events.forEach((events, i) => {
      expect(tokensOf(events), `request r${i}`).toEqual(tokensOf(free.events[i]!));
      expect(events.at(-1)).toMatchObject({ type: 'finish', reason: 'length' });
      expect((events.at(-1) as { adaptiveDrops?: unknown }).adaptiveDrops).toEqual(
        (free.events[i]!.at(-1) as { adaptiveDrops?: unknown }).adaptiveDrops,
      );
    });
  });

  it('runs more sequences at once than worst-case reservation allows', async () => {
    // Budget: 2 worst cases (prompt 4 + max_tokens 60 = 64 tokens) of the full model.
    const budget = 2 * 64 * bytesPerToken(3);
    const peakRunning = async (admission: 'on-demand' | 'worst-case') => {
      const { core } = makeCore({ kvCacheBytes: budget, kvBlockTokens: 8, kvAdmission: admission });
      let peak = 0;
      core.onStepEnd = () => {
        peak = Math.max(peak, core.variants()[0]!.requestsRunning);
      };
      await Promise.all(
        Array.from({ length: 12 }, (_, i) =>
          generate(core, { ...request(`c${i}`, 'm', [3, 4, 5, 6 + i], 60), stopTokenIds: [] }),
        ),
      );
      await core.close();
      return peak;
    };
    expect(await peakRunning('worst-case')).toBe(2);
    expect(await peakRunning('on-demand')).toBeGreaterThan(2);
  });

  it('keeps background scores inside the budget and lets them be preempted and restarted', async () => {
    const budget = 3 * 64 * bytesPerToken(3);
    const { core } = makeCore({ kvCacheBytes: budget, kvBlockTokens: 8 });
    const reference = makeCore({});
    let peakAllocated = 0;
    core.onStepEnd = () => {
      peakAllocated = Math.max(peakAllocated, core.kvMemory().allocatedBytes);
    };
    const tokens = Array.from({ length: 150 }, (_, k) => 2 + ((k * 13) % 90));
    const scoreRequest = {
      requestId: 's',
      variant: 'm',
      tokenIds: tokens,
      fromIndex: 1,
      priority: 'background' as const,
    };
    const [score, ...generations] = await Promise.all([
      core.score(scoreRequest),
      ...workload()
        .slice(0, 8)
        .map((r) => generate(core, r)),
    ]);
    const expectedScore = await reference.core.score({ ...scoreRequest, priority: 'interactive' });
    await core.close();
    await reference.core.close();
    expect(peakAllocated).toBeLessThanOrEqual(budget);
    expect(score.argmaxIds).toEqual(expectedScore.argmaxIds);
    expect(generations.every((events) => events.at(-1)?.type === 'finish')).toBe(true);
  });

  it('reports KV used by live blocks and allocated bytes per variant', async () => {
    const { core, runner } = makeCore({ kvBlockTokens: 8 });
    let sawRunning = false;
    const done = generate(core, request('x', 'm:attn-1', [5, 6, 7], 12));
    core.onStepEnd = () => {
      const v = core.variants().find((i) => i.id === 'm:attn-1')!;
      if (v.requestsRunning === 1 && runner.runs.length === 3) {
        sawRunning = true;
        // 3 prompt tokens + 2 decoded → 5 cached tokens: one block of 8 in use.
        expect(v.kvCacheBytesUsed).toBe(8 * bytesPerToken(2));
        expect(v.kvCacheBytesAllocated).toBeGreaterThanOrEqual(v.kvCacheBytesUsed);
        expect(v.kvBlockTokens).toBe(8);
        expect(v.kvAdmission).toBe('on-demand');
      }
    };
    await done;
    await core.close();
    expect(sawRunning).toBe(true);
  });
});
