#!/usr/bin/env bash
# Conformance against the real Kubiya control-plane server (PyPI kubiya-control-plane-api, on a
# throw-away PostgreSQL): the emulator must answer the scenarios of tests/conformance/ like it,
# and the operator must drive it end to end, and the real worker run as the operator renders it
# must register. Installs what it needs (PostgreSQL and Redis from Debian, a cached venv of about
# 1.2 GB with the Temporal CLI's dev server); the test API server is started by tests/run.sh as
# for `make test`.
#
#   tests/conformance.sh            compare (make conformance)
#   CONFORMANCE_BLESS=1 tests/conformance.sh   re-record tests/conformance/real-server.json
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CP="bash $ROOT/tests/controlplane/real-server.sh"
export CP_API_PORT=${CP_API_PORT:-18777}

$CP install
$CP clean >/dev/null 2>&1 || true # a fresh database each run
trap '$CP stop >/dev/null 2>&1 || true' EXIT
$CP db-init
$CP schema
$CP start
# For the real worker: Redis, a Temporal dev server, and a second server that hands them out.
export CP_WORKERS_API_PORT=${CP_WORKERS_API_PORT:-18779}
$CP workers-up

export KUBIYA_CONFORMANCE_REAL_URL=http://127.0.0.1:$CP_API_PORT
export KUBIYA_CONFORMANCE_WORKERS_URL=http://127.0.0.1:$CP_WORKERS_API_PORT
KUBIYA_CONFORMANCE_WORKER=$($CP worker-bin)
export KUBIYA_CONFORMANCE_WORKER
# "real_server" selects the conformance test and the ignored end-to-end test against the real server.
bash "$ROOT/tests/run.sh" --test conformance --test e2e -- --include-ignored real_server "$@"
