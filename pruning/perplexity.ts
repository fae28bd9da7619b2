/** `prune eval`'s perplexity over a text file (document / window protocol: sequences.ts). */
import type { SublayerMask } from '../engine/graph/io.ts';
import { kvBytesPerToken } from '../engine/graph/kv-bytes.ts';
import type { ModelSession } from '../engine/graph/model-session.ts';
import type { Tokenizer } from '../engine/tokenizer/tokenizer.ts';
import type { Corpus } from './corpus.ts';
import type { MeanNll, ScoringOptions } from './scoring.ts';
import { poolNll, scoreSequences } from './scoring.ts';
import type { EvaluationSlice } from './sequences.ts';
import { evaluationSequences } from './sequences.ts';

export interface PerplexityReport extends MeanNll {
  mode: 'documents' | 'windows';
  /** Documents (or windows) scored. */
  numDocuments: number;
  contextLength: number;
  stride?: number;
  kvBytesPerToken: number;
}

export async function corpusPerplexity(
  session: ModelSession,
  tokenizer: Tokenizer,
  corpus: Corpus,
  mask: SublayerMask,
  slice: EvaluationSlice = {},
  options: ScoringOptions & { onStart?: (numDocuments: number) => void } = {},
): Promise<PerplexityReport> {
  const contextLength = session.config.maxSeqLen;
  const { mode, sequences, stride } = evaluationSequences(tokenizer, corpus, contextLength, slice);
  options.onStart?.(sequences.length);
  const scores = await scoreSequences(session, sequences, mask, options);
  return {
    ...poolNll(scores),
    mode,
    numDocuments: sequences.length,
    contextLength,
    ...(stride !== undefined ? { stride } : {}),
    kvBytesPerToken: kvBytesPerToken(session.config, mask),
  };
}
