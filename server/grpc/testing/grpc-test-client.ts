import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { loadDropserveProtos } from '../load-protos.ts';

/**
 * A plain grpc-js client for tests and tools: calls any method of the loaded protos by service and
 * method name, with the API key and deadline as options. Messages are the loose objects
 * proto-loader produces (same loader options as the server), typed by the caller.
 */
export interface TestCallOptions {
  apiKey?: string;
  /** Milliseconds from now. */
  deadlineMs?: number;
}

export interface StreamResult<Response> {
  messages: Response[];
  /** Set when the call ended with a status other than OK. */
  error?: grpc.ServiceError;
}

export class GrpcTestClient {
  readonly #client: grpc.Client;
  readonly #definition: protoLoader.PackageDefinition;

  constructor(port: number, definition: protoLoader.PackageDefinition = loadDropserveProtos()) {
    this.#client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    this.#definition = definition;
  }

  unary<Response>(
    service: string,
    method: string,
    request: object,
    options: TestCallOptions = {},
  ): Promise<Response> {
    const m = this.#method(service, method);
    return new Promise((resolve, reject) => {
      this.#client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        (bytes: Buffer) => m.responseDeserialize(bytes) as Response,
        request,
        metadataOf(options),
        callOptionsOf(options),
        (error, response) => (error ? reject(error) : resolve(response as Response)),
      );
    });
  }

  serverStream<Response>(
    service: string,
    method: string,
    request: object,
    options: TestCallOptions = {},
  ): grpc.ClientReadableStream<Response> {
    const m = this.#method(service, method);
    return this.#client.makeServerStreamRequest(
      m.path,
      m.requestSerialize,
      (bytes: Buffer) => m.responseDeserialize(bytes) as Response,
      request,
      metadataOf(options),
      callOptionsOf(options),
    );
  }

  bidiStream<Response>(service: string, method: string): grpc.ClientDuplexStream<object, Response> {
    const m = this.#method(service, method);
    return this.#client.makeBidiStreamRequest(
      m.path,
      m.requestSerialize,
      (bytes: Buffer) => m.responseDeserialize(bytes) as Response,
    );
  }

  close(): void {
    this.#client.close();
  }

  #method(service: string, method: string): protoLoader.MethodDefinition<object, object> {
    const definition = this.#definition[service];
    const m = definition && !('format' in definition) ? definition[method] : undefined;
    if (!m) throw new TypeError(`${service}/${method} is not in the loaded protos`);
    return m as protoLoader.MethodDefinition<object, object>;
  }
}

/** Every message of a server stream and how it ended. */
export function collectStream<Response>(
  stream: grpc.ClientReadableStream<Response>,
): Promise<StreamResult<Response>> {
  const messages: Response[] = [];
  return new Promise((resolve) => {
    stream.on('data', (message: Response) => messages.push(message));
    stream.on('error', (error: grpc.ServiceError) => resolve({ messages, error }));
    stream.on('status', (status: grpc.StatusObject) => {
      if (status.code === grpc.status.OK) resolve({ messages });
    });
  });
}

/** The server reflection protocol (v1) as @grpc/reflection ships it, for a reflection client. */
export function loadReflectionProtos(): protoLoader.PackageDefinition {
  const packageJson = createRequire(import.meta.url).resolve('@grpc/reflection/package.json');
  return protoLoader.loadSync('grpc/reflection/v1/reflection.proto', {
    keepCase: true,
    longs: Number,
    defaults: true,
    oneofs: true,
    includeDirs: [join(dirname(packageJson), 'build', 'proto')],
  });
}

function metadataOf(options: TestCallOptions): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (options.apiKey !== undefined) metadata.set('authorization', `Bearer ${options.apiKey}`);
  return metadata;
}

function callOptionsOf(options: TestCallOptions): grpc.CallOptions {
  return options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
}
