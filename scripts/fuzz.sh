#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a while (not part of CI: it
# needs the nightly toolchain and takes long). Usage:
#   bash scripts/fuzz.sh [seconds per target, default 600] [target ...]
# Prints each target's executions and whether it found a crash; a crash
# leaves its input under fuzz/artifacts/<target>/ and makes the script
# exit non-zero. The corpora grow under fuzz/corpus/<target>/.
set -uo pipefail
cd "$(dirname "$0")/.."

secs="${1:-600}"
shift || true
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 2
fi
if ! command -v cargo-fuzz >/dev/null; then
  cargo install --locked cargo-fuzz || exit 2
fi
# The fuzz crate is its own workspace: resolve it with the versions the
# main crate is tested with (a fresh resolution picks a newer k8s-openapi
# beside ours, which then has no Kubernetes version feature and fails).
cp Cargo.lock fuzz/Cargo.lock
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi

failed=0
summary=()
for t in "${targets[@]}"; do
  log="fuzz/artifacts/$t.log"
  mkdir -p fuzz/artifacts "fuzz/corpus/$t"
  echo "== $t: ${secs}s"
  cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -print_final_stats=1 \
    >"$log" 2>&1
  rc=$?
  execs=$(grep -m1 '^stat::number_of_executed_units' "$log" | awk '{print $2}')
  if [ "$rc" -eq 0 ]; then
    verdict="no crash"
  else
    verdict="FAILED (rc $rc, see $log and fuzz/artifacts/$t/)"
    failed=1
  fi
  summary+=("$t: ${execs:-?} executions in ${secs}s, $verdict")
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
