"""Interop with lhotse and Hugging Face `datasets`: manifests from their corpora, store entries out to them.

Both packages are optional (``pip install -e ".[interop]"``) and imported only here, when used.

* ``manifest_from_lhotse``: a CutSet (``.jsonl``/``.jsonl.gz``) of whole-file cuts -> manifest lines (key = cut id,
  label from the first supervision, speaker from it when set).
* ``manifest_from_hf``: a dataset saved with ``save_to_disk`` with an audio column -> manifest lines; audio that
  the dataset embeds as bytes is written out to files (emocache reads files), audio given by an existing path
  is used in place.
* ``export_hf``: a store entry -> a ``datasets`` dataset with columns key, label, pooled (float32 [D]) saved
  with ``save_to_disk``; the store's provenance is in its description.
* ``export_lhotse``: a store entry -> a CutSet with the features attached in lhotse's own storage (one
  ``NumpyHdf5Writer`` file, lossless): frames as ``cut.features`` (``cut.load_features()``), the pooled vector
  as the custom array ``cut.pooled`` (``cut.load_pooled()``), the label in the supervision's ``custom``.
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
def _entry(url: str, entry: str, storage_options: dict | None = None):
    from emocache.store import open_store

    model, sep, dataset = entry.partition("/")
    if not sep or not model or not dataset:
        raise InteropError(f"{entry!r}: name the entry as MODEL/DATASET (see `emocache info {url}`)")
    store = open_store(url, storage_options=storage_options)
    if (model, dataset) not in store.entries():
        known = ", ".join(f"{m}/{d}" for m, d in store.entries()) or "none"
        raise InteropError(f"{url}: no entry {entry} (entries: {known})")
    return store, model, dataset


def _check_out(out: Path) -> None:
    if out.exists():
        raise InteropError(f"{out} exists; remove it or choose another output path (nothing is overwritten)")


def export_hf(url: str, entry: str, out: str | Path, storage_options: dict | None = None) -> int:
    """Write entry MODEL/DATASET's extracted utterances as a ``datasets`` dataset (key, label, pooled) to ``out``.

    Returns the number of rows. Failed or pending utterances are left out, as in ``Store.pooled``.
    """
    datasets = _import("datasets")
    import pyarrow as pa

    out = Path(out)
    _check_out(out)
    store, model, dataset = _entry(url, entry, storage_options)
    keys, X = store.pooled(model, dataset)  # X (N, D)
    labels = store.labels(model, dataset)
    d = X.shape[1]
    table = pa.table({"key": pa.array(keys, pa.string()), "label": pa.array(labels, pa.string()),
                      "pooled": pa.FixedSizeListArray.from_arrays(pa.array(X.reshape(-1), pa.float32()), d)})
    features = datasets.Features({"key": datasets.Value("string"), "label": datasets.Value("string"),
                                  "pooled": datasets.List(datasets.Value("float32"), length=d)})
    info = datasets.DatasetInfo(description=json.dumps({"emocache_entry": entry, "store": str(url),
                                                        "provenance": store.provenance(model, dataset)},
                                                       default=str), features=features)
    datasets.Dataset(table, info=info).save_to_disk(str(out))
    return len(keys)


def export_lhotse(url: str, entry: str, out: str | Path, storage_options: dict | None = None) -> int:
    """Write entry MODEL/DATASET as ``out/cuts.jsonl.gz`` plus ``out/features.h5`` (lhotse NumpyHdf5Writer).

    One MonoCut per extracted utterance (id = key, no recording: the store has features, not audio), with a
    supervision carrying ``custom={"emotion": label}``, the pooled vector as ``cut.pooled`` and, when the entry
    has frames, ``cut.features`` (frame shift ``1 / frame_rate``; the cut's duration is its frames' span, 0 s
    without frames). Returns the number of cuts.
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
    frame_rate = prov.get("frame_rate")
    sr = int(prov.get("sample_rate") or 16000)
    frames = store.iter_frames(model, dataset, keys) if store.has_frames(model, dataset) else None
    out.mkdir(parents=True)
    cuts = []
    with NumpyHdf5Writer((out / "features.h5").resolve()) as w:
        it = iter(frames) if frames is not None else None
        for key, label, x in zip(keys, labels, X):
            F = None
            if it is not None:
                fkey, F = next(it)  # store order, the same as pooled's
                if fkey != key:
                    raise InteropError(f"{url}/{entry}: frames and pooled rows disagree at {key!r}; "
                                       f"run `emocache verify {url}`")
            dur = round(len(F) / frame_rate, 6) if F is not None and frame_rate else 0.0
            cut = lhotse.MonoCut(id=key, start=0.0, duration=dur, channel=0,
                                 supervisions=[lhotse.SupervisionSegment(id=key, recording_id=key, start=0.0,
                                                                         duration=dur,
                                                                         custom={"emotion": label})])
            name = safe_name(key, "utt")  # an HDF5 path: a key's '/' would nest groups and collide
            cut.pooled = w.store_array(f"{name}/pooled", np.asarray(x, dtype=np.float32))
            if F is not None and frame_rate:
                cut.features = lhotse.Features(
                    type=model, num_frames=len(F), num_features=F.shape[1], frame_shift=1.0 / frame_rate,
                    sampling_rate=sr, start=0.0, duration=dur, storage_type=w.name,
                    storage_path=str(w.storage_path), storage_key=w.write(f"{name}/frames", F.astype(np.float32)))
            elif F is not None:
                cut.frames = w.store_array(f"{name}/frames", F.astype(np.float32))
            cuts.append(cut)
    cs = lhotse.CutSet.from_cuts(cuts)
    cs.to_file(out / "cuts.jsonl.gz")
    (out / "provenance.json").write_text(json.dumps({"emocache_entry": entry, "store": str(url),
                                                     "provenance": prov}, indent=2, default=str) + "\n")
    return len(cuts)

