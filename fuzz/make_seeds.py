#!/usr/bin/env python3
"""Regenerates fuzz/seeds/<target>/: small valid (and a few malformed) inputs for each fuzz target.

Run from anywhere: `python3 fuzz/make_seeds.py [TARGET...]` (default: every target; only the named
targets' folders are rewritten). gguf, safetensors and npy need numpy, gguf and safetensors (pip);
the others need only Python. Copies tests/malformed/gguf, tests/malformed/onnx,
tests/filetests/**/*.bir, a selection of the ONNX node models, the hf-tiny config.json files and the
chat templates of tests/fixtures/chat; writes tiny GGUF, safetensors, .npy and .bnx files. Every seed
is under 50 KB.
"""
import glob
import hashlib
import io
import json
import os
import shutil
import struct
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SEEDS = os.path.join(ROOT, "fuzz", "seeds")
MAX = 50 * 1024


def out(target, name, data):
    assert len(data) < MAX, (target, name, len(data))
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, src, name=None):
    with open(src, "rb") as f:
        out(target, name or os.path.basename(src), f.read())


def gguf_bytes(arch, tensors, tokenizer=True, extra=None):
    import gguf
    os.makedirs(SEEDS, exist_ok=True)
    path = os.path.join(SEEDS, ".tmp.gguf")
    w = gguf.GGUFWriter(path, arch)
    w.add_uint32("test.u32", 7)
    w.add_bool("test.bool", True)
    w.add_float32("test.f32", 0.5)
    for k, v in (extra or {}).items():
        w.add_key_value(k, v[0], v[1])
    if tokenizer:
        toks = ["<unk>", "<s>", "</s>", "a", "b", "ab"]
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt-2")
        w.add_token_list(toks)
        w.add_token_types([2, 3, 3, 1, 1, 1])
        w.add_token_scores([0.0] * len(toks))
        w.add_token_merges(["a b"])
        w.add_bos_token_id(1)
        w.add_eos_token_id(2)
        w.add_add_bos_token(True)
        w.add_chat_template("{{ messages }}")
    for name, arr, raw_dtype in tensors:
        if raw_dtype is None:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_dtype=raw_dtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(path, "rb") as f:
        data = f.read()
    os.remove(path)
    return data


def make_gguf():
    import gguf
    import numpy as np
    from gguf import GGMLQuantizationType as Q
    rng = np.random.default_rng(0)
    f = rng.standard_normal((2, 32)).astype(np.float32)
    tern = (rng.integers(-1, 2, (1, 256)) * 0.25).astype(np.float32)
    q = lambda a, t: (gguf.quants.quantize(a, t), t)
    t = [
        ("f32", f, None),
        ("f16", f.astype(np.float16), None),
        ("f64", f.astype(np.float64), None),
        ("i8", rng.integers(-5, 5, (2, 4)).astype(np.int8), None),
        ("i32", rng.integers(-5, 5, (4,)).astype(np.int32), None),
        ("tern_f32", tern, None),
    ]
    for name, ty in [("q8_0", Q.Q8_0), ("q4_0", Q.Q4_0), ("q4_1", Q.Q4_1)]:
        a, ty = q(f, ty)
        t.append((name, a, ty))
    for name, ty in [("tq1_0", Q.TQ1_0), ("tq2_0", Q.TQ2_0)]:
        a, ty = q(tern, ty)
        t.append((name, a, ty))
    out("gguf", "types.gguf", gguf_bytes("llama", t))
    out("gguf", "no_tokenizer.gguf", gguf_bytes("llama", t[:2], tokenizer=False))
    out("gguf", "empty.gguf", gguf_bytes("llama", [], tokenizer=False))
    for p in sorted(glob.glob(os.path.join(ROOT, "tests/malformed/gguf/*.gguf"))):
        copy("gguf", p)


def make_safetensors():
    import numpy as np
    from safetensors.numpy import save as st_save
    rng = np.random.default_rng(1)
    out("safetensors", "dtypes.safetensors", st_save({
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f16": rng.standard_normal((3,)).astype(np.float16),
        "f64": np.array(1.5, dtype=np.float64),
        "i8": np.array([-1, 0, 1], dtype=np.int8),
        "i64": np.array([[1, 2]], dtype=np.int64),
        "u8": np.array([0, 255], dtype=np.uint8),
        "bool": np.array([True, False]),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }, metadata={"format": "pt"}))
    out("safetensors", "one.safetensors", st_save({"w": np.ones((4, 4), dtype=np.float32)}))
    out("safetensors", "none.safetensors", st_save({}))


def make_npy():
    import numpy as np
    rng = np.random.default_rng(2)
    arrays = {
        "f32": rng.standard_normal((2, 3)).astype(np.float32),
        "f64": rng.standard_normal((3,)),
        "f16": rng.standard_normal((2, 2)).astype(np.float16),
        "i8": np.array([-1, 0, 1], dtype=np.int8),
        "i16": np.array([1, -2], dtype=np.int16),
        "i32": np.arange(6, dtype=np.int32).reshape(1, 2, 3),
        "i64": np.array([2**40], dtype=np.int64),
        "u8": np.array([0, 255], dtype=np.uint8),
        "u16": np.array([65535], dtype=np.uint16),
        "u32": np.array([1], dtype=np.uint32),
        "u64": np.array([2**63], dtype=np.uint64),
        "bool": np.array([True, False]),
        "scalar": np.array(3.0, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    for name, a in arrays.items():
        b = io.BytesIO()
        np.save(b, a)
        out("npy", f"{name}.npy", b.getvalue())
    for v in [(2, 0), (3, 0)]:
        b = io.BytesIO()
        np.lib.format.write_array(b, arrays["f32"], version=v)
        out("npy", f"f32_v{v[0]}.npy", b.getvalue())
    for p in ["tests/fixtures/onnx/pos0.npy", "tests/fixtures/onnx/x_scale.npy"]:
        copy("npy", os.path.join(ROOT, p))


HF_VARIANTS = {
    "maxpos_huge": {"max_position_embeddings": 2**62},
    "heads_0": {"num_attention_heads": 0},
    "kv_3": {"num_key_value_heads": 3},
    "layers_huge": {"num_hidden_layers": 2**40},
    "head_dim_0": {"head_dim": 0},
    "vocab_huge": {"vocab_size": 2**63},
    "rope_scaling": {"rope_scaling": {"rope_type": "linear", "factor": 0}},
    "rope_parameters": {"rope_parameters": {"rope_type": "default", "rope_theta": -5}},
    "not_converted": {"quantization_config": {"linear_class": "autobitlinear", "quant_method": "bitnet",
                                              "quantization_mode": "offline",
                                              "modules_to_not_convert": ["lm_head", ""]}},
}


def make_hf():
    for v in ["packed", "packed_bitlinear", "online"]:
        copy("hf_config", os.path.join(ROOT, "tests/fixtures/hf-tiny", v, "config.json"), f"{v}.json")
    with open(os.path.join(ROOT, "tests/fixtures/hf-tiny/packed/config.json")) as f:
        base = json.load(f)
    # Variants of the packed config that the importer must reject (or accept) without panicking.
    for name, change in HF_VARIANTS.items():
        out("hf_config", f"packed_{name}.json", json.dumps({**base, **change}, indent=1).encode())


def make_bir():
    for p in sorted(glob.glob(os.path.join(ROOT, "tests/filetests/**/*.bir"), recursive=True)):
        if os.path.getsize(p) < MAX:
            rel = os.path.relpath(p, os.path.join(ROOT, "tests/filetests"))
            copy("bir", p, rel.replace(os.sep, "__"))


ONNX_NODES = """abs add_bcast add_int8 cast_FLOAT_to_BFLOAT16 cast_FLOAT16_to_DOUBLE clip clip_default_int8_min
concat_3d_axis_negative_2 div_uint64 equal_bcast erf expand_dim_changed gather_2d_indices
gather_negative_indices gemm_all_attributes gemm_transposeA identity isnan_float16
layer_normalization_3d_axis1_epsilon matmul_4d_1d matmul_bcast max_example min_two_inputs mul_uint8
neg pow_types_int64_float32 reciprocal reduce_max_bool_inputs reduce_mean_keepdims_example
reduce_sum_empty_axes_input_noop reduce_sum_empty_set relu reshape_allowzero_reordered
reshape_negative_extended_dims rms_normalization_4d_axis_negative_2 round shape_start_1_end_negative_1
sigmoid slice_neg_steps slice_start_out_of_bounds softmax_axis_0 sqrt squeeze_negative_axes sub_int16
tanh transpose_all_permutations_3 unsqueeze_unsorted_axes where_long_example""".split()


def make_onnx():
    for n in ONNX_NODES:
        copy("onnx", os.path.join(ROOT, "tests/fixtures/onnx-node", f"test_{n}", "model.onnx"), f"{n}.onnx")
    for p in sorted(glob.glob(os.path.join(ROOT, "tests/malformed/onnx/*.onnx"))):
        copy("onnx", p, "malformed_" + os.path.basename(p))


def bnx_manifest(sections, weights_bytes, weights_index):
    """A manifest as `bitnetc compile` writes it (runtime/src/artifact.rs `Manifest`), small."""
    buf = lambda b, o, r: {"bytes": b, "offset": o, "region": r}
    return {
        "compiler": "bitnetc 0.1.0",
        "flags": {"opt_level": "speed"},
        "format_version": 1,
        "imports": [{"slot": "__bitnetc_import_expf", "symbol": "bitnetc_expf"}],
        "inputs": [{"bytes": 768, "name": "config.json", "sha256": "0" * 64}],
        "ir_sha256": "1" * 64,
        "kernels": [{"kind": "rms_norm", "symbol": "k0"}, {"kind": "matmul", "symbol": "k1"}],
        "launches": [
            {"bufs": [buf(64, 0, "arena"), buf(16, 0, "weights")], "kernel": 0, "label": "norm",
             "rows": {"per_token": 1}, "last_token": [64, 0]},
            {"bufs": [buf(64, 0, "arena"), buf(32, 64, "kv")], "kernel": 1, "label": "mm",
             "rows": {"static": 2}, "per_sequence": [64, 32],
             "cuda": {"block": 128, "rows_per_block": 4, "shared_bytes": 0}},
        ],
        "memory": {"arena_bytes": 128, "buffers": 2, "constant_bytes": 0, "kv_bytes": 96,
                   "kv_slots": 1, "lower_bound_bytes": 64, "naive_bytes": 128, "schedule_length": 2},
        "passes": ["fold", "fuse"],
        "program": {"arena_bytes": 128, "batchable": True, "context": 4, "kv_bytes": 96,
                    "logits": buf(32, 64, "arena"), "tokens": buf(8, 0, "arena"), "vocab": 8,
                    "weights_bytes": weights_bytes},
        "sections": sections,
        "target": {"arch": "x86_64", "features": ["sse2", "avx2"], "isa_flags": {"has_avx2": "true"},
                   "os": "linux", "triple": "x86_64-unknown-linux-gnu"},
        "weights": weights_index,
    }


def bnx_bytes(sections, weights_index=None, version=1, manifest_change=None):
    """An artifact laid out as `artifact::encode` lays it out: header, pretty JSON manifest, sections
    at 64-byte aligned offsets from the data start. `manifest_change` edits the manifest after the
    layout is fixed (the sections stay where the unchanged manifest puts them)."""
    align = lambda n: (n + 63) // 64 * 64
    entries, offset = [], 0
    for name, data in sections:
        entries.append({"bytes": len(data), "name": name, "offset": offset,
                        "sha256": hashlib.sha256(data).hexdigest()})
        offset = align(offset + len(data))
    weights = dict(sections).get("weights", b"")
    m = bnx_manifest([dict(e) for e in entries], len(weights), weights_index or {})
    m["format_version"] = version
    if manifest_change:
        manifest_change(m)
    js = json.dumps(m, indent=2, sort_keys=True).encode()
    out = bytearray(b"BNX1" + struct.pack("<IQ", version, len(js)) + hashlib.sha256(js).digest() + js)
    start = align(len(out))
    for e, (_, data) in zip(entries, sections):
        at = start + e["offset"]
        out.extend(b"\0" * (at - len(out)))
        out.extend(data)
    return bytes(out)


def make_bnx():
    with open(os.path.join(ROOT, "tests/filetests/eval/binary.bir"), "rb") as f:
        ir = f.read()
    weights = bytes(range(48))
    index = {"w": {"bytes": 32, "elem": "f32", "offset": 0, "shape": [2, 4]},
             "t": {"bytes": 16, "elem": "u8", "layout": "pairs8", "offset": 32, "shape": [1, 64]}}
    chat = {"bos": "as_written", "bos_token": "<s>", "eos_token": None, "origin": "tokenizer_config.json",
            "source": "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"}
    tokenizer = json.dumps({"version": "1.0", "added_tokens": [], "normalizer": None,
                            "pre_tokenizer": None, "post_processor": None, "decoder": None,
                            "model": {"type": "WordLevel", "vocab": {"a": 0, "b": 1, "<unk>": 2},
                                      "unk_token": "<unk>"}}).encode()
    full = [("code", b"\x7fELF\x02\x01\x01" + bytes(57)), ("weights", weights),
            ("tokenizer", tokenizer), ("tokenizer_special", b'{"bos":null,"eos":[1]}'),
            ("chat_template", json.dumps(chat).encode()), ("ir", ir)]
    out("bnx", "full.bnx", bnx_bytes(full, index))
    out("bnx", "minimal.bnx", bnx_bytes([("code", b""), ("weights", b"")]))
    out("bnx", "no_sections.bnx", bnx_bytes([]))
    # Malformed: each must be refused with an error.
    good = bnx_bytes(full, index)
    out("bnx", "bad_magic.bnx", b"BNX0" + good[4:])
    out("bnx", "v2_header.bnx", bnx_bytes(full, index, version=2))
    out("bnx", "truncated_header.bnx", good[:20])
    out("bnx", "truncated_manifest.bnx", good[:200])
    out("bnx", "truncated_section.bnx", good[:-10])
    flipped = bytearray(good)
    flipped[60] ^= 1
    out("bnx", "manifest_hash.bnx", bytes(flipped))
    flipped = bytearray(good)
    flipped[-1] ^= 1
    out("bnx", "section_hash.bnx", bytes(flipped))
    out("bnx", "huge_manifest_len.bnx", good[:8] + struct.pack("<Q", 2**64 - 1) + good[16:])

    def misalign(m):
        m["sections"][1]["offset"] += 1
    out("bnx", "misaligned_section.bnx", bnx_bytes(full, index, manifest_change=misalign))

    def huge(m):
        m["sections"][1]["offset"] = 2**64 - 64
        m["sections"][1]["bytes"] = 2**64 - 1
    out("bnx", "huge_section.bnx", bnx_bytes(full, index, manifest_change=huge))

    def duplicate(m):
        m["sections"][2]["name"] = "code"
    out("bnx", "duplicate_section.bnx", bnx_bytes(full, index, manifest_change=duplicate))

    def outside(m):
        m["weights"]["w"]["offset"] = 2**64 - 8
    out("bnx", "weight_outside.bnx", bnx_bytes(full, index, manifest_change=outside))

    def not_json(m):
        m["program"]["vocab"] = -1
    out("bnx", "manifest_field.bnx", bnx_bytes(full, index, manifest_change=not_json))
    out("bnx", "empty.bnx", b"")


def make_chat_template():
    for d in ["tests/fixtures/chat/templates", "tests/fixtures/chat/llama_cpp"]:
        for p in sorted(glob.glob(os.path.join(ROOT, d, "*.jinja"))):
            copy("chat_template", p)
    with open(os.path.join(ROOT, "tests/fixtures/chat/parity.json")) as f:
        parity = json.load(f)
    seen = set()
    for case in parity["cases"]:
        src = case.get("template") if isinstance(case, dict) else None
        if isinstance(src, str) and src not in seen:
            seen.add(src)
            out("chat_template", f"parity_{len(seen)}.jinja", src.encode())
    # Small templates that exercise the dialect: loop controls, macros, tojson, strftime_now,
    # raise_exception, generation blocks, Python string methods.
    small = {
        "dialect.jinja": "{% macro m(x) %}[{{ x | tojson(indent=2) }}]{% endmacro %}"
        "{% for msg in messages %}{% if loop.index0 > 5 %}{% break %}{% endif %}"
        "{{ m(msg) }}{{ msg.content.strip().upper().split(' ') | join('_') }}{% endfor %}"
        "{% generation %}{{ strftime_now('%Y-%m-%d %H:%M') }}{% endgeneration %}"
        "{% if not add_generation_prompt %}{{ raise_exception('no prompt') }}{% endif %}",
        "namespace.jinja": "{% set ns = namespace(n=0) %}{% for m in messages %}"
        "{% set ns.n = ns.n + 1 %}{{ m.role[0] }}{% endfor %}{{ ns.n }}{{ bos_token }}",
        "empty.jinja": "",
    }
    for name, src in small.items():
        out("chat_template", name, src.encode())


MAKERS = {"gguf": make_gguf, "safetensors": make_safetensors, "npy": make_npy, "hf_config": make_hf,
          "bir": make_bir, "onnx": make_onnx, "bnx": make_bnx, "chat_template": make_chat_template}


if __name__ == "__main__":
    targets = sys.argv[1:] or list(MAKERS)
    for t in targets:
        if t not in MAKERS:
            sys.exit(f"unknown target {t!r} (known: {', '.join(MAKERS)})")
        shutil.rmtree(os.path.join(SEEDS, t), ignore_errors=True)
        MAKERS[t]()
    for t in sorted(targets):
        files = os.listdir(os.path.join(SEEDS, t))
        size = sum(os.path.getsize(os.path.join(SEEDS, t, f)) for f in files)
        print(f"{t}: {len(files)} files, {size} bytes")
