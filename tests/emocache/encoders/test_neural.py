"""The neural encoders on tiny random models saved to disk and loaded through the offline path users' weights take."""

from __future__ import annotations

import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from emocache.encoders import EncoderConfig, EncoderError, UtteranceError, build_encoder
from emocache.encoders.loading import cosine_to_fp32, sample_waves, select_dtype
from emocache.encoders.tiny import NEURAL_MODELS, overrides, save_random

SR = 16000
HF_REPO = {"whisper-large-v3": "openai/whisper-large-v3", "wavlm-large": "microsoft/wavlm-large",
           "wavlm-base-plus": "microsoft/wavlm-base-plus", "sensevoice-small": "FunAudioLLM/SenseVoiceSmall",
           "emotion2vec-base": "emotion2vec/emotion2vec_base",
           "emotion2vec-plus-large": "emotion2vec/emotion2vec_plus_large"}
MS_REPO = {"sensevoice-small": "iic/SenseVoiceSmall", "emotion2vec-base": "iic/emotion2vec_base",
           "emotion2vec-plus-large": "iic/emotion2vec_plus_large"}
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


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: save_random(name, root / name, seed=3) for name in NEURAL_MODELS}


def load(name: str, path: Path, **kw):
    return build_encoder(name, EncoderConfig(model_path=str(path), device="cpu", **kw))


def waves(seconds=(0.6, 2.35, 1.02, 3.7)) -> list[np.ndarray]:
    return sample_waves(SR, seconds, seed=1)


def design_frames(name: str, n: int) -> int:
    """Valid frame counts as DESIGN.md states them."""
    if name == "whisper-large-v3":
        return min(1500, -(-(-(-n // 160)) // 2))
    if name == "sensevoice-small":
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


def _reference(name: str, path: Path, wave: np.ndarray) -> np.ndarray:
    """Frames from the unmodified library model on one unpadded utterance, the way its authors run it."""
    x = torch.from_numpy(wave)[None]
    if name == "whisper-large-v3":
        import transformers as tf

        fe = tf.WhisperFeatureExtractor.from_pretrained(path)
        mel = fe(wave, sampling_rate=SR, return_tensors="pt").input_features
        enc = tf.WhisperForConditionalGeneration.from_pretrained(path).model.encoder.eval()
        return enc(mel).last_hidden_state[0, : design_frames(name, wave.size)].detach().numpy()
    if name.startswith("wavlm"):
        import transformers as tf

        fe = tf.Wav2Vec2FeatureExtractor.from_pretrained(path)
        inputs = fe(wave, sampling_rate=SR, return_tensors="pt")
        return tf.WavLMModel.from_pretrained(path).eval()(**inputs).last_hidden_state[0].detach().numpy()
    if name.startswith("emotion2vec"):
        from funasr.models.emotion2vec.model import Emotion2vec

        from emocache.encoders.emotion2vec import load_checkpoint, read_yaml

        conf = read_yaml(path / "config.yaml")["model_conf"]
        model = Emotion2vec(model_conf=conf, vocab_size=9).eval()
        model.load_state_dict(load_checkpoint(path / "model.pt"))
        src = torch.nn.functional.layer_norm(x[0], x[0].shape)[None]
        return model.extract_features(src, padding_mask=None)["x"][0].detach().numpy()
    from funasr.frontends.wav_frontend import WavFrontend
    from funasr.models.sense_voice.model import SenseVoiceSmall

    from emocache.encoders.emotion2vec import read_yaml

    conf = read_yaml(path / "config.yaml")
    model = SenseVoiceSmall(encoder=conf["encoder"], encoder_conf=conf["encoder_conf"], input_size=560,
                            vocab_size=8).eval()
    model.load_state_dict(torch.load(path / "model.pt"), strict=False)
    frontend = WavFrontend(cmvn_file=str(path / "am.mvn"), dither=0.0, **conf["frontend_conf"])
    captured = {}

    class Stop(Exception):
        pass

    def grab(module, args, out):
        captured["x"] = out[0]
        raise Stop

    model.encoder.register_forward_hook(grab)
    with pytest.raises(Stop):
        model.inference([x[0]], key=["u"], frontend=frontend, device="cpu", language="auto", use_itn=False)
    return captured["x"][0, 4:].detach().numpy()  # drop the 4 query positions


@pytest.mark.parametrize("name", NEURAL_MODELS)
def test_single_equals_library(name, tiny_dirs):
    """The adapter (SDPA, masks, fixed frontends) reproduces the library's own single-utterance output."""
    enc = load(name, tiny_dirs[name])
    w = waves((2.35,))[0]
    ref = _reference(name, tiny_dirs[name], w)
    got = enc.encode([w]).frames[0]
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-4


def test_emotion2vec_padding_leak_is_real(tiny_dirs):
    """Without the positional-conv mask, funasr's own padded batch differs from single runs (DESIGN.md)."""
    from funasr.models.emotion2vec.model import Emotion2vec

    from emocache.encoders.emotion2vec import load_checkpoint, read_yaml

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
    w = sample_waves(SR, (35.0,), seed=2)[0]
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


@pytest.mark.parametrize("name", [n for n in NEURAL_MODELS if n != "whisper-large-v3"])
def test_long_inputs_windowed(name, tiny_dirs):
    """Every neural encoder windows inputs over 30 s by default: frames of the windows, concatenated."""
    w = sample_waves(SR, (31.0,), seed=2)[0]
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
    cos = cosine_to_fp32(enc, "bf16", sample_waves(SR, (1.5,)))
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
