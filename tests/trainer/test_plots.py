"""curves.png: the stage-2 algorithms' own curves (approx_kl, clip_frac, sup_loss, mask_rate) get a third row."""

from PIL import Image

from trainer.plots import plot_curves


def _curves(extra: dict) -> list[dict]:
    return [{"fold": 1, "seed": 0, "stage": "b-grpo", "epoch": e, "loss": 1.0 / e, "reward": 0.5,
             "confidence": 0.7, "test_macro_f1": 0.5, **extra} for e in (1, 2, 3)]


def test_third_row_only_when_a_run_logs_algorithm_curves(tmp_path):
    plain = Image.open(plot_curves(_curves({}), tmp_path / "a.png")).size
    extra = Image.open(plot_curves(_curves({"approx_kl": 0.0, "clip_frac": 0.0}), tmp_path / "b.png")).size
    assert extra[0] == plain[0] and extra[1] > plain[1] * 1.4


def _titles(fig):
    return [ax.get_title() for ax in fig.axes]


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
