#!/usr/bin/env bash
# Install what the tests need, then run the whole test suite (as root, the privileged tests run
# for real: mounts, namespaces, cgroups). Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo test --workspace --all-features "$@"
