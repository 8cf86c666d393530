#!/bin/bash
# Quantize the F16 synthetic GGUF (make_synth_bitnet_gguf.py) into the peers' formats.
#   REFS   peer trees (default: refs); MODELS GGUF folder (default: $REFS/models)
set -euo pipefail
REFS=${REFS:-refs}
MODELS=${MODELS:-$REFS/models}
UPQ=$REFS/llama.cpp/build/bin/llama-quantize     # upstream llama.cpp
FQ=$REFS/BitNet/build/bin/llama-quantize         # microsoft/BitNet's llama.cpp fork
IKQ=$REFS/ik_llama.cpp/build/bin/llama-quantize   # ik_llama.cpp
F16=$MODELS/synth-2b4t-f16.gguf
T=${QUANT_THREADS:-2}
[ -f $MODELS/synth-2b4t-tq2_0.gguf ] || $UPQ $F16 $MODELS/synth-2b4t-tq2_0.gguf TQ2_0 $T                 # token_embd -> Q6_K (default)
[ -f $MODELS/synth-2b4t-tq2_0-embf16.gguf ] || $UPQ --token-embedding-type f16 $F16 $MODELS/synth-2b4t-tq2_0-embf16.gguf TQ2_0 $T
[ -f $MODELS/synth-2b4t-tq2_0-embq8.gguf ] || $UPQ --token-embedding-type q8_0 $F16 $MODELS/synth-2b4t-tq2_0-embq8.gguf TQ2_0 $T
if [ -x $FQ ]; then   # optional: microsoft/BitNet's fork for I2_S
  [ -f $MODELS/synth-2b4t-i2_s.gguf ] || $FQ $F16 $MODELS/synth-2b4t-i2_s.gguf I2_S 1                    # token_embd stays F16
fi
if [ -x $IKQ ]; then   # optional: ik_llama.cpp's IQ2_BN (bench it with -rtr 1)
  [ -f $MODELS/synth-2b4t-iq2_bn.gguf ] || $IKQ --token-embedding-type q6_k $F16 $MODELS/synth-2b4t-iq2_bn.gguf IQ2_BN $T
fi
if [ -n "${WITH_TQ1:-}" ]; then
  [ -f $MODELS/synth-2b4t-tq1_0.gguf ] || $UPQ $F16 $MODELS/synth-2b4t-tq1_0.gguf TQ1_0 $T
fi
ls -l $MODELS
