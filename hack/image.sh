#!/usr/bin/env bash
# The operator's image, built with podman from the Dockerfile's `prebuilt` target: the binary of
# `cargo build --release --locked` on this machine, on a runtime base image (make image).
#
#   IMAGE=localhost/kubiya-operator:dev   the image to build (the default)
#   BASE_IMAGE=                           the runtime base: empty for the Dockerfile's default,
#                                         gcr.io/distroless/cc-debian12:nonroot (pulled);
#                                         `local` for the same content assembled here from
#                                         Debian 12 packages (no image registry needed: what
#                                         tests/pods/run.sh uses); or any image reference
#
# The binary links glibc dynamically; the base has Debian 12's glibc 2.36, so build on Debian 12.
# `local` downloads the .debs with the system's apt sources (which must be Debian 12's) and caches
# the assembled base under ~/.cache/kubiya-operator/image-base. Run as root (rootful podman).
# Prints the image's name and size on the last line.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
IMAGE=${IMAGE:-localhost/kubiya-operator:dev}
BASE_IMAGE=${BASE_IMAGE:-}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/kubiya-operator/image-base
export CONTAINERS_CONF=$ROOT/hack/containers.conf

log() { printf '[image] %s\n' "$*" >&2; }
WORK=
trap '[ -z "$WORK" ] || rm -rf "$WORK"' EXIT

# What gcr.io/distroless/cc-debian12 holds (its static, base and cc layers): glibc, libgcc,
# libstdc++, libgomp, libssl3, CA certificates, tzdata, netbase, os-release, /tmp, and the users
# root, nobody and nonroot (65532).
BASE_PKGS="libc6 libgcc-s1 libstdc++6 libgomp1 libssl3 ca-certificates netbase tzdata base-files"
# Bump when the assembly below changes, so that a cached base is not reused.
BASE_RECIPE=1

# The candidate version of each package, from the system's apt lists.
base_versions() {
	local p v
	for p in $BASE_PKGS; do
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
	stamp=$({ echo "recipe $BASE_RECIPE $(dpkg --print-architecture)"; echo "$versions"; } | sha256sum | cut -c1-12)
	name=localhost/kubiya-operator-base:debian12-$stamp
	tarball=$CACHE/debian12-$stamp.tar
	BASE_REF=$name
	podman image exists "$name" && return
	if [ ! -s "$tarball" ]; then
		assemble_base "$versions" "$tarball"
	fi
	log "importing $tarball as $name"
	podman import --quiet --change 'USER 65532:65532' --change 'WORKDIR /home/nonroot' \
		--change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		"$tarball" "$name" >/dev/null
}

# The root file system: the packages' files (unpacked, no maintainer scripts run: none of them
# needs one beyond the CA bundle made here), the users, a sorted tar owned by root.
assemble_base() {
	local versions=$1 tarball=$2 work rootfs deb pkgs
	work=$(mktemp -d)
	WORK=$work
	rootfs=$work/rootfs
	mkdir -p "$work/debs" "$rootfs"
	mapfile -t pkgs <<<"$versions"
	log "downloading ${pkgs[*]}"
	(cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}" >/dev/null)
	for deb in "$work"/debs/*.deb; do
		case $deb in
		*/base-files_*) dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$rootfs" ./etc/os-release ./usr/lib/os-release ;;
		*) dpkg-deb -x "$deb" "$rootfs" ;;
		esac
	done
	# Documentation is not needed at run time (distroless keeps only the copyright files).
	rm -rf "$rootfs"/usr/share/doc/*/changelog* "$rootfs"/usr/share/man "$rootfs"/usr/share/lintian "$rootfs"/usr/share/info
	# update-ca-certificates' bundle, without running it.
	mkdir -p "$rootfs/etc/ssl/certs"
	find "$rootfs/usr/share/ca-certificates" -name '*.crt' | LC_ALL=C sort | xargs cat >"$rootfs/etc/ssl/certs/ca-certificates.crt"
	cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
	cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
	echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
	mkdir -p "$rootfs/tmp" "$rootfs/root" "$rootfs/home/nonroot"
	chmod 1777 "$rootfs/tmp"
	chmod 700 "$rootfs/root" "$rootfs/home/nonroot"
	chown -R 0:0 "$rootfs"
	chown 65532:65532 "$rootfs/home/nonroot"
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
log "building the operator (cargo build --release --locked)"
cargo build --release --locked
# The build context is the binary alone (what .dockerignore lets through for `--target prebuilt`),
# wherever CARGO_TARGET_DIR puts it.
WORK=$(mktemp -d)
mkdir -p "$WORK/target/release"
cp "${CARGO_TARGET_DIR:-target}/release/kubiya-operator" "$WORK/target/release/"
log "building $IMAGE${BASE_IMAGE:+ on ${BASE_REF:-$BASE_IMAGE}}"
podman build --quiet --target prebuilt "${build_args[@]}" \
	--build-arg "VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)" \
	--build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
	-f Dockerfile -t "$IMAGE" "$WORK" >/dev/null
echo "$IMAGE $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1 / 1e6}')"
