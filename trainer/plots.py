"""PNG figures beside the results: training curves by epoch and the confusion matrix (matplotlib Agg)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PANELS = (("loss", "loss"), ("reward", "mean reward"), ("confidence", "mean max probability"),
          ("test_macro_f1", "test macro-F1"))


def plot_curves(curves: list[dict], path: str | Path, title: str = "") -> Path:
    """Four panels (loss, reward, confidence, test macro-F1) by epoch: mean over runs, band = min..max."""
    df = pd.DataFrame(curves)
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    colors = {st: f"C{i}" for i, st in enumerate(df.stage.unique())}
    for ax, (col, label) in zip(axes, PANELS):
        for stage, g in df.groupby("stage", sort=False):
            s = g.groupby("epoch")[col].agg(["mean", "min", "max"]).dropna()
            if s.empty:
                continue
            ax.plot(s.index, s["mean"], label=stage, color=colors[stage])
            ax.fill_between(s.index, s["min"], s["max"], alpha=0.2, color=colors[stage])
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
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
