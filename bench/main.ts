/** `dropserve bench <name>`: each benchmark prints a baseline and candidates measured in the same run. */
type BenchRunner = (argv: string[]) => Promise<number>;

const BENCHES: Record<string, { summary: string; load: () => Promise<BenchRunner> }> = {
  decode: {
    summary:
      'decode tokens/s, full model vs attention-dropped variants (stories260K, synthetic 6L/288/32000)',
    load: async () => (await import('./decode.ts')).runDecodeBench,
  },
  batch: {
    summary: 'aggregate decode tokens/s at concurrency 1, 4, 16, full vs pruned',
    load: async () => (await import('./batch.ts')).runBatchBench,
  },
  prune: {
    summary: 'time of `prune analyze` per metric on stories260K, evaluations per second',
    load: async () => (await import('./prune.ts')).runPruneBench,
  },
  shadow: {
    summary: 'interactive p50 TTFT under closed-loop load, shadow scoring off vs --shadow-rate 1',
    load: async () => (await import('./shadow.ts')).runShadowBench,
  },
  tokenizer: {
    summary: 'llama2.c BPE encode time vs text length (tok512, and the 32000 vocab when ../shared has it)',
    load: async () => (await import('./tokenizer.ts')).runTokenizerBench,
  },
  prefix: {
    summary: 'prefill time / TTFT of requests sharing a 300-token prefix, prefix reuse off vs on',
    load: async () => (await import('./prefix.ts')).runPrefixBench,
  },
  quant: {
    summary:
      'decode tok/s and weight bytes/token, fp32 vs int8 vs int4 × full / 4 of 12 attention dropped (110M shape)',
    load: async () => (await import('./quant.ts')).runQuantBench,
  },
  gguf: {
    summary: 'GGUF F32/F16/Q8_0/Q4_0: file size, load time vs the source checkpoint, logit differences',
    load: async () => (await import('./gguf.ts')).runGgufBench,
  },
  gpu: {
    summary:
      'device-resident vs host KV on --device webgpu: decode tok/s, TTFT, host↔device bytes/step; sequences per KV budget',
    load: async () => (await import('./gpu.ts')).runGpuBench,
  },
  startup: {
    summary: 'cold start to the first token, tsx sources vs compiled dist/ (stories260K, 110M shape)',
    load: async () => (await import('./startup.ts')).runStartupBench,
  },
};

export async function runBenchCommand(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  const bench = name ? BENCHES[name] : undefined;
  if (!bench) {
    const list = Object.entries(BENCHES).map(([n, b]) => `  ${n.padEnd(8)} ${b.summary}`);
    console.error(['usage: dropserve bench <name> [flags]', '', ...list].join('\n'));
    return name === '--help' ? 0 : 2;
  }
  return (await bench.load())(rest);
}
