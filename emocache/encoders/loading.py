"""Offline weight resolution, weights identity, and the compute-precision check shared by the neural encoders.

Weights resolve from, in order: ``--model-path DIR``; the Hugging Face hub cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``); the ModelScope cache (``MODELSCOPE_CACHE``, else
``~/.cache/modelscope/hub``). Nothing here touches the network.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emocache.encoders.base import Encoder, EncoderConfig, EncoderError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
HALF_TYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COSINE_MIN = 0.999


@dataclass
class Resolved:
    """A directory holding a model and the identity of its weights."""

    path: Path
    identity: dict


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path("~/.cache/huggingface/hub").expanduser()


def modelscope_dirs(repo: str) -> list[Path]:
    """Where ModelScope versions put ``org/name``: newer ``<cache>/models/org/name``, older ``<cache>/org/name``."""
    base = Path(os.environ.get("MODELSCOPE_CACHE") or "~/.cache/modelscope/hub").expanduser()
    roots = [base, base / "hub"] if os.environ.get("MODELSCOPE_CACHE") else [base]
    return [d for r in roots for d in (r / "models" / repo, r / repo)]


def weight_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def sha256_files(files: list[Path]) -> str:
    """One digest over the files' names and contents (streamed; symlinks followed)."""
    total = hashlib.sha256()
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        total.update(f"{f.name}:{h.hexdigest()}\n".encode())
    return total.hexdigest()


def _has(directory: Path, required: tuple[str, ...]) -> bool:
    return directory.is_dir() and all((directory / r).exists() for r in required) and bool(weight_files(directory))


def _hf_snapshot(repo: str) -> tuple[Path | None, str | None, Path]:
    """The snapshot that ``refs/main`` names in the HF cache (else the newest one): (dir, revision, repo dir)."""
    repo_dir = hf_cache_dir() / ("models--" + repo.replace("/", "--"))
    snaps = repo_dir / "snapshots"
    if not snaps.is_dir():
        return None, None, repo_dir
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        rev = ref.read_text().strip()
        if (snaps / rev).is_dir():
            return snaps / rev, rev, repo_dir
    found = sorted((d for d in snaps.iterdir() if d.is_dir()), key=lambda d: d.stat().st_mtime)
    return (found[-1], found[-1].name, repo_dir) if found else (None, None, repo_dir)


def _ms_revision(directory: Path) -> str | None:
    """ModelScope writes the downloaded revision into ``.mv`` in newer versions."""
    mv = directory / ".mv"
    text = mv.read_text().strip() if mv.is_file() else ""
    if "Revision:" not in text:
        return None
    return text.split("Revision:", 1)[1].split(",")[0].strip() or None


def resolve_weights(model: str, required: tuple[str, ...], hf_repos: tuple[str, ...] = (),
                    ms_repos: tuple[str, ...] = (), model_path: str | None = None) -> Resolved:
    """Find a model's files offline; raise one :class:`EncoderError` naming every place searched."""
    searched: list[str] = []
    if model_path:
        d = Path(model_path).expanduser()
        if _has(d, required):
            files = weight_files(d)
            return Resolved(d, {"weights": "sha256:" + sha256_files(files), "weights_source": "model-path",
                                "weights_path": str(d.resolve()), "weights_files": [f.name for f in files]})
        searched.append(f"--model-path {d} (needs {', '.join(required)} and a weight file)")
    for repo in hf_repos:
        snap, rev, repo_dir = _hf_snapshot(repo)
        if snap is not None and _has(snap, required):
            return Resolved(snap, {"weights": f"{repo}@{rev}", "weights_source": "huggingface-cache",
                                   "weights_repo": repo, "weights_revision": rev})
        searched.append(f"Hugging Face cache {repo_dir}")
    for repo in ms_repos:
        for d in modelscope_dirs(repo):
            if _has(d, required):
                rev = _ms_revision(d)
                ident = {"weights_source": "modelscope-cache", "weights_repo": repo, "weights_path": str(d)}
                if rev:
                    ident.update(weights=f"{repo}@{rev}", weights_revision=rev)
                else:
                    ident.update(weights=f"{repo}@sha256:{sha256_files(weight_files(d))}")
                return Resolved(d, ident)
            searched.append(f"ModelScope cache {d}")
    how = [f"pass --model-path DIR with the model's files ({', '.join(required)} and the weights)"]
    if hf_repos:
        how.append(f"or download once with network: huggingface-cli download {hf_repos[0]}")
    if ms_repos:
        how.append(f"or: modelscope download --model {ms_repos[0]}")
    raise EncoderError(f"weights for {model} not found (offline; no download attempted). Searched:\n  "
                       + "\n  ".join(searched) + "\nTo provide them: " + "; ".join(how)
                       + ". Set HF_HUB_CACHE / HF_HOME / MODELSCOPE_CACHE if your caches live elsewhere.")


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


def sample_waves(sr: int = 16000, seconds: tuple[float, ...] = (1.3, 3.7, 8.2), seed: int = 0) -> list[np.ndarray]:
    """Deterministic speech-like test signals (harmonics with a moving pitch, syllable envelope, noise)."""
    rng = np.random.default_rng(seed)
    out = []
    for s in seconds:
        t = np.arange(int(s * sr)) / sr
        f0 = 120 + 40 * np.sin(2 * np.pi * 0.7 * t)
        phase = 2 * np.pi * np.cumsum(f0) / sr
        voice = sum(np.sin(k * phase) / k for k in range(1, 8))
        env = 0.5 * (1 + np.sin(2 * np.pi * 4 * t)) ** 2
        out.append((0.1 * voice * env + 0.01 * rng.standard_normal(t.size)).astype(np.float32))
    return out


def cosine_to_fp32(encoder: "NeuralEncoder", dtype: str, waves: list[np.ndarray] | None = None) -> float:
    """Lowest cosine similarity between pooled vectors computed in ``dtype`` and in fp32 (same weights)."""
    waves = waves or sample_waves(encoder.sample_rate)
    keep = encoder.compute_dtype
    try:
        encoder.compute_dtype = torch.float32
        ref = encoder.encode(waves).pooled
        encoder.compute_dtype = HALF_TYPES[dtype]
        low = encoder.encode(waves).pooled
    finally:
        encoder.compute_dtype = keep
    if not np.isfinite(low).all():
        return float("nan")
    num = (ref * low).sum(1)
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(low, axis=1) + 1e-12
    return float((num / den).min())


def select_dtype(encoder: "NeuralEncoder", requested: str) -> torch.dtype:
    """fp32 on CPU for ``auto``; on GPU the first of bf16, fp16 whose pooled vectors pass the cosine check."""
    if requested == "fp32":
        return torch.float32
    if requested in HALF_TYPES:
        return HALF_TYPES[requested]
    if requested != "auto":
        raise EncoderError(f"dtype {requested!r}: use auto, fp32, bf16 or fp16")
    if encoder.device.type != "cuda":
        return torch.float32
    for name in ("bf16", "fp16"):
        cos = cosine_to_fp32(encoder, name)
        encoder.precision_checks[name] = cos
        if cos >= COSINE_MIN:
            return HALF_TYPES[name]
    return torch.float32


class NeuralEncoder(Encoder):
    """An encoder with weights: resolves them offline (or builds random ones), moves the model, picks the dtype.

    Subclasses set the repo ids and ``required_files`` and implement :meth:`load` (from a directory) and
    :meth:`build_random` (full-size shapes from the config, with ``config_overrides``).
    """

    max_seconds = 30.0
    """Inputs over 30 s follow the long-utterance policy (windows by default) for every neural encoder."""
    hf_repos: tuple[str, ...] = ()
    ms_repos: tuple[str, ...] = ()
    required_files: tuple[str, ...] = ()

    def __init__(self, config: EncoderConfig | None = None):
        super().__init__(config)
        self.precision_checks: dict[str, float] = {}
        self.compute_dtype = torch.float32
        if self.config.random_init:
            self.build_random(dict(self.config.config_overrides))
            self._identity = {"weights": "random-init", "weights_source": "random-init",
                              "weights_config": {k: repr(v) for k, v in self.config.config_overrides.items()}}
        else:
            found = resolve_weights(self.name, self.required_files, self.hf_repos, self.ms_repos,
                                    self.config.model_path)
            self.load(found.path)
            self._identity = found.identity
        for m in self.modules():
            m.eval().requires_grad_(False).to(self.device)
        self.compute_dtype = select_dtype(self, self.config.dtype)

    @abstractmethod
    def load(self, path: Path) -> None:
        """Build the model from the files in ``path`` with a strict weight-key check."""

    @abstractmethod
    def build_random(self, overrides: dict) -> None:
        """Build the full-size model with random weights (``overrides`` changes config fields)."""

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules to move to the device."""
        return [self.model]

    def autocast(self):
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.compute_dtype)

    def weights_identity(self) -> dict:
        return dict(self._identity)

    @property
    def dtype_name(self) -> str:
        return {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.compute_dtype]

    def prepare(self, waves: list[np.ndarray]) -> tuple[dict, list[int]]:
        """Window + frontend, then page-lock the tensors for an asynchronous copy (runs in loader threads)."""
        inputs, owner = super().prepare(waves)
        if self.device.type == "cuda":
            inputs = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in inputs.items()}
        return inputs, owner

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, non_blocking=t.is_pinned())


def import_or_hint(module: str, package: str):
    """Import a heavy optional dependency, or raise an :class:`EncoderError` that says how to install it."""
    import contextlib
    import importlib
    import io

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # funasr prints an ffmpeg notice on import; audio is ours
            return importlib.import_module(module)
    except ImportError as e:
        raise EncoderError(f"{module} is needed for this encoder (an emocache dependency): "
                           f"pip install '{package}' ({e})") from e
