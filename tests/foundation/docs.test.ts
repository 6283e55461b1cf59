import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readJson, startTestApi, type TestApi } from '../helpers/app';
import { createTestEnv, type TestEnv } from '../helpers/services';

let env: TestEnv;
let api: TestApi;
beforeAll(async () => {
  env = await createTestEnv();
  api = await startTestApi(env.config);
});
afterAll(async () => {
  await api?.close();
  await env?.cleanup();
});

describe('API description', () => {
  it('serves /openapi.json whose every path is a mounted route', async () => {
    const doc = await readJson(await fetch(`${api.url}/openapi.json`));
    expect(doc.openapi).toBe('3.1.0');
    // Request bodies are the routes' own zod schemas, limits and strictness included.
    const body = (path: string) => doc.paths[path].post.requestBody.content['application/json'].schema;
    expect(body('/v1/audio/batches').properties.sections.maxItems).toBe(14);
    expect(body('/v1/books')).toMatchObject({ additionalProperties: false, properties: { pages: { items: { maxLength: 50_000 } } } });
    expect(body('/v1/webhooks')).toMatchObject({ additionalProperties: false, properties: { url: { maxLength: 2000 } } });
    expect(body('/v1/playback-urls')).toMatchObject({ additionalProperties: false, required: ['audio_url'], properties: { audio_url: { maxLength: 200 } } });
    for (const [path, methods] of Object.entries<Record<string, unknown>>(doc.paths)) {
      for (const method of Object.keys(methods)) {
        const url = path.replace(/\{id\}/g, '00000000-0000-4000-8000-000000000000');
        const res = await api.request(url, { method: method.toUpperCase(), user: 'docs-user', headers: method === 'get' ? {} : { 'Content-Type': 'application/json' }, body: method === 'get' || method === 'delete' ? undefined : '{}' });
        const body = res.headers.get('content-type')?.includes('json') ? await readJson(res) : null;
        expect(body?.error?.message ?? '', `${method} ${path}`).not.toMatch(/^no route/);
        expect(res.status, `${method} ${path}`).toBeLessThan(500);
      }
    }
  });

  it('serves browsable docs from the installed package', async () => {
    const page = await fetch(`${api.url}/docs`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('swagger-ui-bundle.js');
    expect((await fetch(`${api.url}/docs/assets/swagger-ui-bundle.js`)).status).toBe(200);
  });
});
