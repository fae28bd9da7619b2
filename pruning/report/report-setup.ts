/**
 * What the report scripts share: their common flags (model, eval text, calibration samples, held-out
 * stories) and the workspace + evaluation session they open from them.
 */
import { fileURLToPath } from 'node:url';
import { ModelSession } from '../../engine/graph/model-session.ts';
import { openWorkspace, type Workspace } from '../workspace.ts';

/** node:util parseArgs specs of the flags every report takes. */
export const REPORT_OPTIONS = {
  model: {
    type: 'string',
    default: fileURLToPath(new URL('../../models/stories260K/stories260K.bin', import.meta.url)),
  },
  data: { type: 'string', default: '../shared/data/tinystories-eval.txt' },
  samples: { type: 'string', default: '64' },
  'seq-len': { type: 'string', default: '512' },
  'skip-docs': { type: 'string', default: '300' },
} as const;

export interface ReportSetup {
  workspace: Workspace;
  /** A plain session (no hidden states) for held-out perplexity. */
  evalSession: ModelSession;
  /** First story of the held-out part. */
  skipDocs: number;
  /** Progress on stderr (stdout carries the markdown). */
  log: (message: string) => void;
}

export async function openReport(values: {
  model: string;
  data: string;
  samples: string;
  'seq-len': string;
  'skip-docs': string;
}): Promise<ReportSetup> {
  const workspace = await openWorkspace({
    model: values.model,
    data: values.data,
    samples: Number(values.samples),
    seqLen: Number(values['seq-len']),
    hiddenStates: true,
  });
  const { model } = workspace;
  return {
    workspace,
    evalSession: await ModelSession.create(model.config, model.weights),
    skipDocs: Number(values['skip-docs']),
    log: (message) => {
      process.stderr.write(`${message}\n`);
    },
  };
}
