import { Hono } from 'hono';
import { DropserveError } from '../../../engine/errors.ts';
import { checkExperimentName, parseExperimentDefinition } from '../../experiments/experiment-body.ts';
import type { Experiment, ExperimentRouter, ExperimentScope } from '../../experiments/experiment-router.ts';
import type { ExperimentStatistics } from '../../experiments/experiment-statistics.ts';
import type { ExperimentsFileStatus } from '../../experiments/experiments-file-source.ts';
import type { AppEnv } from '../../http/env.ts';
import { HttpProblem, invalidRequest } from '../../http/errors.ts';
import { readJsonBody } from '../../openai/common/read-json.ts';

/** One experiment as the admin API shows it: each arm with its weight and its share of traffic. */
export interface ExperimentView {
  object: 'experiment';
  name: string;
  arms: { variant: string; weight: number; share: number; drained?: true }[];
  /** The arm the others are compared with. */
  control: string;
  /** "replica": this process only (flag, admin API); "file": from --experiments-file, on every replica. */
  scope: ExperimentScope;
}

export function experimentView(experiment: Experiment, router?: ExperimentRouter): ExperimentView {
  const total = experiment.arms.reduce((s, a) => s + a.weight, 0);
  const drained = new Set(router?.drained(experiment.name).map((d) => d.variant));
  return {
    object: 'experiment',
    name: experiment.name,
    arms: experiment.arms.map((a) => ({
      variant: a.variant,
      weight: a.weight,
      share: a.weight / total,
      ...(drained.has(a.variant) ? { drained: true as const } : {}),
    })),
    control: router ? router.controlOf(experiment) : (experiment.control ?? experiment.arms[0]!.variant),
    scope: experiment.scope,
  };
}

const notFound = (name: string): HttpProblem =>
  new HttpProblem(404, `no experiment named \`${name}\``, {
    type: 'invalid_request_error',
    code: 'experiment_not_found',
    param: 'name',
  });

/**
 * A/B experiments at runtime (behind the /v1/* API key when one is set):
 *   GET    /v1/experiments          all experiments
 *   GET    /v1/experiments/{name}   one
 *   GET    /v1/experiments/{name}/report   statistics, intervals, verdicts, guardrails (experiment-report.ts)
 *   POST   /v1/experiments/{name}   create, or replace its arms whole: {"arms":[…]} or {"weights":{…}}
 *   DELETE /v1/experiments/{name}   remove (requests already assigned finish on their variant)
 * A change applies to requests that arrive after it; in-flight ones keep the variant they got.
 */
export function experimentsRoute(deps: {
  experiments: ExperimentRouter;
  statistics: ExperimentStatistics;
  experimentsFileStatus?: () => ExperimentsFileStatus | undefined;
}): Hono<AppEnv> {
  const { experiments, statistics } = deps;
  // The file is the source of truth on every replica: changing one replica's copy would split them.
  const refuseFileScoped = (name: string): void => {
    if (experiments.get(name)?.scope !== 'file') return;
    throw new HttpProblem(
      409,
      `experiment \`${name}\` comes from --experiments-file; edit the file to change it on every replica`,
      { type: 'invalid_request_error', code: 'experiment_from_file', param: 'name' },
    );
  };
  const view = (e: Experiment): ExperimentView => experimentView(e, experiments);
  return (
    new Hono<AppEnv>()
      .get('/v1/experiments', (c) => {
        const file = deps.experimentsFileStatus?.();
        return c.json({
          object: 'list',
          data: experiments.list().map(view),
          ...(file ? { experiments_file: file } : {}),
        });
      })
      // Hono's router needs the suffix inside the pattern: a name may itself contain '/'.
      .get('/v1/experiments/:path{.+/report}', (c) => {
        const path = c.req.param('path');
        const name = path.slice(0, -'/report'.length);
        const report = statistics.report(name);
        if (report) return c.json(report);
        // An experiment whose own name ends in "/report" is still readable at its URL.
        const named = experiments.get(path);
        if (named) return c.json(view(named));
        throw notFound(name);
      })
      .get('/v1/experiments/:name{.+}', (c) => {
        const experiment = experiments.get(c.req.param('name'));
        if (!experiment) throw notFound(c.req.param('name'));
        return c.json(view(experiment));
      })
      .post('/v1/experiments/:name{.+}', (c) => {
        const name = checkExperimentName(c.req.param('name'));
        refuseFileScoped(name);
        const { arms, control } = parseExperimentDefinition(readJsonBody(c));
        const before = experiments.get(name);
        let after: Experiment;
        try {
          after = experiments.set(name, arms, { control, scope: 'replica' });
        } catch (error) {
          // An unknown variant in the body is a bad body, not a missing resource at this URL.
          if (error instanceof DropserveError && error.code === 'DS_NOT_FOUND') {
            throw invalidRequest(error.message, 'arms', 'variant_not_found');
          }
          throw error;
        }
        c.get('logger').info(
          { experiment: name, oldWeights: weightsOf(before), newWeights: weightsOf(after) },
          before ? `experiment ${name}: weights changed` : `experiment ${name}: created`,
        );
        return c.json(view(after), before ? 200 : 201);
      })
      .delete('/v1/experiments/:name{.+}', (c) => {
        const name = c.req.param('name');
        refuseFileScoped(name);
        const before = experiments.get(name);
        if (!before || !experiments.delete(name)) throw notFound(name);
        c.get('logger').info(
          { experiment: name, oldWeights: weightsOf(before) },
          `experiment ${name}: deleted`,
        );
        return c.json({ object: 'experiment.deleted', name, deleted: true });
      })
  );
}

function weightsOf(experiment: Experiment | undefined): Record<string, number> | null {
  return experiment ? Object.fromEntries(experiment.arms.map((a) => [a.variant, a.weight])) : null;
}
