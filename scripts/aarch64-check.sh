#!/usr/bin/env bash
# The AArch64 check (CI runs it, bounded, from .ci/run): the workspace's library code type-checked
# for aarch64-unknown-linux-gnu (`cargo check`, clippy's lints as errors), then the runtime's
# micro-kernel tests (`native::`: the NEON variants with and without the dot product against the
# portable kernels, bit for bit) cross-built and run under qemu-user, once on a CPU with the dot
# product (qemu's `max`) and once on a Cortex-A72 (NEON without it). Installs what is missing: the
# pinned toolchain's aarch64 standard library (rustup), and Debian's cross linker, C library and
# qemu-user. About 4 min cold on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
if ! rustup target list --toolchain "$toolchain" --installed | grep -qx "$target"; then
  rustup target add --toolchain "$toolchain" "$target"
fi
pkgs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"
# shellcheck disable=SC2086
installed=$(dpkg-query -W -f='${Status}\n' $pkgs 2>/dev/null | grep -c '^install ok installed$' || true)
if [ "$installed" -ne 3 ]; then
  apt-get update -qq
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs >/dev/null
fi
cargo clippy --locked --target "$target" -p bitnet-runtime -p bitnet-backends --lib -- -D warnings
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
for cpu in max cortex-a72; do
  echo "aarch64-check: runtime micro-kernels under qemu-aarch64 -cpu $cpu"
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -cpu $cpu -L /usr/aarch64-linux-gnu" \
    cargo test --locked --target "$target" -p bitnet-runtime --lib native:: -- --nocapture 2>&1 |
    grep -E '^test |skipped|test result'
done
