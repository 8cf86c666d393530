#!/usr/bin/env bash
# The C example end to end, as CI runs it: builds libbitnetc_runtime.a and the bitnetc binary,
# compiles the hf-tiny fixture to an artifact with `bitnetc compile`, builds generate.c against
# capi/include/bitnetc.h and the static library with AddressSanitizer (LeakSanitizer on), runs it
# on the artifact, and checks that it prints the greedy tokens `bitnetc run --json` prints.
# Needs only the system C compiler (`cc`, gcc or clang; CC overrides it).
set -euo pipefail
cd "$(dirname "$0")/../.."
target=${CARGO_TARGET_DIR:-target}
cc=${CC:-cc}
prompt="Return a new sorted list from the items in iterable."
n=16

# Two builds: target flags apply to every package named, so `-p bitnetc-capi --bin bitnetc` would
# not build (nor place) the library.
cargo build --locked -p bitnetc-capi --lib
cargo build --locked -p bitnetc --bin bitnetc
work="$target/c-example"
rm -rf "$work"
mkdir -p "$work"
"$target/debug/bitnetc" compile tests/fixtures/hf-tiny/packed -o "$work/hf-tiny.bnx" >/dev/null

# bitnetc run's greedy tokens, from its JSON ("tokens":[…]).
expected=$("$target/debug/bitnetc" run "$work/hf-tiny.bnx" --prompt "$prompt" -n "$n" --json 2>/dev/null |
  grep -o '"tokens":\[[0-9,]*\]' | sed 's/.*\[\(.*\)\]/\1/; s/,/ /g')

# The system libraries a Rust static library needs on Linux.
"$cc" -std=c11 -Wall -Wextra -Werror -g -O1 -fsanitize=address -fno-omit-frame-pointer \
  -I capi/include examples/c/generate.c "$target/debug/libbitnetc_runtime.a" \
  -lpthread -ldl -lm -lrt -o "$work/generate"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 "$work/generate" "$work/hf-tiny.bnx" "$prompt" "$n" \
  >"$work/out.txt"
got=$(sed -n 's/^tokens: *//p' "$work/out.txt")
cat "$work/out.txt"
if [ "$got" != "$expected" ]; then
  echo "C example tokens [$got] differ from bitnetc run's [$expected]" >&2
  exit 1
fi
echo "C example: the same $(wc -w <<<"$got") greedy tokens as bitnetc run, no ASan/LSan report"
