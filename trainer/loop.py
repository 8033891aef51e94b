"""Per-epoch bookkeeping shared by the algorithms: running means, evaluation curves, collapse diagnostics,
validation-based epoch selection, progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from trainer.devices import place
from trainer.diagnostics import class_shares, collapsed, entropy
from trainer.metrics import macro_f1_batched


@dataclass
class EvalSet:
    """Rows of each run evaluated at every evaluated epoch: 'test', 'pool' (unlabelled, no y), 'val'."""

    X: torch.Tensor  # (N, D)
    idx: torch.Tensor  # (M, T) rows of X
    valid: torch.Tensor  # (M, T)
    labelled: bool = True


@dataclass
class StageBest:
    """Per run, the epoch of a stage with the best score so far and the test predictions it made."""

    score: torch.Tensor  # (M,)
    epoch: torch.Tensor  # (M,) long, -1 = none yet
    test_pred: torch.Tensor  # (M, T)
    improved: torch.Tensor  # (M,) long, the epoch of the last strict improvement (early stopping counts from it)
    test_prob: torch.Tensor | None = None  # (M, T, C) test class probabilities at that epoch (predictions.csv)
    weights: dict | None = None
    """The evaluated model's state dict (each tensor (M, ...)) at each run's best epoch, with keep_weights."""


class EpochLog:
    """Accumulates per-run loss / reward / confidence (and named extras) over an epoch's steps, as tensors with
    no per-step sync, and every ``eval_every`` epochs evaluates ``self.model`` on each evaluation set.

    Per evaluated epoch and set: predicted-class shares, their entropy, the largest share and the mean max
    probability (collapse diagnostics), macro-F1 where the set is labelled, and the collapse rule on 'pool'
    against ``prior`` (M, C), the class shares of each run's labelled rows. With a 'val' set it keeps, per
    stage, each run's best-validation epoch and the test predictions at it (ties go to the later epoch); it
    also keeps each stage's best test epoch (reported only as the optimistic oracle). Its tensors live on the
    device of ``y`` (the run's); per-step values are added there and read back once per epoch.
    """

    def __init__(self, y: torch.Tensor, sets: dict[str, EvalSet], classes: tuple[str, ...], runs: list[dict],
                 prior: torch.Tensor | None = None, eval_every: int = 1, bar=None, keep_weights: bool = False):
        self.y, self.sets, self.classes = y, sets, classes  # (N,)
        self.device = y.device
        self.keep_weights = keep_weights
        """Also keep the model's weights at each run's best-validation epoch (--save-model with --select val)."""
        self.n_classes, self.runs, self.eval_every = len(classes), runs, max(1, eval_every)
        self.prior = prior  # (M, C)
        self.bar, self.task = bar, None
        self.rows: list[dict] = []
        self.epoch = 0
        self.model = None
        self.stage = ""
        self.collapse_flags: list[torch.Tensor] = []  # per evaluated epoch, (M,) bool
        self.collapse_epochs: list[int] = []
        self.selected: dict[str, StageBest] = {}
        self.oracle: dict[str, StageBest] = {}
        self.losses: dict[str, list[list[float]]] = {}  # stage -> per epoch, per run mean loss
        self.eval_seconds = {name: 0.0 for name in sets}
        """Wall time spent evaluating each set (the cost of the curves, diagnostics and validation)."""
        self._reset()

    def _reset(self):
        m = len(self.runs)
        self.loss, self.conf, self.reward, self.steps = (torch.zeros(m, device=self.device) for _ in range(4))
        self.has_reward = False
        self.extra: dict[str, torch.Tensor] = {}

    def begin(self, stage: str, model, epochs: int):
        """Start a stage: ``model`` is what the curves evaluate."""
        self.stage, self.model, self.stage_epochs, self.stage_epoch = stage, model, epochs, 0
        self.losses[stage] = []
        if self.bar is not None:
            self.task = self.bar.add_task(stage, total=epochs)

    def step(self, active: torch.Tensor, loss: torch.Tensor, conf: torch.Tensor,
             reward: torch.Tensor | None = None, **extra: torch.Tensor):
        """Per-run (M,) values of one step; inactive runs are not counted. ``extra`` (each (M,), e.g.
        approx_kl=..., clip_frac=...) are averaged over the epoch's steps like the loss and written as
        curves.csv columns of those names. ``active`` may be a host tensor."""
        a = place(active, self.device).to(loss.dtype)
        self.loss += loss.detach() * a
        self.conf += conf.detach() * a
        self.steps += a
        if reward is not None:
            self.reward += reward.detach() * a
            self.has_reward = True
        for k, v in extra.items():
            v = place(v.detach(), self.device).to(a.dtype)
            self.extra[k] = self.extra.get(k, torch.zeros(len(self.runs), device=self.device)) + v * a

    def end_epoch(self):
        self.epoch += 1
        self.stage_epoch += 1
        n = self.steps.clamp_min(1)
        nan = [float("nan")] * len(self.runs)
        evaluate = self.stage_epoch % self.eval_every == 0 or self.stage_epoch == self.stage_epochs
        diag = self.evaluate() if evaluate else {}
        loss, conf = (self.loss / n).tolist(), (self.conf / n).tolist()
        self.losses[self.stage].append(loss)
        reward = (self.reward / n).tolist() if self.has_reward else nan
        extra = {k: (v / n).tolist() for k, v in self.extra.items()}
        for r, run in enumerate(self.runs):
            row = {**run, "stage": self.stage, "epoch": self.epoch, "loss": loss[r], "reward": reward[r],
                   "confidence": conf[r], "test_macro_f1": nan[r]}
            row.update({k: v[r] for k, v in extra.items()})
            row.update({k: v[r] for k, v in diag.items()})
            self.rows.append(row)
        self._reset()
        if self.task is not None:
            self.bar.advance(self.task)

    @torch.no_grad()
    def evaluate(self) -> dict[str, list]:
        """Evaluate every set now: curve columns -> per-run values; updates collapse flags and selections."""
        out, preds, f1s = {}, {}, {}
        for name, s in self.sets.items():
            t0 = time.perf_counter()
            p = self.model.predict(s.X, s.idx).softmax(-1)  # (M, T, C)
            pred = p.argmax(-1)  # (M, T)
            v = s.valid.to(p.dtype)
            shares = class_shares(pred, s.valid, self.n_classes)  # (M, C)
            out[f"{name}_entropy"] = entropy(shares).tolist()
            out[f"{name}_max_share"] = shares.amax(-1).tolist()
            out[f"{name}_confidence"] = ((p.amax(-1) * v).sum(1) / v.sum(1).clamp_min(1)).tolist()
            for c, cls in enumerate(self.classes):
                out[f"{name}_share_{cls}"] = shares[:, c].tolist()
            if s.labelled:
                f1s[name] = macro_f1_batched(self.y[s.idx], pred, s.valid, self.n_classes)  # (M,)
                out[f"{name}_macro_f1"] = f1s[name].tolist()
            else:
                preds[name] = shares
            if name == "test":
                preds["test_pred"], preds["test_prob"] = pred, p
            self.eval_seconds[name] += time.perf_counter() - t0
        if "pool" in preds and self.prior is not None:
            flag = collapsed(preds["pool"], self.prior)  # (M,)
            self.collapse_flags.append(flag)
            self.collapse_epochs.append(self.epoch)
            out["pool_collapsed"] = flag.tolist()
        if "test" in f1s:
            self._keep_best(self.oracle, f1s["test"], preds["test_pred"])
        if "val" in f1s and "test" in f1s:
            self._keep_best(self.selected, f1s["val"], preds["test_pred"], preds["test_prob"])
        return out

    def _keep_best(self, store: dict[str, StageBest], score: torch.Tensor, test_pred: torch.Tensor,
                   test_prob: torch.Tensor | None = None):
        """Per run, remember this epoch if ``score`` is at least the stage's best so far (ties: later); with
        ``test_prob`` (M, T, C) its test probabilities too."""
        b = store.get(self.stage)
        if b is None:
            none = torch.full_like(score, -1, dtype=torch.long)  # (M,)
            b = store[self.stage] = StageBest(torch.full_like(score, -1.0), none, test_pred.clone(), none.clone(),
                                              None if test_prob is None else test_prob.clone())
        now = torch.full_like(b.epoch, self.epoch)  # (M,)
        b.improved = torch.where(score > b.score, now, b.improved)
        better = score >= b.score  # (M,)
        b.score = torch.where(better, score, b.score)
        b.epoch = torch.where(better, now, b.epoch)
        b.test_pred[better] = test_pred[better]
        if test_prob is not None:
            b.test_prob[better] = test_prob[better]
        if self.keep_weights and store is self.selected:
            state = self.model.state_dict()
            if b.weights is None:
                b.weights = {k: v.detach().clone() for k, v in state.items()}
            for k, v in state.items():
                b.weights[k][better] = v.detach()[better]
