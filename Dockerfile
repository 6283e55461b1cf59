# syntax=docker/dockerfile:1
#
# The one image of soundqueue. It runs the API (the default CMD) and the workers
# (docker-compose.yml sets their command), and the one-shot migration.
#
# Node's current LTS on Debian bookworm: Debian's ffmpeg is built with libflite (the local
# speech provider), libmp3lame (MP3 output) and the ebur128 / loudnorm filters, and it is the
# same ffmpeg the test suite runs against (scripts/services.sh installs it from Debian too).
FROM node:24-bookworm-slim

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
 && rm -rf /var/lib/apt/lists/* \
 && ffmpeg -hide_banner -filters | grep -q ebur128 \
 && ffmpeg -hide_banner -filters | grep -q flite \
 && ffmpeg -hide_banner -encoders | grep -q libmp3lame

ENV NODE_ENV=production \
    PORT=3000 \
    STORAGE_DIR=/data

WORKDIR /app

# Dependencies first, so that a source change does not reinstall them: the manifests of the
# root and of every workspace (npm ci links the workspaces into node_modules).
# --omit=dev is enough: the services run TypeScript through tsx, which is a runtime
# dependency, and no source file imports a dev dependency (types are erased by tsx).
COPY package.json package-lock.json ./
COPY packages/shared/package.json packages/shared/
COPY apps/api/package.json apps/api/
COPY apps/worker/package.json apps/worker/
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# The source (owned by root, read-only for the service user) and the committed migrations,
# which packages/shared/src/db/migrate.ts finds at /app/drizzle.
COPY tsconfig.json ./
COPY packages/shared/src packages/shared/src
COPY apps/api/src apps/api/src
COPY apps/worker/src apps/worker/src
COPY drizzle drizzle

# Audio files (local storage driver). The image's /data belongs to `node`, so a new named
# volume mounted there starts out writable by the service.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]

# The non-root user of the Node images (uid 1000).
USER node

EXPOSE 3000

# Liveness of the API (/healthz answers without touching Redis or PostgreSQL). The workers
# serve no HTTP, so docker-compose.yml disables this check for them and for `migrate`.
# No curl in the slim image: Node's fetch does it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# `node --import tsx` (not `npm run` nor the tsx CLI): one Node process that receives
# SIGTERM itself and runs its graceful shutdown; npm and the tsx CLI put a parent in between.
CMD ["node", "--import", "tsx", "apps/api/src/main.ts"]
