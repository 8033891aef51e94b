"""The method registry (trainer.algorithms.base, trainer.config): a method is one module, its options are checked
and read by their flat names, and a module added to trainer/algorithms/ or a plugin becomes a method with no edit
elsewhere."""

import ast
import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.trainer.test_trainer_cli import run_dir
from trainer.algorithms.base import (FLAT_FIELDS, METHODS, Method, Options, PoolOptions, check_fields, option,
                                     register)
from trainer.algorithms.bgrpo import BGRPOOptions
from trainer.config import TrainConfig, flat_fields, method_options

REPO = Path(__file__).resolve().parents[2]

TOY = '''"""A toy method for the registry test: the baseline, then cross-entropy on the labelled rows again."""

from __future__ import annotations

from dataclasses import dataclass

from trainer.algorithms.base import PoolOptions, TwoStage, option, register


@dataclass(frozen=True)
class ToyOptions(PoolOptions):
    """The toy's weight."""

    toy_weight: float = option(1.0, gt=0)
    """Weight of the toy's second stage. A positive number."""


@register
class Toy(TwoStage):
    """A toy second stage (tests only).

    Supervised again on the labelled rows."""

    name = "toy"
    Options = ToyOptions

    def tags(self, cfg):
        return [f"w{cfg.toy_weight:g}"] + cfg.options.pool_tags()

    def stage2(self, ctx):
        ctx.supervised(ctx.data.labeled, ctx.cfg.epochs_stage2, "toy")
        return ctx.policy
'''


def trainer_copy(tmp_path: Path) -> Path:
    """A copy of the trainer package under tmp_path/pkg (first on PYTHONPATH, emocache from the repository)."""
    root = tmp_path / "pkg"
    shutil.copytree(REPO / "trainer", root / "trainer", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def sh(root: Path, *args, ok=True):
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{REPO}", "COLUMNS": "80"}
    p = subprocess.run([sys.executable, "-m", "trainer.cli", *map(str, args)], capture_output=True, text=True,
                       timeout=300, env=env, cwd=root)
    if ok:
        assert p.returncode == 0, p.stderr + p.stdout
    return p


@pytest.mark.slow
def test_a_new_method_is_one_module_and_removing_one_is_one_deletion(synth, tmp_path):
    root = trainer_copy(tmp_path)
    (root / "trainer" / "algorithms" / "toy.py").write_text(TOY)
    help_ = sh(root, "run", "toy", "--help").stdout
    assert "--toy-weight" in help_ and "Weight of the toy's second stage." in help_ and "--reward" not in help_
    assert "toy" in sh(root, "run", "--help").stdout
    sh(root, "run", "toy", "--store", synth["store"], "--manifests", synth["manifests"], "--model", "m", "--dataset",
       "ds", "--epochs-baseline", 2, "--epochs-stage2", 1, "--toy-weight", 0.5, "--threads", 1, "--no-plots",
       "--out", tmp_path / "out")
    rows = pd.read_csv(run_dir(tmp_path / "out", "toy_m_ds_six_w0.5") / "results.csv")
    assert set(rows.stage) == {"stage1", "final"} and (rows.toy_weight == 0.5).all() and (rows.n_unlabeled > 0).all()
    p = sh(root, "run", "toy", "--store", "s", "--manifests", "m", "--dataset", "d", "--toy-weight", 0, ok=False)
    assert p.returncode == 2 and "--toy-weight 0.0: must be > 0" in p.stderr
    (root / "trainer" / "algorithms" / "fixmatch.py").unlink()
    listing = sh(root, "run", "--help").stdout
    assert "fixmatch" not in listing and all(m in listing for m in METHODS if m != "fixmatch")


def test_fixmatch_is_named_only_in_its_module():
    """Beyond docstrings, no module of trainer/ but algorithms/fixmatch.py names FixMatch or its options, except
    FLAT_FIELDS (the names of the settings of before the registry, kept for their hashes)."""
    found = []
    for path in sorted((REPO / "trainer").rglob("*.py")):
        if path.name == "fixmatch.py":
            continue
        tree = ast.parse(path.read_text())
        docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef,
                ast.FunctionDef)) and n.body and isinstance(n.body[0], ast.Expr)}
        docs |= {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)}
        flat = {id(c) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "FLAT_FIELDS" for t in n.targets) for c in ast.walk(n)}
        for n in ast.walk(tree):
            text = (n.value if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs | flat
                    else n.id if isinstance(n, ast.Name) else n.attr if isinstance(n, ast.Attribute)
                    else n.module or "" if isinstance(n, ast.ImportFrom) else "")
            if "fixmatch" in text.lower():
                found.append(f"{path.relative_to(REPO)}:{n.lineno}")
    assert not found, found


@pytest.mark.slow
def test_a_plugin_registers_through_the_entry_point_group(tmp_path):
    (tmp_path / "toy_plugin.py").write_text(TOY.replace('name = "toy"', 'name = "toy-plugin"'))
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('broken on purpose')\n")
    info = tmp_path / "toy_plugin-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-plugin\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[trainer.methods]\ntoy = toy_plugin\nbroken = broken_plugin\n")
    code = ("import warnings\nwith warnings.catch_warnings(record=True) as w:\n    warnings.simplefilter('always')\n"
            "    from trainer.config import METHODS, TrainConfig\n"
            "print('toy-plugin' in METHODS, TrainConfig(method='toy-plugin', toy_weight=2.0).readable_name)\n"
            "print([str(x.message) for x in w if 'plugin' in str(x.message)])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert p.returncode == 0, p.stderr
    first, second = p.stdout.splitlines()
    assert first == "True toy-plugin___six_w2"
    assert "'broken'" in second and "broken on purpose" in second


def test_registry_refuses_clashing_names_and_options():
    @dataclasses.dataclass(frozen=True)
    class Clash(Options):
        reward: str = "r2"  # b-grpo's reward has default r1
        """A clashing option."""

    class Bad(Method):
        name = "bad"
        Options = Clash

    with pytest.raises(ValueError, match="option reward .*differs"):
        register(Bad)

    class Taken(Method):
        name = "b-grpo"

    with pytest.raises(ValueError, match="taken by"):
        register(Taken)

    @dataclasses.dataclass(frozen=True)
    class Loose:  # not built on Options (whose subclasses are frozen dataclasses by construction)
        x: int = 1
        """An option."""

    class Unfrozen(Method):
        name = "unfrozen"
        Options = Loose

    with pytest.raises(TypeError, match="frozen dataclass"):
        register(Unfrozen)
    assert not {"bad", "unfrozen"} & set(METHODS)


def test_options_are_checked_from_their_metadata():
    @dataclasses.dataclass(frozen=True)
    class O(Options):
        a: int = option(1, ge=1)
        """a."""
        b: float = option(0.5, ge=0, lt=1)
        """b."""
        c: str = option("x", choices=("x", "y"))
        """c."""

    check_fields(O())
    for kw, msg in (({"a": 0}, "--a 0: must be at least 1"), ({"b": 1.0}, r"--b 1.0: must be in \[0, 1\)"),
                    ({"b": float("nan")}, "--b nan: must be a finite number"),
                    ({"c": "z"}, "--c 'z': use one of x, y")):
        with pytest.raises(ValueError, match=msg):
            check_fields(O(**kw))


def test_flat_names_build_read_and_replace_a_configuration():
    cfg = TrainConfig(method="b-grpo", reward="r3", teacher="t", lr=1e-3)
    assert isinstance(cfg.options, BGRPOOptions) and cfg.reward == "r3" and cfg.options.teacher == "t"
    assert cfg == TrainConfig(method="b-grpo", lr=1e-3, options=BGRPOOptions(reward="r3", teacher="t"))
    with pytest.raises(ValueError, match=r"baseline has no option --reward \(reward\)"):
        TrainConfig(method="baseline", reward="r3")
    with pytest.raises(AttributeError, match="'reward': neither a shared setting nor an option of dino"):
        TrainConfig(method="dino").reward
    dino = cfg.replace(method="dino", dino_noise=0.2, epochs_stage2=3)
    assert dino.method == "dino" and dino.lr == 1e-3 and dino.dino_noise == 0.2 and dino.epochs_stage2 == 3
    assert dino.replace(unlabeled_from="ext").unlabeled_from == "ext"
    assert set(method_options("grpo")) - set(method_options("b-grpo")) == {"group_size"}
    assert set(flat_fields()) >= set(FLAT_FIELDS) - {"method"}
    import pickle

    assert pickle.loads(pickle.dumps(cfg)) == cfg  # pipeline cells travel to dask workers


def test_shared_option_groups_are_composed_not_copied():
    from trainer.algorithms.grpo import GRPOOptions
    from trainer.algorithms.teacher import TeacherOptions

    assert issubclass(BGRPOOptions, TeacherOptions) and issubclass(GRPOOptions, TeacherOptions)
    assert issubclass(METHODS["teacher"].Options, TeacherOptions)
    for m in ("dino", "b-grpo", "grpo", "pseudo-label", "fixmatch"):
        assert issubclass(METHODS[m].Options, PoolOptions) and METHODS[m].unlabeled, m
    assert not TrainConfig(method="b-grpo").uses_teacher and TrainConfig(method="b-grpo", reward="wheel",
                                                                         teacher="t").uses_teacher
