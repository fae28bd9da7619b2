import type { GenerateEvent } from '../client.ts';

/** The token ids of one generation, in order; the finish event is consumed and dropped. */
export async function generatedTokenIds(events: AsyncIterable<GenerateEvent>): Promise<number[]> {
  const ids: number[] = [];
  for await (const event of events) if (event.type === 'token') ids.push(event.tokenId);
  return ids;
}
