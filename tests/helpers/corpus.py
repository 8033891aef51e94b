"""The synthetic demo corpus in a test folder (``emocache.demo.make_corpus``), with the paths tests need."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Corpus:
    root: Path
    """Folder holding ``demo/`` (pass ``--audio-root demo=<root>/demo``)."""
    ds_dir: Path
    """``root/demo``: demo.jsonl, label_map.json, fold_<k>/..., audio/..."""

    @property
    def manifest(self) -> Path:
        return self.ds_dir / f"{self.ds_dir.name}.jsonl"

    @property
    def audio_root(self) -> str:
        return f"{self.ds_dir.name}={self.ds_dir}"

    def lines(self) -> list[dict]:
        return [json.loads(s) for s in self.manifest.read_text().splitlines() if s.strip()]


def make_corpus_at(root: Path, per_class: int = 1, seed: int = 0) -> Corpus:
    from emocache.demo import make_corpus

    ds_dir = make_corpus(root, per_class=per_class, seed=seed)
    return Corpus(root=Path(root), ds_dir=Path(ds_dir))
