import { DEFAULT_SAMPLING, type EngineClient, type FinishEvent } from '../../engine/client.ts';

/** One greedy (temperature 0) request for variant "m": its tokens and how it finished. */
export async function greedyRun(
  engine: EngineClient,
  prompt: number[],
  maxTokens: number,
  ignoreEos: boolean,
): Promise<{ ids: number[]; finish: FinishEvent }> {
  const ids: number[] = [];
  let finish: FinishEvent | undefined;
  for await (const event of engine.generate({
    requestId: `greedy-${ignoreEos}`,
    variant: 'm',
    promptTokenIds: prompt,
    maxTokens,
    ignoreEos,
    sampling: { ...DEFAULT_SAMPLING, temperature: 0 },
  })) {
    if (event.type === 'token') ids.push(event.tokenId);
    else finish = event;
  }
  return { ids, finish: finish! };
}
