"""Extraction end to end with fbank-stats: values, bad inputs recorded per utterance, resume, refusals."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.helpers.audio import emobox_line, tone, write_jsonl, write_mp4, write_wav
from emocache.audio import load
from emocache.encoders import EncoderConfig, build_encoder
from emocache.extract import ExtractConfig, extract
from emocache.store import StoreError, describe, open_store

M = "fbank-stats"


@pytest.fixture(scope="module")
def fbank():
    return build_encoder(M, EncoderConfig(device="cpu"))


def run(manifests, store, **kw) -> "object":
    cfg = ExtractConfig(model=M, manifests=tuple(str(m) for m in manifests), store=str(store), device="cpu", **kw)
    return extract(cfg, progress=False)


def f16(x):
    return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)


def test_extract_demo_corpus_matches_direct_encoding(tmp_path, demo_corpus, fbank):
    rep = run([demo_corpus.manifest], tmp_path / "s", audio_root=(demo_corpus.audio_root,), block_size=8)
    assert rep.ok and rep.n_failed == 0 and rep.errors == {"demo": {}}
    assert rep.datasets["demo"] == {"blocks_done": 5, "blocks_skipped": 0, "done": 36, "failed": 0}
    assert rep.warnings == []
    lines = {d["key"]: d for d in demo_corpus.lines()}
    st = open_store(tmp_path / "s")
    assert st.entries() == [(M, "demo")]
    keys, X = st.pooled(M, "demo")
    assert sorted(keys) == sorted(lines) and X.shape == (36, 80) and X.dtype == np.float32
    assert st.labels(M, "demo") == [lines[k]["emo"] for k in keys]
    frames = dict(st.iter_frames(M, "demo"))
    for i in (0, 17, 35):
        k = keys[i]
        w = load(demo_corpus.ds_dir / lines[k]["wav"].split("/", 1)[1], target_sr=16000)
        ref = fbank.encode([w])
        np.testing.assert_array_equal(X[i], ref.pooled[0])  # batched in the run, single here: exactly equal
        np.testing.assert_array_equal(frames[k], f16(ref.frames[0]))
        assert frames[k].shape[0] == fbank.valid_frames(lines[k]["num_frame"])
    prov = st.provenance(M, "demo")
    assert prov["model"] == M and prov["weights"].startswith("none") and prov["layer"] == "last"
    assert prov["dim"] == 80 and prov["sample_rate"] == 16000 and len(prov["manifest_sha256"]) == 64
    assert prov["package"].startswith("emocache ")
    # a rerun skips every committed block and changes nothing
    rep2 = run([demo_corpus.manifest], tmp_path / "s", audio_root=(demo_corpus.audio_root,), block_size=8)
    assert rep2.ok and rep2.datasets["demo"] == {"blocks_done": 0, "blocks_skipped": 5, "done": 0, "failed": 0}
    np.testing.assert_array_equal(open_store(tmp_path / "s").pooled(M, "demo")[1], X)


def bad_inputs(tmp_path):
    """A manifest with four good utterances and one of every kind of bad input."""
    a = tmp_path / "audio"
    rows, expect = [], {}

    def add(key, path, match=None, **kw):
        rows.append(emobox_line(key, str(path), "neu", dataset="bad", **kw))
        if match:
            expect[key] = match

    add("good1", write_wav(a / "good1.wav", tone(1.0), 16000))
    add("good2", write_wav(a / "good2.wav", tone(0.5, sr=44100, freq=300), 44100), sr=44100, n=22050)
    add("good3", write_wav(a / "good3.wav", tone(0.8, channels=2), 16000), channel=2, n=12800)
    add("good4", write_wav(a / "good4.wav", tone(0.03), 16000), n=480)  # 30 ms: just long enough
    add("missing", a / "missing.wav", r"missing\.wav: file not found")
    (a / "empty.wav").write_bytes(b"")
    add("empty", a / "empty.wav", "file is empty")
    (a / "corrupt.wav").write_bytes(b"RIFF\x00\x10\x00\x00WAVEfmt " + b"\xff" * 200)  # garbage after the header
    add("corrupt", a / "corrupt.wav", "not a readable audio file")
    add("short", write_wav(a / "short.wav", tone(0.02), 16000), r"audio too short: 320 samples \(20.0 ms\)", n=320)
    nan = tone(0.5)
    nan[100] = np.nan
    nan[200] = np.inf
    add("nan", write_wav(a / "nan.wav", nan, 16000, subtype="FLOAT"), "NaN or Inf")
    (a / "text.wav").write_text("hello, I am a text file pretending to be audio\n" * 10)
    add("text", a / "text.wav", "not a readable audio file")
    add("long", write_wav(a / "long.wav", np.zeros(16000 * 5, np.float32), 16000), r"5 s long, over --max-audio-seconds 3",
        n=80000)
    add("channel", a / "good1.wav", r"channel 2 requested but the file has 1 channel", channel=2)
    add("longmp4", write_mp4(a / "long.m4a", tone(4.0, sr=8000), 8000), r"4 s long, over --max-audio-seconds 3")
    return write_jsonl(tmp_path / "bad.jsonl", rows), expect


def test_bad_inputs_recorded_per_utterance_everything_else_extracted(tmp_path, fbank):
    man, expect = bad_inputs(tmp_path)
    rep = run([man], tmp_path / "s", block_size=5, max_audio_seconds=3.0)
    assert not rep.ok and rep.n_failed == len(expect) == 9
    assert set(rep.errors["bad"]) == set(expect)
    for key, match in expect.items():
        assert re.search(match, rep.errors["bad"][key]), (key, rep.errors["bad"][key])
    st = open_store(tmp_path / "s")
    assert st.errors(M, "bad") == rep.errors["bad"]
    keys, X = st.pooled(M, "bad")
    assert sorted(keys) == ["good1", "good2", "good3", "good4"]
    by_key = dict(zip(keys, X))
    a = tmp_path / "audio"
    np.testing.assert_array_equal(by_key["good1"], fbank.encode([load(a / "good1.wav")]).pooled[0])
    # the file's rate wins, resampled to 16 kHz; channel 2 is the second column
    np.testing.assert_array_equal(by_key["good2"], fbank.encode([load(a / "good2.wav", target_sr=16000)]).pooled[0])
    np.testing.assert_array_equal(by_key["good3"], fbank.encode([load(a / "good3.wav", channel=2)]).pooled[0])
    assert not np.allclose(by_key["good3"], fbank.encode([load(a / "good3.wav", channel=1)]).pooled[0], atol=0.1)
    assert st.frames(M, "bad", "good4").shape == (1, 80)
    (row,) = describe(st)
    assert (row["done"], row["failed"], row["pending"]) == (4, 9, 0)

    # fix two files, rerun with --redo-failed: only blocks with failures are redone, and they succeed
    write_wav(a / "missing.wav", tone(0.6), 16000)
    write_wav(a / "short.wav", tone(0.5), 16000)
    rep2 = run([man], tmp_path / "s", block_size=5, max_audio_seconds=3.0, redo_failed=True)
    assert set(rep2.errors["bad"]) == set(expect) - {"missing", "short"}
    assert set(open_store(tmp_path / "s").pooled(M, "bad")[0]) == {"good1", "good2", "good3", "good4", "missing",
                                                                   "short"}


def test_length_mismatch_warns_and_file_wins(tmp_path, fbank):
    p = write_wav(tmp_path / "a.wav", tone(2.0), 16000)
    q = write_wav(tmp_path / "b.wav", tone(1.0), 16000)
    man = write_jsonl(tmp_path / "m.jsonl", [
        emobox_line("a", str(p), "x", dataset="m", sr=44100, n=44100),          # claims 1.0 s at 44.1 kHz; the file is 2.0 s
        emobox_line("b", str(q), "x", dataset="m", sr=16000, n=16000 + 700),    # 4.4 % off: no warning
    ])
    rep = run([man], tmp_path / "s")
    assert rep.ok
    assert len(rep.warnings) == 1 and "a: file is 2.00 s, the manifest says 1.00 s (the file wins)" in rep.warnings[0]
    st = open_store(tmp_path / "s")
    assert st.frames(M, "m", "a").shape[0] == fbank.valid_frames(32000)
    np.testing.assert_array_equal(dict(zip(*st.pooled(M, "m")))["a"], fbank.encode([load(p)]).pooled[0])


def test_container_audio_and_channel_from_manifest(tmp_path, fbank):
    x = tone(1.0, sr=22050, channels=2)
    p = write_mp4(tmp_path / "a.m4a", x, 22050, codec="aac")
    man = write_jsonl(tmp_path / "m.jsonl", [emobox_line("c1", str(p), "x", dataset="m", channel=1),
                                             emobox_line("c2", str(p), "x", dataset="m", channel=2)])
    rep = run([man], tmp_path / "s")
    assert rep.ok
    got = dict(zip(*open_store(tmp_path / "s").pooled(M, "m")))
    np.testing.assert_array_equal(got["c1"], fbank.encode([load(p, channel=1)]).pooled[0])
    np.testing.assert_array_equal(got["c2"], fbank.encode([load(p, channel=2)]).pooled[0])
    assert not np.allclose(got["c1"], got["c2"], atol=0.1)


def test_no_frames_and_two_datasets_in_one_run(tmp_path, demo_corpus):
    other = write_jsonl(tmp_path / "other.jsonl", [
        emobox_line("o1", str(write_wav(tmp_path / "o1.wav", tone(0.5), 16000)), "x", dataset="other", n=8000)])
    rep = run([demo_corpus.manifest, other], tmp_path / "s", audio_root=(demo_corpus.audio_root,), frames=False)
    assert rep.ok and set(rep.datasets) == {"demo", "other"}
    st = open_store(tmp_path / "s")
    assert st.entries() == [(M, "demo"), (M, "other")]
    assert not st.has_frames(M, "demo") and len(st.pooled(M, "demo")[0]) == 36
    with pytest.raises(StoreError, match="--no-frames"):
        st.frames(M, "other", "o1")
    # the same entry with frames now is refused, not mixed
    with pytest.raises(StoreError, match="frames=False"):
        run([other], tmp_path / "s", frames=True)


def test_refuses_other_weights_identity_and_other_manifest(tmp_path, demo_corpus):
    run([demo_corpus.manifest], tmp_path / "s", audio_root=(demo_corpus.audio_root,), block_size=16)
    st = open_store(tmp_path / "s", mode="a")
    g = st.entry(M, "demo").group
    prov = dict(g.attrs["provenance"])
    g.attrs["provenance"] = {**prov, "weights": "someone/else@v2"}
    with pytest.raises(StoreError, match="weights='someone/else@v2'.*refusing to mix"):
        run([demo_corpus.manifest], tmp_path / "s", audio_root=(demo_corpus.audio_root,), block_size=16)
    g.attrs["provenance"] = prov
    fewer = [d for d in demo_corpus.lines()][:-1]
    man = write_jsonl(tmp_path / "fewer" / "demo.jsonl", fewer)
    with pytest.raises(StoreError, match="another manifest"):
        run([man], tmp_path / "s", audio_root=(demo_corpus.audio_root,), block_size=16)


def test_interrupted_blocks_are_redone_and_equal(tmp_path, demo_corpus):
    kw = dict(audio_root=(demo_corpus.audio_root,), block_size=4)
    run([demo_corpus.manifest], tmp_path / "ref", **kw)
    run([demo_corpus.manifest], tmp_path / "s", **kw)
    st = open_store(tmp_path / "s", mode="a")
    e = st.entry(M, "demo")
    # simulate a crash: blocks 2 and 5 uncommitted, block 5's frames half written with garbage
    e.reset_blocks([2, 5])
    e.group["blocks"]["b000005"]["frames"][:] = np.float16(7)
    rep = run([demo_corpus.manifest], tmp_path / "s", **kw)
    assert rep.datasets["demo"]["blocks_done"] == 2 and rep.datasets["demo"]["blocks_skipped"] == 7
    a, b = open_store(tmp_path / "ref"), open_store(tmp_path / "s")
    ka, Xa = a.pooled(M, "demo")
    kb, Xb = b.pooled(M, "demo")
    assert ka == kb
    np.testing.assert_array_equal(Xa, Xb)
    for (k1, f1), (k2, f2) in zip(a.iter_frames(M, "demo"), b.iter_frames(M, "demo")):
        assert k1 == k2
        np.testing.assert_array_equal(f1, f2)


def test_unreadable_manifest_entry_errors_are_clear(tmp_path):
    man = tmp_path / "m.jsonl"
    man.write_text(json.dumps(emobox_line("a", "a.wav", "x")) + "\n" + json.dumps(emobox_line("a", "b.wav", "x")) + "\n")
    from emocache.manifest import ManifestError

    with pytest.raises(ManifestError, match=r"m\.jsonl:2: duplicate key 'a'"):
        run([man], tmp_path / "s")


def test_block_where_every_utterance_fails(tmp_path):
    man = write_jsonl(tmp_path / "m.jsonl", [
        emobox_line("a", str(tmp_path / "a.wav"), "x", dataset="m", n=1000),
        emobox_line("b", str(tmp_path / "b.wav"), "x", dataset="m", n=2000),
        emobox_line("c", str(write_wav(tmp_path / "c.wav", tone(0.5))), "x", dataset="m", n=8000)])
    rep = run([man], tmp_path / "s", block_size=2)
    assert set(rep.errors["m"]) == {"a", "b"}
    st = open_store(tmp_path / "s")
    keys, X = st.pooled(M, "m")
    assert keys == ["c"] and X.shape == (1, 80)
    from emocache.verify import verify_store

    (chk,) = verify_store(st)
    assert chk.ok and chk.committed == 2
    rep2 = run([man], tmp_path / "s", block_size=2)  # failed utterances are committed: a plain rerun skips them
    assert rep2.datasets["m"]["blocks_done"] == 0 and set(rep2.errors["m"]) == {"a", "b"}


class Exploding(__import__("emocache.encoders.fbank", fromlist=["FbankStats"]).FbankStats):
    """fbank-stats that crashes on any batch holding a 0.7 s wave and returns NaN for a 0.9 s one."""

    def forward(self, inputs):
        n = inputs["num_samples"].tolist()
        if 11200 in n:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        frames, lengths = super().forward(inputs)
        for j, k in enumerate(n):
            if k == 14400:
                frames[j] = float("nan")
        return frames, lengths


def test_encoder_crash_isolated_to_its_utterance(tmp_path, fbank):
    from emocache.runner import encode_block, load_block
    from emocache.manifest import read_manifest

    rows = [emobox_line(f"u{s}", str(write_wav(tmp_path / f"{s}.wav", tone(s / 10))), "x", n=1600 * s)
            for s in (5, 6, 7, 8, 9)]
    utts = read_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    enc = Exploding(EncoderConfig(device="cpu"))
    cfg = ExtractConfig(model=M, manifests=(), store=str(tmp_path / "s"), device="cpu")
    loaded = load_block(utts, enc, cfg)
    assert len(loaded.batches) == 1  # all five in one batch: the crash hits everyone, then each runs alone
    pooled, frames, errors, _ = encode_block(loaded, 5, enc)
    assert errors == {2: "encoder failed: RuntimeError: CUDA error: an illegal memory access was encountered",
                      4: "encoder output has NaN/Inf (try --dtype fp32)"}
    for i in (0, 1, 3):
        np.testing.assert_array_equal(pooled[i], fbank.encode([loaded.waves[i]]).pooled[0])
        np.testing.assert_array_equal(frames[i], fbank.encode([loaded.waves[i]]).frames[0])


def test_loader_crash_is_recorded_for_its_utterance(tmp_path, monkeypatch, fbank):
    import emocache.runner as ex

    real_load = ex.load

    def flaky(path, *a, **kw):
        if str(path).endswith("boom.wav"):
            raise MemoryError("cannot allocate 93 GiB")
        return real_load(path, *a, **kw)

    monkeypatch.setattr(ex, "load", flaky)
    rows = [emobox_line(k, str(write_wav(tmp_path / f"{k}.wav", tone(0.5))), "x", dataset="m", n=8000)
            for k in ("ok1", "boom", "ok2")]
    rep = run([write_jsonl(tmp_path / "m.jsonl", rows)], tmp_path / "s")
    assert rep.errors["m"] == {"boom": f"{tmp_path}/boom.wav: could not load (MemoryError: cannot allocate 93 GiB)"}
    assert sorted(open_store(tmp_path / "s").pooled(M, "m")[0]) == ["ok1", "ok2"]


def test_length_warning_from_num_frame_when_length_is_absent(tmp_path):
    p = write_wav(tmp_path / "a.wav", tone(1.0), 16000)
    line = emobox_line("a", str(p), "x", dataset="m", sr=16000, n=24000)
    del line["length"]
    rep = run([write_jsonl(tmp_path / "m.jsonl", [line])], tmp_path / "s")
    assert rep.ok and rep.warnings == ["a: file is 1.00 s, the manifest says 1.50 s (the file wins)"]


class Recording(__import__("emocache.encoders.fbank", fromlist=["FbankStats"]).FbankStats):
    """fbank-stats that logs when each batch is submitted and when its result is collected."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.log = []

    def submit(self, inputs, owner, frames=True):
        k = len([e for e in self.log if e[0] == "submit"])
        self.log.append(("submit", k))
        job = super().submit(inputs, owner, frames)
        real = job.result

        def result():
            self.log.append(("result", k))
            return real()

        job.result = result
        return job


def test_block_keeps_one_batch_queued_ahead_and_pools_like_single_runs(fbank):
    """Batch k + 1 is submitted before batch k is collected; pooling on the device gives each utterance exactly
    its alone result; frames are skipped when not wanted."""
    from emocache.runner import encode_block, load_waves

    waves = [tone(s / 10) for s in (5, 9, 6, 12, 7, 30, 8)]
    enc = Recording(EncoderConfig(device="cpu"))
    loaded = load_waves(waves, enc, batch_seconds=2.0, max_batch=2)
    assert len(loaded.batches) == 5 and 0 < loaded.audio_samples < loaded.padded_samples
    pooled, frames, errors, _ = encode_block(loaded, len(waves), enc)
    assert enc.log == [("submit", 0)] + [e for k in range(1, 5) for e in (("submit", k), ("result", k - 1))] \
        + [("result", 4)]
    assert errors == {}
    for i, w in enumerate(waves):
        one = fbank.encode([w])
        np.testing.assert_array_equal(pooled[i], one.pooled[0])
        np.testing.assert_array_equal(frames[i], one.frames[0])
    pooled2, frames2, _, _ = encode_block(loaded, len(waves), enc, frames=False)
    np.testing.assert_array_equal(pooled2, pooled)
    assert frames2 == [None] * len(waves)
