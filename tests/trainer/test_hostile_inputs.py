"""Hostile trainer inputs (issue 22, docs/STORE.md threat model): a --teacher-from folder, a --similarity file, a
pipeline spec, a label map or fold manifest from someone else, and sizes a user gives. One row per input: how it
is damaged, the one-line error expected (naming the file or key), and that nothing was written; the CLI rows run
the trainer in a subprocess with a timeout and bound its peak memory."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.helpers.cli import run_measured
from trainer.config import TrainConfig
from trainer.data import DataError

pytestmark = pytest.mark.timeout(240)
PEAK_MB = 768
"""Peak memory of a trainer child process on a hostile input (torch and pandas imports included)."""


def one_line(e) -> str:
    msg = str(e)
    assert "\n" not in msg.strip() and "Traceback" not in msg, msg
    return msg


def error_of(stderr: str) -> str:
    """A CLI's stderr without its warning lines (e.g. the labels --labels six drops): the error, one line."""
    assert "Traceback" not in stderr, stderr
    return one_line("\n".join(line for line in stderr.splitlines() if not line.startswith("warning:")))


def snapshot(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): (p.lstat().st_size, p.lstat().st_mtime_ns) for p in root.rglob("*")}


# -- a saved teacher and the run that loads it -----------------------------------------------------------------
@pytest.fixture(scope="module")
def saved(synth, tmp_path_factory):
    """A teacher trained once (--save-teacher) and the b-grpo config + prepared data that --teacher-from it."""
    from trainer import experiment as exp

    root = tmp_path_factory.mktemp("hostile_teacher")
    kw = dict(store=synth["store"], manifests=synth["manifests"], dataset="ds", epochs_baseline=1, epochs_stage2=1,
              lr=1e-3, plots=False, progress=False, threads=1, teacher="t", seeds=(0,))
    exp.run(TrainConfig(method="teacher", out=str(root / "o"), save_teacher=str(root / "T"), **kw))
    cfg = exp.resolve_model(TrainConfig(method="b-grpo", model="m", reward="r3", out=str(root / "o2"),
                                        teacher_from=str(root / "T"), **kw))
    return {"folder": root / "T", "cfg": cfg, "data": exp.prepare(cfg), "kw": kw, "root": root}


def _json(f):
    def damage(d: Path):
        p = d / "teacher.json"
        p.write_text(f(json.loads(p.read_text())) if callable(f) else f)
    return damage


def _tensors(f):
    def damage(d: Path):
        t = load_file(d / "teacher.safetensors")
        f(t)
        save_file(t, d / "teacher.safetensors")
    return damage


def _replace(name: str, make):
    def damage(d: Path):
        (d / name).unlink()
        make(d / name, d)
    return damage


def _nan(key: str, value: float):
    def f(t):
        t[key] = t[key].clone()
        t[key].view(-1)[0] = value
    return f


TEACHER_ROWS = [  # (damage, message)
    (_replace("teacher.json", lambda p, d: os.mkfifo(p)), "teacher.json: a FIFO, not a regular file"),
    (_replace("teacher.json", lambda p, d: p.symlink_to(d.parent / "elsewhere.json")),
     "teacher.json: a symbolic link"),
    (_replace("teacher.json", lambda p, d: None), "teacher.json: no such file"),
    (_json("{not json"), "teacher.json: not valid JSON"),
    (_json("[" * 100_000 + "]" * 100_000), "teacher.json: JSON nested too deeply"),
    (_json(lambda m: json.dumps(m).replace('"standardized": true', '"standardized": NaN')
           .replace('"standardized": false', '"standardized": NaN')), "NaN is not a number JSON allows"),
    (_json("[1, 2]"), "teacher.json: expected a JSON object, got list"),
    (_json(lambda m: json.dumps({**m, "format": "evil/9"})), "format 'evil/9', expected 'trainer-teacher/1'"),
    (_json(lambda m: json.dumps({k: v for k, v in m.items() if k != "settings"})), "settings must be a JSON object"),
    (_json(lambda m: json.dumps({**m, "classes": "Angry"})), "classes must be a JSON list"),
    (_json(lambda m: json.dumps({**m, "standardized": "yes"})), "standardized must be a JSON bool"),
    (_json(lambda m: json.dumps({**m, "runs": [{**m["runs"][0], "fingerprint": 7}]})),
     r"runs[0] must be {"),
    (_json(lambda m: json.dumps({**m, "runs": m["runs"] * 2})), "repeats fold 1 seed 0"),
    (_json(lambda m: json.dumps({**m, "runs": []})), "teacher.json: no runs"),
    (_replace("teacher.safetensors", lambda p, d: os.mkfifo(p)), "teacher.safetensors: a FIFO"),
    (_replace("teacher.safetensors", lambda p, d: p.write_bytes(b"\xff" * 64)), "not a readable safetensors file"),
    (_replace("teacher.safetensors", lambda p, d: p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\": [1, 2]}  ")),
     "not a readable safetensors file"),
    (_replace("teacher.safetensors", lambda p, d: os.truncate(os.open(p, os.O_CREAT | os.O_WRONLY), 2 << 30)),
     "over the limit of 1073741824"),
    (_tensors(lambda t: t.__setitem__("w1", t["w1"][..., :-1].contiguous())), "w1 F32 ["),
    (_tensors(lambda t: t.__setitem__("w2", t["w2"].double())), "w2 F64"),
    (_tensors(lambda t: t.pop("b2")), "holds tensors"),
    (_tensors(lambda t: t.__setitem__("evil", torch.zeros(1))), "holds tensors"),
    (_tensors(_nan("w2", float("nan"))), "NaN or infinite values in w2"),
    (_tensors(_nan("mu", float("inf"))), "NaN or infinite values in mu"),
    (_tensors(_nan("inv_sd", float("-inf"))), "NaN or infinite values in inv_sd"),
]


@pytest.mark.parametrize("damage,message", TEACHER_ROWS, ids=[m[:40] for _, m in TEACHER_ROWS])
def test_damaged_teacher_folder_is_a_one_line_error(saved, tmp_path, damage, message):
    from trainer.teachers import load_teacher

    d = tmp_path / "T"
    shutil.copytree(saved["folder"], d)
    (tmp_path / "elsewhere.json").write_text((d / "teacher.json").read_text())
    damage(d)
    before = snapshot(tmp_path)
    with pytest.raises(DataError) as e:
        load_teacher(d, saved["cfg"], saved["data"])
    assert message in one_line(e.value) and "--teacher-from" in str(e.value)
    assert snapshot(tmp_path) == before


def test_the_saved_teacher_itself_loads(saved):
    from trainer.teachers import load_teacher

    t = load_teacher(saved["folder"], saved["cfg"], saved["data"])
    assert t.n_members == len(saved["data"].runs) == 2 and all(torch.isfinite(p).all() for p in t.parameters())


# -- --similarity ------------------------------------------------------------------------------------------------
SIMILARITY_ROWS = [  # (content or maker, message)
    (lambda p: os.mkfifo(p), "a FIFO, not a regular file"),
    ('{"angles": ' + "[" * 100_000 + "]" * 100_000 + "}", "JSON nested too deeply"),
    ('{"angles": [["Frustrated", 260]]}', "angles must be an object like"),
    ('{"neutral": 3}', "neutral must be a list of class names"),
    ('{"neutral": [3]}', "neutral holds '3'"),
    ('{"neutral_similarity": true}', "neutral_similarity True must be a number in [0, 1]"),
    ('{"neutral_similarity": NaN}', "NaN is not a number JSON allows"),
    ('{"angles": {"Frustrated": 1e999}}', "angles['Frustrated'] = inf is not a number of degrees"),
    ('{"angles": {"Frustrated": "east"}}', "is not a number of degrees"),
    ('{"aliases": {"Frustrated": ["anger"]}}', "an alias names one of"),
    ('{"colours": {}}', "unknown key(s) ['colours']"),
    ("[]", "expected an object with keys"),
    (lambda p: os.truncate(os.open(p, os.O_CREAT | os.O_WRONLY), 2 << 20), "over the limit of 1048576"),
]


@pytest.mark.parametrize("content,message", SIMILARITY_ROWS, ids=[m[:40] for _, m in SIMILARITY_ROWS])
def test_bad_similarity_file_is_a_one_line_error(tmp_path, content, message):
    from trainer.emotion_space import similarity_matrix

    p = tmp_path / "sim.json"
    content(p) if callable(content) else p.write_text(content)
    with pytest.raises(ValueError) as e:
        similarity_matrix(("Angry", "Frustrated"), p)
    assert message in one_line(e.value) and f"--similarity {p}" in str(e.value)


# -- pipeline specs ----------------------------------------------------------------------------------------------
def _big_grid() -> str:
    vals = ", ".join(str(i + 1) for i in range(100))
    return f'[[grid]]\nmethod = "baseline"\nseeds = [{vals}]\nhidden = [{vals}]\nepochs_baseline = [{vals}]\n' \
           f"batch_size = [{vals}]\n"


SPEC_ROWS = [  # (spec text or maker, message)
    ("grid = 5\n", "spec.toml:1: grid = 5: expected [[grid]] tables"),
    (_big_grid(), "its grid makes 100000000 cells, over the limit of 10000"),
    ('[defaults]\nhidden = [1, 2]\n[[grid]]\nmethod = "baseline"\n', "spec.toml:2: [defaults] hidden = [1, 2]: "
                                                                    "expected int, got list"),
    ('[defaults]\nlr = "fast"\n[[grid]]\nmethod = "baseline"\n', "spec.toml:2: [defaults] lr = 'fast': expected "
                                                                 "float"),
    ('[[grid]]\nmethod = "baseline"\n[[grid]]\nmethod = "b-grpo"\nsup_weight = ["a"]\n',
     "spec.toml:5: [grid] sup_weight = 'a': expected float"),
    ('[[grid]]\nmethod = "baseline"\nseeds = ["x"]\n', "expected a list of integer seeds"),
    ('[[grid]]\nmethod = "baseline"\ncolour = 1\n', "unknown config field 'colour'"),
    ('[[grid]]\nmethod = "baseline"\ndataset = "../x"\n', "[grid] dataset: dataset name '../x' cannot name"),
    ('out = "../../escape"\n[[grid]]\nmethod = "baseline"\n', "spec.toml:1: out = '../../escape': a spec writes "
                                                              "only below the working folder"),
    ('out = "/tmp/escape"\n[[grid]]\nmethod = "baseline"\n', "a spec writes only below the working folder"),
    ('[[grid]]\nmethod = "baseline"\nsave_teacher = "../t"\n', "[grid] save_teacher = '../t': a spec writes"),
    ('name = 5\n[[grid]]\nmethod = "baseline"\n', "spec.toml:1: name = 5: expected a string"),
    ('extra = 1\n[[grid]]\nmethod = "baseline"\n', "spec.toml:1: extra: unknown key"),
    ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "nested too deeply to parse"),
    ('[[grid]]\nmethod = []\n', "an empty list makes no cell"),
    ("x = 'unterminated\n", "not valid TOML"),
    (lambda p: os.mkfifo(p), "spec.toml: a FIFO, not a regular file"),
    (lambda p: os.truncate(os.open(p, os.O_CREAT | os.O_WRONLY), 2 << 20), "over the limit of 1048576"),
]


@pytest.mark.parametrize("content,message", SPEC_ROWS, ids=[m[:40] for _, m in SPEC_ROWS])
def test_bad_spec_is_a_one_line_error_before_any_cell(tmp_path, content, message):
    from trainer.pipeline import SpecError, load_spec

    p = tmp_path / "spec.toml"
    content(p) if callable(content) else p.write_text(content)
    t = time.perf_counter()
    with pytest.raises(SpecError) as e:
        load_spec(p, store="s", manifests="m")
    assert message in one_line(e.value)
    assert time.perf_counter() - t < 5


def test_spec_name_with_dots_stays_under_results(tmp_path, monkeypatch):
    from trainer.pipeline import cells, load_spec

    monkeypatch.chdir(tmp_path)
    p = tmp_path / "spec.toml"
    p.write_text('name = "../../x"\n[[grid]]\nmethod = "baseline"\ndataset = "d"\n')
    spec = load_spec(p, store="s", manifests="m")
    out = Path(spec["out"]).resolve()
    assert out.parent == (tmp_path / "results").resolve() and out.name.endswith(tuple("0123456789abcdef"))
    assert [c.experiment for c in cells(spec)] == ["../../x"]  # the tag is kept as data


# -- CLI rows: hangs, memory, messages as a user sees them ------------------------------------------------------
def _common(synth, out):
    return ["--store", synth["store"], "--manifests", synth["manifests"], "--model", "m", "--dataset", "ds",
            "--epochs-baseline", 1, "--epochs-stage2", 1, "--seeds", "0", "--threads", 1, "--no-plots", "--lr", "1e-3",
            "--no-progress", "--out", out]


def _fifo_teacher(saved, tmp_path):
    d = tmp_path / "T"
    shutil.copytree(saved["folder"], d)
    (d / "teacher.json").unlink()
    os.mkfifo(d / "teacher.json")
    return ["b-grpo", "--reward", "r3", "--teacher", "t", "--teacher-from", d], "teacher.json: a FIFO"


def _nan_teacher(saved, tmp_path):
    d = tmp_path / "T"
    shutil.copytree(saved["folder"], d)
    _tensors(_nan("w1", float("nan")))(d)
    return ["b-grpo", "--reward", "r3", "--teacher", "t", "--teacher-from", d], "NaN or infinite values in w1"


def _fifo_similarity(saved, tmp_path):
    os.mkfifo(tmp_path / "sim.json")
    return ["b-grpo", "--reward", "eswr", "--teacher", "t", "--similarity", tmp_path / "sim.json"], \
        "sim.json: a FIFO, not a regular file"


def _deep_similarity(saved, tmp_path):
    (tmp_path / "sim.json").write_text("[" * 100_000 + "]" * 100_000)
    return ["b-grpo", "--reward", "eswr", "--teacher", "t", "--similarity", tmp_path / "sim.json"], \
        "JSON nested too deeply"


def _hidden(saved, tmp_path):
    return ["baseline", "--hidden", 100_000_000], \
        "--hidden 100000000: 2 stacked MLP(s) of 16 -> 100000000 -> 4 need about"


CLI_ROWS = [_fifo_teacher, _nan_teacher, _fifo_similarity, _deep_similarity, _hidden]


@pytest.mark.slow
@pytest.mark.parametrize("make", CLI_ROWS, ids=[f.__name__[1:] for f in CLI_ROWS])
def test_cli_hostile_run(saved, synth, tmp_path, make):
    args, message = make(saved, tmp_path)
    before = snapshot(tmp_path)
    p, peak = run_measured("trainer.cli", "run", *args, *_common(synth, tmp_path / "out"), timeout=120)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in error_of(p.stderr)
    assert not (tmp_path / "out").exists() and snapshot(tmp_path) == before
    assert peak < PEAK_MB, f"peak {peak:.0f} MB"


@pytest.mark.slow
def test_cli_pipeline_with_a_huge_grid_fails_fast(tmp_path):
    (tmp_path / "big.toml").write_text(_big_grid())
    t = time.perf_counter()
    p, peak = run_measured("trainer.cli", "pipeline", tmp_path / "big.toml", "--store", "s", "--manifests", "m",
                           "--out", tmp_path / "o", timeout=60)
    assert p.returncode == 2 and "makes 100000000 cells, over the limit of 10000" in error_of(p.stderr)
    assert time.perf_counter() - t < 30 and peak < PEAK_MB and not (tmp_path / "o").exists()


def test_memory_estimate_of_the_policy():
    from trainer.models import StackedMLP, training_bytes

    assert training_bytes(2, 16, 5, 128) == 4 * (4 * 2 * (16 * 128 + 128 + 128 * 5 + 5) + 2 * 2 * 2048 * 128)
    with pytest.raises(ValueError, match=r"--hidden 100000000: 3 stacked MLP\(s\) of 40 -> 100000000 -> 6 need "
                                         r"about [0-9.]+ GiB .* over the limit of 4 GiB"):
        StackedMLP.from_seeds([0, 1, 2], 40, 6, 100_000_000)
    assert StackedMLP.from_seeds([0, 1], 40, 6, 128).n_members == 2


# -- label maps and fold manifests in a data folder --------------------------------------------------------------
@pytest.fixture
def data_copy(synth, tmp_path):
    dst = tmp_path / "manifests"
    shutil.copytree(synth["manifests"], dst, symlinks=True)
    return dst


@pytest.mark.parametrize("damage,message", [
    (lambda d: (d.unlink(), os.mkfifo(d)), "label_map.json: a FIFO, not a regular file"),
    (lambda d: d.write_text("[" * 100_000 + "]" * 100_000), "label_map.json: JSON nested too deeply"),
    (lambda d: d.write_text(json.dumps({"neu": "x" * 300})), "over the limit of 256 bytes"),
    (lambda d: (d.rename(d.with_name("real.json")), d.symlink_to(d.with_name("real.json"))),
     "label_map.json: a symbolic link"),
], ids=["fifo", "deep", "long-label", "link"])
def test_hostile_label_map(data_copy, damage, message):
    from trainer.data import read_label_map

    damage(data_copy / "ds" / "label_map.json")
    with pytest.raises(DataError) as e:
        read_label_map(str(data_copy), "ds")
    assert message in one_line(e.value)


def test_fold_manifest_link_and_fifo_are_refused(data_copy):
    from trainer.data import fold_rows

    f = next((data_copy / "ds" / "fold_1").glob("*_test_fold_1.jsonl"))
    keys = [json.loads(s)["key"] for s in f.read_text().splitlines()]
    real = f.with_name("real.jsonl.txt")
    f.rename(real)
    f.symlink_to(real)
    with pytest.raises(DataError, match="a symbolic link") as e:
        fold_rows(keys, np.zeros(len(keys), dtype=np.int64), str(data_copy), "ds")
    one_line(e.value)
    f.unlink()
    os.mkfifo(f)
    with pytest.raises(DataError, match="a FIFO, not a regular file"):
        fold_rows(keys, np.zeros(len(keys), dtype=np.int64), str(data_copy), "ds")
