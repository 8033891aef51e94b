"""`trainer` console script: run (one subcommand per method), table, pipeline, bench (a thin layer over the
modules)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from pathlib import Path
from typing import Optional, get_type_hints

import click
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup

from trainer.algorithms.base import field_docs

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="The B-GRPO paper's experiments on features cached by emocache.")
err = Console(stderr=True)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ValueError(f"--seeds {text!r}: comma-separated integers, e.g. 0,1,2") from None


def _warn(text: str):
    """One warning line on stderr, printed as written."""
    err.print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True)


def _fail(e: Exception):
    """One error line whatever the terminal width, printed as written (brackets kept)."""
    err.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True)
    raise typer.Exit(2)


REQUIRED = ("store", "dataset", "manifests")
"""TrainConfig fields that `trainer run` requires on the command line."""


def first_sentence(text: str) -> str:
    """``text`` up to its first sentence end ('. ' or ': ' followed by more) or whole: the option's help line."""
    for end in (". ", "; "):
        if end in text:
            text = text.split(end, 1)[0] + ("." if end == ". " else "")
    return text


def config_options(cls, skip=("method", "options"), required=REQUIRED) -> list[inspect.Parameter]:
    """One typer option per field of dataclass ``cls``: its name, type, default, the first sentence of its docstring
    as help (docs/TRAINER.md has the rest), its choices if enumerated. A bool that is off by default is a plain
    flag (--standardize), one that is on has its --no- form (--no-plots)."""
    hints, docs = get_type_hints(cls), field_docs(cls)
    params = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        typ, default = hints[f.name], ... if f.name in required else f.default
        if typ == tuple[int, ...]:  # seeds: comma-separated on the command line
            typ, default = str, default if default is ... else ",".join(map(str, default))
        help_ = first_sentence(docs.get(f.name, ""))
        if "choices" in f.metadata:
            help_ = f"{help_.rstrip('.')} ({'|'.join(f.metadata['choices'])})."
        name = "--" + f.name.replace("_", "-")
        decls = [name] if typ is not bool else [name if not default else f"{name}/--no-{name[2:]}"]
        opt = typer.Option(default, *decls, help=help_, show_default=typ is not bool and default not in ("", ...))
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=typ))
    return params


def run(method: str, **options):
    """Train and test ``method`` over the folds and seeds with the CLI's options; writes results.csv/json, curves
    and plots and prints the summary."""
    from emocache.runtime import progress_bar
    from trainer import experiment as exp
    from trainer.config import TrainConfig
    from trainer.data import DataError
    from trainer.runwarnings import run_warnings
    from trainer.tables import summary

    try:
        cfg = TrainConfig(method, **{**options, "seeds": _seeds(options["seeds"])})
        with run_warnings(_warn):
            with progress_bar(cfg.progress) as bar:
                res = exp.run(cfg, bar=bar)
            d = exp.write(res)
    except (DataError, ValueError) as e:
        _fail(e)
    typer.echo(summary(res.rows))
    typer.echo(f"{res.seconds:.1f} s; results in {d}")


def method_command(name: str) -> click.Command:
    """`trainer run NAME`: the shared options (TrainConfig's fields), then the method's own (its Options)."""
    from trainer.config import TrainConfig, get_method

    cls = get_method(name)

    def command(**options):
        run(name, **options)

    command.__signature__ = inspect.Signature(config_options(TrainConfig) + config_options(cls.Options, required=()))
    sub = typer.Typer(add_completion=False, rich_markup_mode=None)
    sub.command(name=name, help=f"{cls.description()}\n\nThe shared options first, then {name}'s own "
                                "(docs/TRAINER.md).", short_help=cls.summary())(command)
    return typer.main.get_command(sub)


class MethodGroup(TyperGroup):
    """`trainer run`: one subcommand per registered method, built when asked for (the method modules import torch,
    which `trainer table` does not need)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from trainer.config import METHODS

        return sorted(METHODS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from trainer.config import METHODS

        return method_command(cmd_name) if cmd_name in METHODS else None


run_app = typer.Typer(cls=MethodGroup, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                      help="Train and test one method over the folds and seeds; `trainer run METHOD --help` lists "
                           "its options.")
app.add_typer(run_app, name="run")


@app.command()
def table(
    results: list[Path] = typer.Argument(..., help="results.csv files or folders holding them"),
    layout: str = typer.Option("auto", help="auto | table1..table5 | generic"),
    out: Optional[Path] = typer.Option(None, help="Write the table (in --format) here too"),
    stage: str = typer.Option("final", help="Rows of this stage (final | stage1)"),
    oracle: bool = typer.Option(False, "--oracle",
                                help="Show each run's best TEST epoch (optimistic, labelled so everywhere)"),
    compare: str = typer.Option("", help="Add the paired difference to this method (fold level: t-test, Holm; "
                                         "seed level: bootstrap, Wilcoxon)"),
    fmt: str = typer.Option("md", "--format", help="md (markdown, as shown here) | csv | latex (booktabs)"),
    metric: str = typer.Option("macro_f1", help="Metric column shown, in %: macro_f1, ua, wa or any other metric "
                                                "column of the results (an error lists them)"),
):
    """Paper-style tables: a metric in % as mean +- std (over seeds of the fold-mean; over folds with one seed)."""
    from trainer.tables import load_results, render

    try:
        df = load_results(results)
        text = render(df, layout, stage, oracle=oracle, compare=compare, metric=metric, fmt=fmt)
    except ValueError as e:
        _fail(e)
    typer.echo(text)
    if out:
        out.write_text(text + "\n")


@app.command()
def plot(
    results: list[Path] = typer.Argument(..., help="run folders, or folders holding them"),
    out: Optional[Path] = typer.Option(None, help="Write the figures here (a sub-folder per run) instead of into "
                                                  "each run folder"),
    diagnostics: bool = typer.Option(False, "--diagnostics", help="Also the diagnostic dashboard (diagnostics.png)"),
):
    """Figures for a paper from written runs: learning_curve and confusion (PNG + PDF), titled with method, dataset
    and features."""
    from trainer.data import DataError
    from trainer.results import replot

    folders = []
    for r in results:
        found = sorted(p.parent for p in r.rglob("results.json")) if r.is_dir() else []
        if not found:
            _fail(ValueError(f"{r}: no run folder (results.json) here; give a `trainer run` output folder"))
        folders += found
    try:
        for f in folders:
            paths = replot(f, out / f.name if out else None, diagnostics)
            typer.echo(f"{f}: " + ", ".join(p.name for p in paths) + " (+ .pdf)")
    except DataError as e:
        _fail(e)


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
    from trainer.runwarnings import run_warnings

    try:
        spec_d = load_spec(spec, store=store, manifests=manifests, out=out, overrides=set_)
        with run_warnings(_warn):
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
    separation: float = typer.Option(0.06, help="Synthetic data: class-mean scale (0.06 gives ~72 macro-F1 at "
                                                 "IEMOCAP size)"),
    val_fraction: float = typer.Option(0.0, help="Hold out this share of the labelled rows as validation (timed)"),
    group_size: int = typer.Option(8, help="Also time per-input GRPO (trainer run grpo) with this G; 0 = skip"),
    frame_heads: bool = typer.Option(False, "--frame-heads", help="Instead: the cost of --head pooled / mean / "
                                     "attention on random float16 frames (--n utterances, --frames T, --frame-dim "
                                     "D, --folds stacked runs, one epoch each), each head in its own process"),
    frames: int = typer.Option(250, help="--frame-heads: mean frames per utterance (lengths T/2..3T/2)"),
    frame_dim: int = typer.Option(512, help="--frame-heads: frame dim (SenseVoice-like: 512)"),
    device: str = typer.Option("auto", help="Where the stacked rows run: auto (cuda when torch sees a GPU), cpu, "
                                            "cuda or cuda:I; a GPU's rows are timed beside the CPU's in the same run"),
    grid: bool = typer.Option(False, "--grid", help="Time the paper's Table-1 methods (baseline, dino, same-epochs, "
                                                    "full-labeled, b-grpo) instead of b-grpo and grpo"),
    quick: bool = typer.Option(False, "--quick", help="A reduced run: 2 + 2 epochs on the same data, no DataLoader "
                                                      "loops (reported as reduced)"),
    agreement: bool = typer.Option(False, "--agreement", help="Instead: train every method on a small configuration on "
                                                              "the CPU and on --device and compare the rows"),
):
    """Time the stacked whole-tensor b-grpo run against a per-sample DataLoader loop on the same data."""
    from trainer.bench import bench as run_bench
    from trainer.bench import agreement_markdown, device_agreement, frame_heads_bench, frame_heads_markdown, markdown
    from trainer.data import DataError

    if frame_heads:
        rows = frame_heads_bench(n=n, t=frames, dim=frame_dim, folds=folds, threads=threads)
        return _report(rows, frame_heads_markdown(rows), out, "frame_heads")
    try:
        if agreement:
            ag = device_agreement(device, threads=threads, checkpoint=(lambda r: _write(r, agreement_markdown(r), out,
                                                                                       "agreement")) if out else None)
            return _report(ag, agreement_markdown(ag), out, "agreement")
        rep = run_bench(n=n, dim=dim, folds=folds, epochs_baseline=epochs_baseline, epochs_stage2=epochs_stage2,
                        seeds=_seeds(seeds), threads=threads, store=store, model=model, dataset=dataset,
                        manifests=manifests, slow=slow, npy=npy, separation=separation,
                        val_fraction=val_fraction, group_size=group_size, device=device, grid=grid, quick=quick,
                        checkpoint=(lambda r: _write(r, markdown(r), out, "bench")) if out else None)
    except (DataError, ValueError) as e:
        _fail(e)
    _report(rep, markdown(rep), out, "bench")


def _report(obj, md: str, out: Optional[Path], name: str):
    """Print a benchmark's markdown table and, with ``out``, write NAME.json and NAME.md there."""
    typer.echo(md)
    if out:
        _write(obj, md, out, name)


def _write(obj, md: str, out: Path, name: str):
    """NAME.json and NAME.md in ``out`` (the report so far, while a benchmark runs)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(obj, indent=2))
    (out / f"{name}.md").write_text(md + "\n")


if __name__ == "__main__":
    sys.exit(app())
