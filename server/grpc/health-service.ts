import * as grpc from '@grpc/grpc-js';

/** grpc.health.v1.HealthCheckResponse.ServingStatus (proto/grpc/health/v1/health.proto). */
export const ServingStatus = {
  UNKNOWN: 0,
  SERVING: 1,
  NOT_SERVING: 2,
  SERVICE_UNKNOWN: 3,
} as const;
export type ServingStatus = (typeof ServingStatus)[keyof typeof ServingStatus];

export interface HealthCheckResponseMessage {
  status: ServingStatus;
}

/** How often Watch re-reads isReady(): the engine exposes readiness as a poll, not an event. */
export const HEALTH_POLL_MS = 200;

/**
 * The standard grpc.health.v1.Health service. The server as a whole ("") and every listed service
 * are SERVING once the engine reports ready, NOT_SERVING before that and from shutdown() on.
 */
export class HealthService {
  readonly #isReady: () => boolean;
  readonly #services: ReadonlySet<string>;
  readonly #pollMs: number;
  /** Open Watch calls, each with its re-check (which remembers the last status sent). */
  readonly #watchers = new Map<grpc.ServerWritableStream<unknown, HealthCheckResponseMessage>, () => void>();
  #isShuttingDown = false;
  #poller: NodeJS.Timeout | undefined;

  constructor(isReady: () => boolean, services: readonly string[], pollMs = HEALTH_POLL_MS) {
    this.#isReady = isReady;
    this.#services = new Set(['', ...services]);
    this.#pollMs = pollMs;
  }

  statusOf(service: string): ServingStatus {
    if (!this.#services.has(service)) return ServingStatus.SERVICE_UNKNOWN;
    return !this.#isShuttingDown && this.#isReady() ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
  }

  implementation(): grpc.UntypedServiceImplementation {
    return {
      Check: (
        call: grpc.ServerUnaryCall<unknown, HealthCheckResponseMessage>,
        callback: grpc.sendUnaryData<HealthCheckResponseMessage>,
      ) => {
        const service = serviceName(call.request);
        const status = this.statusOf(service);
        if (status === ServingStatus.SERVICE_UNKNOWN) {
          callback({ code: grpc.status.NOT_FOUND, details: `unknown service "${service}"` });
          return;
        }
        callback(null, { status });
      },
      Watch: (call: grpc.ServerWritableStream<unknown, HealthCheckResponseMessage>) => this.#watch(call),
    };
  }

  /** Tells every watcher NOT_SERVING and ends their calls, so server shutdown is not held up. */
  shutdown(): void {
    this.#isShuttingDown = true;
    this.#stopPolling();
    for (const call of this.#watchers.keys()) {
      call.write({ status: ServingStatus.NOT_SERVING });
      call.end();
    }
    this.#watchers.clear();
  }

  #watch(call: grpc.ServerWritableStream<unknown, HealthCheckResponseMessage>): void {
    const service = serviceName(call.request);
    // Per the protocol, an unknown service is reported as SERVICE_UNKNOWN and the call stays open.
    let last = this.statusOf(service);
    call.write({ status: last });
    if (this.#isShuttingDown) {
      call.end();
      return;
    }
    const onChange = (): void => {
      const now = this.statusOf(service);
      if (now === last) return;
      last = now;
      call.write({ status: now });
    };
    this.#watchers.set(call, onChange);
    call.on('cancelled', () => {
      this.#watchers.delete(call);
      if (this.#watchers.size === 0) this.#stopPolling();
    });
    this.#poller ??= setInterval(() => {
      for (const recheck of this.#watchers.values()) recheck();
    }, this.#pollMs).unref();
  }

  #stopPolling(): void {
    clearInterval(this.#poller);
    this.#poller = undefined;
  }
}

function serviceName(request: unknown): string {
  const service = (request as { service?: unknown } | null)?.service;
  return typeof service === 'string' ? service : '';
}
