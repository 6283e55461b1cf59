import type { Server } from 'node:http';
import { SignJWT } from 'jose';
import { createApiContext, createApp, serve, type ApiContext } from '@soundqueue/api';
import { createWorkerContext, selectQueues, startWorkers, type Mixer, type Providers, type ResolveHost, type RunningWorkers, type WorkerContext } from '@soundqueue/worker';
import type { Config } from '@soundqueue/shared/config';
import type { Logger } from '@soundqueue/shared/logger';
import { TEST_JWT_SECRET } from './services';

export async function tokenFor(userId: string, options: { role?: string; expiresIn?: string | number; secret?: string } = {}): Promise<string> {
  return new SignJWT({ role: options.role ?? 'user' })
    .setProtectedHeader({ alg: 'HS256' })
    .setSubject(userId)
    .setIssuedAt()
    .setExpirationTime(options.expiresIn ?? '1h')
    .sign(new TextEncoder().encode(options.secret ?? TEST_JWT_SECRET));
}

export interface TestApi {
  url: string;
  server: Server;
  ctx: ApiContext;
  /** fetch against the app with a user's token. */
  request(path: string, init?: RequestInit & { user?: string | null; json?: unknown }): Promise<Response>;
  close(): Promise<void>;
}

/** Starts the real Express app in-process on a random port (a test may read its log through `logger`). */
export async function startTestApi(config: Config, options: { logger?: Logger } = {}): Promise<TestApi> {
  const ctx = await createApiContext(config, options.logger);
  const listening = await serve(createApp(ctx), 0, { host: '127.0.0.1', streams: ctx.streams });
  return {
    url: listening.url,
    server: listening.server,
    ctx,
    async request(path, init = {}) {
      const { user = 'user-a', json, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (user) headers.set('Authorization', `Bearer ${await tokenFor(user)}`);
      if (json !== undefined) headers.set('Content-Type', 'application/json');
      return fetch(`${listening.url}${path}`, { ...rest, headers, body: json !== undefined ? JSON.stringify(json) : rest.body });
    },
    async close() {
      await listening.close();
      await ctx.close();
    },
  };
}

export interface TestWorker {
  ctx: WorkerContext;
  running: RunningWorkers;
  close(): Promise<void>;
}

/** Starts the real workers in-process (all queues unless WORKER_QUEUES says otherwise). */
export async function startTestWorker(config: Config, seams: { providers?: Providers; mixer?: Mixer; resolveHost?: ResolveHost } = {}): Promise<TestWorker> {
  const ctx = await createWorkerContext(config, seams);
  const running = await startWorkers(ctx, selectQueues(config.WORKER_QUEUES));
  return {
    ctx,
    running,
    async close() {
      await running.close();
      await ctx.close();
    },
  };
}

/** The JSON body of a response, typed loosely for assertions. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const readJson = (res: Response): Promise<any> => res.json();
