/**
 * `dropserve <command> [flags]`. Each command lives in its own module, loaded only when used so that
 * `dropserve loadtest` never pays for onnxruntime and `serve` never for the load generator.
 */
type CommandRunner = (argv: string[]) => Promise<number>;

const COMMANDS: Record<string, { summary: string; load: () => Promise<CommandRunner> }> = {
  serve: {
    summary: 'serve a model (and its pruned variants) over HTTP and gRPC',
    load: async () => (await import('./serve.ts')).runServeCommand,
  },
  generate: {
    summary: 'generate text from a prompt (one-off, prints text or --json)',
    load: async () => (await import('./generate.ts')).runGenerateCommand,
  },
  convert: {
    summary: 'convert a model to GGUF (--to gguf --type f32|f16|q8_0|q4_0)',
    load: async () => (await import('./convert.ts')).runConvertCommand,
  },
  prune: {
    summary: 'prune analyze | plan | eval: find and evaluate sublayers to drop',
    load: async () => (await import('./prune.ts')).runPruneCommand,
  },
  loadtest: {
    summary: 'load-test a running server: capacity (users per variant), plan (replicas), soak, ab-report',
    load: async () => (await import('./loadtest.ts')).runLoadtestCommand,
  },
  bench: {
    summary:
      'bench decode | batch | prune | shadow | prefix | quant | gguf | startup | tokenizer: ratios vs a baseline',
    load: async () => (await import('../bench/main.ts')).runBenchCommand,
  },
};

function usage(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return [
    'usage: dropserve <command> [flags]',
    '',
    'commands:',
    ...lines,
    '',
    'dropserve <command> --help for flags',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name === undefined ? 1 : 0;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`dropserve: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  const run = await command.load();
  return run(rest);
}

main(process.argv.slice(2)).then(
  (code) => {
    // serve keeps the process alive through its servers; other commands exit when done.
    if (code !== -1) process.exitCode = code;
  },
  (error: unknown) => {
    const e = error as { code?: string; message?: string };
    console.error(`dropserve: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(error)}`);
    if (process.env.DROPSERVE_DEBUG) console.error(error);
    process.exitCode = 1;
  },
);
