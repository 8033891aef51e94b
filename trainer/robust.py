"""RRPO's hybrid regularisation of the reward model (Sec. 2.2), for the teacher MLP of rewards r3-r5.

Ours in this project: the B-GRPO paper trains its teacher with plain cross-entropy; RRPO (Sec. 2.2) corrects a
reward model with label smoothing (eq. 2), energy-adaptive mixup of the input frames (Algorithm 1, eq. 3) and
adversarial training on the embedding the head reads (FGM, eq. 4), combined as eq. 5. The losses are pure
functions; :func:`train_robust` is the stacked training loop (M teachers in lockstep, as
``trainer.algorithms.supervised.train_supervised``) that combines the ones asked for.

Here the "RM" is the teacher MLP on an encoder's pooled vectors: with EAM its input is the mean over the mixed
frames (Algorithm 1 mixes frames, the transformer encoder of the paper is replaced by the mean pooling that
produced the entry's pooled vectors), and h' of eq. 4 is the MLP's input (the standardised pooled vector with
--standardize / --normalize global).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from trainer.algorithms.common import masked_mean
from trainer.algorithms.supervised import train_supervised
from trainer.data import DataError
from trainer.devices import place

@dataclass(frozen=True)
class Regularizer:
    """A --regularize name: what it does and the teacher options it reads."""

    what: str
    params: tuple[str, ...]
    """The teacher options it reads (a saved teacher is reused only where they are equal, when it is on)."""
    frames: bool = False
    """Mixes the teacher entry's stored frames (needs frames pooled by their mean, and unnormalised inputs)."""


REGULARIZERS: dict[str, Regularizer] = {
    "ls": Regularizer("label smoothing (eq. 2)", ("ls_epsilon",)),
    "eam": Regularizer("energy-adaptive mixup of the teacher's frames (Algorithm 1, eq. 3)",
                       ("eam_snr_min", "eam_snr_max"), frames=True),
    "adv": Regularizer("FGM adversarial training on the teacher's input (eq. 4-5)", ("adv_epsilon", "adv_alpha")),
}
"""--regularize names -> :class:`Regularizer`, in their canonical order (how --regularize is spelt in names and
rows); :func:`train_robust` combines the ones asked for."""


def smooth_labels(y: torch.Tensor, n_classes: int, eps: float) -> torch.Tensor:
    """Eq. 2: y'_k = (1 - eps) y_k + eps / K for the one-hot y of class indices ``y`` (...,) -> (..., K)."""
    one_hot = torch.nn.functional.one_hot(y, n_classes).to(torch.float32)  # (..., K)
    return (1 - eps) * one_hot + eps / n_classes


def ls_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_LS of eq. 3: cross-entropy -sum_k y'_k log softmax(logits)_k against the smoothed target y' (eq. 2);
    logits, target (..., K) -> (...)."""
    return -(target * logits.log_softmax(-1)).sum(-1)


def eam_loss(logits: torch.Tensor, y_i: torch.Tensor, y_j: torch.Tensor, lam: torch.Tensor, n_classes: int,
             eps: float, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 3: L_emo = mean_i [(1 - lam_i) L_LS(y_hat_i, y_i') + lam_i L_LS(y_hat_i, y_j')], the mean over each
    run's valid samples. logits (M, B, K); y_i, y_j class indices (M, B); lam (M, B); mask (M, B) -> (M,).

    With lam = 0 it is the label-smoothed cross-entropy alone, and with eps = 0 as well plain cross-entropy."""
    l_i = ls_cross_entropy(logits, smooth_labels(y_i, n_classes, eps))  # (M, B)
    l_j = ls_cross_entropy(logits, smooth_labels(y_j, n_classes, eps))  # (M, B)
    return masked_mean((1 - lam) * l_i + lam * l_j, mask)


def fgm_delta(g: torch.Tensor, eps_adv: float) -> torch.Tensor:
    """Eq. 4: delta = eps_adv * g / ||g||_2, the norm of each sample's gradient over its last dim (ours: eq. 4
    leaves the norm's extent open; per sample, as FGM of Miyato et al. 2017, so every embedding moves by
    eps_adv). A zero gradient (a padded sample) gives a zero delta. g (..., D) -> (..., D)."""
    norm = g.norm(dim=-1, keepdim=True)  # (..., 1)
    return torch.where(norm > 0, eps_adv * g / norm.clamp_min(torch.finfo(g.dtype).tiny), torch.zeros_like(g))


def ser_loss(l_emo: torch.Tensor, l_adv: torch.Tensor, alpha: float) -> torch.Tensor:
    """Eq. 5: L_ser = L_emo + alpha * L_adv (each (M,) -> (M,))."""
    return l_emo + alpha * l_adv


@dataclass
class MixDraws:
    """The random choices of Algorithm 1 for one batch of B samples (lines 1-13 and 16)."""

    j: torch.Tensor  # (B,) long, the partner of sample i
    l_mix: torch.Tensor  # (B,) long, mix length
    b_i: torch.Tensor  # (B,) long, segment start in f_i
    b_j: torch.Tensor  # (B,) long, segment start in f_j
    r: torch.Tensor  # (B,) float64, mix ratio in dB


def eam_draws(lengths: torch.Tensor, gen: torch.Generator, r_min: float, r_max: float) -> MixDraws:
    """Algorithm 1's draws for a batch whose samples have ``lengths`` (B,) frames, from ``gen``.

    Lines 1-7: a random permutation pi, j = pi_i, and j <- (j mod B) + 1 where pi_i = i (1-based; here 0-based
    (i + 1) mod B), so no sample is paired with itself unless B = 1. Line 9: l_mix ~ U(1, l_i / 2) cast to an
    integer (truncated); ours: at least 1 (for l_i = 1 the interval is empty). Lines 10-12: l_mix <= l_j.
    Line 13: b_i ~ U{0..l_i - l_mix}, b_j ~ U{0..l_j - l_mix}. Line 16: r ~ U(r_min, r_max) dB."""
    b = len(lengths)
    i = torch.arange(b)
    pi = torch.randperm(b, generator=gen)
    j = torch.where(pi == i, (pi + 1) % b, pi)
    l_i, l_j = lengths.long(), lengths.long()[j]
    u = torch.rand(b, generator=gen, dtype=torch.float64)
    l_mix = (1 + u * (l_i.double() / 2 - 1)).long().clamp_min(1)
    l_mix = torch.minimum(l_mix, l_j)
    b_i = (torch.rand(b, generator=gen, dtype=torch.float64) * (l_i - l_mix + 1)).long()
    b_j = (torch.rand(b, generator=gen, dtype=torch.float64) * (l_j - l_mix + 1)).long()
    r = r_min + (r_max - r_min) * torch.rand(b, generator=gen, dtype=torch.float64)
    return MixDraws(j, l_mix, b_i, b_j, r)


def mix_lambda(l_mix: torch.Tensor, l_i: torch.Tensor, e_i: torch.Tensor, e_j_scaled: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 line 21: lam_i = (l_mix / l_i) * E'_j / (E_i + E'_j); 0 where both energies are 0."""
    den = e_i + e_j_scaled
    return torch.where(den > 0, l_mix / l_i * e_j_scaled / torch.where(den > 0, den, 1.0), torch.zeros_like(den))


def eam_mix(frames: list[torch.Tensor], d: MixDraws) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Algorithm 1, lines 8-22, literally: frames f_i (l_i, D) -> mixed frames f'_i (l_i, D) and lam (B,).

    s_i, s_j are the segments; E = mean(s^2) over the segment's l_mix x D values (line 15); E'_j = E_j / 10^(r/10)
    (line 17); s'_j = sqrt(E'_j / E_j) s_j = 10^(-r/20) s_j (line 18, written so that a silent s_j scales to 0);
    f'_i = f_i with s'_j added into [b_i, b_i + l_mix) (lines 19-20); lam_i as line 21. The partner's label
    y_j is ``labels[d.j]``."""
    out, lams = [], []
    for i, f in enumerate(frames):
        j, n = int(d.j[i]), int(d.l_mix[i])
        bi, bj, r = int(d.b_i[i]), int(d.b_j[i]), float(d.r[i])
        s_i = f[bi:bi + n].double()  # (l_mix, D)
        s_j = frames[j][bj:bj + n].double()  # (l_mix, D)
        e_i, e_j = s_i.pow(2).mean(), s_j.pow(2).mean()
        e_j_scaled = e_j / 10 ** (r / 10)
        mixed = f.double().clone()  # (l_i, D)
        mixed[bi:bi + n] += 10 ** (-r / 20) * s_j
        out.append(mixed.to(f.dtype))
        lams.append(mix_lambda(torch.tensor(float(n)), torch.tensor(float(len(f))), e_i, e_j_scaled))
    return out, torch.stack(lams).float()


@dataclass
class FrameBank:
    """The frames of some rows of X, concatenated: row i's frames are ``flat[start[i]:start[i] + length[i]]``
    (length 0: not in the bank); ``total[i]`` is their sum, (N, D) float64."""

    flat: torch.Tensor  # (sum T, D) float32
    start: torch.Tensor  # (N,) long
    length: torch.Tensor  # (N,) long
    total: torch.Tensor  # (N, D) float64

    def frames(self, i: int) -> torch.Tensor:
        """Row i's frames, (l_i, D)."""
        s = int(self.start[i])
        return self.flat[s:s + int(self.length[i])]


def _segment_sums(bank: FrameBank, rows: torch.Tensor, begin: torch.Tensor, n: torch.Tensor):
    """Per pair p, the sum over frames [begin_p, begin_p + n_p) of row rows_p -> (P, D) and the sum of the
    squares of those l_mix x D values -> (P,), float64."""
    p = len(rows)
    offsets = torch.cumsum(n, 0) - n  # (P,)
    pair = torch.repeat_interleave(torch.arange(p), n)  # (sum n,)
    within = torch.arange(int(n.sum())) - offsets[pair]
    seg = bank.flat[bank.start[rows][pair] + begin[pair] + within].double()  # (sum n, D)
    sums = torch.zeros(p, bank.flat.shape[1], dtype=torch.float64).index_add_(0, pair, seg)
    squares = torch.zeros(p, dtype=torch.float64).index_add_(0, pair, seg.pow(2).sum(1))
    return sums, squares


def eam_pooled(bank: FrameBank, rows: torch.Tensor, partner: torch.Tensor, d: MixDraws) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """Algorithm 1 on bank rows ``rows`` (P,) with partners ``partner`` (P,) (= rows[d.j] within one batch), in
    closed form: the mean over frames of f'_i, (sum f_i + 10^(-r/20) sum s_j) / l_i -> (P, D) float32, and
    lam (P,) exactly as :func:`eam_mix` (the pairs of several batches may be concatenated)."""
    d_ = bank.flat.shape[1]
    l_i = bank.length[rows].double()  # (P,)
    _, sq_i = _segment_sums(bank, rows, d.b_i, d.l_mix)
    sum_j, sq_j = _segment_sums(bank, partner, d.b_j, d.l_mix)
    cells = d.l_mix.double() * d_
    e_i, e_j_scaled = sq_i / cells, sq_j / cells / 10 ** (d.r / 10)
    scale = 10 ** (-d.r / 20)  # (P,)
    pooled = (bank.total[rows] + scale[:, None] * sum_j) / l_i[:, None]  # (P, D)
    return pooled.float(), mix_lambda(d.l_mix.double(), l_i, e_i, e_j_scaled).float()


MEAN_TOLERANCE = 2e-3
"""EAM's check that an entry's pooled vectors are the mean of its frames: |mean(frames) - pooled| at most this
times max(1, max |frame|) (frames are stored in float16, whose rounding is 2^-11 relative)."""


def frame_bank(store, model: str, dataset: str, keys: list[str], rows: np.ndarray, pooled: torch.Tensor,
               provenance: dict) -> FrameBank:
    """The frames of entry model/dataset for rows ``rows`` of X (key ``keys[i]`` for row i), checked to average
    to ``pooled[i]`` (N, D): EAM feeds the teacher the mean of the mixed frames, so the pooled vectors it is
    tested on must be that mean of the unmixed frames. A clear DataError otherwise (e.g. egemaps: 25 frame
    descriptors vs 88 pooled functionals)."""
    entry = f"{model}/{dataset}"
    fix = "drop eam from --regularize for this teacher (ls,adv apply to any entry), or use an entry pooled by mean"
    if not store.has_frames(model, dataset):
        raise DataError(f"--regularize eam mixes the teacher's frames: {entry} was extracted without frames; {fix}")
    frame_dim, dim = provenance.get("frame_dim"), pooled.shape[1]
    pooling = provenance.get("pooling", "")
    if (frame_dim is not None and int(frame_dim) != dim) or pooling not in ("mean", "given", ""):
        raise DataError(f"--regularize eam mixes the teacher's frames and feeds the teacher their mean: {entry} has "
                        f"{frame_dim}-dim frames but {dim}-dim pooled vectors (pooling: {pooling or '?'}; e.g. "
                        f"egemaps: frame descriptors vs functionals), so a mean of mixed frames is not an input its "
                        f"teacher reads; {fix}")
    rows = np.asarray(rows)
    want = {keys[i]: i for i in rows}
    chunks, lengths = {}, {}
    for key, f in store.iter_frames(model, dataset, list(want)):
        f = torch.from_numpy(np.asarray(f, dtype=np.float32))  # (T, D)
        i = want[key]
        if f.shape[1] != dim or len(f) == 0:
            raise DataError(f"--regularize eam: {entry} utterance {key} has frames {tuple(f.shape)}, pooled dim {dim}; "
                            f"{fix}")
        gap = float((f.double().mean(0) - pooled[i].double()).abs().max())
        if gap > MEAN_TOLERANCE * max(1.0, float(f.abs().max())):
            raise DataError(f"--regularize eam feeds the teacher the mean of its mixed frames, but the pooled vector "
                            f"of {entry} utterance {key} is not the mean of its frames (max difference {gap:.3g}); "
                            f"{fix}")
        chunks[i], lengths[i] = f, len(f)
    n = len(keys)
    start, length = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    order = sorted(chunks)
    pos = 0
    for i in order:
        start[i], length[i] = pos, lengths[i]
        pos += lengths[i]
    flat = torch.cat([chunks[i] for i in order]) if order else torch.zeros(0, dim)
    total = torch.zeros(n, dim, dtype=torch.float64)
    for i in order:
        total[i] = chunks[i].double().sum(0)
    return FrameBank(flat, start, length, total)


@dataclass(frozen=True)
class Regularization:
    """What :func:`train_robust` applies: eps of eq. 2 (0 = no LS), EAM's dB range, eps_adv and alpha of eq. 4-5."""

    ls_epsilon: float = 0.0
    eam: bool = False
    snr_min: float = 0.0
    snr_max: float = 10.0
    adv: bool = False
    adv_epsilon: float = 0.5
    adv_alpha: float = 0.5

    @classmethod
    def of(cls, cfg) -> "Regularization":
        """From a TrainConfig's --regularize and its parameters."""
        on = set(cfg.regularizers)
        return cls("ls" in on and cfg.ls_epsilon or 0.0, "eam" in on, cfg.eam_snr_min, cfg.eam_snr_max,
                   "adv" in on, cfg.adv_epsilon, cfg.adv_alpha)


def mix_batch(bank: FrameBank, X: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor,
              active: torch.Tensor, gens: list[torch.Generator], reg: Regularization):
    """EAM on one stacked batch: each active run r mixes its valid samples (a prefix of idx[r]) with Algorithm 1
    drawn from its own ``gens[r]``. Returns x (M, B, D) (the mean of the mixed frames; padding keeps X[idx]),
    y_j (M, B) and lam (M, B) (0 on padding), on X's device. The mixing runs on the host (the bank stays there):
    on another device the batch's rows are read back once per batch."""
    device = X.device
    x, y_j = X[idx].clone(), y[idx].clone()  # (M, B, D), (M, B)
    lam = torch.zeros(idx.shape, device=device)  # (M, B)
    idx, valid, y = idx.cpu(), valid.cpu(), y.cpu()
    runs = active.nonzero().flatten().tolist()
    parts = []
    for r in runs:
        rows = idx[r, :int(valid[r].sum())]
        d = eam_draws(bank.length[rows], gens[r], reg.snr_min, reg.snr_max)
        parts.append((r, rows, d))
    if not parts:
        return x, y_j, lam
    cat = lambda name: torch.cat([getattr(d, name) for _, _, d in parts])  # noqa: E731
    rows_all = torch.cat([rows_ for _, rows_, _ in parts])
    partner = torch.cat([rows_[d.j] for _, rows_, d in parts])
    pooled, lam_all = eam_pooled(bank, rows_all, partner, MixDraws(cat("j"), cat("l_mix"), cat("b_i"), cat("b_j"),
                                                               cat("r")))
    pooled, lam_all = place(pooled, device), place(lam_all, device)
    pos = 0
    for r, rows_, d in parts:
        n = len(rows_)
        x[r, :n], lam[r, :n], y_j[r, :n] = pooled[pos:pos + n], lam_all[pos:pos + n], place(y[rows_[d.j]], device)
        pos += n
    return x, y_j, lam


def adv_delta(model, g: torch.Tensor, eps_adv: float) -> torch.Tensor:
    """Eq. 4 in the space the MLP's first layer reads: with a standardising model (z = (x - mu) inv_sd) the
    gradient there is g / inv_sd and its delta maps back to x as delta_z / inv_sd; g (M, B, D)."""
    if not getattr(model, "standardized", False):
        return fgm_delta(g, eps_adv)
    return fgm_delta(g / model.inv_sd, eps_adv) / model.inv_sd


def train_robust(model, opt, X: torch.Tensor, y: torch.Tensor, pools: list[torch.Tensor], epochs: int,
                 batch_size: int, gens: list[torch.Generator], n_classes: int, reg: Regularization,
                 bank: FrameBank | None = None, mix_gens: list[torch.Generator] | None = None, log=None):
    """``epochs`` passes over each run's labelled rows (batches as train_supervised, from ``gens``) minimising
    L_emo (eq. 3 with eq. 2 targets; lam = 0 without EAM) or, with adv, L_ser = L_emo + alpha L_adv (eq. 5),
    L_adv being eq. 3 on h' + delta (eq. 4, delta detached). EAM draws come from ``mix_gens`` (one per run)."""
    if reg.eam and (bank is None or mix_gens is None):
        raise ValueError("EAM needs the frame bank and one mixing generator per run")

    def batch_loss(idx, valid, active):
        y_i = y[idx]  # (M, B)
        if reg.eam:
            x, y_j, lam = mix_batch(bank, X, y, idx, valid, active, mix_gens, reg)
        else:
            x, y_j, lam = X[idx], y_i, torch.zeros(idx.shape, device=X.device)  # (M, B, D), (M, B), (M, B)
        if reg.adv:
            x = x.detach().requires_grad_(True)
        logits = model(x)  # (M, B, C)
        loss = eam_loss(logits, y_i, y_j, lam, n_classes, reg.ls_epsilon, valid)  # (M,)
        if reg.adv:
            (g,) = torch.autograd.grad(loss.sum(), x, retain_graph=True)  # (M, B, D)
            delta = adv_delta(model, g, reg.adv_epsilon).detach()
            l_adv = eam_loss(model(x.detach() + delta), y_i, y_j, lam, n_classes, reg.ls_epsilon, valid)
            loss = ser_loss(loss, l_adv, reg.adv_alpha)
        return loss, logits

    train_supervised(model, opt, X, y, pools, epochs, batch_size, gens, log, batch_loss)


__all__ = ["REGULARIZERS", "Regularizer", "smooth_labels", "ls_cross_entropy", "eam_loss", "fgm_delta", "ser_loss", "MixDraws",
           "eam_draws", "eam_mix", "eam_pooled", "mix_lambda", "FrameBank", "frame_bank", "Regularization",
           "mix_batch", "adv_delta", "train_robust"]
