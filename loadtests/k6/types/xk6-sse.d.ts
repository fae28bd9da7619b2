/**
 * Types for the xk6-sse extension (github.com/phymbert/xk6-sse), which is not in @types/k6:
 * k6 has no Server-Sent Events client of its own, so chat-stream.ts needs a k6 binary built with
 * `xk6 build --with github.com/phymbert/xk6-sse`. Shapes follow the extension's Go structs
 * (k6 maps field names to lowerCamelCase).
 */
declare module 'k6/x/sse' {
  export interface SseParams {
    /** Default GET. */
    method?: string;
    headers?: Record<string, string>;
    body?: string;
    tags?: Record<string, string>;
  }

  export interface SseEvent {
    id: string;
    name: string;
    data: string;
    comment: string;
  }

  export interface SseError {
    error(): string;
  }

  export interface SseClient {
    on(event: 'open', handler: () => void): void;
    on(event: 'event', handler: (event: SseEvent) => void): void;
    on(event: 'error', handler: (error: SseError) => void): void;
    close(): void;
  }

  /** `error` is set (and the rest empty) when the connection could not be made. */
  export interface SseResponse {
    url: string;
    status: number;
    headers: Record<string, string>;
    error: string;
  }

  /** Opens the stream and blocks the VU until the server ends it or `client.close()` is called. */
  export function open(url: string, params: SseParams, setup: (client: SseClient) => void): SseResponse;
  export function open(url: string, setup: (client: SseClient) => void): SseResponse;

  const sse: { open: typeof open };
  export default sse;
}
