"""Offline weight resolution and the weights' identity, shared by the neural encoders.

Weights resolve from, in order: ``--model-path DIR``; the Hugging Face hub cache (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), looked up with huggingface_hub's own offline
``snapshot_download(local_files_only=True)``; the ModelScope cache (``MODELSCOPE_CACHE``, else
``~/.cache/modelscope/hub``; both of ModelScope's folder layouts). Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from emocache.encoders.base import EncoderError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


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
    """The cached snapshot ``refs/main`` names, through huggingface_hub offline: (dir, revision, repo folder).

    The cache folder is read from the environment at call time (huggingface_hub fixes it at import).
    """
    from huggingface_hub import snapshot_download

    cache = hf_cache_dir()
    repo_dir = cache / ("models--" + repo.replace("/", "--"))
    try:
        snap = Path(snapshot_download(repo, cache_dir=cache, local_files_only=True))
    except (OSError, ValueError):  # LocalEntryNotFoundError is an OSError: not cached
        return None, None, repo_dir
    return snap, snap.name, repo_dir


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

