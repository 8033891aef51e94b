"""PNG figures beside the results: training curves by epoch and the confusion matrix (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PANELS = (("loss", "loss"), ("reward", "mean reward"), ("confidence", "mean max probability (training)"),
          ("test_macro_f1", "test macro-F1"))


def _band(ax, df: pd.DataFrame, col: str, colors: dict, style: str = "-", label_suffix: str = ""):
    """Mean over runs by epoch per stage, band = min..max."""
    for stage, g in df.groupby("stage", sort=False):
        if col not in g:
            continue
        s = g.groupby("epoch")[col].agg(["mean", "min", "max"]).dropna()
        if s.empty:
            continue
        ax.plot(s.index, s["mean"], style, label=stage + label_suffix, color=colors[stage])
        ax.fill_between(s.index, s["min"], s["max"], alpha=0.15, color=colors[stage])


EXTRA_PANELS = [("approx_kl", "approx KL to pi_old (0 at mu = 1)"),
                ("clip_frac", "clip fraction (0 at mu = 1)"),
                ("sup_loss", "labelled CE in stage 2"),
                ("mask_rate", "pool share above the threshold")]
"""Named per-run curves of the stage-2 algorithms, drawn in a third row when a run logs them."""


def plot_curves(curves: list[dict], path: str | Path, title: str = "") -> Path:
    """Top: loss, reward, training confidence, test (and validation, dashed) macro-F1 by epoch. Bottom, the
    collapse diagnostics: predicted-class shares on the unlabelled pool, entropy of the predicted classes,
    the largest class's share and the mean max probability on pool (solid) and test (dashed). A third row, when
    the run logs them: ``EXTRA_PANELS``. Mean over runs; bands = min..max."""
    df = pd.DataFrame(curves)
    extras = [(c, label) for c, label in EXTRA_PANELS if c in df and df[c].notna().any()]
    fig, axes = plt.subplots(3 if extras else 2, 4, figsize=(16, 10.2 if extras else 6.8))
    colors = {st: f"C{i}" for i, st in enumerate(df.stage.unique())}
    for ax, (col, label) in zip(axes[0], PANELS):
        _band(ax, df, col, colors)
        ax.set_title(label)
    _band(axes[0, 3], df, "val_macro_f1", colors, "--", " (val)")
    shares = [c for c in df.columns if c.startswith("pool_share_")]
    ax = axes[1, 0]
    for i, c in enumerate(shares):
        s = df.groupby("epoch")[c].mean().dropna()
        ax.plot(s.index, s.values, label=c.removeprefix("pool_share_"), color=f"C{i}")
    ax.set_title("predicted-class shares on the pool")
    if shares:
        ax.legend(fontsize=7)
    for ax, col, label in ((axes[1, 1], "entropy", "predicted-class entropy (nats)"),
                           (axes[1, 2], "max_share", "largest class's share"),
                           (axes[1, 3], "confidence", "mean max probability")):
        _band(ax, df, f"pool_{col}", colors)
        _band(ax, df, f"test_{col}", colors, "--", " (test)")
        ax.set_title(label + ": pool, test dashed")
    for ax, (col, label) in zip(axes[2] if extras else [], extras):  # the stage-2 algorithms' own curves
        _band(ax, df, col, colors)
        ax.set_title(label)
    for ax in axes[2][len(extras):] if extras else []:
        ax.axis("off")
    for ax in axes.flat:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_confusion(cm: np.ndarray, classes, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true x predicted) with the counts in each cell."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(classes) + 2, 1.1 * len(classes) + 1.5))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)


def plot_layer_weights(layer_weights: dict, path: str | Path, title: str = "") -> Path:
    """--layer weighted: the learnt softmax weight of each stored layer, one line per run, the mean as bars."""
    ids = layer_weights["layers"]
    W = np.array([r["weights"] for r in layer_weights["runs"]])  # (M, L)
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * len(ids) + 2), 3))
    x = np.arange(len(ids))
    ax.bar(x, W.mean(0), color="lightsteelblue", label="mean over runs")
    for w in W:
        ax.plot(x, w, ".-", color="gray", alpha=0.5, lw=0.8)
    ax.axhline(1 / len(ids), color="k", ls=":", lw=0.8, label="uniform")
    ax.set_xticks(x, [str(i) for i in ids])
    ax.set_xlabel("hidden_states layer")
    ax.set_ylabel("softmax weight")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return Path(path)
