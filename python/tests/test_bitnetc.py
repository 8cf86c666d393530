"""The Python package on the hf-tiny fixture: an artifact compiled with bitnetc.compile generates
transformers' greedy tokens (the fixture's reference) and `bitnetc run`'s (when BITNETC_BIN names
the binary), streams text, gives logits as NumPy arrays close to transformers', returns
validate's and profile's reports as dicts, stops a generation when asked or dropped, and raises bitnetc.Error with a message naming the file or argument."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

import bitnetc

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "hf-tiny" / "packed"
REFERENCE = json.loads((FIXTURE / "reference.json").read_text())
PROMPT = REFERENCE["text_prompt"]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "hf-tiny.bnx"
    assert bitnetc.compile(str(FIXTURE), str(out)) == out
    return out


def greedy(path, prompt=PROMPT, max_tokens=16):
    session = bitnetc.load(str(path), threads=2).session()
    stream = session.generate(prompt, max_tokens=max_tokens)
    text = "".join(stream)
    return stream.tokens, text, stream.stop


def test_artifact_generates_the_reference_tokens(artifact):
    tokens, text, stop = greedy(artifact)
    assert tokens == REFERENCE["text_greedy_new_tokens"]
    assert text == REFERENCE["text_greedy_decoded"]
    assert stop == "max_tokens"


def test_artifact_generates_bitnetc_runs_tokens(artifact):
    binary = os.environ.get("BITNETC_BIN")
    if not binary:
        pytest.skip("BITNETC_BIN is not set: no bitnetc binary to compare with")
    out = subprocess.run(
        [binary, "run", str(artifact), "--prompt", PROMPT, "-n", "16", "--json"],
        check=True, capture_output=True, text=True,
    )
    assert greedy(artifact)[0] == json.loads(out.stdout)["tokens"]


def test_jit_model_and_artifact_agree(artifact):
    model = bitnetc.load(str(FIXTURE), threads=2)
    assert (model.origin, model.vocab) == ("jit", 1000)
    assert bitnetc.load(str(artifact)).origin == "artifact"
    stream = model.session().generate(REFERENCE["prompt_ids"], max_tokens=16)
    list(stream)
    assert stream.tokens == REFERENCE["greedy_new_tokens"]


def test_generate_streams_chunks_and_continues(artifact):
    session = bitnetc.load(str(artifact), threads=2).session()
    stream = session.generate(PROMPT, max_tokens=4)
    assert stream.stop is None
    chunks = list(stream)
    assert chunks and all(isinstance(c, str) and c for c in chunks)
    assert stream.stop == "max_tokens" and len(stream.tokens) == 4
    # The session goes on from where it stopped.
    more = session.generate([], max_tokens=2)
    list(more)
    assert len(more.tokens) == 2


def test_cancel_stops_generation(artifact):
    model = bitnetc.load(str(artifact), threads=2)
    session = model.session()
    prompt = session.encode(PROMPT)
    # Enough tokens to fill the context: only cancelling can stop it early.
    stream = session.generate(prompt, max_tokens=model.context, ignore_eos=True)
    first = next(stream)
    stream.cancel()
    rest = list(stream)
    assert stream.stop == "cancelled"
    assert 1 <= len(stream.tokens) < model.context - len(prompt)
    # The tokens made stay in the context and are the greedy ones.
    assert isinstance(first, str) and all(isinstance(c, str) for c in rest)
    n = min(len(stream.tokens), len(REFERENCE["text_greedy_new_tokens"]))
    assert stream.tokens[:n] == REFERENCE["text_greedy_new_tokens"][:n]


def test_dropping_the_stream_cancels_generation(artifact):
    model = bitnetc.load(str(artifact), threads=2)
    session = model.session()
    stream = session.generate(PROMPT, max_tokens=model.context, ignore_eos=True)
    next(stream)
    del stream
    # Had the dropped generation gone on, the context would now be full.
    more = session.generate([], max_tokens=1)
    list(more)
    assert more.stop == "max_tokens" and len(more.tokens) == 1


def test_logits_are_numpy_and_match_transformers(artifact):
    session = bitnetc.load(str(artifact), threads=2).session()
    ids = REFERENCE["prompt_ids"]
    logits = session.logits(ids)
    assert isinstance(logits, np.ndarray)
    assert logits.shape == (len(ids), session.vocab) and logits.dtype == np.float32
    want = np.load(FIXTURE / "logits.npy")[0]
    assert np.abs(logits - want).max() <= 1e-3 * np.abs(want).max()
    assert list(logits.argmax(axis=1)) == REFERENCE["argmax_per_position"]
    # A decode step after the prefill: one row.
    step = session.logits([int(logits[-1].argmax())])
    assert step.shape == (1, session.vocab)
    session.reset()
    assert np.array_equal(session.logits(ids), logits)


def test_encode_decode(artifact):
    session = bitnetc.load(str(artifact)).session()
    ids = session.encode(PROMPT)
    assert ids == REFERENCE["text_prompt_ids"]
    assert session.decode(REFERENCE["text_greedy_new_tokens"]) == REFERENCE["text_greedy_decoded"]


def test_validate_report_is_a_dict():
    report = bitnetc.validate(str(FIXTURE), window=32, windows=1, threads=2)
    assert isinstance(report, dict)
    assert "model" in report and "reference" in report
    assert report["accuracy"]["ppl"] > 0
    assert {g["gate"] for g in report["gates"]} >= {"max_kl_mean"}


def test_profile_report_is_a_dict(artifact, tmp_path):
    report = bitnetc.profile(str(artifact), prompt_len=6, steps=3, threads=2, trace=True)
    assert isinstance(report, dict) and report["format"] == "bitnetc-profile/1"
    assert report["phases"]["decode"]["steps"] == 3
    assert report["phases"]["prefill"]["tokens"] == 6
    # The module's allocator counts: the decode steps allocate nothing.
    assert report["memory"]["allocations"]["count"] == 0
    events = report.pop("trace")["traceEvents"]
    assert any(e.get("ph") == "X" for e in events)
    # Against itself as the baseline (a dict, or the file saved from it): the same program.
    again = bitnetc.profile(str(artifact), prompt_len=6, steps=3, threads=2, baseline=report,
                            threshold=1000.0)
    assert again["regressions"] == []
    saved = tmp_path / "profile.json"
    saved.write_text(json.dumps(report))
    assert bitnetc.profile(str(artifact), prompt_len=6, steps=3, threads=2,
                           baseline=str(saved), threshold=1000.0)["regressions"] == []
    with pytest.raises(bitnetc.Error, match="prompt"):
        bitnetc.profile(str(artifact), prompt_len=7, steps=3, baseline=report)
    with pytest.raises(bitnetc.Error, match="not a profile"):
        bitnetc.profile(str(artifact), prompt_len=6, steps=3, baseline={"format": "x"})


def test_missing_file_raises_with_its_name(tmp_path):
    missing = tmp_path / "missing.bnx"
    with pytest.raises(bitnetc.Error, match="missing.bnx"):
        bitnetc.load(str(missing))


def test_bad_artifact_raises_with_its_name(tmp_path):
    bad = tmp_path / "bad.bnx"
    bad.write_bytes(b"BNX1" + bytes(60))
    with pytest.raises(bitnetc.Error, match="bad.bnx.*version"):
        bitnetc.load(str(bad))
    junk = tmp_path / "junk.bnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(bitnetc.Error, match="junk.bnx"):
        bitnetc.load(str(junk))


def test_bad_arguments_raise(artifact, tmp_path):
    model = bitnetc.load(str(artifact))
    with pytest.raises(bitnetc.Error, match="top-p"):
        model.session(top_p=0.0)
    session = model.session()
    with pytest.raises(bitnetc.Error, match="already made its session"):
        model.session()
    with pytest.raises(bitnetc.Error, match="5000"):
        session.logits([5000])
    with pytest.raises(bitnetc.Error, match="512"):
        list(session.generate([1] * 600, max_tokens=1))
    with pytest.raises(bitnetc.Error, match="already exists"):
        bitnetc.compile(str(FIXTURE), str(artifact))
    with pytest.raises(bitnetc.Error, match="threads=0"):
        bitnetc.load(str(artifact), threads=0)
