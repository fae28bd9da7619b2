import { z } from 'zod';
import { DropserveError } from '../../engine/errors.ts';
import { formatSlo, type Slo } from './slo.ts';

/**
 * Capacity plans in replicas: from a `loadtest capacity` report (one sweep per pruning level, one
 * SLO), how many replicas of each variant a target request rate needs, what they cost, and which
 * variant is cheapest among those accurate enough.
 *
 * The model, per variant:
 *   capacity (req/s per replica) = request throughput measured at the highest concurrency that held
 *                                  the SLO, × report mean output tokens ÷ mix mean output tokens
 *                                  (the scale is 1 without --mix, or when the means are equal)
 *   replicas                     = ceil(target ÷ (capacity × headroom))
 *   cost/h                       = replicas × replica cost
 *   cost per 1M output tokens    = cost/h ÷ (target × mean output tokens × 3600) × 1e6
 * Scaling by output length assumes decode dominates a request's time, as it does when outputs are
 * much longer than prompts; it is an approximation, and the plan says so whenever it applies it.
 */

export interface PlanMix {
  meanOutputTokens: number;
  meanInputTokens: number | null;
  /** Where the mix came from, e.g. "output=256" or "file prompts.jsonl (40 lines)". */
  source: string;
}

export interface PlanOptions {
  /** Requests per second the fleet must serve. */
  targetRps: number;
  /** Share of measured capacity a replica is planned to run at (0 < h ≤ 1). Default 0.7. */
  headroom?: number;
  /** Cost of one replica per hour; null leaves costs out and ranks by replica count. */
  replicaCostPerHour?: number | null;
  /** Variants below this agreement with the full model are not chosen. Default 0. */
  minAgreement?: number;
  mix?: PlanMix | null;
  /** Agreement per model id, overriding what the report measured. */
  agreementOverrides?: Record<string, number>;
}

export type AgreementSource = 'full model' | 'report' | 'override' | null;

export interface VariantPlan {
  model: string;
  /** Highest concurrency that held the SLO in the report (0: none). */
  maxConcurrency: number;
  /** Request throughput measured at maxConcurrency, req/s. */
  measuredRps: number;
  /** Mean output tokens per request at maxConcurrency. */
  measuredMeanOutputTokens: number;
  /** measuredMeanOutputTokens ÷ the mix's mean output tokens (1 without a mix). */
  mixScale: number;
  /** Per-replica capacity at the SLO for the planned mix, req/s. */
  capacityRps: number;
  /** Null when the variant held the SLO at no level: no number of replicas meets it. */
  replicas: number | null;
  costPerHour: number | null;
  costPerMillionOutputTokens: number | null;
  agreement: number | null;
  agreementSource: AgreementSource;
  meetsSlo: boolean;
  /** meetsSlo and agreement ≥ minAgreement. */
  eligible: boolean;
  /** Why a variant is not eligible; null when it is. */
  excludedBecause: string | null;
}

export interface CapacityPlan {
  config: {
    targetRps: number;
    headroom: number;
    replicaCostPerHour: number | null;
    minAgreement: number;
    mix: PlanMix | null;
    slo: string;
    capacityReport: { startedAt: string; commit: string; dataset: string };
  };
  /** Mean output tokens per request used for cost per token (the mix's, else the report's). */
  meanOutputTokens: number;
  /** Set when per-replica capacity was rescaled for a different output length. */
  approximation: string | null;
  variants: VariantPlan[];
  /** The cheapest eligible variant; null when none is. */
  chosen: string | null;
  verdict: string;
}

const finite = z.number().finite();
const levelSchema = z.looseObject({
  concurrency: finite,
  holdsSlo: z.boolean(),
  summary: z.looseObject({
    completed: finite,
    totalOutputTokens: finite,
    requestThroughput: finite,
  }),
});
const reportSchema = z.looseObject({
  config: z.looseObject({
    slo: z.record(z.string(), finite),
    sloPercentile: finite,
    dataset: z.string(),
  }),
  commit: z.string(),
  startedAt: z.string(),
  variants: z
    .array(
      z.looseObject({
        model: z.string(),
        maxConcurrency: finite,
        levels: z.array(levelSchema),
        agreement: finite.nullable().optional(),
        variant: z.looseObject({ base: z.string().nullable() }).nullable().optional(),
      }),
    )
    .min(1, 'has no variants'),
});

/** The parts of a capacity report a plan needs; a report that lacks one fails naming the field. */
export type PlanInput = z.infer<typeof reportSchema>;

export function parseCapacityReport(json: unknown, path = 'capacity report'): PlanInput {
  const parsed = reportSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `${path}: ${issue.path.map(String).join('.') || 'report'}: ${issue.message} — expected the --json output of dropserve loadtest capacity`,
    );
  }
  return parsed.data;
}

export function planCapacity(input: PlanInput, options: PlanOptions): CapacityPlan {
  const headroom = options.headroom ?? 0.7;
  const minAgreement = options.minAgreement ?? 0;
  const cost = options.replicaCostPerHour ?? null;
  const mix = options.mix ?? null;
  if (!(options.targetRps > 0)) throw new RangeError(`target rps must be > 0, found ${options.targetRps}`);
  if (!(headroom > 0 && headroom <= 1)) throw new RangeError(`headroom must be in (0, 1], found ${headroom}`);
  if (cost !== null && !(cost >= 0)) throw new RangeError(`replica cost must be >= 0, found ${cost}`);
  if (mix && !(mix.meanOutputTokens > 0))
    throw new RangeError(`mix mean output tokens must be > 0, found ${mix.meanOutputTokens}`);
  for (const model of Object.keys(options.agreementOverrides ?? {})) {
    if (!input.variants.some((v) => v.model === model)) {
      throw new RangeError(
        `--agreement ${model}: not in the report (${input.variants.map((v) => v.model).join(', ')})`,
      );
    }
  }

  let rescaled = false;
  const measuredMeans: number[] = [];
  const variants = input.variants.map((v): VariantPlan => {
    const held = v.maxConcurrency > 0 ? v.levels.find((l) => l.concurrency === v.maxConcurrency) : undefined;
    const measuredRps = held?.summary.requestThroughput ?? 0;
    const measuredMean =
      held && held.summary.completed > 0 ? held.summary.totalOutputTokens / held.summary.completed : 0;
    if (held) measuredMeans.push(measuredMean);
    const mixScale = mix && held && measuredMean > 0 ? measuredMean / mix.meanOutputTokens : 1;
    if (mixScale !== 1) rescaled = true;
    const capacityRps = measuredRps * mixScale;
    const meetsSlo = capacityRps > 0;
    const replicas = meetsSlo ? Math.ceil(options.targetRps / (capacityRps * headroom)) : null;
    const { agreement, source } = agreementOf(v, options.agreementOverrides);
    const excludedBecause = !meetsSlo
      ? `holds the SLO at no measured level`
      : agreement === null
        ? minAgreement > 0
          ? 'agreement unknown (run capacity with shadow scoring on, or pass --agreement)'
          : null
        : agreement < minAgreement
          ? `agreement ${agreement.toFixed(3)} < ${minAgreement}`
          : null;
    return {
      model: v.model,
      maxConcurrency: v.maxConcurrency,
      measuredRps,
      measuredMeanOutputTokens: measuredMean,
      mixScale,
      capacityRps,
      replicas,
      costPerHour: replicas !== null && cost !== null ? replicas * cost : null,
      costPerMillionOutputTokens: null, // filled below, once the token mean is known
      agreement,
      agreementSource: source,
      meetsSlo,
      eligible: excludedBecause === null,
      excludedBecause,
    };
  });

  const meanOutputTokens = mix?.meanOutputTokens ?? mean(measuredMeans);
  for (const v of variants) {
    if (v.costPerHour !== null && meanOutputTokens > 0) {
      v.costPerMillionOutputTokens = (v.costPerHour / (options.targetRps * meanOutputTokens * 3600)) * 1e6;
    }
  }
  const chosen = cheapest(variants);
  const slo = formatSlo(input.config.slo as Slo, input.config.sloPercentile);
  return {
    config: {
      targetRps: options.targetRps,
      headroom,
      replicaCostPerHour: cost,
      minAgreement,
      mix,
      slo,
      capacityReport: {
        startedAt: input.startedAt,
        commit: input.commit,
        dataset: input.config.dataset,
      },
    },
    meanOutputTokens,
    approximation: rescaled
      ? `per-replica capacity rescaled from the report's output length to the mix's (${mix!.meanOutputTokens} tokens): assumes decode dominates request time`
      : null,
    variants,
    chosen: chosen?.model ?? null,
    verdict: verdictOf(chosen, variants, options.targetRps, slo, minAgreement),
  };
}

function agreementOf(
  v: PlanInput['variants'][number],
  overrides: Record<string, number> | undefined,
): { agreement: number | null; source: AgreementSource } {
  const override = overrides?.[v.model];
  if (override !== undefined) return { agreement: override, source: 'override' };
  if (v.variant?.base === v.model) return { agreement: 1, source: 'full model' };
  if (typeof v.agreement === 'number') return { agreement: v.agreement, source: 'report' };
  return { agreement: null, source: null };
}

/** Cheapest per hour (fewest replicas without a cost); ties go to higher agreement, then capacity. */
function cheapest(variants: readonly VariantPlan[]): VariantPlan | undefined {
  const rank = (v: VariantPlan): number => v.costPerHour ?? v.replicas!;
  return variants
    .filter((v) => v.eligible)
    .reduce<VariantPlan | undefined>((best, v) => {
      if (!best) return v;
      if (rank(v) !== rank(best)) return rank(v) < rank(best) ? v : best;
      if ((v.agreement ?? 0) !== (best.agreement ?? 0))
        return (v.agreement ?? 0) > (best.agreement ?? 0) ? v : best;
      return v.capacityRps > best.capacityRps ? v : best;
    }, undefined);
}

function verdictOf(
  chosen: VariantPlan | undefined,
  variants: readonly VariantPlan[],
  targetRps: number,
  slo: string,
  minAgreement: number,
): string {
  if (!chosen) {
    return `no variant meets ${slo} with agreement ≥ ${minAgreement}: ${variants.map((v) => `${v.model} ${v.excludedBecause}`).join('; ')}`;
  }
  const price = chosen.costPerHour === null ? '' : ` at ${chosen.costPerHour.toFixed(2)}/h`;
  const agreement =
    chosen.agreement === null ? 'agreement unknown' : `agreement ${chosen.agreement.toFixed(3)}`;
  return `${chosen.model}: ${chosen.replicas} replica(s) serve ${targetRps} req/s at ${slo}${price} (${agreement})`;
}

function mean(values: readonly number[]): number {
  return values.length === 0 ? 0 : values.reduce((s, x) => s + x, 0) / values.length;
}

/** "1.2/h", "$1.2/h", "1.2" (per hour), "0.02/min", "900/month" (730 h) → cost per hour. */
export function parseReplicaCost(text: string): number {
  const match = /^\s*\$?(\d+(?:\.\d+)?)\s*(?:\/\s*(h|hr|hour|min|month))?\s*$/.exec(text);
  if (!match) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--replica-cost: expected a cost per hour like 1.2/h (or /min, /month), found '${text}'`,
    );
  }
  const value = Number(match[1]);
  const unit = match[2] ?? 'h';
  return unit === 'min' ? value * 60 : unit === 'month' ? value / 730 : value;
}

/** `--agreement MODEL=0.93` (repeatable; model ids may contain ':'). */
export function parseAgreementOverride(text: string): [string, number] {
  const eq = text.lastIndexOf('=');
  const value = Number(text.slice(eq + 1));
  if (eq <= 0 || text.slice(eq + 1).trim() === '' || !(value >= 0 && value <= 1)) {
    throw new DropserveError(
      'DS_INVALID_ARGUMENT',
      `--agreement: expected MODEL=FRACTION with a fraction in [0, 1], found '${text}'`,
    );
  }
  return [text.slice(0, eq).trim(), value];
}

/** `--mix output=256[,input=128]`: the planned workload's mean lengths in tokens. */
export function parseMixSpec(text: string): PlanMix | null {
  if (!/^\s*(output|input)=/.test(text)) return null;
  const fields: Record<string, number> = {};
  for (const part of text.split(',')) {
    const [key, raw] = part.split('=').map((s) => s.trim());
    const value = Number(raw);
    if ((key !== 'output' && key !== 'input') || raw === undefined || !(value > 0)) {
      throw new DropserveError(
        'DS_INVALID_ARGUMENT',
        `--mix: expected output=N[,input=N] (mean tokens, N > 0) or a JSONL dataset file, found '${text}'`,
      );
    }
    fields[key] = value;
  }
  if (fields.output === undefined) {
    throw new DropserveError('DS_INVALID_ARGUMENT', `--mix '${text}': output=N is required`);
  }
  return { meanOutputTokens: fields.output, meanInputTokens: fields.input ?? null, source: text.trim() };
}
