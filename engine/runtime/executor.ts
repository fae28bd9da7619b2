import type { Tensor } from 'onnxruntime-node';
import type { TransferStats } from '../../kv-cache/device-transfers.ts';
import type { KvArena, KvData, KvPair } from '../../kv-cache/kv-pool.ts';
import { DropserveError } from '../errors.ts';
import type { ForwardOutput, SublayerMask } from '../graph/io.ts';
import { forwardInput, type RunInput, type RunRows } from './forward-input.ts';
import type { ForwardRunner } from './forward-runner.ts';

const EMPTY_HOST_PAST = (): KvPair<Float32Array> => ({
  key: new Float32Array(0),
  value: new Float32Array(0),
});

/**
 * Turns the scheduler's plan into model runs: reserves the arena room a run writes into, builds the
 * input, runs it and writes the new K/V rows. It knows rows and buffers, nothing about sampling, stops
 * or which sequence deserves to run. With a device pool the past goes in and the new rows come out as
 * device tensors (runDeviceKv); only token ids, positions and the sampled logits cross to the host.
 *
 * A run reads the arena in place, so nothing may add or remove rows until it returns: the engine loop
 * is the only writer and awaits every run.
 */
/** Host↔device bytes of one decode step: the model run and the KV update it caused. */
export interface StepTransfer {
  hostToDeviceBytes: number;
  deviceToHostBytes: number;
}

export class Executor {
  readonly #runner: ForwardRunner;
  readonly #placement: 'host' | 'device';
  readonly #poolTransfers: () => TransferStats | undefined;
  /** Bytes the latest decode() moved between host and device (zeros on the CPU EP). */
  lastDecodeTransfer: StepTransfer = { hostToDeviceBytes: 0, deviceToHostBytes: 0 };

  constructor(
    runner: ForwardRunner,
    placement: 'host' | 'device' = 'host',
    poolTransfers: () => TransferStats | undefined = () => undefined,
  ) {
    this.#poolTransfers = poolTransfers;
    if (placement === 'device' && !runner.runDeviceKv) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        'a device KV pool needs a model session built with kvOnDevice (runDeviceKv)',
      );
    }
    this.#runner = runner;
    this.#placement = placement;
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
    await arena.reserveTokens(pastLength + tokens.length);
    // Rows may have moved while capacity grew: resolve the row after reserving.
    const past =
      pastLength > 0
        ? { views: await arena.rowViews(arena.rowOf(sequenceId)), tokenCapacity: arena.tokenCapacity }
        : null;
    return this.#runAndWrite(
      arena,
      mask,
      { tokens: [tokens], pastLengths: [pastLength], past },
      logitsAt,
      () => [arena.rowOf(sequenceId)],
    );
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
    await arena.reserveTokens(longest + 1);
    const rows = sequenceIds.map((id) => arena.rowOf(id));
    // The graph's past is rows 0..B-1 of the arena: a batch of every row is the normal case.
    const isWholeArena = rows.length === arena.numRows && new Set(rows).size === rows.length;
    if (!isWholeArena) return this.#decodeOneByOne(arena, mask, sequenceIds, tokens);
    const before = this.#transferTotals();
    const isInRowOrder = rows.every((row, b) => row === b);
    const byRow = isInRowOrder ? rows : [...rows].sort((a, b) => a - b);
    const tokenAt = isInRowOrder ? tokens : byRow.map((row) => tokens[rows.indexOf(row)]!);
    const logits = await this.#runAndWrite(
      arena,
      mask,
      {
        tokens: tokenAt.map((t) => [t]),
        pastLengths: byRow.map((row) => arena.length(row)),
        past: { views: await arena.pastViews(), tokenCapacity: arena.tokenCapacity },
      },
      byRow,
      () => byRow,
    );
    const after = this.#transferTotals();
    this.lastDecodeTransfer = {
      hostToDeviceBytes: after.hostToDeviceBytes - before.hostToDeviceBytes,
      deviceToHostBytes: after.deviceToHostBytes - before.deviceToHostBytes,
    };
    if (isInRowOrder) return logits;
    // Back to the caller's order.
    const vocab = logits.length / rows.length;
    const ordered = new Float32Array(logits.length);
    rows.forEach((row, i) => {
      ordered.set(logits.subarray(row * vocab, (row + 1) * vocab), i * vocab);
    });
    return ordered;
  }

  /**
   * Runs `tokens` from position 0 with no cache and keeps the output: an adaptive variant's prompt
   * goes through the full model first, and only then is it known which arena keeps which layers.
   * Host KV only (an adaptive variant needs hidden states, which a kvOnDevice session does not give).
   */
  async runDetached(
    mask: SublayerMask,
    tokens: number[],
    logitsAt: number[],
    wantHiddenStates: boolean,
  ): Promise<ForwardOutput> {
    const input = forwardInput(
      mask,
      { tokens: [tokens], pastLengths: [0], past: null },
      logitsAt,
      EMPTY_HOST_PAST,
    );
    return this.#runner.run({ ...(input as RunInput<Float32Array>), wantHiddenStates });
  }

  /** Writes a detached run's K/V into a sequence's empty row: the arena keeps the layers of its layout. */
  async writeRow(arena: KvArena, sequenceId: string, output: ForwardOutput, seqLen: number): Promise<void> {
    await arena.reserveTokens(seqLen);
    await arena.appendAll([arena.rowOf(sequenceId)], seqLen, output.newKeys, output.newValues);
  }

  /** One row's K/V copied from a donor row (prefix reuse). */
  async copyPrefix(arena: KvArena, fromId: string, toId: string, tokens: number): Promise<void> {
    await arena.reserveTokens(tokens);
    await arena.copyPrefix(arena.rowOf(fromId), arena.rowOf(toId), tokens);
  }

  release(): Promise<void> {
    return this.#runner.release();
  }

  #transferTotals(): StepTransfer {
    const run = this.#runner.transfers;
    const pool = this.#poolTransfers();
    return {
      hostToDeviceBytes: (run?.hostToDeviceBytes ?? 0) + (pool?.hostToDeviceBytes ?? 0),
      deviceToHostBytes: (run?.deviceToHostBytes ?? 0) + (pool?.deviceToHostBytes ?? 0),
    };
  }

  /** Runs one input on the session of the pool's placement and writes its new K/V into `rows()`. */
  async #runAndWrite(
    arena: KvArena,
    mask: SublayerMask,
    rows: RunRows<KvData>,
    logitsIndex: number[],
    targetRows: () => number[],
  ): Promise<Float32Array> {
    const seqLen = rows.tokens[0]!.length;
    if (this.#placement === 'device') {
      const input = forwardInput(mask, rows as RunRows<Tensor>, logitsIndex, () => null);
      const output = await this.#runner.runDeviceKv!(input);
      await arena.appendAll(
        targetRows(),
        seqLen,
        output.newKv.map((kv) => kv?.key ?? null),
        output.newKv.map((kv) => kv?.value ?? null),
      );
      return output.logits;
    }
    const input = forwardInput(mask, rows as RunRows<Float32Array>, logitsIndex, EMPTY_HOST_PAST);
    const output = await this.#runner.run(input);
    await arena.appendAll(targetRows(), seqLen, output.newKeys, output.newValues);
    return output.logits;
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
}
