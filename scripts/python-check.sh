#!/usr/bin/env bash
# The Python package's check (CI runs it, bounded, from .ci/run): a wheel built with maturin (from a
# virtual environment under target/ made once) from python/, outside the workspace but in the same
# target folder; installed in a fresh virtual environment with NumPy and pytest (PyPI), where
# python/tests run against it (the tokens compared with `bitnetc run`'s, which must be built:
# `cargo build`). Cold, it builds python/'s dependencies again (about 13 min on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=target/maturin-venv
if [ ! -x "$tools/bin/maturin" ]; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/pip" install --quiet 'maturin==1.16.0'
fi
pytarget="${CARGO_TARGET_DIR:-$PWD/target}"
cargo fmt --manifest-path python/Cargo.toml --check
CARGO_TARGET_DIR="$pytarget" cargo clippy --manifest-path python/Cargo.toml --all-targets --locked -- -D warnings
rm -rf target/wheels target/python-venv
(cd python && CARGO_TARGET_DIR="$pytarget" "../$tools/bin/maturin" build --locked --profile dev --out ../target/wheels)
python3 -m venv target/python-venv
target/python-venv/bin/pip install --quiet 'numpy==2.4.6' 'pytest==9.2.0' target/wheels/bitnetc-*.whl
BITNETC_BIN="${CARGO_TARGET_DIR:-target}/debug/bitnetc" target/python-venv/bin/python -m pytest -q python/tests
