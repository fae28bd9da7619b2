import * as grpc from '@grpc/grpc-js';
import type * as protoLoader from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { type Logger, pino } from 'pino';
import type { EngineClient } from '../../engine/client.ts';
import type { ExperimentRouter } from '../experiments/experiment-router.ts';
import { completeHandler, generateHandler } from './generate-handlers.ts';
import { HealthService } from './health-service.ts';
import { DROPSERVE_SERVICE, HEALTH_SERVICE, loadDropserveProtos } from './load-protos.ts';
import { detokenizeHandler, listModelsHandler, tokenizeHandler } from './model-handlers.ts';
import type { RequestObserver } from './request-observer.ts';

export interface GrpcServerOptions {
  engine: EngineClient;
  /** 0 = any free port (the bound one is returned). */
  port: number;
  host: string;
  /** When set, Dropserve RPCs need `authorization: Bearer <apiKey>`; health and reflection stay open. */
  apiKey?: string;
  metrics?: RequestObserver;
  logger?: Logger;
  /** A/B experiments, shared with the HTTP API. */
  experiments?: ExperimentRouter;
}

export interface GrpcServer {
  port: number;
  /**
   * Health turns NOT_SERVING, new calls are refused, and calls in flight get graceMs to finish
   * before they are cancelled (which aborts their engine sequences). Does not close the engine.
   */
  close(graceMs?: number): Promise<void>;
}

export const DEFAULT_GRACE_MS = 5_000;

/** The gRPC transport: dropserve.v1.Dropserve, grpc.health.v1.Health and server reflection. */
export async function startGrpcServer(options: GrpcServerOptions): Promise<GrpcServer> {
  const { engine, apiKey, metrics, experiments } = options;
  const logger = options.logger ?? pino({ level: 'silent' });
  const packageDefinition = loadDropserveProtos();
  const server = new grpc.Server();

  const context = { engine, apiKey, metrics, logger, experiments };
  server.addService(serviceDefinition(packageDefinition, DROPSERVE_SERVICE), {
    Generate: generateHandler(context),
    Complete: completeHandler(context),
    ListModels: listModelsHandler(context),
    Tokenize: tokenizeHandler(context),
    Detokenize: detokenizeHandler(context),
  });
  const health = new HealthService(() => engine.isReady(), [DROPSERVE_SERVICE]);
  server.addService(serviceDefinition(packageDefinition, HEALTH_SERVICE), health.implementation());
  new ReflectionService(packageDefinition).addToServer(server);

  const port = await bind(server, options.host, options.port);
  logger.info({ host: options.host, port, auth: apiKey !== undefined }, 'grpc server listening');

  let closing: Promise<void> | undefined;
  return {
    port,
    close: (graceMs = DEFAULT_GRACE_MS) => {
      closing ??= shutdown(server, health, graceMs);
      return closing;
    },
  };
}

function serviceDefinition(
  packageDefinition: protoLoader.PackageDefinition,
  name: string,
): grpc.ServiceDefinition {
  const definition = packageDefinition[name];
  // Message and enum definitions carry `format`; a service is a plain map of method definitions.
  if (definition === undefined || 'format' in definition) {
    throw new TypeError(`${name} is not a service in the loaded protos`);
  }
  return definition as grpc.ServiceDefinition;
}

function bind(server: grpc.Server, host: string, port: number): Promise<number> {
  // An IPv6 literal needs brackets in a host:port address.
  const address = host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
  return new Promise((resolve, reject) => {
    server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (error, boundPort) =>
      error ? reject(error) : resolve(boundPort),
    );
  });
}

async function shutdown(server: grpc.Server, health: HealthService, graceMs: number): Promise<void> {
  health.shutdown();
  await new Promise<void>((resolve) => {
    const force = setTimeout(() => server.forceShutdown(), graceMs);
    server.tryShutdown(() => {
      clearTimeout(force);
      resolve();
    });
  });
}
