import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Ajv2020, type ErrorObject } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '@soundqueue/shared/config';
import { isQueueName, queueNames } from '@soundqueue/shared/queues';

// docker-compose.yml, Dockerfile and .dockerignore checked without a Docker engine (none
// runs in CI, and these tests never start a container):
//  - docker-compose.yml is parsed as Compose does it (YAML with anchors and `<<` merge keys,
//    then `${VAR}` interpolation of every value from an environment), and the result is
//    validated against the Compose Specification's JSON schema;
//  - then the facts the deployment depends on are asserted one by one, and every app
//    service's environment is run through the real loadConfig.
//
// compose-spec.schema.json beside this file is a verbatim copy of schema/compose-spec.json
// from github.com/compose-spec/compose-go at tag v2.13.0 (commit
// 0670a1c375c19defea19147bd82eb126a7c33b29, Apache-2.0), the schema `docker compose`
// itself validates with. To update it, replace the file with a newer copy from there.

const root = fileURLToPath(new URL('../../', import.meta.url));
const read = (path: string) => readFileSync(root + path, 'utf8');

// ---------------------------------------------------------------------------------------
// Compose's parsing, as far as this file needs it.

type Env = Record<string, string | undefined>;

/**
 * Compose's interpolation of one value: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default},
 * ${VAR:?error}, ${VAR?error}, ${VAR:+replacement}, ${VAR+replacement}. Throws the
 * `?` message as Compose does.
 */
function interpolate(value: string, env: Env): string {
  return value.replace(/\$(\$|\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (whole, token: string, braced?: string, bare?: string) => {
    if (token === '$') return '$';
    if (bare !== undefined) return env[bare] ?? '';
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?+])(.*))?$/s.exec(braced ?? '');
    if (!m) throw new Error(`invalid interpolation format: ${whole}`);
    const [, name, colon, op, arg = ''] = m as unknown as [string, string, string | undefined, string | undefined, string | undefined];
    const raw = env[name];
    const set = colon ? raw !== undefined && raw !== '' : raw !== undefined;
    if (op === undefined) return raw ?? '';
    if (op === '-') return set ? raw! : arg;
    if (op === '+') return set ? arg : '';
    if (!set) throw new Error(`required variable ${name} is missing a value: ${arg}`);
    return raw!;
  });
}

function interpolateTree(node: unknown, env: Env): unknown {
  if (typeof node === 'string') return interpolate(node, env);
  if (Array.isArray(node)) return node.map((item) => interpolateTree(item, env));
  if (node && typeof node === 'object') {
    return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, interpolateTree(value, env)]));
  }
  return node;
}

interface Service {
  image?: string;
  build?: unknown;
  command?: string[] | string;
  environment?: Record<string, string | number | boolean | null> | string[];
  depends_on?: Record<string, { condition?: string }> | string[];
  volumes?: (string | { source?: string; target?: string })[];
  ports?: (string | number | { target?: number; published?: string | number })[];
  healthcheck?: { test?: string[] | string; disable?: boolean };
  deploy?: { replicas?: number; resources?: { limits?: { cpus?: string | number } } };
  stop_grace_period?: string;
  restart?: string;
}
interface ComposeFile {
  services: Record<string, Service>;
  volumes?: Record<string, unknown>;
}

const composeText = read('docker-compose.yml');
// What an operator must set; the optional variables stay unset, as on a bare host. The secret
// is as long as README's `openssl rand -hex 32` makes one (production wants 32 characters).
const hostEnv: Env = { AUTH_JWT_SECRET: '0123456789abcdef'.repeat(4), POSTGRES_PASSWORD: 'pw-for-tests' };

function loadCompose(env: Env): ComposeFile {
  return interpolateTree(parse(composeText, { merge: true }), env) as ComposeFile;
}

const compose = loadCompose(hostEnv);
const services = compose.services;

const commandOf = (s: Service) => (Array.isArray(s.command) ? s.command.join(' ') : (s.command ?? ''));
const envOf = (s: Service): Record<string, string> => {
  if (Array.isArray(s.environment)) {
    return Object.fromEntries(s.environment.map((line) => [line.split('=')[0]!, line.slice(line.indexOf('=') + 1)]));
  }
  return Object.fromEntries(Object.entries(s.environment ?? {}).map(([k, v]) => [k, v === null ? '' : String(v)]));
};
const dependsOn = (s: Service): Record<string, string | undefined> =>
  Array.isArray(s.depends_on)
    ? Object.fromEntries(s.depends_on.map((name) => [name, 'service_started']))
    : Object.fromEntries(Object.entries(s.depends_on ?? {}).map(([name, d]) => [name, d.condition ?? 'service_started']));
const mountsAt = (s: Service, target: string) =>
  (s.volumes ?? [])
    .map((v) => (typeof v === 'string' ? { source: v.split(':')[0], target: v.split(':')[1] } : v))
    .filter((v) => v.target === target)
    .map((v) => v.source);
const seconds = (duration: string | undefined) => {
  const m = /^(\d+)(ms|s|m)?$/.exec(duration ?? '');
  if (!m) return 0;
  return Number(m[1]) * ({ ms: 0.001, s: 1, m: 60 } as const)[(m[2] ?? 's') as 'ms' | 's' | 'm'];
};

// Every name the app reads from its environment: config.ts's schema (the PRICE_* included).
const knownVariables = new Set([...read('packages/shared/src/config.ts').matchAll(/^ {2}([A-Z][A-Z0-9_]+):/gm)].map((m) => m[1]!));

/**
 * The variables README's configuration table documents, from its first column. Shorthands
 * such as `_AUDIO_MIX` after `WORKER_CONCURRENCY_AUDIO_TTS` are the one known name that
 * starts like the row's first name and ends with them.
 */
function readmeVariables(): string[] {
  const readme = read('README.md');
  const section = readme.slice(readme.indexOf('## Configuration'), readme.indexOf('\n## ', readme.indexOf('## Configuration') + 1));
  const names: string[] = [];
  for (const row of section.split('\n').filter((line) => line.startsWith('| `'))) {
    const tokens = [...row.split('|')[1]!.matchAll(/`(_?[A-Z][A-Z0-9_]*)`/g)].map((m) => m[1]!);
    const first = tokens[0]!;
    for (const token of tokens) {
      if (!token.startsWith('_')) {
        names.push(token);
        continue;
      }
      const head = first.split('_')[0]!;
      const matches = [...knownVariables].filter((name) => name.startsWith(`${head}_`) && name.endsWith(token));
      expect(matches, `README's ${token} after ${first}`).toHaveLength(1);
      names.push(matches[0]!);
    }
  }
  return names;
}

const appServices = Object.entries(services).filter(([, s]) => s.image?.startsWith('soundqueue'));
const workers = appServices.filter(([, s]) => commandOf(s).includes('apps/worker/src/main.ts'));
const api = services.api!;

// ---------------------------------------------------------------------------------------

describe('docker-compose.yml', () => {
  it('is a valid Compose file (Compose Specification JSON schema)', () => {
    const schema = JSON.parse(read('tests/deploy/compose-spec.schema.json')) as object;
    const ajv = new Ajv2020({ allErrors: true, strict: false });
    const validate = ajv.compile(schema);
    const valid = validate(compose);
    const describeErrors = (errors: ErrorObject[] | null | undefined) =>
      (errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`).join('\n');
    expect(describeErrors(validate.errors)).toBe('');
    expect(valid).toBe(true);
  });

  it('the schema check has teeth: it rejects an unknown service key', () => {
    const schema = JSON.parse(read('tests/deploy/compose-spec.schema.json')) as object;
    const validate = new Ajv2020({ allErrors: true, strict: false }).compile(schema);
    const broken = structuredClone(compose) as ComposeFile & { services: Record<string, Record<string, unknown>> };
    broken.services.api!.depends = ['redis'];
    expect(validate(broken)).toBe(false);
  });

  it('refuses to start without AUTH_JWT_SECRET or POSTGRES_PASSWORD, saying which', () => {
    expect(() => loadCompose({ POSTGRES_PASSWORD: 'pw' })).toThrow(/AUTH_JWT_SECRET.*set AUTH_JWT_SECRET/);
    expect(() => loadCompose({ AUTH_JWT_SECRET: 'secret' })).toThrow(/POSTGRES_PASSWORD.*set POSTGRES_PASSWORD/);
    expect(() => loadCompose({ ...hostEnv, AUTH_JWT_SECRET: '' })).toThrow(/set AUTH_JWT_SECRET/);
    expect(envOf(api).AUTH_JWT_SECRET).toBe(hostEnv.AUTH_JWT_SECRET);
  });

  it('runs Redis with noeviction and the append-only file on a volume, with a health check', () => {
    const redis = services.redis!;
    expect(redis.image).toMatch(/^redis:7/);
    const command = commandOf(redis);
    expect(command).toMatch(/--maxmemory-policy[ =]noeviction/);
    expect(command).toMatch(/--appendonly[ =]yes/);
    expect(mountsAt(redis, '/data')).toHaveLength(1);
    expect(JSON.stringify(redis.healthcheck?.test)).toContain('ping');
  });

  it('runs PostgreSQL 16 on a volume with a pg_isready health check', () => {
    const postgres = services.postgres!;
    expect(postgres.image).toMatch(/^postgres:16/);
    expect(mountsAt(postgres, '/var/lib/postgresql/data')).toHaveLength(1);
    expect(JSON.stringify(postgres.healthcheck?.test)).toContain('pg_isready');
  });

  it('migrates once, after PostgreSQL is healthy, with the migration CLI', () => {
    const migrate = services.migrate!;
    expect(commandOf(migrate)).toContain('packages/shared/src/db/migrate-cli.ts');
    expect(dependsOn(migrate).postgres).toBe('service_healthy');
    expect(migrate.restart ?? 'no').toBe('no');
  });

  it('starts the API after the migration completed and Redis is healthy, on port 3000', () => {
    expect(commandOf(api)).toContain('apps/api/src/main.ts');
    expect(dependsOn(api)).toMatchObject({ migrate: 'service_completed_successfully', redis: 'service_healthy' });
    expect(api.ports?.map(String)).toContain('3000:3000');
    expect(envOf(api).PORT ?? '3000').toBe('3000');
    // The API keeps the image's /healthz check.
    expect(api.healthcheck?.disable).not.toBe(true);
    expect(seconds(api.stop_grace_period)).toBeGreaterThanOrEqual(15);
  });

  it('has two worker deployments with replicas whose WORKER_QUEUES split every queue between them', () => {
    expect(workers.map(([name]) => name).sort()).toEqual(['worker-generation', 'worker-mixing']);
    const assigned = workers.flatMap(([name, s]) => {
      expect(s.deploy?.replicas, name).toBeGreaterThanOrEqual(2);
      const list = (envOf(s).WORKER_QUEUES ?? '').split(',').map((q) => q.trim()).filter(Boolean);
      expect(list.length, `${name} sets WORKER_QUEUES`).toBeGreaterThan(0);
      for (const q of list) expect(isQueueName(q), `${name}: ${q} is a queue in packages/shared/src/queues.ts`).toBe(true);
      return list;
    });
    // Every queue is served, and by one deployment only.
    expect([...assigned].sort()).toEqual([...queueNames].sort());
    expect(envOf(services['worker-mixing']!).WORKER_QUEUES).toBe('audio-mix');
  });

  it('gives the mixing workers a CPU limit and every worker time to finish its jobs', () => {
    expect(Number(services['worker-mixing']!.deploy?.resources?.limits?.cpus)).toBeGreaterThan(0);
    for (const [name, s] of workers) {
      // apps/worker/src/main.ts waits 30 s for jobs in progress on SIGTERM.
      expect(seconds(s.stop_grace_period), name).toBeGreaterThan(30);
      // The image's health check asks /healthz, which a worker does not serve.
      expect(s.healthcheck?.disable, name).toBe(true);
      expect(dependsOn(s), name).toMatchObject({ migrate: 'service_completed_successfully', redis: 'service_healthy' });
    }
  });

  it('shares one audio volume at /data between the API and every worker', () => {
    const sources = new Set([api, ...workers.map(([, s]) => s)].flatMap((s) => mountsAt(s, '/data')));
    expect([...sources]).toEqual(['audio']);
    expect(Object.keys(compose.volumes ?? {})).toContain('audio');
    for (const s of [api, ...workers.map(([, w]) => w)]) expect(envOf(s).STORAGE_DIR).toBe('/data');
  });

  it('runs every app service from the one image, in production mode, with a config that loads', () => {
    expect(appServices.map(([name]) => name).sort()).toEqual(['api', 'migrate', 'worker-generation', 'worker-mixing']);
    // Names the config schema knows: a misspelt variable would otherwise be ignored silently.
    const known = knownVariables;
    expect(known.size).toBeGreaterThan(20);
    for (const [name, s] of appServices) {
      expect(s.build, name).toBeDefined();
      const env = envOf(s);
      expect(env.NODE_ENV, name).toBe('production');
      for (const key of Object.keys(env)) expect(known.has(key), `${name}: ${key} is read by packages/shared/src/config.ts`).toBe(true);
      const config = loadConfig(env);
      expect(new URL(config.DATABASE_URL).hostname, name).toBe('postgres');
      expect(new URL(config.REDIS_URL).hostname, name).toBe('redis');
    }
    // Provider keys reach every worker (passed through, optional) and not the API. Mixing
    // needs the speech provider too: a mix job voices its track when the speech job was lost,
    // and a voice made by another provider would be another voice (and another cache key).
    for (const worker of ['worker-generation', 'worker-mixing']) {
      expect(Object.keys(envOf(services[worker]!)), worker).toEqual(expect.arrayContaining(['OPENAI_API_KEY', 'GEMINI_API_KEY', 'REPLICATE_API_TOKEN']));
    }
    expect(envOf(api).OPENAI_API_KEY).toBeUndefined();
    const withKeys = loadCompose({ ...hostEnv, OPENAI_API_KEY: 'sk-x' });
    expect(loadConfig(envOf(withKeys.services['worker-generation']!)).speechProvider).toBe('openai');
    expect(loadConfig(envOf(withKeys.services['worker-mixing']!)).speechProvider).toBe('openai');
  });

  it('passes every setting README documents through from the host, to the services that read it', () => {
    const documented = readmeVariables();
    expect(documented.length).toBeGreaterThan(60);
    expect(documented).toEqual(expect.arrayContaining(['STORAGE_DRIVER', 'S3_BUCKET', 'TTS_RATE_LIMIT', 'WORKER_METRICS_PORT', 'PLAYBACK_URL_TTL_SECONDS', 'WORKER_CONCURRENCY_WEBHOOKS', 'PRICE_REPLICATE_PER_SECOND']));
    for (const name of documented) expect(knownVariables.has(name), `README's ${name} is read by the app`).toBe(true);

    // What the file sets itself, whatever the host says (its own services, the container's
    // port and paths, and each worker deployment's queues and the mixing concurrency that
    // matches its CPU limit).
    const fixed = new Set(['NODE_ENV', 'PORT', 'DATABASE_URL', 'REDIS_URL', 'STORAGE_DIR', 'WORKER_QUEUES', 'WORKER_CONCURRENCY_AUDIO_MIX']);
    const fromHost = (name: string) => `from-host-${name}`;
    const set = loadCompose({ ...hostEnv, ...Object.fromEntries(documented.map((name) => [name, fromHost(name)])) }).services;
    const generation = envOf(set['worker-generation']!);
    const mixing = envOf(set['worker-mixing']!);
    const apiEnv = envOf(set.api!);

    // Authentication, Bull Board and the printed URL are the API's; provider keys and
    // settings the workers' (SPEECH_PROVIDER=openai would stop an API without the key);
    // everything else reaches both, as most of it (queue prefix, storage, job options) must.
    const apiOnly = (name: string) => /^(AUTH_|ADMIN_)/.test(name) || name === 'PUBLIC_URL';
    const workersOnly = (name: string) =>
      name !== 'OPENAI_TTS_MODEL' &&
      /^(OPENAI_|GEMINI_|REPLICATE_|PRICE_)|_PROVIDER$|_RATE_LIMIT$|^(PROVIDER_TIMEOUT_MS|PROVIDER_MAX_AUDIO_BYTES|SOUNDSCAPE_SECONDS|RATE_LIMIT_MAX_RESTARTS)$/.test(name);
    for (const name of documented.filter((n) => !fixed.has(n))) {
      const reaches = { api: apiEnv[name], 'worker-generation': generation[name], 'worker-mixing': mixing[name] };
      const expected = apiOnly(name)
        ? { api: fromHost(name), 'worker-generation': undefined, 'worker-mixing': undefined }
        : workersOnly(name)
          ? { api: undefined, 'worker-generation': fromHost(name), 'worker-mixing': fromHost(name) }
          : { api: fromHost(name), 'worker-generation': fromHost(name), 'worker-mixing': fromHost(name) };
      expect(reaches, name).toEqual(expected);
    }
    expect([apiEnv.PORT, apiEnv.NODE_ENV, apiEnv.STORAGE_DIR]).toEqual(['3000', 'production', '/data']);
    expect([generation.WORKER_QUEUES, mixing.WORKER_QUEUES]).toEqual([envOf(services['worker-generation']!).WORKER_QUEUES, 'audio-mix']);
    expect(mixing.WORKER_CONCURRENCY_AUDIO_MIX).toBe('2');
    expect(new URL(generation.DATABASE_URL!).hostname).toBe('postgres');
  });

  it("gives each service a config that loads with an operator's settings, and the defaults when unset", () => {
    // Unset on the host, the passed-through variables arrive empty: empty means unset.
    for (const [name, s] of workers) {
      const config = loadConfig(envOf(s));
      expect(config.WORKER_METRICS_PORT, name).toBeUndefined();
      expect([config.STORAGE_DRIVER, config.S3_REGION, config.QUEUE_PREFIX, config.DATABASE_POOL_SIZE], name).toEqual(['local', 'us-east-1', 'soundqueue', 10]);
    }
    const operator: Env = {
      ...hostEnv,
      STORAGE_DRIVER: 's3',
      S3_BUCKET: 'audio',
      S3_ENDPOINT: 'https://s3.example.com',
      QUEUE_PREFIX: 'sq-prod',
      WORKER_METRICS_PORT: '9100',
      TTS_RATE_LIMIT: '50/1s',
      SPEECH_PROVIDER: 'openai',
      OPENAI_API_KEY: 'sk-x',
      PLAYBACK_URL_TTL_SECONDS: '600',
      AUTH_SERVICE_TOKEN: 'f'.repeat(64),
      METRICS_TOKEN: 'm'.repeat(64),
    };
    const set = loadCompose(operator).services;
    const apiConfig = loadConfig(envOf(set.api!));
    expect([apiConfig.STORAGE_DRIVER, apiConfig.S3_BUCKET, apiConfig.QUEUE_PREFIX, apiConfig.PLAYBACK_URL_TTL_SECONDS]).toEqual(['s3', 'audio', 'sq-prod', 600]);
    for (const name of ['worker-generation', 'worker-mixing']) {
      const config = loadConfig(envOf(set[name]!));
      expect([config.STORAGE_DRIVER, config.QUEUE_PREFIX, config.WORKER_METRICS_PORT, config.speechProvider], name).toEqual(['s3', 'sq-prod', 9100, 'openai']);
      expect(config.TTS_RATE_LIMIT, name).toEqual({ max: 50, duration: 1000 });
    }
    // One metrics token guards the API's /metrics and every worker's alike.
    for (const name of ['api', 'worker-generation', 'worker-mixing']) expect(loadConfig(envOf(set[name]!)).METRICS_TOKEN, name).toBe('m'.repeat(64));
  });

  it("holds the API to a production-length AUTH_JWT_SECRET, as README's quick start makes one", () => {
    expect(read('README.md')).toContain('AUTH_JWT_SECRET=$(openssl rand -hex 32)');
    const weak = loadCompose({ ...hostEnv, AUTH_JWT_SECRET: 'short' });
    expect(() => loadConfig(envOf(weak.services.api!))).toThrow(/AUTH_JWT_SECRET must be at least 32 characters in production.*openssl rand -hex 32/);
  });

  it('names only files that exist in the commands', () => {
    for (const [name, s] of appServices) {
      const file = commandOf(s).split(' ').find((part) => part.endsWith('.ts'));
      expect(file, name).toBeDefined();
      expect(existsSync(root + file!), `${name}: ${file}`).toBe(true);
    }
  });
});

describe('Dockerfile', () => {
  const dockerfile = read('Dockerfile');
  // Instructions, with line continuations joined and comments dropped.
  const lines = dockerfile
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const instr = (name: string) => lines.filter((l) => l.toUpperCase().startsWith(`${name} `)).map((l) => l.slice(name.length + 1).trim());

  it('starts from a Node LTS image and installs Debian ffmpeg', () => {
    expect(instr('FROM')[0]).toMatch(/^node:(2[02468])[.\d]*-(bookworm|trixie)(-slim)?$/);
    expect(instr('RUN').some((r) => /apt-get install .*\bffmpeg\b/.test(r))).toBe(true);
  });

  it('installs dependencies from the lockfile with every workspace manifest in place', () => {
    const copies = instr('COPY');
    const npmCi = lines.findIndex((l) => /^RUN .*npm ci\b/.test(l));
    expect(npmCi).toBeGreaterThan(0);
    const before = lines.slice(0, npmCi).join('\n');
    expect(before).toMatch(/COPY .*package-lock\.json/);
    const workspaces = (JSON.parse(read('package.json')) as { workspaces: string[] }).workspaces;
    for (const ws of workspaces) expect(before, ws).toContain(`${ws}/package.json`);
    // Then the sources and the committed migrations.
    for (const path of [...workspaces.map((ws) => `${ws}/src`), 'drizzle', 'tsconfig.json']) {
      expect(copies.some((c) => c.split(/\s+/).includes(path)), path).toBe(true);
    }
  });

  it('runs as a non-root user with /data as a volume, exposes 3000 and checks /healthz', () => {
    const user = instr('USER').at(-1);
    expect(user).toBeDefined();
    expect(['root', '0']).not.toContain(user!.split(':')[0]);
    expect(instr('ENV').join(' ')).toMatch(/STORAGE_DIR=\/data/);
    expect(instr('VOLUME').join(' ')).toContain('/data');
    expect(instr('EXPOSE')).toContain('3000');
    expect(instr('HEALTHCHECK').join(' ')).toContain('/healthz');
    expect(instr('CMD').at(-1)).toContain('apps/api/src/main.ts');
  });

  it('keeps local state out of the build context, and nothing the image copies', () => {
    const ignored = read('.dockerignore').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const entry of ['node_modules', 'data', 'test-output', '.git', 'bench/results']) expect(ignored, entry).toContain(entry);
    const sources = instr('COPY')
      .filter((c) => !c.startsWith('--from'))
      .flatMap((c) => c.split(/\s+/).slice(0, -1));
    for (const source of sources) {
      expect(existsSync(root + source), `COPY ${source} exists`).toBe(true);
      expect(ignored, `COPY ${source} is not in .dockerignore`).not.toContain(source.split('/')[0]);
    }
  });
});
