#!/usr/bin/env bash
# The load benchmark (make bench): a dedicated test API server, the release operator, the
# control-plane emulator in the bench process; prints a table and writes bench-N.json.
#
#   hack/bench.sh [kubiya-bench args...]     e.g. hack/bench.sh --n 10000 --steady-secs 60
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export TA_HOME=${TA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/test-apiserver}
export TA_RUN=$ROOT/.bench/apiserver
export TA_API_PORT=16743 TA_ETCD_PORT=12679 TA_ETCD_PEER_PORT=12680
APISERVER="bash $ROOT/tests/cluster/apiserver.sh"
BIN=${CARGO_TARGET_DIR:-target}/release # where cargo puts the binaries
mkdir -p .bench
cargo build --release --locked --bin kubiya-operator --bin kubiya-bench -p kubiya-operator -p kubiya-bench
$APISERVER ensure
$APISERVER stop >/dev/null 2>&1 || true
trap '$APISERVER stop >/dev/null 2>&1 || true' EXIT
$APISERVER start
# OPERATOR=path/to/another/kubiya-operator measures another build side by side.
"$BIN/kubiya-bench" --kubeconfig "$TA_RUN/kubeconfig" --operator "${OPERATOR:-$BIN/kubiya-operator}" \
	"$@"
