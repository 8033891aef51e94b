"""Shared fixtures (plain helpers live in :mod:`tests.helpers`). Test folders are packages (``tests``,
``tests.emocache``, ...), so pytest puts the repository root on sys.path and ``emocache`` / ``trainer`` are the
real packages, never the test folders of the same name.

- ``demo_corpus`` (session): ``emocache.demo.make_corpus(root, per_class=1)``; use ``--audio-root demo=<root>/demo``.
- ``corpus(per_class=1)`` (function factory): a fresh corpus in tmp_path (for tests that modify it).
- ``cli``: invoke ``emocache`` in-process (typer CliRunner) -> (exit_code, output).
- ``run_cli``: invoke ``emocache`` in a subprocess -> CompletedProcess (for smoke runs).
"""

from __future__ import annotations

import shutil

import pytest

from tests.helpers.cli import run_emocache
from tests.helpers.corpus import Corpus, make_corpus_at


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory) -> Corpus:
    """Read-only shared corpus: 6 speakers x 6 emotions x 1 = 36 utterances. Do not modify it."""
    return make_corpus_at(tmp_path_factory.mktemp("demo_corpus"), per_class=1)


@pytest.fixture
def corpus(tmp_path, demo_corpus):
    """Factory for a private corpus copy: ``corpus()`` copies the session corpus; ``corpus(per_class=2)`` makes one."""

    def make(per_class: int = 1, seed: int = 0) -> Corpus:
        root = tmp_path / f"corpus_{per_class}_{seed}"
        if per_class == 1 and seed == 0:
            shutil.copytree(demo_corpus.root, root)
            return Corpus(root=root, ds_dir=root / demo_corpus.ds_dir.name)
        return make_corpus_at(root, per_class=per_class, seed=seed)

    return make


@pytest.fixture
def cli(monkeypatch):
    """Run ``emocache`` in-process: ``code, output = cli("info", str(store), "--json")`` (stdout and stderr;
    rich output unwrapped: the console is 400 columns wide)."""
    from typer.testing import CliRunner

    from emocache.cli import app
    from emocache.runtime import console

    monkeypatch.setattr(console, "_width", 400)

    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        res = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        return res.exit_code, res.output

    return invoke


@pytest.fixture
def run_cli():
    """Run ``emocache`` in a subprocess: ``p = run_cli("models"); p.returncode, p.stdout, p.stderr``."""
    return run_emocache
