"""Helpers of the store tests that damage a store on purpose."""

from __future__ import annotations

import json
from pathlib import Path


def edit(path: Path, fn) -> None:
    """Load the JSON at ``path``, let ``fn`` change it in place, write it back."""
    meta = json.loads(path.read_text())
    fn(meta)
    path.write_text(json.dumps(meta))
