"""Random versions of the neural encoders, saved in each library's own layout.

``save_random(name, directory)`` writes a tiny model (tests) or, with ``size="full"``, the real shapes with
random weights (benchmarks without weights). The files are what users' weights look like: ``config.json`` +
safetensors (+ ``preprocessor_config.json``) for transformers models, ``config.yaml`` + ``model.pt`` (+ ``am.mvn``)
for funasr models, so loading them exercises the same offline path.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
import yaml

NEURAL_MODELS = ("whisper-large-v3", "wavlm-large", "wavlm-base-plus", "emotion2vec-base",
                 "emotion2vec-plus-large", "sensevoice-small")

TINY_CNN = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"

TINY_OVERRIDES: dict[str, dict] = {
    "whisper-large-v3": dict(d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64,
                             decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
                             max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                             decoder_start_token_id=3, suppress_tokens=None, begin_suppress_tokens=None),
    "wavlm-large": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                        conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    "wavlm-base-plus": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4),
    "emotion2vec-base": dict(embed_dim=32, num_heads=2, depth=2,
                             modalities=dict(audio=dict(prenet_depth=1, model_depth=2, num_alibi_heads=2,
                                                        feature_encoder_spec=TINY_CNN, conv_pos_groups=4))),
    "emotion2vec-plus-large": dict(embed_dim=48, num_heads=4, depth=2,
                                   modalities=dict(audio=dict(prenet_depth=1, model_depth=2, num_alibi_heads=4,
                                                              feature_encoder_spec=TINY_CNN, conv_pos_groups=4))),
    "sensevoice-small": dict(encoder_conf=dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=3,
                                               tp_blocks=2)),
}


def overrides(name: str, size: str = "tiny") -> dict:
    """Config overrides for ``EncoderConfig(random_init=True, config_overrides=...)``: tiny shapes or none."""
    if size not in ("tiny", "full"):
        raise ValueError(f"size {size!r}: tiny or full")
    return copy.deepcopy(TINY_OVERRIDES[name]) if size == "tiny" else {}


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Give every weight a non-trivial random value (zero-initialised tokens and norms would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or name.endswith(("weight", "scale"))):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = max(1, p[0].numel())
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)


def _write_cmvn(path: Path, dim: int, rng: np.random.Generator) -> None:
    """A Kaldi Nnet CMVN file (``<AddShift>`` means, ``<Rescale>`` inverse stds) in funasr's ``am.mvn`` layout."""
    shift = " ".join(f"{x:.6f}" for x in -10.0 - rng.random(dim))
    scale = " ".join(f"{x:.6f}" for x in 0.2 + 0.1 * rng.random(dim))
    path.write_text(f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
                    f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n")


def save_random(name: str, directory: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build ``name`` with random weights and save it to ``directory`` in its library's layout."""
    import transformers as tf

    from emocache.encoders.emotion2vec import FULL_CONFIGS as E2V_CONFIGS
    from emocache.encoders.sensevoice import FULL_CONFIG as SV_CONFIG
    from emocache.encoders.wavlm import BASE_PLUS_CONFIG, LARGE_CONFIG
    from emocache.encoders.whisper import FULL_CONFIG as WHISPER_CONFIG

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    over = overrides(name, size)
    torch.manual_seed(seed)
    if name == "whisper-large-v3":
        cfg = tf.WhisperConfig(**{**WHISPER_CONFIG, **over})
        model = tf.WhisperForConditionalGeneration(cfg)
        _randomize(model, seed)
        model.save_pretrained(d)
        tf.WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(d)
    elif name in ("wavlm-large", "wavlm-base-plus"):
        base = LARGE_CONFIG if name == "wavlm-large" else BASE_PLUS_CONFIG
        model = tf.WavLMModel(tf.WavLMConfig(**{**base, **over}))
        _randomize(model, seed)
        model.save_pretrained(d)
        tf.Wav2Vec2FeatureExtractor(do_normalize=name == "wavlm-large",
                                    return_attention_mask=name == "wavlm-large").save_pretrained(d)
    elif name in ("emotion2vec-base", "emotion2vec-plus-large"):
        from funasr.models.emotion2vec.model import Emotion2vec

        conf = copy.deepcopy(E2V_CONFIGS[name])
        audio = over.pop("modalities", {}).get("audio", {})
        conf.update(over)
        conf["modalities"]["audio"].update(audio)
        model = Emotion2vec(model_conf=conf, vocab_size=9)
        _randomize(model, seed)
        (d / "config.yaml").write_text(yaml.safe_dump({"model": "Emotion2vec", "model_conf": conf}))
        torch.save({"model": model.state_dict()}, d / "model.pt")
    elif name == "sensevoice-small":
        from funasr.models.sense_voice.model import SenseVoiceEncoderSmall

        from emocache.encoders.sensevoice import _Parts

        conf = copy.deepcopy(SV_CONFIG)
        conf["encoder_conf"].update(over.get("encoder_conf", {}))
        in_dim = conf["frontend_conf"]["n_mels"] * conf["frontend_conf"]["lfr_m"]
        parts = _Parts(SenseVoiceEncoderSmall(input_size=in_dim, **conf["encoder_conf"]),
                       torch.nn.Embedding(16, in_dim))
        _randomize(parts, seed)
        state = dict(parts.state_dict())
        state["ctc.ctc_lo.weight"] = torch.randn(8, conf["encoder_conf"]["output_size"])  # a head the adapter ignores
        (d / "config.yaml").write_text(yaml.safe_dump({"model": "SenseVoiceSmall", **conf}))
        torch.save(state, d / "model.pt")
        _write_cmvn(d / "am.mvn", in_dim, np.random.default_rng(seed))
    else:
        raise ValueError(f"no random builder for {name!r}; known: {', '.join(NEURAL_MODELS)}")
    return d
