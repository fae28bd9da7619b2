import fs from 'node:fs';
import { modelLoadError } from '../errors.ts';
import { MaxHeap } from './max-heap.ts';
import type { Tokenizer } from './tokenizer.ts';

/**
 * llama2.c tokenizer (`tokenizer.bin`, `tok512.bin`): a SentencePiece BPE vocabulary exported as
 *
 *   int32 max_token_length, then per id: float32 score, int32 byteLength, bytes
 *
 * Pieces are handled as "binary strings" (one char per byte, code 0..255) so that concatenating two
 * pieces is concatenating their bytes, exactly as llama2.c's sprintf("%s%s") does, whether or not a
 * piece is valid UTF-8 on its own.
 */

const BOS_ID = 1;
const EOS_ID = 2;
/** Byte b is id b + 3 (after <unk>, <s>, </s>). */
const BYTE_FALLBACK_OFFSET = 3;
/** llama2.c starts its best-score search here, so lower-scored merges never apply. */
const NO_MERGE_SCORE = -1e10;
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/**
 * What differs between vocabularies of this family (llama2.c files, GGUF "llama" vocabularies):
 * the defaults are llama2.c's.
 */
export interface SentencePieceOptions {
  bosTokenId?: number;
  eosTokenIds?: readonly number[];
  specialTokens?: { bos?: string; eos?: string };
  chatTemplate?: string;
  /**
   * Where byte fallback finds byte b: llama2.c assumes id b + 3; GGUF vocabularies are looked up
   * by their `<0xNN>` pieces. Without them a vocabulary cannot spell an unknown character: it
   * becomes one unknownTokenId, and a run of such characters one (SentencePiece's and HF's fused unk).
   */
  byteFallback?: 'offset3' | 'pieces';
  unknownTokenId?: number;
  /** Ids that decode to no text (control tokens); BOS and EOS always do. */
  silentIds?: readonly number[];
  /** Prepend the " " piece to non-empty text (SentencePiece's add_dummy_prefix); default true. */
  addSpacePrefix?: boolean;
  /** Whether this model starts sequences with BOS (GGUF add_bos_token); default true. */
  addsBos?: boolean;
}

export class Llama2cTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly bosTokenId: number;
  readonly eosTokenIds: readonly number[];
  readonly specialTokens: { bos?: string; eos?: string };
  readonly chatTemplate: string | undefined;
  readonly maxTokenLength: number;
  /** Id of each byte for byte fallback; −1 where the vocabulary has no piece for it. */
  readonly #byteIds: Int32Array;
  readonly #unknownTokenId: number;
  readonly #silentIds: Set<number>;
  readonly #addSpacePrefix: boolean;
  /** Whether encode({ addBos: true }) prepends bosTokenId, as HfTokenizer's addsBos. */
  readonly addsBos: boolean;
  /** Binary-string piece of each id. */
  readonly #pieces: string[];
  readonly #scores: Float32Array;
  /** Bytes each id decodes to (byte pieces already resolved to their one byte). */
  readonly #pieceBytes: Uint8Array[];
  readonly #idOfPiece = new Map<string, number>();
  readonly #utf8 = new TextDecoder('utf-8', { fatal: false });

  constructor(
    pieces: string[],
    scores: Float32Array,
    maxTokenLength: number,
    options: SentencePieceOptions = {},
  ) {
    if (pieces.length !== scores.length) throw new RangeError('pieces and scores differ in length');
    this.vocabSize = pieces.length;
    this.bosTokenId = options.bosTokenId ?? BOS_ID;
    this.eosTokenIds = options.eosTokenIds ?? [EOS_ID];
    this.specialTokens = options.specialTokens ?? { bos: '<s>', eos: '</s>' };
    this.chatTemplate = options.chatTemplate;
    this.#silentIds = new Set([this.bosTokenId, ...this.eosTokenIds, ...(options.silentIds ?? [])]);
    this.#addSpacePrefix = options.addSpacePrefix ?? true;
    this.addsBos = options.addsBos ?? true;
    this.maxTokenLength = maxTokenLength;
    this.#pieces = pieces;
    this.#scores = scores;
    this.#pieceBytes = pieces.map((p) => {
      const byte = BYTE_PIECE.exec(p);
      return byte ? Uint8Array.of(Number.parseInt(byte[1]!, 16)) : Uint8Array.from(p, (c) => c.charCodeAt(0));
    });
    // First id wins on duplicate pieces, so lookups are deterministic.
    pieces.forEach((p, id) => {
      if (!this.#idOfPiece.has(p)) this.#idOfPiece.set(p, id);
    });
    this.#byteIds = new Int32Array(256);
    for (let b = 0; b < 256; b++) {
      if (options.byteFallback !== 'pieces') {
        this.#byteIds[b] = b + BYTE_FALLBACK_OFFSET;
        continue;
      }
      const piece = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      this.#byteIds[b] = this.#idOfPiece.get(piece) ?? -1;
    }
    this.#unknownTokenId = options.unknownTokenId ?? 0;
  }

  /** Reads a tokenizer file; vocabSize (from the checkpoint) limits how many entries are read. */
  static fromFile(path: string, options: { vocabSize?: number } = {}): Llama2cTokenizer {
    if (!fs.existsSync(path)) throw modelLoadError(path, 'no such tokenizer file');
    const buf = fs.readFileSync(path);
    if (buf.length < 4)
      throw modelLoadError(path, `tokenizer file is ${buf.length} bytes, too short for a header`);
    const maxTokenLength = buf.readInt32LE(0);
    if (maxTokenLength < 1 || maxTokenLength > 1024) {
      throw modelLoadError(
        path,
        `max_token_length ${maxTokenLength} is not plausible: not a llama2.c tokenizer`,
      );
    }
    const pieces: string[] = [];
    const scores: number[] = [];
    let offset = 4;
    const wanted = options.vocabSize ?? Number.POSITIVE_INFINITY;
    while (pieces.length < wanted && offset < buf.length) {
      const id = pieces.length;
      if (offset + 8 > buf.length)
        throw modelLoadError(path, `entry ${id}: file ends inside its score/length`);
      const score = buf.readFloatLE(offset);
      const length = buf.readInt32LE(offset + 4);
      offset += 8;
      if (length < 0 || length > maxTokenLength || offset + length > buf.length) {
        throw modelLoadError(
          path,
          `entry ${id}: piece length ${length} (max_token_length ${maxTokenLength}, ${buf.length - offset} bytes left)`,
        );
      }
      pieces.push(buf.toString('latin1', offset, offset + length));
      scores.push(score);
      offset += length;
    }
    if (options.vocabSize !== undefined && pieces.length < options.vocabSize) {
      throw modelLoadError(path, `holds ${pieces.length} pieces, the model expects ${options.vocabSize}`);
    }
    if (pieces.length <= EOS_ID) throw modelLoadError(path, `holds only ${pieces.length} pieces`);
    return new Llama2cTokenizer(pieces, Float32Array.from(scores), maxTokenLength);
  }

  /**
   * llama2.c `encode`: dummy-prefix " " piece for non-empty text, one piece per UTF-8 codepoint
   * (byte fallback when the codepoint is not in the vocabulary), then repeatedly merge the adjacent
   * pair with the highest-scoring merged piece, leftmost first on ties.
   *
   * llama2.c rescans every pair after each merge (O(n²)); this keeps candidate merges in a heap over
   * a linked list and only re-examines the two neighbours of a merge, which picks the same pair in
   * the same order in O(n log n).
   */
  encode(text: string, options: { addBos?: boolean } = {}): number[] {
    const ids: number[] = [];
    if (options.addBos && this.addsBos) ids.push(this.bosTokenId);
    if (text.length > 0 && this.#addSpacePrefix) {
      const dummyPrefix = this.#idOfPiece.get(' ');
      if (dummyPrefix !== undefined) ids.push(dummyPrefix);
    }
    let previousUnknown = false;
    for (const char of text) {
      const bytes = Buffer.from(char, 'utf8');
      const id = this.#idOfPiece.get(bytes.toString('latin1'));
      if (id !== undefined) {
        ids.push(id);
        previousUnknown = false;
      } else if (bytes.every((b) => this.#byteIds[b]! >= 0)) {
        for (const b of bytes) ids.push(this.#byteIds[b]!);
        previousUnknown = false;
      } else if (!previousUnknown) {
        ids.push(this.#unknownTokenId);
        previousUnknown = true;
      }
    }
    return this.#mergePairs(ids);
  }

  #mergePairs(initial: number[]): number[] {
    const n = initial.length;
    const ids = Int32Array.from(initial);
    const next = new Int32Array(n);
    const prev = new Int32Array(n);
    // Bumped on every change to a node, so heap entries made before it are recognised as stale.
    const version = new Uint32Array(n);
    for (let i = 0; i < n; i++) {
      next[i] = i + 1 < n ? i + 1 : -1;
      prev[i] = i - 1;
    }
    // Heap order: higher score first, then the leftmost pair (node indices keep their order).
    const heap = new MaxHeap<Candidate>((a, b) =>
      a.score !== b.score ? a.score > b.score : a.left < b.left,
    );
    const consider = (left: number) => {
      const right = left >= 0 ? next[left]! : -1;
      if (right < 0) return;
      const merged = this.#idOfPiece.get(this.#pieces[ids[left]!]! + this.#pieces[ids[right]!]!);
      if (merged === undefined) return;
      const score = this.#scores[merged]!;
      if (!(score > NO_MERGE_SCORE)) return;
      heap.push({ score, left, right, merged, leftVersion: version[left]!, rightVersion: version[right]! });
    };
    for (let i = 0; i + 1 < n; i++) consider(i);
    while (heap.size > 0) {
      const c = heap.pop()!;
      if (
        version[c.left] !== c.leftVersion ||
        version[c.right] !== c.rightVersion ||
        next[c.left] !== c.right
      ) {
        continue;
      }
      ids[c.left] = c.merged;
      version[c.left]!++;
      version[c.right]!++; // the right node is gone
      const after = next[c.right]!;
      next[c.left] = after;
      if (after >= 0) prev[after] = c.left;
      consider(prev[c.left]!);
      consider(c.left);
    }
    const out: number[] = [];
    for (let i = n > 0 ? 0 : -1; i >= 0; i = next[i]!) out.push(ids[i]!);
    return out;
  }

  /**
   * Bytes of every piece, joined and read as UTF-8 (an incomplete tail becomes U+FFFD). BOS/EOS and
   * ids beyond the vocabulary are skipped; like SentencePiece and llama2.c, a text piece's leading space is dropped at the very
   * start of the output and right after BOS.
   */
  decode(ids: readonly number[]): string {
    const chunks: Uint8Array[] = [];
    let isAtStart = true;
    for (const id of ids) {
      if (id === this.bosTokenId) {
        isAtStart = true;
        continue;
      }
      if (this.#silentIds.has(id)) continue;
      let bytes = this.#pieceBytes[id];
      // A model's vocabulary may be padded past the tokenizer's: such ids have no text.
      if (bytes === undefined) continue;
      if (isAtStart && bytes.length > 0 && bytes[0] === 0x20 && !BYTE_PIECE.test(this.#pieces[id]!)) {
        bytes = bytes.subarray(1);
      }
      isAtStart = false;
      chunks.push(bytes);
    }
    return this.#utf8.decode(Buffer.concat(chunks));
  }

  tokenText(id: number): string {
    const piece = this.#pieces[id];
    if (piece === undefined) return `<extra_${id}>`;
    if (BYTE_PIECE.test(piece)) {
      const byte = this.#pieceBytes[id]![0]!;
      return byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : piece;
    }
    return Buffer.from(piece, 'latin1').toString('utf8');
  }

  /** Each id's piece as text (spaces as " ") and merge score, e.g. to write the vocabulary elsewhere. */
  pieces(): { text: string; score: number }[] {
    return this.#pieces.map((p, id) => ({
      text: Buffer.from(p, 'latin1').toString('utf8'),
      score: this.#scores[id]!,
    }));
  }

  /** Merge score of an id (for tests and tools). */
  score(id: number): number {
    return this.#scores[id]!;
  }
}

interface Candidate {
  score: number;
  left: number;
  right: number;
  merged: number;
  leftVersion: number;
  rightVersion: number;
}
