import OpenAI from 'openai';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { DropSpec } from '../engine/plan/plan.ts';
import { analyzeSublayers } from '../pruning/analyze.ts';
import { lowestPerKind } from '../pruning/select.ts';
import { openWorkspace } from '../pruning/workspace.ts';
import type { VariantView } from '../server/admin/variants/route.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { describeWithAssets, TINYSTORIES_EVAL } from './support/shared-assets.ts';
import { eventually, STORIES_260K } from './support/test-server.ts';

/**
 * Live fidelity orders pruning levels the way it should: on stories260K, variants that drop the 1,
 * 2 and 3 attention layers the cosine metric ranks most redundant (computed with the pruning toolkit
 * on calibration stories) agree less and less with the full model, measured by the server's own
 * shadow scoring of real HTTP traffic. The 0-drop variant runs the full model's computation, so its
 * tokens scored by the full model must agree everywhere with KL ≈ 0.
 */
const DATA = TINYSTORIES_EVAL.path;
const CALIBRATION_STORIES = 8;
const NUM_PROMPTS = 12;
const MAX_TOKENS = 48;
const LEVELS = [0, 1, 2, 3] as const;

/** The opening words of stories the calibration did not see. */
function storyOpenings(documents: readonly string[]): string[] {
  return documents
    .slice(CALIBRATION_STORIES, CALIBRATION_STORIES + NUM_PROMPTS)
    .map((doc) => doc.split(/\s+/).slice(0, 6).join(' '));
}

describeWithAssets(
  [TINYSTORIES_EVAL],
  'fidelity against the full model is monotone in cosine-ranked attention drops (stories260K)',
  () => {
    let server: RunningServer;
    let specs: DropSpec[];
    let prompts: string[];
    beforeAll(async () => {
      const workspace = await openWorkspace({
        model: STORIES_260K,
        data: DATA,
        samples: CALIBRATION_STORIES,
        seqLen: 128,
        hiddenStates: true,
      });
      try {
        const analysis = await analyzeSublayers(
          { loss: workspace.loss, weights: workspace.model.weights },
          'cosine',
        );
        specs = LEVELS.map((k) => lowestPerKind(analysis.scores, { attention: k, mlp: 0 }));
        prompts = storyOpenings(workspace.corpus.documents ?? []);
      } finally {
        await workspace.close();
      }
      server = await startServer({
        host: '127.0.0.1',
        port: 0,
        grpcPort: 0,
        collectProcessMetrics: false,
        model: STORIES_260K,
        variants: LEVELS.map((k) => ({ name: `cos-${k}`, spec: specs[k]! })),
        kvCacheBytes: 64 * 1024 * 1024,
        shadowRate: 1,
        shadowMaxInFlight: 64,
      });
    }, 120_000);
    afterAll(() => server?.close(0));

    it('cosine ranking nests: each level drops the previous level’s layers plus one', () => {
      expect(prompts).toHaveLength(NUM_PROMPTS);
      for (const k of LEVELS) {
        expect(specs[k]!.dropAttention).toHaveLength(k);
        expect(specs[k]!.dropMlp).toEqual([]);
        if (k > 0)
          expect(specs[k]!.dropAttention).toEqual(expect.arrayContaining(specs[k - 1]!.dropAttention));
      }
    });

    it('agreement falls and KL rises over 0, 1, 2, 3 dropped layers; 0 drops agree everywhere', async () => {
      const client = new OpenAI({ baseURL: `${server.httpUrl}/v1`, apiKey: 'unused', maxRetries: 0 });
      const model = server.engine.model.name;
      // A sample is dropped (not scored) when interactive work waits or too many scores are in
      // flight as it finishes: each request is sent only once the previous one's score is in.
      let views: VariantView[] = [];
      for (const k of LEVELS) {
        for (const [i, prompt] of prompts.entries()) {
          await client.completions.create({
            model: `${model}:cos-${k}`,
            prompt,
            max_tokens: MAX_TOKENS,
            temperature: 0,
          });
          await eventually(async () => {
            views = (await (await fetch(`${server.httpUrl}/v1/variants`)).json()) as VariantView[];
            return views.find((v) => v.id === `${model}:cos-${k}`)?.fidelity?.samples === i + 1;
          });
        }
      }
      const fidelity = LEVELS.map((k) => views.find((v) => v.id === `${model}:cos-${k}`)!.fidelity!);
      console.log(
        'cosine-ranked attention drops on stories260K:\n' +
          LEVELS.map(
            (k) =>
              `  ${k} dropped (${specs[k]!.dropAttention.join(',') || '-'}): agreement ${fidelity[k]!.agreement.toFixed(4)}, ` +
              `KL ${fidelity[k]!.kl_mean.toFixed(4)}, ΔNLL ${fidelity[k]!.delta_nll_mean.toFixed(4)}, ` +
              `${fidelity[k]!.positions} positions`,
          ).join('\n'),
      );
      expect(fidelity[0]!.agreement).toBe(1);
      expect(fidelity[0]!.kl_mean).toBeLessThan(1e-5);
      expect(fidelity[0]!.delta_nll_mean).toBeLessThan(1e-5);
      for (const k of [1, 2, 3]) {
        expect(fidelity[k]!.agreement, `agreement ${k} < ${k - 1}`).toBeLessThan(fidelity[k - 1]!.agreement);
        expect(fidelity[k]!.kl_mean, `KL ${k} > ${k - 1}`).toBeGreaterThan(fidelity[k - 1]!.kl_mean);
      }
    }, 120_000);
  },
);
