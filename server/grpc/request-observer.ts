import type { TextFinish } from '../../engine/output/text-generation.ts';

/**
 * What the gRPC transport needs from server/metrics (ServerMetrics satisfies it): one call per
 * finished request, with the same usage numbers the HTTP transport reports, or one per call refused
 * before it finished, so every call ends in exactly one counter.
 */
export interface RequestObserver {
  observeRequest(request: ObservedGrpcRequest): void;
  /** A call that ended in an error before the engine finished it (reason: the HTTP API's error code). */
  observeRejected?(rejection: { transport: 'grpc'; reason: string }): void;
}

export interface ObservedGrpcRequest {
  variant: string;
  transport: 'http' | 'grpc';
  finish: TextFinish;
  /** Epoch ms the call reached the transport: TTFT and e2e as the client sees them start here. */
  receivedMs?: number;
  /** The request's max_tokens (after the default), for the max_tokens histogram. */
  maxTokens?: number;
}
