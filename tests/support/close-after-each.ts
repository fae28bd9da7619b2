import { afterEach } from 'vitest';
import type { TestServer } from './test-server.ts';

/** A list whose servers are closed (and the list emptied) after each test of the file. */
export function closedAfterEach(): TestServer[] {
  const servers: TestServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  return servers;
}
