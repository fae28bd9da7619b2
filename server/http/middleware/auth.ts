import { createHash, timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';
import type { AppEnv } from '../env.ts';
import { HttpProblem } from '../errors.ts';

export interface BearerAuthOptions {
  apiKey: string;
}

// Hashing both sides first gives equal-length buffers, so the comparison time says nothing about the key.
const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** `Authorization: Bearer <key>` on every route it is mounted on; 401 in OpenAI's shape otherwise. */
export const bearerAuth = ({ apiKey }: BearerAuthOptions): MiddlewareHandler<AppEnv> => {
  const expected = digest(apiKey);
  return async function bearerAuth(c, next) {
    const header = c.req.header('authorization') ?? '';
    const match = /^Bearer\s+(.+)$/i.exec(header.trim());
    if (!match || !timingSafeEqual(digest(match[1]!), expected)) {
      throw new HttpProblem(
        401,
        match ? 'Incorrect API key provided.' : 'Missing API key: send "Authorization: Bearer <key>".',
        { type: 'invalid_request_error', code: 'invalid_api_key' },
      );
    }
    await next();
  };
};
