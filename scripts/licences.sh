#!/usr/bin/env bash
# Dependency licences (CI runs it from .ci/run): cargo-deny, pinned and installed once under
# target/tools (crates.io; about 2 min cold on 2 cores), checks every crate the workspace and the
# Python package build against deny.toml's allow list, offline (the crates are already fetched by
# the build). Writes cargo-deny's JSON lines to OUT (default target/licences.json), the file
# `bitnetc compliance --licences` reads; exits non-zero when a licence is not allowed.
# Usage: scripts/licences.sh [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/licences.json}
version=0.20.2
deny=target/tools/bin/cargo-deny
if [ ! -x "$deny" ] || [ "$("$deny" --version)" != "cargo-deny $version" ]; then
  cargo install cargo-deny --version "$version" --locked --root target/tools
fi
mkdir -p "$(dirname "$out")"
rm -f "$out.tmp"
rc=0
for manifest in Cargo.toml python/Cargo.toml; do
  cargo fetch --locked --manifest-path "$manifest" >/dev/null
  "$deny" --offline --manifest-path "$manifest" --config deny.toml --format json check licenses \
    2>>"$out.tmp" || rc=$?
done
mv "$out.tmp" "$out"
grep '"type":"summary"' "$out" || true
exit "$rc"
