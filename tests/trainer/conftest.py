"""A synthetic EmoBox dataset in a tmp store: policy model 'm', teacher 't', frames model 'mf', corpus 'ext',
and 'hard' (overlapping classes, on which faithful b-grpo collapses)."""

from __future__ import annotations

import pytest

from trainer.synthetic import make_dataset

LABELS = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad", "dis": "Disgust"}


@pytest.fixture(scope="session")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    store, man = str(root / "store"), str(root / "manifests")
    d = make_dataset(store, man, "m", "ds", n=240, dim=16, n_folds=2, seed=1, label_map=LABELS, separation=1.5)
    make_dataset(store, man, "t", "ds", n=240, dim=8, seed=1, label_map=LABELS, separation=1.5,
                 keys=d["keys"], write_manifests=False, feature_seed=7)
    make_dataset(store, man, "mf", "ds", n=240, dim=16, seed=1, label_map=LABELS, separation=1.5,
                 keys=d["keys"], write_manifests=False, frames=True)
    make_dataset(store, man, "m", "ext", n=120, dim=16, n_folds=2, seed=3, label_map=LABELS, separation=1.5)
    make_dataset(store, man, "m", "hard", n=240, dim=16, n_folds=2, seed=1, label_map=LABELS, separation=0.4)
    return {"store": store, "manifests": man, "root": root, **d}


@pytest.fixture
def base_kw(synth):
    return dict(store=synth["store"], manifests=synth["manifests"], model="m", dataset="ds",
                epochs_baseline=3, epochs_stage2=2, lr=1e-3, plots=False, progress=False, threads=1)
