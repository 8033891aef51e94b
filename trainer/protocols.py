"""Training protocols (`--protocol`): how long each stage of a run trains.

``paper`` is the B-GRPO paper's (section 4.1): fixed epochs per stage (--epochs-baseline, --epochs-stage2), no
validation. ``converged`` (ours) trains each stage of every method until its validation macro-F1 stops
improving, so a two-stage method starts its stage 2 from a converged supervised model. A new protocol is one
entry of :data:`PROTOCOLS`; the loops read only its fields (trainer.loop.EpochLog.epochs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    """How the stages of a run end."""

    name: str
    summary: str
    stops_on_validation: bool = False
    """Each stage ends once every run's validation macro-F1 has not improved for --converge-patience epochs (at
    most --converge-max-epochs), and ends with each run's best-validation weights restored."""
    val_fraction: float = 0.0
    """Validation share of the labelled rows when --val-fraction is 0 and --val is 'fraction' (0: none)."""


PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", "fixed epochs per stage (--epochs-baseline, --epochs-stage2), the paper's"),
    "converged": Protocol(
        "converged", "ours: each stage until its validation macro-F1 stops improving (--converge-patience, "
        "--converge-max-epochs), best-validation weights restored", stops_on_validation=True, val_fraction=0.2),
}
"""--protocol names -> :class:`Protocol`; the first is the default."""


def get_protocol(name: str) -> Protocol:
    """The protocol registered as ``name``; an unknown name lists the known ones."""
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}") from None


@dataclass(frozen=True)
class StopRule:
    """Early stopping of one stage on validation (a protocol with ``stops_on_validation``)."""

    patience: int
    """Epochs without a strict improvement of a run's validation macro-F1 after which the run stops."""
    max_epochs: int
    """Most epochs of a stage."""


__all__ = ["Protocol", "PROTOCOLS", "get_protocol", "StopRule"]
