import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import * as grpc from '@grpc/grpc-js';
import type { EngineClient } from '../../engine/client.ts';
import { DropserveError, toDropserveError } from '../../engine/errors.ts';
import {
  generateText,
  type TextFinish,
  type TextGenerationRequest,
} from '../../engine/output/text-generation.ts';
import type { ExperimentRouter } from '../experiments/experiment-router.ts';
import { HTTP_ERROR_TABLE } from '../http/errors.ts';
import { type CancellableCall, callSignal } from './call-signal.ts';
import { toTextGenerationRequest } from './generate-request.ts';
import {
  type CompleteResponseMessage,
  completeMessage,
  deltaMessage,
  finishMessage,
  type GenerateResponseMessage,
} from './generate-response.ts';
import { type HandlerContext, serverStreamHandler, unaryHandler } from './handler-kit.ts';
import type { RequestObserver } from './request-observer.ts';
import { parseGenerateRequest } from './request-schemas.ts';
import { routeModel, VARIANT_METADATA } from './resolve-model.ts';

export interface GenerateHandlerContext extends HandlerContext {
  engine: EngineClient;
  metrics?: RequestObserver;
  /** A/B experiments: model names that route to one of several variants. */
  experiments?: ExperimentRouter;
}

/** Generate: one message per text delta, then the finish message. */
export function generateHandler(
  context: GenerateHandlerContext,
): grpc.handleServerStreamingCall<unknown, GenerateResponseMessage> {
  return serverStreamHandler('Generate', context, (call) =>
    generationCall(
      context,
      call,
      (message, signal) => write(call, message, signal),
      (finish, signal) => write(call, finishMessage(finish), signal),
    ),
  );
}

/** Complete: the same generation, answered in one message. */
export function completeHandler(
  context: GenerateHandlerContext,
): grpc.handleUnaryCall<unknown, CompleteResponseMessage> {
  return unaryHandler('Complete', context, (call) => {
    const deltas: GenerateResponseMessage[] = [];
    return generationCall(
      context,
      call,
      async (message) => {
        deltas.push(message);
      },
      async (finish) => completeMessage(deltas, finish),
    );
  });
}

/** The parts of a Generate or Complete call the generation path uses. */
type GenerationCall = CancellableCall & {
  request: unknown;
  metadata: grpc.Metadata;
  sendMetadata(metadata: grpc.Metadata): void;
};

/**
 * The body shared by Generate and Complete: routes the request, tells the client which variant
 * serves it, hands each delta to `emit` and the finish to `respond`, all under the call's signal.
 */
function generationCall<R>(
  context: GenerateHandlerContext,
  call: GenerationCall,
  emit: (message: GenerateResponseMessage, signal: AbortSignal) => Promise<void>,
  respond: (finish: TextFinish, signal: AbortSignal) => Promise<R>,
): Promise<R> {
  return countedCall(context, async (onFinished) => {
    const receivedMs = nowMs();
    const { signal, dispose } = callSignal(call);
    try {
      const request = engineRequest(call, context);
      call.sendMetadata(variantMetadata(request.variant));
      const finish = await runGeneration(context, request, receivedMs, signal, onFinished, (message) =>
        emit(message, signal),
      );
      // A cancelled or expired call ends with CANCELLED / DEADLINE_EXCEEDED, never a silent OK.
      signal.throwIfAborted();
      return await respond(finish, signal);
    } finally {
      dispose();
    }
  });
}

/**
 * Every generation call ends in exactly one counter: its finish (counted by runGeneration, which
 * calls onFinished), or, when it fails before the engine finished it (bad request, unknown model,
 * queue full), a rejection under the code the HTTP API would answer with.
 */
async function countedCall<T>(
  context: GenerateHandlerContext,
  run: (onFinished: () => void) => Promise<T>,
): Promise<T> {
  let isFinished = false;
  try {
    return await run(() => {
      isFinished = true;
    });
  } catch (error) {
    if (!isFinished) {
      const reason = HTTP_ERROR_TABLE[toDropserveError(error).code].code;
      context.metrics?.observeRejected?.({ transport: 'grpc', reason });
    }
    throw error;
  }
}

/** Epoch ms on the engine's clock (TokenEvent.timeMs and RequestTimings use the same base). */
const nowMs = (): number => performance.timeOrigin + performance.now();

function engineRequest(
  call: { request: unknown; metadata: grpc.Metadata },
  context: GenerateHandlerContext,
): TextGenerationRequest {
  const parsed = parseGenerateRequest(call.request);
  // An experiment name becomes the assigned variant here; the rest of the path sees a variant.
  const model = routeModel(parsed.model, context.engine, context.experiments, call.metadata);
  return toTextGenerationRequest(
    { ...parsed, model },
    context.engine,
    parsed.request_id || `grpc-${randomUUID()}`,
  );
}

/** Initial metadata: which variant serves the call (an experiment's assignment, or the model asked). */
function variantMetadata(variant: string): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set(VARIANT_METADATA, variant);
  return metadata;
}

/**
 * Runs one request through generateText, handing each non-empty delta to `emit`. After the client
 * has gone the loop keeps draining (without emitting) to the engine's finish event, so metrics see
 * aborted requests too. Returns the finish event.
 */
async function runGeneration(
  context: GenerateHandlerContext,
  request: TextGenerationRequest,
  receivedMs: number,
  signal: AbortSignal,
  onFinished: () => void,
  emit: (message: GenerateResponseMessage) => Promise<void>,
): Promise<TextFinish> {
  for await (const event of generateText(context.engine, request, signal)) {
    if (event.type === 'delta') {
      if (signal.aborted || (event.text === '' && event.tokens.length === 0)) continue;
      await emit(deltaMessage(event, request.variant, request));
      continue;
    }
    onFinished();
    context.metrics?.observeRequest({
      variant: event.variant,
      transport: 'grpc',
      finish: event,
      receivedMs,
      maxTokens: request.maxTokens,
    });
    context.logger.debug(
      { requestId: request.requestId, variant: event.variant, reason: event.reason, usage: event.usage },
      'grpc generation finished',
    );
    if (event.reason === 'error') {
      throw new DropserveError(
        'DS_INTERNAL',
        `generation of request ${request.requestId} failed in the engine`,
      );
    }
    return event;
  }
  signal.throwIfAborted();
  throw new DropserveError('DS_INTERNAL', `the engine ended request ${request.requestId} without a finish`);
}

/** Writes with backpressure: a slow reader pauses us, and a cancelled call stops the wait. */
async function write(
  call: grpc.ServerWritableStream<unknown, GenerateResponseMessage>,
  message: GenerateResponseMessage,
  signal: AbortSignal,
): Promise<void> {
  if (call.write(message)) return;
  await once(call, 'drain', { signal }).catch(() => undefined);
}
