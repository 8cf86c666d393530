#!/usr/bin/env bash
# The GPU check: one command on a machine with an NVIDIA GPU (sm_80 or later) and its driver.
#
#   scripts/gpu-check.sh [OUT_DIR]            (default: target/gpu-check)
#
# It needs a bitnetc built with `--features cuda` (the LLVM backend, to compile the fixtures and the
# 2b4t preset for the device, and the CUDA runtime): $BITNETC if set, else .gpu/bitnetc.xz (a
# prebuilt binary, for GPU machines without a Rust toolchain; `scripts/gpu-check.sh --pack` makes
# it here), else it builds one with cargo (LLVM 22 from Debian: see the README). Then
# scripts/gpu_check.py runs the parity checks of every model fixture against the CPU backend and
# the 2b4t benchmark, and writes OUT_DIR/gpu.md and gpu.json. Exit status 0 when every parity
# check passes.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--pack" ]; then
  # Build the binary the GPU machine runs, stripped and compressed (under the 64 MiB a call carries).
  cargo build --release --locked --features cuda
  mkdir -p .gpu
  strip -o .gpu/bitnetc target/release/bitnetc
  xz -T0 -6 -f .gpu/bitnetc
  # The shared libraries it links that a GPU image may lack (used only if missing there).
  mkdir -p .gpu/lib
  for l in libffi.so.8 libzstd.so.1; do
    cp -L "$(ldd target/release/bitnetc | awk -v l="$l" '$1 == l {print $3}')" .gpu/lib/
  done
  ls -la .gpu/bitnetc.xz .gpu/lib
  exit 0
fi

out=${1:-target/gpu-check}
mkdir -p "$out"
start=$(date +%s)

bin=${BITNETC:-}
if [ -z "$bin" ] && [ -f .gpu/bitnetc.xz ]; then
  mkdir -p /tmp/bitnetc-gpu
  bin=/tmp/bitnetc-gpu/bitnetc
  if command -v xz >/dev/null; then
    xz -dc .gpu/bitnetc.xz > "$bin"
  else
    python3 -c 'import lzma, sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' .gpu/bitnetc.xz > "$bin"
  fi
  chmod +x "$bin"
  if ldd "$bin" | grep -q 'not found' && [ -d .gpu/lib ]; then
    # Only bitnetc sees the carried libraries (a wrapper), not Python or the driver's tools.
    printf '#!/bin/sh\nLD_LIBRARY_PATH=%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} exec %s "$@"\n' \
      "$PWD/.gpu/lib" /tmp/bitnetc-gpu/bitnetc > /tmp/bitnetc-gpu/bitnetc-run
    chmod +x /tmp/bitnetc-gpu/bitnetc-run
    bin=/tmp/bitnetc-gpu/bitnetc-run
  fi
fi
if [ -z "$bin" ]; then
  cargo build --release --locked --features cuda
  bin=$PWD/target/release/bitnetc
fi
echo "bitnetc: $bin ($("$bin" --version))"

# cudarc opens libcuda.so; some driver installs have only libcuda.so.1.
if ! ldconfig -p 2>/dev/null | grep -q 'libcuda\.so '; then
  so1=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 / {print $NF; exit}')
  for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu /usr/lib64; do
    [ -z "$so1" ] && [ -e "$d/libcuda.so.1" ] && so1=$d/libcuda.so.1
  done
  if [ -n "$so1" ]; then
    mkdir -p /tmp/bitnetc-gpu/lib
    ln -sf "$so1" /tmp/bitnetc-gpu/lib/libcuda.so
    export LD_LIBRARY_PATH=/tmp/bitnetc-gpu/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true

# The preset checkpoint goes to the cache folder; keep it inside OUT's machine, not the report.
export XDG_CACHE_HOME=${XDG_CACHE_HOME:-/tmp/bitnetc-gpu/cache}
status=0
PYTHONUNBUFFERED=1 python3 scripts/gpu_check.py --bin "$bin" --out "$out" "${@:2}" || status=$?
echo "gpu-check: $(( $(date +%s) - start )) s, exit $status"
exit $status
