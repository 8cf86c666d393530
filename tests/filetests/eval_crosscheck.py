#!/usr/bin/env python3
"""Independent cross-check of the eval filetest snapshots (tests/filetests/eval/snapshots/*.snap).

Each eval file's expected results are recomputed here with numpy from the inputs written in the .bir
file (copied by hand, not parsed), following each op's documented math, and compared with the values
the snapshot records. Floats must match bit for bit (NaN matches NaN, -0.0 differs from 0.0) unless a
result is listed with a tolerance in ulps of float32 (transcendental functions, whose last bit depends
on the libm). Run from anywhere: `python3 tests/filetests/eval_crosscheck.py`; it prints one line per
result and exits 1 on any mismatch. This is a tool for reviewing snapshots; the test suite does not
run it (nothing in `cargo test` needs Python).
"""

import math
import pathlib
import re
import sys

import numpy as np

F32 = np.float32
HERE = pathlib.Path(__file__).resolve().parent / "eval" / "snapshots"


def f32(*v):
    return np.array(v, dtype=np.float32)


def bf16(x):
    """float32 → bfloat16 (round to nearest even on the bits), returned widened to float32."""
    b = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32)


def sat_int(x, dtype):
    """float → int as the IR's cast: truncate toward zero, saturate, NaN → 0."""
    info = np.iinfo(dtype)
    x = np.asarray(x, dtype=np.float64)
    out = np.where(np.isnan(x), 0.0, np.trunc(x))
    out = np.clip(out, info.min, info.max)
    # Exact for the bounds: build from Python ints.
    return np.array([int(v) if abs(v) < 2**62 else (info.max if v > 0 else info.min) for v in out], dtype=dtype)


def wrap(x, dtype):
    return np.array([int(v) for v in np.asarray(x).ravel()], dtype=np.int64).astype(dtype).reshape(np.shape(x))


# ---- expected results, one function per eval file -------------------------------------------------

def binary():
    a = f32(1, 2, 3, 4, 5, 6).reshape(2, 3)
    b = f32(10, 20, 30)
    i = np.array([100, -128, 7], np.int64)
    j = np.array([100, 1, 2], np.int64)
    p, q = np.array([-7, 7]), np.array([2, 2])
    n = f32(np.nan, 1, -np.inf)
    col = f32(1, -1).reshape(2, 1)
    m = np.array([65536, -3, 46341], np.int64)
    return [
        (a + b, 0),
        (a / b, 0),
        (wrap(i + j, np.int8), 0),
        (np.trunc(p / q).astype(np.int32), 0),
        (b ** np.array([2, 3, 0]).astype(np.float32), 0),
        (np.maximum(n, b), 0),
        (b == n, 0),
        (col - b, 0),
        (wrap(m * m, np.int32), 0),
        (np.minimum(n, b), 0),
        (np.minimum(i, j).astype(np.int8), 0),
    ]


def unary():
    r = f32(0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 3.7, -3.5)
    i8 = np.array([-128, 127, 0], np.int64)
    x = f32(-2.0, -0.0, 1.5, 3.0)
    g = np.array([-100.0, -1.0, 0.0, 1.0, 30.0])
    h = np.array([-1.0, 0.0, 1.0, 20.0])
    e = np.array([-1.0, 0.0, 0.5, 3.0])
    sig = lambda v: 1 / (1 + np.exp(-v))
    with np.errstate(all="ignore"):
        return [
            (np.rint(r), 0),  # rint: round half to even
            (wrap(-i8, np.int8), 0),
            (wrap(np.abs(i8), np.int8), 0),
            (np.maximum(np.array([-3, 0, 4], np.int32), 0), 0),
            (-x, 0),
            (np.abs(x), 0),
            (np.maximum(x, F32(0)) + F32(0), 0),  # + 0 turns relu(-0.0) into +0.0, as the snapshot shows
            (np.square(np.maximum(x, F32(0)) + F32(0)), 0),
            (np.sqrt(f32(4, 2, -1)), 0),
            (F32(1) / f32(2, -0.0, 3, np.inf), 0),
            (sig(g).astype(np.float32), 2),
            ((h * sig(h)).astype(np.float32), 2),
            (np.tanh(h).astype(np.float32), 2),
            (np.array([math.erf(v) for v in e], np.float32), 2),
            (np.exp(np.array([0.0, 1.0, -1.0, 89.0])).astype(np.float32), 2),
            (bf16(np.exp(np.array([1.0, -1.0])).astype(np.float32)), 0),
        ]


def clip():
    x = f32(-200.0, -128.5, 0.0, 126.9, 127.5, np.nan, np.inf)
    y = f32(-1.0, 0.25, -np.inf)
    return [
        (np.clip(x, -128, 127), 0),
        (np.maximum(y, F32(0)), 0),
        (np.minimum(y, F32(0)), 0),
        (np.clip(np.array([-10, -2, 5, 7, 10], np.int32), math.trunc(-2.7), math.trunc(7.9)), 0),
        (np.clip(np.array([-128, -1, 1, 127], np.int8), -100, 100), 0),
    ]


def softmax_ref(x, axis):
    x = np.asarray(x, np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def softmax():
    x = np.array([1, 2, 3, 0, 0, 0.0]).reshape(2, 3)
    c = np.array([0, 1, 2, 3, -1, 5, 0.5, 0.5]).reshape(2, 2, 2)
    return [
        (softmax_ref(x, -1), 1),
        (softmax_ref(x, 0), 1),
        (softmax_ref([1000.0, -np.inf, 1001.0], -1), 1),
        (softmax_ref(c, -2), 1),
    ]


def norm_ref(x, axis, w, b, eps, rms):
    """The documented recipe: mean and variance summed in float64 and rounded to f32, the rest in f32."""
    x = np.asarray(x, np.float32)
    inner = x.shape[axis:]
    n = int(np.prod(inner))
    w = np.broadcast_to(np.asarray(w, np.float32), inner).ravel()
    b = None if b is None else np.broadcast_to(np.asarray(b, np.float32), inner).ravel()
    out = []
    for row in x.reshape(-1, n):
        mean = F32(0) if rms else F32(row.astype(np.float64).sum() / n)
        d = (row - mean).astype(np.float32)
        var = F32((d.astype(np.float64) ** 2).sum() / n)
        inv = F32(1) / np.sqrt(var + F32(eps))
        y = d * inv * w
        out.append(y if b is None else y + b)
    return np.array(out, np.float32).reshape(x.shape)


def norm():
    x = f32(1, 2, 3, 4, 5, 5, 5, 5).reshape(2, 4)
    w = f32(1.0, 0.5, 2.0, -1.0)
    b = f32(0.0, 1.0, -1.0, 0.5)
    y = f32(1.0, -2.0, 3.0, 0.5, 0.0, -0.5, 10.0, 20.0, 30.0, 0.0, 0.0, 1.0).reshape(2, 2, 3)
    # Float64 textbook formulas agree with these to ~1e-7 relative (asserted below).
    ref = norm_ref(x, 1, w, None, 1e-5, True)
    textbook = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * w
    assert np.allclose(ref, textbook, rtol=1e-6)
    return [
        (ref, 2),
        (norm_ref(y, 1, f32(2.0, 1.0, 0.5), None, 1e-6, True), 2),
        (norm_ref(x, 1, w, b, 1e-5, False), 2),
        (norm_ref(x, 1, w, None, 0.001, False), 2),
    ]


def reduce():
    x = np.array([1, 2, 3, 4, 5, 6.0]).reshape(2, 3)
    c = np.arange(12.0).reshape(3, 2, 2)
    t = f32(0.1, 0.2, 0.3, 0.7, 0.8, 0.9).reshape(2, 3).astype(np.float64)
    e = np.zeros((0, 2))
    with np.errstate(all="ignore"), __import__("warnings").catch_warnings():
        __import__("warnings").simplefilter("ignore")
        return [
            (x.sum(-1, keepdims=True).astype(np.float32), 0),
            (x.mean(0).astype(np.float32), 0),
            (np.array(x.max(), np.float32), 0),
            (x.sum(keepdims=True).astype(np.float32), 0),
            (np.array([np.max(f32(1, np.nan, 3))]), 0),
            (c.mean(axis=(0, 2)).astype(np.float32), 0),
            (wrap([300], np.int8), 0),
            (np.array([-3, -9], np.int32), 0),
            (t.mean(0).astype(np.float32), 0),
            (np.array(t.sum(), np.float32), 0),
            (e.sum(0).astype(np.float32), 0),
            (e.mean(0).astype(np.float32), 0),
            (np.full(2, -np.inf, np.float32), 0),  # np.max refuses empty input; the doc says -inf
        ]


def shape():
    x = f32(1, 2, 3, 4, 5, 6).reshape(2, 3)
    u = np.expand_dims(x, (0, 3))
    return [
        (x.reshape(3, 2), 0),
        (u, 0),
        (np.squeeze(u), 0),
        (np.squeeze(np.arange(1, 7, dtype=np.int32).reshape(2, 1, 3), -2), 0),
        (np.array(7.5, np.float32), 0),
        (np.broadcast_to(f32(1, 2, 3).reshape(3, 1), (2, 3, 4)), 0),
        (np.broadcast_to(F32(7.5), (2, 2)), 0),
        (np.broadcast_to(np.array([-1, 0, 1, 2, 3, 4], np.int8).reshape(2, 3), (2, 2, 3)), 0),
    ]


def transpose():
    x = f32(1, 2, 3, 4, 5, 6).reshape(2, 3)
    return [
        (x.T, 0),
        (np.transpose(np.arange(24, dtype=np.float32).reshape(2, 3, 4), (2, 0, 1)), 0),
        (np.array([1, -2, 3, -4], np.int8).reshape(2, 2), 0),
    ]


def concat():
    a = f32(1, 2, 3, 4).reshape(2, 2)
    return [
        (np.concatenate([a, f32(5, 6).reshape(2, 1)], -1), 0),
        (np.concatenate([f32(9, 8).reshape(1, 2), np.zeros((0, 2), np.float32), a], 0), 0),
        (a, 0),
        (np.array([2**63 - 1, -1, 0, -(2**63)], np.int64), 0),
    ]


def slice_():
    x = np.arange(10, dtype=np.float32)
    m = f32(0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23).reshape(3, 4)
    big = 2**63 - 1
    return [
        (x[1:8:3], 0),
        (x[-1:-100:-1], 0),
        (x[8:2:-2], 0),
        (x[-100:100], 0),
        (x[20:30], 0),
        (x[5:2:1], 0),
        (x[100:-100:-3], 0),
        (m[0:3:2, -1:0:-1], 0),
        (x[0:10:big], 0),
        (x[9:-(2**63):-(2**63)], 0),
        (x[-(2**63):big], 0),
        (np.zeros(0, np.float32)[0:-10:-1], 0),
    ]


def gather():
    d = f32(1, 2, 3, 4, 5, 6).reshape(3, 2)
    table = f32(0.0, 0.1, 0.2, 1.0, 1.1, 1.2, 2.0, 2.1, 2.2, 3.0, 3.1, 3.2).reshape(4, 3)
    store = f32(1, 2, 3, 4).reshape(2, 2)
    return [
        (np.take(d, [-1, 0], axis=0), 0),
        (np.take(d, np.array([[1, 0], [-2, 1]]), axis=-1), 0),
        (np.take(d, -2, axis=0), 0),
        (np.take(np.array([-128, 0, 127], np.int8), [2, 2, 0]), 0),
        (np.take(table, np.array([[3, 0], [1, 3]]), axis=0), 0),
        (np.take(store, [1, 0, 1], axis=0), 0),
    ]


def cast():
    np.seterr(over="ignore")  # 65520 → f16 overflows to inf, as intended
    return [
        (sat_int([300.7, -1e9, np.nan, -2.9, 2.9, np.inf, -np.inf, -0.5], np.int8), 0),
        (sat_int([-5.0, 255.9, 256.0, 3.5], np.uint8), 0),
        (sat_int(f32(3e9, -3e9, np.nan), np.int32), 0),
        (sat_int(f32(1e19, -1e19), np.int64), 0),
        (np.array([200, -129, 256, 127], np.int32).astype(np.int8), 0),
        (np.array([4294967297, -2147483649], np.int64).astype(np.int32), 0),
        (np.array([16777217, 16777219, -(2**63)], np.int64).astype(np.float32), 0),
        (bf16(f32(1.0, 1.00390625, 1.01171875, 0.1)), 0),
        (f32(65520.0, 65519.0, 1e-8, 0.1).astype(np.float16).astype(np.float32), 0),  # 65520 → inf
        (f32(0.0, -0.0, 0.5, np.nan, -np.inf).astype(bool), 0),
        (f32(1, 0), 0),
        (np.array([-1, 0, 1], np.int32), 0),
        (f32(-128, 127), 0),
        (bf16(f32(1.0, 1.00390625, 1.01171875, 0.1)), 0),
    ]


def where():
    a = f32(1, 2, 3)
    eq = a == f32(1, 5, 3)
    return [
        (np.where(np.array([[True], [False]]), a, F32(-1)), 0),
        (np.where(eq, f32(10, 20).reshape(2, 1), a), 0),
        (np.where(np.array([False, True, True]), np.array([2**63 - 1, 2, 3]), np.array([-4])), 0),
    ]


def matmul():
    a = np.array([1, 2, 3, 4, 5, 6.0]).reshape(2, 3)
    b = np.array([1, -1, 0.5, 2, -2, 0.0]).reshape(3, 2)
    a3 = np.array([1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1.0]).reshape(2, 2, 3)
    l = np.array([1, 2, 3, 4.0]).reshape(1, 2, 2)
    r = np.array([1, 0, 0, 1, 1, -1.0]).reshape(3, 2, 1)
    return [
        ((a @ b).astype(np.float32), 0),
        ((a3 @ b).astype(np.float32), 0),
        ((l @ r).astype(np.float32), 0),
        ((np.array([[1e8, 1.0, -1e8]]) @ np.ones((3, 1))).astype(np.float32), 0),
    ]


def rope_ref(x, pos, d, theta, inv_freq=None):
    """HF rotate_half rope with every step in float32, as the op doc says."""
    x = np.asarray(x, np.float32)
    half = d // 2
    inv = F32(1) / np.power(F32(theta), (np.arange(half) * 2).astype(np.float32) / F32(d))
    if inv_freq is not None:
        inv = np.asarray(inv_freq, np.float32)
    out = x.copy()
    for t in range(x.shape[0]):
        a = F32(pos + t) * inv
        s, c = np.sin(a), np.cos(a)
        for h in range(x.shape[1] // d):
            x0 = x[t, h * d:h * d + half]
            x1 = x[t, h * d + half:h * d + d]
            out[t, h * d:h * d + half] = x0 * c - x1 * s
            out[t, h * d + half:h * d + d] = x1 * c + x0 * s
    # A float64 rope agrees to 1e-6 (loose: the angles themselves are rounded to f32).
    p = (pos + np.arange(x.shape[0]))[:, None] / float(theta) ** (np.arange(half) * 2 / d)
    if inv_freq is not None:
        p = (pos + np.arange(x.shape[0]))[:, None] * np.asarray(inv_freq, np.float64)
    x64 = x.astype(np.float64).reshape(x.shape[0], -1, 2, half)
    s64, c64 = np.sin(p)[:, None], np.cos(p)[:, None]
    r64 = np.stack([x64[:, :, 0] * c64 - x64[:, :, 1] * s64, x64[:, :, 1] * c64 + x64[:, :, 0] * s64], 2)
    assert np.allclose(out, r64.reshape(x.shape), rtol=1e-6, atol=1e-6)
    return out


def rope():
    x = f32(1, 2, 3, 4, -1, 0.5, 0, 2, 0.1, 0.2, 0.3, 0.4, 1, 1, 1, 1).reshape(2, 8)
    z = f32(1, 2, 3, 4, 1, 2, 3, 4).reshape(2, 4)
    w = f32(1, 0, 0, 1).reshape(1, 4)
    return [
        (rope_ref(x, 3, 4, 10000.0), 2),
        (rope_ref(z, 0, 4, 10000.0), 2),
        (rope_ref(w, 7, 2, 500000.0), 2),
        (rope_ref(x, 5, 4, 10000.0, inv_freq=[0.5, 0.0625]), 2),
    ]


def attention_ref(q, k, v, kc, vc, pos, heads, kv_heads, scale=None):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    kc, vc = np.array(kc, np.float64), np.array(vc, np.float64)
    t_len = q.shape[0]
    kc[pos:pos + t_len] = k
    vc[pos:pos + t_len] = v
    d = q.shape[1] // heads
    scale = 1 / math.sqrt(d) if scale is None else scale
    out = np.zeros_like(q)
    for t in range(t_len):
        p = pos + t
        for h in range(heads):
            g = h // (heads // kv_heads)
            qh = q[t, h * d:(h + 1) * d]
            K = kc[:p + 1, g * d:(g + 1) * d]
            V = vc[:p + 1, g * d:(g + 1) * d]
            s = scale * (K @ qh)
            w = np.exp(s - s.max())
            w /= w.sum()
            out[t, h * d:(h + 1) * d] = w @ V
    return [(out.astype(np.float32), 1), (kc.astype(np.float32), 0), (vc.astype(np.float32), 0)]


def attention():
    q = np.array([1, 0, 0, 1, 1, 1, -1, 0, 0.5, 0.5, 2, 0, 0, 2, 1, -1, 1, 2, 3, 4, -1, -2, 0, 0.5]).reshape(3, 8)
    k = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 1, -1, -1.0]).reshape(3, 4)
    v = np.array([1, 2, 3, 4, 5, 6, 7, 8, -1, -2, -3, -4.0]).reshape(3, 4)
    cache = np.full((4, 4), 9.0)
    kc0 = np.array([1, 0, 0, 1, 0, 1, 1, 0] + [50] * 4 + [100] * 4, np.float64).reshape(4, 4)
    vc0 = np.array([1, 2, 3, 4, 5, 6, 7, 8] + [50] * 4 + [100] * 4, np.float64).reshape(4, 4)
    dq = np.array([1, 1, 0, -1, 2, 0, 0.5, 0.5]).reshape(1, 8)
    dk = np.array([0.5, -0.5, 1, 2.0]).reshape(1, 4)
    dv = np.array([10, 20, 30, 40.0]).reshape(1, 4)
    return attention_ref(q, k, v, cache, cache, 0, 4, 2) + attention_ref(dq, dk, dv, kc0, vc0, 2, 4, 2, 1.0)


def constant():
    return [
        (f32(np.inf, -np.inf, np.nan, -0.0, 1e-5), 0),
        (np.full((2, 3), 7.25, np.float32), 0),
        (f32(1, -2), 0),
        (np.array([-128, 127], np.int8), 0),
        (np.array([-(2**31), 2**31 - 1], np.int32), 0),
        (np.array([-(2**63), 2**63 - 1], np.int64), 0),
        (np.array([0, 255], np.uint8), 0),
        (np.full((2, 2), -3, np.int32), 0),
        (np.array([True, False, True]), 0),
        (np.array([-1, 0, 1], np.int8), 0),
        (bf16(f32(0.1)), 0),
        (f32(0.1).astype(np.float16).astype(np.float32), 0),
        (np.array(3.5, np.float32), 0),
        (np.zeros((0, 3), np.float32), 0),
        (np.array([[1, 0, -1, 1], [0, 0, 1, -1]], np.int8), 0),
        (np.array([[1, 0, -1, 1], [0, 0, 1, -1]], np.int8), 0),
        (f32(1, 2, 3, 4).reshape(2, 2), 0),
        (f32(1, 2, 3, 4).reshape(2, 2), 0),
        (f32(1.5, -2, 0.333984375), 0),
        (f32(1.5, -2, 0.333984375), 0),
    ]


def act_quant_ref(x, eps=1e-5):
    x = np.asarray(x, np.float32)
    m = np.abs(x).max(-1, keepdims=True)
    s = F32(127) / np.maximum(m, F32(eps))
    q = np.clip(np.rint(x * s), -128, 127).astype(np.int8)
    return q, s.astype(np.float32)


def act_quant():
    x = f32(0, 0, 0, 0, 127, -127, 2.5, -1.5, 254, 1, 3, -5, 0.1, -0.2, 0.05, 0.3).reshape(4, 4)
    q, s = act_quant_ref(x)
    qy, sy = act_quant_ref(f32(0.5, -0.25, 0.0, -0.5).reshape(1, 4), 1.0)
    qz, sz = act_quant_ref(f32(1.0, -2.0, 4.0, -0.5, 0.25, -0.125).reshape(2, 1, 3))
    return [(q, 0), (s, 0), (qy, 0), (sy, 0), (qz, 0), (sz, 0)]


def ternary_matmul():
    xq = np.array([-128, 127, 1, 0, 5, -5, 10, 3], np.int64).reshape(2, 4)
    xs = f32(2.0, 0.5).reshape(2, 1)
    w = np.array([1, 1, 1, 1, -1, 0, 1, 0, 0, -1, -1, 1], np.int64).reshape(3, 4)
    y = (xq @ w.T).astype(np.float32) / xs * F32(0.25)
    aq, as_ = act_quant_ref(f32(1, -2, 0.5, 4, 0, 0, 0, 0).reshape(2, 4))
    wt = np.array([[1, 0, -1, 1], [0, 0, 1, -1]], np.int64)
    bl = (aq.astype(np.int64) @ wt.T).astype(np.float32) / as_ * F32(0.75)
    return [(y, 0), (bl, 0)]


FILES = {
    "binary": binary, "unary": unary, "clip": clip, "softmax": softmax, "norm": norm, "reduce": reduce,
    "shape": shape, "transpose": transpose, "concat": concat, "slice": slice_, "gather": gather,
    "cast": cast, "where": where, "matmul": matmul, "rope": rope, "attention": attention,
    "constant": constant, "act_quant": act_quant, "ternary_matmul": ternary_matmul,
}

# ---- snapshot parsing and comparison --------------------------------------------------------------


def parse_snapshot(path):
    results = []
    for line in path.read_text().split("---", 2)[2].splitlines():
        line = line.strip()
        if m := re.match(r"result (\d+): tensor<(.*)>$", line):
            results.append((m.group(2), []))
        elif line.startswith("["):
            results[-1][1].extend(v.strip() for v in line[1:-1].split(",") if v.strip())
        elif line.startswith("error:"):
            results.append(("error", [line]))
    return results


def ordered(v):
    """float32 bits mapped to a monotonic integer line (for ulp distances)."""
    b = np.asarray(v, np.float32).view(np.int32).astype(np.int64)
    return np.where(b < 0, -(b & 0x7FFFFFFF), b)


def compare(name, i, ty, got, want, tol):
    elem = ty.split("x")[-1]
    want = np.asarray(want)
    shape = [int(d) for d in ty.split("x")[:-1]]
    if list(want.shape) != shape:
        return f"shape {list(want.shape)} expected, snapshot has {shape}"
    flat = want.ravel()
    if len(got) != flat.size:
        return f"{flat.size} values expected, snapshot has {len(got)}"
    if elem == "bool":
        ok = [g == str(bool(w)).lower() for g, w in zip(got, flat)]
        return None if all(ok) else f"expected {flat.tolist()}, got {got}"
    if elem in ("i8", "i32", "i64", "u8", "ternary"):
        ok = [int(g) == int(w) for g, w in zip(got, flat)]
        return None if all(ok) else f"expected {flat.tolist()}, got {got}"
    g = np.array([float(x) for x in got], np.float32)
    w = flat.astype(np.float32)
    nan_ok = np.isnan(g) == np.isnan(w)
    both = ~np.isnan(g) & ~np.isnan(w)
    same_sign = np.signbit(g[both]) == np.signbit(w[both])
    ulps = np.abs(ordered(g[both]) - ordered(w[both]))
    worst = int(ulps.max()) if ulps.size else 0
    if not nan_ok.all() or worst > tol or (tol == 0 and not same_sign.all()):
        return f"expected {w.tolist()}, got {g.tolist()} (max {worst} ulp, tolerance {tol})"
    return f"ok ({worst} ulp)" if worst else None


def main():
    failed = 0
    for name, fn in FILES.items():
        path = HERE / f"{name}.snap"
        snap = parse_snapshot(path)
        want = fn()
        if len(snap) != len(want):
            print(f"{name}: {len(want)} results expected, snapshot has {len(snap)}")
            failed += 1
            continue
        for i, ((ty, got), (w, tol)) in enumerate(zip(snap, want)):
            msg = compare(name, i, ty, got, w, tol)
            status = "ok" if msg is None or msg.startswith("ok") else "MISMATCH"
            failed += status != "ok"
            detail = "" if msg is None else ": " + msg.removeprefix("ok ").strip("()")
            print(f"{name} result {i}: {status}{detail}")
    print("all snapshot values agree" if not failed else f"{failed} mismatch(es)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
