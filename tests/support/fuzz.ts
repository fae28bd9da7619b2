import { SeededRandom } from '../../engine/model/random.ts';

/**
 * Hostile request bodies for the OpenAI endpoints, from a seed: valid requests with fields mutated
 * to wrong types, huge or non-finite-looking numbers, deep nesting, unknown keys, plus raw byte
 * strings that are not JSON or not UTF-8. Every body keeps generation short when it happens to be
 * valid, so a run of hundreds stays fast.
 */
export type FuzzBody = string | Uint8Array;

const FIELDS = [
  'model',
  'prompt',
  'messages',
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'min_p',
  'seed',
  'stop',
  'n',
  'presence_penalty',
  'frequency_penalty',
  'repetition_penalty',
  'logprobs',
  'top_logprobs',
  'echo',
  'stream',
  'stream_options',
  'stop_token_ids',
  'ignore_eos',
  'user',
];

export class BodyFuzzer {
  readonly #rng: SeededRandom;
  readonly #model: string;

  constructor(seed: number, model: string) {
    this.#rng = new SeededRandom(seed);
    this.#model = model;
  }

  #int(n: number): number {
    return Math.floor(this.#rng.next() * n);
  }

  #pick<T>(items: readonly T[]): T {
    return items[this.#int(items.length)]!;
  }

  /** A value of a random kind, some of them nasty. */
  value(depth = 0): unknown {
    const kinds = [
      () => null,
      () => this.#rng.next() < 0.5,
      () => this.#int(100) - 50,
      () => (this.#rng.next() - 0.5) * 10 ** this.#int(320),
      () => Number.MAX_SAFE_INTEGER + this.#int(1000),
      () => -(10 ** this.#int(30)),
      () => '',
      () => 'x'.repeat(this.#int(2000)),
      () => '\u0000\uD800\uFFFF😀',
      () => (depth > 3 ? [] : Array.from({ length: this.#int(4) }, () => this.value(depth + 1))),
      () =>
        depth > 3
          ? {}
          : Object.fromEntries(
              Array.from({ length: this.#int(3) }, () => [this.#pick(FIELDS), this.value(depth + 1)]),
            ),
      () => this.nested(1 + this.#int(500)),
      () => [this.#int(300), this.#int(300), 10 ** 12],
      () => [[]],
    ];
    return this.#pick(kinds)();
  }

  /** [[[[…]]]] n levels deep. */
  nested(levels: number): unknown {
    let v: unknown = 1;
    for (let i = 0; i < levels; i++) v = [v];
    return v;
  }

  #validBase(isChat: boolean): Record<string, unknown> {
    const base: Record<string, unknown> = { model: this.#model, max_tokens: 2, ignore_eos: true };
    if (isChat) base.messages = [{ role: 'user', content: 'hi' }];
    else base.prompt = 'hi';
    return base;
  }

  /** One body for the completions (isChat false) or chat endpoint. */
  body(isChat: boolean): FuzzBody {
    const roll = this.#rng.next();
    if (roll < 0.08) {
      // Raw bytes: often not UTF-8, rarely JSON.
      return Uint8Array.from({ length: 1 + this.#int(64) }, () => this.#int(256));
    }
    if (roll < 0.14) {
      // Valid JSON text around invalid UTF-8 inside a string.
      const head = new TextEncoder().encode(`{"model":"${this.#model}","max_tokens":2,"prompt":"`);
      const tail = new TextEncoder().encode('"}');
      return Uint8Array.from([...head, 0xff, 0xfe, 0xc3, 0x28, 0xe2, 0x82, ...tail]);
    }
    if (roll < 0.17) return JSON.stringify(this.value());
    if (roll < 0.2) {
      // Far deeper than any recursive-descent parser's stack, inside an otherwise valid request.
      const depth = 50_000 + this.#int(50_000);
      return `{"model":"${this.#model}","max_tokens":2,"prompt":${'['.repeat(depth)}1${']'.repeat(depth)}}`;
    }
    if (roll < 0.24) return JSON.stringify(this.value()).slice(0, this.#int(40));
    const body = this.#validBase(isChat);
    const mutations = 1 + this.#int(3);
    for (let i = 0; i < mutations; i++) {
      const what = this.#rng.next();
      if (what < 0.7) body[this.#pick(FIELDS)] = this.value();
      else if (what < 0.85) body[`unknown_${this.#int(5)}`] = this.value();
      else delete body[this.#pick(Object.keys(body))];
    }
    // Keep generation bounded whatever the mutations did.
    if (body.max_tokens === undefined || (typeof body.max_tokens === 'number' && body.max_tokens > 8)) {
      body.max_tokens = 2;
    }
    if (typeof body.n === 'number' && body.n > 2) body.n = 2;
    return JSON.stringify(body);
  }
}
