/**
 * "512MiB", "2GB", "1.5 GiB", "1048576" → bytes. Binary suffixes (KiB, MiB, GiB, TiB, and the
 * single letters K, M, G, T) are powers of 1024; decimal ones (kB/KB, MB, GB, TB) powers of 1000.
 */
const UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
};

export function parseByteSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  const unit = match ? UNITS[match[2]!.toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new RangeError(`"${text}" is not a byte size (examples: 536870912, 512MiB, 2GB, 1.5GiB)`);
  }
  const bytes = Math.floor(Number(match[1]) * unit);
  if (!Number.isSafeInteger(bytes) || bytes <= 0)
    throw new RangeError(`"${text}" is not a positive byte size`);
  return bytes;
}
