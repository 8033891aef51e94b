"""Model files in their libraries' layouts: funasr's ``config.yaml`` / ``model.pt`` / ``am.mvn``, strict weight
loading, and random weights for models built from a config (tests, benchmarks without weights).

Shared by every encoder family; nothing here imports funasr or transformers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from emocache.encoders.base import EncoderError
from emocache.encoders.compat_numpy import scalar_reconstructor
from emocache.inputs import LIMITS, InputError, read_bounded


YAML_NODES = 1_000_000
"""Most YAML nodes a config.yaml may expand to (aliases counted at every use): refuses alias bombs."""


def _yaml_nodes(node, memo: dict) -> int:
    """Nodes of a composed YAML graph with every alias expanded (memoised per node, so computed in linear time)."""
    import yaml

    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = 1  # a recursive alias counts once (OmegaConf refuses it later)
    if isinstance(node, yaml.MappingNode):
        n = 1 + sum(_yaml_nodes(k, memo) + _yaml_nodes(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_yaml_nodes(v, memo) for v in node.value)
    else:
        n = 1
    memo[id(node)] = min(n, YAML_NODES + 1)
    return memo[id(node)]


def read_yaml(path: Path) -> dict:
    """A funasr ``config.yaml`` as plain containers (OmegaConf interpolations resolved, as funasr reads it): a
    regular file within the spec limit whose aliases expand to at most YAML_NODES nodes; else EncoderError."""
    import io

    import yaml
    from omegaconf import OmegaConf

    try:
        text = read_bounded(path, LIMITS.spec_bytes, "model config").decode("utf-8")
        n = _yaml_nodes(yaml.compose(text, Loader=yaml.SafeLoader), {})
    except InputError as e:
        raise EncoderError(str(e)) from None
    except (UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        raise EncoderError(f"{path}: not a readable YAML config ({type(e).__name__}: {str(e).splitlines()[0][:160]})") \
            from None
    if n > YAML_NODES:
        raise EncoderError(f"{path}: its YAML aliases expand to more than {YAML_NODES} nodes; a damaged or hostile "
                           "config")
    try:
        conf = OmegaConf.to_container(OmegaConf.load(io.StringIO(text)), resolve=True)
    except Exception as e:  # OmegaConf raises its own types for bad interpolations
        raise EncoderError(f"{path}: not a usable config ({type(e).__name__}: {str(e).splitlines()[0][:160]})") \
            from None
    if not isinstance(conf, dict):
        raise EncoderError(f"{path}: a config is a YAML mapping, not a {type(conf).__name__}")
    return conf


TRUST_FLAG = "--trust-checkpoint"
"""The command-line flag that allows an unsafe (pickle) load of a checkpoint the user trusts."""


def safe_globals() -> list:
    """The plain types a real funasr ``model.pt`` holds besides tensors and containers, allowed in torch's
    weights-only unpickler: numpy scalars and dtypes (funasr's trainer stores numpy floats among its validation
    and loss statistics; numpy 1 and 2 spell the scalar's module differently). Nothing here can run code."""
    scalar = scalar_reconstructor()
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"), np.dtype,
            *(type(np.dtype(t)) for t in ("f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "?"))]


def load_checkpoint(path: Path, trust: bool = False) -> dict:
    """A funasr ``model.pt``: the state dict, unwrapped from ``state_dict``/``model_state_dict``/``model`` and
    ``module.`` prefixes, as funasr's own loader does.

    Loaded with torch's weights-only unpickler (tensors, containers, numbers, strings, and :func:`safe_globals`),
    which runs no code: funasr 1.4 itself loads checkpoints with torch's default ``weights_only=True``. A file that
    needs anything else is an EncoderError naming it, the reason and :data:`TRUST_FLAG`; ``trust`` (that flag)
    loads it with full pickle after a warning naming the file.
    """
    import re
    import warnings

    path = Path(path)
    try:
        with torch.serialization.safe_globals(safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged files; none of them ran code
        text = str(e)
        if "Weights only load failed" not in text:
            first = (text.splitlines() or [""])[0][:200]
            raise EncoderError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {first}); the file is "
                               "damaged or not a model.pt") from None
        if not trust:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            why = (f"it refers to the Python object {found.group(1)}" if found else
                   "it holds objects other than tensors, numbers, strings and containers")
            raise EncoderError(f"{path}: not loadable as plain weights ({why}); loading it would run code from the "
                               f"file. Pass {TRUST_FLAG} only if you trust its source, or convert it to safetensors") \
                from None
        warnings.warn(f"{TRUST_FLAG}: loading {path} with full pickle; this runs any code the file holds",
                      stacklevel=2)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise EncoderError(f"{path}: not a torch checkpoint ({type(e2).__name__}: {str(e2)[:200]})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise EncoderError(f"{path}: holds a {type(obj).__name__}, not a state dict of tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items() if torch.is_tensor(v)}


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
