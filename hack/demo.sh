#!/usr/bin/env bash
# The operator end to end on the local test bed: the test API server, the control-plane emulator,
# the operator, and the examples in deploy/examples, until `kubectl get kenv` (and `kwq`) shows them Ready.
#
#   hack/demo.sh up      build what is needed, start everything, apply the examples (make demo)
#   hack/demo.sh down    stop everything (make demo-stop)
#
# Everything runs on 127.0.0.1; state and logs are in .demo/ of the repository.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STATE=$ROOT/.demo
export TA_HOME=${TA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/test-apiserver}
export TA_RUN=$STATE/apiserver
EMULATOR_PORT=${EMULATOR_PORT:-18778}
METRICS_PORT=${METRICS_PORT:-18780}
APISERVER="bash $ROOT/tests/cluster/apiserver.sh"
BIN=${CARGO_TARGET_DIR:-target}/release # where cargo puts the binaries

log() { printf '[demo] %s\n' "$*" >&2; }

stop_pid() {
	local f=$1 pid
	[ -s "$f" ] || return 0
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

down() {
	stop_pid "$STATE/operator.pid"
	stop_pid "$STATE/emulator.pid"
	$APISERVER stop >/dev/null 2>&1 || true
	log "stopped"
}

up() {
	down 2>/dev/null
	mkdir -p "$STATE"
	log "building the operator and the emulator"
	cargo build --release --locked --workspace --bins
	$APISERVER ensure
	$APISERVER start
	local kubectl
	kubectl=$($APISERVER kubectl)
	export KUBECONFIG=$TA_RUN/kubeconfig

	log "installing the CRDs"
	"$kubectl" apply --server-side -f crds/ >/dev/null
	"$kubectl" wait --for=condition=Established crd --all --timeout=60s >/dev/null

	log "starting the control-plane emulator on 127.0.0.1:$EMULATOR_PORT"
	"$BIN/kubiya-cp-emulator" --listen "127.0.0.1:$EMULATOR_PORT" >"$STATE/emulator.log" 2>&1 &
	echo $! >"$STATE/emulator.pid"
	for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$EMULATOR_PORT/api/health" >/dev/null && break; sleep 0.1; done

	log "starting the operator (log: .demo/operator.log)"
	KUBIYA_API_KEY=$("$BIN/kubiya-cp-emulator" token demo) \
				KUBIYA_CONTROL_PLANE_BASE_URL="http://127.0.0.1:$EMULATOR_PORT" KUBIYA_PROVISIONING_POLL=1s \
		KUBIYA_METRICS_ADDR="127.0.0.1:$METRICS_PORT" \
		"$BIN/kubiya-operator" run >"$STATE/operator.log" 2>&1 &
	echo $! >"$STATE/operator.pid"

	log "applying deploy/examples (with the API keys of two more organisations, for its connections)"
	local emulator=$BIN/kubiya-cp-emulator
	"$kubectl" create secret generic team-b-kubiya-key --from-literal=api-key="$("$emulator" token team-b)" >/dev/null
	"$kubectl" create namespace kubiya-system >/dev/null
	"$kubectl" -n kubiya-system create secret generic acme-kubiya-key --from-literal=api-key="$("$emulator" token acme)" >/dev/null
	"$kubectl" apply -k deploy/examples
	"$kubectl" apply -f deploy/examples/organisations.yaml
	if ! "$kubectl" wait --for=condition=Ready kenv --all --timeout=90s; then
		"$kubectl" get kenv -o wide
		log "not Ready in time; see .demo/operator.log"
		exit 1
	fi
	"$kubectl" get kenv -o wide
	"$kubectl" wait --for=condition=Ready kwq --all --timeout=60s >/dev/null || true
	"$kubectl" get kwq
	"$kubectl" wait --for=condition=Ready kconn,kcconn --all --timeout=30s >/dev/null || true
	"$kubectl" get kconn,kcconn
	cat <<EOT

The operator is running. Try:
  export KUBECONFIG=$KUBECONFIG
  alias kubectl=$kubectl
  kubectl describe kenv production
  kubectl get secret production-worker -o jsonpath='{.data.KUBIYA_WORKER_COMMAND}' | base64 -d; echo
  kubectl get secret gpu-worker -o jsonpath='{.data.KUBIYA_WORKER_COMMAND}' | base64 -d; echo   # today's CLI
  kubectl patch secret production-db -p '{"stringData":{"password":"rotated"}}'   # reaches production, no edit
  kubectl get events --field-selector involvedObject.name=production   # "updated execution_environment", no value
  kubectl delete kenv staging
  kubectl describe kconn team-b          # organisation, Environments using it
  kubectl label namespace default kubiya.ai/org=acme   # the ClusterConnection acme may now serve it
  curl -s http://127.0.0.1:$METRICS_PORT/metrics
Stop it all with: make demo-stop
EOT
}

case ${1:-} in
up) up ;;
down) down ;;
*) sed -n '2,9p' "$0"; exit 2 ;;
esac
