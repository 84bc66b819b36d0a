#!/usr/bin/env bash
# The whole test suite: unit tests, then end-to-end tests of the operator binary against a
# fresh test API server (started here, stopped on exit) and the in-process control-plane emulator.
#
#   tests/run.sh [cargo test args...]      e.g. tests/run.sh --test e2e delete
#
# The end-to-end tests are built only with the cargo feature `e2e`, which this script turns on.
#
# The test API server runs on its own ports and state directory, beside a `make demo` one.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

export TA_HOME=${TA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/test-apiserver}
export TA_RUN=${TA_RUN:-$TA_HOME/run-tests}
export TA_API_PORT=${TA_TEST_API_PORT:-16543} TA_ETCD_PORT=${TA_TEST_ETCD_PORT:-12479} TA_ETCD_PEER_PORT=${TA_TEST_ETCD_PEER_PORT:-12480}
APISERVER="bash $ROOT/tests/cluster/apiserver.sh"

# The Argo CD health check is tested with a real Lua interpreter. Installed here when missing (as
# root); a lock another apt or dpkg process holds is waited for up to 2 minutes. If that fails,
# stop now: without it, the end-to-end tests of the health check fail much later.
if ! command -v lua5.4 >/dev/null; then
	if [ "$(id -u)" != 0 ]; then
		echo "tests/run.sh: lua5.4 is needed by the tests: sudo apt-get install lua5.4" >&2
		exit 1
	fi
	apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=120 "$@"; }
	if ! apt_get update -qq; then
		echo "tests/run.sh: 'apt-get update' failed (see above), so lua5.4, which the tests need, could not be installed." >&2
		echo "  If another apt or dpkg process holds its lock, wait for it to finish and run this again;" >&2
		echo "  or install lua5.4 yourself (apt-get install lua5.4)." >&2
		exit 1
	fi
	if ! apt_get install -y -q lua5.4 >/dev/null; then
		echo "tests/run.sh: 'apt-get install lua5.4' failed (see above); the tests need lua5.4." >&2
		echo "  If another apt or dpkg process holds its lock, wait for it to finish and run this again;" >&2
		echo "  or install lua5.4 yourself (apt-get install lua5.4)." >&2
		exit 1
	fi
	if ! command -v lua5.4 >/dev/null; then
		echo "tests/run.sh: apt-get installed lua5.4, but there is no lua5.4 on PATH ($PATH)." >&2
		echo "  Install it by hand so that \`lua5.4\` runs (Debian package lua5.4), then run this again." >&2
		exit 1
	fi
fi
$APISERVER ensure

# The install tests render the Helm chart with helm and check the alert rules with promtool, both
# fetched and cached by tests/tools.sh.
KUBIYA_TEST_HELM=$(bash "$ROOT/tests/tools.sh" helm)
KUBIYA_TEST_PROMTOOL=$(bash "$ROOT/tests/tools.sh" promtool)
export KUBIYA_TEST_HELM KUBIYA_TEST_PROMTOOL
KUBIYA_TEST_KUBECTL=$($APISERVER kubectl)
export KUBIYA_TEST_KUBECTL
$APISERVER stop >/dev/null 2>&1 || true # a run that was killed may have left one behind
trap '$APISERVER stop >/dev/null 2>&1 || true' EXIT
$APISERVER start

export KUBIYA_TEST_KUBECONFIG=$TA_RUN/kubeconfig
cargo test --workspace --locked --features e2e "$@"
# Least privilege, both ways: the RBAC of the install paths against every request the suite's
# operators made (the test API server audits their identity). Only after a whole run: a
# filtered one does less than the RBAC grants.
if [ $# -eq 0 ]; then
	KUBIYA_TEST_AUDIT_LOG=$TA_RUN/audit.log cargo test --locked --features e2e --test e2e -- \
		--ignored --exact install::rbac_grants_exactly_what_the_suite_used
fi
