"""Run health: predicted-class histograms, the collapse rule and the under-trained rule (both ours).

Collapse rule: a run's predictions on its stage-2 pool have collapsed at an epoch when some class that holds
at least ``MIN_PRIOR`` of the run's labelled rows gets less than ``SHARE_FLOOR`` (a quarter) of that share among
the predictions, or when the entropy of the predicted-class histogram is below ``ENTROPY_FLOOR`` (half) of the
labelled prior's entropy. A run is reported as collapsed when its last evaluated epoch is; ``collapse_epoch`` is
the first epoch of the unbroken collapsed stretch that ends there (how long the reported model has been so).

Under-trained rule: a supervised stage whose mean training loss over its last tenth of epochs (at least 2) is
still lower than over the tenth before it by more than ``UNDERTRAINED_DROP`` (1 %) of its first epoch's loss
(a loss near 0 or flat at the end does not count; one still sliding down does).
"""

from __future__ import annotations

import torch

SHARE_FLOOR = 0.25
"""A class predicted at less than this fraction of its labelled share counts as collapsed."""
ENTROPY_FLOOR = 0.5
"""Predicted-class entropy below this fraction of the labelled prior's entropy counts as collapsed."""
MIN_PRIOR = 0.02
"""Classes rarer than this in the labelled rows are not checked by the share rule (too few to judge)."""
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


def collapsed(shares: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
    """The collapse rule (module docstring); shares, prior (M, C) -> (M,) bool."""
    checked = prior >= MIN_PRIOR
    starved = (checked & (shares < SHARE_FLOOR * prior)).any(-1)
    return starved | (entropy(shares) < ENTROPY_FLOOR * entropy(prior))


def collapse_onset(flags: list[torch.Tensor], epochs: list[int]) -> tuple[list[bool], list[int]]:
    """Per run: collapsed at the last evaluated epoch, and the first epoch of that final collapsed stretch (-1).

    ``flags[i]`` (M,) bool is the rule at evaluated epoch ``epochs[i]``.
    """
    if not flags:
        return [], []
    f = torch.stack(flags).cpu()  # (E, M), read on the host
    out, onset = f[-1].tolist(), []
    for r in range(f.shape[1]):
        i = len(epochs) - 1
        while i > 0 and f[i - 1, r]:
            i -= 1
        onset.append(epochs[i] if out[r] else -1)
    return out, onset


def under_trained(losses: list[float]) -> bool:
    """The under-trained rule (module docstring) on a stage's per-epoch mean training losses."""
    k = max(2, len(losses) // 10)
    if len(losses) < 2 * k:
        return False
    prev, last = sum(losses[-2 * k:-k]) / k, sum(losses[-k:]) / k
    return losses[0] > 0 and (prev - last) / losses[0] > UNDERTRAINED_DROP
