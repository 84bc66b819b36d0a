#!/usr/bin/env bash
# A real Kubernetes API server for local integration tests, built only from
# Debian packages: upstream k8s.io/apiextensions-apiserver (CRDs and custom
# resources) plus, wired up in core.go from upstream k8s.io/apiserver machinery,
# the built-in namespaces, secrets, configmaps, serviceaccounts, events
# (core/v1 + events.k8s.io/v1), leases and self-subject access reviews, on top
# of etcd. No pods, services, deployments, RBAC. See NOTES.md next to this script (the recipe as first found and measured).
#
#   apiserver.sh ensure  build unless a binary built from these exact sources exists
#                    (the cache that makes warm CI runs and `make demo` reruns fast)
#   apiserver.sh build   download .debs (sid: Go toolchain + k8s Go library sources,
#                    bookworm: etcd-server; sid: kubectl), unpack them under
#                    $TA_HOME (nothing is installed into the system), generate the
#                    OpenAPI definitions of the k8s.io/api types (upstream openapi-gen),
#                    build $TA_HOME/bin/test-apiserver from main.go + core.go, make client certs
#   apiserver.sh start   start etcd + test-apiserver on 127.0.0.1, wait for /readyz,
#                    write $TA_RUN/kubeconfig (admin = client cert in system:masters)
#   apiserver.sh stop    stop both (by PID), remove runtime state
#   apiserver.sh restart-apiserver   restart the API server only; etcd and its data stay
#   apiserver.sh status  show PIDs / readiness
#   apiserver.sh smoke   curl-only round trips: CRD, CR, /status, finalizer, delete, watch;
#                    then the built-in APIs: namespace, owned Secret (stringData, watch,
#                    patch, SSA), Lease (409 on a stale update), events.k8s.io/v1 Event
#                    read back as core/v1, namespace deletion removing its content
#   apiserver.sh env     print "export KUBECONFIG=..."
#   apiserver.sh kubectl print the path of the kubectl it fetched
#   apiserver.sh all     build + start
#   apiserver.sh clean   stop + remove $TA_HOME
#
# Environment (all optional):
#   TA_HOME=$XDG_CACHE_HOME/kubiya-operator/test-apiserver (default ~/.cache/...)
#                      work dir (debs, unpacked tree, GOCACHE, bin, run state)
#   TA_API_PORT=16443 TA_ETCD_PORT=12379 TA_ETCD_PEER_PORT=12380
#                      not the usual 6443/2379: never collide with a real cluster's
#   TA_ANONYMOUS=0     1: anonymous requests get full access (no client cert needed)
#   TA_ETCD=bookworm   bookworm: etcd 3.4 from the system's own apt sources;
#                      sid: etcd 3.5 from sid (supports --unsafe-no-fsync, watch progress);
#                      or a path to an etcd binary
#   TA_PKGS=minimal    minimal: the 85 Go -dev packages the build needs (72 MiB);
#                      closure: the full recursive Depends closure (~270 MiB, 2.3 GiB unpacked),
#                      use it if sid renamed/split a package and the minimal list fails
#   TA_KUBECTL=1       also fetch sid's kubectl into $TA_HOME/kubectl/usr/bin/kubectl
#   TA_BUILD_STOCK=0   1: also build the unmodified upstream apiextensions-apiserver main
#   TA_RUN=$TA_HOME/run  run state (etcd data, logs, PIDs, certs, kubeconfig): give a second
#                      instance its own TA_RUN and ports to run it beside the first
#   TA_KEEP_DATA=0     1: keep etcd data between stop/start
#   TA_ARGS=           extra test-apiserver flags for start, e.g. "--builtin-apis=false"
#                      (CRDs only, as before core.go) or "--namespace-lifecycle=false"
#                      (objects in any namespace name, existing or not)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TA_HOME=${TA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/test-apiserver}
TA_API_PORT=${TA_API_PORT:-16443}
TA_ETCD_PORT=${TA_ETCD_PORT:-12379}
TA_ETCD_PEER_PORT=${TA_ETCD_PEER_PORT:-12380}
TA_ANONYMOUS=${TA_ANONYMOUS:-0}
TA_ETCD=${TA_ETCD:-bookworm}
TA_PKGS=${TA_PKGS:-minimal}
TA_KUBECTL=${TA_KUBECTL:-1}
TA_BUILD_STOCK=${TA_BUILD_STOCK:-0}
TA_KEEP_DATA=${TA_KEEP_DATA:-0}
TA_ARGS=${TA_ARGS:-}

APT_SID=$TA_HOME/apt-sid
RUN=${TA_RUN:-$TA_HOME/run}

log() { printf '[test-apiserver] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

# apt-get/apt-cache against Debian sid, with private lists and cache: the
# system's own sources, lists and package cache are left alone.
sid_apt_opts() {
	echo "-o Dir::Etc::SourceList=$APT_SID/sources.list -o Dir::Etc::SourceParts=/dev/null" \
		"-o Dir::State::Lists=$APT_SID/lists -o Dir::Cache=$APT_SID/cache" \
		"-o APT::Sandbox::User=root -o Acquire::Languages=none"
}
sid_update() {
	mkdir -p "$APT_SID/lists/partial" "$APT_SID/cache/archives/partial"
	echo "deb http://deb.debian.org/debian sid main" >"$APT_SID/sources.list"
	if [ -z "$(find "$APT_SID/lists" -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null)" ]; then
		log "apt-get update (sid lists, private dir $APT_SID)"
		# shellcheck disable=SC2046
		apt-get $(sid_apt_opts) -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false update -qq
	fi
}

# Go library packages whose sources the build actually compiles (from
# `go list -deps` of main.go + core.go and of kube-openapi's cmd/openapi-gen,
# mapped to owning packages), as of sid 2026-11 (k8s libs 0.36.4). openapi-gen
# alone needs gengo, x/mod and x/tools. TA_PKGS=closure is the fallback if sid
# renames any.
MINIMAL_PKGS="golang-cel-cel-go-dev golang-cel-expr-dev golang-etcd-server-dev
golang-github-antlr4-go-antlr-dev golang-github-beorn7-perks-dev golang-github-blang-semver-dev
golang-github-cenkalti-backoff-v5-dev golang-github-cespare-xxhash-v2-dev golang-github-coreos-go-semver-dev
golang-github-coreos-go-systemd-dev golang-github-davecgh-go-spew-dev golang-github-docker-spdystream-dev
golang-github-emicklei-go-restful-dev golang-github-evanphx-json-patch-dev golang-github-felixge-httpsnoop-dev
golang-github-fsnotify-fsnotify-dev golang-github-fxamacker-cbor-dev golang-github-go-logr-logr-dev
golang-github-go-logr-stdr-dev golang-github-go-openapi-jsonpointer-dev golang-github-go-openapi-jsonreference-dev
golang-github-go-openapi-swag-dev golang-github-gogo-protobuf-dev golang-github-golang-protobuf-1-5-dev
golang-github-google-gnostic-models-dev golang-github-google-uuid-dev golang-github-gorilla-websocket-dev
golang-github-grpc-ecosystem-go-grpc-middleware-dev golang-github-grpc-ecosystem-grpc-gateway-dev
golang-github-json-iterator-go-dev golang-github-kubernetes-gengo-dev golang-github-kylelemons-godebug-dev
golang-github-modern-go-concurrent-dev
golang-github-modern-go-reflect2-dev golang-github-munnerz-goautoneg-dev golang-github-mxk-go-flowrate-dev
golang-github-nytimes-gziphandler-dev golang-github-pkg-errors-dev golang-github-pmezard-go-difflib-dev
golang-github-prometheus-client-golang-dev golang-github-prometheus-client-model-dev golang-github-prometheus-common-dev
golang-github-prometheus-procfs-dev golang-github-spf13-cobra-dev golang-github-spf13-pflag-dev
golang-github-x448-float16-dev golang-go.uber-multierr-dev golang-go.uber-zap-dev golang-golang-x-crypto-dev
golang-golang-x-exp-dev golang-golang-x-mod-dev golang-golang-x-net-dev golang-golang-x-oauth2-dev
golang-golang-x-sync-dev golang-golang-x-sys-dev golang-golang-x-term-dev golang-golang-x-text-dev
golang-golang-x-time-dev golang-golang-x-tools-dev
golang-google-genproto-dev golang-google-grpc-dev golang-google-protobuf-dev golang-gopkg-inf.v0-dev
golang-gopkg-natefinch-lumberjack.v2-dev golang-gopkg-yaml.v2-dev golang-gopkg-yaml.v3-dev golang-k8s-api-dev
golang-k8s-apiextensions-apiserver-dev golang-k8s-apimachinery-dev golang-k8s-apiserver-dev golang-k8s-client-go-dev
golang-k8s-component-base-dev golang-k8s-klog-dev golang-k8s-kms-dev golang-k8s-kube-openapi-dev
golang-k8s-sigs-apiserver-network-proxy-dev golang-k8s-sigs-json-dev golang-k8s-sigs-randfill-dev
golang-k8s-sigs-structured-merge-diff-v6-dev golang-k8s-sigs-yaml-dev golang-k8s-streaming-dev golang-k8s-utils-dev
golang-opentelemetry-contrib-dev golang-opentelemetry-otel-dev golang-opentelemetry-proto-dev"

# Packages whose OpenAPI definitions openapi-gen generates for core.go's types
# (kube-apiserver has them in k8s.io/kubernetes/pkg/generated/openapi, which
# Debian does not package). The apimachinery ones are needed so that references
# to ObjectMeta, Time, Quantity, ... use the same model names as the apiextensions
# definitions they are merged with.
OPENAPI_PKGS="k8s.io/api/core/v1 k8s.io/api/coordination/v1 k8s.io/api/events/v1
k8s.io/api/apps/v1 k8s.io/api/authorization/v1 k8s.io/api/authentication/v1 k8s.io/apimachinery/pkg/apis/meta/v1
k8s.io/apimachinery/pkg/runtime k8s.io/apimachinery/pkg/version k8s.io/apimachinery/pkg/api/resource
k8s.io/apimachinery/pkg/util/intstr"

go_env() {
	local goroot
	goroot=$(find "$TA_HOME/root/usr/lib" -maxdepth 1 -name 'go-1.*' -type d | sort -V | tail -1)
	export GOROOT=$goroot PATH=$goroot/bin:$PATH
	# GOPATH mode, as Debian's dh-golang builds: sources come from the unpacked
	# /usr/share/gocode, nothing is fetched.
	export GO111MODULE=off GOPATH=$TA_HOME/root/usr/share/gocode GOCACHE=$TA_HOME/gocache
	export GOPROXY=off GOTOOLCHAIN=local GOFLAGS= GOENV=off GOTELEMETRY=off CGO_ENABLED=0
}

cmd_build() {
	local t0 t
	t0=$(now)
	for tool in apt-get dpkg-deb openssl curl; do command -v $tool >/dev/null || { log "missing $tool"; exit 1; }; done
	# fresh download/unpack each time (GOCACHE and PKI are kept)
	rm -rf "$TA_HOME"/{debs,debs-system,root,etcd,kubectl,src}
	mkdir -p "$TA_HOME"/{debs,root,bin,src/test-apiserver,pki}

	# 1. download
	t=$(now)
	sid_update
	local opts gopkg pkgs
	opts=$(sid_apt_opts)
	# shellcheck disable=SC2086
	gopkg=$(apt-cache $opts depends golang-go 2>/dev/null | grep -o 'golang-1\.[0-9]*-go' | sort -V | tail -1)
	[ -n "$gopkg" ] || { log "cannot resolve sid's golang-go"; exit 1; }
	if [ "$TA_PKGS" = closure ]; then
		# shellcheck disable=SC2086
		pkgs=$(apt-cache $opts depends --recurse --no-recommends --no-suggests --no-conflicts \
			--no-breaks --no-replaces --no-enhances golang-k8s-apiextensions-apiserver-dev |
			grep -v '^ ' | grep -v '^<' | grep -E '^golang-.*-dev$' | sort -u)
	else
		pkgs=$MINIMAL_PKGS
	fi
	# Binary packages are pinned to sid's version: a locally installed one with a
	# higher version (e.g. google-cloud-cli's kubectl 1:528.0.0-0) would win otherwise.
	sid_version() {
		# shellcheck disable=SC2086
		apt-cache $opts madison "$1" | awk -F' *[|] *' '/deb.debian.org.*sid/ {print $2; exit}'
	}
	[ "$TA_KUBECTL" = 1 ] && pkgs="$pkgs kubectl=$(sid_version kubectl)"
	[ "$TA_ETCD" = sid ] && pkgs="$pkgs etcd-server=$(sid_version etcd-server)"
	log "downloading $gopkg ${gopkg%-go}-src + $(echo "$pkgs" | wc -w) packages from sid"
	# shellcheck disable=SC2086
	(cd "$TA_HOME/debs" && apt-get $opts download -q "$gopkg" "${gopkg%-go}-src" $pkgs >/dev/null)
	if [ "$TA_ETCD" = bookworm ]; then
		log "downloading etcd-server from the system's own (bookworm) sources"
		mkdir -p "$TA_HOME/debs-system"
		(cd "$TA_HOME/debs-system" && apt-get -o APT::Sandbox::User=root download -q etcd-server >/dev/null)
	fi
	log "download: $(since "$t")s, $(du -sh "$TA_HOME/debs" | cut -f1) of .debs"

	# 2. unpack (dpkg -x: no maintainer scripts, no dpkg database entry)
	t=$(now)
	local d
	for d in "$TA_HOME"/debs/*.deb; do
		case $(basename "$d") in
		kubectl_*) dpkg-deb -x "$d" "$TA_HOME/kubectl" ;;
		etcd-server_*) dpkg-deb -x "$d" "$TA_HOME/etcd" ;;
		*) dpkg-deb -x "$d" "$TA_HOME/root" ;;
		esac
	done
	if [ "$TA_ETCD" = bookworm ]; then
		for d in "$TA_HOME"/debs-system/etcd-server_*.deb; do dpkg-deb -x "$d" "$TA_HOME/etcd"; done
	fi
	log "unpack: $(since "$t")s, $(du -sh "$TA_HOME/root" | cut -f1) unpacked"

	# 3. build
	t=$(now)
	go_env
	local v ver ldflags
	v=$(dpkg-deb -f "$(ls "$TA_HOME"/debs/golang-k8s-apiextensions-apiserver-dev_*.deb | head -1)" Version)
	ver=${v%%-*}                          # 0.36.4
	ver=${ver%%+*}
	ver="v1.${ver#0.}"                    # v1.36.4 (library 0.X.Y <-> Kubernetes 1.X.Y)
	local V=k8s.io/component-base/version
	local maj=${ver#v}; maj=${maj%%.*}
	local min=${ver#v*.}; min=${min%%.*}
	ldflags="-s -w -X $V.gitVersion=$ver -X $V.gitMajor=$maj -X $V.gitMinor=$min -X $V.gitTreeState=clean"
	ldflags="$ldflags -X $V.gitCommit=debian-$v -X $V.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	cp "$HERE/main.go" "$HERE/core.go" "$TA_HOME/src/test-apiserver/"
	log "generating OpenAPI definitions for core.go's types (kube-openapi's openapi-gen)"
	go build -trimpath -o "$TA_HOME/bin/openapi-gen" k8s.io/kube-openapi/cmd/openapi-gen
	: >"$TA_HOME/src/boilerplate.go.txt"
	# --output-pkg .../main: the generated file is part of package main.
	# shellcheck disable=SC2086
	"$TA_HOME/bin/openapi-gen" --output-dir "$TA_HOME/src/test-apiserver" --output-pkg test-apiserver/main \
		--output-file zz_generated.openapi.go --go-header-file "$TA_HOME/src/boilerplate.go.txt" \
		--report-filename "$TA_HOME/src/openapi-api-rule-violations.txt" $OPENAPI_PKGS
	log "building test-apiserver $ver with $(go version | cut -d' ' -f3) (GOPATH mode)"
	(cd "$TA_HOME/src/test-apiserver" && go build -trimpath -ldflags="$ldflags" -o "$TA_HOME/bin/test-apiserver" .)
	if [ "$TA_BUILD_STOCK" = 1 ]; then
		(cd "$GOPATH/src/k8s.io/apiextensions-apiserver" &&
			go build -trimpath -ldflags="$ldflags" -o "$TA_HOME/bin/apiextensions-apiserver" .)
	fi
	log "build: $(since "$t")s, binary $(du -h "$TA_HOME/bin/test-apiserver" | cut -f1)"

	# 4. client PKI: a CA (also used as --client-ca-file) and an admin client
	#    cert in group system:masters. X.509 v3 is required (rustls rejects v1).
	if [ ! -s "$TA_HOME/pki/admin.crt" ]; then
		(
			cd "$TA_HOME/pki"
			openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
				-subj "/CN=test-apiserver-client-ca" 2>/dev/null
			openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
				-subj "/O=system:masters/CN=admin" 2>/dev/null
			printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >client.ext
			openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt \
				-days 3650 -extfile client.ext 2>/dev/null
		)
	fi
	log "build total: $(since "$t0")s"
}

# A hash of what the binary is built from: the Go sources and the package lists.
source_stamp() { { cat "$HERE/main.go" "$HERE/core.go"; echo "$MINIMAL_PKGS $OPENAPI_PKGS $TA_ETCD"; } | sha256sum | cut -d' ' -f1; }

cmd_ensure() {
	local want
	want=$(source_stamp)
	if [ -x "$TA_HOME/bin/test-apiserver" ] && [ -x "$(etcd_bin)" ] && [ -x "$TA_HOME/kubectl/usr/bin/kubectl" ] &&
		[ "$(cat "$TA_HOME/bin/stamp" 2>/dev/null)" = "$want" ]; then
		log "test-apiserver is up to date ($TA_HOME/bin)"
		return 0
	fi
	cmd_build
	echo "$want" >"$TA_HOME/bin/stamp"
}

etcd_bin() {
	case $TA_ETCD in
	bookworm | sid) echo "$TA_HOME/etcd/usr/bin/etcd" ;;
	*) echo "$TA_ETCD" ;;
	esac
}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

cmd_start() {
	local t0 t1 etcd i extra=()
	etcd=$(etcd_bin)
	[ -x "$TA_HOME/bin/test-apiserver" ] && [ -x "$etcd" ] || { log "run '$0 build' first"; exit 1; }
	if alive "$RUN/apiserver.pid" || alive "$RUN/etcd.pid"; then log "already running"; exit 1; fi
	local port
	for port in "$TA_API_PORT" "$TA_ETCD_PORT" "$TA_ETCD_PEER_PORT"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			log "port $port is in use (another test-apiserver? stop it with TA_RUN=<its run dir> $0 stop)"
			exit 1
		fi
	done
	[ "$TA_KEEP_DATA" = 1 ] || rm -rf "$RUN"
	mkdir -p "$RUN"
	t0=$(now)
	"$etcd" --help 2>&1 | grep -q -- '--unsafe-no-fsync' && extra+=(--unsafe-no-fsync)
	nohup "$etcd" --name test --data-dir "$RUN/etcd-data" \
		--listen-client-urls "http://127.0.0.1:$TA_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$TA_ETCD_PORT" \
		--listen-peer-urls "http://127.0.0.1:$TA_ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$TA_ETCD_PEER_PORT" \
		--initial-cluster "test=http://127.0.0.1:$TA_ETCD_PEER_PORT" --logger zap --log-level warn "${extra[@]}" \
		>"$RUN/etcd.log" 2>&1 </dev/null &
	echo $! >"$RUN/etcd.pid"
	for i in $(seq 1 300); do
		curl -sf "http://127.0.0.1:$TA_ETCD_PORT/health" >/dev/null 2>&1 && break
		alive "$RUN/etcd.pid" || { log "etcd died:"; tail -20 "$RUN/etcd.log" >&2; exit 1; }
		sleep 0.1
	done
	t1=$(now)
	start_apiserver
	# certs/apiserver.crt = self-signed serving cert + its CA (localhost, 127.0.0.1)
	write_kubeconfig "$RUN/kubeconfig" admin \
		"client-certificate-data: $(base64 -w0 "$TA_HOME/pki/admin.crt")" \
		"client-key-data: $(base64 -w0 "$TA_HOME/pki/admin.key")"
	# The same server, as the operator: its token instead of the admin's certificate.
	write_kubeconfig "$RUN/operator-kubeconfig" operator "token: $(cat "$RUN/operator-token")"
	log "etcd ready in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')s, apiserver ready in $(since "$t1")s" \
		"(pids $(cat "$RUN/etcd.pid") $(cat "$RUN/apiserver.pid")); KUBECONFIG=$RUN/kubeconfig"
}

# The identity the operator runs as in tests, as a Pod's service-account token would give it:
# a static token (the test API server has no token controller), and its requests in an audit log
# (what the least-privilege check of the install manifests compares RBAC with). No RBAC runs
# here, so the group system:masters lets it act.
OPERATOR_USER=system:serviceaccount:kubiya-system:kubiya-operator
operator_identity() {
	[ -s "$RUN/operator-token" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' >"$RUN/operator-token"
	printf '%s,%s,kubiya-operator-uid,"system:serviceaccounts,system:serviceaccounts:kubiya-system,system:authenticated,system:masters"\n' \
		"$(cat "$RUN/operator-token")" "$OPERATOR_USER" >"$RUN/tokens.csv"
	cat >"$RUN/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  users: ["$OPERATOR_USER"]
- level: None
EOF
}

# write_kubeconfig FILE USER CREDENTIAL-LINE... : a kubeconfig for this server, as USER.
write_kubeconfig() {
	local file=$1 user=$2 line
	shift 2
	{
		cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: test-apiserver
  cluster:
    server: https://127.0.0.1:$TA_API_PORT
    certificate-authority-data: $(base64 -w0 "$RUN/certs/apiserver.crt")
users:
- name: $user
  user:
EOF
		for line in "$@"; do echo "    $line"; done
		cat <<EOF
contexts:
- name: test-apiserver
  context: {cluster: test-apiserver, user: $user, namespace: default}
current-context: test-apiserver
EOF
	} >"$file"
}

# The API server process alone, on the running etcd.
start_apiserver() {
	local i auth=(--client-ca-file "$TA_HOME/pki/ca.crt" --token-auth-file "$RUN/tokens.csv"
		--audit-policy-file "$RUN/audit-policy.yaml" --audit-log-path "$RUN/audit.log" --audit-log-format json)
	[ "$TA_ANONYMOUS" = 1 ] && auth+=(--insecure-anonymous-admin)
	operator_identity
	# shellcheck disable=SC2086
	nohup "$TA_HOME/bin/test-apiserver" --etcd-servers "http://127.0.0.1:$TA_ETCD_PORT" \
		--bind-address 127.0.0.1 --secure-port "$TA_API_PORT" --cert-dir "$RUN/certs" "${auth[@]}" $TA_ARGS \
		>>"$RUN/apiserver.log" 2>&1 </dev/null &
	echo $! >"$RUN/apiserver.pid"
	for i in $(seq 1 600); do
		[ "$(curl -sk "https://127.0.0.1:$TA_API_PORT/readyz" 2>/dev/null)" = ok ] && break
		alive "$RUN/apiserver.pid" || { log "apiserver died:"; tail -20 "$RUN/apiserver.log" >&2; exit 1; }
		[ "$i" = 600 ] && { log "apiserver not ready after 60s"; exit 1; }
		sleep 0.1
	done
}

# Restart the API server and keep etcd (and so every object) running: what an operator sees
# during a control-plane upgrade of its cluster.
cmd_restart_apiserver() {
	alive "$RUN/etcd.pid" || { log "not running"; exit 1; }
	stop_pid "$RUN/apiserver.pid"
	start_apiserver
	log "apiserver restarted (pid $(cat "$RUN/apiserver.pid")), etcd kept"
}

stop_pid() {
	local f=$1 pid i
	alive "$f" || { rm -f "$f"; return 0; }
	pid=$(cat "$f")
	kill -TERM "$pid"
	for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
	rm -f "$f"
}

cmd_stop() {
	stop_pid "$RUN/apiserver.pid"
	stop_pid "$RUN/etcd.pid"
	[ "$TA_KEEP_DATA" = 1 ] || rm -rf "$RUN"
	log "stopped"
}

cmd_status() {
	local f
	for f in etcd apiserver; do
		if alive "$RUN/$f.pid"; then echo "$f: running, pid $(cat "$RUN/$f.pid")"; else echo "$f: not running"; fi
	done
	echo "readyz: $(curl -sk "https://127.0.0.1:$TA_API_PORT/readyz" 2>/dev/null || echo unreachable)"
}

cmd_smoke() {
	local S="https://127.0.0.1:$TA_API_PORT" C=(-sS --fail-with-body --cacert "$RUN/certs/apiserver.crt"
		--cert "$TA_HOME/pki/admin.crt" --key "$TA_HOME/pki/admin.key")
	local R=$S/apis/smoke.example.com/v1/namespaces/default/widgets i rv
	curl "${C[@]}" -o /dev/null -X POST -H 'Content-Type: application/json' \
		"$S/apis/apiextensions.k8s.io/v1/customresourcedefinitions" --data '{
  "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
  "metadata": {"name": "widgets.smoke.example.com"},
  "spec": {"group": "smoke.example.com", "scope": "Namespaced",
    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
    "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}},
      "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}],
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "required": ["size"], "properties": {"size": {"type": "integer", "minimum": 1}}},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}}}}}]}}'
	for i in $(seq 1 100); do
		curl "${C[@]}" "$S/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.smoke.example.com" |
			tr -d ' \n' | grep -q '"type":"Established","status":"True"' && break
		sleep 0.1
	done
	# With etcd 3.5 (consistent reads from the watch cache) a new resource answers
	# 429 "storage is (re)initializing" (Retry-After: 1) for about 0.1 s.
	for i in $(seq 1 50); do
		[ "$(curl -s "${C[@]:2}" -o /dev/null -w '%{http_code}' "$R")" = 200 ] && break
		sleep 0.1
	done
	rv=$(curl "${C[@]}" "$R" | sed -n 's/.*"resourceVersion": *"\([0-9]*\)".*/\1/p' | head -1)
	curl "${C[@]}" -N --max-time 5 "$R?watch=1&resourceVersion=$rv" >"$RUN/smoke-watch.json" 2>/dev/null &
	local wpid=$!
	curl "${C[@]}" -o /dev/null -X POST -H 'Content-Type: application/json' "$R" \
		--data '{"apiVersion":"smoke.example.com/v1","kind":"Widget","metadata":{"name":"w1","finalizers":["smoke.example.com/f"]},"spec":{"size":1}}'
	curl "${C[@]}" -o /dev/null -X PATCH -H 'Content-Type: application/merge-patch+json' "$R/w1/status" --data '{"status":{"phase":"Ready"}}'
	curl "${C[@]}" "$R/w1" | grep -q '"phase": *"Ready"' || { log "smoke: status not set"; return 1; }
	curl "${C[@]}" -o /dev/null -X DELETE "$R/w1"
	curl "${C[@]}" "$R/w1" | grep -q '"deletionTimestamp"' || { log "smoke: no deletionTimestamp"; return 1; }
	curl "${C[@]}" -o /dev/null -X PATCH -H 'Content-Type: application/merge-patch+json' "$R/w1" --data '{"metadata":{"finalizers":null}}'
	[ "$(curl -s -o /dev/null -w '%{http_code}' "${C[@]:1}" "$R/w1")" = 404 ] || { log "smoke: not deleted"; return 1; }
	wait $wpid || true
	local events
	events=$(tr -d ' \n' <"$RUN/smoke-watch.json" | grep -o '"type":"[A-Z]*"' | cut -d'"' -f4 | tr '\n' ' ')
	curl "${C[@]}" -o /dev/null -X DELETE "$S/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.smoke.example.com"
	case $events in "ADDED MODIFIED MODIFIED"*"DELETED"*) ;; *) log "smoke: unexpected watch events: $events"; return 1 ;; esac
	log "smoke OK (watch events: $events)"
	if curl "${C[@]}" "$S/api/v1" | grep -q '"secrets"'; then smoke_builtin; else log "built-in APIs not served, skipped"; fi
}

# Built-in APIs of core.go, curl only.
smoke_builtin() {
	local S="https://127.0.0.1:$TA_API_PORT" C=(-sS --fail-with-body --cacert "$RUN/certs/apiserver.crt"
		--cert "$TA_HOME/pki/admin.crt" --key "$TA_HOME/pki/admin.key")
	local P=(-s "${C[@]:2}") # for status codes: no --fail-with-body
	local J=(-H 'Content-Type: application/json') M=(-H 'Content-Type: application/merge-patch+json')
	local NS=smoke-builtin
	local N=$S/api/v1/namespaces/$NS i uid rv code events now
	curl "${C[@]}" -o /dev/null "$S/api/v1/namespaces/default" # created at startup
	curl "${C[@]}" -o /dev/null -X POST "${J[@]}" "$S/api/v1/namespaces" --data "{\"metadata\":{\"name\":\"$NS\"}}"
	# the owner: a ConfigMap, created by server-side apply
	uid=$(curl "${C[@]}" -X PATCH -H 'Content-Type: application/apply-patch+yaml' "$N/configmaps/owner?fieldManager=smoke" \
		--data $'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owner}\ndata: {k: v}' |
		sed -n 's/.*"uid": *"\([^"]*\)".*/\1/p' | head -1)
	rv=$(curl "${C[@]}" "$N/secrets" | sed -n 's/.*"resourceVersion": *"\([0-9]*\)".*/\1/p' | head -1)
	curl "${C[@]}" -N --max-time 4 "$N/secrets?watch=1&resourceVersion=$rv" >"$RUN/smoke-watch-secrets.json" 2>/dev/null &
	local wpid=$!
	curl "${C[@]}" -o /dev/null -X POST "${J[@]}" "$N/secrets" --data "{\"metadata\":{\"name\":\"token\",
		\"ownerReferences\":[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"name\":\"owner\",\"uid\":\"$uid\",\"controller\":true}]},
		\"stringData\":{\"token\":\"s3cr3t\"}}"
	curl "${C[@]}" "$N/secrets/token" | tr -d ' \n' | grep -q "\"token\":\"czNjcjN0\".*\"type\":\"Opaque\"" || { log "smoke: secret data/type"; return 1; }
	curl "${C[@]}" "$N/secrets/token" | tr -d ' \n' | grep -q "\"ownerReferences\":\[{[^]]*\"uid\":\"$uid\"" || { log "smoke: ownerReferences"; return 1; }
	curl "${C[@]}" -o /dev/null -X PATCH "${M[@]}" "$N/secrets/token" --data '{"metadata":{"labels":{"rotated":"yes"}}}'
	curl "${C[@]}" -o /dev/null -X DELETE "$N/secrets/token"
	wait $wpid || true
	events=$(tr -d ' \n' <"$RUN/smoke-watch-secrets.json" | grep -o '"type":"[A-Z]*"' | cut -d'"' -f4 | tr '\n' ' ')
	case $events in "ADDED MODIFIED DELETED"*) ;; *) log "smoke: unexpected secret watch events: $events"; return 1 ;; esac
	# Lease: create, then an update with a stale resourceVersion must get 409
	curl "${C[@]}" -o /dev/null -X POST "${J[@]}" "$S/apis/coordination.k8s.io/v1/namespaces/$NS/leases" \
		--data '{"metadata":{"name":"leader"},"spec":{"holderIdentity":"a","leaseDurationSeconds":15}}'
	curl "${C[@]}" -o /dev/null -X PATCH "${M[@]}" "$S/apis/coordination.k8s.io/v1/namespaces/$NS/leases/leader" --data '{"spec":{"holderIdentity":"b"}}'
	code=$(curl "${P[@]}" -o /dev/null -w '%{http_code}' -X PUT "${J[@]}" "$S/apis/coordination.k8s.io/v1/namespaces/$NS/leases/leader" \
		--data '{"metadata":{"name":"leader","resourceVersion":"1"},"spec":{"holderIdentity":"c"}}')
	[ "$code" = 409 ] || { log "smoke: stale lease update gave $code, not 409"; return 1; }
	# events.k8s.io/v1 Event, read back through core/v1
	now=$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)
	curl "${C[@]}" -o /dev/null -X POST "${J[@]}" "$S/apis/events.k8s.io/v1/namespaces/$NS/events" --data "{\"metadata\":{\"name\":\"ev1\"},
		\"eventTime\":\"$now\",\"reportingController\":\"example.com/smoke\",\"reportingInstance\":\"smoke-0\",\"action\":\"Test\",
		\"reason\":\"Smoke\",\"type\":\"Normal\",\"note\":\"hello\",\"regarding\":{\"kind\":\"ConfigMap\",\"namespace\":\"$NS\",\"name\":\"owner\"}}"
	curl "${C[@]}" "$N/events?fieldSelector=involvedObject.name=owner" | tr -d ' \n' | grep -q '"message":"hello"' || { log "smoke: core/v1 view of event"; return 1; }
	# namespace deletion: Terminating, content removed, then gone
	curl "${C[@]}" -X DELETE "$N" | tr -d ' \n' | grep -q '"phase":"Terminating"' || { log "smoke: namespace not Terminating"; return 1; }
	code=
	for i in $(seq 1 100); do
		code=$(curl "${P[@]}" -o /dev/null -w '%{http_code}' "$N")
		[ "$code" = 404 ] && break
		sleep 0.1
	done
	[ "$code" = 404 ] || { log "smoke: namespace not deleted"; return 1; }
	curl "${P[@]}" "$N/configmaps" | grep -q '"name": *"owner"' && { log "smoke: content left"; return 1; }
	log "smoke built-in APIs OK (secret watch events: $events)"
}

case ${1:-} in
ensure) cmd_ensure ;;
build) cmd_build ;;
smoke) cmd_smoke ;;
start) cmd_start ;;
restart-apiserver) cmd_restart_apiserver ;;
stop) cmd_stop ;;
status) cmd_status ;;
env) echo "export KUBECONFIG=$RUN/kubeconfig" ;;
kubectl) echo "$TA_HOME/kubectl/usr/bin/kubectl" ;;
all) cmd_ensure && cmd_start ;;
clean) cmd_stop || true; rm -rf "$TA_HOME" ;;
*) sed -n '2,45p' "$0"; exit 2 ;;
esac
