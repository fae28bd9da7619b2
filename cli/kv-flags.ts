/** `--kv-block-tokens`, `--kv-admission`, `--kv-watermark`, `--kv-placement`: how the engine takes KV memory. */
import { KV_ADMISSIONS, type KvAdmission } from '../engine/client.ts';
import type { KvMemoryOptions } from '../engine/engine.ts';
import { DropserveError } from '../engine/errors.ts';
import { DEFAULT_KV_WATERMARK } from '../engine/runtime/engine-core.ts';
import { DEFAULT_KV_BLOCK_TOKENS } from '../kv-cache/kv-layout.ts';

/** Largest block: beyond it a short request would hold more padding than tokens. */
export const MAX_KV_BLOCK_TOKENS = 1024;
/** At half the budget kept free, admission would leave most of the memory idle. */
export const MAX_KV_WATERMARK = 0.5;

/** node:util parseArgs option specs. */
export const KV_FLAG_SPECS = {
  'kv-block-tokens': { type: 'string' },
  'kv-admission': { type: 'string' },
  'kv-watermark': { type: 'string' },
  'kv-placement': { type: 'string' },
  'kv-dtype': { type: 'string' },
} as const;

export const KV_FLAGS_HELP = `  --kv-block-tokens N        tokens per KV block: sequences take KV memory in blocks as they grow
                             (1..${MAX_KV_BLOCK_TOKENS}, default ${DEFAULT_KV_BLOCK_TOKENS})
  --kv-admission on-demand|worst-case
                             on-demand: admit a request when its prompt's blocks fit and preempt
                             (free, recompute later) the latest admitted when memory runs out;
                             worst-case: admit only when prompt + max_tokens fits, reserved until
                             the end (default on-demand)
  --kv-watermark F           share of the KV budget kept free when admitting, so running sequences
                             can grow before anyone is preempted (0 ≤ F < ${MAX_KV_WATERMARK}, default ${DEFAULT_KV_WATERMARK})
  --kv-placement host|device where the KV cache lives: device keeps it in device memory from step to
                             step (only ids, positions and sampled logits cross); default device
                             with --device webgpu, host otherwise
  --kv-dtype fp32|fp16       element type of the device KV cache: fp16 halves its bytes per token
                             (needs --kv-placement device; default fp32)`;

export interface KvFlagValues {
  'kv-block-tokens'?: string;
  'kv-admission'?: string;
  'kv-watermark'?: string;
  'kv-placement'?: string;
  'kv-dtype'?: string;
}

const invalid = (message: string): DropserveError => new DropserveError('DS_INVALID_ARGUMENT', message);

/** The flags given, checked; absent flags stay absent (the engine applies its defaults). */
export function parseKvFlags(values: KvFlagValues): KvMemoryOptions {
  const options: KvMemoryOptions = {};
  const blockText = values['kv-block-tokens'];
  if (blockText !== undefined) {
    const blockTokens = Number(blockText);
    if (!/^\d+$/.test(blockText.trim()) || blockTokens < 1 || blockTokens > MAX_KV_BLOCK_TOKENS) {
      throw invalid(`--kv-block-tokens must be an integer in 1..${MAX_KV_BLOCK_TOKENS}, got "${blockText}"`);
    }
    options.kvBlockTokens = blockTokens;
  }
  const admission = values['kv-admission'];
  if (admission !== undefined) {
    if (!(KV_ADMISSIONS as readonly string[]).includes(admission)) {
      throw invalid(`--kv-admission must be one of ${KV_ADMISSIONS.join(', ')}, got "${admission}"`);
    }
    options.kvAdmission = admission as KvAdmission;
  }
  const watermarkText = values['kv-watermark'];
  if (watermarkText !== undefined) {
    const watermark = Number(watermarkText);
    if (watermarkText.trim() === '' || !(watermark >= 0 && watermark < MAX_KV_WATERMARK)) {
      throw invalid(
        `--kv-watermark must be a number with 0 ≤ F < ${MAX_KV_WATERMARK}, got "${watermarkText}"`,
      );
    }
    options.kvWatermark = watermark;
  }
  const placement = values['kv-placement'];
  if (placement !== undefined) {
    if (placement !== 'host' && placement !== 'device') {
      throw invalid(`--kv-placement must be one of host, device, got "${placement}"`);
    }
    options.kvPlacement = placement;
  }
  const dtype = values['kv-dtype'];
  if (dtype !== undefined) {
    if (dtype !== 'fp32' && dtype !== 'fp16') {
      throw invalid(`--kv-dtype must be one of fp32, fp16, got "${dtype}"`);
    }
    options.kvDtype = dtype;
  }
  return options;
}
