"""The collapse rule and the under-trained rule on constructed histograms and loss curves."""

import math

import torch

from trainer.diagnostics import class_shares, collapse_onset, collapsed, entropy, under_predicted, under_trained

PRIOR = torch.tensor([[0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)


def test_class_shares_count_valid_predictions_per_run():
    pred = torch.tensor([[0, 0, 1, 3], [2, 2, 2, 0]])
    valid = torch.tensor([[True, True, True, False], [True, True, True, True]])
    s = class_shares(pred, valid, 4)
    assert torch.allclose(s, torch.tensor([[2 / 3, 1 / 3, 0, 0], [0.25, 0, 0.75, 0]], dtype=torch.float64))


def test_entropy_of_uniform_and_one_hot():
    assert entropy(PRIOR).item() == math.log(4)
    assert entropy(torch.tensor([1.0, 0, 0, 0])).item() == 0


def test_a_class_the_stage_started_with_falling_under_one_percent_is_collapse():
    just_above = torch.tensor([[0.0101, 0.33, 0.33, 0.3299]], dtype=torch.float64)
    just_below = torch.tensor([[0.0099, 0.33, 0.33, 0.3301]], dtype=torch.float64)
    assert not collapsed(just_above, PRIOR).item()  # the old rule (under a quarter of 0.25) flagged this
    assert collapsed(just_below, PRIOR).item()


def test_what_stage_one_already_was_is_not_collapse():
    start = torch.tensor([[0.005, 0.35, 0.35, 0.295]], dtype=torch.float64)  # stage 1 never predicted class 0
    same = torch.tensor([[0.004, 0.36, 0.34, 0.296]], dtype=torch.float64)
    assert not collapsed(same, start).item()
    assert under_predicted(same, PRIOR).item()  # reported by the other flag: the model is as stage 1 left it


def test_entropy_below_half_the_starting_entropy_is_collapse():
    start = torch.tensor([[0.1, 0.1, 0.8]], dtype=torch.float64)
    peaked = torch.tensor([[0.026, 0.026, 0.948]], dtype=torch.float64)
    assert entropy(peaked).item() < 0.5 * entropy(start).item()
    assert collapsed(peaked, start).item()
    assert not collapsed(torch.tensor([[0.08, 0.08, 0.84]], dtype=torch.float64), start).item()


def test_rare_classes_are_not_judged():
    start = torch.tensor([[0.015, 0.33, 0.33, 0.325]], dtype=torch.float64)
    assert not collapsed(torch.tensor([[0.0, 0.34, 0.33, 0.33]], dtype=torch.float64), start).item()
    assert not under_predicted(torch.tensor([[0.0, 0.34, 0.33, 0.33]], dtype=torch.float64),
                               torch.tensor([[0.015, 0.33, 0.33, 0.325]], dtype=torch.float64)).item()


def test_under_predicted_is_a_class_of_the_labels_under_one_percent_of_the_pool():
    assert under_predicted(torch.tensor([[0.009, 0.4, 0.3, 0.291]], dtype=torch.float64), PRIOR).item()
    assert not under_predicted(torch.tensor([[0.03, 0.4, 0.3, 0.27]], dtype=torch.float64), PRIOR).item()


def test_collapse_onset_is_the_start_of_the_final_collapsed_stretch():
    flags = [torch.tensor(f) for f in ([False, True, False], [True, True, False], [False, True, True],
                                       [True, True, True], [True, True, False])]
    out, onset = collapse_onset(flags, [10, 20, 30, 40, 50])
    assert out == [True, True, False] and onset == [40, 10, -1]


def test_under_trained_rule():
    flat = [0.5 + 0.5 * math.exp(-e / 5) for e in range(100)]
    steep = [2.0 - 0.01 * e for e in range(100)]  # 0.1 (5 % of the first loss) per 10 epochs
    assert under_trained(steep) and not under_trained(flat)
    assert not under_trained([1.0 - 0.0008 * e for e in range(100)])  # 0.8 % of the first loss per 10 epochs
    assert not under_trained([1.0 * 0.5 ** e for e in range(100)])  # near 0 at the end: relative drops do not count
    assert not under_trained([1.0, 0.5])  # too short to judge


class Scripted:
    """A stand-in model whose pool predictions follow a script: ``script[epoch]`` is the class each pool row gets
    (by row index modulo a cycle), so a test fixes what the rules see at every epoch."""

    def __init__(self, log, cycle):
        self.log, self.cycle = log, cycle  # cycle(epoch) -> list of classes predicted in turn

    def predict(self, X, idx):
        classes = torch.tensor(self.cycle(self.log.epoch))
        pred = classes[idx % len(classes)]  # (M, T)
        return torch.nn.functional.one_hot(pred, 4).float() * 5


def _scripted_log(prior):
    from trainer.loop import EpochLog, EvalSet

    X = torch.zeros(100, 2)
    idx = torch.arange(100).unsqueeze(0)  # one run, 100 pool rows
    sets = {"pool": EvalSet(X, idx, torch.ones(1, 100, dtype=torch.bool), labelled=False)}
    return EpochLog(torch.zeros(100, dtype=torch.long), sets, ("a", "b", "c", "d"), [{"fold": 1, "seed": 0}], prior)


def _epochs(log, n):
    for _ in log.epochs(n):
        log.step(torch.tensor([True]), torch.ones(1), torch.ones(1))
        log.end_epoch()


def test_a_constructed_stage2_collapse_fires_from_the_epoch_it_holds():
    log = _scripted_log(PRIOR)
    balanced, one_class = [0, 1, 2, 3], [1]
    model = Scripted(log, lambda e: balanced if e <= 12 else one_class)  # stage 2 collapses from epoch 13
    log.begin("supervised", model, 10)
    _epochs(log, 10)
    log.begin("b-grpo", model, 10)
    _epochs(log, 10)
    out, onset = collapse_onset(log.collapse_flags, log.collapse_epochs)
    assert out == [True] and onset == [13]
    assert log.health_at(10) == {"under_predicted": torch.tensor([False])}  # stage 1: healthy, nothing to compare


def test_an_under_trained_but_stable_supervised_run_is_not_collapsed():
    # stage 1 predicts class 0 for no pool row (the under-trained model), stage 2 keeps it so: the
    # under-predicted flag says what the model is, the collapse rule stays silent
    log = _scripted_log(PRIOR)
    model = Scripted(log, lambda e: [1, 2, 3])
    log.begin("supervised", model, 5)
    _epochs(log, 5)
    assert not log.collapse_flags and bool(log.health_at(5)["under_predicted"])
    log.begin("pseudo-label", model, 5)
    _epochs(log, 5)
    out, onset = collapse_onset(log.collapse_flags, log.collapse_epochs)
    assert out == [False] and onset == [-1]
    assert float(log.health_at(10)["agreement"]) == 1.0
