#!/usr/bin/env python3
"""Writes the Hugging Face checkpoint folders of tests/malformed/hf, each broken in one way.

Every case derives from one tiny, self-consistent BitNet b1.58 checkpoint shaped like
tests/fixtures/hf-tiny/packed (BitNetForCausalLM, autobitlinear offline: 2-bit packed U8 projections
with a BF16 weight_scale, BF16 norms, tied embeddings) but shrunk to vocab 32, hidden 16, intermediate
32, 2 heads, 1 KV head, 1 layer, so that each folder is a few KB. `valid/` and `valid_sharded/` are
that checkpoint unbroken (single file and two shards); every other folder breaks one thing.

tests/hf_malformed.rs asserts that importing each broken folder (or, for `packed_code_3`, running it)
fails with an error naming the file and the key or tensor at fault, and that the valid ones import and
run. Deterministic, standard library only (the weights come from a fixed LCG, the safetensors files
are written by hand so that the broken ones can be exactly as broken as intended): re-running this
script rewrites the same bytes.

Usage: python3 scripts/make_malformed_hf.py
"""

import json
import os
import shutil
import struct

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "malformed", "hf")

VOCAB, HIDDEN, INTER, HEADS, KV_HEADS, LAYERS, MAX_POS = 32, 16, 32, 2, 1, 1, 16
HEAD_DIM = HIDDEN // HEADS

CONFIG = {
    "architectures": ["BitNetForCausalLM"],
    "attention_bias": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "relu2",
    "hidden_size": HIDDEN,
    "intermediate_size": INTER,
    "max_position_embeddings": MAX_POS,
    "model_type": "bitnet",
    "num_attention_heads": HEADS,
    "num_hidden_layers": LAYERS,
    "num_key_value_heads": KV_HEADS,
    "quantization_config": {
        "linear_class": "autobitlinear",
        "quant_method": "bitnet",
        "quantization_mode": "offline",
    },
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": VOCAB,
}


class Lcg:
    """A 64-bit linear congruential generator (Knuth's MMIX constants): the same numbers everywhere."""

    def __init__(self, seed):
        self.state = seed

    def next(self):
        self.state = (self.state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        return self.state >> 33

    def uniform(self, lo, hi):
        return lo + (hi - lo) * (self.next() / float(1 << 31))


def bf16(values):
    """BF16 bytes (float32 truncated to its high half)."""
    out = bytearray()
    for v in values:
        out += struct.pack("<I", struct.unpack("<I", struct.pack("<f", v))[0])[2:]
    return bytes(out)


class T:
    """A tensor as safetensors stores it: dtype name, shape, raw little-endian bytes."""

    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, list(shape), data


def tensors():
    """The tensors of the valid tiny checkpoint, by name (insertion order = file order)."""
    rng = Lcg(2024)
    t = {}

    def floats(name, shape, lo, hi):
        n = 1
        for d in shape:
            n *= d
        t[name] = T("BF16", shape, bf16(rng.uniform(lo, hi) for _ in range(n)))

    def packed(name, out, inp):
        # Codes 0, 1, 2 (ternary -1, 0, +1) in each of the four 2-bit fields; never 3.
        rows = (out + 3) // 4
        data = bytes(
            sum((rng.next() % 3) << (2 * k) for k in range(4)) for _ in range(rows * inp)
        )
        t[name + ".weight"] = T("U8", [rows, inp], data)
        floats(name + ".weight_scale", [1], 0.5, 1.5)

    floats("model.embed_tokens.weight", [VOCAB, HIDDEN], -1.0, 1.0)
    for layer in range(LAYERS):
        pre = f"model.layers.{layer}"
        floats(f"{pre}.input_layernorm.weight", [HIDDEN], 0.8, 1.2)
        floats(f"{pre}.post_attention_layernorm.weight", [HIDDEN], 0.8, 1.2)
        floats(f"{pre}.self_attn.attn_sub_norm.weight", [HEADS * HEAD_DIM], 0.8, 1.2)
        floats(f"{pre}.mlp.ffn_sub_norm.weight", [INTER], 0.8, 1.2)
        packed(f"{pre}.self_attn.q_proj", HEADS * HEAD_DIM, HIDDEN)
        packed(f"{pre}.self_attn.k_proj", KV_HEADS * HEAD_DIM, HIDDEN)
        packed(f"{pre}.self_attn.v_proj", KV_HEADS * HEAD_DIM, HIDDEN)
        packed(f"{pre}.self_attn.o_proj", HIDDEN, HEADS * HEAD_DIM)
        packed(f"{pre}.mlp.gate_proj", INTER, HIDDEN)
        packed(f"{pre}.mlp.up_proj", INTER, HIDDEN)
        packed(f"{pre}.mlp.down_proj", HIDDEN, INTER)
    floats("model.norm.weight", [HIDDEN], 0.8, 1.2)
    return t


def safetensors_bytes(ts):
    """A safetensors file: u64 header length, JSON header (space-padded to 8 bytes), data."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, t in ts.items():
        header[name] = {
            "dtype": t.dtype,
            "shape": t.shape,
            "data_offsets": [offset, offset + len(t.data)],
        }
        offset += len(t.data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t.data for t in ts.values())


def config_text(cfg):
    return json.dumps(cfg, indent=2) + "\n"


def write_case(name, files):
    """Writes folder `name` with `files` (file name -> bytes or str)."""
    d = os.path.join(OUT, name)
    os.makedirs(d)
    for fname, content in files.items():
        mode = "w" if isinstance(content, str) else "wb"
        with open(os.path.join(d, fname), mode) as f:
            f.write(content)


def with_config(**changes):
    """The valid config with top-level keys changed (value None deletes the key)."""
    cfg = json.loads(json.dumps(CONFIG))
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return config_text(cfg)


def changed(edit):
    """The valid tensors after `edit(dict)`, as a model.safetensors."""
    ts = tensors()
    edit(ts)
    return safetensors_bytes(ts)


SHARD1, SHARD2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"


def sharded(weight_map_edit=None, shard_edit=None):
    """The valid tensors split in two shards (embedding + norms, then projections) with an index."""
    ts = tensors()
    first = {n: t for n, t in ts.items() if not n.endswith("_proj.weight") and "_proj." not in n}
    second = {n: t for n, t in ts.items() if n not in first}
    weight_map = {n: SHARD1 for n in first}
    weight_map.update({n: SHARD2 for n in second})
    if shard_edit:
        shard_edit(first, second)
    if weight_map_edit:
        weight_map_edit(weight_map)
    size = sum(len(t.data) for t in ts.values())
    index = {"metadata": {"total_size": size}, "weight_map": dict(sorted(weight_map.items()))}
    return {
        SHARD1: safetensors_bytes(first),
        SHARD2: safetensors_bytes(second),
        INDEX: json.dumps(index, indent=2) + "\n",
    }


Q = "model.layers.0.self_attn.q_proj.weight"
SUB_NORM = "model.layers.0.self_attn.attn_sub_norm.weight"
NORM = "model.norm.weight"


def cases():
    """(folder, what is broken, files) for every case."""
    valid = safetensors_bytes(tensors())
    good = config_text(CONFIG)
    data_start = 8 + struct.unpack("<Q", valid[:8])[0]

    def cfg_case(name, why, text):
        return (name, why, {"config.json": text, "model.safetensors": valid})

    def st_case(name, why, st):
        return (name, why, {"config.json": good, "model.safetensors": st})

    def drop(name):
        return lambda ts: ts.pop(name)

    def put(name, t):
        return lambda ts: ts.__setitem__(name, t)

    def huge_shape(ts):
        ts[SUB_NORM].shape = [10**15, HEADS * HEAD_DIM]

    def code3(ts):
        q = ts[Q]
        q.data = b"\xff" + q.data[1:]

    def sh_case(name, why, **kw):
        files = sharded(**kw)
        files["config.json"] = good
        return (name, why, files)

    def outside(wm):
        wm[NORM] = "../outside.safetensors"

    def absolute(wm):
        wm[NORM] = "/outside.safetensors"

    def listed_not_in_shard(first, second):
        first.pop(NORM)

    def unlisted(wm):
        wm.pop(NORM)

    quant = dict(CONFIG["quantization_config"], linear_class="foo")
    header_too_long = struct.pack("<Q", len(valid) + 1000) + valid[8:]
    return [
        st_case("valid", "nothing: a tiny consistent checkpoint that imports and runs", valid),
        sh_case("valid_sharded", "nothing: `valid` in two shards with an index"),
        cfg_case("malformed_json", "config.json is not JSON (cut mid-list)", '{"architectures": ["BitNetForCausalLM"\n'),
        cfg_case("config_not_object", "config.json is a JSON array, not an object", "[1, 2, 3]\n"),
        cfg_case("missing_hidden_size", 'config.json has no "hidden_size"', with_config(hidden_size=None)),
        cfg_case("hidden_not_divisible_by_heads", "hidden_size 16 with 3 attention heads", with_config(num_attention_heads=3)),
        cfg_case("kv_heads_not_dividing_heads", "num_key_value_heads 3 with 2 attention heads", with_config(num_key_value_heads=3)),
        cfg_case("unsupported_architecture", 'architectures ["GPT2LMHeadModel"]', with_config(architectures=["GPT2LMHeadModel"])),
        cfg_case("unsupported_linear_class", 'quantization_config.linear_class "foo"', with_config(quantization_config=quant)),
        cfg_case("negative_hidden_size", "hidden_size -16", with_config(hidden_size=-16)),
        cfg_case("zero_attention_heads", "num_attention_heads 0", with_config(num_attention_heads=0)),
        cfg_case("huge_hidden_size", "hidden_size 1e12 (a float literal)", with_config(hidden_size=1e12)),
        cfg_case("huge_vocab_size", "vocab_size 2^40 (an integer above the 2^20 limit)", with_config(vocab_size=1 << 40)),
        cfg_case("rope_scaling_yarn", 'rope_scaling {"rope_type": "yarn", "factor": 4.0}', with_config(rope_scaling={"rope_type": "yarn", "factor": 4.0})),
        st_case("missing_tensor", "model.layers.0.mlp.down_proj.weight is absent", changed(drop("model.layers.0.mlp.down_proj.weight"))),
        st_case("extra_tensor", "an unexpected model.layers.1.input_layernorm.weight (the config has 1 layer)",
                changed(put("model.layers.1.input_layernorm.weight", T("BF16", [HIDDEN], bf16([1.0] * HIDDEN))))),
        st_case("packed_wrong_shape", "q_proj.weight is U8 [5, 16] (a packed [16, 16] is U8 [4, 16])",
                changed(put(Q, T("U8", [5, HIDDEN], bytes(5 * HIDDEN))))),
        st_case("packed_as_float", "q_proj.weight is BF16 [16, 16] (unpacked) in a packed checkpoint",
                changed(put(Q, T("BF16", [HIDDEN, HIDDEN], bf16([0.0] * HIDDEN * HIDDEN))))),
        st_case("norm_u8", "model.norm.weight is U8 [16]", changed(put(NORM, T("U8", [HIDDEN], bytes(HIDDEN))))),
        st_case("norm_f8", "model.norm.weight is F8_E4M3 [16], a dtype bitnetc does not read",
                changed(put(NORM, T("F8_E4M3", [HIDDEN], bytes(HIDDEN))))),
        st_case("huge_tensor_shape", "attn_sub_norm.weight declares shape [10^15, 16] (data offsets unchanged)",
                changed(huge_shape)),
        st_case("truncated_safetensors", "model.safetensors cut in the middle of its data",
                valid[: data_start + (len(valid) - data_start) // 2]),
        st_case("header_length_past_eof", "the safetensors header length is 1000 bytes past the end of the file", header_too_long),
        st_case("header_not_json", "the safetensors header is not JSON",
                valid[:8] + b"{" + b"!" * (data_start - 9) + valid[data_start:]),
        (
            "missing_safetensors",
            "config.json but neither model.safetensors nor an index",
            {"config.json": good},
        ),
        sh_case("index_dotdot", 'the index maps model.norm.weight to "../outside.safetensors" (which exists)',
                weight_map_edit=outside, shard_edit=listed_not_in_shard),
        sh_case("index_absolute", 'the index maps model.norm.weight to "/outside.safetensors"',
                weight_map_edit=absolute, shard_edit=listed_not_in_shard),
        sh_case("index_tensor_not_in_shard", "the index maps model.norm.weight to shard 1, which lacks it",
                shard_edit=listed_not_in_shard),
        sh_case("index_missing_tensor_name", "shard 1 holds model.norm.weight but the index does not list it",
                weight_map_edit=unlisted),
        st_case("packed_code_3", "q_proj.weight byte [0, 0] is 0xff (2-bit code 3): imports, fails when run", changed(code3)),
    ]


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(OUT)
    ts = tensors()
    # The target of index_dotdot's "../outside.safetensors": a real file holding the tensor, so that an
    # importer that followed the path would find what it looks for.
    with open(os.path.join(OUT, "outside.safetensors"), "wb") as f:
        f.write(safetensors_bytes({NORM: ts[NORM]}))
    rows = []
    for name, why, files in cases():
        write_case(name, files)
        rows.append(f"| `{name}/` | {why} |")
    readme = [
        "# Malformed Hugging Face checkpoints",
        "",
        "Each folder is a tiny BitNet b1.58 checkpoint (vocab 32, hidden 16, intermediate 32, 2 heads, 1 KV",
        "head, 1 layer; autobitlinear offline, like `tests/fixtures/hf-tiny/packed`) broken in one way, except",
        "`valid/` and `valid_sharded/`. `tests/hf_malformed.rs` asserts that importing each broken one (running it,",
        "for `packed_code_3`) fails with an error naming the file and the key or tensor at fault, never a panic.",
        "`outside.safetensors` is the file `index_dotdot` points at. Regenerate with",
        "`python3 scripts/make_malformed_hf.py` (deterministic, standard library only).",
        "",
        "| case | what is broken |",
        "|---|---|",
    ] + rows
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(readme) + "\n")


if __name__ == "__main__":
    main()
