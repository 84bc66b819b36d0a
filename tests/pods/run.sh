#!/usr/bin/env bash
# The shipped install, run for real as Pods (make pod-test): the image built from the Dockerfile on
# a Debian 12 base (hack/image.sh, BASE_IMAGE=local), and the Deployment of the kustomize base,
# then of the Helm chart, played with `podman kube play` on the host network, against a test API
# server and the control-plane emulator of its own. For each install path:
#
#   1. render it as a user would (an overlay naming the image; helm template with --set);
#   2. apply what the test API server serves (Namespace, ServiceAccount, Secret, ConfigMap, CRDs),
#      the API-key Secret and deploy/examples; it serves no RBAC, Service or PodDisruptionBudget
#      (tests/e2e/install.rs checks those);
#   3. play the Deployment's two replicas as two pods, with its own image, command, user,
#      read-only root, capabilities, env and mounts, after the rewrite in `replica_manifest`
#      (what the kubelet and the cluster would do for the pod; each change is explained there);
#   4. check: both replicas live and ready (/healthz, /readyz probed from the host, as the kubelet
#      does), one "ok: leading" and one "ok: standby", the Lease held by the leader's pod, the
#      process's uid, capabilities, no_new_privs, seccomp, read-only root and memory limit, the
#      requests made as the ServiceAccount (audit log), the examples Ready, /metrics scraped;
#   5. (kustomize) one worker Deployment the operator renders for a WorkerQueue's spec.workers,
#      played the same way on the worker image built here from deploy/worker/Containerfile (the
#      PyPI worker), with the rendered env, user, security context and /tmp: the worker runs as
#      the Deployment asks and registers with the control plane in its env (the emulator, which
#      has no registration route: it answers 404 and the worker exits; the real worker's run
#      against the real server is make conformance's);
#   6. stop the leader (kustomize: `podman pod stop`, SIGTERM and the pod's grace period;
#      Helm: `podman pod rm --force --time 0`, SIGKILL, as at a node loss) and check that the
#      standby takes the Lease in time and does the work that follows.
#
# Prints the figures (image size, `kube play` to the examples Ready, hand-over) and fails (exit
# non-zero) on the first check that does not hold. Needs root and podman with runc (installed from
# Debian when missing). Removes every pod, container and image it made on exit, and stops its
# API server and emulator; logs (operators' included) stay in .pods/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator
export TA_HOME=${TA_HOME:-$CACHE/test-apiserver}
export TA_RUN=$TA_HOME/run-pods
# Ports of its own: beside `make test`'s and `make demo`'s instances.
export TA_API_PORT=${TA_PODS_API_PORT:-18543} TA_ETCD_PORT=${TA_PODS_ETCD_PORT:-14479} TA_ETCD_PEER_PORT=${TA_PODS_ETCD_PEER_PORT:-14480}
EMULATOR_PORT=${PODS_EMULATOR_PORT:-18790}
# The two replicas share the host's network: each gets its own metrics port.
REPLICAS=(a b)
declare -A METRICS_PORT=([a]=18881 [b]=18882)
STATE=$ROOT/.pods
IMAGE_REPO=localhost/kubiya-operator
IMAGE_TAG=pod-test-$$
export CONTAINERS_CONF=$ROOT/hack/containers.conf
APISERVER="bash $ROOT/tests/cluster/apiserver.sh"
T0=$(date +%s.%N)

log() { printf '[pods +%5.1fs] %s\n' "$(since "$T0")" "$*" >&2; }
fail() {
	log "FAIL: $*"
	exit 1
}
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# Polls `cmd` every 0.2 s until it succeeds, for at most `secs` seconds.
wait_for() {
	local what=$1 secs=$2 deadline
	shift 2
	deadline=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${secs}s"
		sleep 0.2
	done
}

# --- prerequisites ----------------------------------------------------------------------------

[ "$(id -u)" = 0 ] || { echo "the pod test runs rootful podman: run it as root" >&2; exit 1; }
need=()
for tool in podman runc catatonit; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
	# catatonit: the init of the pods' infra container (podman builds its pause image from it).
	log "installing ${need[*]} from Debian"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
fi
$APISERVER ensure
KUBECTL=$($APISERVER kubectl)
HELM=$(bash "$ROOT/tests/tools.sh" helm)
export KUBECONFIG=$TA_RUN/kubeconfig
kubectl() { "$KUBECTL" "$@"; }

# --- cleanup: everything this run made --------------------------------------------------------

images_before=$(podman images --format '{{.Repository}}:{{.Tag}}')
PODS_MADE=()
EMULATOR_PID=
cleanup() {
	local rc=$? pod image
	set +e
	for pod in "${PODS_MADE[@]}"; do
		podman pod exists "$pod" || continue
		save_logs "$pod"
		podman pod rm --force --time 0 "$pod" >/dev/null 2>&1
	done
	# The test image, and what podman or hack/image.sh made for it: the Debian 12 base (its tarball
	# stays cached) and podman's pause image, unless they were there before.
	for image in $(podman images --format '{{.Repository}}:{{.Tag}}'); do
		case $image in
		"$IMAGE_REPO:$IMAGE_TAG") ;;
		localhost/kubiya-operator-base:* | localhost/podman-pause:*)
			grep -qxF "$image" <<<"$images_before" && continue
			;;
		*) continue ;;
		esac
		podman rmi --force "$image" >/dev/null 2>&1
	done
	stop_emulator
	$APISERVER stop >/dev/null 2>&1
	[ "$rc" = 0 ] || log "logs: $STATE/"
	exit "$rc"
}
trap cleanup EXIT

save_logs() {
	local pod=$1 ctr
	for ctr in $(podman pod inspect "$pod" --format '{{range .Containers}}{{.Name}} {{end}}' 2>/dev/null); do
		case $ctr in *-infra) continue ;; esac
		podman logs "$ctr" >"$STATE/$CURRENT-$ctr.log" 2>&1
	done
}

start_emulator() {
	"$EMULATOR" --listen "127.0.0.1:$EMULATOR_PORT" >"$STATE/$CURRENT-emulator.log" 2>&1 &
	EMULATOR_PID=$!
	wait_for "the emulator answers" 30 curl -sf "http://127.0.0.1:$EMULATOR_PORT/api/health"
}
stop_emulator() {
	[ -n "$EMULATOR_PID" ] || return 0
	kill "$EMULATOR_PID" 2>/dev/null || true
	wait "$EMULATOR_PID" 2>/dev/null || true # its status is SIGTERM's
	EMULATOR_PID=
}

# --- build ------------------------------------------------------------------------------------

rm -rf "$STATE"
mkdir -p "$STATE"
CURRENT=build
log "building the image (hack/image.sh, BASE_IMAGE=local)"
IMAGE_LINE=$(IMAGE=$IMAGE_REPO:$IMAGE_TAG BASE_IMAGE=local bash hack/image.sh)
log "image: $IMAGE_LINE"
# The glibc the binary gets: the image's own libc.so.6 prints its version when run.
GLIBC=$(podman run --rm --read-only --entrypoint /lib/x86_64-linux-gnu/libc.so.6 "$IMAGE_REPO:$IMAGE_TAG" | sed -n 1p)
log "glibc in the image: $GLIBC"
# The worker image, kept between runs under a tag of its recipe (a build installs 1 GB from PyPI).
WORKER_IMAGE=localhost/kubiya-worker:pod-test-$(cat deploy/worker/Containerfile hack/worker-image.sh | sha256sum | cut -c1-12)
if podman image exists "$WORKER_IMAGE"; then
	WORKER_LINE="$WORKER_IMAGE (kept from an earlier run)"
else
	log "building the worker image (hack/worker-image.sh, BASE_IMAGE=local)"
	WORKER_LINE=$(IMAGE=$WORKER_IMAGE BASE_IMAGE=local bash hack/worker-image.sh)
fi
log "worker image: $WORKER_LINE"
cargo build --release --locked -p kubiya-cp-emulator
EMULATOR=${CARGO_TARGET_DIR:-target}/release/kubiya-cp-emulator
API_KEY=$("$EMULATOR" token pod-test)

# --- rendering --------------------------------------------------------------------------------

# The kustomize base as a user installs it: an overlay naming the image.
render_kustomize() {
	local dir=$STATE/kustomize-overlay
	mkdir -p "$dir"
	cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- $(realpath --relative-to="$dir" "$ROOT/deploy/kustomize/base")
images:
- name: ghcr.io/kubiya-ai/kubiya-operator
  newName: $IMAGE_REPO
  newTag: $IMAGE_TAG
EOF
	kubectl kustomize "$dir"
}

# The chart as the README installs it, with the image and the existing API-key Secret.
render_helm() {
	"$HELM" template kubiya-operator deploy/helm/kubiya-operator --namespace kubiya-system \
		--include-crds --set image.repository=$IMAGE_REPO --set image.tag=$IMAGE_TAG \
		--set apiKey.existingSecret=kubiya-api-key
}

# Splits a rendered stream by kind: what the test API server serves into served.yaml, the
# Deployment into deployment.yaml; prints the kinds it leaves out.
split_rendered() {
	local dir=$1
	awk -v dir="$dir" '
		function flush() {
			if (kind ~ /^(Namespace|ServiceAccount|Secret|ConfigMap|CustomResourceDefinition)$/) out = dir "/served.yaml"
			else if (kind == "Deployment") out = dir "/deployment.yaml"
			else if (kind != "") { print kind "/" name; out = "" }
			if (kind != "" && out != "") printf "---\n%s", doc >>out
			doc = ""; kind = ""; name = ""; inmeta = 0
		}
		/^---/ { flush(); next }
		/^kind: / { kind = $2 }
		/^metadata:/ { inmeta = 1 }
		inmeta && /^  name: / && name == "" { name = $2 }
		{ doc = doc $0 "\n" }
		END { flush() }
	'
}

# --- the pods ---------------------------------------------------------------------------------

# The Deployment of one replica as `podman kube play` can run it. Each change stands for something
# a cluster does for a pod, or works around podman 4.3; nothing else of the manifest is touched.
replica_manifest() {
	local dir=$1 replica=$2 secret_dir=$3 sa_dir=$4 out
	out=$dir/replica-$replica
	mkdir -p "$out"
	cp "$dir/deployment.yaml" "$out/deployment.yaml"
	cat >"$out/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [deployment.yaml]
# One pod per play (podman plays replicas: N as N identical pods, and the replicas' ports must
# differ on the shared host network); podman names the pod <deployment>-pod-0.
nameSuffix: -$replica
patches:
- target: {kind: Deployment}
  patch: |-
    apiVersion: apps/v1
    kind: Deployment
    metadata: {name: replica}
    spec:
      replicas: 1
      template:
        spec:
          # The host's network: the pod reaches the API server and the emulator on 127.0.0.1 and
          # is scraped there. (No CNI, no Service here.)
          hostNetwork: true
          containers:
          - name: operator
            # Port mappings are refused with the host network: there the containerPort is the
            # host's port, which KUBIYA_METRICS_ADDR sets below.
            ports: null
            # podman 4.3 turns an httpGet probe into \`curl\` run inside the container (the image has
            # none), resolves a named port to 0 and needs systemd to schedule it. The kubelet
            # probes from outside: so does this script, on the same paths.
            livenessProbe: null
            readinessProbe: null
            env:
            # The kubelet sets these in every container: the in-cluster API server address.
            - {name: KUBERNETES_SERVICE_HOST, value: 127.0.0.1}
            - {name: KUBERNETES_SERVICE_PORT, value: "$TA_API_PORT"}
            # The downward API: podman 4.3 resolves metadata.name (kept: POD_NAME is the pod's
            # name), not metadata.namespace.
            - {name: POD_NAMESPACE, value: kubiya-system, valueFrom: null}
            # Test-only: the emulator instead of Kubiya's control plane, this replica's port.
            - {name: KUBIYA_CONTROL_PLANE_BASE_URL, value: "http://127.0.0.1:$EMULATOR_PORT"}
            - {name: KUBIYA_METRICS_ADDR, value: "127.0.0.1:${METRICS_PORT[$replica]}"}
            volumeMounts:
            # The service account's token, CA and namespace, where every pod has them.
            - {name: kube-api-access, mountPath: /var/run/secrets/kubernetes.io/serviceaccount, readOnly: true}
          volumes:
          # The Secret volume as the kubelet lays it out (the items, mode defaultMode, group
          # fsGroup), from a host directory: podman 4.3's Secret volumes crash without
          # \`optional\`, write \`data\` undecoded, ignore \`stringData\` and defaultMode (podman
          # issues 16636, 16625; fixed in 4.4).
          - name: api-key
            secret: null
            hostPath: {path: $secret_dir, type: Directory}
          - name: kube-api-access
            hostPath: {path: $sa_dir, type: Directory}
EOF
	kubectl kustomize "$out" >"$out.yaml"
}

# What /readyz of a replica answers, or "" when it does not.
readyz() { curl -s --max-time 2 "http://127.0.0.1:${METRICS_PORT[$1]}/readyz" || true; }
healthz() { curl -sf --max-time 2 "http://127.0.0.1:${METRICS_PORT[$1]}/healthz" >/dev/null; }
# Replica $1's /metrics has the line $2. Read whole before grep: `curl | grep -q` under pipefail
# fails when grep stops reading first and curl's next write meets a closed pipe.
scraped() {
	local text
	text=$(curl -sf --max-time 2 "http://127.0.0.1:${METRICS_PORT[$1]}/metrics") && grep -qxF "$2" <<<"$text"
}
pod_of() { echo "$DEPLOYMENT-$1-pod-0"; }
lease_holder() { kubectl -n kubiya-system get lease "$LEASE" -o jsonpath='{.spec.holderIdentity}' 2>/dev/null; }
leading() { [ "$(readyz "$1")" = "ok: leading" ] && [ "$(lease_holder)" = "$(pod_of "$1")" ]; }
one_leads_one_stands_by() {
	local a b
	a=$(readyz a) b=$(readyz b)
	{ [ "$a" = "ok: leading" ] && [ "$b" = "ok: standby" ]; } || { [ "$a" = "ok: standby" ] && [ "$b" = "ok: leading" ]; }
}
all_ready() { kubectl wait --for=condition=Ready kenv,kwq --all --timeout=1s; }

# The restricted security context of the process `pid` of container `ctr`, read from the host:
# user `uid`, no capabilities, no_new_privs, a seccomp filter, a read-only root.
check_restricted() {
	local ctr=$1 pid=$2 uid=$3 status root_opts
	status=$(cat "/proc/$pid/status")
	grep -qP "^Uid:\t$uid\t$uid\t$uid\t$uid\$" <<<"$status" || fail "$ctr: uid is not $uid"
	grep -qP '^CapEff:\t0{16}$' <<<"$status" || fail "$ctr: effective capabilities left (drop: [ALL])"
	grep -qP '^CapBnd:\t0{16}$' <<<"$status" || fail "$ctr: capabilities left in the bounding set (drop: [ALL])"
	grep -qP '^NoNewPrivs:\t1$' <<<"$status" || fail "$ctr: no_new_privs unset (allowPrivilegeEscalation: false)"
	grep -qP '^Seccomp:\t2$' <<<"$status" || fail "$ctr: no seccomp filter (RuntimeDefault)"
	root_opts=$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo")
	[[ $root_opts == ro,* || $root_opts == ro ]] || fail "$ctr: root file system is not read-only ($root_opts)"
}

# The settings of the Deployment, read from the running process from the host.
check_process() {
	local replica=$1 ctr pid
	ctr=$(pod_of "$replica")-operator
	pid=$(podman inspect "$ctr" --format '{{.State.Pid}}')
	check_restricted "$ctr" "$pid" 65532
	grep -qP '^Gid:\t65532\t65532\t65532\t65532$' "/proc/$pid/status" || fail "$ctr: gid is not 65532"
	[ "$(podman inspect "$ctr" --format '{{.HostConfig.Memory}}')" = 134217728 ] || fail "$ctr: memory limit is not 128Mi"
	[ "$(stat -c '%a %g' "/proc/$pid/root/var/run/secrets/kubiya/api-key")" = "440 65532" ] ||
		fail "$ctr: the API key file is not mode 0440, group 65532"
	[ "$(podman inspect "$ctr" --format '{{.RestartCount}}')" = 0 ] || fail "$ctr: restarted"
}

# One install path, from rendering to hand-over. $2 renders it; $3: how the leader is stopped.
play_install() {
	local name=$1 render=$2 stop=$3 dir t_play ready_s t_stop handover_s replica leader standby grace mode key_mode examples stopping lease_s
	CURRENT=$name
	dir=$STATE/$name
	mkdir -p "$dir"
	log "== $name: rendering"
	$render >"$dir/rendered.yaml"
	split_rendered "$dir" <"$dir/rendered.yaml" >"$dir/not-served.txt"
	log "not served by the test API server (checked by tests/e2e/install.rs): $(tr '\n' ' ' <"$dir/not-served.txt")"
	[ -s "$dir/deployment.yaml" ] || fail "$name: no Deployment rendered"
	DEPLOYMENT=$(awk '/^  name: / { print $2; exit }' "$dir/deployment.yaml")
	LEASE=$(awk '/name: KUBIYA_LEASE_NAME/ { getline; gsub(/"/, "", $2); print $2 }' "$dir/deployment.yaml")
	LEASE=${LEASE:-kubiya-operator}
	grep -q '^  namespace: kubiya-system$' "$dir/deployment.yaml" || fail "$name: the Deployment is not in kubiya-system"

	log "$name: starting a test API server and the emulator"
	$APISERVER start
	start_emulator
	kubectl create namespace kubiya-system >/dev/null # helm --create-namespace; the base has it too
	kubectl apply --server-side -f "$dir/served.yaml" >/dev/null
	kubectl wait --for=condition=Established crd --all --timeout=60s >/dev/null
	kubectl -n kubiya-system create secret generic kubiya-api-key --from-literal=api-key="$API_KEY" >/dev/null
	# The examples, with the API keys of the two organisations their connections name (as make demo).
	kubectl create secret generic team-b-kubiya-key --from-literal=api-key="$("$EMULATOR" token team-b)" >/dev/null
	kubectl -n kubiya-system create secret generic acme-kubiya-key --from-literal=api-key="$("$EMULATOR" token acme)" >/dev/null
	kubectl apply -k deploy/examples >/dev/null
	kubectl apply -f deploy/examples/organisations.yaml >/dev/null
	examples=$(kubectl get kenv -o name | wc -l)

	# What the kubelet mounts: the Secret's item (mode defaultMode, group fsGroup) and the
	# service account's token (the test API server's static token for
	# system:serviceaccount:kubiya-system:kubiya-operator), the server's CA and the namespace.
	key_mode=$(awk '/defaultMode:/ { printf "%o", $2; exit }' "$dir/deployment.yaml")
	mkdir -p "$dir/secret-api-key" "$dir/serviceaccount"
	printf '%s' "$API_KEY" >"$dir/secret-api-key/api-key"
	chgrp 65532 "$dir/secret-api-key/api-key"
	chmod "$key_mode" "$dir/secret-api-key/api-key"
	tr -d '\n' <"$TA_RUN/operator-token" >"$dir/serviceaccount/token" # a projected token has no newline
	cp "$TA_RUN/certs/apiserver.crt" "$dir/serviceaccount/ca.crt"
	printf kubiya-system >"$dir/serviceaccount/namespace"
	for replica in "${REPLICAS[@]}"; do
		replica_manifest "$dir" "$replica" "$dir/secret-api-key" "$dir/serviceaccount"
		PODS_MADE+=("$(pod_of "$replica")")
	done

	log "$name: podman kube play, two replicas"
	t_play=$(date +%s.%N)
	for replica in "${REPLICAS[@]}"; do
		podman kube play "$dir/replica-$replica.yaml" >/dev/null
	done
	for replica in "${REPLICAS[@]}"; do
		wait_for "$name: replica $replica live (/healthz)" 60 healthz "$replica"
	done
	wait_for "$name: one replica leading, one standing by (/readyz)" 60 one_leads_one_stands_by
	leader=a standby=b
	[ "$(readyz a)" = "ok: leading" ] || leader=b standby=a
	wait_for "$name: the Lease held by the leader's pod" 30 leading "$leader"
	wait_for "$name: the examples Ready" 120 all_ready
	ready_s=$(since "$t_play")
	log "$name: $(pod_of "$leader") leads, $(pod_of "$standby") stands by; examples Ready ${ready_s}s after kube play"
	kubectl get kenv -o wide >&2

	for replica in "${REPLICAS[@]}"; do check_process "$replica"; done
	grep -q '"username":"system:serviceaccount:kubiya-system:kubiya-operator"' "$TA_RUN/audit.log" ||
		fail "$name: no request made with the service account's token"
	wait_for "$name: the leader's /metrics: kubiya_operator_leader 1" 10 scraped "$leader" 'kubiya_operator_leader 1'
	wait_for "$name: the leader's /metrics: $examples Environments Ready" 10 \
		scraped "$leader" "kubiya_operator_environments{phase=\"Ready\"} $examples"
	wait_for "$name: the standby's /metrics: kubiya_operator_leader 0" 10 scraped "$standby" 'kubiya_operator_leader 0'
	log "$name: process settings as the Deployment asks; /metrics scraped from both"
	[ "$name" != kustomize ] || play_workers "$dir"

	t_stop=$(date +%s.%N)
	case $stop in
	sigterm)
		# podman 4.3 ignores terminationGracePeriodSeconds: the pod's grace period, given here.
		grace=$(awk '/terminationGracePeriodSeconds:/ { print $2; exit }' "$dir/deployment.yaml")
		mode="podman pod stop, SIGTERM, grace ${grace}s"
		log "$name: stopping the leader ($mode)"
		podman pod stop --time "$grace" "$(pod_of "$leader")" >/dev/null &
		stopping=$!
		# The Lease is released on the way out; the standby's next read (2 s, then up to 1 s) takes it.
		wait_for "$name: the standby leading after a SIGTERM" 10 leading "$standby"
		handover_s=$(since "$t_stop")
		wait "$stopping" || fail "$name: podman pod stop"
		log "$name: podman pod stop returned after $(since "$t_stop")s"
		;;
	sigkill)
		# The Lease expires at most its duration after the last renewal; the standby reads it
		# every 2 s, then waits up to 1 s (docs/install.md, High availability): 2 s of slack on top.
		lease_s=$(awk '/name: KUBIYA_LEASE_DURATION/ { getline; gsub(/[^0-9]/, "", $2); print $2 }' "$dir/deployment.yaml")
		mode="podman pod rm --force --time 0, SIGKILL, Lease ${lease_s:=15}s"
		log "$name: killing the leader ($mode)"
		save_logs "$(pod_of "$leader")"
		podman pod rm --force --time 0 "$(pod_of "$leader")" >/dev/null
		wait_for "$name: the standby leading after a SIGKILL" $((lease_s + 5)) leading "$standby"
		handover_s=$(since "$t_stop")
		;;
	esac
	log "$name: $(pod_of "$standby") took the Lease ${handover_s}s after the leader was stopped"

	# The work after the hand-over: a new Environment, and a deletion (the remote one goes too):
	# production and its WorkerQueue gpu, which production waits for.
	sed 's/name: staging/name: after-handover/' deploy/examples/staging.yaml | kubectl apply -f - >/dev/null
	kubectl delete kenv production --wait=false >/dev/null
	kubectl delete kwq gpu --wait=false >/dev/null
	wait_for "$name: after-handover Ready" 60 kubectl wait --for=condition=Ready kenv/after-handover --timeout=1s
	wait_for "$name: gpu deleted" 60 kubectl wait --for=delete kwq/gpu --timeout=1s
	wait_for "$name: production deleted" 60 kubectl wait --for=delete kenv/production --timeout=1s
	wait_for "$name: the new leader's /metrics: kubiya_operator_leader 1" 10 scraped "$standby" 'kubiya_operator_leader 1'
	check_process "$standby"
	log "$name: the new leader did the work that followed"

	for replica in "${REPLICAS[@]}"; do
		podman pod exists "$(pod_of "$replica")" || continue
		save_logs "$(pod_of "$replica")"
		podman kube down "$dir/replica-$replica.yaml" >/dev/null
	done
	! grep -q '"level":"ERROR"' "$STATE/$name"-*-operator.log || fail "$name: errors in the operators' logs ($STATE)"
	stop_emulator
	$APISERVER stop >/dev/null
	FIGURES+=("$name: kube play to examples Ready ${ready_s}s; hand-over ${handover_s}s ($mode)")
}

# A WorkerQueue's workers: the Deployment the operator renders, played as its pod.
play_workers() {
	local dir=$1/workers t0 pod ctr pid id log_file key
	mkdir -p "$dir"
	key=$("$EMULATOR" token pod-test-workers)
	kubectl create secret generic pod-worker-key --from-literal=api-key="$key" >/dev/null
	kubectl apply -f - >/dev/null <<EOF
apiVersion: kubiya.ai/v1alpha1
kind: WorkerQueue
metadata: {name: pods}
spec:
  environmentRef: {name: production}
  workers:
    replicas: 1
    image: $WORKER_IMAGE
    apiKeySecretRef: {name: pod-worker-key, key: api-key}
EOF
	wait_for "workers: the Deployment rendered" 60 kubectl get deployment pods-workers
	kubectl get deployment pods-workers -o json >"$dir/deployment.json"
	id=$(kubectl get kwq pods -o jsonpath='{.status.queueId}')
	# What the cluster does for the pod: the key of its secretKeyRef resolved (the kubelet), the
	# host's network (the pod reaches the emulator on 127.0.0.1); the object's server fields go.
	python3 - "$dir/deployment.json" "$dir/pod.json" "$key" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["metadata"] = {"name": d["metadata"]["name"], "labels": d["metadata"].get("labels", {})}
d.pop("status", None)
pod = d["spec"]["template"]["spec"]
pod["hostNetwork"] = True
for c in pod["containers"]:
    for v in c.get("env", []):
        if "valueFrom" in v:
            v.pop("valueFrom")
            v["value"] = sys.argv[3]
json.dump(d, open(sys.argv[2], "w"), indent=1)
PY
	pod=pods-workers-pod-0
	ctr=$pod-worker
	PODS_MADE+=("$pod")
	t0=$(date +%s.%N)
	podman kube play "$dir/pod.json" >/dev/null
	running() { [ "$(podman inspect "$ctr" --format '{{.State.Running}}')" = true ]; }
	wait_for "workers: the worker container running" 30 running
	pid=$(podman inspect "$ctr" --format '{{.State.Pid}}')
	check_restricted "$ctr" "$pid" 10001 # the image's user
	awk '$5 == "/tmp" { found = 1; if ($6 !~ /^rw/) exit 1 } END { exit !found }' "/proc/$pid/mountinfo" ||
		fail "$ctr: no writable /tmp"
	[ "$(podman inspect "$ctr" --format '{{.HostConfig.Memory}}')" = 1073741824 ] || fail "$ctr: memory limit is not 1Gi"
	tr '\0' '\n' <"/proc/$pid/environ" | grep -qx "QUEUE_ID=$id" || fail "$ctr: QUEUE_ID is not the queue's id"
	# It imports (about 15 s), then registers with the control plane of its env and, answered 404
	# by the emulator (which has no registration route), exits 1; the pod's restartPolicy (Always)
	# starts it again, as the kubelet would (a crash loop).
	log_file=$STATE/workers-worker.log
	# (its log is coloured: the colours go)
	registered() {
		podman logs "$ctr" 2>&1 | sed 's/\x1b\[[0-9;]*m//g' >"$log_file"
		grep 'worker_start_failed' "$log_file" | grep 'status_code=404' | grep -q "$id"
	}
	wait_for "workers: the worker's registration of queue $id" 120 registered
	restarted() { [ "$(podman inspect "$ctr" --format '{{.RestartCount}}')" -ge 1 ]; }
	wait_for "workers: the worker exited after the 404, and was started again" 60 restarted
	! grep -qF "$key" "$log_file" || fail "$ctr: the workers' key in its log"
	FIGURES+=("workers: kube play to the worker's registration (404 from the emulator, then exit 1 and a restart) $(since "$t0")s")
	log "workers: ran as uid 10001, read-only root, no capabilities, seccomp, a writable /tmp; registered queue $id with the emulator (404), exited, restarted"
	podman kube down "$dir/pod.json" >/dev/null
	kubectl delete kwq pods --wait=false >/dev/null
	wait_for "workers: the queue deleted" 60 kubectl wait --for=delete kwq/pods --timeout=1s
	! kubectl get deployment pods-workers >/dev/null 2>&1 || fail "workers: the Deployment outlived its queue"
}

FIGURES=()
$APISERVER stop >/dev/null 2>&1 || true # a run that was killed may have left one behind
play_install kustomize render_kustomize sigterm
play_install helm render_helm sigkill

log "figures"
printf '  image %s; %s\n' "$IMAGE_LINE" "$GLIBC" >&2
printf '  worker image %s\n' "$WORKER_LINE" >&2
printf '  %s\n' "${FIGURES[@]}" >&2
echo "pods: 3 passed, 0 failed"
