#!/usr/bin/env bash
# Makes sure the services soundqueue needs are here: Redis, PostgreSQL and ffmpeg (with
# ffprobe). Starts Redis or PostgreSQL when installed but stopped; installs ffmpeg with
# apt-get when missing and running as root; otherwise says exactly what to install.
# Used by .ci/run, `npm start` and `npm test`.
set -u

REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/soundqueue}"
redis_host=$(node -e 'const u=new URL(process.argv[1]);console.log(u.hostname||"127.0.0.1")' "$REDIS_URL")
redis_port=$(node -e 'const u=new URL(process.argv[1]);console.log(u.port||6379)' "$REDIS_URL")
pg_host=$(node -e 'const u=new URL(process.argv[1]);console.log(u.hostname||"127.0.0.1")' "$DATABASE_URL")
pg_port=$(node -e 'const u=new URL(process.argv[1]);console.log(u.port||5432)' "$DATABASE_URL")
is_local() { [ "$1" = 127.0.0.1 ] || [ "$1" = localhost ] || [ "$1" = "::1" ]; }
missing=()

port_open() { node -e 'const s=require("net").connect(+process.argv[2],process.argv[1]);s.on("connect",()=>process.exit(0));s.on("error",()=>process.exit(1));setTimeout(()=>process.exit(1),1500)' "$1" "$2"; }
wait_port() { for _ in $(seq 1 60); do port_open "$1" "$2" && return 0; sleep 0.5; done; return 1; }

as_root() { [ "$(id -u)" = 0 ]; }
apt_updated=0
apt_install() {
  if [ $apt_updated = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1
}

# Redis
if port_open "$redis_host" "$redis_port"; then
  echo "redis:      ok ($redis_host:$redis_port)"
elif is_local "$redis_host" && command -v redis-server >/dev/null; then
  echo "redis:      starting redis-server on port $redis_port"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null
  wait_port "$redis_host" "$redis_port" && echo "redis:      ok" || missing+=("redis (did not start)")
elif is_local "$redis_host" && as_root && command -v apt-get >/dev/null; then
  echo "redis:      installing redis-server with apt-get"
  apt_install redis-server && redis-server --daemonize yes --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no >/dev/null
  wait_port "$redis_host" "$redis_port" && echo "redis:      ok" || missing+=("redis-server (apt-get install redis-server)")
else
  missing+=("Redis at $REDIS_URL (install redis-server, or set REDIS_URL)")
fi

# PostgreSQL
if port_open "$pg_host" "$pg_port"; then
  echo "postgresql: ok ($pg_host:$pg_port)"
elif is_local "$pg_host" && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
  version=$(ls /etc/postgresql | sort -n | tail -1)
  echo "postgresql: starting cluster $version/main"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  wait_port "$pg_host" "$pg_port" && echo "postgresql: ok" || missing+=("postgresql (did not start)")
elif is_local "$pg_host" && as_root && command -v apt-get >/dev/null; then
  echo "postgresql: installing postgresql with apt-get"
  if apt_install postgresql; then
    version=$(ls /etc/postgresql | sort -n | tail -1)
    conf=/etc/postgresql/$version/main/pg_hba.conf
    # Local development and CI only: trust connections from this machine.
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$conf"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  fi
  wait_port "$pg_host" "$pg_port" && echo "postgresql: ok" || missing+=("postgresql (apt-get install postgresql)")
else
  missing+=("PostgreSQL at $DATABASE_URL (install postgresql, or set DATABASE_URL)")
fi

# ffmpeg (with libmp3lame, flite and ebur128: Debian's build has them)
if command -v ffmpeg >/dev/null && command -v ffprobe >/dev/null; then
  echo "ffmpeg:     ok ($(ffmpeg -hide_banner -version | head -1 | cut -d' ' -f1-3))"
elif as_root && command -v apt-get >/dev/null; then
  echo "ffmpeg:     installing with apt-get (a minute or two)"
  apt_install ffmpeg && command -v ffmpeg >/dev/null && echo "ffmpeg:     ok" || missing+=("ffmpeg (apt-get install ffmpeg failed)")
else
  missing+=("ffmpeg and ffprobe: sudo apt-get install ffmpeg (Debian/Ubuntu) or brew install ffmpeg (macOS)")
fi

# Chromium for tests/browser (Debian's package driven by playwright-core; never a browser
# download), only with --tests: `npm start` does not need a browser.
if [ "${1:-}" != "--tests" ]; then
  :
elif [ -x /usr/bin/chromium ]; then
  echo "chromium:   ok"
elif as_root && command -v apt-get >/dev/null; then
  echo "chromium:   installing with apt-get (for tests/browser)"
  apt_install chromium && echo "chromium:   ok" || echo "chromium:   apt-get install chromium failed; tests/browser will fail"
else
  echo "chromium:   missing (sudo apt-get install chromium); tests/browser will fail"
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo
  echo "soundqueue cannot run yet. Missing:"
  for m in "${missing[@]}"; do echo "  - $m"; done
  exit 1
fi
