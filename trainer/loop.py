"""Per-epoch bookkeeping shared by the algorithms: running means, test macro-F1 curves, progress bar."""

from __future__ import annotations

import torch

from trainer.metrics import macro_f1_batched


class EpochLog:
    """Accumulates per-run loss / reward / confidence over an epoch's steps (as tensors, no per-step sync)
    and evaluates ``self.model`` on each run's test rows every ``eval_every`` epochs."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, test_idx: torch.Tensor, test_valid: torch.Tensor,
                 n_classes: int, runs: list[dict], eval_every: int = 1, bar=None):
        self.X, self.y = X, y  # (N, D), (N,)
        self.test_idx, self.test_valid = test_idx, test_valid  # (M, T)
        self.y_test = y[test_idx]  # (M, T)
        self.n_classes, self.runs, self.eval_every = n_classes, runs, max(1, eval_every)
        self.bar, self.task = bar, None
        self.rows: list[dict] = []
        self.epoch = 0
        self.model = None
        self.stage = ""
        self._reset()

    def _reset(self):
        m = len(self.runs)
        self.loss, self.conf, self.reward, self.steps = (torch.zeros(m) for _ in range(4))
        self.has_reward = False

    def begin(self, stage: str, model, epochs: int):
        """Start a stage: ``model`` is what the curves evaluate."""
        self.stage, self.model, self.stage_epochs, self.stage_epoch = stage, model, epochs, 0
        if self.bar is not None:
            self.task = self.bar.add_task(stage, total=epochs)

    def step(self, active: torch.Tensor, loss: torch.Tensor, conf: torch.Tensor,
             reward: torch.Tensor | None = None):
        """Per-run (M,) values of one step; inactive runs are not counted."""
        a = active.to(loss.dtype)
        self.loss += loss.detach() * a
        self.conf += conf.detach() * a
        self.steps += a
        if reward is not None:
            self.reward += reward.detach() * a
            self.has_reward = True

    def end_epoch(self):
        self.epoch += 1
        self.stage_epoch += 1
        n = self.steps.clamp_min(1)
        evaluate = self.stage_epoch % self.eval_every == 0 or self.stage_epoch == self.stage_epochs
        f1 = self.test_f1().tolist() if evaluate else [float("nan")] * len(self.runs)
        loss, conf = (self.loss / n).tolist(), (self.conf / n).tolist()
        reward = (self.reward / n).tolist() if self.has_reward else [float("nan")] * len(self.runs)
        for r, run in enumerate(self.runs):
            self.rows.append({**run, "stage": self.stage, "epoch": self.epoch, "loss": loss[r],
                              "reward": reward[r], "confidence": conf[r], "test_macro_f1": f1[r]})
        self._reset()
        if self.task is not None:
            self.bar.advance(self.task)

    def test_f1(self) -> torch.Tensor:
        pred = self.model.predict(self.X, self.test_idx).argmax(-1)  # (M, T)
        return macro_f1_batched(self.y_test, pred, self.test_valid, self.n_classes)
