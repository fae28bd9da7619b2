import { expect } from 'vitest';
import { DropserveError } from '../errors.ts';

/** The DropserveError that `fn` throws: one helper so every test asserts the error class the same way. */
export function errorOf(fn: () => unknown): DropserveError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(DropserveError);
    return e as DropserveError;
  }
  throw new Error('expected an error');
}

/** The DropserveError that `promise` rejects with: the async twin of `errorOf`. */
export async function rejectionOf(promise: Promise<unknown>): Promise<DropserveError> {
  try {
    await promise;
  } catch (e) {
    expect(e).toBeInstanceOf(DropserveError);
    return e as DropserveError;
  }
  throw new Error('expected an error');
}
