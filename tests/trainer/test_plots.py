"""Figures: the diagnostics dashboard (the stage-2 algorithms' own curves get a third row), the paper's learning
curve and confusion matrix, `trainer plot`."""

import pytest
from PIL import Image

from trainer.plots import plot_curves


def _curves(extra: dict) -> list[dict]:
    return [{"fold": 1, "seed": 0, "stage": "b-grpo", "epoch": e, "loss": 1.0 / e, "reward": 0.5,
             "confidence": 0.7, "test_macro_f1": 0.5, **extra} for e in (1, 2, 3)]


@pytest.mark.slow
def test_third_row_only_when_a_run_logs_algorithm_curves(tmp_path):
    import matplotlib.pyplot as plt

    from trainer.plots import curves_figure

    plain = Image.open(plot_curves(_curves({}), tmp_path / "a.png")).size
    extra = Image.open(plot_curves(_curves({"approx_kl": 0.01, "clip_frac": 0.1}), tmp_path / "b.png")).size
    assert extra[0] == plain[0] and extra[1] > plain[1] * 1.4
    zero = Image.open(plot_curves(_curves({"approx_kl": 0.0, "clip_frac": 0.0}), tmp_path / "c.png")).size
    assert zero == plain  # 0 in every epoch (mu = 1): no panel, the caption says so
    fig = curves_figure(_curves({"approx_kl": 0.0, "clip_frac": 0.0}))
    assert any("approx_kl, clip_frac: 0 in every epoch (mu = 1), not drawn" in t.get_text() for t in fig.texts)
    plt.close(fig)


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


@pytest.mark.slow
def test_panels_only_with_data_losses_apart_splits_and_band_named(tmp_path):
    import math

    import matplotlib.pyplot as plt

    from trainer.plots import BAND, curves_figure

    sup = [{"fold": 1, "seed": s, "stage": "supervised", "epoch": e, "loss": 2.0 / e, "reward": math.nan,
            "confidence": 0.6, "test_macro_f1": 0.4 + 0.01 * e, "val_macro_f1": 0.5} for e in (1, 2) for s in (0, 1)]
    fig = curves_figure(sup)
    t = _titles(fig)
    assert not any("reward" in x for x in t)  # the baseline has no reward: no reward panel
    assert "macro-F1 on test solid, val dashed" in t and len(fig.axes) == 3  # loss, confidence, F1: no empty panels
    f1 = fig.axes[t.index("macro-F1 on test solid, val dashed")]
    assert [x.get_text() for x in f1.get_legend().get_texts()] == ["supervised (test)", "supervised (val)"]
    assert any(f"{BAND} over the runs" in x.get_text() and "mean over 2 runs" in x.get_text() for x in fig.texts)
    plt.close(fig)
    rl = [{**r, "stage": "b-grpo", "epoch": r["epoch"] + 2, "loss": -0.01, "reward": 0.3} for r in sup]
    fig = curves_figure(sup + rl)
    t = _titles(fig)
    assert "loss: supervised (cross-entropy)" in t and "loss: b-grpo (stage-2 objective)" in t
    assert "mean reward (training batches)" in t
    sup_ax, rl_ax = (fig.axes[t.index(x)] for x in ("loss: supervised (cross-entropy)",
                                                      "loss: b-grpo (stage-2 objective)"))
    assert sup_ax.get_ylim()[0] > 0 > rl_ax.get_ylim()[1]  # each loss on its own scale
    plt.close(fig)
    p = plot_curves(sup + rl, tmp_path / "c.png")
    assert p.exists() and p.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"


def test_confusion_rows_normalised_with_colorbar_and_run_count(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from trainer.plots import confusion_figure, plot_confusion

    cm = np.array([[3, 1], [0, 4]])
    fig = confusion_figure(cm, ("a", "b"), n_runs=3)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel().startswith("share")  # matrix + colorbar
    np.testing.assert_allclose(fig.axes[0].images[0].get_array().sum(1), [1, 1])
    assert any("summed over 3 runs" in x.get_text() for x in fig.texts)
    plt.close(fig)
    p = plot_confusion(cm, ("a", "b"), tmp_path / "cm.png", n_runs=3)
    assert p.exists() and p.with_suffix(".pdf").exists()


def _two_stage() -> list[dict]:
    rows = []
    for f in (1, 2):
        for e in range(1, 9):
            stage = "supervised" if e <= 5 else "b-grpo"
            rows.append({"fold": f, "seed": 0, "stage": stage, "epoch": e, "loss": 1.0 / e,
                         "train_macro_f1": 0.3 + 0.06 * e, "val_macro_f1": 0.3 + 0.04 * e - 0.01 * f,
                         "test_macro_f1": 0.25 + 0.04 * e + 0.01 * f})
    return rows


def test_learning_curve_train_val_test_and_the_stage_boundary(tmp_path):
    import matplotlib.pyplot as plt

    from trainer.plots import learning_curve_figure, plot_learning_curve

    fig = learning_curve_figure(_two_stage(), "B-GRPO on urdu (fbank-stats features)", "six labels, r1, positive")
    ax = fig.axes[0]
    assert ax.get_title() == "B-GRPO on urdu (fbank-stats features)\nsix labels, r1, positive"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train (labelled rows)", "validation", "test"]
    test = ax.get_lines()[2]
    assert list(test.get_xdata()) == list(range(1, 9))
    assert test.get_ydata()[0] == pytest.approx(100 * (0.29 + 0.015))  # mean over the runs, in %
    vlines = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [5.5, 5.5]]
    assert len(vlines) == 1 and any("b-grpo from epoch 6" in t.get_text() for t in ax.texts)
    assert ax.title.get_fontsize() >= 12 and ax.xaxis.label.get_fontsize() >= 11
    plt.close(fig)
    p = plot_learning_curve(_two_stage(), tmp_path / "lc.png", "t")
    assert Image.open(p).size[0] >= 900 and p.with_suffix(".pdf").read_bytes()[:4] == b"%PDF"


def test_confusion_title_and_readable_fonts():
    import matplotlib.pyplot as plt
    import numpy as np

    from trainer.plots import confusion_figure

    fig = confusion_figure(np.eye(4, dtype=int) * 5, ("a", "b", "c", "d"), "Baseline on demo (fbank-stats features)",
                           9, "six labels")
    ax = fig.axes[0]
    assert ax.get_title() == "Baseline on demo (fbank-stats features)\nsix labels"
    assert min(t.get_fontsize() for t in ax.texts) >= 9 and ax.xaxis.label.get_fontsize() >= 11
    plt.close(fig)


def test_trainer_plot_redraws_a_run_folder_titled_by_its_settings(tmp_path):
    """`trainer plot RUN`: paper figures from a written run (curves.csv + results.json), into --out."""
    import json

    import pandas as pd

    from typer.testing import CliRunner

    from trainer.cli import app
    from trainer.config import TrainConfig

    cfg = TrainConfig(method="b-grpo", store="s", manifests="m", model="fbank-stats", dataset="urdu", seeds=(0,))
    run = tmp_path / "runs" / cfg.run_name
    run.mkdir(parents=True)
    pd.DataFrame(_two_stage()).to_csv(run / "curves.csv", index=False)
    (run / "results.json").write_text(json.dumps({
        "config": cfg.to_dict(), "classes": ["Angry", "Sad"], "confusion": {"final": [[3, 1], [0, 4]]},
        "rows": [{"stage": "final", "method": "b-grpo", "fold": f, "seed": 0} for f in (1, 2)]}))
    p = CliRunner().invoke(app, ["plot", str(tmp_path / "runs"), "--out", str(tmp_path / "figs")])
    assert p.exit_code == 0 and "learning_curve.png, confusion.png" in p.stdout, p.output
    got = sorted(x.name for x in (tmp_path / "figs" / cfg.run_name).iterdir())
    assert got == ["confusion.pdf", "confusion.png", "learning_curve.pdf", "learning_curve.png"]
    assert not (run / "learning_curve.png").exists()
    bad = CliRunner().invoke(app, ["plot", str(tmp_path / "figs")])
    assert bad.exit_code == 2
