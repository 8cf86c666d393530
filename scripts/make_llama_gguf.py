#!/usr/bin/env python3
"""Write a Llama-architecture GGUF with random weights and a published vocabulary, for running
bitnetc and llama.cpp side by side on the same file (issue 13's end-to-end check).

No published Llama-family GGUF is reachable from this machine (only PyPI, npm, crates.io and
Debian), so this makes the nearest thing: the vocabulary, merges, pre-tokenizer and chat
template are copied from a vocab-only GGUF that llama.cpp publishes for its tokenizer tests
(`models/ggml-vocab-*.gguf` in its source tree), and the weights are random with SmolLM-like
shapes. The weights are written in F32; quantize them with llama.cpp's `llama-quantize`
(Q4_1, Q8_0, Q4_K_M, ...) to get the published files' block formats.

The output head is scaled so that logits spread over several units: greedy decoding then has
clear margins, and a token that differs between two engines is a real difference, not a tie.

Usage: python3 scripts/make_llama_gguf.py VOCAB.gguf|synthetic:N OUT.gguf [--layers 4]
       [--hidden 256] [--ffn 640] [--heads 4] [--kv-heads 2] [--pre smollm]
       [--template FILE.jinja] [--tied] [--type F32|F16|Q8_0|Q4_0|Q4_1|Q5_0|Q5_1]
`synthetic:N` makes an N-token byte-level vocabulary (256 byte tokens, dummies, bos and eos)
instead of copying one: small files for tests (tests/fixtures/gguf-llama, made by
scripts/fixtures/make_gguf_llama.sh). `--type` quantizes the projections and the head with
gguf-py's own quantizer (the embedding stays F32).
Needs gguf-py (`pip install gguf`) and numpy.
"""
import argparse
import numpy as np
import gguf

ap = argparse.ArgumentParser()
ap.add_argument("vocab")
ap.add_argument("out")
ap.add_argument("--layers", type=int, default=4)
ap.add_argument("--hidden", type=int, default=256)
ap.add_argument("--ffn", type=int, default=640)
ap.add_argument("--heads", type=int, default=4)
ap.add_argument("--kv-heads", type=int, default=2)
ap.add_argument("--ctx", type=int, default=2048)
ap.add_argument("--pre", default=None, help="override tokenizer.ggml.pre (e.g. smollm)")
ap.add_argument("--template", default=None, help="a chat template (.jinja) to embed")
ap.add_argument("--tied", action="store_true", help="no output.weight: the head is the embedding")
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--type", default="F32", help="projection and head type (gguf-py quantizes)")
a = ap.parse_args()


def byte_level_tokens():
    """GPT-2's bytes_to_unicode: the 256 byte tokens of a byte-level BPE, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for _, c in sorted(zip(bs, cs))]


if a.vocab.startswith("synthetic:"):
    n = int(a.vocab.split(":", 1)[1])
    merged = ["\u0120t", "\u0120a", "he", "in"]
    toks = byte_level_tokens() + merged
    toks += [f"<d{i}>" for i in range(len(toks), n - 2)] + ["<|begin_of_text|>", "<|end_of_text|>"]
    synthetic = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": toks,
        "tokenizer.ggml.token_type": [1] * (n - 2) + [3, 3],
        "tokenizer.ggml.merges": ["\u0120 t", "\u0120 a", "h e", "i n"],
        "tokenizer.ggml.bos_token_id": n - 2,
        "tokenizer.ggml.eos_token_id": n - 1,
        "tokenizer.ggml.add_bos_token": True,
    }

    def field(name):
        return synthetic.get(name)
else:
    src = gguf.GGUFReader(a.vocab)

    def field(name):
        f = src.fields.get(name)
        if f is None:
            return None
        return f.contents()


tokens = field("tokenizer.ggml.tokens")
n_vocab = len(tokens)
head_dim = a.hidden // a.heads
rng = np.random.default_rng(a.seed)

w = gguf.GGUFWriter(a.out, "llama")
w.add_name("synth-llama (random weights, published vocabulary)")
w.add_context_length(a.ctx)
w.add_embedding_length(a.hidden)
w.add_block_count(a.layers)
w.add_feed_forward_length(a.ffn)
w.add_head_count(a.heads)
w.add_head_count_kv(a.kv_heads)
w.add_rope_dimension_count(head_dim)
w.add_rope_freq_base(10000.0)
w.add_layer_norm_rms_eps(1e-5)
w.add_vocab_size(n_vocab)
qtype = gguf.GGMLQuantizationType[a.type]
w.add_file_type(gguf.LlamaFileType.ALL_F32 if a.type == "F32" else gguf.LlamaFileType.GUESSED)

w.add_tokenizer_model(field("tokenizer.ggml.model"))
pre = a.pre or field("tokenizer.ggml.pre")
if pre is not None:
    w.add_tokenizer_pre(pre)
w.add_token_list(tokens)
types = field("tokenizer.ggml.token_type")
if types is not None:
    w.add_token_types(list(types))
scores = field("tokenizer.ggml.scores")
if scores is not None:
    w.add_token_scores(list(scores))
merges = field("tokenizer.ggml.merges")
if merges is not None:
    w.add_token_merges(merges)
for key, add in [
    ("tokenizer.ggml.bos_token_id", w.add_bos_token_id),
    ("tokenizer.ggml.eos_token_id", w.add_eos_token_id),
    ("tokenizer.ggml.unknown_token_id", w.add_unk_token_id),
    ("tokenizer.ggml.padding_token_id", w.add_pad_token_id),
    ("tokenizer.ggml.add_bos_token", w.add_add_bos_token),
    ("tokenizer.ggml.add_eos_token", w.add_add_eos_token),
]:
    v = field(key)
    if v is not None:
        add(v)
if a.template:
    with open(a.template, encoding="utf-8") as f:
        w.add_chat_template(f.read())


def normal(*shape, std):
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def matrix(name, data):
    """A projection or the head, in --type (gguf-py's quantizer; F16 as numpy's float16)."""
    if a.type == "F32":
        w.add_tensor(name, data)
    elif a.type == "F16":
        w.add_tensor(name, data.astype(np.float16))
    else:
        q = gguf.quants.quantize(data, qtype)
        w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=qtype)


w.add_tensor("token_embd.weight", normal(n_vocab, a.hidden, std=1.0))
w.add_tensor("output_norm.weight", (1.0 + normal(a.hidden, std=0.1)).astype(np.float32))
if not a.tied:
    matrix("output.weight", normal(n_vocab, a.hidden, std=0.25))
kv = head_dim * a.kv_heads
for i in range(a.layers):
    p = f"blk.{i}."
    w.add_tensor(p + "attn_norm.weight", (1.0 + normal(a.hidden, std=0.1)).astype(np.float32))
    w.add_tensor(p + "ffn_norm.weight", (1.0 + normal(a.hidden, std=0.1)).astype(np.float32))
    s = 1.0 / np.sqrt(a.hidden)
    matrix(p + "attn_q.weight", normal(a.hidden, a.hidden, std=s))
    matrix(p + "attn_k.weight", normal(kv, a.hidden, std=s))
    matrix(p + "attn_v.weight", normal(kv, a.hidden, std=s))
    matrix(p + "attn_output.weight", normal(a.hidden, a.hidden, std=s))
    matrix(p + "ffn_gate.weight", normal(a.ffn, a.hidden, std=s))
    matrix(p + "ffn_up.weight", normal(a.ffn, a.hidden, std=s))
    matrix(p + "ffn_down.weight", normal(a.hidden, a.ffn, std=1.0 / np.sqrt(a.ffn)))

w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file(progress=False)
w.close()
print(f"wrote {a.out}: {a.layers} layers, hidden {a.hidden}, vocab {n_vocab}, pre {pre}")
