import type { EngineClient } from '../../engine/client.ts';
import type { Logger } from '../logger.ts';

/** Context variables the middleware chain sets; `c.get(...)` is typed through this. */
export interface AppVariables {
  /** Echoed in the x-request-id response header and every log line of the request. */
  requestId: string;
  logger: Logger;
  /** Epoch ms the request arrived (TTFT and e2e latency start here). */
  receivedMs: number;
  /** The request body, read (within the size limit) by the bodyLimit middleware. */
  body: Uint8Array;
  /** Set by admission: the engine, ready. */
  engine: EngineClient;
  /** Fires when the client disconnects or shutdown cancels in-flight work. */
  signal: AbortSignal;
  /** For responses that outlive the handler (SSE): returns the function that ends the request. */
  keepInFlight: () => () => void;
}

export interface AppEnv {
  Variables: AppVariables;
}
