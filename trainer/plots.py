"""Figures beside the results, each as PNG and PDF (matplotlib Agg): for a paper, the learning curve (train /
validation / test macro-F1 by epoch with the stage boundary) and the confusion matrix, titled with method, dataset
and features; the diagnostic dashboard (every curve a run logs); the layer weights."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

BAND = "min-max"
"""What the shaded band around each mean curve spans: the min..max over the runs (folds x seeds) at that epoch."""


def _band(ax, df: pd.DataFrame, col: str, colors: dict, style: str = "-", label_suffix: str = ""):
    """Mean over runs by epoch per stage, band = min..max over runs (BAND)."""
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


def _has(df: pd.DataFrame, col: str) -> bool:
    return col in df and pd.to_numeric(df[col], errors="coerce").notna().any()


def curve_panels(df: pd.DataFrame) -> list[list[tuple[str, str, list[tuple[str, str, str]], pd.DataFrame]]]:
    """The panels of diagnostics.png by row, only those with data: (title, y label, [(column, line style, legend
    suffix)], rows drawn). Row 1: one loss panel per stage (the supervised cross-entropy and a stage-2 objective
    have different scales, so each has its own axes), the reward (only when the method has one), the training
    confidence, macro-F1 by split (test solid, val dashed). Row 2: the collapse diagnostics on the pool (solid)
    and test (dashed), led by the predicted-class shares on the pool (no lines listed: one per class). Row 3:
    EXTRA_PANELS a run logs."""
    top = []
    for stage, g in df.groupby("stage", sort=False):
        if _has(g, "loss"):
            what = "cross-entropy" if stage == "supervised" else "stage-2 objective"
            top.append((f"loss: {stage} ({what})", what, [("loss", "-", "")], g))
    if _has(df, "reward"):
        top.append(("mean reward (training batches)", "reward", [("reward", "-", "")], df))
    if _has(df, "confidence"):
        top.append(("mean max probability (training batches)", "probability", [("confidence", "-", "")], df))
    splits = [(f"{s}_macro_f1", st, f" ({s})") for s, st in (("test", "-"), ("val", "--")) if _has(df, f"{s}_macro_f1")]
    if splits:
        which = " solid, ".join(x[2].strip(" ()") for x in splits) + (" dashed" if len(splits) > 1 else "")
        top.append((f"macro-F1 on {which}", "macro-F1 (fraction)", splits, df))
    diag = [("predicted-class shares on the pool", "share", [], df)] if any(
        c.startswith("pool_share_") and _has(df, c) for c in df.columns) else []
    for col, label, unit in (("entropy", "predicted-class entropy", "nats"), ("max_share", "largest class's share",
                                                                           "share"),
                             ("confidence", "mean max probability", "probability")):
        lines = [(f"{s}_{col}", st, f" ({s})") for s, st in (("pool", "-"), ("test", "--")) if _has(df, f"{s}_{col}")]
        if lines:
            diag.append((f"{label}: pool solid, test dashed", unit, lines, df))
    extra = [(label, c, [(c, "-", "")], df) for c, label in EXTRA_PANELS if _has(df, c) and c not in zero_curves(df)]
    return [row for row in (top, diag, extra) if row]


def zero_curves(df: pd.DataFrame) -> list[str]:
    """EXTRA_PANELS columns that are 0 in every epoch of every run (approx_kl and clip_frac at mu = 1): not drawn,
    named in the dashboard's caption instead."""
    return [c for c, _ in EXTRA_PANELS if _has(df, c) and (pd.to_numeric(df[c], errors="coerce").fillna(0) == 0).all()]


def curves_figure(curves: list[dict], title: str = "", footer: str = ""):
    """The diagnostics.png dashboard (see ``curve_panels``; predicted-class shares on the pool lead the diagnostics
    row). Lines: mean over the runs; bands: min..max over them (said in the caption, with ``footer``, e.g. the run
    folder, and the algorithm curves left out for being 0 throughout)."""
    df = pd.DataFrame(curves)
    rows = curve_panels(df)
    shares = [c for c in df.columns if c.startswith("pool_share_") and _has(df, c)]
    ncols = max(4, *(len(r) for r in rows)) if rows else 1
    fig, axes = plt.subplots(max(len(rows), 1), ncols, figsize=(4 * ncols, 3.4 * max(len(rows), 1) + 0.4),
                             squeeze=False)
    colors = {st: f"C{i}" for i, st in enumerate(df.stage.unique())} if "stage" in df else {}
    for i, row in enumerate(rows):
        for j, (label, ylabel, lines, g) in enumerate(row):
            ax = axes[i, j]
            if not lines:  # the pool shares: one line per class, mean over runs
                for k, c in enumerate(shares):
                    s = df.groupby("epoch")[c].mean().dropna()
                    ax.plot(s.index, s.values, label=c.removeprefix("pool_share_"), color=f"C{k}")
            for col, style, suffix in lines:
                _band(ax, g, col, colors, style, suffix)
            ax.set_title(label, fontsize=9)
            ax.set_xlabel("epoch")
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        for ax in axes[i, len(row):]:
            ax.remove()  # no empty panels
    n = df.groupby(["fold", "seed"]).ngroups if {"fold", "seed"} <= set(df) else 0
    fig.suptitle(title, fontsize=12)
    zeros = zero_curves(df)
    note = f" {', '.join(zeros)}: 0 in every epoch (mu = 1), not drawn." if zeros else ""
    fig.text(0.5, 0.005, f"Lines: mean over {n} runs (folds x seeds); shaded bands: {BAND} over the runs.{note}"
             + (f"  {footer}" if footer else ""), ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _save(fig, path: str | Path, dpi: int = 90) -> Path:
    """The figure as PNG at ``path`` and as PDF beside it."""
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    fig.savefig(path.with_suffix(".pdf"))
    plt.close(fig)
    return path


def plot_curves(curves: list[dict], path: str | Path, title: str = "", footer: str = "") -> Path:
    """diagnostics.png (and .pdf): ``curves_figure``."""
    return _save(curves_figure(curves, title, footer), path)


def run_titles(cfg) -> tuple[str, str]:
    """(title, subtitle) of a run's figures from its TrainConfig: 'B-GRPO on urdu (fbank-stats features)', and the
    labels and settings that tell the run apart ('six labels, r1, positive'), never the hashed folder name."""
    from trainer.tables import METHOD_NAMES, REFERENCE_NAMES

    name = {**METHOD_NAMES, **REFERENCE_NAMES}.get(cfg.method, cfg.method).split(" (")[0]
    head = f"{cfg.method}_{cfg.model}_{cfg.dataset}_"
    rest = cfg.readable_name[len(head):] if cfg.readable_name.startswith(head) else cfg.labels
    parts = rest.split("_")
    parts[0] = f"{parts[0]} labels"
    return f"{name} on {cfg.dataset} ({cfg.model} features)", ", ".join(parts)


PAPER_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
            "ytick.labelsize": 10, "legend.fontsize": 9.5}
"""Font sizes of the paper figures (a 6.4 x 4.2 in figure scaled to a column stays readable)."""
SPLIT_STYLE = {"train": ("train (labelled rows)", ":", "C2"), "val": ("validation", "--", "C1"),
               "test": ("test", "-", "C0")}
"""Learning-curve lines: split -> (legend, line style, colour)."""


def stage_boundaries(df: pd.DataFrame) -> list[tuple[int, str]]:
    """(first epoch, stage) of every stage after the first, in training order."""
    if "stage" not in df or df.empty:
        return []
    first = df.groupby("stage", sort=False)["epoch"].min().sort_values()
    return [(int(e), st) for st, e in first.iloc[1:].items()]


def learning_curve_figure(curves: list[dict], title: str = "", subtitle: str = ""):
    """The paper's learning curve: macro-F1 (%) by epoch on each run's labelled training rows, its validation rows
    (when it has them) and its test rows; lines are the mean over the runs, bands their min..max; a dotted vertical
    line where each later stage begins (e.g. B-GRPO's stage 2 after the supervised baseline)."""
    df = pd.DataFrame(curves)
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        n = df.groupby(["fold", "seed"]).ngroups if {"fold", "seed"} <= set(df) else 0
        for split, (label, style, color) in SPLIT_STYLE.items():
            col = f"{split}_macro_f1"
            if not _has(df, col):
                continue
            s = (df.groupby("epoch")[col].agg(["mean", "min", "max"]) * 100).dropna()
            ax.plot(s.index, s["mean"], style, color=color, lw=1.8, label=label)
            ax.fill_between(s.index, s["min"], s["max"], color=color, alpha=0.12, lw=0)
        for epoch, stage in stage_boundaries(df):
            ax.axvline(epoch - 0.5, color="0.3", ls=(0, (2, 2)), lw=1.2)
            ax.annotate(f" {stage} from epoch {epoch}", (epoch - 0.5, 0.98), xycoords=("data", "axes fraction"),
                        ha="left", va="top", fontsize=9.5, color="0.25")
        ax.set_xlabel("epoch")
        ax.set_ylabel("macro-F1 (%)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", title=f"mean over {n} runs; band: min-max" if n else None,
                  title_fontsize=9)
        ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
        fig.tight_layout()
    return fig


def plot_learning_curve(curves: list[dict], path: str | Path, title: str = "", subtitle: str = "") -> Path:
    """learning_curve.png (and .pdf): ``learning_curve_figure``."""
    return _save(learning_curve_figure(curves, title, subtitle), path, dpi=150)


def confusion_figure(cm: np.ndarray, classes, title: str = "", n_runs: int | None = None, subtitle: str = ""):
    """Row-normalised confusion matrix (true x predicted; each row sums to 1) with the counts in each cell, a
    colorbar, and a caption saying how many runs' test predictions it sums; paper font sizes."""
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(max(4.8, 0.95 * k + 2.6), max(4.2, 0.95 * k + 1.9)))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class's test utterances")
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{norm[i, j]:.2f}\n({cm[i, j]})", ha="center", va="center",
                        fontsize=9 if k <= 7 else 7, color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=45, ha="right")
        ax.set_yticks(range(k), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title + (f"\n{subtitle}" if subtitle else ""), fontsize=12)
        runs = f"summed over {n_runs} runs" if n_runs else "summed over the runs"
        fig.text(0.5, 0.01, f"Rows normalised (share, count in brackets); test predictions {runs}.", ha="center",
                 va="bottom", fontsize=9)
        fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


def plot_confusion(cm: np.ndarray, classes, path: str | Path, title: str = "",
                   n_runs: int | None = None, subtitle: str = "") -> Path:
    """confusion.png (and confusion.pdf): ``confusion_figure``."""
    return _save(confusion_figure(cm, classes, title, n_runs, subtitle), path, dpi=150)


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
    return _save(fig, path)
