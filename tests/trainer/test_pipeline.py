"""pipelines/ssl_study.toml parses and expands into the study's cells; environment variables in specs."""

from collections import Counter
from pathlib import Path

import pytest

from trainer.pipeline import cells, load_spec

SPEC = Path(__file__).resolve().parents[2] / "pipelines" / "ssl_study.toml"
METHODS = {"baseline", "same-epochs", "full-labeled", "dino", "b-grpo", "pseudo-label", "fixmatch", "reference"}
VARS = {"URDU_STORE": "/s/urdu.zarr", "EMOBOX": "/e", "DEMO_STORE": "/d/store.zarr", "DEMO_ROOT": "/d",
        "STUDY_OUT": "/o"}


@pytest.fixture
def study_env(monkeypatch):
    for k, v in VARS.items():
        monkeypatch.setenv(k, v)


def _folder(c) -> str:
    return c.out.rsplit("/", 1)[1]


def test_ssl_study_expands_into_the_expected_cells(study_env):
    todo = cells(load_spec(SPEC))
    groups = Counter((c.dataset, c.model, _folder(c)) for c in todo)
    assert groups == {(d, m, s): 9 for d, m in [("urdu", "fbank-stats"), ("urdu", "egemaps"), ("demo", "fbank-stats")]
                      for s in ("last", "val", "converged")}
    for key in groups:
        assert {c.method for c in todo if (c.dataset, c.model, _folder(c)) == key} == METHODS
    for c in todo:
        assert c.labels == "six" and c.standardize and c.seeds == (0, 1, 2, 3, 4)
        assert c.store == (VARS["URDU_STORE"] if c.dataset == "urdu" else VARS["DEMO_STORE"])
        assert c.manifests == (VARS["EMOBOX"] if c.dataset == "urdu" else VARS["DEMO_ROOT"])
        assert c.out == f"/o/{c.dataset}-{c.model}/{_folder(c)}"
        assert c.val_fraction == (0.0 if _folder(c) == "last" else 0.2)
        assert c.select == ("val" if _folder(c) == "val" else "last")
        # converged: every method but the reference (which always stops on its own validation rows)
        assert c.protocol == ("converged" if _folder(c) == "converged" and c.method != "reference" else "paper")
        assert c.progress is False and c.experiment == "ssl_study"
    bgrpo = sorted(c.sup_weight for c in todo if c.method == "b-grpo" and c.dataset == "urdu" and c.select == "last"
                   and c.model == "egemaps" and _folder(c) == "last")
    assert bgrpo == [0.0, 1.0]  # the paper's defaults and the stabilised variant
    assert all(c.to_dict()["sup_weight"] == 0.0 for c in todo if c.method != "b-grpo")
    assert all(not hasattr(c, "sup_weight") for c in todo if c.method != "b-grpo")  # an option of b-grpo only


def test_ssl_study_set_overrides_seeds_and_threads(study_env):
    todo = cells(load_spec(SPEC, overrides=["seeds=0,1,2", "threads=1"]))
    assert len(todo) == 81 and {(c.seeds, c.threads) for c in todo} == {((0, 1, 2), 1)}


def test_unset_variable_names_itself(monkeypatch, tmp_path):
    monkeypatch.delenv("NO_SUCH_STORE_VAR", raising=False)
    spec = tmp_path / "s.toml"
    spec.write_text('store = "${NO_SUCH_STORE_VAR}/x.zarr"\n[[grid]]\nmethod = "baseline"\ndataset = "d"\n')
    with pytest.raises(ValueError, match="NO_SUCH_STORE_VAR is not set"):
        cells(load_spec(spec))
    monkeypatch.setenv("NO_SUCH_STORE_VAR", "/here")
    assert cells(load_spec(spec))[0].store == "/here/x.zarr"
