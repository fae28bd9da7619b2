import { createHash, timingSafeEqual } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { DropserveError } from '../../engine/errors.ts';

/**
 * API key check for Dropserve RPCs: `authorization: Bearer <key>` metadata, as the HTTP API's
 * header. Health and reflection never call this, so probes and grpcurl discovery work without a key.
 */
export function checkBearer(metadata: grpc.Metadata, apiKey: string | undefined): void {
  if (apiKey === undefined) return;
  const [value] = metadata.get('authorization');
  if (typeof value !== 'string' || value.length === 0) {
    throw new DropserveError(
      'DS_UNAUTHENTICATED',
      'missing authorization metadata (expected "Bearer <key>")',
    );
  }
  const match = /^Bearer\s+(.+)$/i.exec(value.trim());
  if (!match || !sameSecret(match[1]!, apiKey)) {
    throw new DropserveError('DS_UNAUTHENTICATED', 'invalid API key');
  }
}

/** Constant-time comparison; hashing first gives equal lengths without leaking the key's length. */
function sameSecret(given: string, expected: string): boolean {
  const digest = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(given), digest(expected));
}
