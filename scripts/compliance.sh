#!/usr/bin/env bash
# The compliance report CI keeps (run from .ci/run after the evidence steps): the hf-tiny fixture
# compiled into an artifact, then `bitnetc compliance` on it (hashes, a byte-identical rebuild from
# the fixture, the audit log's chain, the malformed-input corpus, the source scans) with whatever
# evidence this CI run produced: the fuzz smoke's summary, cargo-deny's licence check, the coverage
# summary (a file that is missing is a check not run, and not counted). Writes
# target/compliance/report.{md,json}; exits 1 when the level (default standard) is not met.
# Usage: scripts/compliance.sh [LEVEL]
set -euo pipefail
cd "$(dirname "$0")/.."
level=${1:-standard}
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
bin="$target_dir/debug/bitnetc"
out="$target_dir/compliance"
rm -rf "$out"
mkdir -p "$out"
# An instrumented binary (left by scripts/coverage.sh) writes its counters there, not here.
export LLVM_PROFILE_FILE="$target_dir/coverage/prof/after-%m.profraw"
log="$out/audit.jsonl"
"$bin" --audit-log "$log" compile tests/fixtures/hf-tiny/packed -o "$out/hf-tiny.bnx" >/dev/null
evidence=()
for pair in "fuzz:$target_dir/fuzz-summary.json" "licences:$target_dir/licences.json" \
  "coverage:$target_dir/coverage/summary.json"; do
  if [ -f "${pair#*:}" ]; then evidence+=("--${pair%%:*}" "${pair#*:}"); fi
done
rc=0
"$bin" --audit-log "$log" compliance "$out/hf-tiny.bnx" --model tests/fixtures/hf-tiny/packed \
  --level "$level" "${evidence[@]}" --json >"$out/report.json" || rc=$?
"$bin" --audit-log "$log" compliance "$out/hf-tiny.bnx" --model tests/fixtures/hf-tiny/packed \
  --level "$level" "${evidence[@]}" --md >"$out/report.md" || true
cat "$out/report.md"
echo "compliance: report in $out/report.md and $out/report.json (exit $rc)"
exit "$rc"
