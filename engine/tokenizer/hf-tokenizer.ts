import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer as TokenizersJs } from '@huggingface/tokenizers';
import { DropserveError, modelLoadError } from '../errors.ts';
import { readJsonObject, readOptionalJsonObject, tokenIdList } from '../model/json-file.ts';
import type { Tokenizer } from './tokenizer.ts';

/**
 * A Hugging Face `tokenizer.json` run by @huggingface/tokenizers (a pure-JS port of the Rust crate),
 * plus what `tokenizer_config.json` adds: chat template, BOS/EOS strings, add_bos_token.
 *
 * encode() never lets the library's post-processor add tokens; BOS is added here, only when asked and
 * only for tokenizers that use one (Llama yes, Qwen2 no), so "addBos" means "add the BOS this model
 * expects at the start of a sequence".
 */

export interface HfTokenizerOptions {
  /** Ids from config.json / generation_config.json, used when tokenizer_config.json has none. */
  bosTokenId?: number;
  eosTokenIds?: readonly number[];
}

export class HfTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number;
  readonly eosTokenIds: readonly number[];
  readonly chatTemplate?: string;
  readonly specialTokens: { bos?: string; eos?: string };
  /** Whether encode({ addBos: true }) prepends bosTokenId. */
  readonly addsBos: boolean;
  readonly #inner: TokenizersJs;

  private constructor(
    inner: TokenizersJs,
    fields: {
      bosTokenId: number;
      eosTokenIds: number[];
      chatTemplate?: string;
      specialTokens: { bos?: string; eos?: string };
      addsBos: boolean;
    },
  ) {
    this.#inner = inner;
    let maxId = -1;
    for (const id of inner.get_vocab(true).values()) if (id > maxId) maxId = id;
    this.vocabSize = maxId + 1;
    this.bosTokenId = fields.bosTokenId;
    this.eosTokenIds = fields.eosTokenIds;
    this.chatTemplate = fields.chatTemplate;
    this.specialTokens = fields.specialTokens;
    this.addsBos = fields.addsBos;
  }

  /**
   * A tokenizer.json built in memory (a GGUF "gpt2" vocabulary), with the ids and template its
   * source names instead of the config files of a model directory.
   */
  static fromTokenizerJson(
    tokenizerJson: Record<string, unknown>,
    fields: {
      bosTokenId: number;
      eosTokenIds: number[];
      addsBos: boolean;
      chatTemplate?: string;
    },
    where: string,
  ): HfTokenizer {
    let inner: TokenizersJs;
    try {
      inner = new TokenizersJs(tokenizerJson, {});
    } catch (e) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        `${where}: @huggingface/tokenizers cannot build this tokenizer (${(e as Error).message})`,
        { cause: e },
      );
    }
    return new HfTokenizer(inner, {
      ...fields,
      specialTokens: {
        bos: inner.id_to_token(fields.bosTokenId),
        eos: inner.id_to_token(fields.eosTokenIds[0]!),
      },
    });
  }

  /**
   * Reads tokenizer.json and tokenizer_config.json (required) from a model directory; BOS/EOS ids
   * also come from config.json and generation_config.json when present there.
   */
  static fromDir(dir: string, options: HfTokenizerOptions = {}): HfTokenizer {
    if (!fs.existsSync(dir)) throw modelLoadError(dir, 'no such tokenizer directory');
    const tokenizerFile = path.join(dir, 'tokenizer.json');
    if (!fs.existsSync(tokenizerFile)) {
      const hint = fs.existsSync(path.join(dir, 'tokenizer.model'))
        ? ' (only a SentencePiece tokenizer.model is present; convert it to tokenizer.json with transformers)'
        : '';
      throw modelLoadError(dir, `no tokenizer.json${hint}`);
    }
    const tokenizerJson = readJsonObject(tokenizerFile);
    const tokenizerConfig = readOptionalJsonObject(path.join(dir, 'tokenizer_config.json')) ?? {};
    const modelConfig = readOptionalJsonObject(path.join(dir, 'config.json')) ?? {};
    const generationConfig = readOptionalJsonObject(path.join(dir, 'generation_config.json')) ?? {};

    let inner: TokenizersJs;
    try {
      inner = new TokenizersJs(tokenizerJson, tokenizerConfig);
    } catch (e) {
      throw new DropserveError(
        'DS_UNSUPPORTED',
        `${tokenizerFile}: @huggingface/tokenizers cannot build this tokenizer (${(e as Error).message})`,
        { cause: e },
      );
    }
    const idOf = (token: string | undefined) => (token === undefined ? undefined : inner.token_to_id(token));
    const bosString = specialTokenString(tokenizerConfig.bos_token);
    const eosString = specialTokenString(tokenizerConfig.eos_token);

    const eosTokenIds = unique([
      ...tokenIdList(generationConfig.eos_token_id),
      ...tokenIdList(modelConfig.eos_token_id),
      ...(options.eosTokenIds ?? []),
      ...optionalList(idOf(eosString)),
    ]);
    if (eosTokenIds.length === 0) {
      throw modelLoadError(
        dir,
        'no EOS token: none of tokenizer_config.json, config.json, generation_config.json names one',
      );
    }
    // Some tokenizers (Qwen2) have no BOS string; their config ids still name one, and as a last
    // resort the EOS token doubles as the start-of-sequence marker (GPT-2 style).
    const bosTokenId =
      idOf(bosString) ??
      options.bosTokenId ??
      tokenIdList(generationConfig.bos_token_id)[0] ??
      tokenIdList(modelConfig.bos_token_id)[0] ??
      eosTokenIds[0]!;

    const addsBos =
      typeof tokenizerConfig.add_bos_token === 'boolean'
        ? tokenizerConfig.add_bos_token
        : postProcessorAddsBos(inner, bosTokenId);

    return new HfTokenizer(inner, {
      bosTokenId,
      eosTokenIds,
      chatTemplate: chatTemplateFrom(dir, tokenizerConfig.chat_template),
      specialTokens: {
        bos: bosString ?? inner.id_to_token(bosTokenId),
        eos: eosString ?? inner.id_to_token(eosTokenIds[0]!),
      },
      addsBos,
    });
  }

  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids = text.length > 0 ? this.#inner.encode(text, { add_special_tokens: false }).ids : [];
    return options.addBos && this.addsBos ? [this.bosTokenId, ...ids] : ids;
  }

  decode(ids: readonly number[]): string {
    if (ids.length === 0) return '';
    return this.#inner.decode([...ids], { skip_special_tokens: true });
  }

  /** The vocabulary piece as stored (e.g. "▁Once", "Ġthe"). */
  tokenText(id: number): string {
    // Ids past the tokenizer's vocabulary exist when the model pads its embedding.
    return this.#inner.id_to_token(id) ?? `<extra_${id}>`;
  }
}

/** tokenizer_config.json writes special tokens as a string or as an AddedToken object. */
function specialTokenString(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { content?: unknown }).content === 'string'
  ) {
    return (value as { content: string }).content;
  }
  return undefined;
}

/**
 * chat_template may be a string or a list of {name, template} (the "default" one is used); newer
 * models ship it as a separate chat_template.jinja instead.
 */
function chatTemplateFrom(dir: string, value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = value as { name?: unknown; template?: unknown }[];
    const chosen = named.find((t) => t.name === 'default') ?? named[0];
    return typeof chosen?.template === 'string' ? chosen.template : undefined;
  }
  const jinjaFile = path.join(dir, 'chat_template.jinja');
  return fs.existsSync(jinjaFile) ? fs.readFileSync(jinjaFile, 'utf8') : undefined;
}

/** Without add_bos_token in the config, ask the post-processor whether it starts sequences with BOS. */
function postProcessorAddsBos(inner: TokenizersJs, bosTokenId: number): boolean {
  const withSpecial = inner.encode('a', { add_special_tokens: true }).ids;
  const without = inner.encode('a', { add_special_tokens: false }).ids;
  return withSpecial.length > without.length && withSpecial[0] === bosTokenId;
}

function optionalList(id: number | undefined): number[] {
  return id === undefined ? [] : [id];
}

function unique(ids: number[]): number[] {
  return [...new Set(ids)];
}
