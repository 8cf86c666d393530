#!/usr/bin/env bash
# Cross-checks an I2_S GGUF written by `bitnetc export` against ik_llama.cpp, an independent reader
# of bitnet.cpp's I2_S layout and of the `bitnet-b1.58` architecture (relu², sub-norms, tied head).
# Not run by tests or CI: it needs an ik_llama.cpp build (llama-quantize, llama-perplexity,
# llama-simple) made on this machine (`../shared/perf/README.md` has the steps).
#
# Usage: scripts/check_export_ik.sh IK_BUILD_DIR MODEL [BITNETC]
#   MODEL: anything `bitnetc export` reads (a trained folder from `bitnetc train`, an HF folder).
#
# ik_llama.cpp's runtime has no I2_S matmul (its `vec_dot` is empty, and its row dequantizer reads
# the per-tensor scale after each row), so the file is first converted by ik's own llama-quantize,
# which dequantizes I2_S as a whole tensor, to F32; that F32 file's perplexity and greedy text are
# compared with bitnetc's on the I2_S file itself. ik computes in f32 without int8 activations, so
# its perplexity is compared with the `reference` (full-precision) row of `bitnetc validate`.
set -euo pipefail
ik=${1:?usage: scripts/check_export_ik.sh IK_BUILD_DIR MODEL [BITNETC]}
model=${2:?usage: scripts/check_export_ik.sh IK_BUILD_DIR MODEL [BITNETC]}
bitnetc=${3:-target/release/bitnetc}
ik=$(cd "$ik" && pwd)
text=$(pwd)/data/kjv-genesis.txt
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export LD_LIBRARY_PATH="$ik/bin:$ik/src:$ik/ggml/src${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# ik's tools write llama.log into the folder they run in: run them in the scratch folder.
in_work() { (cd "$work" && "$@"); }

"$bitnetc" export "$model" -o "$work/i2s.gguf" --format gguf --gguf-type i2_s --audit-log off
in_work "$ik/bin/llama-quantize" --allow-requantize "$work/i2s.gguf" "$work/f32.gguf" F32 >"$work/quantize.log" 2>&1

echo "== perplexity of $text, windows of 64 tokens (second halves scored), 40 windows"
in_work "$ik/bin/llama-perplexity" -m "$work/f32.gguf" -f "$text" -c 64 --chunks 40 -t 2 2>&1 |
    grep 'Final estimate' | sed 's/^/ik_llama.cpp (F32 from the I2_S file): /'
"$bitnetc" validate "$work/i2s.gguf" --text "$text" --window 64 --windows 40 --audit-log off 2>&1 |
    awk '/^(model|reference) / && $NF ~ /^[0-9.]+$/ {print "bitnetc " $1 ": PPL " $NF}' ||
    true # validate's gates (speed, size) are not this check's business

# Greedy text can part where bitnetc's int8 activations and ik's f32 ones meet a near-tie.
for prompt in "In the beginning" "Abram went up out of Egypt" "And the LORD"; do
    echo "== greedy continuation of \"$prompt\""
    in_work "$ik/bin/llama-simple" -m "$work/f32.gguf" -n 24 -p "$prompt" 2>&1 |
        grep -F "$prompt" | tail -1 | sed 's/^/ik_llama.cpp: /'
    echo "bitnetc:      $prompt$("$bitnetc" run "$work/i2s.gguf" --prompt "$prompt" -n 20 \
        --temperature 0 --audit-log off 2>/dev/null | head -1)"
done
