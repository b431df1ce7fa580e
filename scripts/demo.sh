#!/usr/bin/env bash
# Install what berth needs, then run the demo: build a busybox image from the host's
# busybox-static, import it, unpack it, run a container in it and print its metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo run --release --example demo -- "$@"
