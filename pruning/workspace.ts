/**
 * What every prune command starts from: a loaded model, its data file, the calibration samples and a
 * session over the masked graph. Shared by the CLI, the bench and the report script.
 */
import { ModelSession } from '../engine/graph/model-session.ts';
import { loadModel } from '../engine/model/load-model.ts';
import type { LoadedModel } from '../engine/model/loaded-model.ts';
import { CalibrationLoss } from './calibration-loss.ts';
import type { Corpus } from './corpus.ts';
import { readCorpus } from './corpus.ts';
import type { ScoredSequence } from './sequences.ts';
import { calibrationSamples } from './sequences.ts';

export const DEFAULT_SAMPLES = 64;
export const DEFAULT_SEQ_LEN = 256;

export interface WorkspaceOptions {
  /** --model / --tokenizer as loadModel takes them, or an already loaded model. */
  model?: string | LoadedModel;
  tokenizer?: string;
  data: string;
  samples?: number;
  /** Tokens per calibration sample, BOS included; capped at the model's context. */
  seqLen?: number;
  threads?: number;
  /** Build the graph with hidden_<k> outputs (residual metrics, emulation fits). */
  hiddenStates?: boolean;
  signal?: AbortSignal;
  onMessage?: (message: string) => void;
}

export interface Workspace {
  model: LoadedModel;
  corpus: Corpus;
  samples: ScoredSequence[];
  seqLen: number;
  session: ModelSession;
  loss: CalibrationLoss;
  close(): Promise<void>;
}

export async function openWorkspace(options: WorkspaceOptions): Promise<Workspace> {
  const corpus = readCorpus(options.data);
  const model =
    typeof options.model === 'object'
      ? options.model
      : await loadModel({
          model: options.model,
          tokenizer: options.tokenizer,
          onProgress: options.onMessage,
        });
  const numSamples = options.samples ?? DEFAULT_SAMPLES;
  const seqLen = Math.min(options.seqLen ?? DEFAULT_SEQ_LEN, model.config.maxSeqLen);
  const samples = calibrationSamples(model.tokenizer, corpus, { numSamples, seqLen });
  if (samples.length < numSamples) {
    options.onMessage?.(
      `note: ${corpus.path} gives ${samples.length} calibration samples, fewer than the ${numSamples} asked for`,
    );
  }
  const session = await ModelSession.create(model.config, model.weights, {
    threads: options.threads,
    outputHiddenStates: options.hiddenStates ?? false,
  });
  const loss = new CalibrationLoss(session, samples, { signal: options.signal });
  return { model, corpus, samples, seqLen, session, loss, close: () => session.release() };
}
