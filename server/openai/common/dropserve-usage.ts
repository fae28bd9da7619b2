import type { TextFinish } from '../../../engine/output/text-generation.ts';

/** Sublayers an adaptive variant decoded without, as the wire spells them. */
export interface AdaptiveDropsJson {
  attention: number[];
  mlp: number[];
}

/**
 * dropserve's extension of OpenAI `usage` (clients that do not know it ignore it). Present only when
 * an adaptive variant served the request: `adaptive_drops` is what the (first) prompt chose; a
 * completions request with several prompts also gets `adaptive_drops_by_prompt`, one per prompt.
 */
export interface DropserveUsage {
  adaptive_drops: AdaptiveDropsJson;
  adaptive_drops_by_prompt?: (AdaptiveDropsJson | null)[];
}

/** `{dropserve: …}` to spread into a usage object, or nothing when no choice was adaptive. */
export function dropserveUsageOf(
  choices: Iterable<{ promptIndex: number; finish?: TextFinish }>,
  promptCount = 1,
): { dropserve?: DropserveUsage } {
  // Every choice of one prompt chose the same drops: the choice depends on the prompt alone.
  const byPrompt: (AdaptiveDropsJson | null)[] = Array.from({ length: promptCount }, () => null);
  for (const { promptIndex, finish } of choices) {
    const drops = finish?.adaptiveDrops;
    if (drops && byPrompt[promptIndex] === null) {
      byPrompt[promptIndex] = { attention: [...drops.attention], mlp: [...drops.mlp] };
    }
  }
  const first = byPrompt.find((d) => d !== null);
  if (!first) return {};
  return {
    dropserve: {
      adaptive_drops: byPrompt[0] ?? first,
      ...(promptCount > 1 ? { adaptive_drops_by_prompt: byPrompt } : {}),
    },
  };
}

/** OpenAI's usage object with dropserve's extension. */
export interface CompletionUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
  dropserve?: DropserveUsage;
}
