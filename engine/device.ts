/**
 * `--device cpu|cuda|webgpu` → onnxruntime-node execution providers, and the one place that turns an
 * EP that cannot start into a DropserveError saying what is missing.
 */
import type { InferenceSession } from 'onnxruntime-node';
import { DropserveError } from './errors.ts';

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
    'Vulkan on Linux); it needs a GPU with a Vulkan driver and the Vulkan loader (libvulkan.so.1).',
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
