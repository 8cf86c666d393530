#!/usr/bin/env bash
# Compiles every bundled model fixture with a given bitnetc binary into a folder, so two builds of the
# compiler can be compared byte for byte (`cmp`): the artifact-determinism check of a refactor.
#
#   scripts/compile_fixtures.sh BITNETC OUT_DIR          CPU artifacts, --head-dtype auto, f16, i8
#   scripts/compile_fixtures.sh BITNETC OUT_DIR --cuda   CUDA artifacts for sm_80 and sm_90
#                                                        (a bitnetc built with --features cuda)
# Then: for f in A/*.bnx; do cmp "$f" "B/$(basename "$f")"; done
set -euo pipefail
bin=$(realpath "$1")
out=$(realpath -m "$2")
mode=${3:-cpu}
cd "$(dirname "$0")/.."
mkdir -p "$out"
export BITNETC_AUDIT_LOG=off
for model in tests/fixtures/hf-tiny/online tests/fixtures/hf-tiny/packed \
  tests/fixtures/hf-tiny/packed_bitlinear tests/fixtures/gguf-tiny/*.gguf; do
  name=$(basename "$model" .gguf)
  if [ "$mode" = --cuda ]; then
    variants="sm_80 sm_90"
  else
    variants="auto f16 i8"
  fi
  for v in $variants; do
    artifact="$out/$name-$v.bnx"
    rm -f "$artifact"
    if [ "$mode" = --cuda ]; then
      "$bin" compile "$model" -o "$artifact" --target cuda --cuda-arch "$v" > /dev/null
    else
      "$bin" compile "$model" -o "$artifact" --head-dtype "$v" > /dev/null
    fi
  done
done
ls "$out"/*.bnx | wc -l
