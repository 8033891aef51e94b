"""The registry: encoders register themselves; a new one (a class in a test module, or a plugin's entry point)
shows up in `emocache models`, the CLI, the tiny-model fixtures and the exactness tests with no other file edited."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from emocache.encoders import REGISTRY, EncoderError, encoder_class, load_plugins, names, neural_models, register
from emocache.encoders.fbank import FbankStats
from emocache.encoders.registry import PLUGIN_GROUP
from emocache.encoders.tiny import overrides, save_random

REPO = Path(__file__).resolve().parents[3]

VARIANT = '''
"""A new emotion2vec variant, defined in a test module: one class, no other file edited."""

from emocache.encoders import register
from emocache.encoders.emotion2vec import Emotion2vecBase, model_conf, tiny_conf


@register
class Emotion2vecVariant(Emotion2vecBase):
    name = "emotion2vec-test-variant"
    hf_repos = ms_repos = ("example/emotion2vec_test_variant",)
    full_config, tiny_overrides = model_conf(256, 4, depth=4), tiny_conf(40, 4)


def test_variant_listed_by_emocache_models():
    from typer.testing import CliRunner

    from emocache.cli import app

    res = CliRunner().invoke(app, ["models"])
    assert res.exit_code == 0 and "emotion2vec-test-variant" in res.output.split()
'''


@pytest.mark.slow
def test_registered_variant_reaches_models_fixtures_and_exactness_tests(tmp_path):
    """pytest collects the variant's module first, then the neural-encoder tests, which now cover it too."""
    module = tmp_path / "test_variant_module.py"
    module.write_text(textwrap.dedent(VARIANT))
    p = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                        str(module), str(REPO / "tests/emocache/encoders/test_neural.py"), "-k", "variant"],
                       capture_output=True, text=True, cwd=REPO, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    passed = set(re.findall(r"::(test_\w+(?:\[[^\]]+\])?) PASSED", out))
    assert "test_variant_listed_by_emocache_models" in passed, out[-4000:]
    for test in ("test_batched_equals_single", "test_single_equals_library", "test_hf_cache_layout",
                 "test_modelscope_cache_layout", "test_missing_weight_keys_rejected", "test_random_init_without_files",
                 "test_long_inputs_windowed", "test_model_path_identity_and_provenance"):
        assert f"{test}[emotion2vec-test-variant]" in passed, (test, out[-4000:])


def test_builtin_registry_and_tiny_tables_derive_from_classes():
    assert names() == sorted(REGISTRY) and set(neural_models()) < set(names())
    assert {"fbank-stats", "egemaps"} == set(names()) - set(neural_models())
    for name in neural_models():
        cls = encoder_class(name)
        assert cls.name == name and cls.hf_repos and cls.full_config and cls.tiny_overrides
        assert overrides(name) == cls.tiny_overrides and overrides(name) is not cls.tiny_overrides
        assert overrides(name, "full") == {}
    with pytest.raises(ValueError, match="weight-free"):
        save_random("fbank-stats", "unused")
    with pytest.raises(EncoderError, match="unknown model 'nope'.*whisper-large-v3"):
        overrides("nope")


def test_register_refuses_a_taken_name_and_a_nameless_class():
    class Clash(FbankStats):
        name = "fbank-stats"

    class Nameless(FbankStats):
        name = ""

    with pytest.raises(EncoderError, match="'fbank-stats' is taken"):
        register(Clash)
    with pytest.raises(EncoderError, match="set the class attribute `name`"):
        register(Nameless)
    assert REGISTRY["fbank-stats"] is FbankStats


class PluginFbank(FbankStats):
    """An encoder another package ships: reached only through the entry point below (not registered here)."""

    name = "plugin-fbank"


def _fake_entry_points(*eps: metadata.EntryPoint):
    def entry_points(group=None, **kw):
        return [ep for ep in eps if ep.group == group]

    return entry_points


@pytest.fixture
def plugin(monkeypatch):
    """A fake installed distribution whose `emocache.encoders` entry point names PluginFbank."""
    ep = metadata.EntryPoint(name="plugin-fbank", value=f"{__name__}:PluginFbank", group=PLUGIN_GROUP)
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(ep))
    assert load_plugins() == ["plugin-fbank"]
    yield PluginFbank
    REGISTRY.pop("plugin-fbank")


def test_plugin_entry_point_appears_in_models_and_the_cli(plugin, cli, tmp_path, demo_corpus):
    assert encoder_class("plugin-fbank") is plugin
    code, out = cli("models")
    assert code == 0 and "plugin-fbank" in out.split()
    code, out = cli("extract", "--model", "plugin-fbank", "--manifest", demo_corpus.manifest, "--store",
                    tmp_path / "s", "--audio-root", demo_corpus.audio_root, "--device", "cpu", "--no-progress")
    assert code == 0, out
    from emocache.store import open_store

    keys, X = open_store(tmp_path / "s").pooled("plugin-fbank", "demo")
    assert len(keys) == 36 and X.shape == (36, 80) and np.isfinite(X).all()


def test_broken_plugin_is_a_warning_not_a_failure(monkeypatch):
    ep = metadata.EntryPoint(name="broken", value="no_such_module_here:Encoder", group=PLUGIN_GROUP)
    monkeypatch.setattr(metadata, "entry_points", _fake_entry_points(ep))
    with pytest.warns(UserWarning, match="plugin 'broken'.*failed to load.*ModuleNotFoundError"):
        assert load_plugins() == []
    assert "fbank-stats" in names()


@pytest.mark.slow
def test_registering_imports_no_heavy_library():
    """`emocache models` lists every encoder without importing transformers, funasr or openSMILE."""
    code = ("import sys, emocache.encoders as e; assert len(e.names()) >= 8; "
            "print(sorted({'transformers', 'funasr', 'opensmile'} & set(sys.modules)))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stdout + p.stderr


def test_a_typo_gets_the_closest_name(cli):
    with pytest.raises(EncoderError, match=r"unknown model 'wavlm-larg'; did you mean 'wavlm-large'\? known models: "
                                           r"egemaps, "):
        encoder_class("wavlm-larg")
    with pytest.raises(EncoderError) as e:
        encoder_class("qqqq")
    assert "did you mean" not in str(e.value) and "known models" in str(e.value)
    code, out = cli("bench", "--model", "Emotion2vec-plus-larg")
    assert code == 2 and "did you mean 'emotion2vec-plus-large'?" in out
