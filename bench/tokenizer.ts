import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Llama2cTokenizer } from '../engine/tokenizer/llama2c-tokenizer.ts';
import { commitId, median, printTable } from './common.ts';

/**
 * `dropserve bench tokenizer` (npm run bench:tokenizer): llama2.c BPE encode time as the text grows,
 * against the smallest text measured in the same run. A merge heap keeps encoding near linear, so
 * µs/char should stay flat (ratio ≈ 1×); the rescan-every-pair loop of run.c grows with the length.
 */
const TOK512 = fileURLToPath(new URL('../models/stories260K/tok512.bin', import.meta.url));
const SIZES = [2048, 8192, 32768];

export async function runTokenizerBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      reps: { type: 'string', default: '7' },
      data: { type: 'string', default: '../shared/data/tinystories-eval.txt' },
      tokenizer: { type: 'string', default: '../shared/models/llama2c-tokenizer/tokenizer.bin' },
    },
  });
  const reps = Number(values.reps);
  const source = existsSync(values.data)
    ? readFileSync(values.data, 'utf8')
    : 'Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. “Can you help me?” she asked.\n';
  let text = source;
  while (text.length < SIZES.at(-1)!) text += source;
  console.log(
    `bench tokenizer: encode ${SIZES.join(' / ')} chars of ${existsSync(values.data) ? values.data : 'a built-in paragraph'}, median of ${reps} reps, commit ${commitId()}`,
  );
  const tokenizers = [{ name: 'tok512 (stories260K)', file: TOK512 }];
  if (existsSync(values.tokenizer)) tokenizers.push({ name: 'Llama 2 32000', file: values.tokenizer });
  else console.log(`${values.tokenizer} not found: the 32000-piece vocabulary is skipped`);
  for (const { name, file } of tokenizers) {
    const tokenizer = Llama2cTokenizer.fromFile(file);
    tokenizer.encode(text.slice(0, SIZES[0]!)); // warm-up
    const rows = SIZES.map((size) => {
      const slice = text.slice(0, size);
      const times: number[] = [];
      let tokens = 0;
      for (let r = 0; r < reps; r++) {
        const start = performance.now();
        tokens = tokenizer.encode(slice, { addBos: true }).length;
        times.push(performance.now() - start);
      }
      return { size, tokens, ms: median(times) };
    });
    const baseUsPerChar = (rows[0]!.ms * 1000) / rows[0]!.size;
    console.log(`\n${name}`);
    printTable(
      ['chars', 'tokens', 'encode ms', 'µs/char', 'µs/char vs 2048'],
      rows.map((r) => {
        const usPerChar = (r.ms * 1000) / r.size;
        return [
          r.size,
          r.tokens,
          r.ms.toFixed(2),
          usPerChar.toFixed(3),
          `${(usPerChar / baseUsPerChar).toFixed(2)}×`,
        ];
      }),
    );
  }
  return 0;
}
