/** `prune export`: writes a plan as a model another engine serves (pruning/export/). */
import { DropserveError } from '../../engine/errors.ts';
import type { GgufWriteType } from '../../engine/model/gguf-writer.ts';
import { loadModel } from '../../engine/model/load-model.ts';
import { loadPlanFile } from '../../engine/plan/plan.ts';
import { DIRECTORY_FORMATS, type DirectoryFormat, exportPlanAsDirectory } from '../export/export-plan.ts';
import { exportGguf } from '../export/gguf-export.ts';
import type { PruneIo } from './flags.ts';
import { parseFlags, requireFlag } from './flags.ts';

export const EXPORT_FORMATS = [...DIRECTORY_FORMATS, 'gguf'] as const;

export async function runExportCommand(argv: string[], io: PruneIo): Promise<number> {
  const flags = parseFlags(
    argv,
    {
      model: { type: 'string' },
      tokenizer: { type: 'string' },
      plan: { type: 'string' },
      format: { type: 'string' },
      out: { type: 'string' },
      type: { type: 'string', default: 'f32' },
      'drop-emulation': { type: 'boolean', default: false },
      force: { type: 'boolean', default: false },
      json: { type: 'boolean', default: false },
    },
    'export',
  );
  const planPath = requireFlag(flags.plan as string | undefined, 'plan', 'export');
  const format = requireFlag(flags.format as string | undefined, 'format', 'export');
  const out = requireFlag(flags.out as string | undefined, 'out', 'export');
  if (!(EXPORT_FORMATS as readonly string[]).includes(format)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `prune export: --format must be one of ${EXPORT_FORMATS.join(', ')}, got "${format}"`,
      { param: 'format' },
    );
  }
  const model = await loadModel({
    model: flags.model as string | undefined,
    tokenizer: flags.tokenizer as string | undefined,
    onProgress: (m) => io.stderr(`${m}\n`),
  });
  const { plan, spec } = loadPlanFile(planPath, model.config);
  if (format === 'gguf') {
    const result = exportGguf(model, spec, {
      type: flags.type as GgufWriteType,
      out,
      dropEmulation: flags['drop-emulation'] === true,
      force: flags.force === true,
    });
    if (flags.json === true) io.stdout(`${JSON.stringify({ format, ...result })}\n`);
    else {
      io.stdout(
        `wrote gguf export of ${planPath} (drop attention [${spec.dropAttention}], MLP [${spec.dropMlp}]) to ${out}: ` +
          `architecture ${result.architecture}, ${result.blockCount} blocks, ${result.bytes} bytes\n`,
      );
    }
    return 0;
  }
  const result = exportPlanAsDirectory({
    format: format as DirectoryFormat,
    model,
    plan,
    spec,
    out,
    ...(flags.tokenizer !== undefined ? { tokenizer: flags.tokenizer as string } : {}),
    dropEmulation: flags['drop-emulation'] === true,
    force: flags.force === true,
  });
  for (const note of result.notes) io.stderr(`note: ${note}\n`);
  if (flags.json === true) {
    io.stdout(`${JSON.stringify({ format, ...result })}\n`);
  } else {
    io.stdout(
      `wrote ${format} export of ${planPath} (drop attention [${spec.dropAttention}], MLP [${spec.dropMlp}]) ` +
        `to ${out}: ${result.layers} layers; ${result.files.join(', ')}\n`,
    );
  }
  return 0;
}
