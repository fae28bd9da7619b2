import type { ForwardInput, ForwardOutput } from '../graph/io.ts';

/** What the runtime needs from a model session: one forward run at a time. */
export interface ForwardRunner {
  run(input: ForwardInput): Promise<ForwardOutput>;
  release(): Promise<void>;
}
