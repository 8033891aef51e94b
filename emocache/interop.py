"""Interop with lhotse and Hugging Face `datasets`: manifests from their corpora, store entries out to them.

Both packages are optional (``pip install -e ".[interop]"``) and imported only here, when used.

* ``manifest_from_lhotse``: a CutSet (``.jsonl``/``.jsonl.gz``) of whole-file cuts -> manifest lines (key = cut id,
  label from the first supervision, speaker from it when set).
* ``manifest_from_hf``: a dataset saved with ``save_to_disk`` with an audio column -> manifest lines; audio that
  the dataset embeds as bytes is written out to files (emocache reads files), audio given by an existing path
  is used in place.
* ``export_hf``: a store entry -> a ``datasets`` dataset saved with ``save_to_disk``: key, label (``ClassLabel``),
  with a manifest the speaker and the manifest's fields, pooled (float32 [D]), the stored layers, and optionally
  the frames (variable-length sequences); the store's provenance is in its description.
* ``export_lhotse``: a store entry -> a CutSet with the features attached in lhotse's own storage (one
  ``NumpyHdf5Writer`` file, lossless): frames as ``cut.features``, the pooled vector as the custom array
  ``cut.pooled`` (``cut.load_pooled()``), the label in the supervision's ``custom``; with a manifest the speaker,
  the manifest's other fields and, where the audio files are, a ``Recording`` per file.

The store keeps keys, labels, features and provenance; speakers and the other manifest fields come from the
manifest the entry was extracted from (``manifest=``, the CLI's ``--manifest``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

INSTALL_HINT = 'pip install -e ".[interop]"  (or: pip install lhotse datasets h5py)'


class InteropError(ValueError):
    """Input from or output to lhotse / datasets that cannot be used; the message says why and what to do."""


def _import(name: str):
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise InteropError(f"this needs the optional package {name.split('.')[0]!r}: {INSTALL_HINT}") from None


# -- import ------------------------------------------------------------------------------------------------------
def manifest_from_lhotse(cuts_path: str | Path, dataset: str, label_field: str = "emotion") -> list[dict]:
    """Manifest lines from a lhotse CutSet file; each cut must cover one whole audio file.

    The label is the first supervision's ``label_field`` attribute or ``custom[label_field]``; its ``speaker``
    becomes the line's ``speaker``. Channels are 0-based in lhotse and 1-based in manifests.
    """
    lhotse = _import("lhotse")
    path = Path(cuts_path)
    if not path.exists():
        raise InteropError(f"--from-lhotse {path}: no such file")
    try:
        cuts = lhotse.CutSet.from_file(path)
    except Exception as e:  # lhotse raises many types for a file that is not a CutSet
        raise InteropError(f"--from-lhotse {path}: not a lhotse CutSet ({type(e).__name__}: {e})") from None
    from emocache.inputs import LIMITS

    lines = []
    for cut in cuts:
        where = f"{path}: cut {str(cut.id)[:60]!r}"
        if len(lines) >= LIMITS.manifest_lines:
            raise InteropError(f"--from-lhotse {path}: more than {LIMITS.manifest_lines} cuts, the limit of one "
                               "manifest; split the CutSet")
        _text(cut.id, LIMITS.key_bytes, "cut id", where)
        rec = getattr(cut, "recording", None)
        if rec is None:
            raise InteropError(f"{where} has no recording; emocache reads audio files")
        files = [s for s in rec.sources if s.type == "file"]
        if len(rec.sources) != 1 or not files:
            raise InteropError(f"{where}: its recording's sources are {[s.type for s in rec.sources]}; emocache "
                               "needs one audio file per cut (save them with `cuts.save_audios(DIR)` first)")
        if cut.start > 1e-3 or abs(cut.duration - rec.duration) > 1e-2:
            raise InteropError(f"{where} is a segment ({cut.start:.2f}-{cut.end:.2f} s of {rec.duration:.2f} s); "
                               "emocache manifests address whole files: `cuts.save_audios(DIR)` writes one per cut")
        channel = cut.channel if isinstance(cut.channel, int) else None
        if channel is None:
            raise InteropError(f"{where} mixes channels {cut.channel}; pick one channel per cut")
        if not cut.supervisions:
            raise InteropError(f"{where} has no supervision to take the label from")
        sup = cut.supervisions[0]
        label = getattr(sup, label_field, None)
        if label is None:
            label = (sup.custom or {}).get(label_field)
        if label in (None, ""):
            raise InteropError(f"{where}: its supervision has no {label_field!r} (attribute or custom field); "
                               "pass --label-field NAME")
        d = {"key": cut.id, "dataset": dataset, "wav": _text(files[0].source, LIMITS.path_bytes, "audio path", where),
             "type": "raw", "sample_rate": rec.sampling_rate, "num_frame": rec.num_samples, "task": "category",
             "length": rec.duration, "emo": _text(label, LIMITS.label_bytes, "label", where), "channel": channel + 1}
        if sup.speaker:
            d["speaker"] = _text(sup.speaker, LIMITS.key_bytes, "speaker", where)
        lines.append(d)
    if not lines:
        raise InteropError(f"--from-lhotse {path}: the CutSet is empty")
    return lines


def _text(value, limit: int, what: str, where: str) -> str:
    """A key, label or speaker from a corpus as text of at most ``limit`` bytes (InputLimits), else InteropError."""
    text = str(value)
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise InteropError(f"{where}: {what} {text[:40]!r}... is over the limit of {limit} bytes")
    return text


def audio_file_name(key: str, source_path: str | None) -> str:
    """The file name of embedded audio: the key through :func:`emocache.paths.safe_name` (a key with ``/``,
    ``..`` or an absolute path becomes a readable prefix plus a hash) and the source's suffix when it is a known
    audio suffix, else ``.wav`` (decoders read the content, not the name)."""
    from emocache.manifest import AUDIO_SUFFIXES
    from emocache.paths import safe_name

    suffix = Path(source_path or "").suffix.lower()
    return safe_name(key, "utt") + (suffix if suffix in AUDIO_SUFFIXES else ".wav")


def _exists(p: str) -> bool:
    try:
        return Path(p).exists()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def manifest_from_hf(path: str | Path, dataset: str, audio_dir: str | Path, audio_column: str = "audio",
                     label_column: str = "label", key_column: str | None = None,
                     speaker_column: str | None = None, overwrite: bool = False) -> list[dict]:
    """Manifest lines from a ``datasets`` dataset saved with ``save_to_disk`` (a Dataset, not a DatasetDict).

    Audio is not decoded here: an ``audio_column`` entry with bytes is written to ``audio_dir/<file name>``
    (:func:`audio_file_name`: never outside ``audio_dir``, never through a link; an existing file with other bytes
    is an error unless ``overwrite``), one with only a path must name an existing file. Labels of a ClassLabel
    column become their names. Keys: ``key_column``, else ``<dataset>-<file stem>`` (``<dataset>-<row>`` when stems
    repeat). Keys, labels and speakers are bounded by :class:`emocache.inputs.InputLimits`.
    """
    from emocache.inputs import LIMITS
    from emocache.paths import UnsafeNameError, confined, write_new

    datasets = _import("datasets")
    path = Path(path)
    if not path.exists():
        raise InteropError(f"--from-hf {path}: no such folder (a dataset written by save_to_disk)")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InteropError(f"--from-hf {path}: not a saved datasets dataset ({type(e).__name__}: {e})") from None
    if isinstance(ds, datasets.DatasetDict):
        raise InteropError(f"--from-hf {path}: a DatasetDict with splits {list(ds)}; pass one split's folder "
                           f"(e.g. {path}/{next(iter(ds))})")
    cols = ds.column_names
    for opt, col in (("--audio-column", audio_column), ("--label-field", label_column),
                     ("--key-column", key_column), ("--speaker-column", speaker_column)):
        if col is not None and col not in cols:
            raise InteropError(f"--from-hf {path}: no column {col!r} ({opt}); columns: {', '.join(cols)}")
    if not isinstance(ds.features[audio_column], datasets.Audio):
        raise InteropError(f"--from-hf {path}: column {audio_column!r} is {ds.features[audio_column]}, not Audio; "
                           "pass --audio-column NAME")
    names = getattr(ds.features[label_column], "names", None)  # ClassLabel
    import pyarrow.compute as pc

    arrow = ds.with_format("arrow")  # the audio column as stored: struct {bytes, path}, nothing decoded
    paths = pc.struct_field(arrow[audio_column], "path").to_pylist()
    stems = [Path(p).stem if p else "" for p in paths]
    unique = all(stems) and len(set(stems)) == len(stems)
    if len(paths) > LIMITS.manifest_lines:
        raise InteropError(f"--from-hf {path}: {len(paths)} rows, over the limit of {LIMITS.manifest_lines} lines of "
                           "one manifest; save the dataset in parts")
    where = f"--from-hf {path}"
    keys = ([_text(k, LIMITS.key_bytes, "key", where) for k in ds[key_column]] if key_column else
            [f"{dataset}-{s}" for s in stems] if unique and all(len(s.encode()) < LIMITS.key_bytes - len(dataset) - 1
                                                                 for s in stems)
            else [f"{dataset}-{i:06d}" for i in range(len(paths))])
    if len(set(keys)) != len(keys):
        raise InteropError(f"--from-hf {path}: column {key_column!r} repeats keys; keys must be unique")
    labels = list(ds[label_column])
    speakers = list(ds[speaker_column]) if speaker_column else None
    out_dir = Path(audio_dir)
    lines, made = [], {}
    rows = (b for batch in arrow.select_columns([audio_column]).iter(batch_size=64)
            for b in pc.struct_field(batch[audio_column], "bytes").to_pylist())  # one batch of audio at a time
    for i, (key, p, blob, lab) in enumerate(zip(keys, paths, rows, labels)):
        if lab is None or (names is not None and not (isinstance(lab, int) and 0 <= lab < len(names))):
            raise InteropError(f"--from-hf {path}: row {i} ({key!r}) has no {label_column!r} (value {lab!r})")
        label = _text(names[lab] if names is not None else lab, LIMITS.label_bytes, "label", f"{where} row {i}")
        if blob:
            name = audio_file_name(key, p)
            if name in made:
                raise InteropError(f"{where}: rows {made[name]} and {i} both make the audio file {name}; give unique "
                                   "keys (--key-column)")
            made[name] = i
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
                wav = confined(out_dir, name, "audio file")
                write_new(wav, blob, overwrite, "audio file")
            except UnsafeNameError as e:
                raise InteropError(f"{where} row {i} ({key[:60]!r}): {e}") from None
            except OSError as e:
                raise InteropError(f"{where}: cannot write {out_dir / name} ({e.strerror or e})") from None
            wav = wav.resolve()
        elif p and _exists(p):
            wav = Path(p).resolve()
        else:
            raise InteropError(f"--from-hf {path}: row {i} ({key[:60]!r}) has no audio bytes and its path "
                               f"{str(p)[:200]!r} does not exist here")
        d = {"key": key, "dataset": dataset, "wav": str(wav), "type": "raw", "task": "category",
             "emo": label, "channel": 1}
        if speakers is not None:
            d["speaker"] = _text(speakers[i], LIMITS.key_bytes, "speaker", f"{where} row {i}")
        lines.append(d)
    if not lines:
        raise InteropError(f"--from-hf {path}: the dataset has no rows")
    return lines


# -- export ------------------------------------------------------------------------------------------------------
EXPORT_BATCH = 256
"""Utterances per batch of the Hugging Face export with ``--frames`` (bounds the frames held in memory)."""

RESERVED = ("key", "label", "speaker", "pooled", "layers", "frames")
"""Columns of the Hugging Face export that manifest fields may not take."""

LHOTSE_FIELDS = ("key", "emo", "speaker", "channel")
"""Manifest fields the lhotse export holds in the cut and its supervision's own attributes; the others go to the
supervision's ``custom``, except those a Recording holds (:data:`RECORDING_FIELDS`) when there is one."""
RECORDING_FIELDS = ("wav", "sample_rate", "num_frame", "length")


def _entry(url: str, entry: str, storage_options: dict | None = None):
    from emocache.store import open_store
    from emocache.suggest import did_you_mean

    model, sep, dataset = entry.partition("/")
    if not sep or not model or not dataset:
        raise InteropError(f"{entry!r}: name the entry as MODEL/DATASET (see `emocache info {url}`)")
    store = open_store(url, storage_options=storage_options)
    if (model, dataset) not in store.entries():
        names = [f"{m}/{d}" for m, d in store.entries()]
        raise InteropError(f"{url}: no entry {entry}; {did_you_mean(entry, names)}entries: {', '.join(names) or 'none'}")
    return store, model, dataset


def _check_out(out: Path) -> None:
    if out.exists():
        raise InteropError(f"{out} exists; remove it or choose another output path (nothing is overwritten)")


def manifest_rows(manifest: str | Path, keys: list[str], labels: list[str], dataset: str,
                  audio_root: list[str] | None = None, speaker_pattern: str | None = None
                  ) -> tuple[list[dict], list[str] | None]:
    """The manifest line of each key (``wav`` remapped by ``audio_root``, as ``emocache extract`` reads it) and
    the speakers (None, with a warning, when neither the lines, ``speaker_pattern`` nor our rule for the
    dataset's keys tell them). Every key must be in the manifest with the store's label."""
    import warnings

    from emocache.manifest import ManifestError, dataset_manifest, parse_audio_root, read_manifest, remap
    from emocache.speakers import KEY_RULES, SpeakerError, speaker_ids

    path = Path(manifest)
    try:
        if path.is_dir():
            path = dataset_manifest(path)
        read_manifest(path)  # the checks and their messages
        roots = parse_audio_root(audio_root)
    except (ManifestError, OSError) as e:
        raise InteropError(f"--manifest: {e}") from None
    with open(path, encoding="utf-8") as f:
        by_key = {str(d["key"]): d for d in (json.loads(line) for line in f if line.strip())}
    rows = []
    for key, label in zip(keys, labels):
        d = by_key.get(key)
        if d is None:
            raise InteropError(f"--manifest {path}: no line for the entry's utterance {key!r}; pass the manifest "
                               "the entry was extracted from")
        if str(d["emo"]) != label:
            raise InteropError(f"--manifest {path}: {key!r} has label {d['emo']!r}, the store {label!r}; pass the "
                               "manifest the entry was extracted from")
        rows.append(dict(d, key=key, wav=remap(str(d["wav"]), roots)))
    has_field = all(isinstance(r.get("speaker"), (str, int)) and str(r["speaker"]) for r in rows)
    if not has_field and speaker_pattern is None and dataset not in KEY_RULES:
        warnings.warn(f"no speakers exported: {path} has no 'speaker' field and emocache has no rule for "
                      f"{dataset}'s keys; give --speaker-pattern REGEX (a (?P<speaker>...) group matching the whole "
                      "key) to export them", stacklevel=2)
        return rows, None
    try:
        return rows, speaker_ids(rows, dataset, speaker_pattern)
    except SpeakerError as e:
        raise InteropError(str(e)) from None


def _manifest_columns(rows: list[dict]) -> dict[str, list]:
    """Manifest fields other than key, label and speaker as columns (first-seen order; a field some lines lack
    is null there; a field mixing types is written as text)."""
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(k for k in r if k not in ("key", "emo", "speaker")))
    bad = [n for n in names if n in RESERVED]
    if bad:
        raise InteropError(f"manifest field(s) {bad} would replace the export's own column(s) of that name; rename "
                           "them in the manifest")
    cols = {}
    for n in names:
        vals = [r.get(n) for r in rows]
        kinds = {type(v) for v in vals if v is not None}
        if kinds <= {int, float}:  # numbers; JSON's 2 and 2.0 in one column become floats
            vals = [float(v) if float in kinds and v is not None else v for v in vals]
        elif len(kinds) > 1 or not kinds <= {str, bool}:
            vals = [v if v is None or isinstance(v, str) else json.dumps(v) for v in vals]
        cols[n] = vals
    return cols


def export_hf(url: str, entry: str, out: str | Path, storage_options: dict | None = None,
              manifest: str | Path | None = None, audio_root: list[str] | None = None,
              speaker_pattern: str | None = None, frames: bool = False) -> int:
    """Write entry MODEL/DATASET's extracted utterances as a ``datasets`` dataset to ``out`` (``save_to_disk``).

    Columns: ``key``; ``label`` (a ``ClassLabel`` over the entry's raw labels, sorted); with ``manifest``, the
    ``speaker`` (the lines' field, ``speaker_pattern`` on the keys or our rule for the dataset, see
    :func:`emocache.speakers.speaker_ids`) and every other manifest field (``wav`` as ``audio_root`` remaps it);
    ``pooled`` (float32 [D]); ``layers`` (float32 [L][D], entries made with ``--layers``); with ``frames``, the
    frames (float32 [T_i][D_frames], a variable-length sequence per utterance). The store's provenance is the
    dataset's description. Failed or pending utterances are left out, as in ``Store.pooled``. Returns the rows.
    """
    datasets = _import("datasets")
    import shutil
    import tempfile

    import pyarrow as pa
    from datasets.arrow_writer import ArrowWriter

    out = Path(out)
    _check_out(out)
    store, model, dataset = _entry(url, entry, storage_options)
    if frames and not store.has_frames(model, dataset):
        raise InteropError(f"{url}/{entry} has no frames (extracted with --no-frames); export without --frames")
    keys, X = store.pooled(model, dataset)  # X (N, D)
    labels = store.labels(model, dataset)
    names = sorted(set(labels))
    e = store.entry(model, dataset)
    Y = store.layers(model, dataset)[1] if e.layer_ids else None  # (N, L, D)
    rows, speakers = (manifest_rows(manifest, keys, labels, dataset, audio_root, speaker_pattern)
                      if manifest is not None else (None, None))
    fields = _manifest_columns(rows) if rows is not None else {}
    f32 = datasets.Value("float32")
    features = {"key": datasets.Value("string"), "label": datasets.ClassLabel(names=names)}
    if speakers is not None:
        features["speaker"] = datasets.Value("string")
    columns: dict[str, list] = {}
    for n, vals in fields.items():
        columns[n] = pa.array(vals)
        features[n] = datasets.Features.from_arrow_schema(pa.schema([(n, columns[n].type)]))[n]
    features["pooled"] = datasets.List(f32, length=X.shape[1])
    if Y is not None:
        features["layers"] = datasets.List(datasets.List(f32, length=X.shape[1]), length=Y.shape[1])
    if frames:
        features["frames"] = datasets.List(datasets.List(f32, length=e.frame_dim))
    features = datasets.Features(features)
    schema = features.arrow_schema
    step = EXPORT_BATCH if frames else max(len(keys), 1)
    label_id = {n: i for i, n in enumerate(names)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))  # the arrow file save_to_disk copies
    try:
        with ArrowWriter(features=features, path=str(tmp / "data.arrow")) as writer:
            for lo in range(0, len(keys), step):
                sl = slice(lo, lo + step)
                batch = {"key": pa.array(keys[sl], pa.string()),
                         "label": pa.array([label_id[lab] for lab in labels[sl]], pa.int64())}
                if speakers is not None:
                    batch["speaker"] = pa.array(speakers[sl], pa.string())
                batch.update({n: col[lo:lo + step] for n, col in columns.items()})
                batch["pooled"] = pa.FixedSizeListArray.from_arrays(pa.array(X[sl].reshape(-1), pa.float32()),
                                                                    X.shape[1])
                if Y is not None:
                    inner = pa.FixedSizeListArray.from_arrays(pa.array(Y[sl].reshape(-1), pa.float32()), Y.shape[2])
                    batch["layers"] = pa.FixedSizeListArray.from_arrays(inner, Y.shape[1])
                if frames:
                    fs = store.all_frames(model, dataset, keys=keys[sl])  # store order, the same as pooled's
                    if fs.keys != keys[sl]:
                        raise InteropError(f"{url}/{entry}: frames and pooled rows disagree; run `emocache verify "
                                           f"{url}`")
                    inner = pa.FixedSizeListArray.from_arrays(pa.array(fs.data.reshape(-1), pa.float32()),
                                                              fs.data.shape[1])
                    batch["frames"] = pa.ListArray.from_arrays(pa.array(fs.offsets, pa.int64()), inner)
                writer.write_table(pa.table(batch).cast(schema))
            if not keys:
                writer.write_table(schema.empty_table())
            writer.finalize()
        info = datasets.DatasetInfo(description=json.dumps({"emocache_entry": entry, "store": str(url),
                                                            "provenance": store.provenance(model, dataset)},
                                                           default=str), features=features)
        datasets.Dataset.from_file(str(tmp / "data.arrow"), info=info).save_to_disk(str(out))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(keys)


def _recordings(lhotse, rows: list[dict]) -> list | None:
    """A lhotse Recording per manifest row (id = key) when its audio file is there; None (with a warning) when
    none of them is; an error naming the first missing file when only some are."""
    import warnings

    here = [Path(r["wav"]).is_file() for r in rows]
    if rows and not any(here):
        warnings.warn(f"cuts without recordings: none of the {len(rows)} audio files is there (e.g. {rows[0]['wav']}); "
                      "give --audio-root PREFIX=DIR (as for `emocache extract`) to attach them", stacklevel=2)
        return None
    if not all(here):
        r = rows[here.index(False)]
        raise InteropError(f"{r['key']}: audio file {r['wav']} is not there ({here.count(False)} of {len(rows)} "
                           "missing); fix --audio-root PREFIX=DIR or the manifest")
    recs = []
    for r in rows:
        try:
            recs.append(lhotse.Recording.from_file(r["wav"], recording_id=r["key"]))
        except Exception as e:  # lhotse's backends raise many types for an unreadable file
            raise InteropError(f"{r['key']}: cannot read the audio header of {r['wav']} "
                               f"({type(e).__name__}: {e})") from None
    return recs


def export_lhotse(url: str, entry: str, out: str | Path, storage_options: dict | None = None,
                  manifest: str | Path | None = None, audio_root: list[str] | None = None,
                  speaker_pattern: str | None = None) -> int:
    """Write entry MODEL/DATASET as ``out/cuts.jsonl.gz`` plus ``out/features.h5`` (lhotse NumpyHdf5Writer).

    One MonoCut per extracted utterance (id = key) with one supervision carrying ``custom={"emotion": label}``,
    and the pooled vector as ``cut.pooled`` (``cut.load_pooled()``). With ``manifest``: the supervision's
    ``speaker`` (as in :func:`export_hf`) and the manifest's other fields in its ``custom``; and, when the audio
    files are there (``audio_root`` remaps their paths as ``emocache extract`` does), a ``Recording`` per file:
    the cut then spans the whole file on the manifest's channel. Frames, when the entry has them, are
    ``cut.features`` (frame shift ``1 / frame_rate``): ``cut.features.load()`` gives the stored frames exactly;
    ``cut.load_features()`` cuts them to lhotse's frame count for the cut's span, which with a recording can
    differ by a frame. Without a recording the cut spans the frames (0 s without frames). Returns the number
    of cuts.
    """
    lhotse = _import("lhotse")
    _import("h5py")
    from lhotse.features.io import NumpyHdf5Writer

    out = Path(out)
    _check_out(out)
    from emocache.paths import safe_name

    store, model, dataset = _entry(url, entry, storage_options)
    prov = store.provenance(model, dataset)
    keys, X = store.pooled(model, dataset)  # X (N, D)
    labels = store.labels(model, dataset)
    if len(set(keys)) != len(keys):
        raise InteropError(f"{url}/{entry}: repeats keys; a damaged store (run `emocache verify {url}`)")
    rows, speakers = (manifest_rows(manifest, keys, labels, dataset, audio_root, speaker_pattern)
                      if manifest is not None else (None, None))
    recs = _recordings(lhotse, rows) if rows is not None else None
    frame_rate = prov.get("frame_rate")
    sr = int(prov.get("sample_rate") or 16000)
    frames = store.iter_frames(model, dataset, keys) if store.has_frames(model, dataset) else None
    out.mkdir(parents=True)
    cuts = []
    with NumpyHdf5Writer((out / "features.h5").resolve()) as w:
        it = iter(frames) if frames is not None else None
        for i, (key, label, x) in enumerate(zip(keys, labels, X)):
            F = None
            if it is not None:
                fkey, F = next(it)  # store order, the same as pooled's
                if fkey != key:
                    raise InteropError(f"{url}/{entry}: frames and pooled rows disagree at {key!r}; "
                                       f"run `emocache verify {url}`")
            span = round(len(F) / frame_rate, 6) if F is not None and frame_rate else 0.0
            rec = recs[i] if recs is not None else None
            channel = int(rows[i].get("channel") or 1) - 1 if rows is not None else 0
            if rec is not None and channel not in rec.channel_ids:
                raise InteropError(f"{key}: channel {channel + 1} of the manifest, but {rows[i]['wav']} has "
                                   f"{rec.num_channels} channel(s)")
            dur = rec.duration if rec is not None else span
            custom = {"emotion": label}
            if rows is not None:
                held = LHOTSE_FIELDS + (RECORDING_FIELDS if rec is not None else ())
                custom.update({k: v for k, v in rows[i].items() if k not in held})
            sup = lhotse.SupervisionSegment(id=key, recording_id=key, start=0.0, duration=dur, channel=channel,
                                            speaker=speakers[i] if speakers is not None else None, custom=custom)
            cut = lhotse.MonoCut(id=key, start=0.0, duration=dur, channel=channel, recording=rec, supervisions=[sup])
            name = safe_name(key, "utt")  # an HDF5 path: a key's '/' would nest groups and collide
            cut.pooled = w.store_array(f"{name}/pooled", np.asarray(x, dtype=np.float32))
            if F is not None and frame_rate:
                cut.features = lhotse.Features(
                    type=model, num_frames=len(F), num_features=F.shape[1], frame_shift=1.0 / frame_rate,
                    sampling_rate=sr, start=0.0, duration=span, storage_type=w.name,
                    storage_path=str(w.storage_path), storage_key=w.write(f"{name}/frames", F.astype(np.float32)),
                    recording_id=key if rec is not None else None, channels=channel if rec is not None else None)
            elif F is not None:
                cut.frames = w.store_array(f"{name}/frames", F.astype(np.float32))
            cuts.append(cut)
    cs = lhotse.CutSet.from_cuts(cuts)
    cs.to_file(out / "cuts.jsonl.gz")
    (out / "provenance.json").write_text(json.dumps({"emocache_entry": entry, "store": str(url),
                                                     "provenance": prov}, indent=2, default=str) + "\n")
    return len(cuts)
