"""Random versions of the registered neural encoders, saved in each library's own layout.

``save_random(name, directory)`` writes a tiny model (tests) or, with ``size="full"``, the real shapes with
random weights (benchmarks without weights). The files are what users' weights look like: ``config.json`` +
safetensors (+ ``preprocessor_config.json``) for transformers models, ``config.yaml`` + ``model.pt`` (+ ``am.mvn``)
for funasr models, so loading them exercises the same offline path. Each encoder class says how
(:meth:`~emocache.encoders.neural.NeuralEncoder.save_random`, ``tiny_overrides``); this module looks them up.
"""

from __future__ import annotations

import copy
from pathlib import Path

from emocache.encoders.registry import encoder_class, neural_models

SIZES = ("tiny", "full")


def _neural(name: str):
    cls = encoder_class(name)  # an unknown name lists the known ones
    if not cls.has_weights:
        raise ValueError(f"{name} is weight-free: no random weights to build; neural models: "
                         f"{', '.join(neural_models())}")
    return cls


def overrides(name: str, size: str = "tiny") -> dict:
    """Config overrides for ``EncoderConfig(random_init=True, config_overrides=...)``: tiny shapes or none."""
    if size not in SIZES:
        raise ValueError(f"size {size!r}: tiny or full")
    return copy.deepcopy(_neural(name).tiny_overrides) if size == "tiny" else {}


def save_random(name: str, directory: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build ``name`` with random weights and save it to ``directory`` in its library's layout."""
    import torch

    cls = _neural(name)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cls.save_random(d, overrides(name, size), seed)
    return d
