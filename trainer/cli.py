"""`trainer` console script: run, table, pipeline, bench (a thin layer over the modules)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from trainer.config import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The B-GRPO paper's experiments on features cached by emocache.")
err = Console(stderr=True)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise typer.BadParameter(f"--seeds {text!r}: comma-separated integers, e.g. 0,1,2") from None


def _fail(e: Exception):
    err.print(f"[red]error:[/red] {e}")
    raise typer.Exit(2)


@app.command()
def run(
    method: str = typer.Argument(..., help="baseline, same-epochs, full-labeled, dino or b-grpo"),
    store: str = typer.Option(..., help="Feature store URL"),
    model: str = typer.Option("sensevoice-small", help="Encoder of the policy's features"),
    dataset: str = typer.Option(..., help="Dataset trained and tested on"),
    manifests: str = typer.Option(..., help="EmoBox data folder (<dir>/<dataset>/fold_<k>/...)"),
    fold: str = typer.Option("all", help="'all' or a fold number"),
    seeds: str = typer.Option("0", help="Comma-separated seeds"),
    labels: str = typer.Option("six", help="six | emobox"),
    out: str = typer.Option("results", help="Output folder"),
    unlabeled_from: str = typer.Option("", help="Dataset for the unsupervised stage (Table 5)"),
    reward: str = typer.Option("r1", help="r1 | r2 | r3 | r4 | r5"),
    teacher: str = typer.Option("", help="Teacher encoder for r3-r5"),
    advantage: str = typer.Option("positive", help="positive | signed | none"),
    epochs_baseline: int = typer.Option(100, help="Supervised epochs (stage 1)"),
    epochs_stage2: int = typer.Option(100, help="DINO / B-GRPO epochs (stage 2)"),
    labeled_fraction: float = typer.Option(0.5, help="Labelled share of each training fold"),
    hidden: int = typer.Option(128), lr: float = typer.Option(1e-4), batch_size: int = typer.Option(32),
    weight_decay: float = typer.Option(0.0),
    delta: float = typer.Option(0.5, help="r1/r4 threshold"), reward_value: float = typer.Option(1.0, help="C"),
    theta: float = typer.Option(0.5, help="r5 KL threshold"), epsilon: float = typer.Option(0.2),
    beta: float = typer.Option(0.04), mu: int = typer.Option(1), action: str = typer.Option("greedy"),
    dino_views: str = typer.Option("auto", help="auto | frames | noise"),
    nonfinite: str = typer.Option("error", help="NaN/inf features: error | drop"),
    missing_teacher: str = typer.Option("error", help="Keys the teacher lacks: error | drop"),
    threads: int = typer.Option(0, help="torch threads (0 = all cores; 1 on a shared machine)"),
    eval_every: int = typer.Option(1, help="Epochs between curve evaluations"),
    plots: bool = typer.Option(True, "--plots/--no-plots"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    standardize: bool = typer.Option(False, "--standardize/--no-standardize",
                                     help="Z-score features per run with its training rows' mean/std"),
    experiment: str = typer.Option("", help="Tag copied into every row"),
):
    """Train and test one method over the folds and seeds; writes results.csv/json, curves and plots."""
    from trainer import experiment as exp
    from trainer.data import DataError
    from emocache.runtime import progress_bar

    try:
        cfg = TrainConfig(method=method, store=store, model=model, dataset=dataset, manifests=manifests, fold=fold,
                          seeds=_seeds(seeds), labels=labels, out=out, unlabeled_from=unlabeled_from, reward=reward,
                          teacher=teacher, advantage=advantage, epochs_baseline=epochs_baseline,
                          epochs_stage2=epochs_stage2, labeled_fraction=labeled_fraction, hidden=hidden, lr=lr,
                          batch_size=batch_size, weight_decay=weight_decay, delta=delta, reward_value=reward_value,
                          theta=theta, epsilon=epsilon, beta=beta, mu=mu, action=action, dino_views=dino_views,
                          nonfinite=nonfinite, missing_teacher=missing_teacher, threads=threads,
                          eval_every=eval_every, plots=plots, progress=progress, standardize=standardize,
                          experiment=experiment)
        exp.get_method(method)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = lambda m, *a, **k: err.print(f"[yellow]warning:[/yellow] {m}")
            with progress_bar(cfg.progress) as bar:
                res = exp.run(cfg, bar=bar)
        d = exp.write(res)
    except (DataError, ValueError) as e:
        _fail(e)
    from trainer.tables import summary

    typer.echo(summary(res.rows))
    typer.echo(f"{res.seconds:.1f} s; results in {d}")


@app.command()
def table(
    results: list[Path] = typer.Argument(..., help="results.csv files or folders holding them"),
    layout: str = typer.Option("auto", help="auto | table1..table5 | generic"),
    out: Optional[Path] = typer.Option(None, help="Write the markdown here too"),
    stage: str = typer.Option("final", help="Rows of this stage (final | stage1)"),
):
    """Paper-style tables: macro-F1 % as mean +- std (over seeds of the fold-mean; over folds with one seed)."""
    from trainer.tables import load_results, render

    try:
        df = load_results(results)
        text = render(df, layout, stage)
    except ValueError as e:
        _fail(e)
    typer.echo(text)
    if out:
        out.write_text(text + "\n")


@app.command()
def pipeline(
    spec: Path = typer.Argument(..., help="pipelines/<table>.toml"),
    store: str = typer.Option("", help="Overrides the spec's store"),
    manifests: str = typer.Option("", help="Overrides the spec's manifests"),
    out: str = typer.Option("", help="Overrides the spec's out"),
    scheduler: str = typer.Option("", help="dask scheduler ADDRESS or local:N; sequential when empty"),
    set_: list[str] = typer.Option([], "--set", help="Override any config field, e.g. --set epochs_baseline=5"),
):
    """Run every cell of a spec's grid and render its table."""
    from trainer.pipeline import load_spec, run_pipeline

    try:
        spec_d = load_spec(spec, store=store, manifests=manifests, out=out, overrides=set_)
        text, path = run_pipeline(spec_d, scheduler=scheduler, echo=lambda s: err.print(s))
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    typer.echo(text)
    typer.echo(f"results in {path}")


@app.command()
def bench(
    n: int = typer.Option(5531, help="Utterances (synthetic)"), dim: int = typer.Option(1280, help="Feature dim"),
    folds: int = typer.Option(5), epochs_baseline: int = typer.Option(100), epochs_stage2: int = typer.Option(100),
    seeds: str = typer.Option("0"), threads: int = typer.Option(0, help="torch threads (0 = all cores)"),
    store: str = typer.Option("", help="Use a real entry instead of synthetic data"),
    model: str = typer.Option(""), dataset: str = typer.Option(""), manifests: str = typer.Option(""),
    slow: bool = typer.Option(True, "--slow/--no-slow", help="Also time the per-sample DataLoader loop"),
    npy: bool = typer.Option(True, "--npy/--no-npy", help="Also time it reading one .npy per utterance (EmoBox)"),
    out: Optional[Path] = typer.Option(None, help="Write bench.json and bench.md into this folder"),
):
    """Time the stacked whole-tensor b-grpo run against a per-sample DataLoader loop on the same data."""
    from trainer.bench import bench as run_bench
    from trainer.bench import markdown
    from trainer.data import DataError

    try:
        rep = run_bench(n=n, dim=dim, folds=folds, epochs_baseline=epochs_baseline, epochs_stage2=epochs_stage2,
                        seeds=_seeds(seeds), threads=threads, store=store, model=model, dataset=dataset,
                        manifests=manifests, slow=slow, npy=npy)
    except (DataError, ValueError) as e:
        _fail(e)
    md = markdown(rep)
    typer.echo(md)
    if out:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_text(json.dumps(rep, indent=2))
        (out / "bench.md").write_text(md + "\n")


if __name__ == "__main__":
    sys.exit(app())
