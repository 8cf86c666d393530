#!/usr/bin/env python3
"""Drives `bitnetc serve` with the official `openai` Python client, as users do (run by .ci/run).

Usage: serve_openai_client.py PATH/TO/bitnetc

Starts the server on a free loopback port with hf-tiny (`tiny`) and a chat-capable copy of it
(`chat`: its tokenizer gets `<|eot_id|>` as id 999, as tests/serve/harness.rs does), then checks
through the client: the model list; completions from text and from token ids against transformers'
greedy tokens and text (tests/fixtures/hf-tiny/packed/reference.json), streamed with usage and not;
a stop string; chat completions streamed and not (the same reply both ways); and the errors the
client raises (404 unknown model, 400 naming the field, 401 wrong key). Stops the server with
SIGTERM and expects a clean exit. Exits non-zero on the first failed check.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import openai

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKED = os.path.join(ROOT, "tests", "fixtures", "hf-tiny", "packed")
KEY = "ci-key"


def make_chat_model(tmp):
    """hf-tiny/packed with `<|eot_id|>` taking id 999 (the merges that make or use it removed)."""
    out = os.path.join(tmp, "chat-tiny")
    os.makedirs(out)
    for f in ["config.json", "model.safetensors", "tokenizer_config.json", "generation_config.json"]:
        shutil.copy(os.path.join(PACKED, f), os.path.join(out, f))
    with open(os.path.join(PACKED, "tokenizer.json")) as f:
        tok = json.load(f)
    vocab = tok["model"]["vocab"]
    old = next(t for t, i in vocab.items() if i == 999)
    del vocab[old]
    vocab["<|eot_id|>"] = 999

    def parts(m):
        return m.split(" ") if isinstance(m, str) else list(m)

    tok["model"]["merges"] = [
        m for m in tok["model"]["merges"] if old not in parts(m) and "".join(parts(m)) != old
    ]
    tok["added_tokens"].append({"id": 999, "content": "<|eot_id|>", "single_word": False,
                                "lstrip": False, "rstrip": False, "normalized": False,
                                "special": True})
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    return out


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def expect_error(kind, param, call):
    """`call()` must raise `kind` whose error object names `param`."""
    try:
        call()
    except kind as e:
        body = e.body if isinstance(e.body, dict) else {}
        body = body.get("error", body)
        check(body.get("param") == param, f"{kind.__name__}: param {body.get('param')!r}, want {param!r}")
        return
    raise AssertionError(f"no {kind.__name__}")


def run_checks(base):
    ref = json.load(open(os.path.join(PACKED, "reference.json")))
    client = openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0)

    ids = sorted(m.id for m in client.models.list())
    check(ids == ["chat", "tiny"], f"models {ids}")

    # Text in: transformers' greedy text; token ids in: its greedy tokens.
    c = client.completions.create(model="tiny", prompt=ref["text_prompt"], max_tokens=16,
                                  temperature=0, extra_body={"return_token_ids": True})
    d = c.to_dict()
    check(c.object == "text_completion", c.object)
    check(c.choices[0].text == ref["text_greedy_decoded"], f"text {c.choices[0].text!r}")
    check(d["choices"][0]["token_ids"] == ref["text_greedy_new_tokens"], "text prompt tokens")
    check(d["prompt_token_ids"] == ref["text_prompt_ids"], "prompt tokens")
    check(c.choices[0].finish_reason == "length", c.choices[0].finish_reason)
    check((c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens) == (16, 16, 32),
          f"usage {c.usage}")
    c = client.completions.create(model="tiny", prompt=ref["prompt_ids"], max_tokens=16,
                                  temperature=0, extra_body={"return_token_ids": True})
    check(c.to_dict()["choices"][0]["token_ids"] == ref["greedy_new_tokens"], "token prompt tokens")

    # Streamed, with usage.
    chunks = list(client.completions.create(model="tiny", prompt=ref["text_prompt"], max_tokens=16,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    check(text == ref["text_greedy_decoded"], f"streamed {text!r}")
    check(chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16, "usage chunk")
    check([ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length", "finish")

    # A stop string cuts the text.
    want = ref["text_greedy_decoded"]
    c = client.completions.create(model="tiny", prompt=ref["text_prompt"], max_tokens=16,
                                  temperature=0, stop="ormal")
    check(c.choices[0].text == want[:want.index("ormal")], f"stop {c.choices[0].text!r}")
    check(c.choices[0].finish_reason == "stop", c.choices[0].finish_reason)

    # Chat, whole and streamed: the same reply.
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Return a new sorted list"}]
    r = client.chat.completions.create(model="chat", messages=messages, max_tokens=24,
                                       temperature=0)
    check(r.object == "chat.completion", r.object)
    check(r.choices[0].message.role == "assistant", r.choices[0].message.role)
    check(r.choices[0].finish_reason in ("stop", "length"), r.choices[0].finish_reason)
    n = r.usage.completion_tokens
    check(0 < n <= 24 and r.usage.total_tokens == r.usage.prompt_tokens + n, f"usage {r.usage}")
    chunks = list(client.chat.completions.create(model="chat", messages=messages, max_tokens=24,
                                                 temperature=0, stream=True,
                                                 stream_options={"include_usage": True}))
    check(chunks[0].choices[0].delta.role == "assistant", "first chunk's role")
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check(text == r.choices[0].message.content, f"streamed chat {text!r}")
    check(chunks[-1].usage.completion_tokens == n, "chat usage chunk")

    # Errors, as the client raises them.
    expect_error(openai.NotFoundError, "model",
                 lambda: client.completions.create(model="gpt-4", prompt="hi"))
    expect_error(openai.BadRequestError, "messages",
                 lambda: client.chat.completions.create(model="chat", messages=[]))
    expect_error(openai.BadRequestError, "max_tokens",
                 lambda: client.completions.create(model="tiny", prompt="hi", max_tokens=100000))
    expect_error(openai.BadRequestError, "temperature",
                 lambda: client.completions.create(model="tiny", prompt="hi", temperature=5))
    wrong = openai.OpenAI(base_url=base + "/v1", api_key="wrong", max_retries=0)
    expect_error(openai.AuthenticationError, None, lambda: wrong.models.list())


def main():
    bitnetc = os.path.abspath(sys.argv[1])
    with tempfile.TemporaryDirectory() as tmp:
        chat = make_chat_model(tmp)
        env = dict(os.environ, BITNETC_AUDIT_LOG="off", BITNETC_API_KEY=KEY)
        proc = subprocess.Popen(
            [bitnetc, "serve", f"tiny={PACKED}", f"chat={chat}", "--port", "0", "--slots", "2",
             "--threads", "2", "--context", "128"],
            env=env, stderr=subprocess.PIPE, text=True)
        try:
            line = ""
            while not line.startswith("listening on"):
                line = proc.stderr.readline()
                check(line, "no address on stderr")
            base = line.split()[2]
            for _ in range(3000):
                try:
                    with urllib.request.urlopen(base + "/health") as r:
                        if r.status == 200:
                            break
                except urllib.error.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError("the models did not load")
            run_checks(base)
        finally:
            proc.terminate()
            rest = proc.stderr.read()
            code = proc.wait(timeout=120)
        check(code == 0 and rest.endswith("stopped\n"), f"exit {code}: {rest}")
    print("openai client: every check passed")


if __name__ == "__main__":
    main()
