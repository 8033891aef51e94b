"""Model files in their libraries' layouts: funasr's ``config.yaml`` / ``model.pt`` / ``am.mvn``, strict weight
loading, and random weights for models built from a config (tests, benchmarks without weights).

Shared by every encoder family; nothing here imports funasr or transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from emocache.encoders.base import EncoderError


def read_yaml(path: Path) -> dict:
    """A funasr ``config.yaml`` as plain containers (OmegaConf interpolations resolved, as funasr reads it)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def load_checkpoint(path: Path) -> dict:
    """A funasr ``model.pt``: the state dict, unwrapped from ``state_dict``/``model`` and ``module.`` prefixes."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # older funasr checkpoints pickle extra training state next to the weights
        obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return {k.removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}


def missing_keys(model: torch.nn.Module, state: dict) -> list[str]:
    """Model parameters/buffers the checkpoint does not provide (funasr's loader only warns about these)."""
    return sorted(k for k in model.state_dict() if k not in state)


def load_strict(model: torch.nn.Module, state: dict, what: str) -> None:
    """Load ``state`` into ``model`` and refuse a checkpoint that leaves any model key unloaded or misshaped."""
    lost = missing_keys(model, state)
    if lost:
        raise EncoderError(f"{what}: checkpoint lacks {len(lost)} of the model's weights "
                           f"(e.g. {', '.join(lost[:5])}); the file is incomplete or for another model")
    own = model.state_dict()
    bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if bad:
        raise EncoderError(f"{what}: checkpoint shapes differ for {', '.join(bad[:5])}; wrong config for these weights")
    model.load_state_dict({k: state[k] for k in own}, strict=True)


def randomize(model: torch.nn.Module, seed: int) -> None:
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


def write_cmvn(path: Path, dim: int, rng: np.random.Generator) -> None:
    """A Kaldi Nnet CMVN file (``<AddShift>`` means, ``<Rescale>`` inverse stds) in funasr's ``am.mvn`` layout."""
    shift = " ".join(f"{x:.6f}" for x in -10.0 - rng.random(dim))
    scale = " ".join(f"{x:.6f}" for x in 0.2 + 0.1 * rng.random(dim))
    path.write_text(f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {shift} ]\n"
                    f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n")
