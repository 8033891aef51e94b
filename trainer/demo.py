"""The embedded default main job (``emocache demo``): demo corpus -> fbank-stats store -> the B-GRPO paper's
Table 1 methods -> a results table.

It sits above both packages: emocache extracts, the trainer trains. ``emocache demo`` reaches it through the
``emocache.demo`` entry point (pyproject.toml), so emocache never imports the trainer.
"""

from __future__ import annotations

from pathlib import Path

from emocache.demo import make_corpus
from emocache.extract import ExtractConfig, extract
from trainer import experiment
from trainer.config import TrainConfig
from trainer.tables import load_results, render

DEMO_METHODS = ("baseline", "same-epochs", "full-labeled", "dino", "b-grpo")


def run_demo(out: str | Path, progress: bool = True, per_class: int = 16, seeds: tuple[int, ...] = (0, 1, 2),
             echo=print) -> str:
    """Corpus -> fbank-stats store -> the paper's Table 1 methods on 3 folds x seeds -> a results table.

    Writes under ``out``: ``demo/`` (audio, manifests), ``store.zarr``, ``results/`` (rows, curves, plots) and
    ``table.md``; returns the table. Rerunning reuses the corpus and the committed store blocks and overwrites the results.
    """
    out = Path(out)
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
    results = out / "results"
    for method in DEMO_METHODS:
        cfg = TrainConfig(method=method, store=store, model="fbank-stats", dataset="demo", manifests=str(out),
                          seeds=tuple(seeds), labels="six", out=str(results), experiment="demo",
                          standardize=True, progress=progress, overwrite=True)
        res = experiment.run(cfg)
        experiment.write(res)
        echo(f"{method}: {len(res.rows)} rows in {res.seconds:.1f} s")
    table = render(load_results([results]), "table1")
    (out / "table.md").write_text(table + "\n")
    echo(table)
    return table
