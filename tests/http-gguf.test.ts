import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeModelAsGguf } from '../engine/model/gguf-writer.ts';
import { loadModel } from '../engine/model/load-model.ts';
import { type RunningServer, startServer } from '../server/start-server.ts';
import { STORIES_260K } from './support/shared-assets.ts';

/** `serve --model file.gguf`: a Q8_0 GGUF of stories260K behind the real HTTP server and the openai client. */
describe('serving a GGUF file', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ds-http-gguf-'));
  const file = path.join(tmp, 'stories260K-q8_0.gguf');
  let server: RunningServer;
  let client: OpenAI;
  beforeAll(async () => {
    writeModelAsGguf(file, await loadModel({ model: STORIES_260K }), { type: 'q8_0' });
    server = await startServer({
      host: '127.0.0.1',
      port: 0,
      grpcPort: 0,
      collectProcessMetrics: false,
      model: file,
      kvCacheBytes: 16 * 1024 * 1024,
    });
    client = new OpenAI({
      baseURL: `${server.httpUrl}/v1`,
      apiKey: 'unused',
      maxRetries: 0,
      timeout: 60_000,
    });
  });
  afterAll(async () => {
    await server?.close(0);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('/v1/models says kind "gguf" with the file\'s general.name and tensor types', async () => {
    const body = (await (await fetch(`${server.httpUrl}/v1/models`)).json()) as {
      data: { id: string; dropserve_source: { kind: string; description: string; built_in: boolean } }[];
    };
    expect(body.data[0]!.id).toBe('stories260K-q8_0');
    expect(body.data[0]!.dropserve_source).toEqual({
      kind: 'gguf',
      built_in: false,
      description:
        'GGUF stories260K (stories260K-q8_0.gguf: 5 layers, dim 64, vocab 512; Q8_0 ×31, F32 ×11, F16 ×5)',
    });
  });

  it('a greedy completion tells the stories260K story', async () => {
    const completion = await client.completions.create({
      model: 'stories260K-q8_0',
      prompt: 'Once upon a time',
      max_tokens: 20,
      temperature: 0,
    });
    expect(completion.choices[0]!.text).toMatch(/^, there was a little girl named Lily\./);
  });
});
