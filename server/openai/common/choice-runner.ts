import type { EngineClient } from '../../../engine/client.ts';
import type { TextEvent, TextGenerationRequest } from '../../../engine/output/text-generation.ts';
import { generateText } from '../../../engine/output/text-generation.ts';

/** One sequence of a request: OpenAI's choice `index` = prompt_index * n + j. */
export interface ChoicePlan {
  index: number;
  promptIndex: number;
  request: TextGenerationRequest;
}

export interface ChoiceEvent {
  index: number;
  event: TextEvent;
}

type Step = { at: number; result: IteratorResult<TextEvent> };

/**
 * Starts every choice's sequence and waits until each has produced its first event, so that an
 * admission error (queue full → 429, context overflow, KV budget) reaches the client as a proper
 * status before a single response byte, even for streams. Then hands back all choices' events
 * interleaved as they arrive. Leaving the returned iterator early cancels every sequence.
 */
export async function startChoices(
  engine: EngineClient,
  plans: readonly ChoicePlan[],
  signal: AbortSignal,
): Promise<AsyncGenerator<ChoiceEvent>> {
  const controller = new AbortController();
  const combined = AbortSignal.any([signal, controller.signal]);
  const generators = plans.map((p) => generateText(engine, p.request, combined));
  const firsts = await Promise.allSettled(generators.map((g) => g.next()));
  const failed = firsts.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    controller.abort('a choice could not start');
    await Promise.allSettled(generators.map((g) => g.return(undefined)));
    throw failed.reason;
  }
  const steps = firsts.map((r, at) => ({
    at,
    result: (r as PromiseFulfilledResult<IteratorResult<TextEvent>>).value,
  }));
  return interleave(
    plans.map((p) => p.index),
    generators,
    steps,
    controller,
  );
}

async function* interleave(
  indices: readonly number[],
  generators: AsyncGenerator<TextEvent>[],
  firstSteps: Step[],
  controller: AbortController,
): AsyncGenerator<ChoiceEvent> {
  const pending = new Map<number, Promise<Step>>();
  const advance = (at: number): void => {
    const next = generators[at]!.next().then((result) => ({ at, result }));
    // The race below observes the rejection; this stops it being reported as unhandled meanwhile.
    next.catch(() => {});
    pending.set(at, next);
  };
  try {
    for (const step of firstSteps) pending.set(step.at, Promise.resolve(step));
    while (pending.size > 0) {
      const { at, result } = await Promise.race(pending.values());
      if (result.done) {
        pending.delete(at);
        continue;
      }
      advance(at);
      yield { index: indices[at]!, event: result.value };
    }
  } finally {
    // Normal end: a no-op. Early exit or an error: stop the sequences still running.
    controller.abort('response ended');
    // Lets each generator run its own cleanup (queued behind any next() still pending).
    for (const g of generators) g.return(undefined).catch(() => {});
  }
}
