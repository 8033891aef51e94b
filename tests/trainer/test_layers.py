"""--layer K|weighted (SUPERB layer weights) and --normalize none|global|speaker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.config import TrainConfig
from trainer.data import DataError, load_features, open_store, speaker_normalize, speaker_stat_rows
from trainer.experiment import prepare, run, write
from trainer.models import StackedAdam, StackedMLP
from trainer.synthetic import write_folds

LABELS = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad"}
N, L, D, N_SPK = 96, 3, 6, 8


@pytest.fixture(scope="module")
def layered(tmp_path_factory):
    """Entry 'h'/'lay' with layers (0, 1, 2), an entry 'p'/'lay' without, folds with a 'speaker' field (12 rows per
    speaker, speakers 0-3 in fold 1's test)."""
    from emocache.store import open_store as st_open

    root = tmp_path_factory.mktemp("layered")
    rng = np.random.default_rng(0)
    keys = [f"lay-u{i:03d}" for i in range(N)]
    raw = [list(LABELS)[i % 4] for i in range(N)]
    y = np.arange(N) % 4
    Y = (rng.normal(0, 1, (N, L, D)) + np.arange(N_SPK).repeat(N // N_SPK)[:, None, None]).astype(np.float32)
    Y[:, 1, :4] += 2.0 * np.eye(4, dtype=np.float32)[y]  # layer 1 carries the class
    st = st_open(root / "store", mode="a")
    for model, layers in (("h", (0, 1, 2)), ("p", ())):
        e = st.create_entry(model, "lay", keys, raw, D, D, {"weights": "w", "layer": "last",
                                                            **({"layers": list(layers)} if layers else {})},
                            has_frames=False, block_size=N, **({"layers": layers} if layers else {}))
        e.write_block(0, Y[:, -1], None, {}, Y if layers else None)
    man = root / "manifests"
    write_folds(man, "lay", keys, raw, 2, LABELS)
    spk = {k: f"s{i // (N // N_SPK)}" for i, k in enumerate(keys)}
    for p in (man / "lay").glob("fold_*/*.jsonl"):
        rows = [json.loads(x) for x in p.read_text().splitlines()]
        p.write_text("".join(json.dumps({**r, "speaker": spk[r["key"]]}) + "\n" for r in rows))
    return {"store": str(root / "store"), "manifests": str(man), "Y": Y, "keys": keys, "root": root}


def kw(layered, **over):
    return dict(store=layered["store"], manifests=layered["manifests"], model="h", dataset="lay", epochs_baseline=3,
                epochs_stage2=2, lr=1e-2, plots=False, progress=False, threads=1, seeds=(0, 1),
                out=str(layered["root"] / "out"), **over)


def test_layer_weights_are_softmax_and_get_gradients():
    m = StackedMLP.from_seeds([0, 1], D, 4, 8, n_layers=L)
    with torch.no_grad():
        m.layer_logits.copy_(torch.randn(2, L))
    w = m.layer_weights()
    assert w.shape == (2, L) and torch.allclose(w.sum(-1), torch.ones(2)) and (w > 0).all()
    x = torch.randn(2, 5, L, D)  # (M, B, L, D)
    expect = m.member(0)(torch.einsum("bld,l->bd", x[0], w[0].detach()))
    torch.testing.assert_close(m(x)[0], expect)
    m(x).sum().backward()
    assert m.layer_logits.grad is not None and m.layer_logits.grad.abs().sum() > 0
    before = m.layer_logits.detach().clone()
    opt = StackedAdam(m.parameters(), lr=0.1)
    opt.step()
    assert not torch.equal(before, m.layer_logits.detach())


def test_layer_k_equals_training_on_pooled_layer_k(layered):
    store = open_store(layered["store"])
    f = load_features(store, "h", "lay", layer="1")
    torch.testing.assert_close(f.X, torch.from_numpy(store.pooled("h", "lay", layer=1)[1]))
    r_layer = run(TrainConfig(method="baseline", layer="1", **kw(layered)))
    data = prepare(TrainConfig(method="baseline", **kw(layered)))
    data.X = data.Xu = f.X
    r_pooled = run(TrainConfig(method="baseline", **kw(layered)), data)
    assert [r["macro_f1"] for r in r_layer.rows] == [r["macro_f1"] for r in r_pooled.rows]
    assert r_layer.rows[0]["layer"] == "1"


def test_missing_layers_is_a_one_line_error(layered):
    for layer in ("weighted", "1"):
        with pytest.raises(DataError, match="emocache extract --model p --layers all") as e:
            prepare(TrainConfig(method="baseline", layer=layer, **{**kw(layered), "model": "p"}))
        assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="layer 7"):
        prepare(TrainConfig(method="baseline", layer="7", **kw(layered)))


@pytest.mark.parametrize("method", ["baseline", "same-epochs", "full-labeled", "b-grpo", "pseudo-label",
                                    "fixmatch", "dino"])
def test_weighted_layers_train_for_every_policy_method(layered, method):
    cfg = TrainConfig(method=method, layer="weighted", normalize="speaker", **kw(layered))
    res = run(cfg)
    ws = res.layer_weights
    assert ws["layers"] == [0, 1, 2] and len(ws["runs"]) == 4  # 2 folds x 2 seeds
    W = np.array([r["weights"] for r in ws["runs"]])
    np.testing.assert_allclose(W.sum(1), 1, rtol=1e-5)
    assert not np.allclose(W, 1 / L)  # learnt, not left uniform
    assert all(np.isfinite(r["macro_f1"]) for r in res.rows)


@pytest.mark.slow
def test_weighted_results_json_and_plot(layered):
    cfg = TrainConfig(method="baseline", layer="weighted", **{**kw(layered), "plots": True})
    d = write(run(cfg))
    meta = json.loads((d / "results.json").read_text())
    assert meta["layer_weights"]["layers"] == [0, 1, 2] and len(meta["layer_weights"]["runs"]) == 4
    assert (d / "layer_weights.png").stat().st_size > 0


def test_speaker_stats_come_from_the_right_rows():
    spk = np.array(["a"] * 4 + ["b"] * 4 + ["c"] * 4, dtype=object)
    train, test = np.array([0, 1, 2, 4, 5, 6, 7]), np.array([3, 8, 9, 10, 11])
    rows = speaker_stat_rows(spk, train, test)
    assert rows["a"].tolist() == [0, 1, 2]  # a training speaker: its training rows only (not test row 3)
    assert rows["b"].tolist() == [4, 5, 6, 7]
    assert rows["c"].tolist() == [8, 9, 10, 11]  # a test speaker: its own test rows (transductive)
    X = torch.randn(12, D)
    Z = speaker_normalize(X, spk, train, test)
    torch.testing.assert_close(Z[3], (X[3] - X[:3].mean(0)) / X[:3].std(0))
    torch.testing.assert_close(Z[8:].mean(0), torch.zeros(D), atol=1e-5, rtol=0)


def test_speaker_normalisation_reads_no_test_label(layered, tmp_path):
    """Poisoned test labels (other classes, unknown to the label map for stats) leave the normalised X unchanged."""
    import shutil

    man = tmp_path / "man"
    shutil.copytree(layered["manifests"], man)
    base = prepare(TrainConfig(method="baseline", normalize="speaker", **kw(layered)))
    for p in man.glob("lay/fold_*/*_test_fold_*.jsonl"):
        rows = [json.loads(x) for x in p.read_text().splitlines()]
        p.write_text("".join(json.dumps({**r, "emo": "hap" if r["emo"] != "hap" else "neu"}) + "\n" for r in rows))
    poisoned = prepare(TrainConfig(method="baseline", normalize="speaker", **{**kw(layered), "manifests": str(man)}))
    torch.testing.assert_close(base.X, poisoned.X)
    assert base.X.shape[0] == 2 * N  # one normalised copy per fold


def test_speaker_normalize_unknown_dataset_names_the_option(synth, base_kw):
    with pytest.raises(DataError, match="--speaker-pattern"):
        prepare(TrainConfig(method="baseline", normalize="speaker", **base_kw))


def test_standardize_is_normalize_global(layered):
    a = run(TrainConfig(method="baseline", standardize=True, **kw(layered)))
    b = run(TrainConfig(method="baseline", normalize="global", **kw(layered)))
    assert [r["macro_f1"] for r in a.rows] == [r["macro_f1"] for r in b.rows]
    with pytest.raises(ValueError, match="--standardize"):
        TrainConfig(standardize=True, normalize="speaker")


@pytest.mark.slow
def test_cli_weighted_speaker_smoke(layered, tmp_path):
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, "-m", "trainer.cli", "run", "baseline", "--store", layered["store"],
                        "--model", "h", "--dataset", "lay", "--manifests", layered["manifests"], "--labels", "six",
                        "--layer", "weighted", "--normalize", "speaker", "--epochs-baseline", "2", "--threads", "1",
                        "--out", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    (d,) = [x for x in out.iterdir() if x.is_dir()]
    assert "layer_weights" in json.loads((d / "results.json").read_text())
    assert (d / "layer_weights.png").exists()
