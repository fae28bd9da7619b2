import type * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { toDropserveError } from '../../engine/errors.ts';
import { checkBearer } from './auth.ts';
import { isClientError, toServiceError } from './status-table.ts';

/**
 * Every RPC handler goes through one of these two wrappers: they check the API key, run the async
 * body, and turn whatever it throws into a gRPC status through the one status table.
 */
export interface HandlerContext {
  logger: Logger;
  /** When set, the handler requires `authorization: Bearer <apiKey>`. */
  apiKey?: string;
}

export function unaryHandler<Response>(
  method: string,
  context: HandlerContext,
  run: (call: grpc.ServerUnaryCall<unknown, Response>) => Promise<Response>,
): grpc.handleUnaryCall<unknown, Response> {
  return function handleUnary(call, callback): void {
    authenticatedRun(call, context, run).then(
      (response) => callback(null, response),
      (error: unknown) => {
        logFailure(context.logger, method, error, call.cancelled);
        callback(toServiceError(error));
      },
    );
  };
}

export function serverStreamHandler<Response>(
  method: string,
  context: HandlerContext,
  run: (call: grpc.ServerWritableStream<unknown, Response>) => Promise<void>,
): grpc.handleServerStreamingCall<unknown, Response> {
  return function handleServerStream(call): void {
    authenticatedRun(call, context, run).then(
      () => {
        if (!call.cancelled) call.end();
      },
      (error: unknown) => {
        logFailure(context.logger, method, error, call.cancelled);
        // Once the client is gone (or grpc-js sent DEADLINE_EXCEEDED) there is no one to tell.
        if (!call.cancelled) call.emit('error', toServiceError(error));
      },
    );
  };
}

async function authenticatedRun<Call extends { metadata: grpc.Metadata }, Result>(
  call: Call,
  context: HandlerContext,
  run: (call: Call) => Promise<Result>,
): Promise<Result> {
  checkBearer(call.metadata, context.apiKey);
  return run(call);
}

function logFailure(logger: Logger, method: string, error: unknown, isCancelled: boolean): void {
  const e = toDropserveError(error);
  const fields = { method, code: e.code, err: e.message };
  if (isCancelled || isClientError(e)) logger.debug(fields, 'grpc call rejected');
  else logger.error({ ...fields, cause: e.cause }, 'grpc call failed');
}
