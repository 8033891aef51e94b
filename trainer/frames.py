"""Frame-level inputs of the policy (ours): stored frames read once into a padded tensor, and the heads that pool them.

The paper's policy reads each utterance's pooled vector (``--head pooled``). ``--head mean`` and ``--head attention``
read the entry's stored frames instead: X is (N, T_max, D), padded positions hold NaN (so every row index, gather
and noise view of the training code carries the mask along with the frames; NaN + noise stays NaN), and the
policy pools a run's frames itself before its MLP (:class:`trainer.models.StackedMLP` with ``head``).

- mean: masked mean over the valid frames, eq. F1: ``h = sum_t m_t x_t / sum_t m_t``.
- attention: single-head attentive pooling with a learned query per stacked member, eq. F2:
  ``s_t = q . x_t / sqrt(D)``, ``w = softmax over valid t of s``, ``h = sum_t w_t x_t``. The query starts at zero,
  so the head starts as the mean head and learns where to look. This is the "simpler learned-query score"; the
  additive form ``v^T tanh(W x_t)`` of self-attentive pooling costs a (D, A) matrix per member for no gain we
  could show at these sizes. The attentive score is our choice (which pooling EmoBox's or SUPERB's classifiers use
  was not checked here).

- emobox: EmoBox's downstream classifier (``SuperbBaseModel`` of emo-box/EmoBox examples/sb/classifier_head.py) on
  its features: each utterance's valid frames layer-normalised over all their T x D values together (EmoBox's
  ``speech_feature_extraction.py --output_norm``: ``F.layer_norm(out, out.shape[1:])``, eps 1e-5, no affine), eq. F3
  ``x' = (x - mean) / sqrt(var + 1e-5)`` over the valid frames; then the policy's first layer and ReLU on every
  frame and the masked mean of those hidden vectors, eq. F4 ``h = sum_t m_t relu(W1 x'_t + b1) / sum_t m_t``, then
  the output layer (:class:`trainer.models.StackedMLP`). The mean comes after the first layer, unlike ``mean``.

A row with no valid frame (a teacher row missing from the teacher entry) pools to the zero vector.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from emocache.store import StoreError
from trainer.data import DataError

HEADS = ("pooled", "mean", "attention", "emobox")
"""What the policy reads (--head): the entry's pooled vector (the paper) or its stored frames pooled by the policy
(ours: masked mean, eq. F1, or attentive pooling with a learned query per run, eq. F2; EmoBox's classifier: the
utterance layer norm, eq. F3, the first layer on every frame, then the masked mean, eq. F4)."""
UTTERANCE_NORM_EPS = 1e-5
"""eps of EmoBox's utterance layer norm (torch.nn.functional.layer_norm's default)."""
FRAME_PAD = float("nan")
"""Value of padded frame positions in the (N, T, D) tensors: the mask is ``~isnan(x[..., 0])``."""


class FramesTooLarge(ValueError):
    """The padded frame tensor would exceed --frames-memory-gb."""


def frames_bytes(n: int, t_max: int, dim: int, dtype=torch.float16) -> int:
    """Bytes of the padded (n, t_max, dim) tensor."""
    return n * t_max * dim * torch.empty((), dtype=dtype).element_size()


def read_frames(store, model: str, dataset: str, keys: list[str]):
    """The frames of ``keys`` as a float16 :class:`emocache.store.FrameSet` (store order): the one place the trainer
    reads frames from a store (``Store.all_frames``: every chunk read once, checksum-verified, decoded on threads)."""
    try:
        return store.all_frames(model, dataset, list(keys), dtype=np.float16)
    except StoreError as e:
        if "float32 frames" not in str(e):
            raise
        raise ValueError(f"{model}/{dataset}: frames beyond float16's range, which the frame heads keep in float16; "
                         "use --head pooled for this entry") from None


def frame_lengths(entry, keys: list[str]) -> np.ndarray:
    """Frames per key, (N,) int64, from the entry's index (no frame data read)."""
    pos = {k: i for i, k in enumerate(entry.keys)}
    idx = entry.index()  # (N_entry, 2) offset, length
    return np.array([int(idx[pos[k], 1]) for k in keys], dtype=np.int64)


def load_frames(store, model: str, dataset: str, keys: list[str], memory_gb: float = 8.0,
                dtype=torch.float16) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames of ``keys`` as a padded tensor (N, T_max, D) (NaN at padded positions) and lengths (N,).

    Read once per run. Kept in ``dtype`` (float16, the stored precision, by default; the head computes in
    float32). The padded size N * T_max * D * bytes is checked against ``memory_gb`` before anything is read
    (from the entry's index): above it a :class:`FramesTooLarge` names the size needed. Non-finite frames are an
    error (NaN marks padding).
    """
    entry = store.entry(model, dataset)
    lengths = frame_lengths(entry, keys)
    if (lengths <= 0).any():
        bad = [k for k, n in zip(keys, lengths) if n <= 0][:3]
        raise ValueError(f"{model}/{dataset}: utterances with no frames (e.g. {', '.join(bad)})")
    shape = (len(keys), int(lengths.max()), entry.frame_dim)  # (N, T, D)
    need = frames_bytes(*shape, dtype)
    if need > memory_gb * 2**30:
        raise FramesTooLarge(f"{model}/{dataset}: the padded frames ({' x '.join(map(str, shape))} "
                             f"{str(dtype).removeprefix('torch.')}) need {need / 2**30:.2f} GiB, over "
                             f"--frames-memory-gb {memory_gb:g}; raise it if the machine has the memory, or use "
                             "--head pooled")
    fs = read_frames(store, model, dataset, keys)
    data = torch.from_numpy(fs.data)  # (sum T_i, D) float16
    finite = torch.isfinite(data).all(-1)  # (sum T_i,)
    if not finite.all():
        bad = fs.keys[int(np.searchsorted(fs.offsets, int((~finite).nonzero()[0, 0]), side="right")) - 1]
        raise ValueError(f"{model}/{dataset}: utterance {bad!r} has NaN/inf frames; re-extract it")
    pos = {k: i for i, k in enumerate(keys)}
    out = torch.full(shape, FRAME_PAD, dtype=dtype)  # (N, T, D)
    for j, key in enumerate(fs.keys):
        a, b = int(fs.offsets[j]), int(fs.offsets[j + 1])
        out[pos[key], :b - a] = data[a:b]
    return out, torch.as_tensor(lengths)


def frame_mask(x: torch.Tensor) -> torch.Tensor:
    """Valid-frame mask of padded frames x (..., T, D) -> (..., T) bool."""
    return ~torch.isnan(x[..., 0])


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int = -1) -> torch.Tensor:
    """Mean of ``x`` over ``dim`` counting only the entries where ``mask`` is True; None = the plain mean.

    ``mask`` has x's shape up to and including ``dim`` and broadcasts over the dims after it: a padded batch
    x (..., B) with mask (..., B) (dim -1: a run's loss over its valid samples), or eq. F1, padded frames
    x (..., T, D) with mask (..., T) and dim -2 -> (..., D). Masked values never enter (they are replaced before
    the sum, so NaN or garbage padding is the same); no valid entry gives 0 (a run whose epoch has run out
    contributes nothing), not NaN.
    """
    if mask is None:
        return x.mean(dim)
    d = dim % x.dim()
    m = mask.to(torch.bool).reshape(mask.shape + (1,) * (x.dim() - 1 - d))  # broadcasts over the dims after d
    s = torch.where(m, x, x.new_zeros(())).sum(d)
    return s / m.sum(d).clamp_min(1).to(x.dtype)


def attention_weights(x: torch.Tensor, mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Eq. F2 weights: softmax over valid t of q . x_t / sqrt(D); x (M, B, T, D), mask (M, B, T), query (M, D)
    -> (M, B, T), zero at padded positions (all zero for a row without valid frames)."""
    x0 = torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))  # (M, B, T, D)
    s = torch.einsum("mbtd,md->mbt", x0, query) / math.sqrt(x.shape[-1])  # (M, B, T)
    w = s.masked_fill(~mask, float("-inf")).softmax(-1)  # (M, B, T)
    return w.nan_to_num(0.0)  # all -inf rows (no valid frame) -> 0


def attentive_pool(x: torch.Tensor, mask: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """Eq. F2: sum_t w_t x_t; x (M, B, T, D), mask (M, B, T), query (M, D) -> (M, B, D)."""
    x0 = torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))  # (M, B, T, D)
    return torch.einsum("mbt,mbtd->mbd", attention_weights(x, mask, query), x0)


def utterance_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = UTTERANCE_NORM_EPS) -> torch.Tensor:
    """Eq. F3: each utterance's valid frames z-scored with the mean and (biased) variance of all their T x D values,
    as ``F.layer_norm(frames, frames.shape)`` on the unpadded frames; x (..., T, D), mask (..., T) -> x's shape, 0 at
    padded positions."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (..., T, 1)
    x0 = torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))  # (..., T, D)
    n = (m.sum((-2, -1)) * x.shape[-1]).clamp_min(1)  # (...,) valid values
    mu = x0.sum((-2, -1)) / n  # (...,)
    var = (((x0 - mu[..., None, None]) * m) ** 2).sum((-2, -1)) / n  # (...,)
    return (x0 - mu[..., None, None]) * torch.rsqrt(var + eps)[..., None, None] * m


def frame_mlp_pool(x: torch.Tensor, mask: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor) -> torch.Tensor:
    """Eq. F4: masked mean over valid t of relu(x_t W1 + b1); x (M, B, T, D), mask (M, B, T), w1 (M, D, H),
    b1 (M, 1, H) -> (M, B, H). Padded frames are zeroed first (NaN padding must not reach the gradient of W1)."""
    x0 = torch.where(mask.unsqueeze(-1), x, x.new_zeros(()))  # (M, B, T, D)
    h = torch.einsum("mbtd,mdh->mbth", x0, w1).add_(b1.unsqueeze(1)).relu_()  # (M, B, T, H)
    return masked_mean(h, mask, dim=-2)  # (M, B, H)


def pooled_mean(X: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """Masked frame means of padded frames X (N, T, D) -> float32 (N, D): what the mean head reads at start
    (the reference's logistic regression and the feature-scale warning use it)."""
    return torch.cat([masked_mean(X[s:s + chunk].float(), frame_mask(X[s:s + chunk]), dim=-2)
                      for s in range(0, len(X), chunk)])


def frame_std(X: torch.Tensor, pools: list[torch.Tensor]) -> torch.Tensor:
    """Per-feature std over the valid frames of each run's pool rows: (M, 1, 1, D) (broadcasts over (M, B, T, D))."""
    out = []
    for p in pools:
        x = X[p].float()  # (n, T, D)
        f = x[frame_mask(x)]  # (n_frames, D)
        out.append(f.std(0) if len(f) > 1 else torch.zeros(X.shape[-1], device=X.device))
    return torch.stack(out).nan_to_num(0.0)[:, None, None]


def use_frames(store, feats, memory_gb: float):
    """Replace ``feats.X`` (pooled, (N, D)) by the entry's padded frames (N, T_max, D) for a frame --head; a
    DataError (naming --head) when the entry has no frames or they do not fit ``memory_gb``."""
    if not feats.frames_available:
        raise DataError(f"--head: {feats.model}/{feats.dataset} was extracted with --no-frames; re-extract it with "
                        "frames or use --head pooled")
    try:
        feats.X, _ = load_frames(store, feats.model, feats.dataset, feats.keys, memory_gb)
    except ValueError as e:
        raise DataError(f"--head: {e}") from None
    return feats
