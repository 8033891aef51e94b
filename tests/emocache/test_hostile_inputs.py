"""Hostile datasets, manifests, model folders and options (issue 22, docs/STORE.md threat model).

One row per hostile input: how it is made, the command a user runs on it (the CLI in a subprocess), the exit
code and one-line message expected, then the checks every row gets: nothing written outside the folder the
command may write to, no file outside changed, no code run (a pickle payload would create a marker file), the
child's peak memory under PEAK_MB. Every test has a timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from emocache.paths import UnsafeNameError, check_name, confined, safe_name, write_new
from tests.helpers.audio import tone, write_wav
from tests.helpers.cli import run_measured

pytestmark = pytest.mark.timeout(240)
PEAK_MB = 512
"""Peak resident memory allowed to every hostile row's child process (its imports included)."""
FUNASR_PEAK_MB = 1024
"""The same for rows that build a funasr model: importing funasr alone takes about 600 MB."""


class Touch:
    """Unpickling this creates the marker file: what a malicious pickle would do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every file (links: 'link:' + target) under ``root``."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.fixture
def sandbox(tmp_path):
    """tmp_path/box: the inputs and what a command may write; tmp_path/outside: files that must not change
    (a dot-file a hostile dataset would overwrite); tmp_path/marker: created only if a payload runs."""
    box, outside = tmp_path / "box", tmp_path / "outside"
    box.mkdir()
    outside.mkdir()
    (outside / ".bashrc").write_text("# the user's own\n")
    return tmp_path


# -- inputs ------------------------------------------------------------------------------------------------------
def wav_bytes(seconds: float = 0.3, freq: float = 200.0, tmp: Path | None = None) -> bytes:
    p = write_wav((tmp or Path("/tmp")) / f"t{freq}.wav", tone(seconds, freq=freq))
    data = p.read_bytes()
    p.unlink()
    return data


def hf_dataset(root: Path, keys: list[str], paths: list[str]) -> Path:
    """A `datasets` dataset saved with save_to_disk: embedded audio bytes, a key column, a ClassLabel label."""
    datasets = pytest.importorskip("datasets", reason='optional extra: pip install -e ".[interop]"')
    rows = [{"path": p, "bytes": wav_bytes(0.3, 150.0 + 30 * i, root)} for i, p in enumerate(paths)]
    ds = datasets.Dataset.from_dict({"audio": rows, "label": [i % 2 for i in range(len(keys))], "key": keys})
    ds = ds.cast_column("audio", datasets.Audio()).cast_column("label", datasets.ClassLabel(names=["ang", "neu"]))
    ds.save_to_disk(str(root / "hf"))
    return root / "hf"


def manifest(root: Path, lines: list[str] | None = None, name: str = "m.jsonl") -> Path:
    """A manifest of one real wav (a valid first line), then ``lines`` as written."""
    wav = write_wav(root / "a.wav", tone(0.3))
    good = json.dumps({"key": "d-0", "dataset": "d", "wav": str(wav), "emo": "neu"})
    p = root / name
    p.write_text("\n".join([good, *(lines or [])]) + "\n")
    return p


def big_manifest(root: Path, n: int) -> Path:
    p = root / "big.jsonl"
    with open(p, "w") as f:
        for i in range(n):
            f.write('{"key":"k%07d","wav":"a/%07d.wav","emo":"neu"}\n' % (i, i))
    return p


def label_line(root: Path, size: int) -> Path:
    p = root / "label.jsonl"
    with open(p, "w") as f:
        f.write('{"key": "k", "wav": "a.wav", "emo": "')
        for _ in range(size >> 20):
            f.write("x" * (1 << 20))
        f.write('"}\n')
    return p


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny random emotion2vec-base and sensevoice-small folders in funasr's layout, and a tiny hf: wav2vec2."""
    pytest.importorskip("funasr")
    from emocache.encoders.tiny import save_random
    from tests.emocache.encoders.test_hf import save_tiny

    root = tmp_path_factory.mktemp("tiny_models")
    out = {n: save_random(n, root / n, seed=3) for n in ("emotion2vec-base", "sensevoice-small")}
    out["hf"] = Path(save_tiny("wav2vec2-layer", root / "hf"))
    return out


def copy_model(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def pickled_model_pt(box: Path, tiny: dict, marker: Path) -> Path:
    """emotion2vec-base's folder whose model.pt holds the real weights and a payload next to them."""
    import torch

    d = copy_model(tiny["emotion2vec-base"], box / "e2v")
    state = torch.load(d / "model.pt", weights_only=True)
    torch.save({**state, "extra": Touch(marker)}, d / "model.pt")
    return d


def pickled_hf_bin(box: Path, tiny: dict, marker: Path) -> Path:
    """A transformers folder whose pytorch_model.bin pickles a payload next to the weights (no safetensors)."""
    import torch
    from safetensors.torch import load_file

    d = copy_model(tiny["hf"], box / "hfmodel")
    state = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save({**state, "extra": Touch(marker)}, d / "pytorch_model.bin")
    return d


# -- the table ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
    name: str
    make: Callable[[Path, Path, dict], list]
    """(box, marker, tiny models) -> the command's arguments after ``emocache``."""
    code: int
    message: str
    writes: tuple[str, ...] = ()
    """Folders under box the command may write into."""
    models: bool = False
    seconds: float = 120.0
    one_line: bool = True
    """False for the not-found message, which lists every place searched on its own line."""
    peak_mb: float = PEAK_MB
    check: Callable[[Path], None] | None = field(default=None)


def _hf_escape(box, marker, tiny):
    keys = ["../../outside/x", "/" + str(box.parent / "outside" / "abs"), "dir/", "..", ".bashrc", "k" * 300]
    paths = ["a.wav", "b.flac", "x.bashrc", "c.wav", "d.wav", "e.wav"]
    return ["manifest", "--from-hf", hf_dataset(box, keys, paths), "--dataset", "toy", "--out", box / "toy.jsonl",
            "--key-column", "key", "--audio-dir", box / "audio"]


def _hf_escape_check(box):
    lines = [json.loads(s) for s in (box / "toy.jsonl").read_text().splitlines()]
    assert lines[0]["key"] == "../../outside/x"  # the key is kept as data; only the file name is made safe
    audio = (box / "audio").resolve()
    for d in lines:
        assert Path(d["wav"]).parent == audio and Path(d["wav"]).is_file()
    assert sorted(p.suffix for p in audio.iterdir()) == sorted([".wav", ".flac", ".wav", ".wav", ".wav", ".wav"])


def _extract(box, man, *extra):
    return ["extract", "--manifest", man, "--store", box / "store", "--device", "cpu", "--no-progress", *extra]


def _store(box: Path, keys: list[str]) -> Path:
    from emocache.store import write_arrays

    X = np.arange(len(keys) * 3, dtype=np.float32).reshape(len(keys), 3)
    frames = [np.full((2, 3), i, dtype=np.float32) for i in range(len(keys))]
    write_arrays(str(box / "s.zarr"), "m", "d", keys, ["x"] * len(keys), X, frames)
    return box / "s.zarr"


def _export_check(box):
    lhotse = pytest.importorskip("lhotse")
    cuts = list(lhotse.CutSet.from_file(box / "lh" / "cuts.jsonl.gz"))
    assert [c.id for c in cuts] == ["a/pooled", "a", "../x"]
    assert [float(c.load_pooled()[0]) for c in cuts] == [0.0, 3.0, 6.0]
    assert [float(c.load_frames()[0, 0]) for c in cuts] == [0.0, 1.0, 2.0]  # no frame rate: a custom array


def _deep(path: Path) -> Path:
    path.write_text("[" * 100_000 + "]" * 100_000)
    return path


ROWS = [
    Row("from-hf keys with ../, absolute, trailing / and dot-file names", _hf_escape, 0, "wrote 6 utterances",
        writes=("toy.jsonl", "audio", "hf"), check=_hf_escape_check),
    Row("pickled model.pt (emotion2vec)", lambda b, m, t: _extract(
        b, manifest(b), "--model", "emotion2vec-base", "--model-path", pickled_model_pt(b, t, m)), 2,
        "not loadable as plain weights (it refers to the Python object", writes=("e2v", "store"), models=True,
        peak_mb=FUNASR_PEAK_MB),
    Row("pickled pytorch_model.bin (hf:)", lambda b, m, t: _extract(
        b, manifest(b), "--model", f"hf:{pickled_hf_bin(b, t, m)}"), 2, "hf: models load pickles weights-only",
        writes=("hfmodel", "store"), models=True, peak_mb=FUNASR_PEAK_MB),
    Row("--batch-seconds 1e308", lambda b, m, t: _extract(b, manifest(b), "--model", "fbank-stats",
                                                          "--batch-seconds", "1e308"), 2,
        "--batch-seconds 1e+308: at most 3600"),
    Row("300-character --store", lambda b, m, t: ["extract", "--manifest", manifest(b), "--model", "fbank-stats",
                                                  "--store", b / ("s" * 300), "--no-progress"], 2,
        "not a usable path (File name too long)"),
    Row("300-character hf: id", lambda b, m, t: _extract(b, manifest(b), "--model", "hf:" + "o/" + "s" * 300), 2,
        "weights for o--", one_line=False),
    Row("--name for a non-hf model", lambda b, m, t: _extract(b, manifest(b), "--model", "fbank-stats",
                                                              "--name", "x"), 2,
        "only hf: models take a store entry name"),
    Row("deeply nested JSON in a manifest line", lambda b, m, t: _extract(
        b, manifest(b, ['{"key": "k", "wav": "w", "emo": "e", "x": ' + "[" * 20_000 + "]" * 20_000 + "}"]),
        "--model", "fbank-stats"), 2, "m.jsonl:2: JSON nested too deeply"),
    Row("NaN literal in a manifest line", lambda b, m, t: _extract(
        b, manifest(b, ['{"key": "k", "wav": "w", "emo": "e", "length": NaN}']), "--model", "fbank-stats"), 2,
        "m.jsonl:2: not valid JSON (NaN is not a number JSON allows)"),
    Row("a 100 MB label", lambda b, m, t: _extract(b, label_line(b, 100 << 20), "--model", "fbank-stats"), 2,
        "label.jsonl:1: longer than 65536 bytes"),
    Row("a 300-byte label", lambda b, m, t: _extract(
        b, manifest(b, [json.dumps({"key": "k", "wav": "w", "emo": "x" * 300})]), "--model", "fbank-stats"), 2,
        "m.jsonl:2: emo is 300 bytes, over the limit of 256"),
    Row("a 1e6-line manifest", lambda b, m, t: _extract(b, big_manifest(b, 1_000_000), "--model", "fbank-stats"), 2,
        "more than 524288 lines", seconds=30.0),
    Row("a manifest that is a FIFO", lambda b, m, t: _extract(b, fifo(b / "f.jsonl"), "--model", "fbank-stats"), 2,
        "f.jsonl: a FIFO, not a regular file"),
    Row("label map that is a FIFO", lambda b, m, t: ["folds", manifest(b), "--out", b / "data", "--label-map",
                                                     fifo(b / "map.json")], 2,
        "map.json: a FIFO, not a regular file", writes=("data",)),
    Row("label map nested 100,000 deep", lambda b, m, t: ["folds", manifest(b), "--out", b / "data", "--label-map",
                                                          _deep(b / "map.json")], 2, "JSON nested too deeply",
        writes=("data",)),
    Row("export --to lhotse of keys with / and ..", lambda b, m, t: [
        "export", "m/d", "--store", _store(b, ["a/pooled", "a", "../x"]), "--to", "lhotse", b / "lh"], 0,
        "exported 3 utterances", writes=("lh",), check=_export_check),
    Row("export --to lhotse of repeated keys", lambda b, m, t: [
        "export", "m/d", "--store", _store(b, ["a", "b", "a"]), "--to", "lhotse", b / "lh"], 2, "emocache verify",
        writes=("lh",)),
    Row("--dataset ../x", lambda b, m, t: ["manifest", b, "--dataset", "../x", "--out", b / "m2.jsonl", "--pattern",
                                           "(?P<emo>a)"], 2, "'../x' cannot name a store entry or file"),
]


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=[r.name for r in ROWS])
def test_hostile_input(row: Row, sandbox, request):
    box, marker = sandbox / "box", sandbox / "marker"
    tiny = request.getfixturevalue("tiny_models") if row.models else {}
    args = row.make(box, marker, tiny)
    before = snapshot(sandbox)
    t = time.perf_counter()
    p, peak = run_measured("emocache.cli", *args, timeout=row.seconds + 60)
    seconds = time.perf_counter() - t
    assert p.returncode == row.code, p.stdout + p.stderr
    if row.code:
        text = p.stderr + p.stdout
        assert row.message in (one_line(text) if row.one_line else text) and "Traceback" not in text, text
    else:
        assert row.message in p.stdout + p.stderr
    assert not marker.exists(), "the payload ran"
    after = snapshot(sandbox)
    for rel, digest in before.items():
        assert after.get(rel) == digest, f"{rel} changed or vanished"
    allowed = [f"box/{w}" for w in row.writes]
    outside = [rel for rel in after if rel not in before
               and not any(rel == a or rel.startswith(a + "/") for a in allowed)]
    assert not outside, f"written outside its folder: {outside}"
    assert peak < row.peak_mb, f"peak {peak:.0f} MB"
    assert seconds < row.seconds
    if row.check is not None:
        row.check(box)


# -- --from-hf never replaces a file, never writes through a link --------------------------------------------------
@pytest.mark.slow
def test_from_hf_keeps_existing_files_unless_overwrite_and_never_follows_links(sandbox):
    box, outside = sandbox / "box", sandbox / "outside"
    src = hf_dataset(box, ["k0", "k1"], ["a.wav", "b.wav"])
    args = ["manifest", "--from-hf", src, "--dataset", "toy", "--out", box / "toy.jsonl", "--key-column", "key",
            "--audio-dir", box / "audio"]
    p, _ = run_measured("emocache.cli", *args)
    assert p.returncode == 0, p.stderr
    first = (box / "audio" / "k0.wav").read_bytes()
    p, _ = run_measured("emocache.cli", *args)  # the same bytes again: kept, exit 0
    assert p.returncode == 0, p.stderr

    (box / "audio" / "k0.wav").write_bytes(b"mine")
    p, _ = run_measured("emocache.cli", *args)
    assert p.returncode == 2
    assert "k0.wav exists with other content; pass --overwrite" in one_line(p.stderr)
    assert (box / "audio" / "k0.wav").read_bytes() == b"mine"

    (box / "audio" / "k0.wav").write_bytes(first)
    (box / "audio" / "k1.wav").unlink()
    (box / "audio" / "k1.wav").symlink_to(outside / ".bashrc")  # a link planted where a key's file goes
    for extra in ((), ("--overwrite",)):
        p, _ = run_measured("emocache.cli", *args, *extra)
        assert p.returncode == 2 and "k1.wav' resolves to" in one_line(p.stderr) and "outside" in p.stderr
    assert (outside / ".bashrc").read_text() == "# the user's own\n"

    (box / "audio" / "k1.wav").unlink()
    (box / "audio" / "k0.wav").write_bytes(b"mine")
    p, _ = run_measured("emocache.cli", *args, "--overwrite")
    assert p.returncode == 0, p.stderr
    assert (box / "audio" / "k0.wav").read_bytes() == first
    assert (outside / ".bashrc").read_text() == "# the user's own\n"


# -- names and paths ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,kept", [
    ("urdu-SM20_F8_N012", True), ("emotion2vec-base", True), ("日本語-キー", True), ("../../etc/passwd", False),
    ("/abs/x", False), ("a/", False), ("..", False), (".bashrc", False), ("", False), ("a\x00b", False),
    ("a\nb", False), ("x" * 129, False), ("é" * 65, False), ("blocks", False), ("a.partial", False),
])
def test_safe_name(text, kept):
    name = safe_name(text, "utt")
    assert (name == text) is kept
    assert check_name(name) == name  # always a usable single component
    assert "/" not in name and len(name.encode()) <= 128
    assert safe_name(text, "utt") == name  # deterministic
    if not kept:
        with pytest.raises(UnsafeNameError, match="cannot name a store entry or file"):
            check_name(text)


def test_safe_names_of_distinct_texts_differ():
    texts = ["a/b", "a_b", "a\\b", "a b", "../a_b", "a" * 200, "a" * 201]
    assert len({safe_name(t) for t in texts}) == len(texts)


def test_confined_and_write_new(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "out").symlink_to(tmp_path)
    for bad in ("../x", "/etc/passwd", "out/x", ".", ""):
        with pytest.raises(UnsafeNameError, match="outside|not a usable"):
            confined(tmp_path / "d", bad)
    p = confined(tmp_path / "d", "ok.wav")
    assert write_new(p, b"1") and not write_new(p, b"1")  # same bytes: kept
    with pytest.raises(UnsafeNameError, match="exists with other content; pass --overwrite"):
        write_new(p, b"2")
    assert write_new(p, b"2", overwrite=True) and p.read_bytes() == b"2"
    (tmp_path / "target").write_text("keep")
    (tmp_path / "d" / "link.wav").symlink_to(tmp_path / "target")
    with pytest.raises(UnsafeNameError):
        write_new(tmp_path / "d" / "link.wav", b"x")
    write_new(tmp_path / "d" / "link.wav", b"x", overwrite=True)
    assert (tmp_path / "target").read_text() == "keep" and not (tmp_path / "d" / "link.wav").is_symlink()


# -- checkpoints ---------------------------------------------------------------------------------------------------
def save_like_funasr(state: dict, out: Path) -> Path:
    """``state`` saved by funasr's own trainer code (Trainer.save_checkpoint): state_dict next to the optimizer,
    scheduler and grad-scaler states, epoch counters and numpy-float validation statistics."""
    import types

    import torch
    from funasr.schedulers.warmup_lr import WarmupLR
    from funasr.train_utils.trainer import Trainer

    holder = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(holder.parameters(), lr=1e-3)
    sched = WarmupLR(opt, warmup_steps=10)
    holder(torch.ones(1, 2)).sum().backward()
    opt.step()
    sched.step()
    model = types.SimpleNamespace(state_dict=lambda: state)
    fake = types.SimpleNamespace(
        rank=0, local_rank=0, output_dir=str(out), batch_total=3, saved_ckpts={}, best_step_or_epoch="",
        val_acc_step_or_epoch={"model.pt.ep1": np.float64(0.5)},
        val_loss_step_or_epoch={"model.pt.ep1": np.float32(1.5)},
        avg_keep_nbest_models_type="acc", keep_nbest_models=2, use_ddp=False, use_fsdp=False)
    Trainer.save_checkpoint(fake, 1, model=model, optim=opt, scheduler=sched, scaler=torch.amp.GradScaler("cpu"),
                            train_loss_avg=np.float64(0.25), train_acc_avg=np.float32(0.75))
    return out / "model.pt"


@pytest.mark.parametrize("name", ["emotion2vec-base", "sensevoice-small"])
def test_real_layout_funasr_checkpoint_loads_without_any_flag(name, tiny_models, tmp_path):
    import torch

    from emocache.encoders import EncoderConfig, build_encoder

    d = copy_model(tiny_models[name], tmp_path / name)
    state = torch.load(d / "model.pt", weights_only=True)
    state = state.get("model", state)
    saved = torch.load(save_like_funasr(state, tmp_path / "train"), weights_only=False)
    assert {"optimizer", "scheduler", "scaler_state", "epoch"} <= set(saved)
    assert isinstance(saved["train_loss_avg"], np.floating)  # what a plain weights-only load refuses
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(tmp_path / "train" / "model.pt", weights_only=True)
    (tmp_path / "train" / "model.pt").replace(d / "model.pt")
    enc = build_encoder(name, EncoderConfig(model_path=str(d), device="cpu"))
    ref = build_encoder(name, EncoderConfig(model_path=str(tiny_models[name]), device="cpu"))
    w = [tone(1.0)]
    assert np.array_equal(enc.encode(w).pooled, ref.encode(w).pooled)


def test_trust_checkpoint_loads_a_pickle_after_a_warning_naming_the_file(tiny_models, tmp_path):
    from emocache.encoders import EncoderConfig, EncoderError, build_encoder

    marker = tmp_path / "marker"
    d = pickled_model_pt(tmp_path, tiny_models, marker)
    with pytest.raises(EncoderError, match=r"model.pt: not loadable as plain weights .*--trust-checkpoint") as e:
        build_encoder("emotion2vec-base", EncoderConfig(model_path=str(d), device="cpu"))
    assert "\n" not in str(e.value) and not marker.exists()
    with pytest.warns(UserWarning, match=rf"--trust-checkpoint: loading {d / 'model.pt'} with full pickle"):
        build_encoder("emotion2vec-base", EncoderConfig(model_path=str(d), device="cpu", trust_checkpoint=True))
    assert marker.exists()  # the flag does what it says: the file's code ran
    with pytest.raises(EncoderError, match="applies to funasr model.pt files"):
        build_encoder(f"hf:{tiny_models['hf']}", EncoderConfig(device="cpu", trust_checkpoint=True))


def test_damaged_model_files_are_one_line_errors(tiny_models, tmp_path):
    from emocache.encoders import EncoderConfig, EncoderError, build_encoder

    d = copy_model(tiny_models["sensevoice-small"], tmp_path / "sv")
    (d / "model.pt").write_bytes(b"\x80\x04junk")
    with pytest.raises(EncoderError, match="not a readable torch checkpoint") as e:
        build_encoder("sensevoice-small", EncoderConfig(model_path=str(d), device="cpu"))
    assert "\n" not in str(e.value)
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi"))
    (d / "config.yaml").write_text(bomb)
    t = time.perf_counter()
    with pytest.raises(EncoderError, match="aliases expand to more than"):
        build_encoder("sensevoice-small", EncoderConfig(model_path=str(d), device="cpu"))
    assert time.perf_counter() - t < 5
    (d / "config.yaml").unlink()
    os.mkfifo(d / "config.yaml")
    with pytest.raises(EncoderError, match="config.yaml: a FIFO, not a regular file"):
        build_encoder("sensevoice-small", EncoderConfig(model_path=str(d), device="cpu"))


def test_checkpoint_code_never_unpickles_unless_trusted():
    import inspect

    import emocache.encoders.checkpoint as ck

    src = inspect.getsource(ck.load_checkpoint)
    assert src.count("weights_only=False") == 1 and src.index("if not trust:") < src.index("weights_only=False")
    allowed = {getattr(g[0] if isinstance(g, tuple) else g, "__module__", "") for g in ck.safe_globals()}
    assert allowed <= {"numpy", "numpy.dtypes", "numpy._core.multiarray", "numpy.core.multiarray"}, allowed
