/**
 * `npx tsx bench/gpu-probe.ts [--device webgpu]`: what onnxruntime-node's GPU EP does with KV left on
 * the device, on one GroupQueryAttention node shaped like stories260K's (8 heads, 4 KV heads, D 8).
 * Each probe decodes a few steps and compares the attention output (always fetched to 'cpu') with the
 * CPU EP fed the same inputs; it never reads a gpu-buffer tensor back (getData() on one aborts Node).
 *
 *   present → past   GQA's present_key/value as 'gpu-buffer' outputs, fed back as next step's past
 *   in place         present bound to the past tensor itself (a preallocated output): GQA's
 *                    past_present_share_buffer path, no copy of the cache per step
 *
 * The findings are recorded in docs/gpu.md.
 */
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';
import { executionProvidersFor, parseDevice } from '../engine/device.ts';
import {
  ElemType,
  encodeModel,
  floatAttr,
  graph,
  intAttr,
  MS_DOMAIN,
  node,
  tensorInfo,
} from '../engine/graph/onnx-helpers.ts';
import { maxAbsDiff } from '../engine/graph/testing/js-kv-cache.ts';
import { DeviceKvGraphs } from '../kv-cache/device-arena.ts';

const HEADS = 8;
const KV_HEADS = 4;
const HEAD_DIM = 8;
const CAPACITY = 32;
const STEPS = 6;

function gqaGraph(): Uint8Array {
  const kvShape = ['batch', KV_HEADS, 'past', HEAD_DIM];
  return encodeModel(
    graph({
      name: 'gqa_probe',
      nodes: [
        node({
          name: 'gqa',
          op: 'GroupQueryAttention',
          domain: MS_DOMAIN,
          inputs: ['query', 'key', 'value', 'past_key', 'past_value', 'seqlens_k', 'total_sequence_length'],
          outputs: ['attended', 'present_key', 'present_value'],
          attributes: [
            intAttr('num_heads', HEADS),
            intAttr('kv_num_heads', KV_HEADS),
            floatAttr('scale', 1 / Math.sqrt(HEAD_DIM)),
          ],
        }),
      ],
      inputs: [
        tensorInfo('query', ElemType.float, ['batch', 'seq', HEADS * HEAD_DIM]),
        tensorInfo('key', ElemType.float, ['batch', 'seq', KV_HEADS * HEAD_DIM]),
        tensorInfo('value', ElemType.float, ['batch', 'seq', KV_HEADS * HEAD_DIM]),
        tensorInfo('past_key', ElemType.float, kvShape),
        tensorInfo('past_value', ElemType.float, kvShape),
        tensorInfo('seqlens_k', ElemType.int32, ['batch']),
        tensorInfo('total_sequence_length', ElemType.int32, []),
      ],
      outputs: [
        tensorInfo('attended', ElemType.float, ['batch', 'seq', HEADS * HEAD_DIM]),
        tensorInfo('present_key', ElemType.float, null),
        tensorInfo('present_value', ElemType.float, null),
      ],
    }),
  );
}

/** Deterministic pseudo-random step inputs: one new token for each of `batch` rows. */
function stepInputs(step: number, batch: number): Record<string, ort.Tensor> {
  const fill = (n: number, salt: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + step * 1.7 + salt) * 0.5);
  return {
    query: new ort.Tensor('float32', fill(batch * HEADS * HEAD_DIM, 1), [batch, 1, HEADS * HEAD_DIM]),
    key: new ort.Tensor('float32', fill(batch * KV_HEADS * HEAD_DIM, 2), [batch, 1, KV_HEADS * HEAD_DIM]),
    value: new ort.Tensor('float32', fill(batch * KV_HEADS * HEAD_DIM, 3), [batch, 1, KV_HEADS * HEAD_DIM]),
    seqlens_k: new ort.Tensor(
      'int32',
      Int32Array.from({ length: batch }, () => step),
      [batch],
    ),
    total_sequence_length: new ort.Tensor('int32', Int32Array.of(step + 1), []),
  };
}

/** The CPU EP's outputs for every step, past carried on the host (present fed back). */
async function cpuReference(batch: number): Promise<Float32Array[]> {
  const session = await ort.InferenceSession.create(gqaGraph(), { executionProviders: ['cpu'] });
  const empty = new ort.Tensor('float32', new Float32Array(0), [batch, KV_HEADS, 0, HEAD_DIM]);
  let past: { key: ort.Tensor; value: ort.Tensor } = { key: empty, value: empty };
  const outputs: Float32Array[] = [];
  for (let step = 0; step < STEPS; step++) {
    const out = await session.run({ ...stepInputs(step, batch), past_key: past.key, past_value: past.value });
    outputs.push(out.attended!.data as Float32Array);
    past = { key: out.present_key!, value: out.present_value! };
  }
  await session.release();
  return outputs;
}

type Probe = (
  session: ort.InferenceSession,
  zeros: () => Promise<ort.Tensor>,
  batch: number,
) => Promise<{
  outputs: Float32Array[];
  note: string;
}>;

const presentToPast: Probe = async (session, _zeros, batch) => {
  const empty = new ort.Tensor('float32', new Float32Array(0), [batch, KV_HEADS, 0, HEAD_DIM]);
  let past: { key: ort.Tensor; value: ort.Tensor } = { key: empty, value: empty };
  const outputs: Float32Array[] = [];
  const dims: string[] = [];
  for (let step = 0; step < STEPS; step++) {
    const out = await session.run(
      { ...stepInputs(step, batch), past_key: past.key, past_value: past.value },
      ['attended', 'present_key', 'present_value'],
    );
    outputs.push(out.attended!.data as Float32Array);
    if (step > 0) {
      past.key.dispose();
      past.value.dispose();
    }
    past = { key: out.present_key!, value: out.present_value! };
    dims.push(`[${out.present_key!.dims.join(',')}] ${out.present_key!.location}`);
  }
  return { outputs, note: `present per step: ${dims.join(' → ')}` };
};

/** As present → past, but the first past is a zeroed capacity-32 buffer, as a block-grown arena's. */
const paddedPresentToPast: Probe = async (session, zeros, batch) => {
  let past = { key: await zeros(), value: await zeros() };
  const outputs: Float32Array[] = [];
  const dims: string[] = [];
  for (let step = 0; step < STEPS; step++) {
    const out = await session.run(
      { ...stepInputs(step, batch), past_key: past.key, past_value: past.value },
      ['attended', 'present_key', 'present_value'],
    );
    outputs.push(out.attended!.data as Float32Array);
    past.key.dispose();
    past.value.dispose();
    past = { key: out.present_key!, value: out.present_value! };
    dims.push(`[${out.present_key!.dims.join(',')}]`);
  }
  return { outputs, note: `present per step: ${dims.join(' → ')}` };
};

const inPlace: Probe = async (session, zeros, batch) => {
  const key = await zeros();
  const value = await zeros();
  const outputs: Float32Array[] = [];
  for (let step = 0; step < STEPS; step++) {
    const out = await session.run(
      { ...stepInputs(step, batch), past_key: key, past_value: value },
      { attended: null, present_key: key, present_value: value },
    );
    outputs.push(out.attended!.data as Float32Array);
  }
  return { outputs, note: `past = present = one [${key.dims.join(',')}] ${key.location} tensor per K/V` };
};

export async function runGpuProbe(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { device: { type: 'string', default: 'webgpu' } } });
  const device = parseDevice(values.device);
  const batch = 2;
  const reference = await cpuReference(batch);
  const onDevice = device === 'webgpu';
  const session = await ort.InferenceSession.create(gqaGraph(), {
    executionProviders: executionProvidersFor(device),
    logSeverityLevel: 3,
    ...(onDevice
      ? {
          preferredOutputLocation: {
            attended: 'cpu',
            present_key: 'gpu-buffer',
            present_value: 'gpu-buffer',
          },
        }
      : {}),
  });
  const graphs = await DeviceKvGraphs.create(
    { keptLayers: [0], numKvHeads: KV_HEADS, headDim: HEAD_DIM, maxSeqLen: CAPACITY },
    device === 'cuda' ? 'cpu' : device,
  );
  console.log(
    `gpu-probe: GroupQueryAttention ${HEADS}/${KV_HEADS} heads, D ${HEAD_DIM}, batch ${batch}, ${STEPS} steps, --device ${device}`,
  );
  for (const [name, probe] of [
    ['present → past', presentToPast],
    ['present → past, padded', paddedPresentToPast],
    ['in place', inPlace],
  ] as const) {
    try {
      const { outputs, note } = await probe(session, () => graphs.zeros(batch, CAPACITY), batch);
      const worst = Math.max(...outputs.map((o, i) => maxAbsDiff(o, reference[i]!)));
      console.log(
        `${name}: max |Δ| vs CPU ${worst.toExponential(2)} (${worst < 1e-4 ? 'matches' : 'DIFFERS'}); ${note}`,
      );
    } catch (e) {
      console.log(`${name}: failed: ${(e instanceof Error ? e.message : String(e)).split('\n')[0]}`);
    }
  }
  await session.release();
  await graphs.release();
  return 0;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.exitCode = await runGpuProbe(process.argv.slice(2));
}
