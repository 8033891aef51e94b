"""EpochLog: named per-step extras become curves.csv columns; evaluation sets and best-epoch bookkeeping."""

import torch

from trainer.loop import EpochLog, EvalSet
from trainer.models import StackedMLP


def _log(eval_every=1):
    X = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    y = torch.arange(40) % 3
    idx = torch.stack([torch.arange(0, 20), torch.arange(20, 40)])  # (M=2, T=20)
    valid = torch.ones(2, 20, dtype=torch.bool)
    sets = {"test": EvalSet(X, idx, valid), "pool": EvalSet(X, idx.flip(0), valid, labelled=False),
            "val": EvalSet(X, idx, valid)}
    prior = torch.full((2, 3), 1 / 3, dtype=torch.float64)
    log = EpochLog(y, sets, ("a", "b", "c"), [{"fold": 1, "seed": 0}, {"fold": 1, "seed": 1}], prior, eval_every)
    log.begin("b-grpo", StackedMLP.from_seeds([0, 1], 6, 3, 8), 2)
    return log


def test_extras_are_averaged_over_active_steps_and_written_as_columns():
    log = _log()
    one = torch.ones(2)
    log.step(torch.tensor([True, True]), one, one, approx_kl=torch.tensor([0.2, 0.4]), clip_frac=torch.zeros(2))
    log.step(torch.tensor([True, False]), one, one, approx_kl=torch.tensor([0.4, 9.0]), clip_frac=torch.ones(2))
    log.end_epoch()
    r0, r1 = log.rows
    assert r0["approx_kl"] == torch.tensor(0.3).item() and r1["approx_kl"] == torch.tensor(0.4).item()
    assert r0["clip_frac"] == 0.5 and r1["clip_frac"] == 0.0  # run 1's second step was inactive
    log.step(torch.tensor([True, True]), one, one)
    log.end_epoch()
    assert "approx_kl" not in log.rows[-1]  # extras do not leak into the next epoch


def test_each_evaluated_epoch_writes_diagnostics_and_keeps_best_epochs():
    log = _log()  # its first stage: the under-predicted rule, no collapse reference
    for _ in range(2):
        log.step(torch.tensor([True, True]), torch.ones(2), torch.ones(2))
        log.end_epoch()
    row = log.rows[-1]
    shares = [row[f"pool_share_{c}"] for c in "abc"]
    assert abs(sum(shares) - 1) < 1e-9 and row["pool_max_share"] == max(shares)
    assert {"test_macro_f1", "val_macro_f1", "test_entropy", "pool_confidence", "pool_under_predicted"} <= set(row)
    assert "pool_collapsed" not in row and not log.collapse_flags
    assert log.selected["b-grpo"].epoch.tolist() != [-1, -1] and log.oracle["b-grpo"].test_pred.shape == (2, 20)
    assert set(log.eval_seconds) == {"test", "pool", "val"}
    log.begin("stage2", log.model, 2)  # a second stage is judged against the first's end
    log.step(torch.tensor([True, True]), torch.ones(2), torch.ones(2))
    log.end_epoch()
    row = log.rows[-1]
    assert row["pool_collapsed"] is False and row["pool_agreement_stage1"] == 1.0  # the model did not change
    assert len(log.collapse_flags) == 1 and log.collapse_epochs == [3]


def test_unevaluated_epochs_have_no_diagnostics():
    log = _log(eval_every=2)
    log.step(torch.tensor([True, True]), torch.ones(2), torch.ones(2))
    log.end_epoch()
    assert "pool_entropy" not in log.rows[0] and log.rows[0]["test_macro_f1"] != log.rows[0]["test_macro_f1"]
