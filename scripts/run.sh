#!/usr/bin/env bash
# The README's "run" command: builds the release binary and runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
if [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
cargo build --locked --release
exec target/release/l2lb lab "$@"
