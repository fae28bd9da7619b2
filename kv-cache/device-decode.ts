/**
 * Greedy decoding of a batch of requests with the KV cache kept on the device: the loop a
 * device-resident engine runs, in its smallest form (one variant, continuous batching — requests
 * join at a step of their choosing and leave when done). Tests compare its tokens with the host
 * path and the benchmark measures it; the engine core will drive DeviceKvArena itself.
 */
import type { SublayerMask } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import { DeviceKvArena, type DeviceKvGraphs } from './device-arena.ts';
import { DEFAULT_KV_BLOCK_TOKENS } from './kv-layout.ts';

export interface GreedyRequest {
  id: string;
  prompt: number[];
  maxTokens: number;
  /** Decode step at which the request is admitted (prefilled); 0 by default. */
  joinAtStep?: number;
}

/** Bytes that crossed host↔device in one batched decode step (model run + KV append). */
export interface StepTransfer {
  step: number;
  batch: number;
  /** Longest context (cached tokens) in the batch before the step. */
  longestContext: number;
  hostToDeviceBytes: number;
  deviceToHostBytes: number;
  /** Wall time of the step (model run + KV append), for benchmarks only. */
  ms: number;
}

export interface DeviceDecodeResult {
  tokens: Map<string, number[]>;
  steps: StepTransfer[];
  /** Arena bytes at its largest (device memory of K/V, padding included). */
  peakAllocatedBytes: number;
  /** Per request, ms from the start of the call to its first token (prefill and queueing). */
  firstTokenMs: Map<string, number>;
}

export async function deviceGreedyDecode(
  session: ModelSession,
  graphs: DeviceKvGraphs,
  mask: SublayerMask,
  requests: readonly GreedyRequest[],
  blockTokens = DEFAULT_KV_BLOCK_TOKENS,
): Promise<DeviceDecodeResult> {
  const { numLayers, vocabSize } = session.config;
  const arena = new DeviceKvArena(graphs, blockTokens);
  const tokens = new Map(requests.map((r) => [r.id, [] as number[]]));
  const byId = new Map(requests.map((r) => [r.id, r]));
  const pending = [...requests].sort((a, b) => (a.joinAtStep ?? 0) - (b.joinAtStep ?? 0));
  const steps: StepTransfer[] = [];
  let peakAllocatedBytes = 0;
  const started = performance.now();
  const firstTokenMs = new Map<string, number>();
  const bytesNow = () => {
    const s = session.transfers;
    const g = graphs.transfers;
    return { up: s.hostToDeviceBytes + g.hostToDeviceBytes, down: s.deviceToHostBytes + g.deviceToHostBytes };
  };

  for (let step = 0; pending.length > 0 || arena.numRows > 0; step++) {
    while (pending.length > 0 && (pending[0]!.joinAtStep ?? 0) <= step) {
      const request = pending.shift()!;
      const row = await arena.addRow(request.id);
      await arena.reserveTokens(request.prompt.length);
      // Prefill alone (batch 1, nothing cached): its rows land in the arena's row on the device.
      const out = await session.runDeviceKv({
        batchSize: 1,
        seqLen: request.prompt.length,
        inputIds: request.prompt,
        positionIds: request.prompt.map((_, i) => i),
        mask,
        pastLengths: [0],
        past: Array(numLayers).fill(null),
        pastCapacity: 0,
        logitsIndex: [request.prompt.length - 1],
      });
      await arena.append([row], request.prompt.length, out.newKv);
      tokens.get(request.id)!.push(argmax(out.logits, 0, vocabSize));
      firstTokenMs.set(request.id, performance.now() - started);
      peakAllocatedBytes = Math.max(peakAllocatedBytes, arena.allocatedBytes);
    }
    // Leave: requests with every token they asked for.
    for (let row = arena.numRows - 1; row >= 0; row--) {
      const id = arena.sequenceIdAt(row);
      if (tokens.get(id)!.length >= byId.get(id)!.maxTokens) await arena.removeRow(id);
    }
    if (arena.numRows === 0) continue;

    const B = arena.numRows;
    const rows = [...Array(B).keys()];
    const lengths = rows.map((r) => arena.length(r));
    const longestContext = Math.max(...lengths);
    await arena.reserveTokens(longestContext + 1);
    peakAllocatedBytes = Math.max(peakAllocatedBytes, arena.allocatedBytes);
    const before = bytesNow();
    const stepStart = performance.now();
    const out = await session.runDeviceKv({
      batchSize: B,
      seqLen: 1,
      inputIds: rows.map((r) => tokens.get(arena.sequenceIdAt(r))!.at(-1)!),
      positionIds: lengths,
      mask,
      pastLengths: lengths,
      past: arena.past(numLayers),
      pastCapacity: arena.tokenCapacity,
      logitsIndex: rows,
    });
    await arena.append(rows, 1, out.newKv);
    const after = bytesNow();
    steps.push({
      step,
      batch: B,
      longestContext,
      hostToDeviceBytes: after.up - before.up,
      deviceToHostBytes: after.down - before.down,
      ms: performance.now() - stepStart,
    });
    for (const r of rows) tokens.get(arena.sequenceIdAt(r))!.push(argmax(out.logits, r, vocabSize));
  }
  return { tokens, steps, peakAllocatedBytes, firstTokenMs };
}

function argmax(logits: Float32Array, row: number, vocab: number): number {
  let best = 0;
  const base = row * vocab;
  for (let i = 1; i < vocab; i++) if (logits[base + i]! > logits[base + best]!) best = i;
  return best;
}
