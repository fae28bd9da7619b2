import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { DropserveError, type ErrorCode } from '../../engine/errors.ts';
import { checkBearer } from './auth.ts';
import { CallAbortedError } from './call-signal.ts';
import {
  ERROR_CODE_TRAILER,
  GRPC_STATUS_BY_ERROR_CODE,
  RETRY_AFTER_TRAILER,
  toServiceError,
} from './status-table.ts';

describe('toServiceError', () => {
  it.each<[ErrorCode, grpc.status]>([
    ['DS_INVALID_ARGUMENT', grpc.status.INVALID_ARGUMENT],
    ['DS_CONTEXT_OVERFLOW', grpc.status.INVALID_ARGUMENT],
    ['DS_NOT_FOUND', grpc.status.NOT_FOUND],
    ['DS_OVERLOADED', grpc.status.RESOURCE_EXHAUSTED],
    ['DS_UNAUTHENTICATED', grpc.status.UNAUTHENTICATED],
    ['DS_SHUTTING_DOWN', grpc.status.UNAVAILABLE],
    ['DS_INTERNAL', grpc.status.INTERNAL],
  ])('%s → %s, message and code kept', (code, status) => {
    const e = toServiceError(new DropserveError(code, 'why it failed'));
    expect(e.code).toBe(status);
    expect(e.details).toBe('why it failed');
    expect(e.metadata?.get(ERROR_CODE_TRAILER)).toEqual([code]);
    expect(GRPC_STATUS_BY_ERROR_CODE[code]).toBe(status);
  });

  it('adds retry-after only to overload', () => {
    const overloaded = new DropserveError('DS_OVERLOADED', 'full', { retryAfterSeconds: 3 });
    expect(toServiceError(overloaded).metadata?.get(RETRY_AFTER_TRAILER)).toEqual(['3']);
    expect(
      toServiceError(new DropserveError('DS_KV_EXHAUSTED', 'never fits')).metadata?.get(RETRY_AFTER_TRAILER),
    ).toEqual([]);
  });

  it('keeps a cancelled or expired call its own status; anything else is INTERNAL', () => {
    expect(toServiceError(new CallAbortedError(grpc.status.DEADLINE_EXCEEDED)).code).toBe(
      grpc.status.DEADLINE_EXCEEDED,
    );
    expect(toServiceError(new CallAbortedError(grpc.status.CANCELLED)).code).toBe(grpc.status.CANCELLED);
    expect(toServiceError(new TypeError('bug')).code).toBe(grpc.status.INTERNAL);
  });
});

describe('checkBearer', () => {
  const metadata = (value?: string): grpc.Metadata => {
    const m = new grpc.Metadata();
    if (value !== undefined) m.set('authorization', value);
    return m;
  };

  it('lets everything through without an API key', () => {
    expect(() => checkBearer(metadata(), undefined)).not.toThrow();
  });

  it('accepts the key as a Bearer token and rejects missing, wrong or bare keys', () => {
    expect(() => checkBearer(metadata('Bearer s3cret'), 's3cret')).not.toThrow();
    expect(() => checkBearer(metadata('bearer s3cret'), 's3cret')).not.toThrow();
    for (const bad of [undefined, 'Bearer wrong', 's3cret', 'Bearer s3cret2', 'Basic s3cret']) {
      expect(() => checkBearer(metadata(bad), 's3cret')).toThrow(
        expect.objectContaining({ code: 'DS_UNAUTHENTICATED' }),
      );
    }
  });
});
