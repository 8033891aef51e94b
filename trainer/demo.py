"""The embedded default main job (``emocache demo``): demo corpus -> fbank-stats store -> the B-GRPO paper's
Table 1 methods -> a results table, a reading of it and the next command.

It sits above both packages: emocache extracts, the trainer trains. ``emocache demo`` reaches it through the
``emocache.demo`` entry point (pyproject.toml), so emocache never imports the trainer. Progress goes to ``echo``
(stderr at the CLI); the table, its reading, the results folder and the next command go to ``show`` (stdout).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from emocache.demo import make_corpus
from emocache.extract import ExtractConfig, extract
from trainer import experiment
from trainer.config import TrainConfig
from trainer.results import draw_figures
from trainer.runwarnings import run_warnings
from trainer.significance import paired
from trainer.tables import METHOD_NAMES, load_results, render

DEMO_METHODS = ("baseline", "same-epochs", "full-labeled", "dino", "b-grpo")
BAR = "same-epochs"
"""The method B-GRPO must beat: the baseline trained for both stages' epochs on the same labels."""


def run_demo(out: str | Path, progress: bool = True, per_class: int = 16, seeds: tuple[int, ...] = (0, 1, 2),
             echo=print, show=print) -> str:
    """Corpus -> fbank-stats store -> the paper's Table 1 methods on 3 folds x seeds -> table, reading, next step.

    Writes under ``out``: ``demo/`` (audio, manifests), ``store.zarr``, ``results/`` (one folder per method:
    rows, curves, predictions, the learning curve and confusion matrix as PNG + PDF) and ``table.md``; returns the
    table. Rerunning reuses the corpus and the committed store blocks and overwrites the results. Runs use one
    thread each (a busy core stalls every step of a multi-threaded run; docs/TRAINER.md, Speed).
    """
    out = Path(out).resolve()
    ds_dir = out / "demo"
    if not (ds_dir / "demo.jsonl").exists():
        echo(f"writing the synthetic corpus to {ds_dir}")
        make_corpus(out, per_class=per_class)
    store = str(out / "store.zarr")
    report = extract(ExtractConfig(model="fbank-stats", manifests=(str(ds_dir),), store=store,
                                   audio_root=(f"demo={ds_dir}",), block_size=64), progress=progress)
    n = sum(s["done"] for s in report.datasets.values())
    echo(f"fbank-stats: {n} utterances extracted in {report.seconds:.1f} s ({report.n_failed} failed) -> {store}")
    if not report.ok:
        raise RuntimeError(f"demo extraction failed for {report.n_failed} utterances: {report.errors}")
    results, written = out / "results", []
    with run_warnings(lambda text: echo(f"warning: {text}")):
        for method in DEMO_METHODS:
            cfg = TrainConfig(method=method, store=store, model="fbank-stats", dataset="demo", manifests=str(out),
                              seeds=tuple(seeds), labels="six", out=str(results), experiment="demo",
                              standardize=True, progress=progress, overwrite=True, plots=False, threads=1)
            res = experiment.run(cfg)
            d = experiment.write(res)
            written.append(d)
            n_runs = sum(r["stage"] == "final" and r["method"] == method for r in res.rows)
            draw_figures(cfg, res.curves, res.confusions["final"], res.classes, n_runs, d, diagnostics=False)
            echo(f"{method}: {len(res.rows)} rows in {res.seconds:.1f} s -> {d.name}")
    df = load_results(written)  # this run's folders only (a later `trainer run ... --out results` adds others)
    table = render(df, "table1")
    (out / "table.md").write_text(table + "\n")
    show(table)
    show("")
    show(reading(df))
    show("")
    show(f"Results: {results} (one folder per method: results.csv, predictions.csv, learning_curve.png, "
         f"confusion.png; the table in {out / 'table.md'}).")
    show("Next: the paired differences to same-epochs with 95% intervals, then B-GRPO with its labels kept in "
         "stage 2 (ours, docs/TRAINER.md):")
    show(f"  trainer table {results} --compare same-epochs")
    show(f"  trainer run b-grpo --store {store} --model fbank-stats --dataset demo --manifests {out} "
         f"--seeds {','.join(map(str, seeds))} --standardize --sup-weight 1 --out {results}")
    return table


def _per_run(df: pd.DataFrame, method: str) -> pd.Series:
    """Final macro-F1 (%) of ``method``'s paper configuration per (fold, seed)."""
    g = df[(df.stage == "final") & (df.method == method)]
    return g.set_index(["fold", "seed"]).macro_f1 * 100


def _mean(s: pd.Series) -> float:
    """What a table cell shows: the fold mean per seed, then the mean over seeds."""
    return float(s.groupby(level="seed").mean().mean())


def reading(df: pd.DataFrame) -> str:
    """One paragraph saying what the demo's table shows, phrased from its rows: B-GRPO against the bar
    (same-epochs) and against the baseline it starts from (paired over the same folds and seeds, 95% bootstrap
    interval), what the collapse and under-trained flags say, and full labels as the ceiling."""
    f1 = {m: _per_run(df, m) for m in DEMO_METHODS}
    name = {m: METHOD_NAMES[m] for m in DEMO_METHODS}
    bg = df[(df.stage == "final") & (df.method == "b-grpo")]
    n = len(bg)

    def delta(a: str, b: str) -> str:
        common = f1[a].index.intersection(f1[b].index)
        r = paired(f1[a][common].to_numpy(), f1[b][common].to_numpy())
        side = "above" if r.low > 0 else "below" if r.high < 0 else "within noise of"
        return f"{r.mean:+.1f} points [{r.low:+.1f}, {r.high:+.1f}] ({side} {name[b]}, {r.n} paired runs)"

    k = int(bg.collapsed.sum()) if "collapsed" in bg else 0
    if k:
        collapse = (f"The collapse rule flags {k} of B-GRPO's {n} runs (⚠{k}/{n} in the table): their predictions on "
                    "the unlabelled pool lost a class (under a quarter of its labelled share) or most of their "
                    "spread, the failure the paper's self-reward invites by paying for confidence alone.")
    else:
        collapse = (f"None of B-GRPO's {n} runs is flagged collapsed (a flagged cell reads ⚠k/n: predictions on the "
                    "unlabelled pool losing a class, the failure the paper's self-reward invites by paying for "
                    "confidence alone).")
    under = int(df[(df.stage == "final")].under_trained.sum()) if "under_trained" in df else 0
    note = (f" †k/n marks runs whose training loss was still falling at the last epoch ({under} runs here): at "
            "the paper's lr 1e-4 and 100 + 100 epochs, \"same epochs\" is partly \"more epochs\"." if under else "")
    return (f"Reading: {name[BAR]} (the baseline's labels trained for both stages' epochs) is the bar B-GRPO must "
            f"clear, at {_mean(f1[BAR]):.1f} macro-F1; the baseline reaches {_mean(f1['baseline']):.1f}. B-GRPO "
            f"starts from that baseline and trains its second stage on the unlabelled half without labels: it "
            f"ends at {_mean(f1['b-grpo']):.1f}, {delta('b-grpo', BAR)}, and {delta('b-grpo', 'baseline')}. "
            f"DINO ends at {_mean(f1['dino']):.1f}; {name['full-labeled']} (every label, both stages' epochs) at "
            f"{_mean(f1['full-labeled']):.1f} is the ceiling. {collapse}{note}")
