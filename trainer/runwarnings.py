"""Warnings during a run, shown once: the trainer's own as they come (each distinct message once), those of the
libraries it calls (scikit-learn's "y_pred contains classes not in y_true", torch, ...) counted and shown as one
line each with the count when the run ends, instead of once per fold, seed or epoch."""

from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

OWN = tuple(str(Path(__file__).resolve().parents[1] / name) for name in ("trainer", "emocache"))
"""Source folders whose warnings are the project's own (shown when they happen)."""


def origin(filename: str) -> str:
    """The package a warning came from: the folder after site-packages (or dist-packages), else the file's name."""
    parts = Path(filename).parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return Path(filename).stem


class RunWarnings:
    """What :func:`run_warnings` collected: own messages in order, library warnings with their counts."""

    def __init__(self, show: Callable[[str], None]):
        self.show = show
        self.own: Counter = Counter()
        self.library: Counter = Counter()

    def record(self, message, category, filename, lineno, file=None, line=None) -> None:
        """``warnings.showwarning``'s signature: show an own message the first time, count a library one."""
        text = str(message)
        if str(Path(filename).resolve()).startswith(OWN):
            if text not in self.own:
                self.show(text)
            self.own[text] += 1
        else:
            self.library[(category.__name__, origin(filename), text)] += 1

    def summary(self) -> list[str]:
        """One line per distinct library warning: the message, its category and package, how often."""
        return [f"{text} ({category} from {package}; {n} time{'s' if n > 1 else ''} in this run)"
                for (category, package, text), n in self.library.items()]


@contextmanager
def run_warnings(show: Callable[[str], None]) -> Iterator[RunWarnings]:
    """Inside: every warning is caught (``simplefilter('always')``, so none is lost to Python's once-per-location
    rule); the project's own are passed to ``show`` once per distinct message, the libraries' counted and passed
    to ``show`` as one line each when the block ends (also when it raises)."""
    tally = RunWarnings(show)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = tally.record
        try:
            yield tally
        finally:
            for line in tally.summary():
                show(line)
