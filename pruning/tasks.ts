/**
 * Multiple-choice log-likelihood tasks from JSONL, one `{context, choices[], label}` per line. Each
 * choice is scored by log P(choice | context) = Σ of its tokens' log-probabilities. The split between
 * context and choice tokens follows lm-eval-harness: encode context + choice as one string and the
 * context alone, and the choice's tokens are whatever the whole has beyond the context's (so a
 * tokenizer's merges across the boundary or a leading-space marker do not shift the split).
 *
 *   acc       argmax of the summed log-likelihood
 *   acc_norm  argmax of the log-likelihood divided by the choice's length in characters
 */
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { DropserveError } from '../engine/errors.ts';
import type { SublayerMask } from '../engine/graph/io.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import type { Tokenizer } from '../engine/tokenizer/tokenizer.ts';
import type { ScoringOptions } from './scoring.ts';
import { scoreSequences } from './scoring.ts';
import type { ScoredSequence } from './sequences.ts';

const taskSchema = z.object({
  context: z.string(),
  choices: z.array(z.string()).min(2),
  label: z.number().int().nonnegative(),
});
export type ChoiceTask = z.infer<typeof taskSchema>;

export function readTasks(path: string): ChoiceTask[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `tasks file ${path}: cannot read (${(e as Error).message})`,
      {
        param: 'tasks',
      },
    );
  }
  const tasks: ChoiceTask[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let raw: unknown;
    try {
      raw = JSON.parse(line);
    } catch (e) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `tasks file ${path}:${i + 1}: not JSON (${(e as Error).message})`,
      );
    }
    const parsed = taskSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `tasks file ${path}:${i + 1}: ${issue.path.join('.') || '(root)'}: ${issue.message} (expected {context, choices[], label})`,
      );
    }
    if (parsed.data.label >= parsed.data.choices.length) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `tasks file ${path}:${i + 1}: label ${parsed.data.label} has no choice`,
      );
    }
    tasks.push(parsed.data);
  });
  if (tasks.length === 0) throw new DropserveError('DS_INVALID_ARGUMENT', `tasks file ${path} has no tasks`);
  return tasks;
}

export interface TaskResults {
  numTasks: number;
  accuracy: number;
  accuracyNorm: number;
  /** Per task: the summed log-likelihood of each choice. */
  logLikelihoods: number[][];
}

/** BOS + context + choice, left-truncated to the context length (keeping BOS), choice tokens scored. */
export function choiceSequence(
  tokenizer: Tokenizer,
  context: string,
  choice: string,
  contextLength: number,
): ScoredSequence {
  const whole = tokenizer.encode(context + choice, { addBos: true });
  const contextOnly = tokenizer.encode(context, { addBos: true });
  let shared = 0;
  while (shared < contextOnly.length && shared < whole.length - 1 && whole[shared] === contextOnly[shared])
    shared++;
  const firstScored = Math.max(1, shared);
  const overflow = whole.length - contextLength;
  if (overflow <= 0) return { tokens: whole, firstScored };
  // Drop the oldest context tokens after BOS; never the choice's own.
  const dropped = Math.min(overflow, firstScored - 1);
  const tokens = [whole[0]!, ...whole.slice(1 + dropped)].slice(0, contextLength);
  return { tokens, firstScored: firstScored - dropped };
}

export async function evaluateTasks(
  session: ModelSession,
  tokenizer: Tokenizer,
  tasks: readonly ChoiceTask[],
  mask: SublayerMask,
  options: ScoringOptions = {},
): Promise<TaskResults> {
  const contextLength = session.config.maxSeqLen;
  const sequences: ScoredSequence[] = [];
  for (const task of tasks) {
    for (const choice of task.choices)
      sequences.push(choiceSequence(tokenizer, task.context, choice, contextLength));
  }
  const scores = await scoreSequences(session, sequences, mask, options);
  let next = 0;
  let correct = 0;
  let correctNorm = 0;
  const logLikelihoods = tasks.map((task) => {
    const ll = task.choices.map(() => scores[next++]!.logprob);
    const normed = ll.map((l, i) => l / Math.max(1, task.choices[i]!.length));
    if (argmaxOf(ll) === task.label) correct++;
    if (argmaxOf(normed) === task.label) correctNorm++;
    return ll;
  });
  return {
    numTasks: tasks.length,
    accuracy: correct / tasks.length,
    accuracyNorm: correctNorm / tasks.length,
    logLikelihoods,
  };
}

function argmaxOf(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
