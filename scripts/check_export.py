#!/usr/bin/env python3
"""Checks `bitnetc export` against the reference readers (not run by tests; needs torch,
transformers, gguf-py, safetensors and numpy):

- the exported HF folder loads in transformers' BitNetForCausalLM (in the config's dtype); its
  logits on the fixture's prompt are compared with transformers' on the source (identical for a
  packed source), with bitnetc's (reference interpreter, optimized pipeline) on the export and on
  the source, and its greedy tokens with `bitnetc run --greedy`;
- the exported GGUF TQ2_0 file is read by gguf-py (metadata, tensor types and shapes), every
  projection dequantized by gguf-py and compared with the HF export's unpacked ternary values times
  its weight_scale rounded to f16 (TQ2_0's block scale); norms and embedding bit for bit;
- the I2_S file: gguf-py does not know bitnet.cpp's type 36, so its header is read with
  gguf-py's reader when it can, else the check says so.

Usage: scripts/check_export.py --bitnetc target/debug/bitnetc [--model tests/fixtures/hf-tiny/packed]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

PROMPT = [1, 17, 100, 5, 99, 3, 250, 42]


def sh(args):
    env = dict(os.environ, BITNETC_AUDIT_LOG="off")
    r = subprocess.run(args, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"{' '.join(args)}: {r.stderr}")
    return r.stdout


def bitnetc_logits(bitnetc, model, out):
    sh([bitnetc, "logits", model, "--tokens", ",".join(map(str, PROMPT)), "-O", "-o", out])
    return np.load(out)


def unpack(packed, out_rows):
    """transformers' 2-bit unpacking: W[r + k·R, c] = ((p[r, c] >> 2k) & 3) - 1."""
    r = packed.shape[0]
    w = np.zeros((4 * r, packed.shape[1]), dtype=np.int8)
    for k in range(4):
        w[k * r:(k + 1) * r] = ((packed >> (2 * k)) & 3).astype(np.int8) - 1
    return w[:out_rows]


def check_hf(args, hf, work):
    import torch
    from transformers import AutoModelForCausalLM

    def load(path):
        m = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        m.eval()
        return m

    model = load(hf)
    with torch.no_grad():
        ids = torch.tensor([PROMPT])
        ref = model(ids).logits.float().numpy()
        gen = model.generate(ids, max_new_tokens=12, do_sample=False)[0, len(PROMPT):].tolist()
        # transformers reads HF sources only.
        src_ref = None if args.model.endswith(".gguf") else load(args.model)(ids).logits.float().numpy()
    ours = bitnetc_logits(args.bitnetc, hf, os.path.join(work, "hf.npy"))
    src = bitnetc_logits(args.bitnetc, args.model, os.path.join(work, "src.npy"))
    run = json.loads(sh([args.bitnetc, "run", hf, "--tokens", ",".join(map(str, PROMPT)),
                         "--greedy", "-n", "12", "--json"]))
    print(f"hf: transformers loads {type(model).__name__}; "
          f"max |logits(transformers) - logits(bitnetc)| = {np.abs(ref - ours).max():.3g} "
          f"({np.abs(ref - ours).max() / np.abs(ref).max():.2g} of max|logit|); "
          f"same top-1 at every position: {bool((ref.argmax(-1) == ours.argmax(-1)).all())}")
    if src_ref is not None:
        with open(os.path.join(args.model, "config.json")) as fh:
            form = json.load(fh)["quantization_config"]
        same = "identical" if np.array_equal(ref, src_ref) else "max diff %.3g" % np.abs(ref - src_ref).max()
        print(f"hf: transformers' logits of the export vs of the source: {same} (the source's form: {form})")
    else:
        print(f"hf: max |logits(transformers, export) - logits(bitnetc, GGUF source)| = {np.abs(ref - src).max():.3g}")
    print(f"hf: bitnetc logits of the export equal the source's bit for bit: {np.array_equal(ours, src)}")
    print(f"hf: greedy tokens transformers {gen} vs bitnetc {run['tokens']}: "
          f"{'equal' if gen == run['tokens'] else 'DIFFERENT'}")
    # The export is faithful when transformers computes the same on it as on the source (packed
    # sources), or, for an online source (transformers ternarizes in torch's f32, bitnetc as its
    # interpreter does), when the greedy tokens agree.
    return (src_ref is not None and np.array_equal(ref, src_ref)) or gen == run["tokens"]


def check_gguf(args, hf, gguf_path, work):
    import gguf
    from safetensors.torch import load_file

    st = {k: (v.float() if v.is_floating_point() else v).numpy()
          for k, v in load_file(os.path.join(hf, "model.safetensors")).items()}
    with open(os.path.join(hf, "config.json")) as fh:
        bitlinear = json.load(fh)["quantization_config"]["linear_class"] == "bitlinear"
    r = gguf.GGUFReader(gguf_path)
    f = r.fields
    arch = bytes(f["general.architecture"].parts[-1]).decode()
    print(f"gguf: gguf-py reads {gguf_path}: architecture {arch}, {len(r.tensors)} tensors, "
          f"{len(f)} keys, {len(f['tokenizer.ggml.tokens'].data) if 'tokenizer.ggml.tokens' in f else 0} tokens")
    roles = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj"}
    norms = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm"}
    bad = 0
    for t in r.tensors:
        deq = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            want = st["model.embed_tokens.weight"].astype(np.float32)
        elif t.name == "output_norm.weight":
            want = st["model.norm.weight"].astype(np.float32)
        elif parts[2] in roles:
            pre = f"model.layers.{parts[1]}.{roles[parts[2]]}"
            w = unpack(st[pre + ".weight"], deq.shape[0]).astype(np.float32)
            s = st[pre + ".weight_scale"].astype(np.float32)[0]
            if bitlinear:  # the scale is 1/γ
                s = np.float32(1.0) / s
            g = np.float16(s).astype(np.float32)
            want = w * g
        else:
            want = st[f"model.layers.{parts[1]}.{norms[parts[2]]}.weight"].astype(np.float32)
        if not np.array_equal(deq, want):
            bad += 1
            print(f"gguf: {t.name} ({t.tensor_type.name}) differs: max {np.abs(deq - want).max():.3g}")
    print(f"gguf: every tensor dequantized by gguf-py equals the HF export's (ternary × f16(γ) for "
          f"TQ2_0, floats bit for bit): {bad == 0}")
    return bad == 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bitnetc", required=True)
    p.add_argument("--model", default="tests/fixtures/hf-tiny/packed")
    p.add_argument("--skip-hf", action="store_true", help="skip the transformers check")
    a = p.parse_args()
    folder = os.path.dirname(a.model) if a.model.endswith(".gguf") else a.model
    ref_json = os.path.join(folder, "reference.json")
    if os.path.isfile(ref_json):
        # The fixture's own prompt, on which the repository checks bitnetc against transformers.
        with open(ref_json) as fh:
            PROMPT[:] = json.load(fh)["prompt_ids"]
    work = tempfile.mkdtemp(prefix="check-export-")
    hf = os.path.join(work, "hf")
    tq = os.path.join(work, "m-tq2_0.gguf")
    i2 = os.path.join(work, "m-i2_s.gguf")
    sh([a.bitnetc, "export", a.model, "-o", hf, "--format", "hf"])
    sh([a.bitnetc, "export", a.model, "-o", tq, "--format", "gguf"])
    sh([a.bitnetc, "export", a.model, "-o", i2, "--format", "gguf", "--gguf-type", "i2_s"])
    ok = True
    if not a.skip_hf:
        ok &= check_hf(a, hf, work)
    ok &= check_gguf(a, hf, tq, work) if not a.model.endswith(".gguf") else True
    try:
        import gguf
        gguf.GGUFReader(i2)
        print("gguf: gguf-py reads the I2_S file")
    except Exception as e:  # gguf-py has no type 36 (bitnet.cpp's I2_S).
        print(f"gguf: gguf-py cannot read the I2_S file ({type(e).__name__}: {e}); bitnetc re-imports it (tests/export.rs)")
    print("OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
