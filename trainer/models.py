"""The paper's policy (two linear layers, ReLU between) and M independent copies trained in lockstep.

Folds and seeds are independent runs of the same small MLP; stacking their weights (M, ...) turns M
per-run matmuls into one batched matmul, which is where the speed comes from on a CPU.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from trainer.devices import place
from trainer.frames import (HEADS, attentive_pool, frame_mask, frame_mlp_pool, masked_mean, pooled_mean,
                            utterance_norm)


def chunk_rows(X: torch.Tensor, budget: int = 2**22) -> int:
    """Rows per evaluation chunk: 2048 pooled rows, fewer for frame (or layer) rows so that a chunk holds at most
    ``budget`` values per member (e.g. 32 utterances of 250 x 512 frames)."""
    return max(1, min(2048, budget // max(1, X[0].numel())))


TRAINING_COPIES = 4
"""Float32 copies of every weight while training: the weight, its gradient and Adam's two moments."""
BATCH_ROWS = 2048
"""Rows of one forward pass counted in the activation estimate (the evaluation chunk of :func:`chunk_rows`)."""


def training_bytes(members: int, dim: int, n_classes: int, hidden: int) -> int:
    """Estimated memory of training M stacked MLPs Linear(D, H) -> ReLU -> Linear(H, C): TRAINING_COPIES float32
    copies of the M (D H + H + H C + C) weights, plus the hidden activations of BATCH_ROWS rows per member (and
    their gradients)."""
    weights = members * (dim * hidden + hidden + hidden * n_classes + n_classes)
    return 4 * (TRAINING_COPIES * weights + 2 * members * BATCH_ROWS * hidden)


def check_model_memory(members: int, dim: int, n_classes: int, hidden: int) -> None:
    """Refuse sizes whose :func:`training_bytes` exceed ``InputLimits.model_bytes`` (ValueError with the
    estimate), before anything is allocated: ``--hidden 100000000`` would otherwise ask the allocator for tens of
    GB."""
    from emocache.inputs import LIMITS

    need = training_bytes(members, dim, n_classes, hidden)
    if need > LIMITS.model_bytes:
        raise ValueError(f"--hidden {hidden}: {members} stacked MLP(s) of {dim} -> {hidden} -> {n_classes} need about "
                         f"{need / 2**30:.1f} GiB to train (weights, gradients, Adam moments, activations), over the "
                         f"limit of {LIMITS.model_bytes / 2**30:g} GiB; lower --hidden (the paper: 128)")


class PolicyMLP(nn.Sequential):
    """Linear(D, H) -> ReLU -> Linear(H, C): the B-GRPO policy, the DINO student and the teacher MLP."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 128):
        super().__init__(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


class StackedMLP(nn.Module):
    """M independent PolicyMLPs; forward((M, B, D)) -> (M, B, C).

    With ``n_layers`` L > 0 (``--layer weighted``, SUPERB) the input is (M, B, L, D): member r first takes the sum
    of the L layers weighted by softmax(layer_logits[r]), learnt with the MLP, then runs the MLP on it.

    With ``head`` 'mean' or 'attention' (ours, ``--head``; trainer.frames) the input is padded frames (M, B, T, D)
    with NaN at padded positions: member r pools its valid frames (masked mean, eq. F1, or attentive pooling with
    its own learned query ``query[r]``, eq. F2, trained with the MLP), then runs the MLP on the pooled vector. With
    'emobox' (EmoBox's classifier) it layer-normalises each utterance (eq. F3), applies the first layer and ReLU
    to every frame and averages those (eq. F4) before the output layer.
    """

    def __init__(self, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor, n_layers: int = 0,
                 head: str = "pooled"):
        super().__init__()
        self.w1 = nn.Parameter(w1)  # (M, D, H)
        self.b1 = nn.Parameter(b1)  # (M, 1, H)
        self.w2 = nn.Parameter(w2)  # (M, H, C)
        self.b2 = nn.Parameter(b2)  # (M, 1, C)
        m, d = w1.shape[:2]
        if head not in HEADS:
            raise ValueError(f"head {head!r}: use one of {', '.join(HEADS)}")
        if head != "pooled" and n_layers:
            raise ValueError("a frame head reads last-layer frames; it does not combine with learnt layer weights")
        self.head = head
        feat = (n_layers, d) if n_layers else (1, d) if head != "pooled" else (d,)
        self.query = nn.Parameter(torch.zeros(m, d)) if head == "attention" else None  # (M, D): mean pooling at start
        self.layer_logits = nn.Parameter(torch.zeros(m, n_layers)) if n_layers else None  # (M, L), uniform at start
        self.register_buffer("mu", torch.zeros(m, 1, *feat))  # (M, 1, [L or 1,] D) input mean
        self.register_buffer("inv_sd", torch.ones(m, 1, *feat))  # (M, 1, [L or 1,] D) 1 / input std
        self.standardized = False

    @classmethod
    def from_seeds(cls, seeds: list[int], dim: int, n_classes: int, hidden: int = 128,
                   n_layers: int = 0, head: str = "pooled") -> "StackedMLP":
        """Member r is initialised exactly as ``PolicyMLP`` under ``torch.manual_seed(seeds[r])``; ``n_layers`` > 0
        adds uniform layer weights (inputs (M, B, L, D)); ``head`` 'mean'/'attention' pools frames (M, B, T, D).
        Sizes whose :func:`training_bytes` exceed the limit are refused before anything is allocated."""
        check_model_memory(len(seeds), dim, n_classes, hidden)
        members = []
        for s in seeds:
            torch.manual_seed(s)
            members.append(PolicyMLP(dim, n_classes, hidden))
        return cls.from_modules(members, n_layers, head)

    @classmethod
    def from_modules(cls, members: list[PolicyMLP], n_layers: int = 0, head: str = "pooled") -> "StackedMLP":
        w1 = torch.stack([m[0].weight.detach().T for m in members]).contiguous()
        b1 = torch.stack([m[0].bias.detach()[None] for m in members])
        w2 = torch.stack([m[2].weight.detach().T for m in members]).contiguous()
        b2 = torch.stack([m[2].bias.detach()[None] for m in members])
        return cls(w1, b1, w2, b2, n_layers, head)

    @property
    def n_members(self) -> int:
        return self.w1.shape[0]

    @torch.no_grad()
    def standardize(self, X: torch.Tensor, pools: list[torch.Tensor]) -> None:
        """Z-score member r's inputs with the mean and std of rows ``pools[r]`` of X (N, [L,] D); no labels used.
        With a frame head X is padded frames (N, T, D) and the statistics are those of the rows' frame means, applied
        to every frame: pooling weights sum to 1, so this z-scores exactly what the MLP reads, as with pooled inputs
        (the mean head on frames is then the pooled head on frame means) and attention scores standardised frames."""
        for r, rows in enumerate(pools):
            x = X[rows]  # (n_r, [L,] D)
            if self.head != "pooled":
                x = pooled_mean(x)[:, None]  # (n_r, 1, D)
            sd = x.std(0) if len(x) > 1 else torch.zeros_like(x[0])  # ([L,] D)
            self.mu[r, 0] = x.mean(0)
            self.inv_sd[r, 0] = torch.where(sd > 1e-6, 1.0 / sd, torch.ones_like(sd))  # constant features pass
        self.standardized = True

    def layer_weights(self) -> torch.Tensor | None:
        """softmax(layer_logits) per member, (M, L); None without learnt layer weights."""
        return None if self.layer_logits is None else self.layer_logits.softmax(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.head != "pooled":
            mask = frame_mask(x)  # (M, B, T), before standardising (padding is NaN)
            x = x.float()
        if self.standardized:
            x = (x - self.mu) * self.inv_sd  # (M, B, [L or T,] D)
        if self.head == "mean":
            x = masked_mean(x, mask, dim=-2)  # (M, B, D)
        elif self.head == "attention":
            x = attentive_pool(x, mask, self.query)  # (M, B, D)
        if self.layer_logits is not None:
            x = torch.einsum("mbld,ml->mbd", x, self.layer_weights())  # (M, B, D)
        if self.head == "emobox":  # EmoBox: utterance layer norm, first layer on every frame, then the mean
            h = frame_mlp_pool(utterance_norm(x, mask), mask, self.w1, self.b1)  # (M, B, H)
        else:
            h = torch.baddbmm(self.b1, x, self.w1).relu_()  # (M, B, H)
        return torch.baddbmm(self.b2, h, self.w2)  # (M, B, C)

    @torch.no_grad()
    def predict(self, X: torch.Tensor, idx: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Logits of member r on rows X[idx[r]]; X (N, D), idx (M, T) -> (M, T, C) (idx is sent to X's device)."""
        chunk = chunk or chunk_rows(X)
        idx = place(idx, X.device)
        outs = [self(X[idx[:, s:s + chunk]]) for s in range(0, idx.shape[1], chunk)]
        return torch.cat(outs, 1) if outs else torch.zeros(idx.shape[0], 0, self.w2.shape[-1])  # no rows: (M, 0, C)

    @torch.no_grad()
    def predict_all(self, X: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Logits of every member on every row; X (N, D) -> (M, N, C)."""
        chunk = chunk or chunk_rows(X)
        outs = [self(X[s:s + chunk].expand(self.n_members, *X[s:s + chunk].shape))
                for s in range(0, X.shape[0], chunk)]
        return torch.cat(outs, 1)

    def frozen_copy(self) -> "StackedMLP":
        c = copy.deepcopy(self)
        c.requires_grad_(False)
        return c

    def member(self, r: int) -> PolicyMLP:
        """Member r as a plain PolicyMLP (for saving or single-run use)."""
        d, h = self.w1.shape[1:]
        m = PolicyMLP(d, self.w2.shape[2], h)
        with torch.no_grad():
            m[0].weight.copy_(self.w1[r].T)
            m[0].bias.copy_(self.b1[r, 0])
            m[2].weight.copy_(self.w2[r].T)
            m[2].bias.copy_(self.b2[r, 0])
        return m


MLP_KEYS = ("0.weight", "0.bias", "2.weight", "2.bias")
"""PolicyMLP's state-dict names: Linear(D, H) weight (H, D) and bias (H,), Linear(H, C) weight (C, H), bias (C,)."""


def save_members(model: StackedMLP, members: list[dict], folder: str | Path, meta: dict) -> list[Path]:
    """--save-model: member r of ``model`` as ``folder``/fold<k>_seed<s>.safetensors (members[r] gives its fold
    and seed), and ``folder``/config.json (``meta``, e.g. the run's config and classes, plus the file list).

    Each file holds the PolicyMLP state dict (MLP_KEYS), 'mu' and 'inv_sd' ([L,] D) when the inputs are
    standardised inside the model, and with --layer weighted 'layer_logits' (L,) with 'layer_weights' (L,)
    = softmax(layer_logits), the weights the model applies. ``load_saved`` reads the folder back."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for r, info in enumerate(members):
        t = {k: v.detach().contiguous() for k, v in model.member(r).state_dict().items()}
        if model.standardized:
            t["mu"], t["inv_sd"] = model.mu[r, 0].cpu().contiguous(), model.inv_sd[r, 0].cpu().contiguous()  # ([L,] D)
        if model.layer_logits is not None:
            t["layer_logits"] = model.layer_logits[r].detach().cpu().contiguous()  # (L,)
            t["layer_weights"] = model.layer_weights()[r].detach().cpu().contiguous()  # (L,)
        name = f"fold{info['fold']}_seed{info['seed']}.safetensors"
        save_file(t, str(folder / name), metadata={"fold": str(info["fold"]), "seed": str(info["seed"])})
        files.append({"fold": info["fold"], "seed": info["seed"], "file": name})
    (folder / "config.json").write_text(json.dumps({**meta, "runs": files}, indent=2, default=str))
    return [folder / f["file"] for f in files]


@dataclass
class SavedRun:
    """A --save-model folder read back: ``model`` stacks the runs in ``runs`` order ({fold, seed, file})."""

    model: StackedMLP
    runs: list[dict]
    classes: list[str]
    config: dict = field(default_factory=dict)
    layers: list = field(default_factory=list)

    def index(self, fold: int, seed: int) -> int:
        """Member index of run (fold, seed)."""
        for r, info in enumerate(self.runs):
            if (int(info["fold"]), int(info["seed"])) == (int(fold), int(seed)):
                return r
        saved = ", ".join(f"fold {i['fold']} seed {i['seed']}" for i in self.runs)
        raise KeyError(f"no saved run fold {fold} seed {seed}; saved: {saved}")

    @torch.no_grad()
    def probabilities(self, X):
        """Class probabilities of every saved run on rows X (N, [L,] D) of the run's inputs -> (M, N, C).

        ``X`` is a torch tensor or anything numpy reads as an array (``store.pooled`` returns float32 numpy); it is
        computed in float32 and returned as the type it came in (a numpy array for numpy input)."""
        as_numpy = not isinstance(X, torch.Tensor)
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32)) if as_numpy else X.float()
        want = 3 if self.model.layer_logits is not None else 2
        dim = self.model.w1.shape[1]
        if x.dim() != want or x.shape[-1] != dim:
            shape = "(N, L, D)" if want == 3 else "(N, D)"
            raise ValueError(f"saved model: X of shape {tuple(x.shape)}; this model reads {shape} rows with D = "
                             f"{dim}")
        P = self.model.predict_all(x).softmax(-1)  # (M, N, C)
        return P.numpy() if as_numpy else P


def load_saved(folder: str | Path) -> SavedRun:
    """Read a --save-model folder (a run folder or its model/ sub-folder) into a frozen StackedMLP whose member r
    computes exactly what the run's member r did (same weights, input standardisation and layer weights)."""
    from safetensors.torch import load_file

    from emocache.inputs import LIMITS, InputError, check_file, load_json
    from emocache.paths import UnsafeNameError, check_name, confined

    folder = Path(folder)
    if not (folder / "config.json").exists() and (folder / "model" / "config.json").exists():
        folder = folder / "model"
    try:  # a saved model may come from someone else: bounded JSON, files named by the rule, inside the folder
        meta = load_json(folder / "config.json", "saved model", links=False)
        runs = meta.get("runs") if isinstance(meta, dict) else None
        if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
            raise InputError(f"saved model {folder / 'config.json'}: 'runs' must be a non-empty list of objects")
        files = [confined(folder, check_name(r.get("file"), "file"), "saved model file") for r in runs]
        for f in files:
            check_file(f, LIMITS.teacher_bytes, "saved model", links=False)
        tensors = [load_file(str(f)) for f in files]
    except (InputError, UnsafeNameError) as e:
        raise ValueError(str(e)) from None
    except Exception as e:  # safetensors' own error types for a damaged file
        raise ValueError(f"saved model {folder}: a damaged safetensors file ({type(e).__name__}: "
                         f"{(str(e).splitlines() or [''])[0][:160]})") from None
    members = []
    for t in tensors:
        m = PolicyMLP(t["0.weight"].shape[1], t["2.weight"].shape[0], t["0.weight"].shape[0])
        m.load_state_dict({k: t[k] for k in MLP_KEYS})
        members.append(m)
    first = tensors[0]
    model = StackedMLP.from_modules(members, first["layer_logits"].shape[0] if "layer_logits" in first else 0)
    with torch.no_grad():
        if model.layer_logits is not None:
            model.layer_logits.copy_(torch.stack([t["layer_logits"] for t in tensors]))  # (M, L)
        if "mu" in first:
            model.mu.copy_(torch.stack([t["mu"] for t in tensors])[:, None])  # (M, 1, [L,] D)
            model.inv_sd.copy_(torch.stack([t["inv_sd"] for t in tensors])[:, None])
            model.standardized = True
    model.requires_grad_(False)
    return SavedRun(model, meta["runs"], meta.get("classes", []), meta.get("config", {}), meta.get("layers", []))


class StackedAdam:
    """Adam over stacked parameters with a per-member `active` mask (torch.optim.Adam semantics).

    Each member is its own optimiser: own moments, own step count. Member r's slice ``p[r]`` of every stacked
    parameter is a separate tensor of one ``torch.optim.Adam`` (views sharing the stacked storage, no copies);
    a step hands it the member's gradient slice when the member is active and no gradient otherwise, and Adam
    leaves a tensor without a gradient untouched, so an inactive member (its epoch has run out of batches)
    keeps its parameters, moments and step count, exactly as if trained alone. The update is Adam's fused
    kernel where the device has one (``fused=True``), else its foreach implementation.
    """

    def __init__(self, params, lr: float = 1e-4, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params = [p for p in params if p.requires_grad]
        n = self.params[0].shape[0]
        self.members = [[p.detach()[r] for p in self.params] for r in range(n)]  # views of the stacked storage
        flat = [q for qs in self.members for q in qs]
        fused = all(q.device.type in ("cpu", "cuda") and q.is_floating_point() for q in flat)
        self.opt = torch.optim.Adam(flat, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                    fused=fused, foreach=None if fused else True)

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def member_state(self, r: int) -> list[dict]:
        """Adam's state (step, exp_avg, exp_avg_sq) of member r, one dict per stacked parameter."""
        return [self.opt.state[q] for q in self.members[r]]

    @torch.no_grad()
    def step(self, active: torch.Tensor | None = None):
        """One Adam step for the members where ``active`` (M,) bool is True (all when None); ``active`` is a host
        tensor (the training loops' batches keep it there), so the step does not wait for the device."""
        on = [True] * len(self.members) if active is None else active.tolist()
        for i, p in enumerate(self.params):
            g = p.grad.unbind(0) if p.grad is not None else [None] * len(on)  # M views of (M, ...)
            for r, qs in enumerate(self.members):
                qs[i].grad = g[r] if on[r] else None
        self.opt.step()
