/**
 * One onnxruntime session over the masked model graph, and the translation of a ForwardInput into
 * its feeds (engine/graph/io.ts). Inputs are zero-copy views of the caller's arrays (the KV cache
 * stays JS-owned); only logits, the new K/V rows of kept layers and, when asked, hidden states are
 * fetched, because the binding copies every fetched output.
 *
 * With `kvOnDevice` the new K/V rows stay on the device as `gpu-buffer` tensors (WebGPU; on the CPU
 * EP the same path runs in JS memory) and runDeviceKv takes the past as device tensors: the path of
 * a device-resident KV cache (kv-cache/device-arena.ts, docs/gpu.md). Every run counts the bytes it moves between JS memory and
 * a non-CPU device (`transfers`), so "no KV traffic" is measured rather than claimed.
 */
import path from 'node:path';
import ort from 'onnxruntime-node';
import { residentCopyGraph, residentName } from '../../kv-cache/device-kv-graphs.ts';
import { TransferCounter, type TransferStats } from '../../kv-cache/device-transfers.ts';
import type { Device } from '../device.ts';
import { deviceUnavailableError, executionProvidersFor, isGpuDevice } from '../device.ts';
import { DropserveError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import type { WeightFileImage } from '../model/weight-file.ts';
import type { ModelWeights } from '../model/weights.ts';
import type { PhaseClock } from '../startup-phases.ts';
import type { BuildGraphOptions } from './build-graph.ts';
import { buildModelGraphWithExternalWeights } from './build-graph.ts';
import { emulationFeeds } from './emulation-feeds.ts';
import type { Emulation, ForwardInput, ForwardOutput } from './io.ts';
import { GRAPH_INPUT, GRAPH_OUTPUT } from './io.ts';
import type { KvDtype } from './kv-dtype.ts';
import { checkForwardInput } from './validate-input.ts';

export interface ModelSessionOptions {
  device?: Device;
  /** ORT intra-op threads; 1 by default (the model is memory-bound; see the onnxruntime notes). */
  threads?: number;
  /** Build the graph with hidden_<k> outputs so runs may ask for hidden states. */
  outputHiddenStates?: boolean;
  /** Build a statically pruned graph instead of the masked one (equivalence tests). */
  staticDrop?: BuildGraphOptions['staticDrop'];
  /** Laps graph build, encode and session creation (the start-up breakdown). */
  clock?: PhaseClock;
  /** The weights are views of this checkpoint's image: ORT maps the file instead of copying them. */
  weightFile?: WeightFileImage;
  /** MatMulNBits accuracy_level for quantized weights (default: linear-weights.ts). */
  accuracyLevel?: number;
  /**
   * Leave new_key_<l>/new_value_<l> on the device (preferredOutputLocation 'gpu-buffer') and run
   * through runDeviceKv. WebGPU (or CPU, where the tensors simply stay in JS); off by default. Never read such an output back in Node:
   * getData() on a gpu-buffer tensor aborts the process.
   */
  kvOnDevice?: boolean;
  /**
   * fp16: past inputs and new K/V outputs are float16 (`--kv-dtype fp16`), the cache half the bytes.
   * Only with kvOnDevice: the host KV cache is Float32Array.
   */
  kvDtype?: KvDtype;
}

/** A kept layer's past K and V as device tensors [B, kvH, P, D]. */
export interface DeviceKv {
  key: ort.Tensor;
  value: ort.Tensor;
}

export interface DeviceKvForwardInput extends Omit<ForwardInput, 'past' | 'wantHiddenStates'> {
  /** Per layer the past on the device, null for a dropped layer or for a batch with no past yet. */
  past: (DeviceKv | null)[];
}

export interface DeviceKvForwardOutput {
  logits: Float32Array; // [N, vocab], fetched to JS
  /** Per layer this run's K/V rows [B, S, kvH·D], left on the device; null for dropped layers. */
  newKv: (DeviceKv | null)[];
}

export class ModelSession {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly hasHiddenStates: boolean;
  readonly #session: ort.InferenceSession;
  readonly #inputNames: ReadonlySet<string>;
  readonly #outputNames: ReadonlySet<string>;
  /** Empty [B, kvH, 0, D] past of dropped layers, per batch size B. */
  readonly #emptyPast = new Map<number, ort.Tensor>();
  /**
   * Emulation feeds per Emulation object (a mask is fixed for a sequence's life, so this hits).
   * NOTE: an Emulation is treated as immutable once run; edit a copy, not the original.
   */
  readonly #emulationFeeds = new WeakMap<Emulation, Record<string, ort.Tensor>>();
  readonly #noEmulationFeeds: Record<string, ort.Tensor>;
  readonly kvOnDevice: boolean;
  readonly kvDtype: KvDtype;
  readonly #transfers: TransferCounter;
  /** kvOnDevice on WebGPU: device copies of each mask's float emulation feeds, made once. */
  readonly #residentEmulation = new WeakMap<object, Promise<Record<string, ort.Tensor>>>();
  #residentCopier: Promise<ort.InferenceSession> | undefined;

  private constructor(
    config: ModelConfig,
    session: ort.InferenceSession,
    device: Device,
    hasHiddenStates: boolean,
    kvOnDevice: boolean,
    kvDtype: KvDtype,
  ) {
    this.config = config;
    this.device = device;
    this.hasHiddenStates = hasHiddenStates;
    this.kvOnDevice = kvOnDevice;
    this.kvDtype = kvDtype;
    this.#transfers = new TransferCounter(isGpuDevice(device));
    this.#session = session;
    this.#inputNames = new Set(session.inputNames);
    this.#outputNames = new Set(session.outputNames);
    this.#noEmulationFeeds = emulationFeeds(config, undefined);
  }

  static async create(
    config: ModelConfig,
    weights: ModelWeights,
    options: ModelSessionOptions = {},
  ): Promise<ModelSession> {
    const device = options.device ?? 'cpu';
    const threads = options.threads ?? 1;
    if (!Number.isInteger(threads) || threads < 1)
      throw new RangeError(`threads must be a positive integer, got ${threads}`);
    const hasHiddenStates = options.outputHiddenStates ?? false;
    const kvOnDevice = options.kvOnDevice ?? false;
    // On the CPU EP the same path runs with every tensor in JS memory (how CI checks its logic
    // without a GPU). CUDA's gpu-buffer outputs in Node are untried: refused rather than guessed.
    if (kvOnDevice && hasHiddenStates) {
      // Unfetched gpu-bound outputs go stale between runs (see runDeviceKv): hidden_<k> would be.
      throw new DropserveError('DS_INVALID_ARGUMENT', 'kvOnDevice sessions are built without hidden states');
    }
    const kvDtype = options.kvDtype ?? 'fp32';
    if (kvDtype === 'fp16' && !kvOnDevice) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        '--kv-dtype fp16 keeps the KV cache in fp16 on the device; the host KV cache is fp32 (use --kv-placement device)',
        { param: 'kv-dtype' },
      );
    }
    if (kvOnDevice && device === 'cuda') {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        'a device-resident KV cache is implemented for --device webgpu (and cpu), not yet cuda',
        { param: 'device' },
      );
    }
    const { model, externalData } = buildModelGraphWithExternalWeights(config, weights, {
      outputHiddenStates: hasHiddenStates,
      staticDrop: options.staticDrop,
      clock: options.clock,
      weightFile: options.weightFile,
      accuracyLevel: options.accuracyLevel,
      kvDtype,
    });
    const sessionConfig: Record<string, string | Record<string, string>> = {};
    // Spinning intra-op threads made 2-thread decode bimodal (2.7 vs 8 ms) on a shared 2-vCPU VM.
    if (threads > 1) sessionConfig.intra_op = { allow_spinning: '0' };
    // Where the graph's file-external weights are: the model itself comes from memory.
    if (options.weightFile) {
      sessionConfig.model_external_initializers_file_folder_path = path.dirname(
        path.resolve(options.weightFile.path),
      );
    }
    const sessionOptions: ort.InferenceSession.SessionOptions = {
      executionProviders: executionProvidersFor(device),
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: 'all',
      logSeverityLevel: 3,
      // Weights travel beside the protobuf (2 GB message cap): onnxruntime copies in-memory
      // external data, and maps a weight file.
      externalData,
      ...(Object.keys(sessionConfig).length > 0 ? { extra: { session: sessionConfig } } : {}),
      ...(kvOnDevice && device === 'webgpu'
        ? { preferredOutputLocation: deviceKvOutputLocations(config) }
        : {}),
    };
    try {
      const session = await ort.InferenceSession.create(model, sessionOptions);
      options.clock?.lap('ORT session create');
      return new ModelSession(config, session, device, hasHiddenStates, kvOnDevice, kvDtype);
    } catch (e) {
      if (isGpuDevice(device)) throw deviceUnavailableError(device, e);
      const message = e instanceof Error ? e.message : String(e);
      throw new DropserveError('DS_MODEL_LOAD', `onnxruntime rejected the model graph: ${message}`, {
        cause: e,
      });
    }
  }

  /** Host↔device bytes so far (a copy). */
  get transfers(): TransferStats {
    return this.#transfers.stats;
  }

  async run(input: ForwardInput): Promise<ForwardOutput> {
    if (this.kvOnDevice) {
      throw new DropserveError('DS_INVALID_ARGUMENT', 'this session keeps KV on the device: use runDeviceKv');
    }
    checkForwardInput(this.config, input);
    if (input.wantHiddenStates && !this.hasHiddenStates) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        'hidden states asked for, but the session was built without them',
      );
    }
    const feeds = this.#feeds(input, this.#hostPastFeeds(input));
    const results = await this.#runCounted(feeds, this.#fetchNames(input));
    const data = (name: string) => results[name]!.data as Float32Array;
    const { attnKeep } = input.mask;
    const output: ForwardOutput = {
      logits: data(GRAPH_OUTPUT.logits),
      newKeys: attnKeep.map((isKept, l) => (isKept ? data(GRAPH_OUTPUT.newKey(l)) : null)),
      newValues: attnKeep.map((isKept, l) => (isKept ? data(GRAPH_OUTPUT.newValue(l)) : null)),
    };
    if (input.wantHiddenStates) {
      output.hiddenStates = Array.from({ length: 2 * this.config.numLayers + 1 }, (_, k) =>
        data(GRAPH_OUTPUT.hidden(k)),
      );
    }
    return output;
  }

  /**
   * One forward run with the past already on the device; this run's K/V rows stay there. Only ids,
   * positions, masks, seqlens and logits_index go up, only the logits come down.
   */
  async runDeviceKv(input: DeviceKvForwardInput): Promise<DeviceKvForwardOutput> {
    if (!this.kvOnDevice) {
      throw new DropserveError('DS_INVALID_ARGUMENT', 'runDeviceKv needs a session created with kvOnDevice');
    }
    this.#checkDevicePast(input);
    // checkForwardInput reads only the element count of host past arrays; device tensors state
    // theirs, and a kept layer's null past means "none yet" (pastCapacity 0).
    const sized = input.past.map((p, l) =>
      input.mask.attnKeep[l]
        ? { key: { length: p?.key.size ?? 0 }, value: { length: p?.value.size ?? 0 } }
        : p && { key: { length: p.key.size }, value: { length: p.value.size } },
    );
    checkForwardInput(this.config, { ...input, past: sized as ForwardInput['past'] });
    const pastFeeds: Record<string, ort.Tensor> = {};
    input.mask.attnKeep.forEach((isKept, l) => {
      // Dropped layers, and kept ones with nothing cached yet, get the shared empty past: zero bytes.
      const past = isKept ? input.past[l] : null;
      pastFeeds[GRAPH_INPUT.pastKey(l)] = past?.key ?? this.#emptyPastFor(input.batchSize);
      pastFeeds[GRAPH_INPUT.pastValue(l)] = past?.value ?? this.#emptyPastFor(input.batchSize);
    });
    const resident = await this.#residentEmulationFeeds(input.mask.emulation);
    const feeds = this.#feeds(input, { ...resident, ...pastFeeds });
    // Every layer's K/V is fetched, dropped ones too (empty): the binding keeps an unfetched
    // gpu-buffer output bound from an earlier run and hands it to the next as a preallocated output,
    // which fails once a layer's mask differs from that run's ("has shape {1,3,32} but the computed
    // output shape for this run is {0,0,32}", onnxruntime-node 1.30 on WebGPU).
    const fetches = [...this.#fetchNames(input)];
    input.mask.attnKeep.forEach((isKept, l) => {
      if (!isKept) fetches.push(GRAPH_OUTPUT.newKey(l), GRAPH_OUTPUT.newValue(l));
    });
    const results = await this.#runCounted(
      feeds,
      fetches.filter((name) => this.#outputNames.has(name)),
    );
    input.mask.attnKeep.forEach((isKept, l) => {
      if (isKept) return;
      results[GRAPH_OUTPUT.newKey(l)]?.dispose();
      results[GRAPH_OUTPUT.newValue(l)]?.dispose();
    });
    return {
      logits: results[GRAPH_OUTPUT.logits]!.data as Float32Array,
      newKv: input.mask.attnKeep.map((isKept, l) =>
        isKept ? { key: results[GRAPH_OUTPUT.newKey(l)]!, value: results[GRAPH_OUTPUT.newValue(l)]! } : null,
      ),
    };
  }

  async release(): Promise<void> {
    await this.#session.release();
    if (this.#residentCopier) await (await this.#residentCopier).release();
  }

  async #runCounted(
    feeds: Record<string, ort.Tensor>,
    fetches: string[],
    session: ort.InferenceSession = this.#session,
  ): Promise<ort.InferenceSession.ReturnType> {
    let results: ort.InferenceSession.ReturnType;
    try {
      results = await session.run(feeds, fetches);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      throw new DropserveError('DS_ORT_RUN_FAILED', message, { cause: e });
    }
    this.#transfers.count(feeds, results);
    return results;
  }

  #checkDevicePast(input: DeviceKvForwardInput): void {
    const { numKvHeads, headDim } = this.config;
    const want = [input.batchSize, numKvHeads, input.pastCapacity, headDim];
    input.past.forEach((past, l) => {
      if (!past) return;
      for (const tensor of [past.key, past.value]) {
        if (tensor.dims.length !== 4 || tensor.dims.some((d, i) => d !== want[i])) {
          throw new DropserveError(
            'DS_INVALID_ARGUMENT',
            `forward: layer ${l} device past is [${tensor.dims.join(', ')}], expected [${want.join(', ')}]`,
          );
        }
      }
    });
  }

  /** The feeds of one run; `overrides` (past, resident copies) replace same-named ones. */
  #feeds(
    input: Omit<ForwardInput, 'past'>,
    overrides: Record<string, ort.Tensor>,
  ): Record<string, ort.Tensor> {
    const { batchSize: B, seqLen: S, mask, pastLengths } = input;
    const { numLayers } = this.config;
    const totalLengths = pastLengths.map((p) => p + S);
    const feeds: Record<string, ort.Tensor> = {
      [GRAPH_INPUT.inputIds]: new ort.Tensor('int64', toInt64(input.inputIds), [B, S]),
      [GRAPH_INPUT.positionIds]: new ort.Tensor('int64', toInt64(input.positionIds), [B, S]),
      [GRAPH_INPUT.attnKeep]: new ort.Tensor('bool', Uint8Array.from(mask.attnKeep, Number), [numLayers]),
      [GRAPH_INPUT.mlpKeep]: new ort.Tensor('bool', Uint8Array.from(mask.mlpKeep, Number), [numLayers]),
      ...this.#emulationFeedsFor(mask.emulation),
      // GQA reads each row's length from seqlens_k (= total − 1) and the longest from the scalar.
      [GRAPH_INPUT.seqlensK]: new ort.Tensor(
        'int32',
        Int32Array.from(totalLengths, (t) => t - 1),
        [B],
      ),
      [GRAPH_INPUT.totalSequenceLength]: new ort.Tensor(
        'int32',
        Int32Array.of(Math.max(...totalLengths)),
        [],
      ),
      [GRAPH_INPUT.logitsIndex]: new ort.Tensor('int64', toInt64(input.logitsIndex), [
        input.logitsIndex.length,
      ]),
    };
    Object.assign(feeds, overrides);
    // A statically pruned graph declares fewer inputs; feed only what it has.
    for (const name of Object.keys(feeds)) if (!this.#inputNames.has(name)) delete feeds[name];
    return feeds;
  }

  /** Zero-copy views of the caller's host past (empty past for dropped layers). */
  #hostPastFeeds(input: ForwardInput): Record<string, ort.Tensor> {
    const B = input.batchSize;
    const { numKvHeads, headDim } = this.config;
    const feeds: Record<string, ort.Tensor> = {};
    const pastDims = [B, numKvHeads, input.pastCapacity, headDim];
    const pastSize = B * numKvHeads * input.pastCapacity * headDim;
    input.past.forEach((past, l) => {
      const key = past
        ? new ort.Tensor('float32', past.key.subarray(0, pastSize), pastDims)
        : this.#emptyPastFor(B);
      const value = past
        ? new ort.Tensor('float32', past.value.subarray(0, pastSize), pastDims)
        : this.#emptyPastFor(B);
      feeds[GRAPH_INPUT.pastKey(l)] = key;
      feeds[GRAPH_INPUT.pastValue(l)] = value;
    });
    return feeds;
  }

  #fetchNames(input: Pick<ForwardInput, 'mask' | 'wantHiddenStates'>): string[] {
    const names: string[] = [GRAPH_OUTPUT.logits];
    input.mask.attnKeep.forEach((isKept, l) => {
      if (isKept) names.push(GRAPH_OUTPUT.newKey(l), GRAPH_OUTPUT.newValue(l));
    });
    if (input.wantHiddenStates) {
      for (let k = 0; k <= 2 * this.config.numLayers; k++) names.push(GRAPH_OUTPUT.hidden(k));
    }
    return names;
  }

  /**
   * The float emulation feeds of a mask as device tensors (empty ones stay in JS: 0 bytes), so a
   * decode step uploads none of them; {} off WebGPU. One upload per Emulation object.
   */
  #residentEmulationFeeds(emulation: Emulation | undefined): Promise<Record<string, ort.Tensor>> {
    if (this.device !== 'webgpu') return Promise.resolve({});
    const key = emulation ?? this.#noEmulationFeeds;
    let resident = this.#residentEmulation.get(key);
    if (!resident) {
      resident = this.#copyToDevice(this.#emulationFeedsFor(emulation));
      this.#residentEmulation.set(key, resident);
    }
    return resident;
  }

  async #copyToDevice(hostFeeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
    const names = RESIDENT_EMULATION_INPUTS.filter(
      ({ name }) => this.#inputNames.has(name) && (hostFeeds[name]?.size ?? 0) > 0,
    );
    if (names.length === 0) return {};
    this.#residentCopier ??= ort.InferenceSession.create(residentCopyGraph(RESIDENT_EMULATION_INPUTS), {
      executionProviders: executionProvidersFor(this.device),
      logSeverityLevel: 3,
      preferredOutputLocation: Object.fromEntries(
        RESIDENT_EMULATION_INPUTS.map(({ name }) => [residentName(name), 'gpu-buffer' as const]),
      ),
    });
    const copier = await this.#residentCopier;
    // The copier declares every emulation input: empty ones go in too (0 bytes) and are not fetched.
    const feeds = Object.fromEntries(RESIDENT_EMULATION_INPUTS.map(({ name }) => [name, hostFeeds[name]!]));
    const out = await this.#runCounted(
      feeds,
      names.map(({ name }) => residentName(name)),
      copier,
    );
    return Object.fromEntries(names.map(({ name }) => [name, out[residentName(name)]!]));
  }

  #emulationFeedsFor(emulation: Emulation | undefined): Record<string, ort.Tensor> {
    if (!emulation) return this.#noEmulationFeeds;
    let feeds = this.#emulationFeeds.get(emulation);
    if (!feeds) {
      feeds = emulationFeeds(this.config, emulation);
      this.#emulationFeeds.set(emulation, feeds);
    }
    return feeds;
  }

  #emptyPastFor(batchSize: number): ort.Tensor {
    let tensor = this.#emptyPast.get(batchSize);
    if (!tensor) {
      const dims = [batchSize, this.config.numKvHeads, 0, this.config.headDim];
      tensor =
        this.kvDtype === 'fp16'
          ? new ort.Tensor('float16', new Uint16Array(0), dims)
          : new ort.Tensor('float32', new Float32Array(0), dims);
      this.#emptyPast.set(batchSize, tensor);
    }
    return tensor;
  }
}

/** Float emulation inputs: constant per mask, so a device-resident session uploads them once. */
const RESIDENT_EMULATION_INPUTS = [
  { name: GRAPH_INPUT.attnEmulBias, rank: 2 },
  { name: GRAPH_INPUT.mlpEmulBias, rank: 2 },
  { name: GRAPH_INPUT.attnEmulDown, rank: 3 },
  { name: GRAPH_INPUT.mlpEmulDown, rank: 3 },
  { name: GRAPH_INPUT.attnEmulUp, rank: 3 },
  { name: GRAPH_INPUT.mlpEmulUp, rank: 3 },
] as const;

/** Output locations of a kvOnDevice session: every layer's new K/V on the device, the rest in JS. */
function deviceKvOutputLocations(config: ModelConfig): Record<string, ort.Tensor.DataLocation> {
  const locations: Record<string, ort.Tensor.DataLocation> = { [GRAPH_OUTPUT.logits]: 'cpu' };
  for (let l = 0; l < config.numLayers; l++) {
    locations[GRAPH_OUTPUT.newKey(l)] = 'gpu-buffer';
    locations[GRAPH_OUTPUT.newValue(l)] = 'gpu-buffer';
  }
  return locations;
}

function toInt64(values: Int32Array | readonly number[]): BigInt64Array {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]!);
  return out;
}
