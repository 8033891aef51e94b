"""Writing results: a trained context's rows (scores, health, every hashed setting), confusion matrices and
per-utterance predictions, and the run folder (results.csv/json, curves.csv, predictions.csv, figures, models)."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from trainer import __version__
from trainer.config import TrainConfig
from trainer.context import Context, Snapshot
from trainer.data import DataError
from trainer.devices import describe
from trainer.diagnostics import collapse_onset, under_trained
from trainer.metrics import confusion, scores
from trainer.models import StackedMLP, save_members
from trainer.prepare import Prepared
from trainer.teachers import predictions, teacher_agreement_columns


@dataclass
class Result:
    cfg: TrainConfig
    rows: list[dict]
    curves: list[dict]
    confusions: dict  # stage -> (C, C) summed over runs
    classes: tuple[str, ...]
    provenance: dict
    seconds: float
    seconds_load: float
    eval_seconds: dict = field(default_factory=dict)
    """Seconds spent evaluating each per-epoch set (test, pool diagnostics, val), inside ``seconds``."""
    layer_weights: dict = field(default_factory=dict)
    """--layer weighted: {'layers': stored layer ids, 'runs': [{fold, seed, weights (L,)}]} of the reported model."""
    predictions: object = None
    """predictions.csv: a DataFrame, per stage, run and test utterance (see ``stage_predictions``)."""
    policy: StackedMLP | None = None
    """The model the final rows report (its member r is run ``members[r]``), for --save-model."""
    members: list = field(default_factory=list)
    """[{fold, seed}] of each member of ``policy``, in order."""
    device: str = "cpu"
    """Where the runs computed (trainer.devices.describe: 'cpu (2 threads)', 'cuda:0 (NVIDIA H200)')."""


def check_out(cfg: TrainConfig) -> Path:
    """The run's output folder; a file in the way, or results of this exact configuration already there (unless
    --overwrite), is an error before any training."""
    d = Path(cfg.out) / cfg.run_name
    for p in (Path(cfg.out), d):
        if p.exists() and not p.is_dir():
            raise DataError(f"--out {cfg.out}: {p} is a file, not a folder; give a folder path")
    if not cfg.overwrite and any((d / f).exists() for f in ("results.csv", "results.json")):
        raise DataError(f"{d} already holds the results of this exact configuration; pass --overwrite to rerun "
                        "it, or change --out")
    return d


def collect(ctx: Context, final: StackedMLP, seconds: float, seconds_load: float) -> Result:
    """The Result of a trained context: rows and confusions of every reported stage and companion model,
    predictions, layer weights and the reported model."""
    cfg, data, log = ctx.cfg, ctx.data, ctx.log
    lw = final.layer_weights()
    layer_weights = {} if lw is None else {
        "layers": data.layer_ids,
        "runs": [{"fold": info["fold"], "seed": info["seed"], "weights": lw[r].tolist()}
                 for r, info in enumerate(data.runs)]}
    rows, confusions = [], {}
    for stage, snap in ctx.snapshots.items():
        stage_rows, confusions[stage] = _stage_rows(ctx, stage, snap, seconds)
        rows += stage_rows
    for name, per_run in ctx.companions.items():
        rows += _companion_rows(ctx, name, per_run, seconds)
    preds = pd.concat([stage_predictions(ctx, stage, snap) for stage, snap in ctx.snapshots.items()],
                      ignore_index=True)
    return Result(cfg, rows, log.rows, confusions, data.classes, data.provenance, seconds, seconds_load,
                  dict(log.eval_seconds), layer_weights, preds, _reported_model(ctx, final),
                  [{"fold": r["fold"], "seed": r["seed"]} for r in data.runs], describe(ctx.device))


def _reported_model(ctx: Context, final: StackedMLP) -> StackedMLP:
    """The model the 'final' rows report: ``final``, or with --select val (and --save-model, which keeps them)
    its weights at each run's best-validation epoch."""
    sel = ctx.log.selected.get(ctx.snapshots["final"].log_stage)
    if not ctx.cfg.selects_val or sel is None or sel.weights is None:
        return final
    model = final.frozen_copy()
    model.load_state_dict(sel.weights)
    return model


def stage_predictions(ctx: Context, stage: str, snap: Snapshot) -> pd.DataFrame:
    """predictions.csv rows of one reported stage: per run (fold, seed) and test utterance, its key, true and
    predicted class names and the class probabilities p_<class> of the model the stage's rows report (the
    best-validation epoch's with --select val). Keys come from the row index modulo the entry's size, so they
    stay aligned under --normalize speaker (one copy of the rows per fold)."""
    cfg, data = ctx.cfg, ctx.data
    sel = ctx.log.selected.get(snap.log_stage)
    use_sel = cfg.selects_val and sel is not None
    pred, prob = (sel.test_pred, sel.test_prob) if use_sel else (snap.test_pred, snap.test_prob)
    pred, prob, y = pred.cpu(), prob.cpu(), data.y.cpu()
    names, keys = np.asarray(data.classes), np.asarray(data.keys)
    frames = []
    for r, info in enumerate(data.runs):
        rows = np.asarray(data.test[r])
        n = len(rows)
        frames.append(pd.DataFrame({
            "stage": stage, "fold": info["fold"], "seed": info["seed"], "key": keys[rows % len(keys)],
            "true": names[y[rows].numpy()], "pred": names[pred[r, :n].numpy()],
            **{f"p_{c}": prob[r, :n, i].numpy() for i, c in enumerate(data.classes)}}))
    return pd.concat(frames, ignore_index=True)


def _stage_rows(ctx: Context, stage: str, snap: Snapshot, seconds: float) -> tuple[list[dict], np.ndarray]:
    """Result rows of one reported stage (last and validation-selected numbers, oracle, health) and the summed
    confusion matrix of what the rows report."""
    cfg, data, log = ctx.cfg, ctx.data, ctx.log
    sel, oracle = log.selected.get(snap.log_stage), log.oracle.get(snap.log_stage)
    use_sel = cfg.selects_val and sel is not None
    n = sum(e <= snap.epoch for e in log.collapse_epochs)
    col, onset = collapse_onset(log.collapse_flags[:n], log.collapse_run_epochs[:n])
    health = {k: v.tolist() for k, v in log.health_at(snap.epoch).items()}  # read back once, not per run
    sel_epoch, sel_score = (sel.epoch.tolist(), sel.score.tolist()) if use_sel else (None, None)
    oracle_epoch, oracle_score = (oracle.epoch.tolist(), oracle.score.tolist()) if oracle is not None else (None, None)
    reach = unlabelled_reach(log, snap.log_stage)
    trained = _trained_epochs(ctx, stage, snap)
    losses = log.losses.get("supervised", [])
    agree = _teacher_agreement(ctx, snap)
    rows, cm = [], np.zeros((len(data.classes),) * 2, dtype=np.int64)
    for r, info in enumerate(data.runs):
        n = len(data.test[r])
        yt = data.y[data.test[r]].cpu().numpy()
        last = scores(yt, snap.test_pred[r, :n].numpy(), ctx.S)
        pred = (sel.test_pred if use_sel else snap.test_pred)[r, :n].cpu().numpy()
        cm += confusion(yt, pred, len(data.classes))
        rows.append({
            **_row(cfg, stage, info, scores(yt, pred, ctx.S) if use_sel else last, data, r, seconds),
            "select": "val" if cfg.selects_val else "last",
            "selected_epoch": sel_epoch[r] if use_sel else snap.epoch,
            "val_macro_f1": sel_score[r] if use_sel else float("nan"),
            **{f"last_{k}": v for k, v in last.items()},
            "oracle_macro_f1": oracle_score[r] if oracle is not None else float("nan"),
            "oracle_epoch": oracle_epoch[r] if oracle is not None else -1,
            "collapsed": bool(col[r]) if col else False, "collapse_epoch": onset[r] if col else -1,
            "under_predicted": bool(health["under_predicted"][r]) if "under_predicted" in health else False,
            "pool_agreement_stage1": float(health["agreement"][r]) if "agreement" in health else float("nan"),
            **{k: v[r] for k, v in reach.items()},
            "train_loss": _last_loss(log.losses[snap.log_stage], r),
            "train_macro_f1": float(snap.train_f1[r]),
            "under_trained": (not cfg.algorithm.own_validation and cfg.stop_rule is None
                              and under_trained([e[r] for e in losses])),
            **({"epochs": int(trained[r])} if trained is not None else {}),
            **(agree(r) if agree else {}),
            **(ctx.row_columns[stage][r] if stage in ctx.row_columns else {}),
        })
    return rows, cm


def unlabelled_reach(log, stage: str) -> dict[str, list[float]]:
    """Per run, the reach of a thresholded unlabelled term in ``stage`` (a method logging ``mask_rate``, the share
    of pool samples passing its confidence threshold): its mean over the stage's epochs (``mask_rate``) and its
    largest epoch value (``mask_rate_max``); NaN for methods without one."""
    curves = [c for c in log.rows if c["stage"] == stage]
    m = len(log.runs)
    if not curves or "mask_rate" not in curves[0]:
        return {"mask_rate": [float("nan")] * m, "mask_rate_max": [float("nan")] * m}
    per_run = [[c["mask_rate"] for c in curves if (c["fold"], c["seed"]) == (run["fold"], run["seed"])
                and not math.isnan(c["loss"])] for run in log.runs]
    return {"mask_rate": [float(np.mean(v)) if v else float("nan") for v in per_run],
            "mask_rate_max": [float(np.max(v)) if v else float("nan") for v in per_run]}


def _trained_epochs(ctx: Context, stage: str, snap: Snapshot) -> torch.Tensor | None:
    """Under a protocol that stops on validation, each run's epochs trained up to ``snap`` (M,); None otherwise
    (the 'epochs' column is then the configured count)."""
    if ctx.cfg.stop_rule is None:
        return None
    stages = list(ctx.log.trained)
    upto = stages[:stages.index(snap.log_stage) + 1]
    return sum(ctx.log.trained[s] for s in upto)


def _last_loss(losses: list[list[float]], r: int) -> float:
    """Run r's mean loss in the last epoch it trained (its stage may have stopped earlier than others')."""
    values = [e[r] for e in losses if not math.isnan(e[r])]
    return values[-1] if values else float("nan")


def _teacher_agreement(ctx: Context, snap: Snapshot):
    """Run r -> its teacher-agreement columns (trainer.teachers.teacher_agreement_columns) where the stage's
    model was rewarded by a teacher; None otherwise."""
    if not (snap.split_pred and ctx.teacher is not None):
        return None
    data = ctx.data
    t_pred = predictions(ctx.teacher, data, teacher=True)
    y_split = {s: [data.y[torch.as_tensor(p)].cpu().numpy() for p in rows_] for s, rows_ in
               (("test", data.test), ("val", data.val))}
    return lambda r: teacher_agreement_columns({s: v[r] for s, v in y_split.items() if s in t_pred},
                                     {s: v[r] for s, v in t_pred.items()},
                                     {s: v[r] for s, v in snap.split_pred.items()})


def _companion_rows(ctx: Context, name: str, per_run: list, seconds: float) -> list[dict]:
    """Final rows of a companion model (method ``name``): its test scores, no epochs, selection or health."""
    data, rows = ctx.data, []
    for r, (pred, fit) in enumerate(per_run):
        s_ = scores(data.y[data.test[r]].cpu().numpy(), pred, ctx.S)
        rows.append({**_row(ctx.cfg, "final", data.runs[r], s_, data, r, seconds), "method": name,
                     "select": "", "selected_epoch": -1, "val_macro_f1": float("nan"),
                     **{f"last_{k}": v for k, v in s_.items()}, "oracle_macro_f1": s_["macro_f1"],
                     "oracle_epoch": -1, "collapsed": False, "collapse_epoch": -1, "under_predicted": False,
                     **fit, "under_trained": False})
    return rows


def _row(cfg: TrainConfig, stage: str, info: dict, s: dict, data: Prepared, r: int, seconds: float) -> dict:
    """One result row: the run's identity, scores and counts, then every hashed setting (TrainConfig.settings, so
    fields added later are carried too) not already a column (seeds joined by commas), and config_hash."""
    method = cfg.algorithm
    ids = method.columns(cfg)
    row = {
        "experiment": cfg.experiment, "method": cfg.method, "stage": stage, "model": cfg.model,
        "dataset": cfg.dataset, "fold": info["fold"], "seed": info["seed"],
        **{k: ids[k] for k in ("reward", "teacher", "advantage", "balance", "sup_weight", "penalty_value")},
        "layer": cfg.layer, "normalize": cfg.normalization, "head": cfg.head,
        "labels": cfg.labels, "unlabeled_from": ids["unlabeled_from"], "labeled_fraction": ids["labeled_fraction"],
        "macro_f1": s["macro_f1"], "ua": s["ua"], "wa": s["wa"], "wheel": s["wheel"],
        "n_train_labeled": len(method.train_rows(data)[r]),
        "n_val": len(data.val[r]) if data.val else 0,
        "n_unlabeled": len(data.unlabeled[r]) if method.unlabeled else 0,
        "n_test": len(data.test[r]), "n_dropped": info["n_dropped"], "n_missing": info["n_missing"],
        "missing_train_classes": info["missing_train_classes"],
        "missing_test_classes": info["missing_test_classes"], "views": info["views"],
        "epochs": cfg.epochs_baseline if stage == "stage1" else method.epochs(cfg),
        "seconds": seconds,
    }
    settings = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in cfg.settings().items()}
    return {**row, **{k: v for k, v in settings.items() if k not in row}, "config_hash": cfg.config_hash}


def write(result: Result, out: str | Path | None = None) -> Path:
    """results.csv (tidy rows), results.json (full config, environment, provenance, rows), curves.csv,
    predictions.csv, figures (PNG + PDF), and with --save-model the policy weights under model/."""
    cfg = result.cfg
    d = Path(out) / cfg.run_name if out else check_out(cfg)
    d.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.rows).to_csv(d / "results.csv", index=False)
    curves = [{"method": cfg.method, "model": cfg.model, **c} for c in result.curves]
    pd.DataFrame(curves).to_csv(d / "curves.csv", index=False)
    meta = {
        "config": cfg.to_dict(), "classes": list(result.classes), "rows": result.rows,
        "confusion": {k: v.tolist() for k, v in result.confusions.items()},
        "seconds": result.seconds, "seconds_load": result.seconds_load, "eval_seconds": result.eval_seconds,
        "provenance": result.provenance,
        **({"layer_weights": result.layer_weights} if result.layer_weights else {}),
        "environment": {"trainer": __version__, "torch": torch.__version__, "python": platform.python_version(),
                        "threads": torch.get_num_threads(), "machine": platform.machine(),
                        "device": result.device},
    }
    (d / "results.json").write_text(json.dumps(meta, indent=2, default=str))
    if result.predictions is not None:
        result.predictions.to_csv(d / "predictions.csv", index=False)
    if cfg.save_model and result.policy is not None:
        save_members(result.policy, result.members, d / "model", {
            "config": cfg.to_dict(), "classes": list(result.classes), "layers": result.layer_weights.get("layers", []),
            "weights_of": "the model the final rows of results.csv and predictions.csv report (with --select val "
                          "each run's best-validation epoch)"})
    if cfg.plots:
        _plot(result, curves, d)
    return d


FIGURES = ("learning_curve", "confusion", "diagnostics")
"""The figures of a run folder (each .png and .pdf): the paper's learning curve and confusion matrix, and the
diagnostic dashboard; layer_weights too with --layer weighted."""


def _plot(result: Result, curves: list[dict], d: Path) -> None:
    """The run's figures (FIGURES, matplotlib imported here)."""
    n_runs = sum(r["stage"] == "final" and r["method"] == result.cfg.method for r in result.rows)
    draw_figures(result.cfg, curves, result.confusions["final"], result.classes, n_runs, d, result.layer_weights)


def draw_figures(cfg: TrainConfig, curves: list[dict], cm: np.ndarray, classes, n_runs: int, d: Path,
                 layer_weights: dict | None = None, diagnostics: bool = True) -> list[Path]:
    """learning_curve, confusion (titled with method, dataset and features: plots.run_titles) and diagnostics
    (the dashboard) as PNG + PDF in ``d``; layer_weights with learnt layer weights."""
    from trainer.plots import plot_confusion, plot_curves, plot_layer_weights, plot_learning_curve, run_titles

    title, subtitle = run_titles(cfg)
    paths = [plot_learning_curve(curves, d / "learning_curve.png", title, subtitle),
             plot_confusion(cm, classes, d / "confusion.png", title=title, n_runs=n_runs, subtitle=subtitle)]
    if diagnostics:
        paths.append(plot_curves(curves, d / "diagnostics.png", title=f"{title}: training diagnostics ({subtitle})",
                                 footer=f"Run folder {cfg.run_name}."))
    if layer_weights:
        paths.append(plot_layer_weights(layer_weights, d / "layer_weights.png", title=title))
    return paths


def replot(folder: str | Path, out: str | Path | None = None, diagnostics: bool = False) -> list[Path]:
    """`trainer plot`: the figures of a written run folder again, from its curves.csv and results.json (runs written
    before these figures existed too), into ``out`` (default: the folder itself)."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "results.json").read_text())
        curves = pd.read_csv(folder / "curves.csv").to_dict("records")
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}: not a run folder of `trainer run` (needs results.json and curves.csv): "
                        f"{type(e).__name__}") from None
    cfg = config_of(meta.get("config", {}))
    d = Path(out) if out else folder
    d.mkdir(parents=True, exist_ok=True)
    cm = np.asarray(meta["confusion"]["final"])
    n_runs = sum(r.get("stage") == "final" and r.get("method") == cfg.method for r in meta.get("rows", []))
    return draw_figures(cfg, curves, cm, meta["classes"], n_runs, d, meta.get("layer_weights"), diagnostics)


def config_of(config: dict) -> TrainConfig:
    """The TrainConfig of a results.json 'config' (the shared settings and its method's options); a DataError
    when the method or a setting is unknown here."""
    from trainer.config import SHARED, method_options

    try:
        method = config["method"]
        kw = {k: v for k, v in config.items() if k in SHARED or k in method_options(method)}
        kw["seeds"] = tuple(kw.get("seeds", (0,)))
        return TrainConfig(method, **kw)
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"results.json config: {e}") from None
