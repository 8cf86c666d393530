#!/usr/bin/env bash
# Runs bitnetc's cargo-fuzz targets (fuzz/) one after another and writes a campaign summary that
# `bitnetc compliance --fuzz FILE` reads.
#
#   scripts/fuzz.sh (--runs N | --seconds S) [--summary FILE] [--timeout S] [TARGET...]
#
# --runs N       each target runs N executions (libFuzzer -runs=N, seeds included)
# --seconds S    each target runs S seconds (-max_total_time=S); one of the two is required
# --summary FILE where the JSON summary goes (default fuzz/summary.json)
# --timeout S    one input running longer than S seconds is a finding (-timeout; default 20)
# TARGET...      the targets to run (default: every target `cargo fuzz list` names)
#
# Each target reads fuzz/seeds/<target> and grows fuzz/corpus/<target> (git-ignored); findings go
# to fuzz/artifacts/<target> (git-ignored); the log of each run is fuzz/target/logs/<target>.log.
# Summary: {"targets": {name: {"runs", "crashes", "exec_per_sec", "cov", "ft", "corpus_files",
# "corpus_bytes", "new_units", "peak_rss_mb", "seconds", "exit", "flags"}}, "date", "machine",
# "budget", "toolchain", "cargo_fuzz"}. "crashes" counts every crash-/timeout-/oom-/leak- file in
# fuzz/artifacts/<target>, old ones included: move them away once fixed (and kept as a regression
# test or seed). Exits 1 if any target has a crash or its run failed, 2 on bad usage.
# Needs nightly (`rustup toolchain install nightly --profile minimal`) and cargo-fuzz
# (`cargo +nightly install cargo-fuzz --locked`).
set -euo pipefail

usage() {
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

runs="" seconds="" timeout=20 targets=()
root="$(cd "$(dirname "$0")/.." && pwd)"
summary="$root/fuzz/summary.json"
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="${2:?--runs needs a count}"; shift 2 ;;
    --seconds) seconds="${2:?--seconds needs a number}"; shift 2 ;;
    --summary) summary="${2:?--summary needs a file}"; shift 2 ;;
    --timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; usage ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ -n "$runs" ] && [ -n "$seconds" ] || [ -z "$runs$seconds" ]; then
  echo "fuzz.sh: give exactly one of --runs N and --seconds S" >&2
  usage
fi
for n in "$runs" "$seconds" "$timeout"; do
  if [ -n "$n" ] && ! [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz.sh: '$n' is not a positive whole number" >&2
    exit 2
  fi
done
case "$summary" in /*) ;; *) summary="$PWD/$summary" ;; esac

cd "$root/fuzz"
# The fuzz crate is its own workspace, built with its own flags: keep it out of a shared target dir.
export CARGO_TARGET_DIR="$root/fuzz/target"
known=$(cargo +nightly fuzz list)
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets <<<"$known"
fi
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$known"; then
    echo "fuzz.sh: no target '$t' (targets: $(echo $known))" >&2
    exit 2
  fi
done

# Per-target libFuzzer flags (the input sizes the readers' seeds need; dictionaries where there are).
flags_for() {
  case "$1" in
    gguf|safetensors|onnx) echo "-max_len=65536" ;;
    hf_config) echo "-max_len=4096 -dict=dict/hf_config.dict" ;;
    npy) echo "-max_len=16384" ;;
    bir) echo "-max_len=16384 -dict=dict/bir.dict" ;;
    bnx) echo "-max_len=16384" ;;
    chat_template) echo "-max_len=20000 -detect_leaks=0" ;;
    *) echo "" ;;
  esac
}

# Build every target once (release with debug assertions and overflow checks, AddressSanitizer).
cargo +nightly fuzz build

json_str() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
num() { if [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then echo "$1"; else echo null; fi; }

mkdir -p target/logs
status=0
entries=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  read -r -a extra <<<"$(flags_for "$t")"
  if [ -n "$runs" ]; then budget=(-runs="$runs"); else budget=(-max_total_time="$seconds"); fi
  log="target/logs/$t.log"
  echo "== $t: ${budget[*]} ${extra[*]} (log: fuzz/$log)" >&2
  start=$(date +%s.%N)
  rc=0
  # A chat template can make a reference cycle (`{% set ns.n = ns %}`): minijinja's values are
  # reference counted, so rendering it leaks a few hundred bytes (fuzz/README.md). Not a finding:
  # leak checks are off for that target, per input (-detect_leaks=0) and at exit (ASAN_OPTIONS).
  envs=()
  if [ "$t" = chat_template ]; then envs=("ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"); fi
  env "${envs[@]}" cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    "${budget[@]}" "${extra[@]}" -print_final_stats=1 -timeout="$timeout" \
    -rss_limit_mb=4096 >"$log" 2>&1 || rc=$?
  end=$(date +%s.%N)
  wall=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  new_units=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  # libFuzzer's figure is whole executions per whole second (0 for a run under a second).
  if [ -n "$execs" ] && [ "${eps:-0}" = 0 ]; then
    eps=$(awk -v n="$execs" -v s="$wall" 'BEGIN { if (s > 0) printf "%d", n / s; else print 0 }')
  fi
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corpus_files=$(find "corpus/$t" -type f | wc -l)
  corpus_bytes=$(find "corpus/$t" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \
    -o -name 'leak-*' \) | wc -l)
  echo "   $t: exit $rc, ${execs:-?} runs, ${eps:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}," \
    "corpus $corpus_files files, crashes $crashes, ${wall} s" >&2
  if [ "$rc" -ne 0 ] || [ "$crashes" -ne 0 ] || [ -z "$execs" ]; then
    status=1
    tail -n 30 "$log" >&2
  fi
  entries+=("$(json_str "$t"): {\"runs\": $(num "${execs:-0}"), \"crashes\": $crashes, \
\"exec_per_sec\": $(num "$eps"), \"cov\": $(num "$cov"), \"ft\": $(num "$ft"), \
\"corpus_files\": $corpus_files, \"corpus_bytes\": $corpus_bytes, \"new_units\": $(num "$new_units"), \
\"peak_rss_mb\": $(num "$rss"), \"seconds\": $wall, \"exit\": $rc, \"flags\": $(json_str "${extra[*]}")}")
done

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo 2>/dev/null | head -1)
machine="$(uname -sm), $(nproc) cores, ${cpu:-unknown CPU}"
if [ -n "$runs" ]; then budget_json="{\"runs\": $runs}"; else budget_json="{\"seconds\": $seconds}"; fi
mkdir -p "$(dirname "$summary")"
{
  echo "{"
  echo "  \"date\": $(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)"),"
  echo "  \"machine\": $(json_str "$machine"),"
  echo "  \"toolchain\": $(json_str "$(rustc +nightly --version)"),"
  echo "  \"cargo_fuzz\": $(json_str "$(cargo +nightly fuzz --version)"),"
  echo "  \"budget\": $budget_json,"
  echo "  \"targets\": {"
  for i in "${!entries[@]}"; do
    sep=","; [ "$i" -eq $((${#entries[@]} - 1)) ] && sep=""
    echo "    ${entries[$i]}$sep"
  done
  echo "  }"
  echo "}"
} >"$summary"
echo "summary: $summary" >&2
exit "$status"
