"""The speed reference of `bitnetc train`: the same model (a `bitnetc synth` preset's sizes), the same
quantization-aware training math (the straight-through BitLinear of scripts/fixtures/make_train_step.py),
the same optimizer (AdamW, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on matrices, clipping at 1) and
batch shape, in PyTorch on the CPU, eager mode. It reports tokens/s and the losses, so the note can
give bitnetc's tokens/s as a ratio measured in the same run.

    python scripts/bench_train_torch.py --preset tiny --steps 20 --batch 4 --seq 64 --threads 1

It trains on random token ids (the speed does not depend on which tokens), so it needs no tokenizer.
"""

import argparse
import math
import time

import torch

PRESETS = {  # (vocab, hidden, intermediate, layers, heads, kv_heads), frontend/src/synth.rs
    "micro": (512, 64, 128, 2, 4, 2),
    "tiny": (1000, 256, 512, 4, 8, 4),
}

ap = argparse.ArgumentParser()
ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
ap.add_argument("--steps", type=int, default=20)
ap.add_argument("--batch", type=int, default=4)
ap.add_argument("--seq", type=int, default=64)
ap.add_argument("--threads", type=int, default=1)
ap.add_argument("--lr", type=float, default=2e-3)
a = ap.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
V, H, F, L, NH, NKV = PRESETS[a.preset]
D, S, EPS, THETA = H // NH, a.seq, 1e-5, 500000.0

P = {"embed": torch.randn(V, H) * 0.02, "norm": torch.ones(H)}
for l in range(L):
    for n, shape in {"in": (H,), "post": (H,), "attn_sub": (H,), "ffn_sub": (F,)}.items():
        P[f"{l}.{n}"] = torch.ones(shape)
    for n, (o, i) in {"q": (H, H), "k": (NKV * D, H), "v": (NKV * D, H), "o": (H, H),
                      "gate": (F, H), "up": (F, H), "down": (H, F)}.items():
        P[f"{l}.{n}"] = torch.randn(o, i) * 0.02
for v in P.values():
    v.requires_grad_(True)


def rms(x, w):
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS))


def bitlinear(x, w):
    s = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    xq = x + (((x * s).round().clamp(-128, 127) / s) - x).detach()
    sw = 1.0 / w.abs().mean().clamp(min=1e-5)
    wq = w + (((w * sw).round().clamp(-1, 1) / sw) - w).detach()
    return xq @ wq.t()


inv_freq = 1.0 / (THETA ** (torch.arange(0, D, 2).float() / D))
ang = torch.arange(S).float()[:, None] * inv_freq[None, :]
emb = torch.cat([ang, ang], -1)
COS, SIN = emb.cos()[None, :, None, :], emb.sin()[None, :, None, :]
MASK = torch.triu(torch.ones(S, S, dtype=torch.bool), 1)


def rope(x):
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return x * COS + torch.cat([-x2, x1], -1) * SIN


def forward(ids):  # ids [B, S]
    B = ids.shape[0]
    x = P["embed"][ids]
    for l in range(L):
        w = lambda n: P[f"{l}.{n}"]
        h = rms(x, w("in"))
        q = rope(bitlinear(h, w("q")).view(B, S, NH, D))
        k = rope(bitlinear(h, w("k")).view(B, S, NKV, D)).repeat_interleave(NH // NKV, 2)
        v = bitlinear(h, w("v")).view(B, S, NKV, D).repeat_interleave(NH // NKV, 2)
        sc = torch.einsum("bshd,bthd->bhst", q, k) / math.sqrt(D)
        o = torch.einsum("bhst,bthd->bshd", sc.masked_fill(MASK, float("-inf")).softmax(-1), v)
        x = x + bitlinear(rms(o.reshape(B, S, H), w("attn_sub")), w("o"))
        m = rms(x, w("post"))
        f = torch.relu(bitlinear(m, w("gate"))) ** 2 * bitlinear(m, w("up"))
        x = x + bitlinear(rms(f, w("ffn_sub")), w("down"))
    return rms(x, P["norm"]) @ P["embed"].t()


decay = [v for k, v in P.items() if v.dim() == 2]
no_decay = [v for k, v in P.items() if v.dim() == 1]
opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                        lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
losses = []
start = None
for step in range(a.steps + 2):
    if step == 2:  # two warm-up steps excluded from the timing
        start = time.perf_counter()
    ids = torch.randint(0, V, (a.batch, S + 1))
    logits = forward(ids[:, :S])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), ids[:, 1:].reshape(-1))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
    opt.step()
    losses.append(loss.item())
secs = time.perf_counter() - start
print(f"torch {torch.__version__} preset {a.preset} threads {a.threads}: {a.steps} steps of "
      f"{a.batch}x{S} tokens in {secs:.2f} s, {a.steps * a.batch * S / secs:.0f} tokens/s")
