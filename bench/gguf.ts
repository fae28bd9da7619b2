import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { ModelSession } from '../engine/graph/model-session.ts';
import { compareSessions } from '../engine/graph/testing/compare-decode.ts';
import { GGUF_WRITE_TYPES, writeModelAsGguf } from '../engine/model/gguf-writer.ts';
import { loadModel } from '../engine/model/load-model.ts';
import { dequantizedWeights } from '../engine/quant/quantize-weights.ts';
import { commitId, median, printTable, STORIES260K } from './common.ts';

/**
 * `dropserve bench gguf` (npm run bench:gguf): each model written as F32 / F16 / Q8_0 / Q4_0 GGUF
 * and loaded back. Baselines in the same run: the source checkpoint's load time, the F32 file's size,
 * and the source model's logits. Per type: file size and load time ratios, and the largest logit
 * difference over a prefill and 24 greedy steps against (a) the float32 model on the very values the
 * file holds (the mapping must be lossless: ~1e-5, float rounding only) and (b) the source model
 * (what the storage type costs).
 */
const HF_MODEL = '../shared/models/tinystories-656K';
const STEPS = 24;

export async function runGgufBench(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { reps: { type: 'string', default: '5' }, hf: { type: 'string', default: HF_MODEL } },
  });
  const reps = Number(values.reps);
  const sources = [{ name: 'stories260K (llama2.c)', spec: STORIES260K }];
  if (fs.existsSync(values.hf)) sources.push({ name: 'tinystories-656K (HF)', spec: values.hf });
  else console.log(`${values.hf} not found: the Hugging Face model is skipped`);
  console.log(
    `bench gguf: load time median of ${reps} loads, logits over prefill + ${STEPS} steps, commit ${commitId()}`,
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-bench-gguf-'));
  try {
    for (const source of sources) {
      const timeLoad = async (spec: string) => {
        const times: number[] = [];
        for (let r = 0; r < reps; r++) {
          const start = performance.now();
          await loadModel({ model: spec });
          times.push(performance.now() - start);
        }
        return median(times);
      };
      const original = await loadModel({ model: source.spec });
      const baselineMs = await timeLoad(source.spec);
      const originalSession = await ModelSession.create(original.config, original.weights);
      const rows: (string | number)[][] = [['source', '-', '-', baselineMs.toFixed(1), '1.00×', '-', '0']];
      let f32Bytes = 0;
      for (const type of GGUF_WRITE_TYPES) {
        const file = path.join(dir, `${type}.gguf`);
        writeModelAsGguf(file, original, { type });
        const bytes = fs.statSync(file).size;
        if (type === 'f32') f32Bytes = bytes;
        const loadMs = await timeLoad(file);
        const gguf = await loadModel({ model: file });
        const prompt = gguf.tokenizer.encode('Once upon a time', { addBos: true });
        // accuracy_level 0: MatMulNBits dequantizes to float32, so (a) isolates the mapping
        const stored = await ModelSession.create(gguf.config, gguf.weights, { accuracyLevel: 0 });
        const float = await ModelSession.create(gguf.config, dequantizedWeights(gguf.weights));
        try {
          const vsValues = await compareSessions(stored, float, gguf.config, prompt, STEPS);
          const vsSource = await compareSessions(stored, originalSession, gguf.config, prompt, STEPS);
          rows.push([
            type,
            `${(bytes / 1024).toFixed(0)} KiB`,
            `${(bytes / f32Bytes).toFixed(2)}×`,
            loadMs.toFixed(1),
            `${(loadMs / baselineMs).toFixed(2)}×`,
            vsValues.toExponential(1),
            vsSource.toExponential(1),
          ]);
        } finally {
          await stored.release();
          await float.release();
        }
      }
      await originalSession.release();
      console.log(`\n${source.name}`);
      printTable(
        ['type', 'file', 'vs F32', 'load ms', 'vs source', 'max|Δlogit| vs its values', 'vs source model'],
        rows,
      );
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return 0;
}
