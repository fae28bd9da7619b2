/**
 * `--device cpu|cuda|webgpu` → onnxruntime-node execution providers, and the one place that turns an
 * EP that cannot start into a DropserveError saying what is missing.
 */
import ort, { type InferenceSession } from 'onnxruntime-node';
import { DropserveError } from './errors.ts';
import { ElemType, encodeModel, graph, node, tensorInfo } from './graph/onnx-helpers.ts';

export type Device = 'cpu' | 'cuda' | 'webgpu';

export const DEVICES: readonly Device[] = ['cpu', 'cuda', 'webgpu'];

export function parseDevice(value: string): Device {
  if ((DEVICES as readonly string[]).includes(value)) return value as Device;
  throw new DropserveError(
    'DS_INVALID_ARGUMENT',
    `--device must be one of ${DEVICES.join(', ')}, got "${value}"`,
    {
      param: 'device',
    },
  );
}

/**
 * Providers for a device. No CPU fallback is listed for cuda/webgpu: asking for a GPU and silently
 * getting the CPU would make every measurement a lie. Ops an EP lacks still fall back per node.
 */
export function executionProvidersFor(device: Device): InferenceSession.ExecutionProviderConfig[] {
  switch (device) {
    case 'cpu':
      return ['cpu'];
    case 'cuda':
      return [{ name: 'cuda', deviceId: 0 }];
    case 'webgpu':
      return [{ name: 'webgpu' }];
  }
}

const MISSING: Record<GpuDevice, string> = {
  cuda:
    'the CUDA execution provider could not be loaded. onnxruntime-node downloads its CUDA 12 EP binaries ' +
    'at install time, and this install skipped them (.npmrc: onnxruntime-node-install-cuda=skip). On a ' +
    'machine with an NVIDIA GPU, CUDA 12 and cuDNN 9, drop that line and fetch them with ' +
    '`ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js` ' +
    '(needs internet) so libonnxruntime_providers_cuda.so sits next to the onnxruntime binding.',
  webgpu:
    'the WebGPU execution provider found no GPU adapter. onnxruntime-node bundles WebGPU (Dawn over ' +
    'Vulkan on Linux); it needs a GPU with a Vulkan driver and the Vulkan loader (libvulkan.so.1), or, ' +
    "without a GPU, Mesa ≥ 24's lavapipe (Debian 12: mesa-vulkan-drivers from bookworm-backports, as .ci/run does).",
};

type GpuDevice = Exclude<Device, 'cpu'>;

export function isGpuDevice(device: Device): device is GpuDevice {
  return device !== 'cpu';
}

/** The error to raise when a session cannot be created on a GPU device. */
export function deviceUnavailableError(device: GpuDevice, cause: unknown): DropserveError {
  const detail = cause instanceof Error ? cause.message.split('\n')[0] : String(cause);
  return new DropserveError(
    'DS_DEVICE_UNAVAILABLE',
    `--device ${device}: ${MISSING[device]} (onnxruntime: ${detail})`,
    {
      cause,
    },
  );
}

let webGpuProbe: Promise<string | null> | undefined;

/**
 * Why onnxruntime's WebGPU EP cannot start here, or null when it can: one tiny session, once per
 * process. Tests that need WebGPU skip with this reason (no Vulkan loader, no driver, Mesa too old).
 */
export function webGpuUnavailableReason(): Promise<string | null> {
  webGpuProbe ??= (async () => {
    const model = encodeModel(
      graph({
        name: 'webgpu_probe',
        nodes: [node({ name: 'add', op: 'Add', inputs: ['x', 'x'], outputs: ['y'] })],
        inputs: [tensorInfo('x', ElemType.float, [1])],
        outputs: [tensorInfo('y', ElemType.float, [1])],
      }),
    );
    try {
      const session = await ort.InferenceSession.create(model, {
        executionProviders: executionProvidersFor('webgpu'),
        logSeverityLevel: 3,
      });
      await session.release();
      return null;
    } catch (e) {
      return deviceUnavailableError('webgpu', e).message;
    }
  })();
  return webGpuProbe;
}
