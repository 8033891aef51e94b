"""SenseVoice-Small encoder (funasr): last-layer frames at 100/6 Hz, mean over valid frames.

Frontend: Kaldi fbank 80 x LFR(7, 6) + CMVN from ``am.mvn`` with dither 0 (funasr's default dither 1.0 makes
features random). The encoder sees 4 query embeddings (language "auto", event, emotion, no-ITN) prepended to the
features, as funasr's inference does; their output positions are dropped from frames and pooling. The encoder
masks padding in attention and in its FSMN memory, so padded batches are exact; attention runs through SDPA.
Only the encoder and the query embedding are built (the CTC head is not on the feature path), and the checkpoint
must supply every one of their weights.
"""

from __future__ import annotations

import copy
import math
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import yaml

from emocache.encoders.base import EncoderError
from emocache.encoders.checkpoint import load_checkpoint, load_strict, randomize, read_yaml, write_cmvn
from emocache.encoders.neural import FUNASR_INSTALL, NeuralEncoder, import_or_hint
from emocache.encoders.registry import register

QUERY_IDS = (0, 1, 2, 15)  # language "auto", event, emotion, text norm "woitn" (funasr's SenseVoiceSmall.inference)
NUM_QUERIES = len(QUERY_IDS)
FRONTEND_CONF = dict(fs=16000, window="hamming", n_mels=80, frame_length=25, frame_shift=10, lfr_m=7, lfr_n=6)
ENCODER_CONF = dict(output_size=512, attention_heads=4, linear_units=2048, num_blocks=50, tp_blocks=20,
                    dropout_rate=0.1, positional_dropout_rate=0.1, attention_dropout_rate=0.1, input_layer="pe",
                    pos_enc_class="SinusoidalPositionEncoder", normalize_before=True, kernel_size=11, sanm_shfit=0,
                    selfattention_layer_type="sanm")
FULL_CONFIG = dict(encoder="SenseVoiceEncoderSmall", encoder_conf=ENCODER_CONF, frontend="WavFrontend",
                   frontend_conf=FRONTEND_CONF)


def _sdpa_sanm(self, x, mask, mask_shfit_chunk=None, mask_att_chunk_encoder=None):
    """MultiHeadedAttentionSANM.forward with the attention through scaled_dot_product_attention."""
    q, k, v, v_flat = self.forward_qkv(x)  # (B, H, T, d) x3, (B, T, D)
    memory = self.forward_fsmn(v_flat, mask, mask_shfit_chunk)  # (B, T, D)
    keep = None
    if mask is not None:
        keep = mask if mask_att_chunk_encoder is None else mask * mask_att_chunk_encoder
        keep = keep.bool()[:, None]  # (B, 1, 1|T, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, T, d)
    b, h, t, d = out.shape
    return self.linear_out(out.transpose(1, 2).reshape(b, t, h * d)) + memory


class _Parts(torch.nn.Module):
    """The feature path of funasr's SenseVoiceSmall, under its parameter names (``encoder.*``, ``embed.*``)."""

    def __init__(self, encoder: torch.nn.Module, embed: torch.nn.Embedding):
        super().__init__()
        self.encoder = encoder
        self.embed = embed


@register
class SenseVoiceSmall(NeuralEncoder):
    """iic/SenseVoiceSmall SANM encoder, 512-d."""

    name = "sensevoice-small"
    frame_rate = 100.0 / 6
    hf_repos = ("FunAudioLLM/SenseVoiceSmall",)
    ms_repos = ("iic/SenseVoiceSmall",)
    required_files = ("config.yaml", "am.mvn")
    model_types = ("SenseVoiceSmall",)
    full_config = FULL_CONFIG
    tiny_overrides = dict(encoder_conf=dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=3,
                                            tp_blocks=2))

    def _build(self, conf: dict, cmvn: Path | None) -> None:
        import_or_hint("funasr.models.sense_voice.model", "funasr", FUNASR_INSTALL)
        from funasr.frontends.wav_frontend import WavFrontend
        from funasr.utils import fbank as kaldi

        if not (kaldi._HAS_TORCHAUDIO or kaldi._knf is not None):
            raise EncoderError("SenseVoice's fbank needs torchaudio or kaldi-native-fbank: "
                               "pip install kaldi-native-fbank")
        from funasr.models.sense_voice.model import MultiHeadedAttentionSANM, SenseVoiceEncoderSmall

        if conf.get("encoder", "SenseVoiceEncoderSmall") != "SenseVoiceEncoderSmall":
            raise EncoderError(f"config.yaml names encoder {conf.get('encoder')!r}, not SenseVoiceEncoderSmall")
        fe_conf = {**FRONTEND_CONF, **conf.get("frontend_conf", {}), "dither": 0.0}
        fe_conf.pop("cmvn_file", None)
        self.fbank = WavFrontend(cmvn_file=str(cmvn) if cmvn else None, **fe_conf)
        self.lfr_m, self.lfr_n = int(fe_conf["lfr_m"]), int(fe_conf["lfr_n"])
        self.shift = int(fe_conf["fs"] * fe_conf["frame_shift"] / 1000)
        self.window = int(fe_conf["fs"] * fe_conf["frame_length"] / 1000)
        self.frame_rate = fe_conf["fs"] / self.shift / self.lfr_n
        input_size = self.fbank.output_size()
        encoder = SenseVoiceEncoderSmall(input_size=input_size, **conf["encoder_conf"])
        self.model = _Parts(encoder, torch.nn.Embedding(16, input_size))
        for m in encoder.modules():
            if isinstance(m, MultiHeadedAttentionSANM):
                m.forward = types.MethodType(_sdpa_sanm, m)
        self.query_ids = torch.tensor([QUERY_IDS], dtype=torch.long)  # (1, 4)

    def load(self, path: Path) -> None:
        path = Path(path)
        conf = read_yaml(path / "config.yaml")
        self._build(conf, path / "am.mvn")
        ckpt = path / "model.pt"
        if not ckpt.is_file():
            raise EncoderError(f"{path}: no model.pt (funasr checkpoint) next to config.yaml")
        load_strict(self.model, load_checkpoint(ckpt, self.config.trust_checkpoint), f"{self.name} {ckpt}")

    @classmethod
    def merged_config(cls, overrides: dict) -> dict:
        conf = copy.deepcopy(cls.full_config)
        conf["encoder_conf"].update(overrides.get("encoder_conf", {}))
        conf["frontend_conf"].update(overrides.get("frontend_conf", {}))
        return conf

    def build_random(self, overrides: dict) -> None:
        self._build(self.merged_config(overrides), None)

    @classmethod
    def save_random(cls, directory: Path, overrides: dict, seed: int) -> None:
        """funasr's layout: ``config.yaml``, ``model.pt`` (encoder, query embedding and a CTC head the adapter
        ignores) and a Kaldi ``am.mvn``."""
        import_or_hint("funasr.models.sense_voice.model", "funasr", FUNASR_INSTALL)
        from funasr.models.sense_voice.model import SenseVoiceEncoderSmall

        d = Path(directory)
        conf = cls.merged_config(overrides)
        in_dim = conf["frontend_conf"]["n_mels"] * conf["frontend_conf"]["lfr_m"]
        parts = _Parts(SenseVoiceEncoderSmall(input_size=in_dim, **conf["encoder_conf"]),
                       torch.nn.Embedding(16, in_dim))
        randomize(parts, seed)
        state = dict(parts.state_dict())
        state["ctc.ctc_lo.weight"] = torch.randn(8, conf["encoder_conf"]["output_size"])
        (d / "config.yaml").write_text(yaml.safe_dump({"model": "SenseVoiceSmall", **conf}))
        torch.save(state, d / "model.pt")
        write_cmvn(d / "am.mvn", in_dim, np.random.default_rng(seed))

    @classmethod
    def reference(cls, path: Path, wave: np.ndarray) -> np.ndarray:
        """funasr's SenseVoiceSmall.inference with its own frontend; the encoder output, query positions dropped."""
        import_or_hint("funasr.models.sense_voice.model", "funasr", FUNASR_INSTALL)
        from funasr.frontends.wav_frontend import WavFrontend
        from funasr.models.sense_voice.model import SenseVoiceSmall as Library

        path = Path(path)
        conf = read_yaml(path / "config.yaml")
        fe_conf = conf["frontend_conf"]
        model = Library(encoder=conf["encoder"], encoder_conf=conf["encoder_conf"],
                        input_size=fe_conf["n_mels"] * fe_conf["lfr_m"], vocab_size=8).eval()
        model.load_state_dict(torch.load(path / "model.pt"), strict=False)
        frontend = WavFrontend(cmvn_file=str(path / "am.mvn"), dither=0.0, **fe_conf)
        captured = {}

        class Stop(Exception):
            pass

        def grab(module, args, out):
            captured["x"] = out[0]
            raise Stop

        hook = model.encoder.register_forward_hook(grab)
        try:
            model.inference([torch.from_numpy(wave)], key=["u"], frontend=frontend, device="cpu", language="auto",
                            use_itn=False)
        except Stop:
            pass
        finally:
            hook.remove()
        return captured["x"][0, NUM_QUERIES:].detach().numpy()  # (T, D)

    @property
    def dim(self) -> int:
        return int(self.model.encoder.output_size())

    def valid_frames(self, num_samples: int) -> int:
        if num_samples < self.window:
            return 0
        return math.ceil((1 + (num_samples - self.window) // self.shift) / self.lfr_n)

    def frontend(self, waves: list[np.ndarray]) -> dict:
        """fbank + LFR + CMVN per wave (dither 0) -> ``feats`` (B, T, 560), ``lengths`` (B,)."""
        mats = []
        for w in waves:
            x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))[None]  # (1, N)
            feats, _ = self.fbank(x, torch.tensor([x.shape[1]]))  # (1, T, 560)
            mats.append(feats[0])
        lengths = torch.tensor([m.shape[0] for m in mats], dtype=torch.long)
        out = torch.zeros(len(mats), int(lengths.max()), mats[0].shape[1])
        for i, m in enumerate(mats):
            out[i, : m.shape[0]] = m
        return {"feats": out, "lengths": lengths}

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        feats, lengths = self.to_device(inputs["feats"]), inputs["lengths"]
        b = feats.shape[0]
        with self.autocast():
            queries = self.model.embed(self.query_ids.to(feats.device)).expand(b, -1, -1)  # (B, 4, 560)
            x = torch.cat([queries.to(feats.dtype), feats], 1)  # (B, 4 + T, 560)
            out, _ = self.model.encoder(x, (lengths + NUM_QUERIES).to(feats.device))  # (B, 4 + T, D)
        return out[:, NUM_QUERIES:], lengths
