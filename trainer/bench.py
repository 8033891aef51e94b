"""`trainer bench`: the stacked whole-tensor b-grpo run beside straightforward per-sample DataLoader loops
(EmoBox style: one fold at a time, torch DataLoader, nn.Module, evaluation with scikit-learn every epoch),
same protocol and same prepared data, in one process. The DataLoader loop runs twice: reading rows of an
in-memory tensor, and reading one ``.npy`` file per utterance per epoch as EmoBox's training script does
(``np.load(feat_dir/<id>.npy)`` in its data pipeline; here the file holds the pooled vector)."""

from __future__ import annotations

import copy
import tempfile
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from emocache.runtime import markdown_table
from trainer import experiment
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


def bench(n: int = 5531, dim: int = 1280, folds: int = 5, epochs_baseline: int = 100, epochs_stage2: int = 100,
          seeds: tuple[int, ...] = (0,), threads: int = 0, store: str = "", model: str = "", dataset: str = "",
          manifests: str = "", slow: bool = True, npy: bool = True, separation: float = 0.06,
          val_fraction: float = 0.0, group_size: int = 8) -> dict:
    """Time both loops on the same prepared data; synthetic IEMOCAP-shaped data unless a store entry is given."""
    experiment.set_threads(threads)
    tmp = None
    if not store:
        tmp = tempfile.TemporaryDirectory(prefix="trainer-bench-")
        store, manifests, model, dataset = f"{tmp.name}/store", f"{tmp.name}/manifests", "bench-model", "bench"
        make_dataset(store, manifests, model, dataset, n=n, dim=dim, n_folds=folds, separation=separation)
    cfg = TrainConfig(method="b-grpo", store=store, model=model, dataset=dataset, manifests=manifests,
                      seeds=tuple(seeds), epochs_baseline=epochs_baseline, epochs_stage2=epochs_stage2,
                      threads=threads, plots=False, progress=False, val_fraction=val_fraction)
    t0 = time.perf_counter()
    data = experiment.prepare(cfg)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = experiment.run(cfg, data)
    t_fast = time.perf_counter() - t0
    f1_fast = [r["macro_f1"] for r in res.rows if r["stage"] == "final"]
    report = {
        "n": int(data.X.shape[0]), "dim": int(data.X.shape[1]), "classes": len(data.classes),
        "folds": len({r["fold"] for r in data.runs}), "seeds": list(seeds), "runs": len(data.runs),
        "epochs_total": cfg.epochs_total, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_seconds": t_load,
        "fast": {"seconds": t_fast, "macro_f1_mean": float(np.mean(f1_fast))},
        "eval_seconds": res.eval_seconds, "val_fraction": val_fraction,
    }
    if group_size:
        gcfg = cfg.replace(method="grpo", group_size=group_size)
        t0 = time.perf_counter()
        res_g = experiment.run(gcfg, data)
        report["grpo"] = {"seconds": time.perf_counter() - t0, "group_size": group_size,
                          "macro_f1_mean": float(np.mean([r["macro_f1"] for r in res_g.rows if r["stage"] == "final"]))}
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


def markdown(report: dict) -> str:
    """The benchmark as a markdown table."""
    head = (f"{report['n']} x {report['dim']}, {report['classes']} classes, {report['folds']} folds x "
            f"{len(report['seeds'])} seed(s), {report['epochs_total']} epochs (b-grpo: baseline + B-GRPO), "
            f"torch {report['torch']}, {report['threads']} threads; features loaded in "
            f"{report['load_seconds']:.1f} s (not in the times below)")
    fast = report["fast"]["seconds"]
    rows = [["stacked whole-tensor (trainer run)", f"{fast:.1f}", f"{100 * report['fast']['macro_f1_mean']:.1f}",
             "1.0x"]]
    if "grpo" in report:
        g = report["grpo"]
        rows.append([f"stacked per-input GRPO (trainer run grpo, G = {g['group_size']}, same baseline)",
                     f"{g['seconds']:.1f}", f"{100 * g['macro_f1_mean']:.1f}", f"{g['seconds'] / fast:.1f}x"])
    for key, speed, name in (("dataloader", "speedup", "per-sample DataLoader over an in-memory tensor"),
                             ("dataloader_npy", "speedup_npy", "per-sample DataLoader reading one .npy per "
                                                               "utterance (EmoBox)")):
        if key in report:
            rows.append([f"{name}, run by run", f"{report[key]['seconds']:.1f}",
                         f"{100 * report[key]['macro_f1_mean']:.1f}", f"{report[speed]:.1f}x"])
    table = markdown_table(["loop", "seconds", "macro-F1 % (mean over runs)", "time / stacked time"], rows)
    ev = report.get("eval_seconds", {})
    cost = ", ".join(f"{k} {v:.1f} s" for k, v in ev.items())
    trailer = ["", f"Inside the stacked time, per-epoch evaluation took: {cost} (test = curves, pool = collapse "
               f"diagnostics, val = validation selection; val fraction {report.get('val_fraction', 0):g})."]
    return "\n".join([head, "", table] + (trailer if ev else []))


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
