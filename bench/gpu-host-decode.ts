/**
 * The baseline of `bench gpu`: the same greedy batch as kv-cache/device-decode.ts, with the KV cache
 * in JS memory as the engine keeps it today (engine/graph/testing/js-kv-cache.ts). On a GPU EP every
 * step uploads the whole past of every kept layer and fetches the new rows back.
 */
import type { SublayerMask } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import { argmax, JsKvCache, runAndCache } from '../engine/graph/testing/js-kv-cache.ts';
import type { DeviceDecodeResult, GreedyRequest, StepTransfer } from '../kv-cache/device-decode.ts';
import { blockAligned } from '../kv-cache/kv-layout.ts';

/** Every request joins at step 0 and runs to maxTokens (all equal): a fixed batch, as the bench needs. */
export async function hostGreedyDecode(
  session: ModelSession,
  mask: SublayerMask,
  requests: readonly GreedyRequest[],
  blockTokens: number,
): Promise<Omit<DeviceDecodeResult, 'peakAllocatedBytes'>> {
  const started = performance.now();
  const maxTokens = requests[0]!.maxTokens;
  const longestPrompt = Math.max(...requests.map((r) => r.prompt.length));
  const capacity = blockAligned(longestPrompt + maxTokens, blockTokens);
  const batch = new JsKvCache(session.config, requests.length, capacity, mask.attnKeep);
  const tokens = new Map<string, number[]>();
  const firstTokenMs = new Map<string, number>();
  for (const [row, request] of requests.entries()) {
    const alone = new JsKvCache(
      session.config,
      1,
      blockAligned(request.prompt.length, blockTokens),
      mask.attnKeep,
    );
    const logits = await runAndCache(session, alone, [request.prompt], mask);
    batch.copyRowFrom(alone, 0, row);
    tokens.set(request.id, [argmax(logits.at(-1)!)]);
    firstTokenMs.set(request.id, performance.now() - started);
  }
  const steps: StepTransfer[] = [];
  for (let step = 1; step < maxTokens; step++) {
    const longestContext = Math.max(...batch.lengths);
    const before = session.transfers;
    const stepStart = performance.now();
    const logits = await runAndCache(
      session,
      batch,
      requests.map((r) => [tokens.get(r.id)!.at(-1)!]),
      mask,
    );
    const after = session.transfers;
    steps.push({
      step,
      batch: requests.length,
      longestContext,
      hostToDeviceBytes: after.hostToDeviceBytes - before.hostToDeviceBytes,
      deviceToHostBytes: after.deviceToHostBytes - before.deviceToHostBytes,
      ms: performance.now() - stepStart,
    });
    requests.forEach((r, row) => {
      tokens.get(r.id)!.push(argmax(logits[row]!));
    });
  }
  return { tokens, steps, firstTokenMs };
}
