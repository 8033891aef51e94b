"""Run health: predicted-class histograms, the collapse rule, the under-predicted rule and the under-trained rule
(all ours).

Collapse rule (what a stage 2 did, not what stage 1 already was): at an evaluated epoch of a stage after the
first, a run's predictions on its stage-2 pool have collapsed when some class the model predicted for at least
``MIN_SHARE`` (2 %) of the pool when the stage started (the end of stage 1, best-validation weights restored
under --protocol converged) is now predicted for under ``FLOOR`` (1 %) of it, or when the entropy of the
predicted-class histogram is below ``ENTROPY_FLOOR`` (half) of the entropy at the start of the stage. The
reference is the same pool's predictions, so with --unlabeled-from the external pool is held against the
stage-1 model's predictions on that pool, never against the trained corpus's class shares. A run is reported
collapsed when its last evaluated epoch is; ``collapse_epoch`` is the first epoch from which the rule held at
every evaluated epoch up to the end. One-stage methods (and stage 1) have no reference: they are never
collapsed.

Under-predicted rule (every method, every stage): a class that holds at least ``MIN_SHARE`` of the run's
labelled rows is predicted for under ``FLOOR`` of the pool at the reported stage's last evaluated epoch. It
describes the model as it is (an under-trained supervised model that rarely predicts one class is flagged), not
a change. Not judged with --unlabeled-from (another corpus's pool need not hold the trained classes).

Under-trained rule: a supervised stage whose mean training loss over its last tenth of epochs (at least 2) is
still lower than over the tenth before it by more than ``UNDERTRAINED_DROP`` (1 %) of its first epoch's loss
(a loss near 0 or flat at the end does not count; one still sliding down does).
"""

from __future__ import annotations

import math

import torch

FLOOR = 0.01
"""A class predicted for less than this share of the pool counts as lost (collapse) or under-predicted."""
MIN_SHARE = 0.02
"""Classes below this share of the reference (collapse: the stage's starting predictions; under-predicted: the
labelled rows) are not judged (too rare to tell)."""
ENTROPY_FLOOR = 0.5
"""Predicted-class entropy below this fraction of the reference's entropy counts as collapsed."""
UNDERTRAINED_DROP = 0.01
"""Drop of the training loss over the last tenth of the epochs, as a fraction of the first epoch's loss, that
marks a stage under-trained."""


def class_shares(pred: torch.Tensor, valid: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Predicted-class histogram of M runs as shares; pred, valid (M, T) -> (M, C), rows sum to 1."""
    m = pred.shape[0]
    run = torch.arange(m, device=pred.device).unsqueeze(1).expand_as(pred)  # (M, T)
    counts = torch.bincount((run * n_classes + pred)[valid], minlength=m * n_classes).view(m, n_classes)
    return counts.double() / counts.sum(1, keepdim=True).clamp_min(1)


def entropy(shares: torch.Tensor) -> torch.Tensor:
    """Shannon entropy (nats) of each row of shares (..., C) -> (...)."""
    return -(shares * shares.clamp_min(1e-12).log()).sum(-1)


def collapsed(shares: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """The collapse rule (module docstring): ``shares`` (M, C) of the pool predictions now against ``reference``
    (M, C), the same pool's predicted shares when the stage started -> (M,) bool."""
    lost = ((reference >= MIN_SHARE) & (shares < FLOOR)).any(-1)
    return lost | (entropy(shares) < ENTROPY_FLOOR * entropy(reference))


def under_predicted(shares: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The under-predicted rule (module docstring): pool ``shares`` (M, C) against the labelled class shares
    ``prior`` (M, C) -> (M,) bool."""
    return ((prior >= MIN_SHARE) & (shares < FLOOR)).any(-1)


def collapse_onset(flags: list[torch.Tensor], epochs: list) -> tuple[list[bool], list[int]]:
    """Per run: collapsed at the last evaluated epoch, and the first epoch of that final collapsed stretch (-1).

    ``flags[i]`` (M,) bool is the rule at evaluated epoch ``epochs[i]``: an int, or (M,) each run's own epoch.
    """
    if not flags:
        return [], []
    f = torch.stack(flags).cpu()  # (E, M), read on the host
    m = f.shape[1]
    ep = torch.stack([e if isinstance(e, torch.Tensor) else torch.full((m,), e)
                      for e in map(_host, epochs)])  # (E, M) each run's epochs
    out, onset = f[-1].tolist(), []
    for r in range(m):
        i = len(epochs) - 1
        while i > 0 and f[i - 1, r]:
            i -= 1
        onset.append(int(ep[i, r]) if out[r] else -1)
    return out, onset


def _host(e):
    return e.cpu() if isinstance(e, torch.Tensor) else e


def under_trained(losses: list[float]) -> bool:
    """The under-trained rule (module docstring) on a stage's per-epoch mean training losses (NaN epochs, where
    the run did not train, are left out)."""
    losses = [x for x in losses if not math.isnan(x)]
    k = max(2, len(losses) // 10)
    if len(losses) < 2 * k:
        return False
    prev, last = sum(losses[-2 * k:-k]) / k, sum(losses[-k:]) / k
    return losses[0] > 0 and (prev - last) / losses[0] > UNDERTRAINED_DROP
