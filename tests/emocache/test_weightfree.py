"""Weight-free encoders (fbank-stats, egemaps), the adapter interface, the budget batcher, the registry."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers.audio import tone
from emocache.encoders import (REGISTRY, EncoderConfig, EncoderError, UtteranceError, batches_by_budget,
                               build_encoder, encoder_class)
from emocache.encoders.fbank import FbankStats


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.normal(size=n)).astype(np.float32) for n in lengths]


@pytest.fixture(scope="module")
def fbank():
    return build_encoder("fbank-stats", EncoderConfig(device="cpu"))


def test_fbank_dims_and_valid_frames(fbank):
    assert fbank.dim == fbank.frame_dim == 80 and fbank.sample_rate == 16000 and fbank.frame_rate == 100
    assert [fbank.valid_frames(n) for n in (399, 400, 559, 560, 16000)] == [0, 1, 1, 2, 98]
    out = fbank.encode(waves([400, 560, 16000, 4321]))
    assert [f.shape for f in out.frames] == [(1, 80), (2, 80), (98, 80), (1 + (4321 - 400) // 160, 80)]
    assert out.pooled.shape == (4, 80) and out.pooled.dtype == np.float32
    for f, p in zip(out.frames, out.pooled):
        assert f.dtype == np.float32
        np.testing.assert_allclose(p, f.mean(0, dtype=np.float64), rtol=1e-5, atol=1e-6)


def test_fbank_batched_equals_single_exactly(fbank):
    ws = waves([16000, 400, 7777, 12345, 999])
    batch = fbank.encode(ws)
    for i, w in enumerate(ws):
        one = fbank.encode([w])
        np.testing.assert_array_equal(batch.frames[i], one.frames[0])
        np.testing.assert_array_equal(batch.pooled[i], one.pooled[0])


def test_fbank_values_follow_the_signal(fbank):
    quiet, loud = tone(1.0, amp=0.01), tone(1.0, amp=0.5)
    o = fbank.encode([quiet, loud])
    # log power: 50x amplitude is +2 ln(50) in every well-excited band
    band = int(np.argmax(o.pooled[1]))
    assert o.pooled[1, band] - o.pooled[0, band] == pytest.approx(2 * np.log(50), abs=0.01)
    # the 220 Hz tone's energy sits in the low mel bands
    assert band < 15


def test_short_nan_and_long_checks(fbank):
    with pytest.raises(UtteranceError, match=r"audio too short: 399 samples \(24.9 ms\).*at least 400 \(25 ms\)"):
        fbank.check(np.zeros(399, np.float32))
    fbank.check(np.zeros(400, np.float32))
    bad = np.zeros(1000, np.float32)
    bad[10] = np.nan
    with pytest.raises(UtteranceError, match="NaN or Inf"):
        fbank.check(bad)
    bad[10] = np.inf
    with pytest.raises(UtteranceError, match="NaN or Inf"):
        fbank.check(bad)


class Windowed(FbankStats):
    """fbank-stats with a 1-second window, to test the long-utterance policies."""

    name = "fbank-windowed"
    max_seconds = 1.0


def test_long_policies():
    w = waves([16000 * 2 + 4000])[0]
    win = Windowed(EncoderConfig(device="cpu", long_policy="window"))
    assert [p.size for p in win.windows(w)] == [16000, 16000, 4000]
    o = win.encode([w])
    assert o.frames[0].shape[0] == 98 + 98 + 23  # frames of each window, concatenated
    pieces = [FbankStats(EncoderConfig(device="cpu")).encode([p]).frames[0] for p in win.windows(w)]
    np.testing.assert_array_equal(o.frames[0], np.concatenate(pieces))
    trunc = Windowed(EncoderConfig(device="cpu", long_policy="truncate"))
    assert trunc.encode([w]).frames[0].shape[0] == 98
    skip = Windowed(EncoderConfig(device="cpu", long_policy="skip"))
    with pytest.raises(UtteranceError, match="--long-policy skip"):
        skip.check(w)
    skip.check(w[:16000])
    # a trailing sliver shorter than one frame is dropped, not encoded
    assert [p.size for p in win.windows(w[:16000 + 100])] == [16000]
    with pytest.raises(EncoderError, match="window, truncate, skip"):
        Windowed(EncoderConfig(long_policy="chop"))
    prov = win.provenance()
    assert prov["long_policy"] == "window" and prov["max_seconds"] == 1.0
    assert FbankStats(EncoderConfig(device="cpu", long_policy="skip")).provenance()["long_policy"] == "none"


def test_egemaps_batched_equals_single_and_dims():
    pytest.importorskip("opensmile")
    eg = build_encoder("egemaps", EncoderConfig(device="cpu"))
    assert eg.dim == 88 and eg.frame_dim == 25 and eg.min_samples == 800
    ws = [tone(1.0, freq=180.0), tone(0.3, freq=300.0, amp=0.1), waves([12345])[0]]
    batch = eg.encode(ws)
    assert batch.pooled.shape == (3, 88) and batch.pooled.dtype == np.float32
    for i, w in enumerate(ws):
        f = batch.frames[i]
        assert f.shape == (eg.valid_frames(w.size), 25) and f.dtype == np.float32
        one = eg.encode([w])
        np.testing.assert_array_equal(f, one.frames[0])
        np.testing.assert_array_equal(batch.pooled[i], one.pooled[0])
    assert np.isfinite(batch.pooled).all()
    # F0 (semitones from 27.5 Hz) functional: 180 Hz tone -> 12 * log2(180 / 27.5) = 32.5 st
    names = eg.func.feature_names
    f0 = batch.pooled[0, names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert f0 == pytest.approx(12 * np.log2(180 / 27.5), abs=0.5)
    with pytest.raises(UtteranceError, match="at least 800"):
        eg.check(np.zeros(799, np.float32))


def test_batches_by_budget():
    lengths = [50, 10, 40, 10, 100, 30]
    b = batches_by_budget(lengths, budget=100, max_batch=8)
    assert sorted(i for g in b for i in g) == list(range(6))  # every index once
    flat = [lengths[i] for g in b for i in g]
    assert flat == sorted(flat)  # length-sorted
    for g in b:
        assert len(g) * max(lengths[i] for i in g) <= 100 or len(g) == 1
    assert b == [[1, 3, 5], [2, 0], [4]]
    assert batches_by_budget(lengths, budget=10 ** 9, max_batch=4) == [[1, 3, 5, 2], [0, 4]]
    assert batches_by_budget([500], budget=10) == [[0]]  # an item over budget still gets its own batch
    assert batches_by_budget([], budget=10) == []


def test_unknown_model_lists_known_ones():
    with pytest.raises(EncoderError) as e:
        encoder_class("whisper-tiny")
    msg = str(e.value)
    assert "unknown model 'whisper-tiny'" in msg
    for name in ("fbank-stats", "egemaps", "whisper-large-v3", "wavlm-large", "wavlm-base-plus",
                 "emotion2vec-base", "emotion2vec-plus-large", "sensevoice-small"):
        assert name in msg and name in REGISTRY


def test_provenance_names_weights_and_layer(fbank):
    p = fbank.provenance()
    assert p["model"] == "fbank-stats" and p["weights"].startswith("none") and p["layer"] == "last"
    assert (p["dim"], p["frame_dim"], p["sample_rate"], p["frame_rate"]) == (80, 80, 16000, 100.0)


@pytest.mark.slow
def test_egemaps_through_the_extraction_pipeline(tmp_path, demo_corpus):
    """The pipeline's prepare/run path stores descriptors as frames and functionals as pooled."""
    pytest.importorskip("opensmile")
    import emocache
    from emocache.audio import load
    from emocache.extract import ExtractConfig, extract

    cfg = ExtractConfig(model="egemaps", manifests=(str(demo_corpus.manifest),), store=str(tmp_path / "s"),
                        audio_root=(demo_corpus.audio_root,), device="cpu", block_size=8)
    report = extract(cfg, progress=False)
    assert report.ok and report.datasets["demo"]["done"] == 36
    st = emocache.open_store(tmp_path / "s")
    keys, X = st.pooled("egemaps", "demo")
    assert X.shape == (36, 88)
    eg = build_encoder("egemaps", EncoderConfig(device="cpu"))
    utts = {u["key"]: u for u in demo_corpus.lines()}
    w = load(str(demo_corpus.ds_dir / utts[keys[5]]["wav"].removeprefix("demo/")), target_sr=16000)
    one = eg.encode([w])
    np.testing.assert_array_equal(X[5], one.pooled[0])
    F = st.frames("egemaps", "demo", keys[5])
    assert F.shape == one.frames[0].shape
    np.testing.assert_allclose(F, one.frames[0], rtol=1e-3, atol=1e-3)  # frames stored as float16


def test_egemaps_reports_progress_per_utterance(monkeypatch):
    """openSMILE runs one wave at a time: the progress callback moves per utterance within a batch, and a batch
    that fails part-way (rerun one by one) still counts each utterance once."""
    pytest.importorskip("opensmile")
    from emocache.runner import encode_block, load_waves

    eg = build_encoder("egemaps", EncoderConfig(device="cpu"))
    ws = [tone(0.3 + 0.05 * i, freq=200.0 + 40 * i) for i in range(5)]
    loaded = load_waves(ws, eg, batch_seconds=60.0, max_batch=64)
    assert len(loaded.batches) == 1
    calls = []
    encode_block(loaded, 5, eg, calls.append)
    assert calls == [1] * 5

    process = type(eg)._process
    bad = ws[3].size

    def flaky(self, w):
        if w.size == bad:
            raise RuntimeError("broken wave")
        return process(self, w)

    monkeypatch.setattr(type(eg), "_process", flaky)
    calls.clear()
    _, _, errors, _ = encode_block(loaded, 5, eg, calls.append)
    assert sum(calls) == 5 and set(errors) == {3}

    fb = build_encoder("fbank-stats", EncoderConfig(device="cpu"))  # a batched encoder: one call per batch
    calls.clear()
    encode_block(load_waves(ws, fb, batch_seconds=60.0, max_batch=64), 5, fb, calls.append)
    assert calls == [5]
