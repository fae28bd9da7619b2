import { parentPort } from 'node:worker_threads';
import type { GenerateEvent } from '../client.ts';
import { toDropserveError } from '../errors.ts';
import { createEngineRuntime } from '../kv-placement.ts';
import { weightByteTable } from '../quant/weight-bytes.ts';
import { EngineCore } from '../runtime/engine-core.ts';
import { epochMs, PhaseClock } from '../startup-phases.ts';
import type { FromWorker, ToWorker } from './protocol.ts';

/**
 * Engine worker: owns the ONNX session and the EngineCore, so that session.run never blocks the
 * server thread. Errors cross as data (code + message); the worker keeps running.
 */
const port = parentPort;
if (!port) throw new Error('engine-worker must run in a worker thread');

let core: EngineCore | null = null;
let pending: { requestId: string; event: GenerateEvent }[] = [];

const post = (message: FromWorker, transfer: ArrayBuffer[] = []): void => port.postMessage(message, transfer);

function flush(): void {
  if (!core) return;
  const events = pending;
  pending = [];
  // Recorded distributions (a vocab-sized row per token) are moved, not copied, to the server thread.
  const transfer = events.flatMap(({ event }) =>
    event.type === 'token' && event.distribution ? [event.distribution.buffer as ArrayBuffer] : [],
  );
  post({ type: 'events', events, variants: core.variants() }, transfer);
}

port.on('message', async (message: ToWorker) => {
  switch (message.type) {
    case 'init': {
      const receivedInitAtEpochMs = epochMs();
      const clock = new PhaseClock();
      try {
        const { kvPlacement, ...kvMemory } = message.kvMemory;
        const { runner, kvPool } = await createEngineRuntime({
          config: message.config,
          weights: message.weights,
          device: message.device,
          variants: message.variants,
          kvPlacement,
          kvDtype: kvMemory.kvDtype,
          budgetBytes: message.kvCacheBytes,
          blockTokens: kvMemory.kvBlockTokens,
          session: {
            threads: message.threads,
            clock,
            weightFile: message.weightFilePath
              ? { path: message.weightFilePath, image: message.weights.tokenEmbedding.buffer as ArrayBuffer }
              : undefined,
          },
        });
        core = new EngineCore({
          config: message.config,
          runner,
          variants: message.variants,
          kvCacheBytes: message.kvCacheBytes,
          kvPool,
          maxQueue: message.maxQueue,
          prefixReuse: message.prefixReuse,
          weightBytes: weightByteTable(message.config, message.weights),
          ...kvMemory,
        });
        core.onStepEnd = flush;
        post({ type: 'ready', variants: core.variants(), receivedInitAtEpochMs, phases: clock.phases });
      } catch (error) {
        post({ type: 'initFailed', error: toDropserveError(error).toJSON() });
      }
      return;
    }
    case 'generate': {
      const { requestId } = message.request;
      try {
        core!.submit(message.request, (event) => {
          pending.push({ requestId, event });
        });
        // Waiting counts change at once; the next round's flush carries the events.
        flush();
      } catch (error) {
        post({ type: 'rejected', requestId, error: toDropserveError(error).toJSON() });
      }
      return;
    }
    case 'abort':
      core?.abort(message.requestId);
      flush();
      return;
    case 'score':
      try {
        const result = await core!.score(message.request);
        post({ type: 'scoreResult', id: message.id, result });
      } catch (error) {
        post({ type: 'scoreResult', id: message.id, error: toDropserveError(error).toJSON() });
      }
      return;
    case 'close':
      await core?.close(message.graceMs);
      flush();
      post({ type: 'closed' });
      return;
  }
});
