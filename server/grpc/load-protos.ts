import { fileURLToPath } from 'node:url';
import * as protoLoader from '@grpc/proto-loader';

/** Where the .proto files live: the repository's proto/ folder (no build step copies them). */
export const PROTO_DIR = fileURLToPath(new URL('../../proto/', import.meta.url));

export const DROPSERVE_PROTO = 'dropserve.proto';
export const HEALTH_PROTO = 'grpc/health/v1/health.proto';

export const DROPSERVE_SERVICE = 'dropserve.v1.Dropserve';
export const HEALTH_SERVICE = 'grpc.health.v1.Health';

/**
 * Options every part of dropserve (server, tests, clients) loads the protos with, so decoded
 * messages look the same everywhere: snake_case keys as in the .proto, 64-bit ints as numbers,
 * absent scalars as their defaults, and a virtual field naming the set member of each oneof
 * (`input: 'prompt' | 'prompt_token_ids'`; proto3 `optional` fields stay undefined when absent).
 */
export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
};

/** The dropserve and health services in one definition (reflection serves what it is given). */
export function loadDropserveProtos(): protoLoader.PackageDefinition {
  return protoLoader.loadSync([DROPSERVE_PROTO, HEALTH_PROTO], PROTO_LOADER_OPTIONS);
}
