# syntax=docker/dockerfile:1
# The kubiya-operator image (BuildKit, the default builder of current Docker).
#
#   docker build -t kubiya-operator .
#       compiles the operator in a Rust container.
#   cargo build --release --locked && docker build --target prebuilt -t kubiya-operator .
#       packages the target/release/kubiya-operator already built on this machine instead. The
#       binary links glibc dynamically and the image is Debian 12 (glibc 2.36): build it on
#       Debian 12 or on a system with an older glibc.
#   --build-arg BASE_IMAGE=...
#       another runtime base with the same content (glibc, libgcc, CA certificates, user 65532):
#       `make image BASE_IMAGE=local` (hack/image.sh) assembles one from Debian 12's packages, as
#       the pod tests do where no image registry is reachable.

ARG BASE_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY emulator emulator
COPY bench bench
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/kubiya-operator /kubiya-operator

FROM ${BASE_IMAGE} AS runtime
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="kubiya-operator" \
      org.opencontainers.image.description="Kubernetes operator that makes Kubiya control-plane Environments declarative" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/kubiya-operator"]
CMD ["run"]

FROM runtime AS prebuilt
COPY target/release/kubiya-operator /kubiya-operator

# The default target: the binary compiled in the build stage.
FROM runtime
COPY --from=build /kubiya-operator /kubiya-operator
