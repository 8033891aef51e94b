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
from emocache.encoders.frontends import KaldiFbank
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
    # funasr's masks are float32: in the weights' type (0 and 1 are exact) they keep the FSMN in that type
    memory = self.forward_fsmn(v_flat, None if mask is None else mask.to(v_flat.dtype), mask_shfit_chunk)  # (B, T, D)
    keep = None
    if mask is not None:
        keep = mask if mask_att_chunk_encoder is None else mask * mask_att_chunk_encoder
        keep = keep.bool()[:, None]  # (B, 1, 1|T, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep)  # (B, H, T, d)
    b, h, t, d = out.shape
    return self.linear_out(out.transpose(1, 2).reshape(b, t, h * d)) + memory


def _positions_fp32(self, x):
    """SinusoidalPositionEncoder.forward (funasr's ``encode``: positions 1..T, timescales 10000^(-k / (D/2 - 1)),
    [sin, cos]) computed and added in float32 whatever the weights' type (positions past 256 are not integers in
    bf16), and without funasr's host-to-device copy of the constant."""
    t, d = x.shape[1], x.shape[2]
    inc = float(torch.log(torch.tensor([10000.0])) / (d / 2 - 1))  # funasr's float32 constant, computed on the host
    inv = torch.exp(torch.arange(d // 2, device=x.device, dtype=torch.float32) * -inc)  # (D/2,)
    scaled = torch.arange(1, t + 1, device=x.device, dtype=torch.float32)[:, None] * inv[None]  # (T, D/2)
    return (x.float() + torch.cat([torch.sin(scaled), torch.cos(scaled)], 1)[None]).to(x.dtype)


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
    device_frontend = True
    input_key = "feats"

    def _build(self, conf: dict, cmvn: Path | None) -> None:
        import_or_hint("funasr.models.sense_voice.model", "funasr", FUNASR_INSTALL)
        from funasr.frontends.wav_frontend import WavFrontend
        from funasr.models.sense_voice.model import MultiHeadedAttentionSANM, SenseVoiceEncoderSmall

        if conf.get("encoder", "SenseVoiceEncoderSmall") != "SenseVoiceEncoderSmall":
            raise EncoderError(f"config.yaml names encoder {conf.get('encoder')!r}, not SenseVoiceEncoderSmall")
        fe_conf = {**FRONTEND_CONF, **conf.get("frontend_conf", {}), "dither": 0.0}
        fe_conf.pop("cmvn_file", None)
        self.fbank = WavFrontend(cmvn_file=str(cmvn) if cmvn else None, **fe_conf)
        if not self.frontend_on_device:
            try:  # funasr's fbank needs torchaudio or kaldi-native-fbank; say so before the first batch fails
                self.fbank(torch.zeros(1, 800), torch.tensor([800]))
            except ImportError as e:
                raise EncoderError(f"SenseVoice's CPU fbank needs torchaudio or kaldi-native-fbank: pip install "
                                   f"kaldi-native-fbank (or run with --frontend device) ({e})") from None
        self.lfr_m, self.lfr_n = int(fe_conf["lfr_m"]), int(fe_conf["lfr_n"])
        self.shift = int(fe_conf["fs"] * fe_conf["frame_shift"] / 1000)
        self.window = int(fe_conf["fs"] * fe_conf["frame_length"] / 1000)
        self.frame_rate = fe_conf["fs"] / self.shift / self.lfr_n
        self.device_fbank = KaldiFbank(int(fe_conf["n_mels"]), int(fe_conf["fs"]), float(fe_conf["frame_length"]),
                                       float(fe_conf["frame_shift"]), self.lfr_m, self.lfr_n, self.fbank.cmvn,
                                       self.device)
        input_size = self.fbank.output_size()
        encoder = SenseVoiceEncoderSmall(input_size=input_size, **conf["encoder_conf"])
        self.model = _Parts(encoder, torch.nn.Embedding(16, input_size))
        for m in encoder.modules():
            if isinstance(m, MultiHeadedAttentionSANM):
                m.forward = types.MethodType(_sdpa_sanm, m)
        encoder.embed.forward = types.MethodType(_positions_fp32, encoder.embed)
        self.query_ids = torch.tensor([QUERY_IDS], dtype=torch.long, device=self.device)  # (1, 4)

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

    def cpu_frontend(self, waves: list[np.ndarray]) -> dict:
        """funasr's fbank + LFR + CMVN per wave (dither 0) -> ``feats`` (B, T, 560)."""
        mats = []
        for w in waves:
            x = torch.from_numpy(np.ascontiguousarray(w, dtype=np.float32))[None]  # (1, N)
            feats, _ = self.fbank(x, torch.tensor([x.shape[1]]))  # (1, T, 560)
            mats.append(feats[0])
        out = torch.zeros(len(mats), max(m.shape[0] for m in mats), mats[0].shape[1])
        for i, m in enumerate(mats):
            out[i, : m.shape[0]] = m
        return {"feats": out}

    def device_frontend_run(self, raw: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        """The same features as batched torch ops on the device (:class:`~emocache.encoders.frontends.KaldiFbank`)."""
        return self.device_fbank(raw, num_samples)[0]

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model_input(inputs)  # (B, T, 560)
        lengths = torch.tensor([self.valid_frames(int(x)) for x in inputs["num_samples"]])
        b = feats.shape[0]
        queries = self.model.embed(self.query_ids).expand(b, -1, -1)  # (B, 4, 560)
        x = torch.cat([queries, feats], 1)  # (B, 4 + T, 560)
        out, _ = self.model.encoder(x, self.host_to_device(lengths + NUM_QUERIES))  # (B, 4 + T, D)
        return out[:, NUM_QUERIES:], lengths

    def compile_regions(self) -> list[torch.nn.Module]:
        e = self.model.encoder
        return list(e.encoders0) + list(e.encoders) + list(e.tp_encoders)
