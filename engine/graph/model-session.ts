/**
 * One onnxruntime session over the masked model graph, and the translation of a ForwardInput into
 * its feeds (engine/graph/io.ts). Inputs are zero-copy views of the caller's arrays (the KV cache
 * stays JS-owned); only logits, the new K/V rows of kept layers and, when asked, hidden states are
 * fetched, because the binding copies every fetched output.
 */
import path from 'node:path';
import ort from 'onnxruntime-node';
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
}

export class ModelSession {
  readonly config: ModelConfig;
  readonly device: Device;
  readonly hasHiddenStates: boolean;
  readonly #session: ort.InferenceSession;
  readonly #inputNames: ReadonlySet<string>;
  /** Empty [B, kvH, 0, D] past of dropped layers, per batch size B. */
  readonly #emptyPast = new Map<number, ort.Tensor>();
  /**
   * Emulation feeds per Emulation object (a mask is fixed for a sequence's life, so this hits).
   * NOTE: an Emulation is treated as immutable once run; edit a copy, not the original.
   */
  readonly #emulationFeeds = new WeakMap<Emulation, Record<string, ort.Tensor>>();
  readonly #noEmulationFeeds: Record<string, ort.Tensor>;

  private constructor(
    config: ModelConfig,
    session: ort.InferenceSession,
    device: Device,
    hasHiddenStates: boolean,
  ) {
    this.config = config;
    this.device = device;
    this.hasHiddenStates = hasHiddenStates;
    this.#session = session;
    this.#inputNames = new Set(session.inputNames);
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
    const { model, externalData } = buildModelGraphWithExternalWeights(config, weights, {
      outputHiddenStates: hasHiddenStates,
      staticDrop: options.staticDrop,
      clock: options.clock,
      weightFile: options.weightFile,
      accuracyLevel: options.accuracyLevel,
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
    };
    try {
      const session = await ort.InferenceSession.create(model, sessionOptions);
      options.clock?.lap('ORT session create');
      return new ModelSession(config, session, device, hasHiddenStates);
    } catch (e) {
      if (isGpuDevice(device)) throw deviceUnavailableError(device, e);
      const message = e instanceof Error ? e.message : String(e);
      throw new DropserveError('DS_MODEL_LOAD', `onnxruntime rejected the model graph: ${message}`, {
        cause: e,
      });
    }
  }

  async run(input: ForwardInput): Promise<ForwardOutput> {
    checkForwardInput(this.config, input);
    if (input.wantHiddenStates && !this.hasHiddenStates) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        'hidden states asked for, but the session was built without them',
      );
    }
    const feeds = this.#feeds(input);
    const fetches = this.#fetchNames(input);
    let results: ort.InferenceSession.ReturnType;
    try {
      results = await this.#session.run(feeds, fetches);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      throw new DropserveError('DS_ORT_RUN_FAILED', message, { cause: e });
    }
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

  async release(): Promise<void> {
    await this.#session.release();
  }

  #feeds(input: ForwardInput): Record<string, ort.Tensor> {
    const { batchSize: B, seqLen: S, mask, pastLengths } = input;
    const { numLayers, numKvHeads, headDim } = this.config;
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
    // A statically pruned graph declares fewer inputs; feed only what it has.
    for (const name of Object.keys(feeds)) if (!this.#inputNames.has(name)) delete feeds[name];
    return feeds;
  }

  #fetchNames(input: ForwardInput): string[] {
    const names: string[] = [GRAPH_OUTPUT.logits];
    input.mask.attnKeep.forEach((isKept, l) => {
      if (isKept) names.push(GRAPH_OUTPUT.newKey(l), GRAPH_OUTPUT.newValue(l));
    });
    if (input.wantHiddenStates) {
      for (let k = 0; k <= 2 * this.config.numLayers; k++) names.push(GRAPH_OUTPUT.hidden(k));
    }
    return names;
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
      tensor = new ort.Tensor('float32', new Float32Array(0), [
        batchSize,
        this.config.numKvHeads,
        0,
        this.config.headDim,
      ]);
      this.#emptyPast.set(batchSize, tensor);
    }
    return tensor;
  }
}

function toInt64(values: Int32Array | readonly number[]): BigInt64Array {
  const out = new BigInt64Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = BigInt(values[i]!);
  return out;
}
