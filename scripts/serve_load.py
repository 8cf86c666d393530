#!/usr/bin/env python3
"""Load benchmark of `bitnetc serve`: concurrent streaming clients over real HTTP (stdlib only).

Usage: serve_load.py PATH/TO/bitnetc --preset small|2b4t [--clients 1,4,8,16] [--requests 3]
                     [--max-tokens 32] [--slots 16] [--threads 2] [--json OUT]

Prepares the preset (`bitnetc synth`, random weights at the named sizes) with a real tokenizer of
that vocabulary, converted by transformers from the GGUF vocabularies in tests/fixtures/vocab (Llama
2's 32000-token SentencePiece for `small`, Llama 3's 128256-token BPE for `2b4t`, the tokenizer of
microsoft/bitnet-b1.58-2B-4T), in a cache folder. Starts `bitnetc serve` on a free loopback port with
`--slots`, and for each client count runs that many clients at once, each sending `--requests`
streamed completions one after another (different prompts, greedy, `max_tokens`, one chunk per
token through `return_token_ids`). Reports per client count: aggregate decode tokens per second
(completion tokens of all requests ÷ the wall time of the round), time to first token and
inter-token latency percentiles, errors, and the speedup over one client, as a Markdown table.

Not run by tests or CI (it needs transformers and takes minutes); docs/serving.md has its numbers.
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCABS = {"small": "ggml-vocab-llama-spm.gguf", "2b4t": "ggml-vocab-llama-bpe.gguf"}
WORDS = ("river mountain signal lantern harbor orchard copper meadow violet engine "
         "compass thunder marble garden rocket pebble winter canyon").split()


def prepare(bitnetc, preset):
    """The preset's checkpoint with a tokenizer, made once under the user's cache folder."""
    cache = os.path.join(os.path.expanduser("~/.cache/bitnetc/serve-load"), preset)
    if os.path.isfile(os.path.join(cache, "tokenizer.json")):
        return cache
    tmp = cache + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    subprocess.run([bitnetc, "--audit-log", "off", "synth", "--preset", preset, "-o", tmp], check=True)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(os.path.join(ROOT, "tests", "fixtures", "vocab"),
                                        gguf_file=VOCABS[preset])
    tok.save_pretrained(tmp)
    os.rename(tmp, cache)
    return cache


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, timeout=900):
    start = time.time()
    while time.time() - start < timeout:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("the server was not ready in time")


def one_request(port, prompt, max_tokens):
    """A streamed completion: (status, ttft, [inter-token gaps], completion tokens, seconds)."""
    body = json.dumps({
        "model": "bench", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True,
    })
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    if r.status != 200:
        r.read()
        return r.status, None, [], 0, time.perf_counter() - t0
    first, last, gaps, tokens = None, None, [], 0
    while True:
        line = r.readline()
        if not line:
            break
        line = line.strip()
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        event = json.loads(line[6:])
        if event.get("usage"):
            tokens = event["usage"]["completion_tokens"]
        for choice in event.get("choices", []):
            if choice.get("token_ids"):
                now = time.perf_counter()
                if first is None:
                    first = now - t0
                else:
                    gaps.append(now - last)
                last = now
    return 200, first, gaps, tokens, time.perf_counter() - t0


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


def round_of(port, clients, requests, max_tokens):
    results, lock = [], threading.Lock()

    def client(j):
        for i in range(requests):
            words = " ".join(WORDS[(i * 7 + j * 3 + k) % len(WORDS)] for k in range(8 + j % 5))
            prompt = f"Client {j}, request {i}: {words}."
            out = one_request(port, prompt, max_tokens)
            with lock:
                results.append(out)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(j,)) for j in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    ok = [r for r in results if r[0] == 200]
    tokens = sum(r[3] for r in ok)
    ttft = [r[1] for r in ok if r[1] is not None]
    itl = [g for r in ok for g in r[2]]
    return {
        "clients": clients, "requests": len(results), "errors": len(results) - len(ok),
        "completion_tokens": tokens, "wall_s": wall, "decode_tok_s": tokens / wall,
        "ttft_ms": {p: 1e3 * percentile(ttft, p) for p in (50, 95, 99)},
        "itl_ms": {p: 1e3 * percentile(itl, p) for p in (50, 95, 99)},
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bitnetc")
    ap.add_argument("--preset", choices=sorted(VOCABS), required=True)
    ap.add_argument("--clients", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--slots", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--json")
    args = ap.parse_args()
    model = prepare(args.bitnetc, args.preset)
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [args.bitnetc, "--audit-log", "off", "serve", f"bench={model}", "--port", str(port),
         "--slots", str(args.slots), "--threads", str(args.threads), "--context", str(args.context),
         "--queue", "256"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(port, proc)
        one_request(port, "Warm up.", 4)
        rounds = [round_of(port, int(c), args.requests, args.max_tokens)
                  for c in args.clients.split(",")]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    base = next((r["decode_tok_s"] for r in rounds if r["clients"] == 1), None)
    print(f"preset {args.preset}, {args.slots} slots, {args.threads} threads, "
          f"{args.requests} requests per client, max_tokens {args.max_tokens}")
    print("| clients | requests | errors | decode tok/s (all) | vs 1 client | TTFT p50 / p95 / p99 ms "
          "| inter-token p50 / p95 / p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for r in rounds:
        vs = f"{r['decode_tok_s'] / base:.2f}×" if base else "n/a"
        t, i = r["ttft_ms"], r["itl_ms"]
        print(f"| {r['clients']} | {r['requests']} | {r['errors']} | {r['decode_tok_s']:.1f} | {vs} "
              f"| {t[50]:.0f} / {t[95]:.0f} / {t[99]:.0f} | {i[50]:.0f} / {i[95]:.0f} / {i[99]:.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"preset": args.preset, "slots": args.slots, "threads": args.threads,
                       "rounds": rounds}, f, indent=2)
    if any(r["errors"] for r in rounds):
        sys.exit("some requests failed")


if __name__ == "__main__":
    main()
