"""Compiled encoders (``--compile``) on the CPU with inductor, one tiny model per family: outputs equal eager,
graphs built once whatever the lengths, batches of one eager, a failed compile recorded and run eagerly; and the
weights cast once to a half type."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emocache.encoders import EncoderConfig, EncoderError, build_encoder
from emocache.encoders.compat_torch import graphs_compiled
from emocache.encoders.tiny import overrides
from emocache.signals import speech_like

SR = 16000
FAMILIES = ["whisper-large-v3", "wavlm-base-plus", "emotion2vec-base", "sensevoice-small"]


@pytest.fixture(autouse=True)
def fresh_compile_caches():
    """Each test counts the graphs it builds: graphs another test built for the same layer code (the caches are
    per process and shared across instances) would otherwise be reused and counted as none."""
    torch.compiler.reset()
    yield
    torch.compiler.reset()


def tiny(name: str, **kw):
    return build_encoder(name, EncoderConfig(device="cpu", random_init=True, config_overrides=overrides(name), **kw))


def pair(name: str, **kw):
    """(eager, compiled) encoders with the same weights."""
    eager, compiled = tiny(name, compile="off", **kw), tiny(name, compile="on", **kw)
    for a, b in zip(eager.modules(), compiled.modules()):
        b.load_state_dict(a.state_dict())
    return eager, compiled


def batch(*seconds: float, seed: int = 0) -> list[np.ndarray]:
    return speech_like([int(s * SR) for s in seconds], SR, seed)


def assert_close(a, b, tol: float) -> None:
    assert np.abs(a.pooled - b.pooled).max() <= tol
    assert all(x.shape == y.shape and np.abs(x - y).max() <= tol for x, y in zip(a.frames, b.frames))


@pytest.mark.slow
@pytest.mark.parametrize("name", FAMILIES)
def test_compiled_equals_eager_and_compiles_once(name):
    eager, compiled = pair(name)
    assert compiled.compiled and not eager.compiled
    for seconds in [(1.0, 2.0, 1.4), (3.0, 0.7)]:  # the first shapes build the graphs (and any re-specialisation)
        assert_close(compiled.encode(batch(*seconds)), eager.encode(batch(*seconds)), 1e-4)
    built = compiled.compile_stats["graphs"]
    assert 1 <= built <= 4 and compiled.compile_stats["seconds"] > 0 and compiled.compile_stats["error"] is None
    before = graphs_compiled()
    for seconds in [(2.2, 2.2, 0.9, 4.1, 1.3), (1.1, 31.0), (0.8, 0.6, 5.5)]:  # new lengths, sizes, a windowed one
        assert_close(compiled.encode(batch(*seconds, seed=1)), eager.encode(batch(*seconds, seed=1)), 1e-4)
    one = batch(2.7, seed=2)
    assert_close(compiled.encode(one), eager.encode(one), 1e-4)  # a batch of one runs eagerly
    assert graphs_compiled() == before and compiled.compile_stats["graphs"] == built  # bounded: nothing rebuilt


@pytest.mark.slow
def test_compiled_bf16_equals_eager_bf16():
    eager, compiled = pair("whisper-large-v3", dtype="bf16")
    waves = batch(1.0, 2.5, 4.0)
    a, b = compiled.encode(waves).pooled, eager.encode(waves).pooled
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.999


@pytest.mark.slow
def test_a_failed_compile_is_recorded_and_runs_eagerly(monkeypatch):
    def boom(gm, example_inputs):
        raise RuntimeError("no C compiler here")

    real = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: real(self, backend=boom, **kw))
    eager, compiled = pair("emotion2vec-base")
    waves = batch(1.0, 2.0)
    assert_close(compiled.encode(waves), eager.encode(waves), 1e-5)
    assert not compiled.compiled and "no C compiler here" in compiled.compile_stats["error"]
    assert_close(compiled.encode(waves), eager.encode(waves), 1e-5)  # and stays eager


def test_compile_settings():
    assert not tiny("emotion2vec-base").compiled  # auto: off on the CPU
    with pytest.raises(EncoderError, match="--compile on: --layers"):
        tiny("wavlm-base-plus", compile="on", layers="all")
    with pytest.raises(ValueError, match="--compile 'sometimes'"):
        EncoderConfig(compile="sometimes")


@pytest.mark.parametrize("name", ["whisper-large-v3", "sensevoice-small"])
def test_half_weights_cast_once_and_fp32_restored_exactly(name):
    """bf16 runs in bf16 weights (no autocast), passes the cosine check, and fp32 comes back bit for bit."""
    enc = tiny(name)
    waves = batch(1.3, 3.7)
    ref = enc.encode(waves).pooled
    state = {k: v.clone() for k, v in enc.model.state_dict().items()}
    seen = []
    hook = enc.compile_regions()[0].register_forward_pre_hook(lambda m, a: seen.append(torch.is_autocast_enabled("cpu")))
    with enc.precision(torch.bfloat16):
        assert {p.dtype for p in enc.model.parameters()} == {torch.bfloat16}
        low = enc.encode(waves).pooled
    hook.remove()
    assert seen and not any(seen)
    assert low.dtype == np.float32
    cos = (ref * low).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(low, axis=1)
    assert cos.min() >= 0.999
    assert all(torch.equal(state[k], v) for k, v in enc.model.state_dict().items())
    assert np.array_equal(enc.encode(waves).pooled, ref)
    bf = tiny(name, dtype="bf16")
    assert bf.dtype_name == "bf16" and {p.dtype for p in bf.model.parameters()} == {torch.bfloat16}
