"""hf:<id> encoders: tiny random checkpoints of several architectures saved with save_pretrained."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from emocache.encoders import EncoderConfig, EncoderError, build_encoder, encoder_class
from emocache.encoders.hf import entry_name

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=(32,) * 7,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
ARCHS = {  # name: (config class, model class, feature extractor kwargs, extra config)
    "wav2vec2-layer": ("Wav2Vec2Config", "Wav2Vec2Model", dict(do_normalize=True, return_attention_mask=True),
                       dict(feat_extract_norm="layer", do_stable_layer_norm=True)),
    "hubert-group": ("HubertConfig", "HubertModel", dict(do_normalize=False, return_attention_mask=False),
                     dict(feat_extract_norm="group")),
    "data2vec": ("Data2VecAudioConfig", "Data2VecAudioModel", dict(do_normalize=True, return_attention_mask=True), {}),
    "wavlm-group": ("WavLMConfig", "WavLMModel", dict(do_normalize=False, return_attention_mask=False),
                    dict(feat_extract_norm="group")),
}


def save_tiny(arch: str, directory) -> str:
    import transformers as tf

    cfg_cls, model_cls, fe_kwargs, extra = ARCHS[arch]
    torch.manual_seed(0)
    model = getattr(tf, model_cls)(getattr(tf, cfg_cls)(**TINY, **extra))
    model.save_pretrained(directory)
    tf.Wav2Vec2FeatureExtractor(**fe_kwargs).save_pretrained(directory)
    return str(directory)


def save_tiny_whisper(directory) -> str:
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.WhisperConfig(num_mel_bins=80, d_model=32, encoder_layers=2, encoder_attention_heads=2,
                           encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                           vocab_size=64, max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=3, suppress_tokens=None, begin_suppress_tokens=None)
    tf.WhisperModel(cfg).save_pretrained(directory)
    tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(directory)
    return str(directory)


def waves(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (4000, 11000, 7300)]


@pytest.fixture(scope="module", params=list(ARCHS) + ["whisper"])
def checkpoint(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    return save_tiny_whisper(d) if request.param == "whisper" else save_tiny(request.param, d)


def test_batched_equals_single_and_transformers(checkpoint):
    enc = build_encoder(f"hf:{checkpoint}", EncoderConfig(device="cpu"))
    ws = waves()
    batch = enc.encode(ws)
    cls = encoder_class(f"hf:{checkpoint}")
    for i, w in enumerate(ws):
        one = enc.encode([w])
        ref = cls.reference(checkpoint, w)  # (T, D)
        assert one.frames[0].shape == ref.shape == batch.frames[i].shape
        np.testing.assert_allclose(batch.frames[i], one.frames[0], atol=1e-4)
        np.testing.assert_allclose(one.frames[0], ref, atol=1e-4)
        np.testing.assert_allclose(batch.pooled[i], ref.mean(0), atol=1e-4)


def test_provenance_names_id_architecture_and_batching(tmp_path):
    d = save_tiny("hubert-group", tmp_path / "my hubert")
    enc = build_encoder(f"hf:{d}", EncoderConfig(device="cpu"))
    p = enc.provenance()
    assert enc.name == "my_hubert" and p["model"] == "my_hubert"
    assert p["source"] == f"hf:{d}" and p["architecture"] == "hubert" and p["batching"] == "one-at-a-time"
    assert p["weights"].startswith("sha256:") and p["weights_source"] == "model-path"
    d2 = save_tiny("wav2vec2-layer", tmp_path / "w2v")
    assert build_encoder(f"hf:{d2}", EncoderConfig(device="cpu", name="custom")).provenance()["batching"] \
        == "attention-mask"
    assert build_encoder(f"hf:{d2}", EncoderConfig(device="cpu", name="custom")).name == "custom"


def test_entry_names_and_errors(tmp_path):
    assert entry_name("facebook/hubert-base-ls960") == "facebook--hubert-base-ls960"
    with pytest.raises(EncoderError, match="--name"):
        build_encoder(f"hf:{save_tiny('data2vec', tmp_path / 'd')}", EncoderConfig(device="cpu", name="a/b"))
    with pytest.raises(EncoderError, match="not found"):
        build_encoder("hf:nobody/no-such-model", EncoderConfig(device="cpu"))
    with pytest.raises(EncoderError, match="hf:<id>"):
        encoder_class("nosuchmodel")


@pytest.mark.slow
def test_cli_extract_local_dir(tmp_path):
    d = save_tiny("data2vec", tmp_path / "tiny-d2v")
    rng = np.random.default_rng(1)
    lines = []
    for i, n in enumerate((5000, 9000)):
        wav = tmp_path / f"u{i}.wav"
        sf.write(wav, (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        lines.append(json.dumps({"key": f"toy-{i}", "dataset": "toy", "wav": str(wav), "emo": "hap",
                                 "length": n / 16000, "sample_rate": 16000}))
    (tmp_path / "toy.jsonl").write_text("\n".join(lines) + "\n")
    store = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "emocache.cli", "extract", "--model", f"hf:{d}", "--manifest",
                        str(tmp_path / "toy.jsonl"), "--store", str(store), "--device", "cpu", "--no-progress",
                        "--layers", "0,2"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    from emocache.store import open_store

    keys, x = open_store(str(store)).pooled("tiny-d2v", "toy")
    enc = build_encoder(f"hf:{d}", EncoderConfig(device="cpu"))
    from emocache.audio import load

    ref = enc.encode([load(str(tmp_path / f"u{i}.wav"), target_sr=16000) for i in range(2)])
    assert list(keys) == ["toy-0", "toy-1"]
    np.testing.assert_allclose(x, ref.pooled, atol=1e-5)
    st = open_store(str(store))
    keys, y = st.layers("tiny-d2v", "toy")
    assert y.shape == (2, 2, 32) and st.provenance("tiny-d2v", "toy")["layers"] == [0, 2]
    enc.layer_ids = (0, 2)
    np.testing.assert_allclose(y, enc.encode([load(str(tmp_path / f"u{i}.wav"), target_sr=16000)
                                              for i in range(2)]).layers, atol=1e-5)
    np.testing.assert_array_equal(st.pooled("tiny-d2v", "toy", layer=2)[1], y[:, 1])


@pytest.mark.parametrize("arch", ["wav2vec2-layer", "hubert-group"])
def test_layers_from_one_pass_equal_transformers_hidden_states(arch, tmp_path):
    import transformers as tf

    d = save_tiny(arch, tmp_path / arch)
    enc = build_encoder(f"hf:{d}", EncoderConfig(device="cpu", layers="all", frames_layer=1))
    assert enc.layer_ids == (0, 1, 2) and enc.provenance()["layers"] == [0, 1, 2]
    assert enc.provenance()["layer"] == "hidden_states[1]"
    calls = []
    model = enc.model
    model.register_forward_hook(lambda *a: calls.append(1))
    ws = waves()
    out = enc.encode(ws)
    assert out.layers.shape == (3, 3, 32) and len(calls) == (1 if enc.batching == "attention-mask" else 3)
    fe = tf.AutoFeatureExtractor.from_pretrained(d)
    ref_model = tf.AutoModel.from_pretrained(d).eval()
    for i, w in enumerate(ws):
        with torch.no_grad():
            hs = ref_model(**fe(w, sampling_rate=16000, return_tensors="pt"), output_hidden_states=True).hidden_states
        for j, k in enumerate(enc.layer_ids):
            np.testing.assert_allclose(out.layers[i, j], hs[k][0].mean(0).numpy(), atol=1e-4)
        np.testing.assert_allclose(out.frames[i], hs[1][0].numpy(), atol=1e-4)
    with pytest.raises(EncoderError, match="--layers"):
        build_encoder(f"hf:{d}", EncoderConfig(device="cpu", layers="0,7"))


def test_encoders_without_per_layer_outputs_refuse_layers():
    from emocache.encoders.tiny import overrides

    with pytest.raises(EncoderError, match="fbank-stats does not expose per-layer outputs"):
        build_encoder("fbank-stats", EncoderConfig(device="cpu", layers="all"))
    with pytest.raises(EncoderError, match="emotion2vec-base does not expose per-layer outputs"):
        build_encoder("emotion2vec-base", EncoderConfig(device="cpu", layers="1", random_init=True,
                                                        config_overrides=overrides("emotion2vec-base")))


def test_bench_layers_rows(tmp_path):
    from emocache.bench import bench_layers

    d = save_tiny("wav2vec2-layer", tmp_path / "w")
    last, every = bench_layers(f"hf:{d}", "all", n_utts=6, device="cpu", repeats=1)
    assert (last["layers"], last["n_layers"], every["layers"], every["n_layers"]) == ("last", 0, "all", 3)
    assert every["store_bytes"] - last["store_bytes"] >= 0.9 * 6 * 3 * 32 * 4 and last["time_ratio"] == 1  # L x D float32


def test_wavlm_layers_equal_transformers_hidden_states():
    """The registered WavLM adapter (exact group-norm batching) pools every hidden_states layer in one pass."""
    import transformers as tf

    from emocache.encoders.tiny import overrides

    enc = build_encoder("wavlm-base-plus", EncoderConfig(device="cpu", layers="all", random_init=True,
                                                         config_overrides=overrides("wavlm-base-plus")))
    ws = waves()
    out = enc.encode(ws)
    for i, w in enumerate(ws):
        x = tf.Wav2Vec2FeatureExtractor(do_normalize=False)(w, sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            hs = enc.model(**x, output_hidden_states=True).hidden_states
        for k in enc.layer_ids:
            np.testing.assert_allclose(out.layers[i, k], hs[k][0].mean(0).numpy(), atol=1e-4)


def test_whisper_layers_equal_transformers_hidden_states(tmp_path):
    import transformers as tf

    d = save_tiny_whisper(tmp_path / "whisper")
    enc = build_encoder(f"hf:{d}", EncoderConfig(device="cpu", layers="0,2"))
    ws = waves()
    out = enc.encode(ws)
    fe = tf.WhisperFeatureExtractor.from_pretrained(d)
    ref = tf.WhisperModel.from_pretrained(d).get_encoder().eval()
    for i, w in enumerate(ws):
        with torch.no_grad():
            hs = ref(fe(w, sampling_rate=16000, return_tensors="pt").input_features, output_hidden_states=True)
        t = enc.valid_frames(w.size)
        for j, k in enumerate((0, 2)):
            np.testing.assert_allclose(out.layers[i, j], hs.hidden_states[k][0, :t].mean(0).numpy(), atol=1e-4)
