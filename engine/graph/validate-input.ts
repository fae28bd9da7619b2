/** Checks a ForwardInput against the model and the GroupQueryAttention kernel's shape rules. */
import { DropserveError } from '../errors.ts';
import type { ModelConfig } from '../model/config.ts';
import type { ForwardInput } from './io.ts';

const invalid = (message: string): DropserveError =>
  new DropserveError('DS_INVALID_ARGUMENT', `forward: ${message}`);

export function checkForwardInput(config: ModelConfig, input: ForwardInput): void {
  const { batchSize: B, seqLen: S, pastLengths, pastCapacity, mask } = input;
  const { numLayers, numKvHeads, headDim } = config;
  if (!(B >= 1 && S >= 1)) throw invalid(`batch ${B} and seqLen ${S} must be ≥ 1`);
  if (input.inputIds.length !== B * S)
    throw invalid(`inputIds has ${input.inputIds.length} ids, expected B·S = ${B * S}`);
  if (input.positionIds.length !== B * S)
    throw invalid(`positionIds has ${input.positionIds.length}, expected ${B * S}`);
  if (pastLengths.length !== B) throw invalid(`pastLengths has ${pastLengths.length} rows, expected ${B}`);
  if (mask.attnKeep.length !== numLayers || mask.mlpKeep.length !== numLayers) {
    throw invalid(`mask must have ${numLayers} entries per sublayer kind`);
  }
  const maxPast = Math.max(...pastLengths);
  if (maxPast > pastCapacity) throw invalid(`pastCapacity ${pastCapacity} < longest past ${maxPast}`);
  if (maxPast + S > config.maxSeqLen) {
    throw new DropserveError(
      'DS_CONTEXT_OVERFLOW',
      `forward: ${maxPast + S} positions exceed the context of ${config.maxSeqLen}`,
    );
  }
  for (const p of input.positionIds) {
    if (p < 0 || p >= config.maxSeqLen) throw invalid(`position ${p} outside [0, ${config.maxSeqLen})`);
  }
  // GQA: several new tokens per row only when the row has no past, or for a single row.
  if (S > 1 && B > 1 && maxPast > 0) {
    throw invalid(
      'a batch of several rows with past KV must run one token per row (chunked prefill needs B = 1)',
    );
  }
  if (input.past.length !== numLayers)
    throw invalid(`past has ${input.past.length} layers, expected ${numLayers}`);
  const pastSize = B * numKvHeads * pastCapacity * headDim;
  input.past.forEach((past, l) => {
    if (!mask.attnKeep[l]) {
      if (past) throw invalid(`layer ${l}: attention is dropped, so past must be null`);
      return;
    }
    if (!past) throw invalid(`layer ${l}: attention is kept but past is null`);
    if (past.key.length < pastSize || past.value.length < pastSize) {
      throw invalid(`layer ${l}: past holds fewer than B·kvH·P·D = ${pastSize} values`);
    }
  });
  for (const i of input.logitsIndex) {
    if (!(Number.isInteger(i) && i >= 0 && i < B * S))
      throw invalid(`logitsIndex ${i} outside [0, ${B * S})`);
  }
}
