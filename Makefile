# Entry points; the scripts they call say more.
.PHONY: demo demo-stop test lint crd

## Run the operator end to end on the local test bed, with the examples (leaves it running).
demo:
	bash hack/demo.sh up

## Stop what `make demo` started.
demo-stop:
	bash hack/demo.sh down

## Run the whole test suite (unit + end-to-end on the local test API server).
test:
	bash tests/run.sh

## Formatting and lints, as CI runs them.
lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets --locked -- -D warnings

## Regenerate the CRD from the Rust types.
crd:
	cargo run --quiet --locked -- crd > crds/environment.yaml
