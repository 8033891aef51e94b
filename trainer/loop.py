"""Per-epoch bookkeeping shared by the algorithms: running means, evaluation curves, collapse diagnostics,
validation-based epoch selection, the protocol's stage length (early stopping on validation), progress bar."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from trainer.devices import place
from trainer.diagnostics import class_shares, collapsed, entropy, under_predicted
from trainer.metrics import macro_f1_batched
from trainer.protocols import StopRule


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
    probability (collapse diagnostics), macro-F1 where the set is labelled; on 'pool' the under-predicted rule
    against ``prior`` (M, C), the class shares of each run's labelled rows (``judge_prior``: the pool is the
    trained corpus's), and from the second stage on the collapse rule and the agreement against the pool
    predictions of the model the stage started from (the end of the previous stage). With a 'val' set it
    keeps, per stage, each run's best-validation epoch and the test predictions at it (ties go to the later
    epoch); it also keeps each stage's best test epoch (reported only as the optimistic oracle). Its tensors live
    on the device of ``y`` (the run's); per-step values are added there and read back once per epoch.

    ``stop`` (a protocol that stops on validation): a stage trains until every run's validation macro-F1 has
    not strictly improved for ``stop.patience`` epochs (at most ``stop.max_epochs``); a run whose patience ran
    out is no longer live (``live``: no batches, no steps, no new best epochs), and the stage ends with each
    run's best-validation weights loaded into the evaluated model (:meth:`epochs`).
    """

    def __init__(self, y: torch.Tensor, sets: dict[str, EvalSet], classes: tuple[str, ...], runs: list[dict],
                 prior: torch.Tensor | None = None, eval_every: int = 1, bar=None, keep_weights: bool = False,
                 stop: StopRule | None = None, judge_prior: bool = True):
        self.y, self.sets, self.classes = y, sets, classes  # (N,)
        self.stop = stop
        self.device = y.device
        self.keep_weights = keep_weights or stop is not None
        """Also keep the model's weights at each run's best-validation epoch (--save-model with --select val;
        a protocol that restores them)."""
        self.n_classes, self.runs, self.eval_every = len(classes), runs, max(1, eval_every)
        self.prior = prior  # (M, C)
        self.judge_prior = judge_prior
        """Whether the pool is the trained corpus's, so its predicted shares can be held against ``prior``."""
        self.bar, self.task = bar, None
        self.rows: list[dict] = []
        self.epoch = 0
        self.model = None
        self.stage = ""
        self.collapse_flags: list[torch.Tensor] = []  # per evaluated epoch with a reference, (M,) bool
        self.collapse_epochs: list[int] = []
        self.pool_health: list[tuple[int, dict[str, torch.Tensor]]] = []
        """Per evaluated epoch: (epoch, {'under_predicted', 'collapsed', 'agreement'}: (M,) each where judged)."""
        self.reference: tuple[torch.Tensor, torch.Tensor] | None = None
        """Pool class shares (M, C) and predictions (M, T) of the model the current stage started from."""
        self.live: torch.Tensor | None = None
        """(M,) bool: runs still training in this stage (None: all, the paper's fixed epochs)."""
        self.trained: dict[str, torch.Tensor] = {}
        """Stage -> (M,) epochs each run trained in it."""
        self.run_epoch = torch.zeros(len(runs), dtype=torch.long, device=self.device)
        """(M,) each run's own epoch clock: the epochs it has trained (= ``epoch`` for every run with fixed
        epochs; with a stop rule a stopped run's clock stands still, so its epoch numbers do not depend on when
        the runs sharing its stack stop). Best, oracle and collapse epochs are on this clock."""
        self.collapse_run_epochs: list[torch.Tensor] = []  # per entry of collapse_flags, (M,) run epochs
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
        """Start a stage of ``epochs`` epochs (the stop rule's most epochs with one): ``model`` is what the curves
        evaluate. From the second stage on, its pool predictions now are the stage's collapse reference."""
        if self.stop is not None:
            epochs = self.stop.max_epochs
        self.reference = self._pool_predictions(model) if self.stage and "pool" in self.sets else None
        self.stage, self.model, self.stage_epochs, self.stage_epoch = stage, model, epochs, 0
        self.losses[stage] = []
        self.trained[stage] = torch.zeros(len(self.runs), dtype=torch.long, device=self.device)
        self.live = torch.ones(len(self.runs), dtype=torch.bool, device=self.device) if self.stop is not None else None
        if self.bar is not None:
            self.task = self.bar.add_task(stage, total=epochs)

    def epochs(self, n: int):
        """The current stage's epochs, for a method's loop (``for epoch in log.epochs(n):``, one ``end_epoch``
        per pass). Fixed epochs: range(n). With a stop rule (``n`` is then ignored): until no run is live or the
        rule's most epochs; afterwards each run's best-validation weights are loaded into the evaluated model."""
        if self.stop is None:
            yield from range(n)
            return
        for epoch in range(self.stage_epochs):
            yield epoch
            best = self.selected.get(self.stage)
            if best is not None:
                self.live &= (self.run_epoch - best.improved) < self.stop.patience
            if not bool(self.live.any()):
                break
        best = self.selected.get(self.stage)
        if best is not None and best.weights is not None:
            self.model.load_state_dict(best.weights)
        self.live = None

    @torch.no_grad()
    def _pool_predictions(self, model) -> tuple[torch.Tensor, torch.Tensor]:
        """Pool class shares (M, C) and predictions (M, T) of ``model``."""
        s = self.sets["pool"]
        pred = model.predict(s.X, s.idx).argmax(-1)  # (M, T)
        return class_shares(pred, s.valid, self.n_classes), pred

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
        ran = 1 if self.live is None else self.live.long()
        self.trained[self.stage] += ran
        self.run_epoch += ran
        evaluate = (self.stage_epoch % self.eval_every == 0 or self.stage_epoch == self.stage_epochs
                    or self.stop is not None)
        diag = self.evaluate() if evaluate else {}
        mean_loss = self.loss / n if self.live is None else torch.where(self.steps > 0, self.loss / n, float("nan"))
        loss, conf = mean_loss.tolist(), (self.conf / n).tolist()
        self.losses[self.stage].append(loss)
        reward = (self.reward / n).tolist() if self.has_reward else nan
        extra = {k: (v / n).tolist() for k, v in self.extra.items()}
        run_epoch = self.run_epoch.tolist()
        for r, run in enumerate(self.runs):
            row = {**run, "stage": self.stage, "epoch": self.epoch, "loss": loss[r], "reward": reward[r],
                   "confidence": conf[r], "test_macro_f1": nan[r]}
            if self.stop is not None:
                row["run_epoch"] = run_epoch[r]
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
                preds[name], preds[f"{name}_pred"] = shares, pred
            if name == "test":
                preds["test_pred"], preds["test_prob"] = pred, p
            self.eval_seconds[name] += time.perf_counter() - t0
        if "pool" in preds:
            out.update(self._pool_health(preds["pool"], preds["pool_pred"]))
        if "test" in f1s:
            self._keep_best(self.oracle, f1s["test"], preds["test_pred"])
        if "val" in f1s and "test" in f1s:
            self._keep_best(self.selected, f1s["val"], preds["test_pred"], preds["test_prob"])
        return out

    def _pool_health(self, shares: torch.Tensor, pred: torch.Tensor) -> dict[str, list]:
        """The pool rules of this epoch (trainer.diagnostics), kept in ``pool_health``; curve columns -> values."""
        health, out = {}, {}
        if self.prior is not None and self.judge_prior:
            health["under_predicted"] = under_predicted(shares, self.prior)  # (M,)
            out["pool_under_predicted"] = health["under_predicted"].tolist()
        if self.reference is not None:
            ref_shares, ref_pred = self.reference
            flag = collapsed(shares, ref_shares)  # (M,)
            self.collapse_flags.append(flag)
            self.collapse_epochs.append(self.epoch)
            self.collapse_run_epochs.append(self.run_epoch.clone())
            v = self.sets["pool"].valid
            health["collapsed"] = flag
            health["agreement"] = ((pred == ref_pred) & v).sum(1) / v.sum(1).clamp_min(1)  # (M,)
            out["pool_collapsed"] = flag.tolist()
            out["pool_agreement_stage1"] = health["agreement"].tolist()
        self.pool_health.append((self.epoch, health))
        return out

    def health_at(self, epoch: int) -> dict[str, torch.Tensor]:
        """The pool rules at the last evaluated epoch up to ``epoch`` ({} before any)."""
        last = [h for e, h in self.pool_health if e <= epoch]
        return last[-1] if last else {}

    def _keep_best(self, store: dict[str, StageBest], score: torch.Tensor, test_pred: torch.Tensor,
                   test_prob: torch.Tensor | None = None):
        """Per run, remember this epoch if ``score`` is at least the stage's best so far (ties: later); with
        ``test_prob`` (M, T, C) its test probabilities too."""
        b = store.get(self.stage)
        if b is None:
            none = torch.full_like(score, -1, dtype=torch.long)  # (M,)
            b = store[self.stage] = StageBest(torch.full_like(score, -1.0), none, test_pred.clone(), none.clone(),
                                              None if test_prob is None else test_prob.clone())
        live = torch.ones_like(b.improved, dtype=torch.bool) if self.live is None else self.live  # (M,)
        b.improved = torch.where((score > b.score) & live, self.run_epoch, b.improved)
        better = (score >= b.score) & live  # (M,)
        b.score = torch.where(better, score, b.score)
        b.epoch = torch.where(better, self.run_epoch, b.epoch)
        b.test_pred[better] = test_pred[better]
        if test_prob is not None:
            b.test_prob[better] = test_prob[better]
        if self.keep_weights and store is self.selected:
            state = self.model.state_dict()
            if b.weights is None:
                b.weights = {k: v.detach().clone() for k, v in state.items()}
            for k, v in state.items():
                b.weights[k][better] = v.detach()[better]
