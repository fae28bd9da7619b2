/**
 * Per-document perplexity through the batched ORT fast path against the plain-TS reference forward
 * pass, on the real stories260K model and the first stories of the shared eval text.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ModelSession } from '../engine/graph/model-session.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { maskOf } from '../engine/plan/plan.ts';
import { ReferenceModel } from '../engine/reference/forward.ts';
import { tokenLogprob } from '../engine/sampling/log-softmax.ts';
import { describeWithAssets, STORIES_260K, TINYSTORIES_EVAL } from '../tests/support/shared-assets.ts';
import { readCorpus } from './corpus.ts';
import { corpusPerplexity } from './perplexity.ts';
import { evaluationSequences } from './sequences.ts';

const DATA = TINYSTORIES_EVAL.path;
const NUM_STORIES = 20;

let model: LoadedModel;
let session: ModelSession;

/** Reference mean NLL of the same sequences, one story at a time. */
function referenceNll(
  sequences: { tokens: number[] }[],
  dropAttention: number[],
): { meanNll: number; numTokens: number } {
  let nll = 0;
  let numTokens = 0;
  const mask = maskOf({ dropAttention, dropMlp: [] }, model.config.numLayers);
  for (const { tokens } of sequences) {
    const logits = new ReferenceModel(model.config, model.weights).forward(tokens, mask);
    for (let t = 1; t < tokens.length; t++) nll -= tokenLogprob(logits[t - 1]!, tokens[t]!);
    numTokens += tokens.length - 1;
  }
  return { meanNll: nll / numTokens, numTokens };
}

describeWithAssets([TINYSTORIES_EVAL], 'per-document perplexity on stories260K', () => {
  beforeAll(async () => {
    model = await loadModel({ model: STORIES_260K });
    session = await ModelSession.create(model.config, model.weights);
  });
  afterAll(async () => {
    await session?.release();
  });

  it(`first ${NUM_STORIES} stories (full) and 6 (attention 2 dropped): batched graph NLL = reference NLL to 1e-4`, async () => {
    const corpus = readCorpus(DATA);
    for (const [dropAttention, numStories] of [
      [[], NUM_STORIES],
      [[2], 6],
    ] as const) {
      const { sequences } = evaluationSequences(model.tokenizer, corpus, model.config.maxSeqLen, {
        maxDocs: numStories,
      });
      const mask = maskOf({ dropAttention: [...dropAttention], dropMlp: [] }, model.config.numLayers);
      const report = await corpusPerplexity(
        session,
        model.tokenizer,
        corpus,
        mask,
        { maxDocs: numStories },
        { maxBatchTokens: 1024 },
      );
      const reference = referenceNll(sequences, [...dropAttention]);
      expect(report.mode).toBe('documents');
      expect(report.numDocuments).toBe(numStories);
      expect(report.numTokens).toBe(reference.numTokens);
      expect(Math.abs(report.meanNll - reference.meanNll)).toBeLessThan(1e-4);
      expect(report.perplexity).toBeCloseTo(Math.exp(reference.meanNll), 3);
      // 2 (K, V) × kept layers × 4 kv heads × head_dim 8 × 4 bytes
      expect(report.kvBytesPerToken).toBe(2 * (5 - dropAttention.length) * 4 * 8 * 4);
    }
  });

  it('batching does not change scores: one run per story gives the same NLL', async () => {
    const corpus = readCorpus(DATA);
    const mask = maskOf({ dropAttention: [], dropMlp: [] }, model.config.numLayers);
    const slice = { skipDocs: 40, maxDocs: 6 };
    const batched = await corpusPerplexity(session, model.tokenizer, corpus, mask, slice, {
      maxBatchTokens: 4096,
    });
    const single = await corpusPerplexity(session, model.tokenizer, corpus, mask, slice, {
      maxBatchTokens: 1,
    });
    expect(batched.numTokens).toBe(single.numTokens);
    expect(Math.abs(batched.meanNll - single.meanNll)).toBeLessThan(1e-6);
  });
});
