import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { DropserveError } from '../engine/errors.ts';
import { loadGgufModel } from '../engine/model/gguf-loader.ts';
import { GGUF_WRITE_TYPES, type GgufWriteType, writeModelAsGguf } from '../engine/model/gguf-writer.ts';
import { loadModel } from '../engine/model/load-model.ts';

const HELP = `usage: dropserve convert --model PATH --to gguf --out FILE [flags]

Writes a model as a llama-architecture GGUF file that llama.cpp (and dropserve --model FILE.gguf)
can load. Norms stay F32; matrices whose rows are not whole 32-value blocks fall back to F16.

  --model PATH|HF_ID      llama2.c .bin, Hugging Face directory, cached HF id, or a .gguf
                          (default: the built-in stories260K)
  --tokenizer PATH        tokenizer for llama2.c checkpoints (default: tok*.bin / tokenizer.bin beside the model)
  --to gguf               output format (only gguf for now)
  --type ${GGUF_WRITE_TYPES.join('|')}   storage of the matrices (default f32); q8_0 / q4_0 by round-to-nearest
  --name NAME             general.name (default: the model's id)
  --out FILE              where to write (refuses to overwrite unless --force)
  --force                 overwrite --out`;

export async function runConvertCommand(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      model: { type: 'string' },
      tokenizer: { type: 'string' },
      to: { type: 'string', default: 'gguf' },
      type: { type: 'string', default: 'f32' },
      name: { type: 'string' },
      out: { type: 'string' },
      force: { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (values.to !== 'gguf') {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--to must be gguf, got "${values.to}"`, { param: 'to' });
  }
  const type = values.type as GgufWriteType;
  if (!GGUF_WRITE_TYPES.includes(type)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--type must be one of ${GGUF_WRITE_TYPES.join(', ')}, got "${values.type}"`,
      { param: 'type' },
    );
  }
  if (values.out === undefined)
    throw new DropserveError('DS_INVALID_ARGUMENT', `--out is required\n\n${HELP}`);
  if (fs.existsSync(values.out) && !values.force) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `${values.out} exists (pass --force to overwrite it)`, {
      param: 'out',
    });
  }
  const model = await loadModel({
    ...(values.model !== undefined ? { model: values.model } : {}),
    ...(values.tokenizer !== undefined ? { tokenizer: values.tokenizer } : {}),
    onProgress: (message) => console.error(message),
  });
  try {
    writeModelAsGguf(values.out, model, {
      type,
      ...(values.name !== undefined ? { name: values.name } : {}),
    });
  } catch (e) {
    if (e instanceof RangeError)
      throw new DropserveError('DS_UNSUPPORTED', `cannot write GGUF: ${e.message}`);
    throw e;
  }
  // Read back what was written: a file this command cannot load again is not worth keeping.
  const written = await loadGgufModel(values.out);
  const bytes = fs.statSync(values.out).size;
  console.log(
    `wrote ${values.out}: GGUF ${written.name}, ${(bytes / 1024).toFixed(0)} KiB, tensors ${written.typeSummary}`,
  );
  return 0;
}
