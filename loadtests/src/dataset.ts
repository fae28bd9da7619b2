import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { DropserveError } from '../../engine/errors.ts';
import { SeededRandom } from '../../engine/model/random.ts';
import type { Endpoint, PromptSpec } from './openai-stream.ts';

/**
 * Where prompts come from. `random` builds prompts of common English words — with a Llama-style
 * 32k vocabulary each " word" is about one token, so a prompt of N words is roughly N tokens. The
 * client has no tokenizer: reported token counts always come from the server's `usage`.
 */
export type DatasetSpec =
  | { kind: 'random'; inputLen: number; outputLen: number; lenSpread: number }
  | { kind: 'file'; path: string; outputLen: number };

export interface PromptSource {
  next(): PromptSpec;
  /** One line for reports, e.g. "random in=128±10% out=64±10%". */
  readonly description: string;
}

// Short, frequent words: single SentencePiece tokens with their leading space in Llama vocabularies.
const WORDS = (
  'the of and to in is was for on that with as by at from he it his an are be this which or ' +
  'had not but were have one all their they she her been has more when there we would who will ' +
  'so can if its about some them into time only then out up other new over these may any after ' +
  'first two also years most way day could made than many back long where just people before did ' +
  'water each very world work life old good our under man us place great through little now well ' +
  'number part house sun light city night small end home read hand large still land side much keep'
).split(' ');

export function randomWords(count: number, rng: SeededRandom): string {
  const words: string[] = [];
  for (let i = 0; i < count; i++) words.push(WORDS[Math.floor(rng.next() * WORDS.length)]!);
  return words.join(' ');
}

/** Uniform integer in [mean × (1 − spread), mean × (1 + spread)], at least 1. */
export function spreadLength(mean: number, spread: number, rng: SeededRandom): number {
  const lo = Math.max(1, Math.round(mean * (1 - spread)));
  const hi = Math.max(lo, Math.round(mean * (1 + spread)));
  return lo + Math.floor(rng.next() * (hi - lo + 1));
}

export async function createPromptSource(
  spec: DatasetSpec,
  endpoint: Endpoint,
  seed: number,
): Promise<PromptSource> {
  if (spec.kind === 'random') return randomPromptSource(spec, endpoint, seed);
  const entries = await loadJsonlDataset(spec.path, endpoint);
  let next = 0;
  return {
    description: `file ${spec.path} (${entries.length} prompts, default max_tokens ${spec.outputLen})`,
    next: (): PromptSpec => {
      const entry = entries[next++ % entries.length]!;
      return { ...entry, maxTokens: entry.maxTokens ?? spec.outputLen };
    },
  };
}

function randomPromptSource(
  spec: Extract<DatasetSpec, { kind: 'random' }>,
  endpoint: Endpoint,
  seed: number,
): PromptSource {
  if (!(spec.inputLen >= 1) || !(spec.outputLen >= 1)) {
    throw new RangeError(`input and output lengths must be >= 1, found ${spec.inputLen}/${spec.outputLen}`);
  }
  if (!(spec.lenSpread >= 0 && spec.lenSpread < 1)) {
    throw new RangeError(`length spread must be in [0, 1), found ${spec.lenSpread}`);
  }
  const rng = new SeededRandom(seed);
  const spread = `±${Math.round(spec.lenSpread * 100)}%`;
  return {
    description: `random in=${spec.inputLen}${spread} out=${spec.outputLen}${spread} words≈tokens`,
    next: (): PromptSpec => {
      const prompt = randomWords(spreadLength(spec.inputLen, spec.lenSpread, rng), rng);
      const maxTokens = spreadLength(spec.outputLen, spec.lenSpread, rng);
      return endpoint === 'chat'
        ? { messages: [{ role: 'user', content: prompt }], maxTokens }
        : { prompt, maxTokens };
    },
  };
}

const chatMessageSchema = z.object({ role: z.string(), content: z.string() });
// OpenAI's stop: up to 4 strings; a line's stop strings go with every request made from it.
const stopSchema = z.union([z.string().min(1), z.array(z.string().min(1)).min(1).max(4)]).optional();
const datasetLineSchema = z.union([
  z.object({ prompt: z.string(), max_tokens: z.number().int().positive().optional(), stop: stopSchema }),
  z.object({
    messages: z.array(chatMessageSchema).min(1),
    max_tokens: z.number().int().positive().optional(),
    stop: stopSchema,
  }),
]);

export interface DatasetEntry {
  prompt?: string;
  messages?: { role: string; content: string }[];
  maxTokens?: number;
  stop?: string | string[];
}

/** Reads JSONL lines `{prompt, max_tokens?, stop?}` or `{messages, max_tokens?, stop?}`; blank lines are skipped. */
export async function loadJsonlDataset(path: string, endpoint: Endpoint): Promise<DatasetEntry[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--dataset ${path}: cannot read file`, { cause: error });
  }
  const entries: DatasetEntry[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (line === '') continue;
    const where = `${path}:${i + 1}`;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `${where}: expected a JSON object, found '${line.slice(0, 80)}'`,
      );
    }
    const parsed = datasetLineSchema.safeParse(json);
    if (!parsed.success) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `${where}: expected {"prompt": string, "max_tokens"?: int, "stop"?: string | string[]} or {"messages": [{role, content}], "max_tokens"?: int, "stop"?: …}`,
      );
    }
    const value = parsed.data;
    if ('messages' in value) {
      if (endpoint !== 'chat') {
        throw new DropserveError('DS_INVALID_ARGUMENT', `${where}: a {messages} line needs --endpoint chat`);
      }
      entries.push({ messages: value.messages, maxTokens: value.max_tokens, stop: value.stop });
    } else {
      entries.push({ prompt: value.prompt, maxTokens: value.max_tokens, stop: value.stop });
    }
  }
  if (entries.length === 0)
    throw new DropserveError('DS_INVALID_ARGUMENT', `--dataset ${path}: no prompts found`);
  return entries;
}
