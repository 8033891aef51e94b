"""trainer/frames.py and the frame heads (--head mean|attention) end to end."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tests.trainer.test_trainer_cli import run_dir, sh
from trainer.config import TrainConfig
from trainer.data import DataError, open_store
from trainer.experiment import prepare, run
from trainer.frames import (FramesTooLarge, attention_weights, attentive_pool, frame_mask, load_frames,
                            masked_mean, pooled_mean)
from trainer.models import StackedMLP
from trainer.synthetic import write_folds

LABELS = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad"}


@pytest.fixture(scope="module")
def fstore(tmp_path_factory):
    """Entries 'fm' (policy, 12-dim frames) and 'ft' (teacher, 6-dim frames) of 'ds' whose pooled vector is the
    mean of the stored (float16) frames, 2-9 frames each; 'np' has no frames."""
    from emocache.store import write_arrays

    root = tmp_path_factory.mktemp("fstore")
    store, man = str(root / "store"), str(root / "man")
    rng = np.random.default_rng(0)
    n = 160
    raw = [list(LABELS)[i] for i in rng.integers(0, 4, n)]
    keys = [f"ds-u{i:04d}" for i in range(n)]
    y = np.array([list(LABELS).index(r) for r in raw])
    for model, dim in (("fm", 12), ("ft", 6)):
        means = rng.normal(0, 1.5, (4, dim))
        F = [(means[y[i]] + rng.normal(0, 1, (int(rng.integers(2, 10)), dim))).astype(np.float16) for i in range(n)]
        X = np.stack([f.astype(np.float32).mean(0) for f in F])
        write_arrays(store, model, "ds", keys, raw, X, frames=F)
    write_arrays(store, "np", "ds", keys, raw, X)
    write_folds(man, "ds", keys, raw, 2, LABELS)
    return {"store": store, "manifests": man, "keys": keys}


def cfg_kw(fstore, **kw):
    return dict(store=fstore["store"], manifests=fstore["manifests"], model="fm", dataset="ds", epochs_baseline=3,
                epochs_stage2=2, lr=1e-3, plots=False, progress=False, threads=1, seeds=(0,), **kw)


def test_load_frames_pads_with_nan_and_matches_the_store(fstore):
    st = open_store(fstore["store"])
    keys = fstore["keys"][::-1][:20]  # not store order
    X, lengths = load_frames(st, "fm", "ds", keys)
    assert X.dtype == torch.float16 and X.shape == (20, int(lengths.max()), 12)
    for i, k in enumerate(keys):
        f = st.frames("fm", "ds", k)
        assert lengths[i] == len(f)
        np.testing.assert_array_equal(X[i, :len(f)].float().numpy(), f)
        assert torch.isnan(X[i, len(f):]).all()
    assert (frame_mask(X).sum(1) == lengths).all()
    with pytest.raises(FramesTooLarge, match="GiB, over --frames-memory-gb"):
        load_frames(st, "fm", "ds", keys, memory_gb=1e-9)


def test_masked_mean_ignores_padding_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 4, generator=g)  # (M, B, T, D)
    mask = torch.rand(2, 3, 5, generator=g) > 0.4
    mask[:, :, 0] = True
    ref = torch.stack([torch.stack([x[m, b][mask[m, b]].mean(0) for b in range(3)]) for m in range(2)])
    torch.testing.assert_close(masked_mean(x, mask, dim=-2), ref)
    garbage = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 1e6))
    torch.testing.assert_close(masked_mean(garbage, mask, dim=-2), ref)
    q = torch.randn(2, 4, generator=g)
    nan = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, float("nan")))
    for pad in (garbage, nan):  # padding never changes the output
        torch.testing.assert_close(attentive_pool(pad, mask, q), attentive_pool(x, mask, q))
    # extra padded positions appended change nothing either
    longer = torch.cat([x, torch.full((2, 3, 3, 4), -7.0)], 2)
    lmask = torch.cat([mask, torch.zeros(2, 3, 3, dtype=torch.bool)], 2)
    torch.testing.assert_close(attentive_pool(longer, lmask, q), attentive_pool(x, mask, q))
    torch.testing.assert_close(masked_mean(longer, lmask, dim=-2), ref)


def test_attention_pool_by_hand():
    # one member, one utterance, D = 4, frames e1, 2 e2, (padding); q = (2 ln 3, 0, 0, 0) * sqrt(4) / 2 ...
    x = torch.tensor([[[[1.0, 0, 0, 0], [0, 2.0, 0, 0], [5.0, 5.0, 5.0, 5.0]]]])  # (1, 1, 3, 4)
    mask = torch.tensor([[[True, True, False]]])
    q = torch.tensor([[2 * math.log(3.0), 0, 0, 0]])  # s = (ln 3, 0) after / sqrt(4) -> w = (3/4, 1/4)
    w = attention_weights(x, mask, q)
    torch.testing.assert_close(w, torch.tensor([[[0.75, 0.25, 0.0]]]))
    torch.testing.assert_close(attentive_pool(x, mask, q), torch.tensor([[[0.75, 0.5, 0.0, 0.0]]]))
    # no valid frame -> zero vector, no NaN
    assert torch.equal(attentive_pool(x, torch.zeros_like(mask), q), torch.zeros(1, 1, 4))
    assert torch.equal(masked_mean(x, torch.zeros_like(mask), dim=-2), torch.zeros(1, 1, 4))


def test_attention_starts_as_mean_and_learns_a_query():
    x = torch.randn(2, 3, 5, 4)
    x[:, :, 3:] = float("nan")
    mean = StackedMLP.from_seeds([0, 1], 4, 3, 8, head="mean")
    att = StackedMLP.from_seeds([0, 1], 4, 3, 8, head="attention")
    torch.testing.assert_close(att(x), mean(x))
    att(x).sum().backward()
    assert att.query.grad is not None and att.query.grad.abs().sum() > 0 and att.query.shape == (2, 4)


@pytest.mark.parametrize("standardize", [False, True])
def test_mean_head_reproduces_pooled(fstore, standardize):
    kw = cfg_kw(fstore, method="baseline", standardize=standardize, out="unused")
    pooled = run(TrainConfig(**kw))
    mean = run(TrainConfig(**kw, head="mean"))
    np.testing.assert_array_equal(pooled.rows[-1]["macro_f1"], mean.rows[-1]["macro_f1"])
    a, b = pd.DataFrame(pooled.curves), pd.DataFrame(mean.curves)
    np.testing.assert_allclose(a.loss.to_numpy(float), b.loss.to_numpy(float), rtol=2e-3)


def test_prepare_frames_and_refusals(fstore):
    data = prepare(TrainConfig(**cfg_kw(fstore, method="baseline", head="attention")))
    assert data.X.dim() == 3 and data.X.shape[-1] == 12
    st = open_store(fstore["store"])
    keys, X = st.pooled("fm", "ds")
    torch.testing.assert_close(pooled_mean(data.X), torch.from_numpy(X), atol=2e-3, rtol=1e-3)
    with pytest.raises(DataError, match="--no-frames"):
        prepare(TrainConfig(**cfg_kw(fstore, method="baseline", head="mean") | {"model": "np"}))
    with pytest.raises(DataError, match="views frames"):
        prepare(TrainConfig(**cfg_kw(fstore, method="fixmatch", head="mean", fixmatch_views="frames")))
    with pytest.raises(ValueError, match="--head mean pools"):
        TrainConfig(**cfg_kw(fstore, method="baseline", head="mean", layer="weighted"))
    with pytest.raises(ValueError, match="--head attention pools"):
        TrainConfig(**cfg_kw(fstore, method="baseline", head="attention", normalize="speaker"))


def test_teacher_reads_frames(fstore):
    data = prepare(TrainConfig(**cfg_kw(fstore, method="b-grpo", head="mean", reward="r3", teacher="ft")))
    assert data.Xt.dim() == 3 and data.Xt.shape[-1] == 6


METHODS = ["baseline", "same-epochs", "full-labeled", "dino", "b-grpo", "grpo", "reference", "pseudo-label",
           "fixmatch"]


@pytest.mark.slow
def test_cli_attention_head_every_method(fstore, tmp_path):
    common = ["--store", fstore["store"], "--manifests", fstore["manifests"], "--model", "fm", "--dataset", "ds",
              "--epochs-baseline", 2, "--epochs-stage2", 2, "--out", tmp_path, "--lr", "1e-3", "--threads", 1,
              "--head", "attention", "--no-plots"]
    for method in METHODS:
        extra = {"b-grpo": ["--reward", "r3", "--teacher", "ft"], "grpo": ["--reward", "r3", "--teacher", "ft"],
                 "reference": ["--reference-max-epochs", 3]}.get(method, [])
        p = sh("run", method, *common, *extra)
        assert "final mean over" in p.stdout
    for method in METHODS:
        readable = f"{method}_fm_ds_six" + {"b-grpo": "_r3_positive_ft", "grpo": "_r3_positive_ft_G8"}.get(method, "")
        df = pd.read_csv(run_dir(tmp_path, readable + "_head-attention") / "results.csv")
        assert (df["head"] == "attention").all() and df.macro_f1.between(0, 1).all()
