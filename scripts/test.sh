#!/usr/bin/env bash
# The whole test suite: installs what the tests need, then format check,
# clippy, and every test (unit, property, API-server, network-namespace) in
# release mode, because the network tests measure real timings.
# Needs root for the network-namespace tests; set L2LB_REQUIRE_NETNS=1 to
# make them fail instead of skip when namespaces are unavailable.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
if [ -f "$HOME/.cargo/env" ]; then
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== manifest validators"
bash scripts/validate-manifests.sh
echo "== cargo test (release)"
cargo test --locked --release --all-targets --no-fail-fast
