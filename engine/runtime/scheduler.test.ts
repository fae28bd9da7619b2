import { describe, expect, it } from 'vitest';
import {
  type GroupState,
  plannedBytes,
  planRound,
  type RunningJob,
  type SchedulerConfig,
  type WaitingJob,
} from './scheduler.ts';

const BLOCK = 4;
const groups: GroupState[] = [
  { id: 'full', bytesPerToken: 10 },
  { id: 'pruned', bytesPerToken: 5 },
  { id: 'full#score', bytesPerToken: 10 },
];
const config = (budgetBytes: number, extra: Partial<SchedulerConfig> = {}): SchedulerConfig => ({
  budgetBytes,
  blockTokens: BLOCK,
  watermarkBytes: 0,
  admission: 'on-demand',
  maxPrefillTokensPerRound: 512,
  ...extra,
});

const running = (id: string, cachedTokens: number, extra: Partial<RunningJob> = {}): RunningJob => ({
  id,
  kind: 'generate',
  group: 'full',
  priority: 'interactive',
  admittedAt: 1,
  cachedTokens,
  stepTokens: 1,
  worstCaseTokens: 100,
  ...extra,
});

const waiting = (id: string, admitTokens: number, extra: Partial<WaitingJob> = {}): WaitingJob => ({
  id,
  kind: 'generate',
  group: 'full',
  priority: 'interactive',
  admitTokens,
  computeTokens: admitTokens - 1,
  worstCaseTokens: 100,
  ...extra,
});

describe('plannedBytes', () => {
  it('pads every row of a group to its longest, in whole blocks', () => {
    const g = new Map(groups.map((x) => [x.id, x]));
    const bytes = plannedBytes(
      [
        { id: 'a', group: 'full', finalTokens: 3, worstCaseTokens: 0 },
        { id: 'b', group: 'full', finalTokens: 9, worstCaseTokens: 0 },
        { id: 'c', group: 'pruned', finalTokens: 4, worstCaseTokens: 0 },
      ],
      g,
      BLOCK,
    );
    // full: 2 rows × 12 tokens × 10 B; pruned: 1 row × 4 tokens × 5 B
    expect(bytes).toBe(2 * 12 * 10 + 4 * 5);
  });
});

describe('planRound: admission order', () => {
  it('admits first come, first served and stops at the first job that does not fit', () => {
    // Budget of 3 rows × 8 tokens of the full model.
    const plan = planRound(
      {
        groups,
        running: [],
        waiting: [waiting('a', 5), waiting('b', 7), waiting('c', 20), waiting('d', 2)],
        backgroundAllowed: true,
      },
      config(3 * 8 * 10),
    );
    // c needs 20 tokens → 3 rows × 20 padded: over budget; d (small) must not overtake it.
    expect(plan.admit).toEqual(['a', 'b']);
    expect(plan.decode).toEqual([{ group: 'full', jobs: ['a', 'b'] }]);
  });

  it('keeps the watermark free when others hold KV, but lets a lone job use the whole budget', () => {
    const budget = 2 * 8 * 10;
    const alone = planRound(
      { groups, running: [], waiting: [waiting('a', 16)], backgroundAllowed: true },
      config(budget, { watermarkBytes: 10 }),
    );
    expect(alone.admit).toEqual(['a']);
    const withOther = planRound(
      { groups, running: [running('r', 7)], waiting: [waiting('a', 8)], backgroundAllowed: true },
      config(budget, { watermarkBytes: 10 }),
    );
    expect(withOther.admit).toEqual([]);
    const noWatermark = planRound(
      { groups, running: [running('r', 7)], waiting: [waiting('a', 8)], backgroundAllowed: true },
      config(budget),
    );
    expect(noWatermark.admit).toEqual(['a']);
  });

  it('admits on the blocks in use, or on the worst case when asked', () => {
    const budget = 4 * 8 * 10; // four rows of 8 tokens; each job's worst case is 100 tokens
    const state = {
      groups,
      running: [],
      waiting: ['a', 'b', 'c', 'd', 'e'].map((id) => waiting(id, 6, { worstCaseTokens: 32 })),
      backgroundAllowed: true,
    };
    expect(planRound(state, config(budget)).admit).toEqual(['a', 'b', 'c', 'd']);
    // 32 tokens × 10 B reserved each: one job (320 B) fits a 320 B budget.
    expect(planRound(state, config(budget, { admission: 'worst-case' })).admit).toEqual(['a']);
  });

  it('bounds the tokens prefilled per round, but always admits one', () => {
    const state = {
      groups,
      running: [],
      waiting: [waiting('a', 300), waiting('b', 300), waiting('c', 10)],
      backgroundAllowed: true,
    };
    expect(planRound(state, config(1e9, { maxPrefillTokensPerRound: 200 })).admit).toEqual(['a']);
    expect(planRound(state, config(1e9, { maxPrefillTokensPerRound: 400 })).admit).toEqual(['a', 'b']);
  });

  it('holds background jobs back while their time share is used up', () => {
    const state = {
      groups,
      running: [],
      waiting: [
        waiting('i', 4),
        waiting('bg', 4, { kind: 'score', group: 'full#score', priority: 'background' }),
      ],
      backgroundAllowed: false,
    };
    expect(planRound(state, config(1e9)).admit).toEqual(['i']);
    expect(planRound({ ...state, backgroundAllowed: true }, config(1e9)).admit).toEqual(['i', 'bg']);
  });
});

describe('planRound: fairness across variants', () => {
  it('decodes every variant with running sequences each round, in the engine order of variants', () => {
    const plan = planRound(
      {
        groups,
        running: [
          running('p1', 5, { group: 'pruned' }),
          running('f1', 5),
          running('p2', 9, { group: 'pruned' }),
        ],
        waiting: [waiting('f2', 3)],
        backgroundAllowed: true,
      },
      config(1e9),
    );
    expect(plan.decode).toEqual([
      { group: 'full', jobs: ['f1', 'f2'] },
      { group: 'pruned', jobs: ['p1', 'p2'] },
    ]);
  });

  it('admits across variants in arrival order, the cheaper variant taking less of the budget', () => {
    // 8 tokens × 10 B = one full row; the pruned variant costs half per token.
    const plan = planRound(
      {
        groups,
        running: [],
        waiting: [
          waiting('p', 8, { group: 'pruned' }),
          waiting('f', 8),
          waiting('p2', 8, { group: 'pruned' }),
        ],
        backgroundAllowed: true,
      },
      config(8 * 10 + 8 * 5),
    );
    expect(plan.admit).toEqual(['p', 'f']);
  });
});

describe('planRound: preemption order', () => {
  it('preempts the most recently admitted sequence when a decode step cannot grow', () => {
    // Two rows at 8 tokens: the next token of either needs a third block for both rows.
    const plan = planRound(
      {
        groups,
        running: [running('old', 8, { admittedAt: 1 }), running('new', 8, { admittedAt: 2 })],
        waiting: [],
        backgroundAllowed: true,
      },
      config(200), // two rows of 12 tokens would take 240 B
    );
    expect(plan.preempt).toEqual(['new']);
    expect(plan.decode).toEqual([{ group: 'full', jobs: ['old'] }]);
  });

  it('preempts background jobs first, then interactive ones from the most recent', () => {
    const plan = planRound(
      {
        groups,
        running: [
          running('i1', 8, { admittedAt: 1 }),
          running('i2', 8, { admittedAt: 3 }),
          running('i3', 8, { admittedAt: 2 }),
          running('bg', 8, {
            admittedAt: 4,
            kind: 'score',
            group: 'full#score',
            priority: 'background',
            stepTokens: 8,
          }),
        ],
        waiting: [],
        backgroundAllowed: true,
      },
      // one row of 12 tokens of the full model fits: i1
      config(12 * 10),
    );
    expect(plan.preempt).toEqual(['bg', 'i2', 'i3']);
    expect(plan.decode).toEqual([{ group: 'full', jobs: ['i1'] }]);
    expect(plan.scoreChunks).toEqual([]);
  });

  it('does not readmit a job in the round that preempted it, and counts a preempted row as freed', () => {
    const plan = planRound(
      {
        groups,
        running: [running('a', 8, { admittedAt: 1 }), running('b', 8, { admittedAt: 2 })],
        waiting: [waiting('x', 3)],
        backgroundAllowed: true,
      },
      config(2 * 12 * 10),
    );
    expect(plan.preempt).toEqual([]);
    expect(plan.admit).toEqual([]); // 3 rows × 12 > budget
    const tight = planRound(
      {
        groups,
        running: [running('a', 8, { admittedAt: 1 }), running('b', 8, { admittedAt: 2 })],
        waiting: [waiting('b', 9)],
        backgroundAllowed: true,
      },
      config(12 * 10 + 8 * 10),
    );
    expect(tight.preempt).toEqual(['b']);
    expect(tight.admit).toEqual([]);
  });

  it('lets an interactive job that does not fit evict background jobs holding KV', () => {
    const plan = planRound(
      {
        groups,
        running: [
          running('bg', 20, { kind: 'score', group: 'full#score', priority: 'background', stepTokens: 4 }),
        ],
        waiting: [waiting('i', 8)],
        backgroundAllowed: false,
      },
      config(24 * 10),
    );
    expect(plan.preempt).toEqual(['bg']);
    expect(plan.admit).toEqual(['i']);
  });
});
