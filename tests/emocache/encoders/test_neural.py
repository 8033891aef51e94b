"""The neural encoders on tiny random models saved to disk and loaded through the offline path users' weights take.

Every test runs for every registered encoder with weights (``neural_models()`` at collection): an encoder class
registered before these tests are collected is tested too, with its own tiny config, files and reference call.
"""

from __future__ import annotations

import re
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from emocache.encoders import EncoderConfig, EncoderError, UtteranceError, build_encoder, encoder_class, neural_models
from emocache.encoders.neural import cosine_to_fp32, select_dtype
from emocache.encoders.sensevoice import SenseVoiceSmall
from emocache.encoders.tiny import overrides, save_random
from emocache.encoders.whisper import WhisperLargeV3
from emocache.signals import seconds_to_samples, speech_like

SR = 16000
NEURAL_MODELS = neural_models()
HF_REPO = {name: encoder_class(name).hf_repos[0] for name in NEURAL_MODELS}
MS_REPO = {name: encoder_class(name).ms_repos[0] for name in NEURAL_MODELS if encoder_class(name).ms_repos}
FUNASR = tuple(MS_REPO)


@pytest.fixture(autouse=True)
def offline_caches(tmp_path, monkeypatch):
    """Empty caches and no network: any socket connection fails the test."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("MODELSCOPE_CACHE", str(tmp_path / "ms"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)


class TinyDirs(dict):
    """Tiny random checkpoints, one folder per registered model, saved on first use."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root

    def __missing__(self, name: str) -> Path:
        self[name] = save_random(name, self.root / name, seed=3)
        return self[name]


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> TinyDirs:
    return TinyDirs(tmp_path_factory.mktemp("tiny"))


def sample_waves(seconds, seed: int = 0) -> list[np.ndarray]:
    return speech_like(seconds_to_samples(seconds, SR), SR, seed)


def load(name: str, path: Path, **kw):
    return build_encoder(name, EncoderConfig(model_path=str(path), device="cpu", **kw))


def waves(seconds=(0.6, 2.35, 1.02, 3.7)) -> list[np.ndarray]:
    return sample_waves(seconds, seed=1)


def design_frames(name: str, n: int) -> int:
    """Valid frame counts as docs/ENCODERS.md states them for each family."""
    cls = encoder_class(name)
    if issubclass(cls, WhisperLargeV3):
        return min(1500, -(-(-(-n // 160)) // 2))
    if issubclass(cls, SenseVoiceSmall):
        return -(-(1 + (n - 400) // 160) // 6)
    return (n - 400) // 320 + 1


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_batched_equals_single(name, tiny_dirs):
    enc = load(name, tiny_dirs[name])
    ws = waves()
    batch = enc.encode(ws)
    assert batch.pooled.shape == (len(ws), enc.dim) and batch.pooled.dtype == np.float32
    for i, w in enumerate(ws):
        one = enc.encode([w])
        assert batch.frames[i].shape == (design_frames(name, w.size), enc.dim) == one.frames[0].shape
        assert enc.valid_frames(w.size) == design_frames(name, w.size)
        assert np.abs(batch.frames[i] - one.frames[0]).max() <= 1e-4
        assert np.abs(batch.pooled[i] - one.pooled[0]).max() <= 1e-4
        assert np.allclose(one.pooled[0], one.frames[0].mean(0), atol=1e-5)
    assert np.abs(batch.pooled[0] - batch.pooled[1]).max() > 1e-3  # different audio, different vectors


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_single_equals_library(name, tiny_dirs):
    """The adapter (SDPA, masks, fixed frontends) reproduces the library's own single-utterance output."""
    enc = load(name, tiny_dirs[name])
    w = waves((2.35,))[0]
    ref = encoder_class(name).reference(tiny_dirs[name], w)
    got = enc.encode([w]).frames[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_emotion2vec_padding_leak_is_real(tiny_dirs):
    """Without the positional-conv mask, funasr's own padded batch differs from single runs (docs/ENCODERS.md)."""
    from funasr.models.emotion2vec.model import Emotion2vec

    from emocache.encoders.checkpoint import load_checkpoint, read_yaml

    path = tiny_dirs["emotion2vec-base"]
    model = Emotion2vec(model_conf=read_yaml(path / "config.yaml")["model_conf"], vocab_size=9).eval()
    model.load_state_dict(load_checkpoint(path / "model.pt"))
    short, long = [torch.nn.functional.layer_norm(torch.from_numpy(w), (w.size,)) for w in waves((1.0, 3.0))]
    x = torch.zeros(2, long.numel())
    x[0, : short.numel()], x[1] = short, long
    pad = torch.arange(x.shape[1])[None] >= torch.tensor([[short.numel()], [long.numel()]])
    with torch.no_grad():
        batched = model.extract_features(x, padding_mask=pad)["x"][0]
        alone = model.extract_features(short[None], padding_mask=None)["x"][0]
    assert (batched[: alone.shape[0]] - alone).abs().max() > 1e-3


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_model_path_identity_and_provenance(name, tiny_dirs):
    enc = load(name, tiny_dirs[name])
    prov = enc.provenance()
    assert prov["weights"].startswith("sha256:") and len(prov["weights"]) == 7 + 64
    assert prov["weights_source"] == "model-path"
    assert prov["compute_dtype"] == "fp32" and enc.dtype_name == "fp32"
    assert prov["model"] == name and prov["dim"] == enc.dim
    assert load(name, tiny_dirs[name]).provenance()["weights"] == prov["weights"]


def _fill(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        shutil.copy(f, dst / f.name)


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_hf_cache_layout(name, tiny_dirs, tmp_path):
    repo_dir = tmp_path / "hf" / ("models--" + HF_REPO[name].replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    _fill(tiny_dirs[name], repo_dir / "snapshots" / rev)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(rev)
    enc = build_encoder(name, EncoderConfig(device="cpu"))
    prov = enc.provenance()
    assert prov["weights"] == f"{HF_REPO[name]}@{rev}"
    assert prov["weights_source"] == "huggingface-cache" and prov["weights_revision"] == rev


@pytest.mark.parametrize("name", FUNASR)
def test_modelscope_cache_layout(name, tiny_dirs, tmp_path):
    d = tmp_path / "ms" / "models" / MS_REPO[name]
    _fill(tiny_dirs[name], d)
    enc = build_encoder(name, EncoderConfig(device="cpu"))
    prov = enc.provenance()
    assert prov["weights_source"] == "modelscope-cache" and prov["weights_repo"] == MS_REPO[name]
    assert prov["weights"].startswith(MS_REPO[name] + "@sha256:")
    (d / ".mv").write_text("Revision:v2.0.4,CreatedAt:1712000000")
    assert build_encoder(name, EncoderConfig(device="cpu")).provenance()["weights"] == MS_REPO[name] + "@v2.0.4"
    assert np.isfinite(enc.encode(waves((1.0,))).pooled).all()


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_missing_weight_keys_rejected(name, tiny_dirs, tmp_path):
    d = tmp_path / "broken"
    _fill(tiny_dirs[name], d)
    if name in FUNASR:
        state = torch.load(d / "model.pt")
        inner = state["model"] if "model" in state else state
        key = next(k for k in inner if k.startswith(("encoder.", "modality_encoders.", "blocks.")))
        del inner[key]
        torch.save(state, d / "model.pt")
    else:
        from safetensors.torch import load_file, save_file

        f = next(d.glob("*.safetensors"))
        state = load_file(f)
        key = next(k for k in state if "encoder.layers.0." in k)
        del state[key]
        save_file(state, f, metadata={"format": "pt"})
    with pytest.raises(EncoderError, match="lacks"):
        load(name, d)


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_not_found_names_places_and_fails_fast(name, tmp_path):
    t = time.perf_counter()
    with pytest.raises(EncoderError) as err:
        build_encoder(name, EncoderConfig(model_path=str(tmp_path / "nowhere"), device="cpu"))
    msg = str(err.value)
    assert time.perf_counter() - t < 5
    assert "not found" in msg and "--model-path" in msg and str(tmp_path / "nowhere") in msg
    assert str(tmp_path / "hf") in msg and HF_REPO[name].replace("/", "--") in msg
    if name in MS_REPO:
        assert str(tmp_path / "ms") in msg and "modelscope download" in msg
    else:
        assert "huggingface-cli download" in msg


def test_wavlm_variant_mismatch_is_an_error(tiny_dirs):
    with pytest.raises(EncoderError, match="feat_extract_norm"):
        load("wavlm-large", tiny_dirs["wavlm-base-plus"])


def test_whisper_long_policies(tiny_dirs):
    """Over 30 s: windows of 30 s with frames concatenated, or truncate, or skip; never a silent drop."""
    w = sample_waves((35.0,), seed=2)[0]
    win = load("whisper-large-v3", tiny_dirs["whisper-large-v3"])
    out = win.encode([w])
    assert out.frames[0].shape[0] == 1500 + 250
    parts = [win.encode([w[i:i + 30 * SR]]).frames[0] for i in (0, 30 * SR)]
    assert np.abs(out.frames[0] - np.concatenate(parts)).max() <= 1e-4
    assert win.provenance()["long_policy"] == "window"
    trunc = load("whisper-large-v3", tiny_dirs["whisper-large-v3"], long_policy="truncate")
    assert trunc.encode([w]).frames[0].shape[0] == 1500
    assert trunc.provenance()["long_policy"] == "truncate"
    skip = load("whisper-large-v3", tiny_dirs["whisper-large-v3"], long_policy="skip")
    with pytest.raises(UtteranceError, match="skip"):
        skip.check(w)


@pytest.mark.parametrize("name", [n for n in NEURAL_MODELS if not encoder_class(n).fixed_window])
def test_long_inputs_windowed(name, tiny_dirs):
    """Every neural encoder windows inputs over 30 s by default: frames of the windows, concatenated."""
    w = sample_waves((31.0,), seed=2)[0]
    enc = load(name, tiny_dirs[name])
    pieces = enc.windows(w)
    assert [p.size for p in pieces] == [30 * SR, SR]
    out = enc.encode([w, w[: 2 * SR]])
    assert out.frames[0].shape[0] == sum(enc.valid_frames(p.size) for p in pieces)
    alone = np.concatenate([enc.encode([p]).frames[0] for p in pieces])
    assert np.abs(out.frames[0] - alone).max() <= 1e-4
    assert enc.provenance()["long_policy"] == "window" and enc.provenance()["max_seconds"] == 30.0


def test_precision_check_and_auto_dtype(tiny_dirs):
    enc = load("whisper-large-v3", tiny_dirs["whisper-large-v3"])
    assert select_dtype(enc, "auto") == torch.float32  # CPU: fp32
    cos = cosine_to_fp32(enc, "bf16", sample_waves((1.5,)))
    assert -1.0 <= cos <= 1.0 and enc.dtype_name == "fp32"
    bf = load("whisper-large-v3", tiny_dirs["whisper-large-v3"], dtype="bf16")
    assert bf.provenance()["compute_dtype"] == "bf16"
    with pytest.raises(EncoderError, match="dtype"):
        load("whisper-large-v3", tiny_dirs["whisper-large-v3"], dtype="int8")


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_random_init_without_files(name):
    enc = build_encoder(name, EncoderConfig(device="cpu", random_init=True, config_overrides=overrides(name)))
    assert enc.provenance()["weights"] == "random-init"
    assert enc.encode(waves((1.0,))).frames[0].shape == (design_frames(name, SR), enc.dim)


def test_other_familys_weights_named_before_loading(tiny_dirs):
    """Whisper pointed at WavLM files (and the reverse) says what the folder holds, not transformers' internals."""
    with pytest.raises(EncoderError, match=r"holds a 'wavlm' model, not whisper-large-v3"):
        load("whisper-large-v3", tiny_dirs["wavlm-large"])
    with pytest.raises(EncoderError, match=r"holds a 'whisper' model, not wavlm-base-plus"):
        load("wavlm-base-plus", tiny_dirs["whisper-large-v3"])
    with pytest.raises(EncoderError, match=r"holds a 'Emotion2vec' model, not sensevoice-small"):
        d = tiny_dirs["emotion2vec-base"]
        (d / "am.mvn").write_text((tiny_dirs["sensevoice-small"] / "am.mvn").read_text())
        try:
            load("sensevoice-small", d)
        finally:
            (d / "am.mvn").unlink()


@pytest.mark.parametrize("name, module", [("emotion2vec-base", "funasr.models.emotion2vec.model"),
                                          ("sensevoice-small", "funasr.models.sense_voice.model")])
def test_missing_funasr_names_the_lean_install(name, module, monkeypatch):
    """funasr is not a plain requirement (its own pull modelscope, oss2, jieba, ...): the error says how to get it."""
    import sys

    from emocache.encoders.neural import FUNASR_INSTALL

    monkeypatch.setitem(sys.modules, module, None)  # as if funasr, or a module it imports, were missing
    with pytest.raises(EncoderError, match=re.escape(f"{module} is needed for this encoder: {FUNASR_INSTALL}")):
        build_encoder(name, EncoderConfig(device="cpu", random_init=True, config_overrides=overrides(name)))
