"""EmoBox comparability: --head emobox (eq. F3-F4), `trainer run emobox` (schedule eq. E1, pooled scoring eq. E2),
the recipe, the published numbers and the side-by-side table."""

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from tests.trainer.test_frames import cfg_kw, fstore  # noqa: F401 (fixture)
from trainer.algorithms.emobox import RECIPE, emobox_lr, pooled_scores
from trainer.config import TrainConfig
from trainer.experiment import run
from trainer.frames import utterance_norm
from trainer.models import StackedMLP
from trainer.tables import published_numbers, render

ROOT = Path(__file__).resolve().parents[2]


def test_schedule_is_speechbrains_linear_warmup_stepped_after_each_epoch():
    # speechbrain's docstring: LinearWarmupScheduler(1.0, 2, 4).get_next_value() -> 0, 0.5, 1, 0.5, 0; EmoBox's
    # train.py trains epoch 1 at the optimiser's lr and sets each later epoch's lr from the next value
    assert [emobox_lr(e, 1.0, 2, 4) for e in range(1, 7)] == [1.0, 0.0, 0.5, 1.0, 0.5, 0.0]
    lrs = [emobox_lr(e, 1e-4, 10, 100) for e in range(1, 101)]
    assert lrs[0] == 1e-4 and lrs[1] == 0 and lrs[11] == pytest.approx(1e-4) and lrs[-1] == pytest.approx(1e-4 * 2 / 90)


def test_pooled_scores_are_sklearns_on_the_concatenated_predictions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 300)
    y[y == 3] = 0  # class 3 only ever predicted (y_pred has a class y_true lacks)
    p = rng.integers(0, 4, 300)
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (y, p), 1)
    s = pooled_scores(cm)
    with pytest.warns(UserWarning, match="y_pred contains classes not in y_true"):
        ua = balanced_accuracy_score(y, p)
    assert s["ua"] == pytest.approx(ua, abs=1e-12) and s["wa"] == pytest.approx(accuracy_score(y, p), abs=1e-12)
    assert s["macro_f1"] == pytest.approx(f1_score(y, p, average="macro", zero_division=0), abs=1e-12)


def superb_reference(frames: torch.Tensor, member: torch.nn.Module) -> torch.Tensor:
    """EmoBox's path for one unpadded utterance (T, D): F.layer_norm over (T, D) (--output_norm), then
    SuperbBaseModel: relu(pre_net) per frame, mean over frames, post_net."""
    x = F.layer_norm(frames, frames.shape)
    return member[2](member[1](member[0](x)).mean(0))


def test_emobox_head_is_emoboxs_classifier_whatever_the_padding():
    g = torch.Generator().manual_seed(0)
    lengths = [5, 2, 7]
    x = torch.randn(2, 3, 7, 4, generator=g) * 3 + 1  # (M, B, T, D)
    model = StackedMLP.from_seeds([0, 1], 4, 3, 8, head="emobox")
    ref = torch.stack([torch.stack([superb_reference(x[m, b, :n], model.member(m)) for b, n in enumerate(lengths)])
                       for m in range(2)])
    for t_max in (7, 10):  # NaN padding (the frames' mask), and extra padded positions
        xp = torch.full((2, 3, t_max, 4), float("nan"))
        for b, n in enumerate(lengths):
            xp[:, b, :n] = x[:, b, :n]
        torch.testing.assert_close(model(xp), ref, rtol=1e-5, atol=1e-5)
    model(xp).sum().backward()  # NaN padding never reaches a gradient
    assert all(torch.isfinite(p.grad).all() for p in (model.w1, model.b1, model.w2, model.b2))
    u = utterance_norm(x[:1, :1], torch.ones(1, 1, 7, dtype=torch.bool))
    torch.testing.assert_close(u[0, 0], F.layer_norm(x[0, 0], (7, 4)))


def emobox_kw(fstore, **kw):
    """The recipe on the frames fixture, 12 epochs (3 warm-up steps) at lr 1e-2, one seed."""
    base = {**cfg_kw(fstore), **{k: v for k, v in RECIPE.items() if k != "method"}}
    return {**base, "epochs_baseline": 12, "emobox_warmup": 3, "lr": 1e-2, "seeds": (0,), **kw}


def test_run_emobox_schedule_rows_and_pooled_scores(fstore):
    res = run(TrainConfig("emobox", **emobox_kw(fstore, out="unused")))
    curves = pd.DataFrame(res.curves)
    lrs = curves.groupby("epoch").lr.first().to_numpy()
    np.testing.assert_allclose(lrs, [emobox_lr(e, 1e-2, 3, 12) for e in range(1, 13)], rtol=1e-6)
    rows = pd.DataFrame(res.rows)
    assert set(rows.stage) == {"final"} and (rows.labeled_fraction == 1).all() and (rows.epochs == 12).all()
    n = len(fstore["keys"])
    assert (rows.n_train_labeled + rows.n_val + rows.n_test == n).all()  # every label, less 20 % validation
    assert (rows.n_val > 0).all() and (rows["head"] == "emobox").all()
    for m in ("ua", "wa", "macro_f1"):
        assert rows[f"emobox_pooled_{m}"].between(0, 1).all()
    one = pd.DataFrame(run(TrainConfig("emobox", **emobox_kw(fstore, out="unused", epochs_baseline=1))).rows)
    for m in ("ua", "wa", "macro_f1"):  # one epoch: the pooled predictions are the last epoch's
        np.testing.assert_allclose(one[f"emobox_pooled_{m}"], one[m], atol=1e-12)


def test_emobox_needs_every_label(fstore):
    with pytest.raises(ValueError, match="--labeled-fraction 1"):
        TrainConfig("emobox", **emobox_kw(fstore, labeled_fraction=0.5))


def test_spec_defaults_are_the_recipe():
    spec = tomllib.loads((ROOT / "pipelines" / "emobox.toml").read_text())
    got = {k: tuple(v) if isinstance(v, list) else v for k, v in spec["defaults"].items()}
    assert got == RECIPE and spec["name"] == "emobox"


def test_published_numbers_have_sources():
    pub = published_numbers()
    assert {"iemocap", "meld", "emodb"} <= set(pub.corpus) and pub.source_url.str.startswith("https://").all()
    w = pub[(pub.corpus == "iemocap") & (pub.encoder == "whisper-large-v3")].iloc[0]
    assert (w.ua, w.wa, w.macro_f1) == (73.54, 72.86, 73.11)
    assert not pub.duplicated(["corpus", "encoder"]).any() and pub[["ua", "wa", "macro_f1"]].le(100).all().all()


def test_table_sets_ours_beside_published(fstore):
    rows = pd.DataFrame(run(TrainConfig("emobox", **emobox_kw(fstore, out="unused", seeds=(0, 1)))).rows)
    rows["experiment"] = "emobox"
    other = rows.assign(dataset="iemocap", model="whisper-large-v3")  # the same numbers under a published name
    text = render(pd.concat([rows, other], ignore_index=True), "auto")
    assert "EmoBox published: none for fm on ds" in text
    assert "| iemocap | whisper-large-v3 | ours: emobox, last epoch |" in text
    assert "73.54 | 72.86 | 73.11 |" in text and "EmoBox's released scoring" in text
    mean_ua = rows.groupby("seed").ua.mean().mean() * 100
    assert f"{mean_ua - 73.54:+.1f} |" in text.split("Δ ours − published")[1].splitlines()[0]


@pytest.mark.slow
def test_pipeline_on_the_demo_corpus_prints_the_side_by_side_table(demo_corpus, tmp_path):
    """`trainer pipeline pipelines/emobox.toml` end to end: demo audio -> fbank-stats frames -> EmoBox's recipe on
    its 3 folds -> the table, which says EmoBox published nothing for fbank-stats."""
    from emocache.extract import ExtractConfig, extract
    from tests.trainer.test_trainer_cli import sh

    store = str(tmp_path / "store.zarr")
    report = extract(ExtractConfig(model="fbank-stats", manifests=(str(demo_corpus.ds_dir),), store=store,
                                   audio_root=(demo_corpus.audio_root,)), progress=False)
    assert report.ok
    p = sh("pipeline", ROOT / "pipelines" / "emobox.toml", "--store", store, "--manifests", demo_corpus.root,
           "--out", tmp_path / "out", "--set", "dataset=demo", "--set", "model=fbank-stats", "--set",
           "epochs_baseline=4", "--set", "seeds=0", "--set", "threads=1", "--set", "plots=false")
    assert "EmoBox comparison" in p.stdout and "| demo | fbank-stats | ours: emobox, last epoch |" in p.stdout
    assert "EmoBox published: none for fbank-stats on demo" in p.stdout
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(rows.fold.unique()) == [1, 2, 3] and (rows.method == "emobox").all()
    assert rows.emobox_pooled_macro_f1.between(0, 1).all()
