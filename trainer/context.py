"""What a method trains with: the run context (the stacked policy of every (fold, seed) run, its optimiser, the
epoch log, the per-run generators) and the snapshots of the models its rows report."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import torch

from trainer.algorithms.common import LabelledStream
from trainer.algorithms.supervised import train_supervised
from trainer.config import TrainConfig
from trainer.data import DataError, pad_rows
from trainer.devices import place, place_module, resolve
from trainer.emotion_space import similarity_matrix
from trainer.loop import EpochLog, EvalSet
from trainer.metrics import macro_f1_batched
from trainer.models import StackedAdam, StackedMLP
from trainer.prepare import Prepared
from trainer.seeds import LABELED_SEED_OFFSET, TEACHER_SEED_OFFSET, VIEW_SEED_OFFSET
from trainer.teachers import predictions


@dataclass
class Snapshot:
    """A reported model's test predictions and where in training it was taken."""

    test_pred: torch.Tensor  # (M, T)
    test_prob: torch.Tensor  # (M, T, C) class probabilities (predictions.csv)
    log_stage: str
    """The EpochLog stage it ends (its best-validation / best-test epochs are that stage's)."""
    epoch: int
    train_f1: torch.Tensor  # (M,) macro-F1 on each run's labelled training rows
    split_pred: dict = field(default_factory=dict)
    """Teacher-rewarded runs: the model's predictions per split (teachers.predictions), for the agreement columns."""


@dataclass
class Context:
    """What a method's ``run`` works with: the configuration, the prepared data, the stacked policy (member r is
    run r), its optimiser, the epoch log and each run's batch and view generators.

    ``data``'s tensors, the policy, the optimiser and the log are on the run's ``device`` (--device); the generators
    are CPU generators on every device (what they draw is sent), so a run draws the same numbers everywhere."""

    cfg: TrainConfig
    data: Prepared
    policy: StackedMLP
    opt: StackedAdam
    log: EpochLog
    gens: list[torch.Generator]
    view_gens: list[torch.Generator]
    snapshots: dict[str, Snapshot] = field(default_factory=dict)
    """Row stage ('stage1', 'final') -> the model it reports."""
    companions: dict[str, list] = field(default_factory=dict)
    """Models reported beside the method's own, as rows of their own method name: name -> per run (test
    predictions, training-fit columns) (the reference's logistic regression)."""
    row_columns: dict[str, list[dict]] = field(default_factory=dict)
    """Row stage -> per run, extra columns a method reports in those rows (emobox: its pooled scores)."""
    teacher: StackedMLP | None = None
    """The teacher MLP of r3-r5 (or of the teacher method), once trained."""
    S: np.ndarray | None = None
    """(C, C) emotion similarity of the classes (trainer.emotion_space); None when a class has no place."""
    device: torch.device = torch.device("cpu")
    """Where the run computes (--device, resolved)."""

    @classmethod
    def start(cls, cfg: TrainConfig, data: Prepared, bar=None) -> Context:
        """The policy of every run (initialised from its run seed on the host; standardised with --normalize
        global), its optimiser, the epoch log and the generators, with ``data`` sent to the run's device once."""
        device = resolve(cfg.device)
        prior = labelled_prior(cfg, data)
        data = data.to(device)
        policy = place_module(StackedMLP.from_seeds(data.init_seeds, data.X.shape[-1], len(data.classes), cfg.hidden,
                                                    data.X.shape[1] if cfg.layer == "weighted" else 0, cfg.head),
                              device)
        if cfg.normalization == "global":
            policy.standardize(data.X, data.train_all)
        gens = [torch.Generator().manual_seed(s) for s in data.init_seeds]
        method = cfg.algorithm
        log = EpochLog(data.y, eval_sets(cfg, data), data.classes,
                       [{"fold": r["fold"], "seed": r["seed"]} for r in data.runs], place(prior, device),
                       1 if method.own_validation else cfg.eval_every, bar, keep_weights=cfg.save_model,
                       stop=cfg.stop_rule, judge_prior=not cfg.unlabeled_from)
        ctx = cls(cfg, data, policy, None, log, gens,
                  [torch.Generator().manual_seed(s + VIEW_SEED_OFFSET) for s in data.init_seeds], device=device)
        ctx.opt = ctx.new_opt(policy)
        ctx.S = similarity(cfg, data.classes)
        return ctx

    def new_opt(self, model: StackedMLP) -> StackedAdam:
        """Adam at the run's --lr and --weight-decay over ``model``'s members."""
        return StackedAdam(model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def supervised(self, pools, epochs: int, stage: str):
        """Cross-entropy on each run's rows ``pools[r]`` for ``epochs`` epochs, logged as ``stage``."""
        self.log.begin(stage, self.policy, epochs)
        train_supervised(self.policy, self.opt, self.data.X, self.data.y, pools, epochs, self.cfg.batch_size,
                         self.gens, self.log)

    def stage1(self):
        """The supervised baseline a two-stage method starts from, reported as the `stage1` rows."""
        self.supervised(self.data.labeled, self.cfg.epochs_baseline, "supervised")
        self.snapshot("stage1", self.policy)

    def snapshot(self, stage: str, model: StackedMLP):
        """Test predictions of ``model`` now, reported as rows of ``stage`` (the log stage just trained); kept on
        the host."""
        method = self.cfg.algorithm
        train_idx, train_valid = (place(t, self.device) for t in pad_rows(method.train_rows(self.data)))
        train_f1 = macro_f1_batched(self.data.y[train_idx], model.predict(self.data.X, train_idx).argmax(-1),
                                    train_valid, len(self.data.classes))
        logits = model.predict(self.data.X, pad_rows(self.data.test)[0])  # (M, T, C)
        split = predictions(model, self.data, teacher=False) if method.reports_teacher_agreement(self.cfg) else {}
        self.snapshots[stage] = Snapshot(logits.argmax(-1).cpu(), logits.softmax(-1).cpu(), self.log.stage,
                                         self.log.epoch, train_f1.cpu(), split)

    def labelled_stream(self) -> LabelledStream:
        """Each run's labelled rows as endless batches beside the stage-2 batches, in their own seeded order."""
        return LabelledStream(self.data.X, self.data.y, self.data.labeled, self.cfg.batch_size,
                              [torch.Generator().manual_seed(s + LABELED_SEED_OFFSET) for s in self.data.init_seeds])

    def teacher_seeds(self) -> list[int]:
        """Each run's teacher seed (initialisation and batches of the teacher MLP of r3-r5)."""
        return [s + TEACHER_SEED_OFFSET for s in self.data.init_seeds]


def similarity(cfg: TrainConfig, classes: tuple[str, ...]) -> np.ndarray | None:
    """The classes' emotion similarity for eswr/wheel and the wheel metric. A class the wheel cannot place is an
    error where training reads it (or --similarity is given) and one warning otherwise (the wheel column is NaN)."""
    try:
        return similarity_matrix(classes, cfg.similarity)
    except ValueError as e:
        if cfg.options.needs_similarity:
            raise DataError(f"--reward {cfg.reward}: {e}") from None
        if cfg.similarity:
            raise DataError(f"--similarity {cfg.similarity}: {e}") from None
        warnings.warn(f"{cfg.dataset}: the wheel metric is NaN: {e}")
        return None


def eval_sets(cfg: TrainConfig, data: Prepared) -> dict[str, EvalSet]:
    """What the log evaluates per epoch: test, the stage-2 pool (diagnostics), each run's labelled training rows
    (the learning curve's train line) and the validation rows (their row indices on the features' device)."""
    def rows(pools):
        return (place(t, data.X.device) for t in pad_rows(pools))

    sets = {"test": EvalSet(data.X, *rows(data.test)),
            "pool": EvalSet(data.Xu, *rows(data.diag_pool), labelled=False),
            "train": EvalSet(data.X, *rows(cfg.algorithm.train_rows(data)))}
    if cfg.has_val:
        sets["val"] = EvalSet(data.X, *rows(data.val))
    return sets


def labelled_prior(cfg: TrainConfig, data: Prepared) -> torch.Tensor:
    """Class shares of each run's labelled rows, (M, C)."""
    pools = cfg.algorithm.train_rows(data)
    counts = torch.stack([torch.bincount(data.y[p], minlength=len(data.classes)) for p in pools]).double()
    return counts / counts.sum(1, keepdim=True).clamp_min(1)
