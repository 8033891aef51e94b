"""`trainer bench`: the stacked whole-tensor b-grpo run beside straightforward per-sample DataLoader loops
(EmoBox style: one fold at a time, torch DataLoader, nn.Module, evaluation with scikit-learn every epoch),
same protocol and same prepared data, in one process. The DataLoader loop runs twice: reading rows of an
in-memory tensor, and reading one ``.npy`` file per utterance per epoch as EmoBox's training script does
(``np.load(feat_dir/<id>.npy)`` in its data pipeline; here the file holds the pooled vector).

With ``--device cuda`` every stacked row is timed on the GPU and on the CPU in the same run (same prepared data,
the GPU warmed up untimed first); ``--grid`` times the paper's Table-1 methods instead of b-grpo (and grpo),
``--quick`` cuts the epochs (the per-epoch cost is the same: the report says it is reduced). ``--agreement``
(instead) checks that CPU and device runs give the same rows on a small configuration of every method."""

from __future__ import annotations

import copy
import tempfile
import time
import warnings

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from emocache.runtime import markdown_table
from trainer import devices, experiment
from trainer.algorithms.bgrpo import advantage, bgrpo_loss
from trainer.algorithms.supervised import train_supervised
from trainer.config import TrainConfig
from trainer.frames import FRAME_PAD
from trainer.metrics import scores
from trainer.models import PolicyMLP, StackedAdam, StackedMLP
from trainer.rewards import reward
from trainer.synthetic import make_dataset


class Rows(Dataset):
    """One utterance per item, as a per-sample training script would read it."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, rows):
        self.X, self.y, self.rows = X, y, [int(r) for r in rows]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        r = self.rows[i]
        return self.X[r], self.y[r]


class NpyRows(Rows):
    """One utterance per item, its features read from ``<folder>/<row>.npy`` on every access (EmoBox)."""

    def __init__(self, folder: str, y: torch.Tensor, rows):
        self.folder, self.y, self.rows = folder, y, [int(r) for r in rows]

    def __getitem__(self, i):
        r = self.rows[i]
        return torch.FloatTensor(np.load(f"{self.folder}/{r}.npy")), self.y[r]


def write_npy(X: torch.Tensor, folder: str) -> str:
    """One float32 .npy file per row of X (as EmoBox's feature extraction leaves them)."""
    for r, x in enumerate(X.numpy()):
        np.save(f"{folder}/{r}.npy", x)
    return folder


def _evaluate(model, X, y, rows, batch_size, rows_cls=Rows) -> float:
    model.eval()
    preds, trues = [], []
    with torch.no_grad():
        for xb, yb in DataLoader(rows_cls(X, y, rows), batch_size=batch_size):
            preds.append(model(xb).argmax(-1).numpy())
            trues.append(yb.numpy())
    model.train()
    return scores(np.concatenate(trues), np.concatenate(preds))["macro_f1"]


def dataloader_bgrpo(cfg: TrainConfig, data: experiment.Prepared, npy: tuple[str, str] | None = None) -> list[float]:
    """The b-grpo protocol, one run after another, with a DataLoader per epoch; returns final macro-F1s.

    ``npy``: folders of per-row .npy files for X and Xu; items are then read from disk on every access.
    """
    rows_cls = NpyRows if npy else Rows
    X, Xu = npy if npy else (data.X, data.Xu)
    out = []
    reward_fn = lambda p: reward(cfg.reward, p, None, delta=cfg.delta, C=cfg.reward_value, theta=cfg.theta)  # noqa: E731
    for r in range(len(data.runs)):
        torch.manual_seed(data.init_seeds[r])
        model = PolicyMLP(data.X.shape[1], len(data.classes), cfg.hidden)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        loader = DataLoader(rows_cls(X, data.y, data.labeled[r]), batch_size=cfg.batch_size, shuffle=True)
        for _ in range(cfg.epochs_baseline):
            for xb, yb in loader:
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            _evaluate(model, X, data.y, data.test[r], 64, rows_cls)
        ref = copy.deepcopy(model).requires_grad_(False)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        loader = DataLoader(rows_cls(Xu, torch.zeros(len(data.Xu), dtype=torch.long), data.unlabeled[r]),
                            batch_size=cfg.batch_size, shuffle=True)
        for _ in range(cfg.epochs_stage2):
            for xb, _ in loader:
                logp_all = model(xb).log_softmax(-1)  # (B, C)
                with torch.no_grad():
                    p_old = logp_all.exp()
                    o = p_old.argmax(-1, keepdim=True)  # (B, 1)
                    adv = advantage(reward_fn(p_old), cfg.advantage)  # (B,)
                    logp_ref = ref(xb).log_softmax(-1).gather(-1, o).squeeze(-1)
                logp = logp_all.gather(-1, o).squeeze(-1)
                loss = bgrpo_loss(logp, logp.detach(), logp_ref, adv, cfg.epsilon, cfg.beta)
                opt.zero_grad()
                loss.backward()
                opt.step()
            _evaluate(model, X, data.y, data.test[r], 64, rows_cls)
        out.append(_evaluate(model, X, data.y, data.test[r], 64, rows_cls))
    return out


TABLE1_METHODS = ("baseline", "dino", "same-epochs", "full-labeled", "b-grpo")
"""The methods of the paper's Table 1 (pipelines/table1.toml's grid), in its order."""
QUICK_EPOCHS = 2
"""--quick: epochs of each stage (instead of the paper's 100 + 100); the data keeps its size."""


def _final_f1(res) -> float:
    return float(np.mean([r["macro_f1"] for r in res.rows if r["stage"] == "final" and r["method"] == res.cfg.method]))


def timed_run(cfg: TrainConfig, data) -> tuple[float, object]:
    """``experiment.run(cfg, data)`` and its wall seconds (a run's results are read back to the host before it
    returns, so a device's queued work is inside the time)."""
    t0 = time.perf_counter()
    res = experiment.run(cfg, data)
    return time.perf_counter() - t0, res


def summarise(report: dict) -> None:
    """The report's totals from its stacked rows so far: 'fast' (b-grpo on the device), 'grpo', and with a device
    other than the CPU 'device_vs_cpu' over the methods timed on both (all of them once the run is complete)."""
    main = {r["method"]: r for r in report["stacked"] if r["device"] == report["device"]}
    if "b-grpo" in main:
        report["fast"] = {"seconds": main["b-grpo"]["seconds"], "macro_f1_mean": main["b-grpo"]["macro_f1_mean"]}
        report["eval_seconds"] = main["b-grpo"]["eval_seconds"]
    if "grpo" in main:
        report["grpo"] = {"seconds": main["grpo"]["seconds"], "group_size": report["group_size"],
                          "macro_f1_mean": main["grpo"]["macro_f1_mean"]}
    cpu = {r["method"]: r["seconds"] for r in report["stacked"] if r["on_cpu"] and r["device"] != report["device"]}
    both = [m for m in report["methods"] if m in main and m in cpu]
    if both:
        dev_s, cpu_s = sum(main[m]["seconds"] for m in both), sum(cpu[m] for m in both)
        report["device_vs_cpu"] = {"methods": both, "complete": len(both) == len(report["methods"]),
                                   "device_seconds": dev_s, "cpu_seconds": cpu_s, "speedup": cpu_s / dev_s}


def bench(n: int = 5531, dim: int = 1280, folds: int = 5, epochs_baseline: int = 100, epochs_stage2: int = 100,
          seeds: tuple[int, ...] = (0,), threads: int = 0, store: str = "", model: str = "", dataset: str = "",
          manifests: str = "", slow: bool = True, npy: bool = True, separation: float = 0.06,
          val_fraction: float = 0.0, group_size: int = 8, device: str = "cpu", grid: bool = False,
          quick: bool = False, checkpoint=None) -> dict:
    """Time the loops on the same prepared data; synthetic IEMOCAP-shaped data unless a store entry is given.

    ``device``: where the stacked rows run; a CUDA device also times each of them on the CPU in the same run, method
    by method (the device's row, then the CPU's). ``grid``: time TABLE1_METHODS (the paper's Table-1 grid on this
    dataset) instead of b-grpo and grpo. ``quick``: QUICK_EPOCHS + QUICK_EPOCHS epochs and no DataLoader loops (a
    reduced run, reported as one). ``checkpoint(report)`` is called after each stacked row (the report so far: a
    caller with a deadline keeps the pairs finished)."""
    dev = devices.resolve(device)
    experiment.set_threads(threads)
    if quick:
        epochs_baseline = epochs_stage2 = QUICK_EPOCHS
        slow = npy = False
    tmp = None
    if not store:
        tmp = tempfile.TemporaryDirectory(prefix="trainer-bench-")
        store, manifests, model, dataset = f"{tmp.name}/store", f"{tmp.name}/manifests", "bench-model", "bench"
        make_dataset(store, manifests, model, dataset, n=n, dim=dim, n_folds=folds, separation=separation)
    cfg = TrainConfig(method="b-grpo", store=store, model=model, dataset=dataset, manifests=manifests,
                      seeds=tuple(seeds), epochs_baseline=epochs_baseline, epochs_stage2=epochs_stage2,
                      threads=threads, plots=False, progress=False, val_fraction=val_fraction, device=str(dev))
    t0 = time.perf_counter()
    data = experiment.prepare(cfg)
    t_load = time.perf_counter() - t0
    on = [dev] + ([torch.device("cpu")] if dev.type != "cpu" else [])
    methods = list(TABLE1_METHODS if grid else ["b-grpo"] + (["grpo"] if group_size else []))
    report = {
        "n": int(data.X.shape[0]), "dim": int(data.X.shape[1]), "classes": len(data.classes),
        "folds": len({r["fold"] for r in data.runs}), "seeds": list(seeds), "runs": len(data.runs),
        "epochs_baseline": epochs_baseline, "epochs_stage2": epochs_stage2,
        "epochs_total": cfg.epochs_total, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_seconds": t_load, "val_fraction": val_fraction, "quick": quick, "grid": grid, "methods": methods,
        "group_size": group_size, "device": devices.describe(dev), "devices": [devices.describe(d) for d in on],
        "stacked": [],
    }
    # untimed warm-up (1 + 1 epochs): a GPU's context, cuBLAS handles and allocator pools, and the host's first-call
    # costs (imports, scikit-learn's scorers) are paid here, not in a timing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        experiment.run(cfg.replace(epochs_baseline=1, epochs_stage2=1), data)
    for method in methods:
        mcfg = cfg.replace(method=method, **({"group_size": group_size} if method == "grpo" else {}))
        for d in on:
            with warnings.catch_warnings():
                if quick:  # a few epochs' runs are under-trained or collapsed by construction: not what is timed
                    warnings.simplefilter("ignore")
                seconds, res = timed_run(mcfg.replace(device=str(d)), data)
            report["stacked"].append({"method": method, "device": devices.describe(d), "on_cpu": d.type == "cpu",
                                      "seconds": seconds, "macro_f1_mean": _final_f1(res),
                                      "eval_seconds": res.eval_seconds})
            summarise(report)
            if checkpoint is not None:
                checkpoint(report)
    t_fast = report["fast"]["seconds"] if "fast" in report else float("nan")
    if slow:
        t0 = time.perf_counter()
        f1_slow = dataloader_bgrpo(cfg, data)
        t_slow = time.perf_counter() - t0
        report["dataloader"] = {"seconds": t_slow, "macro_f1_mean": float(np.mean(f1_slow))}
        report["speedup"] = t_slow / t_fast
    if npy:
        with tempfile.TemporaryDirectory(prefix="trainer-bench-npy-") as d:
            folders = (write_npy(data.X, tempfile.mkdtemp(dir=d)), write_npy(data.Xu, tempfile.mkdtemp(dir=d)))
            t0 = time.perf_counter()
            f1_npy = dataloader_bgrpo(cfg, data, npy=folders)
            t_npy = time.perf_counter() - t0
        report["dataloader_npy"] = {"seconds": t_npy, "macro_f1_mean": float(np.mean(f1_npy))}
        report["speedup_npy"] = t_npy / t_fast
    if tmp is not None:
        tmp.cleanup()
    return report


AGREEMENT_VARIANTS = (
    ("same-epochs --val-fraction 0.25 --select val", {"method": "same-epochs", "val_fraction": 0.25, "select": "val"}),
    ("full-labeled --standardize", {"method": "full-labeled", "standardize": True}),
    ("dino --dino-views noise --head attention", {"method": "dino", "dino_views": "noise", "head": "attention"}),
    ("b-grpo --action sample --mu 2 --sup-weight 0.5", {"method": "b-grpo", "action": "sample", "mu": 2,
                                                         "sup_weight": 0.5}),
    ("b-grpo --reward r3 (teacher)", {"method": "b-grpo", "reward": "r3", "teacher": "agree-t"}),
    ("grpo --group-size 4 --reward wheel", {"method": "grpo", "group_size": 4, "reward": "wheel",
                                            "teacher": "agree-t"}),
    ("teacher --regularize ls,adv", {"method": "teacher", "teacher": "agree-t", "regularize": "ls,adv"}),
    ("emobox --head emobox", {"method": "emobox", "labeled_fraction": 1.0, "head": "emobox"}),
    ("b-grpo --protocol converged (patience 2, at most 6 epochs)",
     {"method": "b-grpo", "protocol": "converged", "val_fraction": 0.25, "converge_patience": 2,
      "converge_max_epochs": 6}),
)
"""device_agreement's configurations beside each registered method at its defaults: the paths where views,
sampled actions, teachers, validation selection, a frame head and a stop rule draw or choose."""


def agreement_cases() -> list[tuple[str, dict]]:
    """Every registered method at its defaults (a teacher method with the teacher entry; the reference with at most
    20 epochs; emobox on every label), then AGREEMENT_VARIANTS."""
    from trainer.config import METHODS

    cases = []
    for name, cls in METHODS.items():
        kw = {"method": name, **({"teacher": "agree-t"} if cls.Options().uses_teacher else {})}
        if name == "reference":
            kw.update(reference_max_epochs=20, reference_patience=5)
        if name == "emobox":  # EmoBox's recipe trains on every label
            kw.update(labeled_fraction=1.0)
        cases.append((name, kw))
    return cases + list(AGREEMENT_VARIANTS)


AGREEMENT_TOL = 1e-3
"""Largest difference of a test-set class probability between a CPU and a device run of the same configuration
that counts as agreeing (float32 rounding differs between the CPU's and the GPU's kernels and grows a little with
every update; a misplaced random stream or operation gives differences of order 0.1)."""


def device_agreement(device: str, epochs: int = 3, seed: int = 0, threads: int = 0, checkpoint=None) -> dict:
    """Each :func:`agreement_cases` configuration trained on the CPU and twice on ``device`` (synthetic 400 x 32
    entry with frames and a teacher entry, 2 folds x 2 seeds, ``epochs`` + ``epochs``, lr 1e-3): per case the largest
    difference of the test probabilities (predictions.csv, every stage) CPU vs device, the share of equal predicted
    classes, each macro-F1, and whether the device's rerun gave identical probabilities; ``checkpoint(report)`` after
    each configuration (the report so far)."""
    dev = devices.resolve(device)
    rows = []
    report = {"device": devices.describe(dev), "tolerance": AGREEMENT_TOL, "epochs": epochs, "rows": rows}
    with tempfile.TemporaryDirectory(prefix="trainer-agree-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collapse / under-training notes of these short runs are not the point
        store, man = f"{tmp}/store", f"{tmp}/manifests"
        d = make_dataset(store, man, "agree", "agree", n=400, dim=32, n_folds=2, seed=seed, separation=1.0,
                         frames=True)
        make_dataset(store, man, "agree-t", "agree", n=400, dim=16, seed=seed, separation=1.0, keys=d["keys"],
                     write_manifests=False, feature_seed=seed + 7)
        base = dict(store=store, manifests=man, model="agree", dataset="agree", seeds=(0, 1), epochs_baseline=epochs,
                    epochs_stage2=epochs, lr=1e-3, plots=False, progress=False, threads=threads)
        for label, kw in agreement_cases():
            cfg = TrainConfig(**{**base, "method": "baseline", **kw})
            data = experiment.prepare(cfg)
            t_cpu, cpu = timed_run(cfg.replace(device="cpu"), data)
            t_dev, on = timed_run(cfg.replace(device=str(dev)), data)
            again = experiment.run(cfg.replace(device=str(dev)), data)
            probs = [c for c in cpu.predictions.columns if c.startswith("p_")]
            a, b, c = (r.predictions[probs].to_numpy(float) for r in (cpu, on, again))
            rows.append({"case": label, "method": cfg.method, "max_prob_diff": float(np.abs(a - b).max()),
                         "same_pred": float((cpu.predictions["pred"] == on.predictions["pred"]).mean()),
                         "macro_f1_cpu": _final_f1(cpu), "macro_f1_device": _final_f1(on),
                         "rerun_identical": bool(np.array_equal(b, c)), "seconds_cpu": t_cpu, "seconds_device": t_dev})
            worst = max(r["max_prob_diff"] for r in rows)
            report.update(max_prob_diff=worst, ok=worst <= AGREEMENT_TOL)
            if checkpoint is not None:
                checkpoint(report)
    return report


def agreement_markdown(ag: dict) -> str:
    """device_agreement as a markdown table."""
    head = (f"CPU vs {ag['device']}: the same configuration on both (synthetic 400 x 32 with frames, 2 folds x 2 "
            f"seeds, {ag['epochs']} + {ag['epochs']} epochs); agree = largest test-probability difference <= "
            f"{ag['tolerance']:g}")
    rows = [[r["case"], f"{100 * r['macro_f1_cpu']:.2f}", f"{100 * r['macro_f1_device']:.2f}",
             f"{r['max_prob_diff']:.2g}", f"{100 * r['same_pred']:.1f}", "yes" if r["rerun_identical"] else "no",
             "yes" if r["max_prob_diff"] <= ag["tolerance"] else "NO"] for r in ag["rows"]]
    return "\n".join([head, "", markdown_table(["configuration", "macro-F1 % CPU", "macro-F1 % device",
                                                "max abs p difference", "same predictions %",
                                                "device rerun identical", "agree"], rows, "lrrrrll")])


def _seconds(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def markdown(report: dict) -> str:
    """The benchmark as markdown tables."""
    reduced = (f" (REDUCED: --quick, {report['epochs_baseline']} + {report['epochs_stage2']} epochs instead of the "
               "paper's 100 + 100; seconds per epoch are the protocol's)") if report.get("quick") else ""
    what = "the paper's Table-1 methods" if report.get("grid") else "b-grpo: baseline + B-GRPO"
    head = (f"{report['n']} x {report['dim']}, {report['classes']} classes, {report['folds']} folds x "
            f"{len(report['seeds'])} seed(s), {report['epochs_total']} epochs ({what}){reduced}, "
            f"torch {report['torch']}, CPU threads: {report['threads']}, devices: {', '.join(report['devices'])}; "
            f"features loaded in {report['load_seconds']:.1f} s (not in the times below; a 1 + 1-epoch run on "
            f"{report['device']} first, untimed)")
    fast = report["fast"]["seconds"] if "fast" in report else None
    rows = []
    cpu = {r["method"]: r["seconds"] for r in report["stacked"] if r["on_cpu"]}
    for r in report["stacked"]:
        name = f"stacked whole-tensor (trainer run {r['method']})"
        if r["method"] == "grpo" and "grpo" in report:
            name = f"stacked per-input GRPO (trainer run grpo, G = {report['grpo']['group_size']}, same baseline)"
        rows.append([name, r["device"], _seconds(r["seconds"]), f"{100 * r['macro_f1_mean']:.1f}",
                     f"{r['seconds'] / fast:.2f}x" if fast else "-",
                     f"{cpu[r['method']] / r['seconds']:.1f}x" if r["method"] in cpu else "-"])
    dvc = report.get("device_vs_cpu")
    if dvc:
        label = f"all {len(dvc['methods'])} methods" if dvc["complete"] else \
            f"the {len(dvc['methods'])} of {len(report['methods'])} methods timed on both (run stopped early)"
        rows.append([label, report["device"], _seconds(dvc["device_seconds"]), "-", "-", f"{dvc['speedup']:.1f}x"])
        rows.append([label, next(d for d in report["devices"] if d.startswith("cpu")), _seconds(dvc["cpu_seconds"]),
                     "-", "-", "1.0x"])
    for key, speed, name in (("dataloader", "speedup", "per-sample DataLoader over an in-memory tensor"),
                             ("dataloader_npy", "speedup_npy", "per-sample DataLoader reading one .npy per "
                                                               "utterance (EmoBox)")):
        if key in report:
            rows.append([f"{name}, run by run", "cpu", f"{report[key]['seconds']:.1f}",
                         f"{100 * report[key]['macro_f1_mean']:.1f}", f"{report[speed]:.1f}x", "-"])
    table = markdown_table(["loop", "device", "seconds", "macro-F1 % (mean over runs)",
                            f"time / stacked b-grpo on {report['device'].split(' ')[0]}", "CPU time / this time"],
                           rows, "llrrrr")
    out = [head, "", table]
    ev = report.get("eval_seconds", {})
    if ev:
        cost = ", ".join(f"{k} {v:.1f} s" for k, v in ev.items())
        out += ["", f"Inside the stacked b-grpo time on {report['device']}, per-epoch evaluation took: {cost} (test = "
                f"curves, pool = collapse diagnostics, val = validation selection; val fraction "
                f"{report.get('val_fraction', 0):g})."]
    if dvc:
        verdict = "faster" if dvc["speedup"] > 1 else "NOT faster"
        part = "" if dvc["complete"] else f" (the {len(dvc['methods'])} methods timed on both; the run stopped early)"
        out += ["", f"{'Table-1 grid' if report.get('grid') else 'Stacked rows'}: {report['device']} is {verdict} than "
                f"the CPU ({report['threads']} threads): {dvc['device_seconds']:.1f} s vs {dvc['cpu_seconds']:.1f} s, "
                f"{dvc['speedup']:.1f}x{' on the reduced epochs' if report.get('quick') else ''}{part}."]
    return "\n".join(out)


def frame_head_cost(head: str, n: int = 5531, t: int = 250, dim: int = 512, folds: int = 5, epochs: int = 1,
                    batch_size: int = 32, threads: int = 0, seed: int = 0) -> dict:
    """Seconds per supervised epoch of ``folds`` stacked runs (half of n labelled each) with --head ``head`` on random
    padded float16 frames (n, 1.5 t, dim), lengths uniform in [t/2, 3t/2] (mean t), plus one evaluation pass over
    all rows; ``peak_rss_gib`` is this process's peak resident memory (run one head per process to compare)."""
    import resource

    experiment.set_threads(threads)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 4, (n,), generator=g)
    if head == "pooled":
        X = torch.randn(n, dim, generator=g)  # (N, D)
    else:
        lengths = torch.randint(t // 2, 3 * t // 2 + 1, (n,), generator=g)
        X = torch.empty(n, int(lengths.max()), dim, dtype=torch.float16)  # (N, T_max, D)
        for s in range(0, n, 256):
            X[s:s + 256] = torch.randn(X[s:s + 256].shape, generator=g).half()
        X[torch.arange(X.shape[1]) >= lengths[:, None]] = FRAME_PAD
    pools = [torch.randperm(n, generator=g)[: n // 2] for _ in range(folds)]
    model = StackedMLP.from_seeds(list(range(folds)), dim, 4, 128, head=head)
    opt = StackedAdam(model.parameters(), lr=1e-3)
    t0 = time.perf_counter()
    train_supervised(model, opt, X, y, pools, epochs, batch_size, [torch.Generator().manual_seed(r) for r in range(folds)])
    t_train = (time.perf_counter() - t0) / epochs
    t0 = time.perf_counter()
    model.predict_all(X)
    return {"head": head, "n": n, "t_max": int(X.shape[1]) if X.dim() == 3 else 1, "dim": dim, "runs": folds,
            "input_gib": X.numel() * X.element_size() / 2**30, "epoch_seconds": t_train,
            "eval_seconds": time.perf_counter() - t0, "threads": torch.get_num_threads(),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def frame_heads_bench(heads=("pooled", "mean", "attention"), **kw) -> list[dict]:
    """:func:`frame_head_cost` of each head in its own process (so each peak memory is its own)."""
    import json
    import subprocess
    import sys

    out = []
    for h in heads:
        code = f"import json; from trainer.bench import frame_head_cost; print(json.dumps(frame_head_cost({h!r}, **{kw!r})))"
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return out


def frame_heads_markdown(rows: list[dict]) -> str:
    """The frame-head cost as a markdown table."""
    return markdown_table(["head", "input (N x T_max x D)", "input GiB", "s / epoch", "eval s", "peak RSS GiB"],
                          [[r["head"], f"{r['n']} x {r['t_max']} x {r['dim']}", f"{r['input_gib']:.2f}",
                            f"{r['epoch_seconds']:.1f}", f"{r['eval_seconds']:.1f}", f"{r['peak_rss_gib']:.2f}"]
                           for r in rows], "llrrrr")
