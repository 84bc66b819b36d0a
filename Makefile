# Entry points; the scripts they call say more.
.PHONY: demo demo-stop test pod-test image worker-image conformance conformance-bless bench bench-queues bench-connections bench-hostile bench-isolation mutants lint crd

## Run the operator end to end on the local test bed, with the examples (leaves it running).
demo:
	bash hack/demo.sh up

## Stop what `make demo` started.
demo-stop:
	bash hack/demo.sh down

## Run the whole test suite (unit + end-to-end on the local test API server).
test:
	bash tests/run.sh

## Run the shipped install as Pods: the image, and the kustomize base's and the Helm chart's
## Deployment played with podman (two replicas, a hand-over), and one workers' Deployment the
## operator renders, on the worker image built here; needs root, installs podman and runc.
pod-test:
	bash tests/pods/run.sh

## Build the image with podman: the release binary on BASE_IMAGE (empty: the distroless base of the
## Dockerfile; `local`: the same content assembled here from Debian 12 packages).
IMAGE ?= localhost/kubiya-operator:dev
BASE_IMAGE ?=
image:
	IMAGE='$(IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' bash hack/image.sh

## Build the worker image (deploy/worker/Containerfile: the PyPI worker) with podman, on BASE_IMAGE
## (empty: the Containerfile's python:3.11-slim; `local`: Debian 12's Python assembled here).
WORKER_IMAGE ?= localhost/kubiya-worker:dev
worker-image:
	IMAGE='$(WORKER_IMAGE)' BASE_IMAGE='$(BASE_IMAGE)' bash hack/worker-image.sh

## Check the emulator against the real control-plane server, and the operator end to end with it
## (installs PostgreSQL from Debian and the server into a cached venv of about 1.1 GB).
conformance:
	bash tests/conformance.sh

## Re-record tests/conformance/real-server.json from the real server.
conformance-bless:
	CONFORMANCE_BLESS=1 bash tests/conformance.sh

## Load benchmark: N Environments at once (default 1000; N=10000 for the large run), then a
## restart of the operator over one (short) resync interval.
N ?= 1000
bench:
	bash hack/bench.sh --n $(N) --resync 3m --restart

## Queues benchmark: N Environments with 3 WorkerQueues each, applied at once.
bench-queues:
	bash hack/bench.sh --phase queues --n $(N) --out .bench/queues.json

## Connections benchmark: N Connections, each with its own key Secret; API-server requests at steady state.
bench-connections:
	bash hack/bench.sh --phase connections --n $(N) --steady-secs 60 --out .bench/connections.json

## Hostile-input benchmark: N Environments at a time, then with a tenant's 200 labelled 1 MB
## Secrets, then with every control-plane answer at 15.9 MiB: the operator's peak RSS at each.
bench-hostile:
	bash hack/bench.sh --phase hostile --n $(N) --out .bench/hostile.json

## Isolation benchmark: N Environments over three connections, then again with one control plane hanging.
bench-isolation:
	bash hack/bench.sh --phase isolation --n $(N) --out .bench/isolation.json

## Mutation testing of the pure modules (.cargo/mutants.toml says which): lists the mutants no unit
## test catches. Needs cargo-mutants (cargo install cargo-mutants --locked); takes a while.
mutants:
	command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
	CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0 cargo mutants --no-shuffle -o .mutants

## Formatting and lints, as CI runs them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --features e2e --locked -- -D warnings

## Regenerate the CRDs from the Rust types, and their copies in the kustomize base and the Helm chart.
CRDS = environment connection clusterconnection workerqueue
crd:
	for c in $(CRDS); do \
		cargo run --quiet --locked -- crd $$c.yaml > crds/$$c.yaml && \
		cp crds/$$c.yaml deploy/kustomize/base/$$c-crd.yaml && \
		cp crds/$$c.yaml deploy/helm/kubiya-operator/crds/$$c.yaml || exit 1; \
	done
