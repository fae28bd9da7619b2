/**
 * The KV cache of one batch group kept in device memory: per kept attention layer, K and V as device
 * tensors [rows, kvH, tokenCapacity, D] (the layout the GQA op reads as past), changed only by the
 * small graphs of device-kv-graphs.ts. JS holds the bookkeeping (which sequence owns which row, how
 * many tokens each row holds) and never the data: what goes up per step is indices, never K/V.
 *
 * Same semantics as the host arena (kv-pool.ts KvArena): rows are live sequences, contiguous from 0;
 * removing a row moves the last row into its hole; capacity grows in whole blocks. Bookkeeping is
 * synchronous; each change of device memory is one onnxruntime run, queued behind the earlier ones,
 * and the methods that make one return its promise (KvArena allows that).
 *
 * On the CPU EP the same code runs with JS-memory tensors, which is how CI checks its logic without
 * a GPU; on WebGPU every K/V tensor stays a 'gpu-buffer' and is never read back (getData() on one
 * aborts the process in Node).
 */
import ort from 'onnxruntime-node';
import type { Device } from '../engine/device.ts';
import { executionProvidersFor } from '../engine/device.ts';
import { DropserveError } from '../engine/errors.ts';
import type { DeviceKv } from '../engine/graph/model-session.ts';
import {
  appendGraph,
  appendIndices,
  cacheOutputNames,
  DEVICE_KV_INPUT,
  DEVICE_KV_OUTPUT,
  regatherGraph,
  tokenPads,
  zerosGraph,
} from './device-kv-graphs.ts';
import { TransferCounter, type TransferStats } from './device-transfers.ts';
import { blockAligned, type KvLayout, kvBytesPerToken } from './kv-layout.ts';
import type { KvArena, KvPair } from './kv-pool.ts';

/** The three KV graphs of one layout as sessions on the model's execution provider. */
export class DeviceKvGraphs {
  readonly layout: KvLayout;
  readonly device: Device;
  readonly #append: ort.InferenceSession;
  readonly #regather: ort.InferenceSession;
  readonly #zeros: ort.InferenceSession;
  readonly #transfers: TransferCounter;

  private constructor(
    layout: KvLayout,
    device: Device,
    sessions: [ort.InferenceSession, ort.InferenceSession, ort.InferenceSession],
  ) {
    this.layout = layout;
    this.device = device;
    [this.#append, this.#regather, this.#zeros] = sessions;
    this.#transfers = new TransferCounter(device !== 'cpu');
  }

  static async create(layout: KvLayout, device: Device): Promise<DeviceKvGraphs> {
    if (device === 'cuda') {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        'device KV graphs run on webgpu (or cpu), not yet cuda',
        {
          param: 'device',
        },
      );
    }
    const options = (outputs: string[]): ort.InferenceSession.SessionOptions => ({
      executionProviders: executionProvidersFor(device),
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      logSeverityLevel: 3,
      ...(device === 'webgpu'
        ? { preferredOutputLocation: Object.fromEntries(outputs.map((n) => [n, 'gpu-buffer' as const])) }
        : {}),
    });
    const cacheOutputs = cacheOutputNames(layout);
    const sessions = await Promise.all([
      ort.InferenceSession.create(appendGraph(layout), options(cacheOutputs)),
      ort.InferenceSession.create(regatherGraph(layout), options(cacheOutputs)),
      ort.InferenceSession.create(zerosGraph(layout), options([DEVICE_KV_OUTPUT.zeros])),
    ]);
    return new DeviceKvGraphs(layout, device, sessions);
  }

  /** Host↔device bytes of the KV graphs' runs (indices, pads, shapes up; nothing down). */
  get transfers(): TransferStats {
    return this.#transfers.stats;
  }

  /** Zeros [rows, kvH, tokens, D] on the device. */
  async zeros(rows: number, tokens: number): Promise<ort.Tensor> {
    const { numKvHeads, headDim } = this.layout;
    const shape = BigInt64Array.from([rows, numKvHeads, tokens, headDim], BigInt);
    const out = await this.#run(this.#zeros, {
      [DEVICE_KV_INPUT.shape]: new ort.Tensor('int64', shape, [4]),
    });
    return out[DEVICE_KV_OUTPUT.zeros]!;
  }

  /** Writes new rows [B, S, kvH·D] of every kept layer at (rows[b], positions[b] + s); returns the new caches. */
  async append(
    caches: ReadonlyMap<number, DeviceKv>,
    fresh: ReadonlyMap<number, DeviceKv>,
    rows: readonly number[],
    positions: readonly number[],
    seqLen: number,
  ): Promise<Map<number, DeviceKv>> {
    const indices = appendIndices(this.layout.numKvHeads, rows, positions, seqLen);
    const feeds: Record<string, ort.Tensor> = {
      [DEVICE_KV_INPUT.scatterIndices]: new ort.Tensor('int64', indices, [
        rows.length,
        this.layout.numKvHeads,
        seqLen,
        3,
      ]),
    };
    for (const layer of this.layout.keptLayers) {
      const cache = mustGet(caches, layer);
      const rowsOut = mustGet(fresh, layer);
      feeds[DEVICE_KV_INPUT.past('key', layer)] = cache.key;
      feeds[DEVICE_KV_INPUT.past('value', layer)] = cache.value;
      feeds[DEVICE_KV_INPUT.new('key', layer)] = rowsOut.key;
      feeds[DEVICE_KV_INPUT.new('value', layer)] = rowsOut.value;
    }
    return this.#caches(await this.#run(this.#append, feeds));
  }

  /** Row r of the result = row rows[r] of the input, token axis resized from `fromTokens` to `toTokens`. */
  async regather(
    caches: ReadonlyMap<number, DeviceKv>,
    rows: readonly number[],
    fromTokens: number,
    toTokens: number,
  ): Promise<Map<number, DeviceKv>> {
    const feeds: Record<string, ort.Tensor> = {
      [DEVICE_KV_INPUT.rows]: new ort.Tensor('int64', BigInt64Array.from(rows, BigInt), [rows.length]),
      [DEVICE_KV_INPUT.tokenPads]: new ort.Tensor('int64', tokenPads(fromTokens, toTokens), [8]),
    };
    for (const layer of this.layout.keptLayers) {
      const cache = mustGet(caches, layer);
      feeds[DEVICE_KV_INPUT.past('key', layer)] = cache.key;
      feeds[DEVICE_KV_INPUT.past('value', layer)] = cache.value;
    }
    return this.#caches(await this.#run(this.#regather, feeds));
  }

  async release(): Promise<void> {
    await Promise.all([this.#append.release(), this.#regather.release(), this.#zeros.release()]);
  }

  #caches(out: ort.InferenceSession.ReturnType): Map<number, DeviceKv> {
    return new Map(
      this.layout.keptLayers.map((layer) => [
        layer,
        {
          key: out[DEVICE_KV_OUTPUT.next('key', layer)]!,
          value: out[DEVICE_KV_OUTPUT.next('value', layer)]!,
        },
      ]),
    );
  }

  async #run(
    session: ort.InferenceSession,
    feeds: Record<string, ort.Tensor>,
  ): Promise<ort.InferenceSession.ReturnType> {
    let out: ort.InferenceSession.ReturnType;
    try {
      out = await session.run(feeds);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      throw new DropserveError('DS_ORT_RUN_FAILED', `device KV graph: ${message}`, { cause: e });
    }
    this.#transfers.count(feeds, out);
    return out;
  }
}

/**
 * The budget an arena's buffers live under (device-pool.ts). `reserve` is asked before every resize
 * with the bytes the new buffers will hold, and throws when they do not fit.
 */
export interface DeviceArenaMemory {
  reserve(arena: DeviceKvArena, nextBytes: number): void;
  resized(deltaBytes: number): void;
}

const UNLIMITED: DeviceArenaMemory = { reserve: () => {}, resized: () => {} };

/** One batch group's device-resident KV (see the file comment). */
export class DeviceKvArena implements KvArena<ort.Tensor> {
  readonly id: string;
  readonly layout: KvLayout;
  readonly blockTokens: number;
  readonly bytesPerToken: number;
  readonly #graphs: DeviceKvGraphs;
  readonly #memory: DeviceArenaMemory;
  /** Per kept layer; absent while the arena has no buffers. */
  #caches = new Map<number, DeviceKv>();
  #rowCapacity = 0;
  #tokenCapacity = 0;
  readonly #sequenceIds: string[] = [];
  /** Device changes run one after another, in the order asked for: the latest one, never rejecting. */
  #tail: Promise<void> = Promise.resolve();
  /** The error of a failed change, after which the arena refuses further ones. */
  #failure: unknown = null;
  /** Single-row gathers handed to a run, disposed before the next change. */
  #temporaries: ort.Tensor[] = [];
  readonly #lengths: number[] = [];

  constructor(graphs: DeviceKvGraphs, blockTokens: number, memory = UNLIMITED, id = 'arena') {
    this.id = id;
    this.#memory = memory;
    this.layout = graphs.layout;
    this.blockTokens = blockTokens;
    this.bytesPerToken = kvBytesPerToken(graphs.layout);
    this.#graphs = graphs;
  }

  get numRows(): number {
    return this.#sequenceIds.length;
  }

  get tokenCapacity(): number {
    return this.#tokenCapacity;
  }

  /** Bytes of the device buffers that exist now. */
  get allocatedBytes(): number {
    return this.#rowCapacity * this.#tokenCapacity * this.bytesPerToken;
  }

  /**
   * Bytes of the device tensors the arena holds now, from their shapes (each distinct tensor once):
   * what the device actually allocated for K/V, to check allocatedBytes against.
   */
  get deviceTensorBytes(): number {
    const tensors = new Set<ort.Tensor>();
    for (const kv of this.#caches.values()) tensors.add(kv.key).add(kv.value);
    let bytes = 0;
    for (const t of tensors) bytes += t.dims.reduce((a, b) => a * b, 1) * (t.type === 'float16' ? 2 : 4);
    return bytes;
  }

  /** Bytes of the blocks the live tokens occupy. */
  get usedBytes(): number {
    return this.#lengths.reduce((sum, n) => sum + blockAligned(n, this.blockTokens), 0) * this.bytesPerToken;
  }

  hasRow(sequenceId: string): boolean {
    return this.#sequenceIds.includes(sequenceId);
  }

  rowOf(sequenceId: string): number {
    const row = this.#sequenceIds.indexOf(sequenceId);
    if (row < 0) throw new RangeError(`no KV row for sequence ${sequenceId}`);
    return row;
  }

  sequenceIdAt(row: number): string {
    return this.#sequenceIds[row]!;
  }

  length(row: number): number {
    return this.#lengths[row]!;
  }

  /**
   * Adds an empty row (its buffer rows are whatever was there: GQA reads none of them at length 0).
   * The row exists at once; growing the buffers is queued behind earlier changes.
   */
  addRow(sequenceId: string): number {
    if (this.hasRow(sequenceId)) throw new RangeError(`sequence ${sequenceId} already has a KV row`);
    const row = this.numRows;
    if (this.#rowCapacity === 0) {
      const tokens = this.blockTokens;
      this.#memory.reserve(this, tokens * this.bytesPerToken);
      this.#resize(1, tokens);
      this.#enqueue(async () => {
        // One zeros tensor is every layer's first buffer: appends replace, never write into, it.
        const zeros = await this.#graphs.zeros(1, tokens);
        this.#caches = new Map(this.layout.keptLayers.map((l) => [l, { key: zeros, value: zeros }]));
      });
    } else if (row >= this.#rowCapacity) {
      // Grow by copying row 0 into the new row: filler, never read.
      this.#replace([...Array(this.#rowCapacity).keys(), 0], this.#tokenCapacity);
    }
    this.#sequenceIds.push(sequenceId);
    this.#lengths.push(0);
    return row;
  }

  /**
   * Moves the last row into the hole and shrinks the buffers to the live rows. The engine does not
   * wait for it (the next change waits its turn); the promise is for callers that want to.
   */
  removeRow(sequenceId: string): Promise<void> {
    const row = this.rowOf(sequenceId);
    const last = this.numRows - 1;
    this.#sequenceIds[row] = this.#sequenceIds[last]!;
    this.#lengths[row] = this.#lengths[last]!;
    this.#sequenceIds.pop();
    this.#lengths.pop();
    if (this.numRows === 0) {
      this.#resize(0, 0);
      return this.#enqueue(async () => {
        this.#dispose(this.#caches);
        this.#caches = new Map();
      });
    }
    const rows = [...Array(this.numRows).keys()];
    if (row !== last) rows[row] = last;
    const longest = Math.max(...this.#lengths);
    return this.#replace(rows, blockAligned(Math.max(longest, 1), this.blockTokens));
  }

  /** Every change asked for so far made on the device; rejects if one of them failed. */
  async #ready(): Promise<void> {
    await this.#tail;
    if (this.#failure !== null) {
      throw new DropserveError('DS_ORT_RUN_FAILED', `device KV arena ${this.id} failed earlier`, {
        cause: this.#failure,
      });
    }
  }

  /** Resolves once every change asked for so far has been made on the device (or has failed). */
  async settled(): Promise<void> {
    await this.#tail;
  }

  /** Makes every row able to hold `tokens` positions (whole blocks). */
  reserveTokens(tokens: number): Promise<void> {
    if (tokens <= this.#tokenCapacity) return this.#ready();
    if (tokens > this.layout.maxSeqLen) {
      throw new DropserveError(
        'DS_CONTEXT_OVERFLOW',
        `${tokens} positions exceed the context of ${this.layout.maxSeqLen}`,
      );
    }
    const capacity = Math.min(blockAligned(tokens, this.blockTokens), blockAligned(this.layout.maxSeqLen, 1));
    return this.#replace([...Array(this.#rowCapacity).keys()], capacity);
  }

  /**
   * Writes one run's K/V rows (the model session's device outputs per model layer, batch row b →
   * arena row rows[b]) at each row's length, then advances those lengths by seqLen. The rows'
   * tensors are disposed once written.
   */
  appendAll(
    rows: readonly number[],
    seqLen: number,
    newKeys: readonly (ort.Tensor | null)[],
    newValues: readonly (ort.Tensor | null)[],
  ): Promise<void> {
    const positions = rows.map((r) => this.length(r));
    const needed = Math.max(...positions) + seqLen;
    if (needed > this.#tokenCapacity) {
      throw new RangeError(
        `append needs ${needed} positions, capacity ${this.#tokenCapacity}: reserve first`,
      );
    }
    const freshByLayer = new Map<number, DeviceKv>();
    for (const l of this.layout.keptLayers) {
      const key = newKeys[l];
      const value = newValues[l];
      if (!key || !value) throw new RangeError(`layer ${l} is kept but the run returned no K/V for it`);
      freshByLayer.set(l, { key, value });
    }
    for (const r of rows) this.#lengths[r]! += seqLen;
    return this.#enqueue(async () => {
      const next = await this.#graphs.append(this.#caches, freshByLayer, rows, positions, seqLen);
      this.#dispose(this.#caches);
      this.#dispose(freshByLayer);
      this.#caches = next;
    });
  }

  /** appendAll with the session's per-layer output pairs. */
  append(rows: readonly number[], seqLen: number, fresh: readonly (DeviceKv | null)[]): Promise<void> {
    return this.appendAll(
      rows,
      seqLen,
      fresh.map((kv) => kv?.key ?? null),
      fresh.map((kv) => kv?.value ?? null),
    );
  }

  /** Prefix reuse: row toRow (empty) gets fromRow's first `tokens` positions, on the device. */
  copyPrefix(fromRow: number, toRow: number, tokens: number): Promise<void> {
    if (fromRow === toRow || this.length(toRow) !== 0 || this.length(fromRow) < tokens) {
      throw new RangeError(
        `copyPrefix(${fromRow} → ${toRow}, ${tokens}) needs an empty target and a long enough source`,
      );
    }
    const rows = [...Array(this.#rowCapacity).keys()];
    rows[toRow] = fromRow;
    this.#lengths[toRow] = tokens;
    return this.#replace(rows, this.#tokenCapacity);
  }

  /**
   * The past of the first numRows rows, per model layer (null for layers the layout drops), for
   * ModelSession.runDeviceKv with pastCapacity = tokenCapacity. Valid once every change asked for
   * has been awaited, until the next change.
   */
  past(numLayers: number): (DeviceKv | null)[] {
    return Array.from({ length: numLayers }, (_, l) => this.#caches.get(l) ?? null);
  }

  /** Every row's past in keptLayers order, once the queued changes are done (KvArena). */
  async pastViews(): Promise<KvPair<ort.Tensor>[]> {
    await this.#ready();
    return this.layout.keptLayers.map((l) => mustGet(this.#caches, l));
  }

  /**
   * One row as a batch of one. Row 0 of a one-row arena is the arena itself; any other row is
   * gathered into temporary tensors, disposed by the next change (the run using them is over by then).
   */
  async rowViews(row: number): Promise<KvPair<ort.Tensor>[]> {
    await this.#ready();
    if (this.numRows === 1 && row === 0) return this.pastViews();
    const single = await this.#graphs.regather(this.#caches, [row], this.#tokenCapacity, this.#tokenCapacity);
    for (const kv of single.values()) this.#temporaries.push(kv.key, kv.value);
    return this.layout.keptLayers.map((l) => mustGet(single, l));
  }

  /**
   * Runs device work after everything asked before it. Bookkeeping has already changed when a method
   * returns, so the arena answers rowOf/length for the state its queued changes will produce.
   */
  #enqueue(op: () => Promise<void>): Promise<void> {
    const run = async (): Promise<void> => {
      // After a failed change the buffers no longer match the bookkeeping: nothing more is run.
      if (this.#failure !== null) {
        throw new DropserveError('DS_ORT_RUN_FAILED', `device KV arena ${this.id} failed earlier`, {
          cause: this.#failure,
        });
      }
      for (const t of this.#temporaries.splice(0)) t.dispose();
      try {
        await op();
      } catch (error) {
        this.#failure = error;
        throw error;
      }
    };
    const done = this.#tail.then(run);
    // A change nobody awaits (a row removed as a sequence finishes) must not be an unhandled
    // rejection: its failure is kept and reported by every later change.
    this.#tail = done.catch(() => {});
    return done;
  }

  /**
   * New buffers of rows.length × tokens, queued. The budget is checked (and capacity set) now; while
   * the regather runs the old buffers still exist: the device briefly holds both, a transient the
   * budget does not count (as the host pool's resize).
   */
  #replace(rows: number[], tokens: number): Promise<void> {
    this.#memory.reserve(this, rows.length * tokens * this.bytesPerToken);
    const fromTokens = this.#tokenCapacity;
    this.#resize(rows.length, tokens);
    return this.#enqueue(async () => {
      const next = await this.#graphs.regather(this.#caches, rows, fromTokens, tokens);
      this.#dispose(this.#caches);
      this.#caches = next;
    });
  }

  #resize(rowCapacity: number, tokenCapacity: number): void {
    const before = this.allocatedBytes;
    this.#rowCapacity = rowCapacity;
    this.#tokenCapacity = tokenCapacity;
    this.#memory.resized(this.allocatedBytes - before);
  }

  #dispose(caches: ReadonlyMap<number, DeviceKv>): void {
    // The first buffers share one zeros tensor: dispose each tensor once.
    const tensors = new Set<ort.Tensor>();
    for (const kv of caches.values()) tensors.add(kv.key).add(kv.value);
    for (const t of tensors) t.dispose();
  }
}

function mustGet(map: ReadonlyMap<number, DeviceKv>, layer: number): DeviceKv {
  const kv = map.get(layer);
  if (!kv) throw new RangeError(`no K/V for layer ${layer}`);
  return kv;
}
