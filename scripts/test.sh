#!/usr/bin/env bash
# Install what the tests need, then run the whole test suite (as root, the privileged tests run
# for real: mounts, namespaces, cgroups). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
# The integration tests drive the example binaries (berth, berth-runc, berthd, demo): build them
# first, so a test never runs against a stale or missing binary.
cargo build --workspace --all-features --examples
# The shipping build of run-bundle (static-pie, see scripts/build-dist.sh), which
# tests/run_bundle.rs checks is self-contained and runs containers.
bash scripts/build-dist.sh run-bundle >/dev/null
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --all-features --no-fail-fast "$@"
