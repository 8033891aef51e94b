"""The teacher MLP of rewards r3-r5: trained (plain, or with RRPO's regularisers: trainer.robust), saved with
--save-teacher, loaded with --teacher-from, and the teacher-agreement columns of a teacher-rewarded run's rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from trainer.algorithms.supervised import train_supervised
from trainer.data import DataError, pad_rows
from trainer.devices import place_module
from trainer.metrics import scores
from trainer.models import StackedAdam, StackedMLP
from trainer.robust import REGULARIZERS, Regularization, train_robust

MIX_SEED_OFFSET = 89
"""Teacher seed + this seeds each run's EAM draws (their own stream: the batches stay those of the plain teacher)."""
FORMAT = "trainer-teacher/1"
"""teacher.json's format tag."""
TENSORS = ("w1", "b1", "w2", "b2", "mu", "inv_sd", "query")
"""The stacked tensors of teacher.safetensors (StackedMLP parameters, input standardisation buffers and, with
--head attention, the attention query)."""


def teacher_settings(cfg) -> dict:
    """The settings that make a teacher (besides its training rows and seeds, checked by fingerprint): a saved
    teacher is used by --teacher-from only where these are equal. Regulariser parameters count only when on."""
    on = cfg.regularizers
    out = {k: getattr(cfg, k) for k in ("teacher", "dataset", "labels", "hidden", "lr", "batch_size", "weight_decay",
                                        "epochs_baseline")}
    out.update(normalization=cfg.normalization, regularize=",".join(on))
    if cfg.head != "pooled":  # teachers saved before --head existed were pooled ones
        out["head"] = cfg.head
    out.update({k: getattr(cfg, k) for reg in on for k in REGULARIZERS[reg].params})
    return out


def fingerprint(data, r: int, cfg, bank=None) -> str:
    """SHA-256 of what run r's teacher learns from: its labelled rows' teacher features and labels in batch
    order, the training rows' features with --normalize global (standardisation statistics), and with EAM the
    frames of the labelled rows."""
    h = hashlib.sha256()
    lab = data.labeled[r]
    h.update(data.Xt[lab].cpu().contiguous().numpy().tobytes())
    h.update(data.y[lab].cpu().numpy().astype(np.int64).tobytes())
    if cfg.normalization == "global":
        h.update(data.Xt[data.train_all[r]].cpu().contiguous().numpy().tobytes())
    if bank is not None:
        for i in lab.tolist():
            h.update(bank.frames(i).contiguous().numpy().tobytes())
    return h.hexdigest()


def fit_teacher(cfg, data, seeds: list[int], log=None, stage: str = "supervised") -> StackedMLP:
    """Each run's teacher MLP on its labelled rows of data.Xt, initialised and batched from ``seeds`` (one per
    run): plain cross-entropy (the paper) or train_robust with --regularize; from --teacher-from instead when
    given; written to --save-teacher when given. With ``log``, its epochs are logged as stage ``stage``. It lives
    on data.Xt's device."""
    device = data.Xt.device
    if cfg.teacher_from:
        teacher = place_module(load_teacher(cfg.teacher_from, cfg, data), device)
    else:
        teacher = place_module(StackedMLP.from_seeds(seeds, data.Xt.shape[-1], len(data.classes), cfg.hidden,
                                                     head=cfg.head), device)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        if cfg.normalization == "global":
            teacher.standardize(data.Xt, data.train_all)
        opt = StackedAdam(teacher.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        if log is not None:
            log.begin(stage, teacher, cfg.epochs_baseline)
        reg = Regularization.of(cfg)
        if not cfg.regularizers:
            train_supervised(teacher, opt, data.Xt, data.y, data.labeled, cfg.epochs_baseline, cfg.batch_size, gens,
                             log)
        else:
            train_robust(teacher, opt, data.Xt, data.y, data.labeled, cfg.epochs_baseline, cfg.batch_size, gens,
                         len(data.classes), reg, data.teacher_frames,
                         [torch.Generator().manual_seed(s + MIX_SEED_OFFSET) for s in seeds], log)
    if cfg.save_teacher:
        save_teacher(cfg.save_teacher, teacher, cfg, data)
    return teacher


def _runs(cfg, data) -> list[dict]:
    bank = data.teacher_frames if "eam" in cfg.regularizers else None
    return [{"fold": info["fold"], "seed": info["seed"], "fingerprint": fingerprint(data, r, cfg, bank)}
            for r, info in enumerate(data.runs)]


def save_teacher(folder: str | Path, teacher: StackedMLP, cfg, data) -> Path:
    """``folder``/teacher.safetensors (the stacked tensors, one member per run) and teacher.json (format, the
    teacher settings, classes, standardisation flag, and per member its fold, seed and training fingerprint)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"--save-teacher {folder}: a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in dict(teacher.named_parameters(), mu=teacher.mu,
                                                         inv_sd=teacher.inv_sd).items() if k in TENSORS}
    save_file(state, str(folder / "teacher.safetensors"))
    meta = {"format": FORMAT, "settings": teacher_settings(cfg), "classes": list(data.classes),
            "standardized": bool(teacher.standardized), "runs": _runs(cfg, data)}
    (folder / "teacher.json").write_text(json.dumps(meta, indent=2))
    return folder


HEX64 = frozenset("0123456789abcdef")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:60] + "..."


def _check_meta(meta, where: str) -> None:
    """teacher.json's schema: format, settings (object), classes (strings), standardized (bool), runs (objects with
    integer fold and seed, a SHA-256 fingerprint, each (fold, seed) once); DataError naming ``where``."""
    if not isinstance(meta, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise DataError(f"{where}: format {str(meta.get('format'))[:40]!r}, expected {FORMAT!r} (write it with "
                        "--save-teacher)")
    kinds = {"settings": dict, "classes": list, "standardized": bool, "runs": list}
    for key, kind in kinds.items():
        if not isinstance(meta.get(key), kind):
            raise DataError(f"{where}: {key} must be a JSON {kind.__name__.replace('dict', 'object')}, got "
                            f"{type(meta.get(key)).__name__}")
    if not all(isinstance(c, str) for c in meta["classes"]):
        raise DataError(f"{where}: classes must be strings")
    seen = set()
    for i, r in enumerate(meta["runs"]):
        ok = isinstance(r, dict) and all(isinstance(r.get(k), int) and not isinstance(r.get(k), bool)
                                         for k in ("fold", "seed"))
        fp = r.get("fingerprint") if isinstance(r, dict) else None
        if not ok or not isinstance(fp, str) or len(fp) != 64 or not set(fp) <= HEX64:
            raise DataError(f"{where}: runs[{i}] must be {{\"fold\": int, \"seed\": int, \"fingerprint\": "
                            "64 hex digits}")
        if (r["fold"], r["seed"]) in seen:
            raise DataError(f"{where}: runs[{i}] repeats fold {r['fold']} seed {r['seed']}")
        seen.add((r["fold"], r["seed"]))
    if not meta["runs"]:
        raise DataError(f"{where}: no runs")


def teacher_shapes(m: int, d: int, h: int, c: int, head: str) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor of teacher.safetensors for M runs, input dim D, hidden H, C classes, ``head``."""
    feat = (d,) if head == "pooled" else (1, d)
    shapes = {"w1": (m, d, h), "b1": (m, 1, h), "w2": (m, h, c), "b2": (m, 1, c), "mu": (m, 1, *feat),
              "inv_sd": (m, 1, *feat)}
    if head == "attention":
        shapes["query"] = (m, d)
    return shapes


def _read_tensors(path: Path, want: dict[str, tuple[int, ...]], where: str) -> dict[str, torch.Tensor]:
    """teacher.safetensors checked from its header (names, float32, shapes) before any tensor is read, then for
    finite values; DataError naming ``where``."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: (f.get_slice(k).get_dtype(), tuple(f.get_slice(k).get_shape())) for k in f.keys()}
            if set(header) != set(want):
                raise DataError(f"{where}: holds tensors {sorted(header)}, expected {sorted(want)} (a teacher saved "
                                "with another --head, or not by --save-teacher)")
            bad = [f"{k} {dt} {list(sh)} (expected F32 {list(want[k])})" for k, (dt, sh) in sorted(header.items())
                   if dt != "F32" or sh != want[k]]
            if bad:
                raise DataError(f"{where}: " + "; ".join(bad) + " for this run's dims, hidden size, classes and "
                                "runs")
            t = {k: f.get_tensor(k) for k in want}
    except DataError:
        raise
    except Exception as e:  # safetensors raises its own error types for a damaged header or data
        raise DataError(f"{where}: not a readable safetensors file ({type(e).__name__}: "
                        f"{(str(e).splitlines() or [''])[0][:160]})") from None
    nonfinite = [k for k, v in t.items() if not torch.isfinite(v).all()]
    if nonfinite:
        raise DataError(f"{where}: NaN or infinite values in {', '.join(nonfinite)}; a damaged teacher (train it "
                        "again with --save-teacher)")
    return t


def load_teacher(folder: str | Path, cfg, data) -> StackedMLP:
    """The teacher saved in ``folder`` for this run's (fold, seed) runs, checked to be the one it would train:
    equal teacher settings and classes, and each run's training fingerprint; a DataError says what differs.

    The folder may come from someone else: teacher.json and teacher.safetensors must be regular files (no links,
    FIFOs or devices) within :class:`emocache.inputs.InputLimits`; teacher.json is depth-bounded and checked
    against its schema; the tensors' names, dtype and shapes are checked from the safetensors header before they
    are read, and NaN/inf values are refused.
    """
    from emocache.inputs import LIMITS, InputError, check_file, load_json

    folder = Path(folder)
    where = f"--teacher-from {folder}"
    jpath, tpath = folder / "teacher.json", folder / "teacher.safetensors"
    if not folder.is_dir() or not any(p.exists() or p.is_symlink() for p in (jpath, tpath)):
        raise DataError(f"{where}: no teacher.json + teacher.safetensors here (write them with --save-teacher)")
    try:
        meta = load_json(jpath, "--teacher-from", links=False)
        check_file(tpath, LIMITS.teacher_bytes, "--teacher-from", links=False)
    except InputError as e:
        raise DataError(str(e)) from None
    jwhere = f"--teacher-from {jpath}"
    _check_meta(meta, jwhere)
    want = json.loads(json.dumps(teacher_settings(cfg)))
    diff = sorted(k for k in set(want) | set(meta["settings"]) if want.get(k) != meta["settings"].get(k))
    if diff:
        raise DataError(f"{jwhere}: saved with other teacher settings: " + ", ".join(
            f"{k} {_short(meta['settings'].get(k))} (this run: {want.get(k)!r})" for k in diff[:8]))
    if meta["classes"] != list(data.classes):
        raise DataError(f"{jwhere}: classes {meta['classes'][:20]} != this run's {list(data.classes)}")
    saved = {(r["fold"], r["seed"]): (i, r["fingerprint"]) for i, r in enumerate(meta["runs"])}
    members = []
    for run in _runs(cfg, data):
        key = (run["fold"], run["seed"])
        if key not in saved:
            raise DataError(f"{where}: no teacher for fold {key[0]} seed {key[1]} (saved: {sorted(saved)[:20]})")
        i, fp = saved[key]
        if fp != run["fingerprint"]:
            raise DataError(f"{where}: the teacher of fold {key[0]} seed {key[1]} was trained on other rows or "
                            "features (fingerprint differs: other store entry, split, fraction or validation rows)")
        members.append(i)
    shapes = teacher_shapes(len(meta["runs"]), data.Xt.shape[-1], cfg.hidden, len(data.classes), cfg.head)
    t = _read_tensors(tpath, shapes, f"--teacher-from {tpath}")
    pick = torch.as_tensor(members)
    teacher = StackedMLP(t["w1"][pick], t["b1"][pick], t["w2"][pick], t["b2"][pick], head=cfg.head)
    if teacher.query is not None:
        teacher.query.data.copy_(t["query"][pick])
    teacher.mu.copy_(t["mu"][pick])
    teacher.inv_sd.copy_(t["inv_sd"][pick])
    teacher.standardized = meta["standardized"]
    teacher.requires_grad_(False)
    return teacher


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows where two predictions agree; NaN on no rows."""
    return float((np.asarray(a) == np.asarray(b)).mean()) if len(a) else float("nan")


def teacher_agreement_columns(y: dict[str, np.ndarray], teacher_pred: dict[str, np.ndarray],
                              policy_pred: dict[str, np.ndarray]) -> dict[str, float]:
    """How far a teacher-rewarded policy follows its teacher (ours), for one run: per split s of 'val' and 'test'
    (labelled, held out of training) teacher_{s}_acc / teacher_{s}_macro_f1 (the teacher against the labels),
    policy_{s}_acc, teacher_agreement_{s} (share of rows where the policy predicts the teacher's class) and
    teacher_error_agreement_{s} (among the rows the teacher gets wrong, the share where the policy predicts the
    teacher's wrong class: agreement with the teacher's errors; NaN where it makes none); on 'pool' (the
    unlabelled rows the reward was paid on) teacher_agreement_pool. A split without rows gives NaN.

    They measure agreement, not reward hacking in RRPO's sense: the teacher scores fixed features, and the
    policy's label cannot change what the teacher sees, so a policy cannot fool it; it can only copy its errors."""
    out = {}
    for s in ("val", "test"):
        yt, tp, pp = y.get(s, ()), teacher_pred.get(s, ()), policy_pred.get(s, ())
        ok = len(yt) > 0
        ts = scores(yt, tp) if ok else {}
        out[f"teacher_{s}_acc"] = ts.get("wa", float("nan"))
        out[f"teacher_{s}_macro_f1"] = ts.get("macro_f1", float("nan"))
        out[f"policy_{s}_acc"] = agreement(pp, yt) if ok else float("nan")
        out[f"teacher_agreement_{s}"] = agreement(pp, tp) if ok else float("nan")
        wrong = np.asarray(tp) != np.asarray(yt) if ok else np.zeros(0, dtype=bool)
        out[f"teacher_error_agreement_{s}"] = agreement(np.asarray(pp)[wrong], np.asarray(tp)[wrong]) \
            if ok else float("nan")
    out["teacher_agreement_pool"] = agreement(policy_pred.get("pool", ()), teacher_pred.get("pool", ()))
    return out


def split_rows(data) -> dict[str, list[np.ndarray]]:
    """Per split ('val', 'test' of X; 'pool' of Xu), each run's rows."""
    pools = {"test": data.test, "pool": [p.numpy() for p in data.unlabeled]}
    if data.val and any(len(v) for v in data.val):
        pools["val"] = data.val
    return pools


@torch.no_grad()
def predictions(model: StackedMLP, data, teacher: bool) -> dict[str, list[np.ndarray]]:
    """Each run's predicted classes on every split of :func:`split_rows`: the teacher on data.Xt / Xtu, or the
    policy on data.X / Xu."""
    out = {}
    for s, rows in split_rows(data).items():
        X = (data.Xtu if s == "pool" else data.Xt) if teacher else (data.Xu if s == "pool" else data.X)
        if not any(len(p) for p in rows):
            continue
        idx, _ = pad_rows(rows)
        pred = model.predict(X, idx).argmax(-1).cpu().numpy()  # (M, T)
        out[s] = [pred[r, :len(p)] for r, p in enumerate(rows)]
    return out


__all__ = ["fit_teacher", "save_teacher", "load_teacher", "teacher_settings", "fingerprint", "teacher_agreement_columns",
           "predictions", "split_rows", "agreement", "MIX_SEED_OFFSET"]
