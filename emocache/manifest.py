"""EmoBox manifests: reading, validation, folds, label maps, and building one from a folder of audio.

An EmoBox manifest is JSON lines, one utterance a line::

    {"key": "urdu-SM20_F8_N012", "dataset": "urdu", "wav": "downloads/urdu/Neutral/SM20_F8_N012.wav",
     "type": "raw", "sample_rate": 44100, "num_frame": 132456, "task": "category",
     "length": 3.0035, "emo": "N", "channel": 1}

A dataset folder holds ``<ds>.jsonl`` (all utterances), ``label_map.json`` and
``fold_<k>/<ds>_{train,valid,test}_fold_<k>.jsonl``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import warnings
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

from emocache.inputs import LIMITS, InputError, check_file, load_json, parse_json
from emocache.paths import NAME_MAX, RESERVED_NAMES, UnsafeNameError  # noqa: F401  (re-exported)
from emocache.paths import check_name as _check_name

REQUIRED = ("key", "wav", "emo")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".mp4", ".m4a", ".aiff", ".aif", ".opus", ".webm")


class ManifestError(ValueError):
    """A manifest line that cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True, slots=True)
class Utterance:
    """One manifest line."""

    key: str
    """Unique utterance key (the store's row name)."""
    wav: str
    """Audio path after ``--audio-root`` remapping."""
    emo: str
    """Raw label as written in the manifest."""
    dataset: str = ""
    """Dataset name."""
    channel: int = 1
    """1-based channel to read."""
    sample_rate: int | None = None
    """Sample rate the manifest claims (the audio file wins)."""
    num_frame: int | None = None
    """Number of samples the manifest claims."""
    length: float | None = None
    """Duration in seconds the manifest claims."""

    def to_json(self) -> dict:
        d = asdict(self)
        d.update(type="raw", task="category")
        return d


@dataclass(frozen=True)
class Fold:
    """One EmoBox fold: the keys of each split."""

    k: int
    train: tuple[str, ...]
    test: tuple[str, ...]
    valid: tuple[str, ...] = ()


def parse_audio_root(specs: list[str] | None) -> list[tuple[str, str]]:
    """Parse ``PREFIX=DIR`` remaps (``downloads/urdu=/data/urdu``); longest prefix first."""
    out = []
    for spec in specs or []:
        if "=" not in spec:
            raise ManifestError(f"--audio-root {spec!r}: expected PREFIX=DIR, e.g. downloads/urdu=/data/urdu")
        prefix, _, target = spec.partition("=")
        out.append((prefix.rstrip("/"), target.rstrip("/")))
    return sorted(out, key=lambda p: -len(p[0]))


def remap(wav: str, roots: list[tuple[str, str]], base: Path | None = None) -> str:
    """Apply the first matching prefix remap; relative paths without a remap resolve against ``base``."""
    for prefix, target in roots:
        if wav == prefix or wav.startswith(prefix + "/"):
            return target + wav[len(prefix):]
    if base is not None and not Path(wav).is_absolute() and "://" not in wav:
        return str(base / wav)
    return wav


def check_name(name: str, what: str = "dataset", where: str = "") -> str:
    """``name`` when it can name a model or dataset in a store (the one rule of :mod:`emocache.paths`: one path
    component of letters, digits and ``. _ + : = @ -``, not starting with a dot, at most NAME_MAX bytes, not
    reserved); else ManifestError."""
    try:
        return _check_name(name, what, where)
    except UnsafeNameError as e:
        raise ManifestError(str(e)) from None


def _field(d: dict, name: str, limit: int, where: str, fix: str) -> str:
    """A manifest field as text: a string or a number (not a bool, list or object), at most ``limit`` bytes."""
    v = d[name]
    if type(v) is str and len(v) * 4 <= limit:  # the common case: at most 4 UTF-8 bytes a character
        return v
    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise ManifestError(f"{where}: {name} is a {type(v).__name__}; give it as a string")
    text = str(v)
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise ManifestError(f"{where}: {name} is {len(text.encode('utf-8', 'surrogatepass'))} bytes, over the limit "
                            f"of {limit}; {fix}")
    return text


def read_manifest(path: str | Path, audio_root: list[str] | None = None,
                  label_map: dict[str, str] | None = None, base: Path | None = None,
                  links: bool = True) -> list[Utterance]:
    """Read and validate one EmoBox jsonl file, streamed line by line within :class:`~emocache.inputs.InputLimits`.

    Raises :class:`ManifestError` naming the file and line for a file that is not regular or too big (checked
    before a line is read), too many or too long lines, malformed or too deeply nested JSON, missing fields or
    fields over their length limit, duplicate keys, bad channels, and (when ``label_map`` is given) labels the
    map does not know. ``links``: whether ``path`` may be a symbolic link (False for a file found in a folder).
    Missing audio files are not checked here: extraction records them per utterance.
    """
    path = Path(path)
    try:
        check_file(path, LIMITS.manifest_bytes, "manifest", links)
    except InputError as e:
        raise ManifestError(str(e)) from None
    roots = parse_audio_root(audio_root)
    seen: dict[str, int] = {}
    out: list[Utterance] = []
    with open(path, "rb") as f:
        n = 0
        while (chunk := f.read(1 << 20)) and n <= LIMITS.manifest_lines:  # counted before any line is parsed
            n += chunk.count(b"\n")
        if n > LIMITS.manifest_lines:
            raise ManifestError(f"{path}: more than {LIMITS.manifest_lines} lines, the limit of one manifest; "
                                "split the dataset into several manifests (the dataset field groups them)")
        f.seek(0)
        lineno = 0
        while raw := f.readline(LIMITS.line_bytes + 1):
            lineno += 1
            where = f"{path}:{lineno}"
            if lineno > LIMITS.manifest_lines:
                raise ManifestError(f"{path}: more than {LIMITS.manifest_lines} lines, the limit of one manifest; "
                                    "split the dataset into several manifests")
            if len(raw) > LIMITS.line_bytes and not raw.endswith(b"\n"):
                raise ManifestError(f"{where}: longer than {LIMITS.line_bytes} bytes, the limit of a manifest line; "
                                    "a damaged or hostile manifest")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ManifestError(f"{where}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); "
                                    "save the manifest as UTF-8, e.g. `iconv -f latin1 -t utf-8`") from None
            if not line.strip():
                continue
            try:
                d = parse_json(line, where)
            except InputError as e:
                raise ManifestError(f"{e}; each line must be one JSON object") from None
            if not isinstance(d, dict):
                raise ManifestError(f"{where}: expected a JSON object, got {type(d).__name__}")
            missing = [k for k in REQUIRED if k not in d or d[k] in (None, "")]
            if missing:
                raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}; every line needs "
                                    f"{', '.join(REQUIRED)}")
            key = _field(d, "key", LIMITS.key_bytes, where, "use short unique keys")
            emo = _field(d, "emo", LIMITS.label_bytes, where, "a label is a short class name")
            wav = _field(d, "wav", LIMITS.path_bytes, where, "give a path the file system can open")
            if key in seen:
                raise ManifestError(f"{where}: duplicate key {key!r} (first on line {seen[key]}); "
                                    "keys must be unique within a dataset: rename or drop one of the lines")
            seen[key] = lineno
            try:
                ch = d.get("channel")
                channel = 1 if ch in (None, "") else int(ch)  # an explicit 0 is a 0-based channel: refuse it
                if ch not in (None, "") and float(ch) != channel:
                    raise ValueError
            except (TypeError, ValueError, OverflowError):
                raise ManifestError(f"{where}: channel {d.get('channel')!r} is not an integer; "
                                    "use a 1-based channel number") from None
            if not 1 <= channel <= 1024:
                raise ManifestError(f"{where}: channel {channel} is out of range; channels are 1-based "
                                    "(1 = first channel)")
            if label_map is not None and lookup_label(emo, label_map) is None:
                raise ManifestError(f"{where}: label {emo!r} is not in the label map "
                                    f"(known: {', '.join(sorted(label_map))}); add it to label_map.json "
                                    "or drop the line")
            try:
                meta = dict(sample_rate=int(d["sample_rate"]) if d.get("sample_rate") else None,
                            num_frame=int(float(d["num_frame"])) if d.get("num_frame") else None,
                            length=float(d["length"]) if d.get("length") else None)
            except (TypeError, ValueError, OverflowError):
                raise ManifestError(f"{where}: sample_rate, num_frame and length must be numbers (got "
                                    f"{d.get('sample_rate')!r}, {d.get('num_frame')!r}, {d.get('length')!r}); "
                                    "fix them or drop the fields (the audio file is read anyway)") from None
            dataset = d.get("dataset", "")
            if not isinstance(dataset, (str, int)) or isinstance(dataset, bool):
                raise ManifestError(f"{where}: dataset {dataset!r} is not a name; give the dataset's name as a "
                                    "string, or drop the field to use the manifest's file name")
            dataset = _field(d, "dataset", LIMITS.key_bytes, where, "a dataset name is short") if dataset != "" else ""
            out.append(Utterance(
                key=key, wav=remap(wav, roots, base), emo=emo,
                dataset=dataset, channel=channel, **meta,
            ))
    if not out:
        raise ManifestError(f"{path}: no utterances; the file is empty")
    return out


def read_manifests(paths: list[str | Path], audio_root: list[str] | None = None,
                   base: Path | None = None) -> dict[str, list[Utterance]]:
    """Read several manifests and group utterances by dataset (the ``dataset`` field, else the file stem)."""
    by_ds: dict[str, list[Utterance]] = {}
    where: dict[str, str] = {}
    for p in paths:
        p, inside = Path(p), Path(p).is_dir()
        if inside:
            p = dataset_manifest(p)
        for u in read_manifest(p, audio_root, base=base, links=not inside):
            ds = check_name(u.dataset or p.stem, "dataset", str(p))
            lst = by_ds.setdefault(ds, [])
            if u.key in where and where[u.key] != str(p):
                raise ManifestError(f"{p}: key {u.key!r} also appears in {where[u.key]}; "
                                    "pass each dataset's utterances once")
            where[u.key] = str(p)
            lst.append(u)
    for ds, lst in by_ds.items():
        seen = set()
        for u in lst:
            if u.key in seen:
                raise ManifestError(f"dataset {ds}: key {u.key!r} is given twice across the manifests passed")
            seen.add(u.key)
    return by_ds


def dataset_manifest(folder: str | Path) -> Path:
    """The whole-dataset jsonl in an EmoBox dataset folder (``<ds>/<ds>.jsonl``); ManifestError without one."""
    folder = Path(folder)
    whole = folder / f"{folder.name}.jsonl"
    if whole.exists() or whole.is_symlink():
        return whole
    raise ManifestError(f"{folder}: no {whole.name}; pass the fold files instead "
                        f"(e.g. {folder}/fold_1/{folder.name}_test_fold_1.jsonl)")


def read_folds(folder: str | Path) -> list[Fold]:
    """Folds of an EmoBox dataset folder, sorted by k."""
    folder = Path(folder)
    folds = []
    fold_dirs = [d for d in folder.glob("fold_*") if d.is_dir() and re.fullmatch(r"fold_\d+", d.name)]
    for d in sorted(fold_dirs, key=lambda p: int(p.name.split("_")[1])):
        k = int(d.name.split("_")[1])
        splits = {}
        for split in ("train", "valid", "test"):
            files = list(d.glob(f"*_{split}_fold_{k}.jsonl"))
            splits[split] = tuple(u.key for f in files for u in read_manifest(f, links=False))
        if not splits["test"]:
            raise ManifestError(f"{d}: no *_test_fold_{k}.jsonl; every fold needs a test split")
        folds.append(Fold(k=k, **splits))
    if not folds:
        raise ManifestError(f"{folder}: no fold_<k> folders; EmoBox keeps folds as fold_<k>/<ds>_<split>_fold_<k>.jsonl")
    return folds


def load_label_map(folder_or_file: str | Path, links: bool = False) -> dict[str, str]:
    """EmoBox ``label_map.json`` (raw label -> canonical name), read within the input limits and checked: a JSON
    object of short strings. ``links``: whether the file may be a symbolic link (not by default: it is found in
    a data folder)."""
    p = Path(folder_or_file)
    if p.is_dir():
        p = p / "label_map.json"
    try:
        m = load_json(p, "label map", links=links)
    except InputError as e:
        raise ManifestError(str(e)) from None
    return check_label_map(m, str(p))


def check_label_map(m, where: str) -> dict[str, str]:
    """``m`` when it is a label map (an object of strings to strings, each at most the label limit); else
    ManifestError naming ``where``."""
    if not isinstance(m, dict) or not all(isinstance(v, str) for v in m.values()):
        what = f"a {type(m).__name__}" if not isinstance(m, dict) else "one with non-string values"
        raise ManifestError(f"{where}: a label map is a JSON object {{\"raw label\": \"Class\", ...}}, not {what}; "
                            "fix the file")
    long = [k for k, v in m.items() if max(len(k.encode()), len(v.encode())) > LIMITS.label_bytes]
    if long:
        raise ManifestError(f"{where}: label {long[0][:40]!r} (or its name) is over the limit of {LIMITS.label_bytes} "
                            "bytes; labels are short class names")
    return m


def six_class_map() -> dict[str, str]:
    """The B-GRPO paper's six-class map (canonical EmoBox label -> Neutral/Angry/Surprise/Sad/Happy/Fear)."""
    text = resources.files("emocache.manifests").joinpath("six_class.json").read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


def lookup_label(raw: str, label_map: dict[str, str]) -> str | None:
    """Map a raw label; falls back to a case-insensitive match (EmoBox's emodb map says 'Neutral' for 'neutral')."""
    if raw in label_map:
        return label_map[raw]
    low = {k.lower(): v for k, v in label_map.items()}
    return low.get(raw.lower())


def utterances_sha256(utts: list[Utterance]) -> str:
    """Identity of a manifest's content (keys, paths, labels, channels), independent of the file it came from."""
    h = hashlib.sha256()
    for u in utts:
        h.update(json.dumps([u.key, u.wav, u.emo, u.channel]).encode())
    return h.hexdigest()


def build_manifest(folder: str | Path, dataset: str, labels_csv: str | Path | None = None,
                   pattern: str | None = None) -> list[Utterance]:
    """Make EmoBox-format lines for every audio file under ``folder``.

    Labels come from ``labels_csv`` (columns ``file`` (path relative to folder, or stem) and ``emo``), or from
    ``pattern``, a regex with a named group ``emo`` matched against the path relative to the folder
    (e.g. ``'(?P<emo>[^/]+)/'`` for one folder per emotion).
    """
    from emocache.audio import AudioError, probe

    folder = Path(folder)
    if (labels_csv is None) == (pattern is None):
        raise ManifestError("give exactly one of --labels-csv or --pattern to label the files")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise ManifestError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    labels: dict[str, str] = {}
    if labels_csv is not None:
        with open(labels_csv, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"file", "emo"} <= set(reader.fieldnames):
                raise ManifestError(f"{labels_csv}: needs a header with columns 'file' and 'emo'")
            for row in reader:
                labels[row["file"]] = row["emo"]
    rx = re.compile(pattern) if pattern else None
    if rx is not None and "emo" not in rx.groupindex:
        raise ManifestError(f"--pattern {pattern!r} has no named group (?P<emo>...)")
    out = []
    made: dict[str, str] = {}
    for p in files:
        rel = p.relative_to(folder).as_posix()
        if rx is not None:
            m = rx.search(rel)
            if not m:
                raise ManifestError(f"{rel}: does not match --pattern {pattern!r}; fix the pattern or move the file")
            emo = m.group("emo")
        else:
            emo = labels.get(rel) or labels.get(p.stem)
            if emo is None:
                raise ManifestError(f"{rel}: no row in {labels_csv} (looked for file={rel!r} or {p.stem!r})")
        try:
            info = probe(p)
        except AudioError as e:  # kept: extraction records it as a failed utterance with this reason
            warnings.warn(f"{rel}: {e}; kept in the manifest without sample_rate/length", stacklevel=2)
            info = None
        key = f"{dataset}-{Path(rel).with_suffix('').as_posix().replace('/', '_')}"
        if key in made:  # a/b.wav vs a_b.wav, or x.wav vs x.flac
            raise ManifestError(f"{rel} and {made[key]} both make the key {key!r}; rename one of the files")
        made[key] = rel
        out.append(Utterance(key=key,
                             wav=str(p), emo=emo, dataset=dataset, channel=1,
                             sample_rate=info.sample_rate if info else None, num_frame=info.frames if info else None,
                             length=info.frames / info.sample_rate if info and info.sample_rate else None))
    return out


def write_lines(lines: list[dict], path: str | Path) -> None:
    """Write JSON lines (one object a line, UTF-8), making the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for d in lines:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def write_manifest(utts: list[Utterance], path: str | Path) -> None:
    write_lines([u.to_json() for u in utts], path)
