"""emotion2vec encoders (funasr): last-layer frames at 50 Hz (extra tokens removed), mean over valid frames.

Each waveform is layer-normed over its own length before padding (funasr's ``normalize``). funasr's
``extract_features(padding_mask=...)`` masks attention but not the convolutional positional encoder, so padding
leaks into valid frames; the input of every positional conv block is multiplied by the valid-frame mask here,
which makes a padded batch equal each utterance run alone. Attention runs through SDPA (ALiBi bias + padding as
one additive mask). The model is built from ``config.yaml`` and the checkpoint must supply every weight of the
feature path (funasr's own loader only warns).
"""

from __future__ import annotations

import copy
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import yaml

from emocache.encoders.base import EncoderError, conv_stack_frames
from emocache.encoders.checkpoint import load_checkpoint, load_strict, randomize, read_yaml
from emocache.encoders.frontends import normalize_waves, valid_mask
from emocache.encoders.neural import FUNASR_INSTALL, NeuralEncoder, import_or_hint
from emocache.encoders.registry import register

CNN_SPEC = "[(512, 10, 5)] + [(512, 3, 2)] * 4 + [(512,2,2)] + [(512,2,2)]"
TINY_CNN = "[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] + [(32,2,2)]"


def model_conf(embed_dim: int, heads: int, depth: int = 8, prenet_depth: int = 4, spec: str = CNN_SPEC,
               pos_depth: int = 5, pos_width: int = 95, pos_groups: int = 16) -> dict:
    """The ``model_conf`` of funasr's Emotion2vec for inference (data2vec 2.0 audio, no decoder)."""
    return dict(
        loss_beta=0.0, loss_scale=None, depth=depth, start_drop_path_rate=0.0, end_drop_path_rate=0.0,
        num_heads=heads, norm_eps=1e-5, norm_affine=True, encoder_dropout=0.1, post_mlp_drop=0.1,
        attention_dropout=0.1, activation_dropout=0.0, dropout_input=0.0, layerdrop=0.0, embed_dim=embed_dim,
        mlp_ratio=4.0, layer_norm_first=False, average_top_k_layers=depth, end_of_block_targets=False,
        clone_batch=1, normalize=True,
        modalities=dict(audio=dict(
            type="AUDIO", prenet_depth=prenet_depth, prenet_layerdrop=0.0, prenet_dropout=0.1,
            start_drop_path_rate=0.0, end_drop_path_rate=0.0, num_extra_tokens=10, init_extra_token_zero=False,
            mask_noise_std=0.01, mask_prob_min=None, inverse_mask=False, mask_prob=0.7, mask_prob_adjust=0.05,
            keep_masked_pct=0.0, mask_length=5, add_masks=False, remove_masks=False, mask_dropout=0.0,
            encoder_zero_mask=True, mask_channel_prob=0.0, mask_channel_length=64, ema_local_encoder=False,
            local_grad_mult=1.0, use_alibi_encoder=True, alibi_scale=1.0, learned_alibi=False, alibi_max_pos=None,
            learned_alibi_scale=True, learned_alibi_scale_per_head=True, learned_alibi_scale_per_layer=False,
            num_alibi_heads=heads, model_depth=depth, decoder=None, extractor_mode="layer_norm",
            feature_encoder_spec=spec, conv_pos_width=pos_width, conv_pos_groups=pos_groups,
            conv_pos_depth=pos_depth, conv_pos_pre_ln=False)))


def _sdpa_attention(self, x, padding_mask=None, alibi_bias=None):
    """AltAttention.forward through scaled_dot_product_attention (same math: ALiBi added, padded keys masked)."""
    b, t, c = x.shape
    q, k, v = self.qkv(x).reshape(b, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)  # (B, H, T, d)
    bias = None
    if alibi_bias is not None:
        bias = alibi_bias[:1].to(q.dtype)  # (1, H, T, T): at inference ALiBi is the same for every item
    if padding_mask is not None:  # the adapter passes a mask only to batches with padding (known on the host)
        pad = torch.zeros(padding_mask.shape, dtype=q.dtype, device=q.device).masked_fill(
            padding_mask.bool(), float("-inf"))[:, None, None]  # (B, 1, 1, T)
        bias = pad if bias is None else bias + pad
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)  # (B, H, T, d)
    return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, t, c)))


def tiny_conf(embed_dim: int, heads: int) -> dict:
    """Test-sized shapes: 2 blocks, 1 prenet block, a 32-channel CNN."""
    return dict(embed_dim=embed_dim, num_heads=heads, depth=2,
                modalities=dict(audio=dict(prenet_depth=1, model_depth=2, num_alibi_heads=heads,
                                           feature_encoder_spec=TINY_CNN, conv_pos_groups=4)))


def merge_conf(conf: dict, overrides: dict) -> dict:
    """``conf`` with top-level overrides and ``modalities.audio`` overrides merged in (a new dict)."""
    conf, overrides = copy.deepcopy(conf), copy.deepcopy(overrides)
    audio = overrides.pop("modalities", {}).get("audio", {})
    conf.update(overrides)
    conf["modalities"]["audio"].update(audio)
    return conf


class _Emotion2vec(NeuralEncoder):
    frame_rate = 50.0
    device_frontend = True
    required_files = ("config.yaml",)
    model_types = ("Emotion2vec",)

    def _build(self, conf: dict) -> None:
        import_or_hint("funasr.models.emotion2vec.model", "funasr", FUNASR_INSTALL)
        from funasr.models.emotion2vec.model import Emotion2vec
        from funasr.models.emotion2vec.modules import AltAttention

        conf = copy.deepcopy(conf)
        conf["modalities"]["audio"]["decoder"] = None  # pre-training decoder: not on the feature path
        conf["modalities"]["audio"].setdefault("num_alibi_heads", conf["num_heads"])
        self.model = Emotion2vec(model_conf=conf, vocab_size=-1)
        self.normalize = bool(conf.get("normalize", False))  # as funasr: normalize only when configured
        enc = self.model.modality_encoders["AUDIO"]
        self.cnn = [(k, s) for _, k, s in enc.feature_enc_layers]
        self._frame_mask: torch.Tensor | None = None
        for m in enc.relative_positional_encoder.modules():
            if isinstance(m, torch.nn.Sequential) and len(m) and isinstance(m[0], torch.nn.Conv1d):
                m.register_forward_pre_hook(self._mask_conv_input)
        for m in self.model.modules():
            if isinstance(m, AltAttention) and not m.cosine_attention:
                m.forward = types.MethodType(_sdpa_attention, m)

    def _mask_conv_input(self, module, args):
        x = args[0]  # (B, D, T)
        if self._frame_mask is None:
            return None
        return (x * self._frame_mask.to(x.dtype)[:, None, : x.shape[-1]],)

    def load(self, path: Path) -> None:
        conf = read_yaml(Path(path) / "config.yaml")
        self._build(conf["model_conf"])
        ckpt = Path(path) / "model.pt"
        if not ckpt.is_file():
            raise EncoderError(f"{path}: no model.pt (funasr checkpoint) next to config.yaml")
        state = self.model.modality_encoders["AUDIO"].upgrade_state_dict_named(
            load_checkpoint(ckpt, self.config.trust_checkpoint),
            "modality_encoders.AUDIO")  # older checkpoints: 4-d alibi_scale
        load_strict(self.model, state, f"{self.name} {ckpt}")

    def build_random(self, overrides: dict) -> None:
        self._build(merge_conf(self.full_config, overrides))

    @classmethod
    def save_random(cls, directory: Path, overrides: dict, seed: int) -> None:
        """funasr's layout: ``config.yaml`` (model + model_conf) and ``model.pt`` holding ``{"model": state}``."""
        import_or_hint("funasr.models.emotion2vec.model", "funasr", FUNASR_INSTALL)
        from funasr.models.emotion2vec.model import Emotion2vec

        conf = merge_conf(cls.full_config, overrides)
        model = Emotion2vec(model_conf=conf, vocab_size=9)
        randomize(model, seed)
        (Path(directory) / "config.yaml").write_text(yaml.safe_dump({"model": "Emotion2vec", "model_conf": conf}))
        torch.save({"model": model.state_dict()}, Path(directory) / "model.pt")

    @classmethod
    def reference(cls, path: Path, wave: np.ndarray) -> np.ndarray:
        """funasr's Emotion2vec.extract_features on the layer-normed, unpadded wave (as funasr's inference)."""
        import_or_hint("funasr.models.emotion2vec.model", "funasr", FUNASR_INSTALL)
        from funasr.models.emotion2vec.model import Emotion2vec

        model = Emotion2vec(model_conf=read_yaml(Path(path) / "config.yaml")["model_conf"], vocab_size=9).eval()
        model.load_state_dict(load_checkpoint(Path(path) / "model.pt"))
        x = torch.from_numpy(wave)
        src = F.layer_norm(x, x.shape)[None]  # (1, N)
        with torch.no_grad():
            return model.extract_features(src, padding_mask=None)["x"][0].numpy()  # (T, D)

    @property
    def dim(self) -> int:
        return int(self.model.cfg.embed_dim)

    def valid_frames(self, num_samples: int) -> int:
        return conv_stack_frames(num_samples, self.cnn)

    def cpu_frontend(self, waves: list[np.ndarray]) -> dict:
        """Layer norm over each wave's own length (as funasr's inference), then zero padding."""
        if self.normalize:
            waves = [(w - w.mean()) / np.sqrt(w.var() + 1e-5) for w in waves]
        return super().cpu_frontend(waves)

    def device_frontend_run(self, raw: torch.Tensor, num_samples: torch.Tensor) -> torch.Tensor:
        return normalize_waves(raw, num_samples, 1e-5) if self.normalize else raw

    def forward(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        n = inputs["num_samples"]
        wave = self.model_input(inputs)  # (B, N)
        lengths = torch.tensor([self.valid_frames(int(x)) for x in n])
        t = self.valid_frames(wave.shape[1])
        # masks built on the device from the lengths (no host-side (B, N) mask to copy)
        padded = bool(n.min() < wave.shape[1])  # host values: no wait for the device
        pad = ~valid_mask(self.to_device(n), wave.shape[1]) if padded else None  # (B, N) samples
        self._frame_mask = valid_mask(self.host_to_device(lengths), t)  # (B, T)
        try:
            out = self.model.extract_features(wave, padding_mask=pad)
        finally:
            self._frame_mask = None
        return out["x"], lengths  # (B, T, D)

    def compile_regions(self) -> list[torch.nn.Module]:
        audio = self.model.modality_encoders["AUDIO"]
        return list(audio.context_encoder.blocks) + list(self.model.blocks)


@register
class Emotion2vecBase(_Emotion2vec):
    """iic/emotion2vec_base: 768-d."""

    name = "emotion2vec-base"
    hf_repos, ms_repos = ("emotion2vec/emotion2vec_base",), ("iic/emotion2vec_base",)
    full_config, tiny_overrides = model_conf(768, 12), tiny_conf(32, 2)


@register
class Emotion2vecPlusLarge(_Emotion2vec):
    """iic/emotion2vec_plus_large: 1024-d."""

    name = "emotion2vec-plus-large"
    hf_repos, ms_repos = ("emotion2vec/emotion2vec_plus_large",), ("iic/emotion2vec_plus_large",)
    full_config, tiny_overrides = model_conf(1024, 16), tiny_conf(48, 4)
