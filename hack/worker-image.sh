#!/usr/bin/env bash
# The worker image, built with podman from deploy/worker/Containerfile: the Python worker of PyPI's
# kubiya-control-plane-api, pinned (what a WorkerQueue's spec.workers runs by default).
#
#   IMAGE=localhost/kubiya-worker:dev   the image to build (the default)
#   BASE_IMAGE=                         the Containerfile's base: empty for its default,
#                                       python:3.11-slim (pulled); `local` for Debian 12's Python
#                                       3.11 and pip assembled here from Debian packages (no image
#                                       registry needed: what tests/pods/run.sh uses); or any image
#
# The build installs the worker from PyPI (`podman build --network host`). `local` downloads the
# .debs with the system's apt sources (which must be Debian 12's), caches the assembled base
# under ~/.cache/kubiya-operator/image-base, and gives the build this machine's CA bundle (pip's
# index may sit behind a proxy with its own CA): a base for local builds only. Run as root.
# Prints the image's name and size on the last line.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
IMAGE=${IMAGE:-localhost/kubiya-worker:dev}
BASE_IMAGE=${BASE_IMAGE:-}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/image-base
export CONTAINERS_CONF=$ROOT/hack/containers.conf

log() { printf '[worker-image] %s\n' "$*" >&2; }
WORK=
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

# What python:3.11-slim gives the Containerfile: python and pip, and the libraries the worker's
# wheels link (OpenSSL, libffi, SQLite, ...). The closure of Debian's packages, less what only
# maintainer scripts use (perl, debconf, dpkg), which are never run here.
ROOTS="python3.11 python3-pip dash ca-certificates netbase tzdata base-files"
SKIP='^(perl|perl-base|perl-modules-.*|libperl.*|debconf|cdebconf|dpkg|install-info|libdebian-installer4|libnewt.*|libslang2|libtextwrap1|tar|python3-pip-whl|python3-setuptools-whl)$'
# Bump when the assembly below changes, so that a cached base is not reused.
BASE_RECIPE=1

# The candidate version of each package of the closure, from the system's apt lists.
base_versions() {
	local p v
	# shellcheck disable=SC2086
	apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
		--no-enhances $ROOTS 2>/dev/null | grep -v '^[ <]' | sort -u | grep -Ev "$SKIP" |
		while read -r p; do
			v=$(apt-cache show --no-all-versions "$p" 2>/dev/null | sed -n 's/^Version: //p' | head -1)
			[ -n "$v" ] || return 1
			echo "$p=$v"
		done
}

# Sets BASE_REF to the local base image, assembling and importing it unless it exists.
local_base() {
	if ! (. /etc/os-release && [ "$ID" = debian ] && [ "$VERSION_ID" = 12 ]); then
		log "BASE_IMAGE=local assembles the base from this system's apt sources: it needs Debian 12"
		exit 1
	fi
	local versions stamp name tarball
	versions=$(base_versions) || { apt-get update -qq; versions=$(base_versions); }
	[ -n "$versions" ] || { log "no Python 3.11 packages in this system's apt lists"; exit 1; }
	stamp=$({ echo "worker recipe $BASE_RECIPE $(dpkg --print-architecture)"; echo "$versions"; } | sha256sum | cut -c1-12)
	name=localhost/kubiya-worker-base:debian12-$stamp
	tarball=$CACHE/worker-debian12-$stamp.tar
	BASE_REF=$name
	podman image exists "$name" && return
	[ -s "$tarball" ] || assemble_base "$versions" "$tarball"
	log "importing $tarball as $name"
	podman import --quiet --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' --change 'ENV HOME=/tmp' \
		--change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' "$tarball" "$name" >/dev/null
}

# The root file system: the packages' files (unpacked: no maintainer scripts), `python` and `pip`
# as the Python image names them, pip allowed to install beside Debian's packages (the image is
# the Python environment: PEP 668's marker goes), this machine's CA bundle.
assemble_base() {
	local versions=$1 tarball=$2 work rootfs deb pkgs
	work=$(mktemp -d)
	WORK=$work
	rootfs=$work/rootfs
	mkdir -p "$work/debs" "$rootfs"
	mapfile -t pkgs <<<"$versions"
	log "downloading ${#pkgs[@]} packages (Python 3.11, pip and their libraries)"
	(cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}" >/dev/null)
	for deb in "$work"/debs/*.deb; do
		case $deb in
		*/base-files_*) dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$rootfs" ./etc/os-release ./usr/lib/os-release ;;
		*) dpkg-deb -x "$deb" "$rootfs" ;;
		esac
	done
	rm -rf "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/lintian "$rootfs"/usr/share/info
	rm -f "$rootfs"/usr/lib/python3.11/EXTERNALLY-MANAGED
	mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
	ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python"
	ln -sf /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
	printf '#!/bin/sh\nexec /usr/bin/python3.11 -m pip "$@"\n' >"$rootfs/usr/local/bin/pip"
	chmod 755 "$rootfs/usr/local/bin/pip"
	[ -e "$rootfs/bin" ] || ln -s usr/bin "$rootfs/bin"
	# The shell of the build's RUN (dash's maintainer script would make the link).
	[ -e "$rootfs/bin/sh" ] || ln -s dash "$rootfs/bin/sh"
	[ -e "$rootfs/lib" ] || ln -s usr/lib "$rootfs/lib"
	[ -e "$rootfs/lib64" ] || ln -s usr/lib64 "$rootfs/lib64"
	cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
	echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
	chmod 1777 "$rootfs/tmp"
	chown -R 0:0 "$rootfs"
	mkdir -p "$CACHE"
	tar --numeric-owner --sort=name --mtime=@0 -C "$rootfs" -cf "$tarball.tmp" .
	mv "$tarball.tmp" "$tarball"
	rm -rf "$work"
	WORK=
	log "assembled $tarball ($(du -h "$tarball" | cut -f1))"
}

command -v podman >/dev/null || { log "podman not found: apt-get install podman runc"; exit 1; }
build_args=()
case $BASE_IMAGE in
'') ;;
local)
	local_base
	build_args+=(--build-arg "BASE_IMAGE=$BASE_REF")
	;;
*) build_args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE") ;;
esac
log "building $IMAGE${BASE_IMAGE:+ on ${BASE_REF:-$BASE_IMAGE}} (pip install from PyPI)"
t0=$(date +%s)
podman build --quiet --network host "${build_args[@]}" -f deploy/worker/Containerfile -t "$IMAGE" deploy/worker >/dev/null
log "built in $(($(date +%s) - t0)) s"
echo "$IMAGE $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1 / 1e6}')"
