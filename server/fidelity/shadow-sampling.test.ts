import { describe, expect, it } from 'vitest';
import { DEFAULT_SAMPLING, type GenerateRequest } from '../../engine/client.ts';
import { generatedTokenIds } from '../../engine/output/token-ids.ts';
import { FakeEngine } from '../testing/fake-engine.ts';
import { ShadowSamplingEngine, type ShadowSkipReason } from './shadow-sampling.ts';
import { type FinishedGeneration, ShadowScorer } from './shadow-scorer.ts';

/** A scorer that samples every pruned request and keeps what it is given instead of scoring it. */
class RecordingScorer extends ShadowScorer {
  readonly submitted: FinishedGeneration[] = [];
  override async submit(generation: FinishedGeneration): Promise<null> {
    this.submitted.push(generation);
    return null;
  }
}

const request = (variant: string, extra: Partial<GenerateRequest> = {}): GenerateRequest => ({
  requestId: `r-${Math.random()}`,
  variant,
  promptTokenIds: [1, 2, 3],
  maxTokens: 5,
  sampling: DEFAULT_SAMPLING,
  ignoreEos: true,
  transport: 'http',
  ...extra,
});

function drain(engine: ShadowSamplingEngine, r: GenerateRequest, signal?: AbortSignal): Promise<number[]> {
  return generatedTokenIds(engine.generate(r, signal));
}

const nextMacrotask = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function setup(): {
  fake: FakeEngine;
  scorer: RecordingScorer;
  engine: ShadowSamplingEngine;
  sampled: string[];
  skipped: [string, ShadowSkipReason][];
} {
  const fake = new FakeEngine({ variants: [{ name: 'attn-1', spec: { dropAttention: [1], dropMlp: [] } }] });
  const scorer = new RecordingScorer({ engine: fake, rate: 1 });
  const sampled: string[] = [];
  const skipped: [string, ShadowSkipReason][] = [];
  const engine = new ShadowSamplingEngine(fake, scorer, {
    onSampled: (v) => sampled.push(v),
    onSkipped: (v, reason) => skipped.push([v, reason]),
  });
  return { fake, scorer, engine, sampled, skipped };
}

describe('ShadowSamplingEngine', () => {
  it('records a sampled client request and submits prompt + completion after its finish', async () => {
    const { fake, scorer, engine, sampled } = setup();
    const ids = await drain(engine, request('fake-model:attn-1'));
    expect(fake.recentRequests.at(-1)!.recordDistributions).toBe(true);
    expect(sampled).toEqual(['fake-model:attn-1']);
    // Queued behind the response's own work, not submitted synchronously with the finish event.
    expect(scorer.submitted).toHaveLength(0);
    await nextMacrotask();
    expect(scorer.submitted).toEqual([
      {
        variant: 'fake-model:attn-1',
        promptTokenIds: [1, 2, 3],
        completionTokenIds: ids,
        distributions: ids.map(() => undefined),
      },
    ]);
  });

  it('passes through the full model, internal and background work untouched', async () => {
    const { fake, scorer, engine, sampled } = setup();
    await drain(engine, request('fake-model'));
    await drain(engine, request('fake-model:attn-1', { transport: 'internal' }));
    await drain(engine, request('fake-model:attn-1', { priority: 'background' }));
    await nextMacrotask();
    expect(fake.recentRequests.map((r) => r.recordDistributions)).toEqual([undefined, undefined, undefined]);
    expect(sampled).toEqual([]);
    expect(scorer.submitted).toEqual([]);
  });

  it('skips a sampled request that was aborted, or that the consumer left early', async () => {
    const { scorer, engine, skipped } = setup();
    const controller = new AbortController();
    controller.abort();
    await drain(engine, request('fake-model:attn-1'), controller.signal);
    for await (const e of engine.generate(request('fake-model:attn-1'))) if (e.type === 'token') break;
    await nextMacrotask();
    expect(skipped).toEqual([
      ['fake-model:attn-1', 'unfinished'],
      ['fake-model:attn-1', 'unfinished'],
    ]);
    expect(scorer.submitted).toEqual([]);
  });
});
