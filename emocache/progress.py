"""Rich progress bars shared by the CLIs (silent when disabled or not on a terminal)."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

console = Console(stderr=True)


@contextmanager
def progress_bar(enabled: bool = True):
    """A rich Progress with a counter, elapsed and remaining time."""
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                   disable=not enabled or not console.is_terminal)
    with bar:
        yield bar
