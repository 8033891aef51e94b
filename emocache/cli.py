"""`emocache` command line: a thin layer over the library functions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from emocache.config import COMPILE_MODES, DTYPES, FRONTENDS, LONG_POLICIES, EncoderConfig, ExtractConfig
from emocache.runtime import PLAIN_EVERY_SECONDS, PLAIN_FIRST_SECONDS, console
from emocache.store.storage import parse_storage_options

app = typer.Typer(help="Frozen speech-encoder features for SER research, cached in Zarr stores.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


def _fail(msg: str, code: int = 2) -> None:
    """One error line (even in an 80-column pipe), printed as written: brackets such as `.[egemaps]` are kept."""
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(str(msg))}", soft_wrap=True)
    raise typer.Exit(code)


STORAGE_OPTIONS_HELP = ("fsspec options for s3:// or gs:// stores as JSON, e.g. '{\"endpoint_url\": "
                        "\"http://127.0.0.1:9000\"}' (default: $EMOCACHE_STORAGE_OPTIONS, then AWS_* / GOOGLE_* env).")


def _storage_options(raw: Optional[str]) -> dict:
    try:
        return parse_storage_options(raw)
    except ValueError as e:
        _fail(str(e))


X = ExtractConfig  # the CLI's defaults are the config dataclasses' defaults
DEVICE_HELP = "auto | cpu | cuda | cuda:I (auto: the first GPU torch sees, else the CPU)."
DTYPE_HELP = (f"{' | '.join(DTYPES)}. auto: fp32 on CPU; on GPU the first half type whose pooled vectors stay within "
              "cosine 0.999 of fp32. Weight-free encoders take auto or fp32 only.")
TRUST_HELP = ("Load a model file that is not plain weights (a pickled model.pt / pytorch_model.bin) with full "
              "pickle, which runs any code it holds; only for files from a source you trust (warns, naming the file).")
COMPILE_HELP = (f"{' | '.join(COMPILE_MODES)}: torch.compile the encoder's repeated layers (auto: on for CUDA, off on "
                "the CPU); outputs equal eager within the dtype's tolerance; costs a compile once per process.")
FRONTEND_HELP = (f"{' | '.join(FRONTENDS)}: where log-mel / fbank / wave normalisation run (auto: as torch ops on the "
                 "GPU for CUDA, the library's CPU frontend otherwise).")
PROGRESS_HELP = (f"Show progress: a bar in a terminal, else a plain line after {PLAIN_FIRST_SECONDS:g} s, then "
                 f"every {PLAIN_EVERY_SECONDS:g} s (done/total, rate, ETA).")


def _limit_options():
    """Typer options bounding what an untrusted store can make a command read (defaults: emocache.store.Limits)."""
    from emocache.store import Limits

    d = Limits()
    return (typer.Option(d.chunk_bytes / (1 << 20), "--max-chunk-mb",
                         help="Untrusted stores: largest decoded chunk in MiB (checked before decompressing)."),
            typer.Option(d.metadata_bytes / (1 << 20), "--max-metadata-mb",
                         help="Untrusted stores: largest metadata document (zarr.json) in MiB."),
            typer.Option(d.json_depth, "--max-json-depth", help="Untrusted stores: deepest JSON nesting."),
            typer.Option(d.rows, "--max-rows", help="Untrusted stores: most utterances per entry."),
            typer.Option(d.json_values, "--max-json-values",
                         help="Untrusted stores: most JSON values in one metadata document (counted before parsing)."))


def _limits(chunk_mb: float, metadata_mb: float, json_depth: int, rows: int, json_values: int):
    from emocache.store import Limits, StoreError

    try:
        return Limits.from_cli(chunk_mb, metadata_mb, json_depth, rows, json_values)
    except StoreError as e:
        _fail(str(e))


@app.command()
def extract(
    model: str = typer.Option(..., help="Registered model name or a plugin's (`emocache models` lists them), or "
                                        "hf:<repo-id-or-dir> for any Hugging Face speech encoder."),
    name: Optional[str] = typer.Option(X.name, help="hf: models: store entry name (default: derived from the id)."),
    layers: str = typer.Option(X.layers, help="last | all | K,K,...: also store the pooled vectors of these "
                                              "hidden_states layers (0 = embeddings), from the same forward pass."),
    frames_layer: Optional[int] = typer.Option(X.frames_layer, help="hidden_states layer stored as frames "
                                                                    "(default: the final output)."),
    manifest: list[str] = typer.Option(..., help="EmoBox jsonl file or dataset folder; repeat for several."),
    store: str = typer.Option(..., help="Store URL: a local folder (new or existing), s3://bucket/path, gs://bucket/path."),
    audio_root: list[str] = typer.Option([], help="PREFIX=DIR remap of manifest wav paths; repeatable."),
    model_path: Optional[str] = typer.Option(X.model_path, help="Directory holding the weights (else HF / ModelScope caches)."),
    device: str = typer.Option(X.device, help=DEVICE_HELP),
    dtype: str = typer.Option(X.dtype, help=DTYPE_HELP),
    frames: bool = typer.Option(X.frames, "--frames/--no-frames", help="Store frame features besides pooled."),
    block_size: int = typer.Option(X.block_size, help="Utterances per block (unit of commit and resume); >= 1."),
    batch_seconds: Optional[float] = typer.Option(X.batch_seconds, help="Padded audio seconds per model batch; > 0 "
                                                                      "(default: 240 on the CPU, the model's GPU "
                                                                      "budget on CUDA)."),
    max_batch: Optional[int] = typer.Option(X.max_batch, help="Most utterances per model batch (default: 64 on the "
                                                              "CPU, the model's GPU maximum on CUDA)."),
    compile: str = typer.Option(X.compile, help=COMPILE_HELP),
    frontend: str = typer.Option(X.frontend, help=FRONTEND_HELP),
    long_policy: str = typer.Option(X.long_policy, help=f"Over the model's window: {' | '.join(LONG_POLICIES)}."),
    max_audio_seconds: float = typer.Option(X.max_audio_seconds, help="Longer files are recorded as failed; > 0."),
    loader_threads: int = typer.Option(X.loader_threads, help="Threads decoding audio ahead of the model; >= 1."),
    redo_failed: bool = typer.Option(X.redo_failed, help="Redo blocks with failed utterances or failing verification."),
    scheduler: Optional[str] = typer.Option(X.scheduler, help="dask scheduler address (tcp://HOST:PORT) or local:N."),
    part: Optional[str] = typer.Option(X.part, help="I/N: only blocks b with b % N == I (N writer processes)."),
    storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP),
    progress: bool = typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help=TRUST_HELP),
) -> None:
    """Extract pooled embeddings (and frames) for every utterance of the manifests into the store."""
    from emocache.encoders import EncoderError
    from emocache.extract import extract as run
    from emocache.manifest import ManifestError
    from emocache.runtime import SchedulerError
    from emocache.store import StoreError

    try:
        cfg = ExtractConfig(model=model, name=name, layers=layers, frames_layer=frames_layer, manifests=tuple(manifest), store=store, audio_root=tuple(audio_root),
                            model_path=model_path, device=device, dtype=dtype, frames=frames, block_size=block_size,
                            batch_seconds=batch_seconds, max_batch=max_batch, compile=compile, frontend=frontend,
                            long_policy=long_policy,
                            max_audio_seconds=max_audio_seconds, loader_threads=loader_threads,
                            redo_failed=redo_failed, scheduler=scheduler, part=part,
                            storage_options=_storage_options(storage_options), trust_checkpoint=trust_checkpoint)
        report = run(cfg, progress=progress)
    except (EncoderError, ManifestError, StoreError, SchedulerError, ValueError, KeyError, FileNotFoundError) as e:
        _fail(str(e).strip("'\""))
    _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report) -> None:
    t = Table(title=f"{report.model} -> {report.store}")
    for c in ("dataset", "blocks run", "blocks skipped", "done", "failed"):
        t.add_column(c, justify="right" if c != "dataset" else "left")
    for ds, s in report.datasets.items():
        t.add_row(ds, str(s["blocks_done"]), str(s["blocks_skipped"]), str(s["done"]), str(s["failed"]))
    console.print(t)
    rate = report.audio_seconds / report.seconds if report.seconds else 0.0
    n = sum(s["done"] + s["failed"] for s in report.datasets.values())
    console.print(f"model load {report.load_seconds:.1f} s; extraction {report.seconds:.1f} s for {n} utterances "
                  f"({n / report.seconds if report.seconds else 0:.1f} utt/s), {report.audio_seconds:.1f} s of audio "
                  f"({rate:.1f} audio-s/s)")
    if report.warnings:
        console.print(f"[yellow]{len(report.warnings)} warning(s)[/yellow], e.g.:")
        for w in report.warnings[:5]:
            console.print(f"  {w}")
    if not report.ok:
        console.print(f"[red]{report.n_failed} utterance(s) failed[/red] (recorded in the store; "
                      "fix them and rerun with --redo-failed):")
        for ds, errs in report.errors.items():
            for k, msg in list(errs.items())[:20]:
                console.print(f"  {ds}/{k}: {msg}")
            if len(errs) > 20:
                console.print(f"  ... and {len(errs) - 20} more in {ds}")


@app.command()
def info(url: str = typer.Argument(..., help="Store URL."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
         storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP),
         max_chunk_mb: float = _limit_options()[0], max_metadata_mb: float = _limit_options()[1],
         max_json_depth: int = _limit_options()[2], max_rows: int = _limit_options()[3],
         max_json_values: int = _limit_options()[4]) -> None:
    """What a store holds: entries, utterances done/failed, dims, bytes, provenance."""
    from emocache.store import StoreError, describe, dumps, open_store

    limits = _limits(max_chunk_mb, max_metadata_mb, max_json_depth, max_rows, max_json_values)
    try:
        rows = describe(open_store(url, storage_options=_storage_options(storage_options), limits=limits))
    except StoreError as e:
        _fail(str(e))
    if as_json:
        typer.echo(dumps(rows))
        return
    for line in info_lines(url, rows):
        console.print(line, soft_wrap=True, highlight=False, markup=False)


def info_lines(url: str, rows: list[dict]) -> list[str]:
    """`emocache info` as short labelled lines per entry: readable at any width, piped or not (no table)."""
    out = [f"{url}: {len(rows)} entr{'y' if len(rows) == 1 else 'ies'}"]
    for r in rows:
        p = r["provenance"]
        mb = f"{r['bytes'] / 1e6:.2f} MB" if r["bytes"] is not None else "? MB"
        out += ["", f"{r['model']}/{r['dataset']}",
                f"  utterances  {r['n']}: {r['done']} done, {r['failed']} failed, {r['pending']} pending "
                f"({r['blocks']} blocks)",
                f"  features    pooled dim {r['dim']}, frames {'yes' if r['frames'] else 'no'}, {mb}",
                f"  weights     {p.get('weights', '')}",
                f"  layer       {p.get('layer', '')}",
                "  provenance"]
        out += [f"    {k}: {v if isinstance(v, str) else json.dumps(v, default=str)}"
                for k, v in sorted(p.items()) if k not in ("weights", "layer")]
    return out


@app.command()
def verify(url: str = typer.Argument(..., help="Store URL."),
           allow_partial: bool = typer.Option(False, "--allow-partial",
                                              help="Exit 0 for a store with uncommitted blocks (a run in progress)."),
           storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP),
           max_chunk_mb: float = _limit_options()[0], max_metadata_mb: float = _limit_options()[1],
           max_json_depth: int = _limit_options()[2], max_rows: int = _limit_options()[3],
           max_json_values: int = _limit_options()[4]) -> None:
    """Integrity: every committed block readable, checksums match, index consistent, every block committed;
    names blocks to redo. Exit 1 on damage or (without --allow-partial) an incomplete store."""
    from rich.markup import escape

    from emocache.store import StoreError, open_store
    from emocache.verify import verify_store

    limits = _limits(max_chunk_mb, max_metadata_mb, max_json_depth, max_rows, max_json_values)
    try:
        checks = verify_store(open_store(url, storage_options=_storage_options(storage_options), limits=limits))
    except StoreError as e:
        _fail(str(e))
    incomplete = 0
    bad = len(checks.problems)
    for msg in checks.problems:
        console.print(f"[red]store:[/red] {escape(msg)}", soft_wrap=True)
    for c in checks:
        status = "[green]ok[/green]" if c.ok else f"[red]{len(c.problems)} bad block(s)[/red]"
        console.print(f"{c.model}/{c.dataset}: {c.committed}/{c.blocks} blocks committed, {status}"
                      + (f", {len(c.orphans)} uncommitted block(s) to be rewritten on resume" if c.orphans else ""))
        for msg in c.entry_problems:
            console.print(f"  [red]entry:[/red] {msg}")
        for b, msg in sorted(c.problems.items()):
            console.print(f"  block {b}: {msg}")
        if not c.complete:
            console.print(f"  incomplete: {c.blocks - c.pending} of {c.blocks} blocks committed "
                          "(finish it with the same `emocache extract` or `emocache merge`)")
            incomplete += 1
        bad += len(c.problems) + len(c.entry_problems)
    if bad:
        n_blocks = sum(len(c.problems) for c in checks)
        if n_blocks:
            console.print(f"[red]{n_blocks} block(s) to redo[/red]: rerun the same `emocache extract` with --redo-failed")
        n_entry = sum(len(c.entry_problems) for c in checks)
        if n_entry:
            console.print(f"[red]{n_entry} damaged entry array(s)[/red] (keys/labels): no redo repairs them; "
                          "re-extract into a new store")
        if checks.problems:
            console.print(f"[red]{len(checks.problems)} store problem(s)[/red]: nodes outside the layout or "
                          "missing from the metadata readers use; re-pack or re-extract the store")
        raise typer.Exit(1)
    if incomplete and not allow_partial:
        console.print(f"[red]{incomplete} incomplete entr{'y' if incomplete == 1 else 'ies'}[/red] "
                      "(pass --allow-partial to accept a store still being written)")
        raise typer.Exit(1)


@app.command()
def pack(url: str = typer.Argument(..., help="Store URL to pack."),
         out: Path = typer.Argument(..., help="Output .zip (one read-only file; open it like any store)."),
         storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP),
         max_chunk_mb: float = _limit_options()[0], max_metadata_mb: float = _limit_options()[1],
         max_json_depth: int = _limit_options()[2], max_rows: int = _limit_options()[3],
         max_json_values: int = _limit_options()[4]) -> None:
    """Pack a store into one read-only .zip with consolidated metadata, to hand to others."""
    from emocache.share import pack as run
    from emocache.store import StoreError

    limits = _limits(max_chunk_mb, max_metadata_mb, max_json_depth, max_rows, max_json_values)
    try:
        n = run(url, out, storage_options=_storage_options(storage_options), limits=limits)
    except (StoreError, OSError) as e:  # OSError: out exists, or its folder does not
        _fail(str(e))
    console.print(f"packed {n} objects into {out} ({out.stat().st_size / 1e6:.2f} MB)")


@app.command()
def merge(src: str = typer.Argument(..., help="Store (or .zip) to copy entries from."),
          dst: str = typer.Argument(..., help="Store to copy them into (created if missing)."),
          entry: list[str] = typer.Option([], help="MODEL/DATASET to copy; repeatable (default: all)."),
          storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP),
          max_chunk_mb: float = _limit_options()[0], max_metadata_mb: float = _limit_options()[1],
          max_json_depth: int = _limit_options()[2], max_rows: int = _limit_options()[3],
          max_json_values: int = _limit_options()[4]) -> None:
    """Copy committed blocks of SRC's entries into DST, refusing entries whose provenance or keys conflict."""
    from emocache.share import merge as run
    from emocache.store import StoreError

    limits = _limits(max_chunk_mb, max_metadata_mb, max_json_depth, max_rows, max_json_values)
    try:
        rows = run(src, dst, entries=entry or None, storage_options=_storage_options(storage_options), limits=limits)
    except (StoreError, KeyError) as e:
        _fail(str(e).strip("'\""))
    for r in rows:
        console.print(f"{r['model']}/{r['dataset']}: {r['copied']} block(s) copied, {r['skipped']} already in {dst}"
                      + (", new entry" if r["created"] else ""))


@app.command()
def consolidate(url: str = typer.Argument(..., help="Store URL."),
                storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP)) -> None:
    """Write consolidated metadata (one read lists every entry; for remote stores, after the last writer)."""
    from emocache.share import consolidate as run
    from emocache.store import StoreError

    try:
        n = run(url, storage_options=_storage_options(storage_options))
    except StoreError as e:
        _fail(str(e))
    console.print(f"{url}: consolidated metadata of {n} nodes")


E = EncoderConfig


@app.command()
def bench(
    store: bool = typer.Option(False, "--store", help="Store benchmark: Zarr store vs per-utterance .npy files."),
    model: Optional[str] = typer.Option(None, help="Encoder benchmark: batched vs naive for this neural model "
                                                   "(`emocache models`; weight-free ones are refused)."),
    n: int = typer.Option(2000, help="Utterances."),
    frames: int = typer.Option(300, help="--store: mean frames per utterance."),
    dim: int = typer.Option(768, help="--store: feature dimension."),
    workdir: Optional[Path] = typer.Option(None, help="--store: folder for the files (default: a temp folder)."),
    repeats: int = typer.Option(1, help="--store: time every read this many times and report the fastest."),
    threads: Optional[int] = typer.Option(None, help="--store: threads of the whole-entry read (all_frames; "
                                                     "default: the CPUs this process may use, at most 8)."),
    device: str = typer.Option(E.device, help="--model: " + DEVICE_HELP),
    dtype: str = typer.Option(E.dtype, help="--model: " + DTYPE_HELP),
    model_path: Optional[str] = typer.Option(E.model_path, help="--model: directory holding the weights."),
    tiny: bool = typer.Option(False, "--tiny", help="--model: tiny random model (CPU smoke run) instead of full size."),
    layers: Optional[str] = typer.Option(None, help="--model: time --layers LAYERS (all | K,K,...) against last "
                                                    "only, and the store bytes of each."),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="--model: " + TRUST_HELP),
    compile: str = typer.Option(E.compile, help="--model: " + COMPILE_HELP + " With on, eager and compiled are "
                                                "both timed."),
    frontend: str = typer.Option(E.frontend, help="--model: " + FRONTEND_HELP),
    batch_seconds: Optional[float] = typer.Option(None, help="--model: padded audio seconds per batch (default: 60 "
                                                             "on the CPU, the model's GPU budget on CUDA)."),
    max_batch: Optional[int] = typer.Option(None, help="--model: most utterances per batch (default: 64 on the "
                                                       "CPU, the model's GPU maximum on CUDA)."),
    naive_n: Optional[int] = typer.Option(None, help="--model: utterances timed the naive way (default: all on "
                                                     "CUDA, a quarter on the CPU)."),
    plan: list[str] = typer.Option([], help="--model: instead of timing, the batch plans (batches, padding %) on "
                                            "this manifest's lengths at batch budgets 240/480/960 s and sizes "
                                            "64/128/256; repeatable. No audio is read."),
) -> None:
    """Benchmarks: `--store` (write/read throughput and bytes) or `--model NAME` (encoder throughput)."""
    if store == bool(model):
        _fail("give exactly one of --store or --model NAME")
    if n < 1:
        _fail(f"--n {n}: must be at least 1")
    if store:
        from emocache.bench_store import bench_store, print_rows

        print_rows(bench_store(n_utts=n, mean_frames=frames, dim=dim, workdir=workdir, repeats=repeats,
                               threads=threads))
        return
    from emocache.bench import bench_encoder, print_table
    from emocache.encoders import EncoderError

    try:
        if plan:
            from emocache.bench import plan_padding, print_plan_table

            print_plan_table(plan_padding(model, plan))
            return
        if layers:
            from emocache.bench import bench_layers, print_layers_table

            print_layers_table(bench_layers(model, layers, n_utts=n, device=device, model_path=model_path, tiny=tiny,
                                            trust_checkpoint=trust_checkpoint))
            return
        for v, opt in ((batch_seconds, "--batch-seconds"), (max_batch, "--max-batch"), (naive_n, "--naive-n")):
            if v is not None and v <= 0:
                _fail(f"{opt} {v}: must be above 0")
        print_table([bench_encoder(model, n_utts=n, device=device, dtype=dtype, model_path=model_path, tiny=tiny,
                                   compile=compile, frontend=frontend, budget_seconds=batch_seconds,
                                   max_batch=max_batch, naive_utts=naive_n, trust_checkpoint=trust_checkpoint)])
    except (EncoderError, ValueError) as e:
        _fail(str(e))


@app.command()
def models() -> None:
    """List the registered model names (built in, then plugins of the `emocache.encoders` entry-point group)."""
    from emocache.encoders import names

    for name in names():
        typer.echo(name)


@app.command("manifest")
def manifest_cmd(
    folder: Optional[Path] = typer.Argument(None, help="Folder of audio files (searched recursively); "
                                            "not with --from-lhotse / --from-hf."),
    dataset: str = typer.Option(..., help="Dataset name (key prefix and 'dataset' field)."),
    out: Path = typer.Option(..., help="Output jsonl path."),
    labels_csv: Optional[Path] = typer.Option(None, help="CSV with columns file, emo."),
    pattern: Optional[str] = typer.Option(None, help="Regex with (?P<emo>...) matched on the relative path."),
    speaker_pattern: Optional[str] = typer.Option(
        None, help="Regex with (?P<speaker>...) matched on the relative path; writes a 'speaker' field "
                   "(`emocache folds` makes speaker-independent folds from it)."),
    from_lhotse: Optional[Path] = typer.Option(
        None, help="Build the manifest from a lhotse CutSet file (.jsonl/.jsonl.gz) of whole-file cuts instead "
                   "of a folder (optional extra: interop)."),
    from_hf: Optional[Path] = typer.Option(
        None, help="Build the manifest from a Hugging Face `datasets` dataset saved with save_to_disk (optional "
                   "extra: interop); embedded audio is written to --audio-dir."),
    label_field: Optional[str] = typer.Option(
        None, help="--from-lhotse: supervision attribute or custom field with the label (default emotion); "
                   "--from-hf: label column (default label)."),
    audio_column: str = typer.Option("audio", help="--from-hf: the Audio column."),
    key_column: Optional[str] = typer.Option(None, help="--from-hf: column with utterance keys (default: "
                                             "<dataset>-<file stem>)."),
    speaker_column: Optional[str] = typer.Option(None, help="--from-hf: column with speaker ids (written as "
                                                 "'speaker')."),
    audio_dir: Optional[Path] = typer.Option(None, help="--from-hf: folder for audio the dataset embeds as bytes "
                                             "(default: <out without .jsonl>_audio/); files are named from the keys "
                                             "(a key that is no safe file name gets a hashed one)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="--from-hf: replace audio files in --audio-dir that "
                                   "exist with other content (files with the same bytes are kept as they are)."),
) -> None:
    """Build an EmoBox-format manifest from a folder of audio plus a labels CSV or a filename pattern."""
    from emocache.audio import AudioError
    from emocache.manifest import ManifestError, build_manifest, check_name, write_manifest

    import warnings

    try:
        check_name(dataset, "--dataset")
    except ManifestError as e:
        _fail(str(e))

    if from_lhotse is not None or from_hf is not None:
        if labels_csv is not None or pattern or speaker_pattern:
            _fail("--labels-csv, --pattern and --speaker-pattern label a FOLDER; with --from-lhotse / --from-hf "
                  "the labels come from the corpus (--label-field)")
        _manifest_from_interop(folder, dataset, out, from_lhotse, from_hf, label_field, audio_column, key_column,
                               speaker_column, audio_dir, overwrite)
        return
    if label_field or key_column or speaker_column or audio_dir or overwrite:
        _fail("--label-field, --key-column, --speaker-column, --audio-dir and --overwrite go with --from-lhotse / "
              "--from-hf")
    if folder is None:
        _fail("give a FOLDER of audio, or --from-lhotse CUTS / --from-hf DATASET")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            utts = build_manifest(folder, dataset, labels_csv=labels_csv, pattern=pattern)
    except (ManifestError, AudioError) as e:
        _fail(str(e))
    for w in caught:
        console.print(f"[yellow]warning:[/yellow] {w.message}")
    if speaker_pattern:
        _write_with_speakers(utts, folder, speaker_pattern, out)
    else:
        write_manifest(utts, out)
    counts: dict[str, int] = {}
    for u in utts:
        counts[u.emo] = counts.get(u.emo, 0) + 1
    console.print(f"wrote {len(utts)} utterances to {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def _write_with_speakers(utts, folder: Path, speaker_pattern: str, out: Path) -> None:
    from emocache.folds import speakers_from_pattern
    from emocache.manifest import ManifestError, write_lines

    rel = [Path(u.wav).relative_to(folder).as_posix() for u in utts]
    try:
        speakers = speakers_from_pattern(rel, speaker_pattern)
    except ManifestError as e:
        _fail(str(e))
    write_lines([dict(u.to_json(), speaker=s) for u, s in zip(utts, speakers)], out)
    console.print(f"{len(set(speakers))} speakers")


def _manifest_from_interop(folder, dataset, out, from_lhotse, from_hf, label_field, audio_column, key_column,
                           speaker_column, audio_dir, overwrite=False) -> None:
    from emocache.manifest import write_lines
    from emocache.interop import InteropError, manifest_from_hf, manifest_from_lhotse

    if folder is not None or (from_lhotse is not None and from_hf is not None):
        _fail("give one source: a FOLDER, --from-lhotse CUTS or --from-hf DATASET")
    try:
        if from_lhotse is not None:
            lines = manifest_from_lhotse(from_lhotse, dataset, label_field=label_field or "emotion")
        else:
            audio_dir = audio_dir or out.with_name(out.name.removesuffix(".jsonl") + "_audio")
            lines = manifest_from_hf(from_hf, dataset, audio_dir, audio_column=audio_column,
                                     label_column=label_field or "label", key_column=key_column,
                                     speaker_column=speaker_column, overwrite=overwrite)
    except InteropError as e:
        _fail(str(e))
    write_lines(lines, out)
    counts: dict[str, int] = {}
    for d in lines:
        counts[d["emo"]] = counts.get(d["emo"], 0) + 1
    console.print(f"wrote {len(lines)} utterances to {out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


@app.command("folds")
def folds_cmd(
    manifest: Path = typer.Argument(..., help="Manifest (jsonl) of one dataset, e.g. from `emocache manifest`."),
    out: Path = typer.Option(..., help="Data folder to write <out>/<dataset>/ into (the trainer's --manifests)."),
    folds: str = typer.Option("5", "--folds", help="Number of folds K, or 'loso' (leave one speaker out; "
                              "needs speakers)."),
    assign: str = typer.Option("stratified-group", help="How speakers are assigned to K folds: stratified-group "
                               "(scikit-learn's StratifiedGroupKFold) | cover (ours: then moves speakers so that "
                               "each class is in as many test sets as possible)."),
    speaker_pattern: Optional[str] = typer.Option(None, help="Regex with (?P<speaker>...) searched in each wav "
                                                  "path (default: the lines' 'speaker' field, when present)."),
    speaker_field: str = typer.Option("speaker", help="Manifest field naming the speaker."),
    label_map: Optional[Path] = typer.Option(None, help="JSON raw label -> EmoBox name (default: guessed from "
                                             "the labels, unknown ones kept as they are, with a warning)."),
    dataset: Optional[str] = typer.Option(None, help="Dataset name (default: the lines' 'dataset' field)."),
    seed: int = typer.Option(0, help="Seed of the fold assignment."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing <out>/<dataset>/."),
) -> None:
    """Write <out>/<dataset>/ in EmoBox's layout: all lines, label_map.json, fold_<k>/ train and test files,
    and folds_labels.csv (test-set utterances per class and fold, also printed).

    Speaker-independent when speakers are known (K folds of whole speakers, or leave-one-speaker-out);
    otherwise stratified K-fold, with a warning.
    """
    import warnings

    import pandas as pd

    from emocache.folds import LABEL_TABLE, LOSO, FoldBalanceWarning, read_label_map_file, read_lines, write_dataset
    from emocache.manifest import ManifestError

    if folds != LOSO and not (folds.isdigit() and int(folds) >= 2):
        _fail(f"--folds {folds!r}: give a number of folds >= 2 or '{LOSO}'")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            lines = read_lines(manifest)
            lmap = read_label_map_file(label_map, [str(d["emo"]) for d in lines]) if label_map else None
            root = write_dataset(lines, out, dataset=dataset, n_folds=folds if folds == LOSO else int(folds),
                                 speaker_field=speaker_field, speaker_pattern=speaker_pattern, label_map=lmap,
                                 seed=seed, overwrite=overwrite, assign=assign)
    except (ManifestError, OSError) as e:
        _fail(str(e))
    for w in caught:
        if not issubclass(w.category, FoldBalanceWarning):
            console.print(f"[yellow]warning:[/yellow] {w.message}", soft_wrap=True, highlight=False)
    info = json.loads((root / "folds.json").read_text())
    table = pd.read_csv(root / LABEL_TABLE, index_col="fold")
    t = Table(title="test-set utterances per class and fold")
    for c in ["fold", *table.columns]:
        t.add_column(c.replace("n_test", "test").replace("n_speakers", "speakers"), justify="right")
    for k, row in table.iterrows():
        t.add_row(str(k), *[f"[red]{v}[/red]" if v == 0 else str(v) for v in row])
    t.add_row("all", *[str(table[c].sum()) if c != "n_speakers" else str(info["n_speakers"]) for c in table.columns])
    console.print(t)
    for w in caught:
        if issubclass(w.category, FoldBalanceWarning):
            console.print(f"[yellow]warning:[/yellow] {w.message}", soft_wrap=True, highlight=False)
    console.print(f"wrote {root}: {len(lines)} utterances, {info['strategy']}; test-set class shares differ from "
                  f"the whole corpus's by up to {info['labels']['max_share_gap_points']:g} points ({LABEL_TABLE}); "
                  f"train with `trainer run ... --dataset {root.name} --manifests {out}`", soft_wrap=True,
                  highlight=False)


@app.command("export")
def export_cmd(
    entry: str = typer.Argument(..., help="Store entry MODEL/DATASET (see `emocache info`)."),
    out: Path = typer.Argument(..., help="Output folder (must not exist)."),
    store: str = typer.Option(..., help="Store URL: local path, s3://bucket/path, gs://bucket/path, .zip."),
    to: str = typer.Option(..., "--to", help="hf (a `datasets` dataset: key, ClassLabel label, pooled, and with "
                           "--manifest speaker and the manifest's fields) | lhotse (a CutSet with the features "
                           "attached; with --manifest speakers, and a Recording per audio file found)."),
    manifest: Optional[Path] = typer.Option(None, help="The manifest (jsonl or dataset folder) the entry was "
                                            "extracted from: adds speakers and the manifest's fields (the store "
                                            "keeps keys, labels and features only)."),
    audio_root: list[str] = typer.Option([], help="PREFIX=DIR remap of the manifest's wav paths, as for "
                                         "`emocache extract`; repeatable."),
    speaker_pattern: Optional[str] = typer.Option(None, help="Regex with (?P<speaker>...) matching each whole key "
                                                  "(default: the manifest's 'speaker' field, else emocache's rule "
                                                  "for EmoBox datasets)."),
    frames: bool = typer.Option(False, "--frames", help="hf: also export each utterance's frames (a variable-length "
                                "sequence of float32 vectors). lhotse always attaches them."),
    storage_options: Optional[str] = typer.Option(None, help=STORAGE_OPTIONS_HELP),
) -> None:
    """Export a store entry to Hugging Face `datasets` or lhotse (optional extra: interop)."""
    import warnings

    from emocache.interop import InteropError, export_hf, export_lhotse
    from emocache.store import StoreError
    from emocache.suggest import did_you_mean

    writers = {"hf": export_hf, "lhotse": export_lhotse}
    if to not in writers:
        _fail(f"--to {to!r}: {did_you_mean(to, writers)}known: {', '.join(writers)}")
    if frames and to != "hf":
        _fail("--frames is for --to hf; the lhotse export attaches the frames of an entry that has them")
    if (audio_root or speaker_pattern) and manifest is None:
        _fail("--audio-root and --speaker-pattern read the manifest: give --manifest too")
    extra = {"frames": frames} if to == "hf" else {}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            n = writers[to](store, entry, out, storage_options=_storage_options(storage_options), manifest=manifest,
                            audio_root=audio_root, speaker_pattern=speaker_pattern, **extra)
    except (InteropError, StoreError, OSError) as e:
        _fail(str(e))
    for w in caught:
        if issubclass(w.category, UserWarning):
            console.print(f"[yellow]warning:[/yellow] {w.message}", soft_wrap=True, highlight=False)
    console.print(f"exported {n} utterances of {entry} to {out} ({to})"
                  + ("" if manifest else "; no speakers or manifest fields: give --manifest to add them"),
                  soft_wrap=True, highlight=False)


DEMO_GROUP = "emocache.demo"
"""Entry-point group of the end-to-end demo: it trains on what emocache extracts, so it lives in the package above
(the trainer registers it); emocache never imports that package."""


@app.command()
def demo(out: Path = typer.Option(Path("emocache-demo"), help="Working folder for corpus, store and results."),
         progress: bool = typer.Option(True, "--progress/--no-progress", help=PROGRESS_HELP)) -> None:
    """The default main job, offline: synthetic corpus -> fbank-stats store -> trainer -> results table."""
    from importlib.metadata import entry_points

    found = sorted(entry_points(group=DEMO_GROUP), key=lambda ep: ep.name)
    if not found:
        _fail(f"no demo is installed (entry-point group {DEMO_GROUP}; the trainer package registers it): "
              "reinstall the project with `pip install -e .`")
    found[0].load()(out, progress=progress, echo=console.print)


if __name__ == "__main__":
    app()
