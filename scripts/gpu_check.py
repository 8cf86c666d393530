#!/usr/bin/env python3
"""The GPU check's measurements and report (run by scripts/gpu-check.sh; Python 3 with numpy).

For every bundled model fixture the CUDA backend compiles, on CUDA device 0 against the CPU backend
of the same bitnetc (its lm_head in f16, as the CUDA lowering stores it):
  - logits of the fixture's prompt: the largest difference relative to the largest |logit|, and
    whether every position's argmax agrees;
  - 16 greedy tokens: equal to the CPU's, and to transformers' where the fixture records them.
Then a CUDA artifact (`compile --target cuda`) run from the file; then `bench --backend cuda` on the
2b4t preset: each ternary matmul kernel against the device's copy bandwidth, prefill, and decode
with and without the CUDA graph. Writes gpu.json and gpu.md into --out.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "tests", "fixtures")
DEFAULT_PROMPT = [1, 17, 230, 5, 999, 42, 7, 300, 12, 64, 3]
LOGIT_TOLERANCE = 1e-2


def fixtures():
    out = []
    for form in ("online", "packed", "packed_bitlinear"):
        out.append(("hf-tiny/" + form, os.path.join(FIX, "hf-tiny", form)))
    for v in ("ternary", "ternary_tied_bias", "ternary_llama3", "qwen2_dense"):
        out.append(("hf-llama/" + v, os.path.join(FIX, "hf-llama", v)))
    for d in ("gguf-tiny", "gguf-llama"):
        for f in sorted(os.listdir(os.path.join(FIX, d))):
            if f.endswith(".gguf"):
                out.append((d + "/" + f, os.path.join(FIX, d, f)))
    return out


def reference(path):
    ref = os.path.join(path if os.path.isdir(path) else os.path.dirname(path), "reference.json")
    if not os.path.exists(ref):
        return {}
    with open(ref) as f:
        r = json.load(f)
    return r if os.path.isdir(path) else {}


def sh(args, timeout):
    t = time.time()
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    return p, time.time() - t


def check_fixture(bin, name, path, tmp):
    r = reference(path)
    prompt = r.get("prompt_ids") or DEFAULT_PROMPT
    want = r.get("greedy_new_tokens")
    toks = ",".join(str(t) for t in prompt)
    row = {"fixture": name, "prompt": len(prompt)}
    npy = {}
    for backend in ("cuda", "cpu"):
        out = os.path.join(tmp, f"{name.replace('/', '_')}.{backend}.npy")
        p, _ = sh([bin, "logits", path, "--tokens", toks, "--backend", backend, "-o", out], 300)
        if p.returncode != 0:
            row["error"] = f"logits --backend {backend}: {p.stderr.strip()[-400:]}"
            return row
        npy[backend] = np.load(out)[0]
    a, b = npy["cuda"], npy["cpu"]
    row["max_rel_logit_diff"] = float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))
    row["argmax_agree"] = bool((a.argmax(-1) == b.argmax(-1)).all())
    gen = {}
    for backend in ("cuda", "cpu"):
        p, secs = sh(
            [bin, "run", path, "--tokens", toks, "-n", "16", "--ignore-eos", "--json",
             "--backend", backend, "--head-dtype", "f16"],
            300,
        )
        if p.returncode != 0:
            row["error"] = f"run --backend {backend}: {p.stderr.strip()[-400:]}"
            return row
        gen[backend] = json.loads(p.stdout)["tokens"]
    row["greedy_cuda"] = gen["cuda"]
    row["greedy_equal_cpu"] = gen["cuda"] == gen["cpu"]
    if want is not None:
        row["greedy_equal_transformers"] = gen["cuda"] == want
    row["pass"] = (
        row["argmax_agree"]
        and row["max_rel_logit_diff"] < LOGIT_TOLERANCE
        and row["greedy_equal_cpu"]
        and row.get("greedy_equal_transformers", True)
    )
    return row


def check_artifact(bin, tmp):
    path = os.path.join(FIX, "hf-tiny", "packed")
    art = os.path.join(tmp, "hf-tiny-packed.cuda.bnx")
    p, _ = sh([bin, "compile", path, "--target", "cuda", "--cuda-arch", "sm_90", "-o", art], 300)
    if p.returncode != 0:
        return {"error": "compile --target cuda: " + p.stderr.strip()[-400:]}
    r = reference(path)
    toks = ",".join(str(t) for t in r["prompt_ids"])
    p, _ = sh([bin, "run", art, "--tokens", toks, "-n", "16", "--ignore-eos", "--json",
               "--backend", "cuda"], 300)
    if p.returncode != 0:
        return {"error": "run artifact: " + p.stderr.strip()[-400:]}
    got = json.loads(p.stdout)["tokens"]
    return {"artifact": "hf-tiny/packed --target cuda --cuda-arch sm_90", "greedy": got,
            "pass": got == r["greedy_new_tokens"]}


def bench(bin, preset, prompt_len, steps, repeat, timeout):
    try:
        p, secs = sh([bin, "bench", "--preset", preset, "--backend", "cuda", "--json",
                      "--prompt-len", str(prompt_len), "--steps", str(steps), "--repeat", str(repeat)],
                     timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished within the {timeout:.0f} s left"}
    if p.returncode != 0:
        return {"error": p.stderr.strip()[-800:]}
    out = json.loads(p.stdout)
    out["wall_s"] = secs
    return out


def report(res):
    lines = ["# GPU check", ""]
    lines.append(f"Date: {res['date']} UTC. Device: {res.get('device', '?')}. bitnetc: {res['version']}.")
    lines.append("")
    lines.append("## Parity with the CPU backend (and transformers' greedy tokens where recorded)")
    lines.append("")
    lines.append("| fixture | prompt | max rel. logit diff | argmax agree | greedy = CPU | greedy = transformers | pass |")
    lines.append("|---|---|---|---|---|---|---|")
    for r in res["parity"]:
        if "error" in r:
            lines.append(f"| {r['fixture']} | {r['prompt']} | error: {r['error'][:160]} | | | | no |")
            continue
        tf = r.get("greedy_equal_transformers")
        lines.append(
            f"| {r['fixture']} | {r['prompt']} | {r['max_rel_logit_diff']:.2e} | {r['argmax_agree']} | "
            f"{r['greedy_equal_cpu']} | {'—' if tf is None else tf} | {'yes' if r['pass'] else 'no'} |")
    a = res["artifact"]
    lines.append("")
    lines.append(f"CUDA artifact from a file: {a.get('artifact', '')} {'passes' if a.get('pass') else 'FAILS: ' + str(a.get('error', a.get('greedy')))}")
    b = res["bench"]
    lines.append("")
    lines.append("## 2b4t preset (synthetic weights, BitNet b1.58 2B-4T shapes)")
    lines.append("")
    if "error" in b:
        lines.append("error: " + b["error"])
    else:
        lines.append(f"Copy bandwidth (device to device, read + written): {b['copy_bandwidth_gb_s']:.0f} GB/s.")
        lines.append("")
        lines.append("| ternary matmul kernel (one token; its launches of every layer in a row) | launches | weights MB | µs per round | GB/s | share of copy bandwidth |")
        lines.append("|---|---|---|---|---|---|")
        for k in b["ternary_kernels"]:
            lines.append(f"| {k['kernel']} | {k['launches']} | {k['weight_bytes'] / 1e6:.1f} | {k['us']:.1f} | {k['read_gb_s']:.0f} | {100 * k['share_of_copy_bandwidth']:.1f} % |")
        lines.append("")
        lines.append(f"Prefill ({b['prompt_len']} tokens): {b['prefill_tok_s']:.0f} tok/s. "
                     f"Decode: {b['decode_graph_tok_s']:.1f} tok/s with the CUDA graph (p50 {b['decode_graph_p50_ms']:.3f} ms), "
                     f"{b['decode_no_graph_tok_s']:.1f} tok/s without (p50 {b['decode_no_graph_p50_ms']:.3f} ms).")
        lines.append(f"Compile {b['compile_s']:.1f} s, upload {b['load_s']:.2f} s, {b['weight_bytes'] / 1e9:.2f} GB of weights.")
    lines.append("")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="2b4t")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-bench", action="store_true")
    ap.add_argument("--deadline", type=float, default=460,
                    help="seconds from the start by which the benchmark must end")
    a = ap.parse_args()
    t0 = time.time()
    os.makedirs(a.out, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "version": subprocess.run([a.bin, "--version"], capture_output=True, text=True).stdout.strip()}
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        res["device"] = smi.stdout.strip()
    except Exception as e:  # noqa: BLE001 - a report line, not a failure
        res["device"] = f"nvidia-smi: {e}"
    with tempfile.TemporaryDirectory() as tmp:
        res["parity"] = []
        for name, path in fixtures():
            t = time.time()
            try:
                row = check_fixture(a.bin, name, path, tmp)
            except Exception as e:  # noqa: BLE001
                row = {"fixture": name, "prompt": 0, "error": repr(e)}
            row["seconds"] = round(time.time() - t, 1)
            print(json.dumps(row), flush=True)
            res["parity"].append(row)
        try:
            res["artifact"] = check_artifact(a.bin, tmp)
        except Exception as e:  # noqa: BLE001
            res["artifact"] = {"error": repr(e)}
        print(json.dumps(res["artifact"]), flush=True)
    res["bench"] = {"error": "skipped"} if a.skip_bench else bench(
        a.bin, a.preset, a.prompt_len, a.steps, a.repeat, max(a.deadline - (time.time() - t0), 30))
    print(json.dumps(res["bench"]), flush=True)
    with open(os.path.join(a.out, "gpu.json"), "w") as f:
        json.dump(res, f, indent=1)
    md = report(res)
    with open(os.path.join(a.out, "gpu.md"), "w") as f:
        f.write(md)
    print(md)
    ok = all(r.get("pass") for r in res["parity"]) and res["artifact"].get("pass")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
