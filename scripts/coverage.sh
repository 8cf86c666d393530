#!/usr/bin/env bash
# Line coverage of the test suite (`cargo test --workspace`), measured with rustc's source-based
# coverage (`-C instrument-coverage`) and the toolchain's own llvm-profdata / llvm-cov (rustup's
# llvm-tools component, added when missing). Only the workspace's crates are instrumented
# (RUSTC_WORKSPACE_WRAPPER), so dependencies keep their ordinary builds in target/ and are not
# rebuilt; every process the tests start (the `bitnetc` binary included) writes its counters under
# target/coverage/prof. Writes target/coverage/summary.json (llvm-cov's JSON summary, the format
# `bitnetc compliance --coverage` reads) and prints the totals. Counted: the workspace's own
# sources (not dependencies, not the standard library, not tests/ or benches/).
# Usage: scripts/coverage.sh [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/coverage/summary.json}
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
sysroot=$(rustc --print sysroot)
host=$(rustc -vV | sed -n 's/^host: //p')
tools="$sysroot/lib/rustlib/$host/bin"
if [ ! -x "$tools/llvm-cov" ] && ! rustup component add llvm-tools; then
  # Without rustup's component, Debian's LLVM of the same major version reads rustc's profiles
  # (CI installs llvm-22 for the CUDA backend); without either, coverage is not measured, which
  # `bitnetc compliance` then reports as a check not run.
  major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
  tools="/usr/lib/llvm-$major/bin"
  if [ ! -x "$tools/llvm-cov" ] || [ ! -x "$tools/llvm-profdata" ]; then
    echo "coverage: not measured: neither rustup's llvm-tools nor $tools/llvm-cov is available"
    exit 0
  fi
fi

prof="$target_dir/coverage/prof"
rm -rf "$prof"
mkdir -p "$prof" "$(dirname "$out")"
wrapper="$target_dir/coverage/rustc-instrumented"
printf '#!/bin/sh\n# rustc for the workspace crates under coverage (scripts/coverage.sh)\nexec "$@" -C instrument-coverage\n' >"$wrapper"
chmod +x "$wrapper"

# The test executables this build made, from cargo's JSON messages.
export RUSTC_WORKSPACE_WRAPPER="$wrapper"
# %m: one file per binary, merged in place across processes (%4m: a pool of four), so hundreds
# of test processes do not write hundreds of files.
export LLVM_PROFILE_FILE="$prof/%4m.profraw"
cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    try: m = json.loads(line)
    except ValueError: continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m.get("profile", {}).get("test"):
        print(m["executable"])' >"$target_dir/coverage/objects"
cargo test --workspace --locked
echo "$target_dir/debug/bitnetc" >>"$target_dir/coverage/objects"

"$tools/llvm-profdata" merge -sparse "$prof"/*.profraw -o "$target_dir/coverage/merged.profdata"
objects=()
while read -r o; do objects+=(--object "$o"); done <"$target_dir/coverage/objects"
ignore='/\.cargo/|/rustc/|^/usr/|/tests/|/benches/|/target/'
"$tools/llvm-cov" export -summary-only -instr-profile "$target_dir/coverage/merged.profdata" \
  -ignore-filename-regex="$ignore" "${objects[@]}" >"$out.tmp"
mv "$out.tmp" "$out"
"$tools/llvm-cov" report -summary-only -instr-profile "$target_dir/coverage/merged.profdata" \
  -ignore-filename-regex="$ignore" "${objects[@]}" | tail -1
python3 -c 'import json,sys
t = json.load(open(sys.argv[1]))["data"][0]["totals"]["lines"]
c, n, p = t["covered"], t["count"], t["percent"]
print(f"coverage: {c} of {n} lines = {p:.1f} % -> {sys.argv[1]}")' "$out"
