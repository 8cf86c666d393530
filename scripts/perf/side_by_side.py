#!/usr/bin/env python3
"""bitnetc vs llama.cpp and ik_llama.cpp, side by side on the same synthetic 2B-4T-shaped GGUFs.

Prefill (pp128) and decode (tg, batch 1) tokens/s, interleaved round-robin (order rotated each
round), idle-gated with perfwin.py (timing lock, others_pct per run).

Environment (relative defaults):
  REFS     peer trees (default: refs)           -> $REFS/llama.cpp/build/bin/llama-bench
  MODELS   GGUF folder (default: $REFS/models)  -> synth-2b4t-tq2_0{,-embf16,-embq8}.gguf
  BITNETC  bitnetc binary (default: bitnetc on PATH)
  STEPS    decode tokens per run (64); PP prompt tokens (128); REP in-process repetitions (2)
  MAXWAIT / WINDOW_MAX  see perfwin.py / e2e_driver.py

usage: side_by_side.py --threads 2 --rounds 3 --systems ll_q6k,ll_f16,bnc_f16_i8,... --out FILE.jsonl
       side_by_side.py --summarize FILE.jsonl

Measured quantities (both systems):
  llama-bench -p PP -n STEPS -r REP -t N -o json: pp = PP / prompt-eval time (one batch), tg = STEPS /
    time of STEPS single-token decodes starting from an empty context; avg over REP (after a warmup).
  bitnetc bench --prompt-len PP --steps STEPS --repeat REP --no-baseline --json: prefill = PP / best
    prompt time over REP; decode = pooled per-token decode latencies over REP (after the prompt, so
    its KV is PP..PP+STEPS long; the attention difference is ~1-2 % of the bytes read).
Weights read per decoded token (effective GB/s = bytes x tok/s): the ternary projections
  (2,084,044,800 weights) in TQ2_0 = 2.0625 bits/weight, plus the tied head (128256 x 2560) in the
  head's format (Q6_K 6.5625, Q8_0 8.5, F16 16 bits/weight); for bitnetc its own
  read_bytes_per_token (what it actually streams after repacking).
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import perfwin  # noqa: E402

REFS = os.environ.get("REFS", "refs")
MODELS = os.environ.get("MODELS", os.path.join(REFS, "models"))
BITNETC = os.environ.get("BITNETC", "bitnetc")
LL_BENCH = os.environ.get("LLAMA_BENCH", os.path.join(REFS, "llama.cpp/build/bin/llama-bench"))
IK_BENCH = os.environ.get("IK_BENCH", os.path.join(REFS, "ik_llama.cpp/build/bin/llama-bench"))
STEPS = int(os.environ.get("STEPS", 64))
PP = int(os.environ.get("PP", 128))
REP = int(os.environ.get("REP", 2))

N_TERNARY = 30 * (2 * 2560 * 2560 + 2 * 640 * 2560 + 3 * 6912 * 2560)  # 2,084,044,800
N_HEAD = 128256 * 2560
BPW = {"tq2_0": 2.0625, "iq2_bn": 2.0, "q6_k": 6.5625, "q8_0": 8.5, "f16": 16.0}


def ll_bytes(head_fmt, body="tq2_0"):
    return N_TERNARY * BPW[body] / 8 + N_HEAD * BPW[head_fmt] / 8


def llama(model, head_fmt):
    def cmd(t):
        return [LL_BENCH, "-m", os.path.join(MODELS, model), "-p", str(PP), "-n", str(STEPS), "-r", str(REP),
                "-t", str(t), "-o", "json"]
    return {"cmd": cmd, "kind": "llama", "format": f"TQ2_0 + {head_fmt.upper()} embd/head", "head": head_fmt,
            "bytes": ll_bytes(head_fmt)}


def ik(model, head_fmt):
    """ik_llama.cpp (IQ2_BN projections), with run-time repacking into its row-interleaved layout (-rtr 1)."""
    def cmd(t):
        return [IK_BENCH, "-m", os.path.join(MODELS, model), "-p", str(PP), "-n", str(STEPS), "-r", str(REP),
                "-t", str(t), "-rtr", "1", "-o", "json"]
    return {"cmd": cmd, "kind": "llama", "format": f"IQ2_BN + {head_fmt.upper()} embd/head (-rtr)", "head": head_fmt,
            "bytes": ll_bytes(head_fmt, "iq2_bn")}


def bnc(model, head, fmt):
    def cmd(t):
        return [BITNETC, "bench", os.path.join(MODELS, model), "--threads", str(t), "--prompt-len", str(PP),
                "--steps", str(STEPS), "--repeat", str(REP), "--no-baseline", "--head-dtype", head, "--json"]
    return {"cmd": cmd, "kind": "bnc", "format": fmt, "head": head}


SYSTEMS = {
    "ll_q6k": llama("synth-2b4t-tq2_0.gguf", "q6_k"),
    "ll_f16": llama("synth-2b4t-tq2_0-embf16.gguf", "f16"),
    "ll_q8": llama("synth-2b4t-tq2_0-embq8.gguf", "q8_0"),
    "ik_q6k": ik("synth-2b4t-iq2_bn.gguf", "q6_k"),
    "bnc_f16_auto": bnc("synth-2b4t-tq2_0-embf16.gguf", "auto", "TQ2_0 gguf, F16 embd"),
    "bnc_f16_f16": bnc("synth-2b4t-tq2_0-embf16.gguf", "f16", "TQ2_0 gguf, F16 embd"),
    "bnc_f16_i8": bnc("synth-2b4t-tq2_0-embf16.gguf", "i8", "TQ2_0 gguf, F16 embd"),
    "bnc_f16_q4": bnc("synth-2b4t-tq2_0-embf16.gguf", "q4", "TQ2_0 gguf, F16 embd"),
    "bnc_q8_auto": bnc("synth-2b4t-tq2_0-embq8.gguf", "auto", "TQ2_0 gguf, Q8_0 embd"),
    "bnc_q8_i8": bnc("synth-2b4t-tq2_0-embq8.gguf", "i8", "TQ2_0 gguf, Q8_0 embd"),
}


def parse(sysdef, r):
    j = json.loads(r["stdout"])
    if sysdef["kind"] == "bnc":
        b = j["builds"][0]
        return {"pp_ts": b["prefill_tok_s"], "tg_ts": b["decode_tok_s"], "compile_s": b["compile_s"],
                "weight_bytes": b["weight_bytes"], "bytes_per_token": b["read_bytes_per_token"],
                "latency_ms": b["latency_ms"], "peak_rss_bytes": b["peak_rss_bytes"],
                "probe_bw_gb_s": j["read_bandwidth_gb_s"]}
    out = {"bytes_per_token": sysdef["bytes"]}
    for e in j:
        key = "pp" if e["n_prompt"] > 0 and e["n_gen"] == 0 else "tg"
        out[key + "_ts"] = e["avg_ts"]
        out[key + "_samples"] = e.get("samples_ts")
        out["model_size"] = e.get("model_size")
        out["build_commit"] = e.get("build_commit")
    return out


def cpu_pct(stderr):
    for line in stderr.splitlines():
        if "Percent of CPU" in line:
            return line.split(":")[1].strip()
    return None


def run(a):
    systems = a.systems.split(",")
    for s in systems:
        assert s in SYSTEMS, s
    env = dict(os.environ, BITNETC_AUDIT_LOG="off")
    window_max = float(os.environ.get("WINDOW_MAX", 240))
    with open(a.out, "a") as fo:
        for rnd in range(a.rounds):
            order = systems[rnd % len(systems):] + systems[:rnd % len(systems)]
            idle = perfwin.wait_idle()
            print(f"; round {rnd} t={a.threads}: idle check {idle}", flush=True)
            lock = perfwin.Lock().__enter__()
            try:
                for s in order:
                    if lock.elapsed() > window_max:
                        lock.__exit__()
                        idle = perfwin.wait_idle()
                        print(f"; (new window) idle check {idle}", flush=True)
                        lock = perfwin.Lock().__enter__()
                    pre = perfwin.wait_others_quiet()
                    sd = SYSTEMS[s]
                    cmd = sd["cmd"](a.threads)
                    r = perfwin.timed(cmd, env=env)
                    rec = {"system": s, "kind": sd["kind"], "format": sd["format"], "head": sd["head"],
                           "threads": a.threads, "round": rnd, "tag": a.tag,
                           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "cmd": " ".join(cmd), "rc": r["rc"], "wall_s": r["wall_s"], "maxrss_kb": r["maxrss_kb"],
                           "cpu_pct": cpu_pct(r["stderr"]), "own_cpu_s": r["own_cpu_s"],
                           "others_pct": r["others_pct"], "load1_before": pre["load1"], "window_idle": idle}
                    try:
                        rec.update(parse(sd, r))
                    except Exception as e:  # keep the raw output
                        rec["parse_error"] = repr(e)
                        rec["stdout_tail"] = r["stdout"][-2000:]
                    rec["stderr_tail"] = r["stderr"][-1500:]
                    if "tg_ts" in rec:
                        rec["eff_gb_s"] = rec["bytes_per_token"] * rec["tg_ts"] / 1e9
                    fo.write(json.dumps(rec) + "\n")
                    fo.flush()
                    print(f"{s:14s} t={a.threads} r={rnd} pp={rec.get('pp_ts', float('nan')):7.2f} "
                          f"tg={rec.get('tg_ts', float('nan')):6.2f} GB/s={rec.get('eff_gb_s', float('nan')):5.1f} "
                          f"compile={rec.get('compile_s', 0):5.1f}s wall={r['wall_s']:6.1f}s cpu={rec['cpu_pct']} "
                          f"others={r['others_pct']}% load={pre['load1']} rc={r['rc']}", flush=True)
            finally:
                lock.__exit__()


def summarize(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    groups = {}
    for r in recs:
        if "tg_ts" in r:
            groups.setdefault((r["system"], r["threads"]), []).append(r)
    print("| system | format | head | threads | n | decode tok/s median [min-max] | prefill tok/s median [min-max] "
          "| MB read/token | eff. GB/s | compile s | others_pct |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (s, t), rs in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        tg = [r["tg_ts"] for r in rs]
        pp = [r["pp_ts"] for r in rs]
        mb = rs[0]["bytes_per_token"] / 1e6
        comp = [r["compile_s"] for r in rs if "compile_s" in r]
        print(f"| {s} | {rs[0]['format']} | {rs[0]['head']} | {t} | {len(rs)} | {statistics.median(tg):.2f} "
              f"[{min(tg):.2f}-{max(tg):.2f}] | {statistics.median(pp):.1f} [{min(pp):.1f}-{max(pp):.1f}] | "
              f"{mb:.0f} | {mb * statistics.median(tg) / 1e3:.1f} | "
              f"{statistics.median(comp):.1f} | " if comp else
              f"| {s} | {rs[0]['format']} | {rs[0]['head']} | {t} | {len(rs)} | {statistics.median(tg):.2f} "
              f"[{min(tg):.2f}-{max(tg):.2f}] | {statistics.median(pp):.1f} [{min(pp):.1f}-{max(pp):.1f}] | "
              f"{mb:.0f} | {mb * statistics.median(tg) / 1e3:.1f} | - | ", end="")
        print(",".join(str(r["others_pct"]) for r in rs) + " |")
    # The ratios: the best bitnetc system against the best peer, per thread count, by medians.
    for t in sorted({t for _, t in groups}):
        for key, what in (("tg_ts", "decode"), ("pp_ts", "prefill")):
            best = {}
            for (s, tt), rs in groups.items():
                if tt != t:
                    continue
                side = "bitnetc" if rs[0]["kind"] == "bnc" else "peer"
                m = statistics.median(r[key] for r in rs)
                if side not in best or m > best[side][1]:
                    best[side] = (s, m)
            if len(best) == 2:
                (bs, bv), (ps, pv) = best["bitnetc"], best["peer"]
                print(f"threads {t}, {what}: best bitnetc {bs} {bv:.2f} tok/s / best peer {ps} {pv:.2f} tok/s"
                      f" = {bv / pv:.2f}x")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--systems")
    ap.add_argument("--out")
    ap.add_argument("--tag", default="")
    ap.add_argument("--summarize")
    a = ap.parse_args()
    if a.summarize:
        summarize(a.summarize)
    else:
        run(a)


if __name__ == "__main__":
    main()
