import type { KvArena } from '../../kv-cache/kv-pool.ts';
import type { ForwardOutput, SublayerMask } from '../graph/io.ts';
import { forwardInput } from './forward-input.ts';
import type { ForwardRunner } from './forward-runner.ts';

/**
 * Turns the scheduler's plan into model runs: reserves the arena room a run writes into, builds the
 * ForwardInput, runs it and writes the new K/V rows. It knows rows and buffers, nothing about
 * sampling, stops or which sequence deserves to run.
 *
 * A run reads the arena in place (zero-copy), so nothing may add or remove rows until it returns:
 * the engine loop is the only writer and awaits every run.
 */
export class Executor {
  readonly #runner: ForwardRunner;

  constructor(runner: ForwardRunner) {
    this.#runner = runner;
  }

  /**
   * Feeds `tokens` to one sequence's row after what it already caches (B = 1); returns the logits of
   * the given positions (indices into `tokens`).
   */
  async extend(
    arena: KvArena,
    mask: SublayerMask,
    sequenceId: string,
    tokens: number[],
    logitsAt: number[],
  ): Promise<Float32Array> {
    const pastLength = arena.length(arena.rowOf(sequenceId));
    arena.reserveTokens(pastLength + tokens.length);
    // Rows may have moved while capacity grew: resolve the row after reserving.
    const row = arena.rowOf(sequenceId);
    const input = forwardInput(
      mask,
      {
        tokens: [tokens],
        pastLengths: [pastLength],
        past: pastLength > 0 ? { arena, views: arena.rowViews(row) } : null,
      },
      logitsAt,
    );
    const output = await this.#runner.run(input);
    this.#writeKv(arena, [arena.rowOf(sequenceId)], tokens.length, output);
    return output.logits;
  }

  /**
   * One decode step for the given sequences of an arena (each feeds one token); returns the logits
   * rows in the order of `sequenceIds`.
   */
  async decode(
    arena: KvArena,
    mask: SublayerMask,
    sequenceIds: string[],
    tokens: number[],
  ): Promise<Float32Array> {
    let longest = 0;
    for (const id of sequenceIds) longest = Math.max(longest, arena.length(arena.rowOf(id)));
    arena.reserveTokens(longest + 1);
    const rows = sequenceIds.map((id) => arena.rowOf(id));
    // The graph's past is rows 0..B-1 of the arena: a batch of every row is the normal case.
    const isWholeArena = rows.length === arena.numRows && new Set(rows).size === rows.length;
    if (!isWholeArena) return this.#decodeOneByOne(arena, mask, sequenceIds, tokens);
    const isInRowOrder = rows.every((row, b) => row === b);
    const byRow = isInRowOrder ? rows : [...rows].sort((a, b) => a - b);
    const tokenAt = isInRowOrder ? tokens : byRow.map((row) => tokens[rows.indexOf(row)]!);
    const input = forwardInput(
      mask,
      {
        tokens: tokenAt.map((t) => [t]),
        pastLengths: byRow.map((row) => arena.length(row)),
        past: { arena, views: arena.pastViews() },
      },
      byRow,
    );
    const output = await this.#runner.run(input);
    this.#writeKv(arena, byRow, 1, output);
    if (isInRowOrder) return output.logits;
    // Back to the caller's order.
    const vocab = output.logits.length / rows.length;
    const logits = new Float32Array(output.logits.length);
    rows.forEach((row, i) => {
      logits.set(output.logits.subarray(row * vocab, (row + 1) * vocab), i * vocab);
    });
    return logits;
  }

  /**
   * Runs `tokens` from position 0 with no cache, writing nothing: an adaptive variant's prompt goes
   * through the full model first, and only then is it known which arena keeps which layers.
   */
  async runDetached(
    mask: SublayerMask,
    tokens: number[],
    logitsAt: number[],
    wantHiddenStates: boolean,
  ): Promise<ForwardOutput> {
    const input = forwardInput(mask, { tokens: [tokens], pastLengths: [0], past: null }, logitsAt);
    return this.#runner.run({ ...input, wantHiddenStates });
  }

  /**
   * Writes a detached run's K/V into a sequence's empty row: the arena's layout picks the layers it
   * keeps, so a dropped layer's KV is never stored.
   */
  writeRow(arena: KvArena, sequenceId: string, output: ForwardOutput, seqLen: number): void {
    arena.reserveTokens(seqLen);
    this.#writeKv(arena, [arena.rowOf(sequenceId)], seqLen, output);
  }

  /** Bytes of one row's K/V copied from a donor row (prefix reuse). */
  copyPrefix(arena: KvArena, fromId: string, toId: string, tokens: number): void {
    arena.reserveTokens(tokens);
    arena.copyPrefix(arena.rowOf(fromId), arena.rowOf(toId), tokens);
  }

  release(): Promise<void> {
    return this.#runner.release();
  }

  /**
   * Decodes some rows of an arena, one run each: the batched graph reads a prefix of the arena, so a
   * batch that is not the whole arena would need rows moved. The engine always decodes whole
   * arenas; this keeps a partial batch correct rather than fast.
   */
  async #decodeOneByOne(
    arena: KvArena,
    mask: SublayerMask,
    sequenceIds: string[],
    tokens: number[],
  ): Promise<Float32Array> {
    const rows: Float32Array[] = [];
    for (let b = 0; b < sequenceIds.length; b++) {
      rows.push(await this.extend(arena, mask, sequenceIds[b]!, [tokens[b]!], [0]));
    }
    const vocab = rows[0]!.length;
    const logits = new Float32Array(vocab * rows.length);
    rows.forEach((row, b) => {
      logits.set(row, b * vocab);
    });
    return logits;
  }

  #writeKv(arena: KvArena, rows: number[], seqLen: number, output: ForwardOutput): void {
    arena.layout.keptLayers.forEach((layer, i) => {
      arena.append(i, rows, seqLen, output.newKeys[layer]!, output.newValues[layer]!);
    });
    arena.advance(rows, seqLen);
  }
}
