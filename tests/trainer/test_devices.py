"""--device: the option's checks, that it changes no run name, hash or CPU result, and the device path on a simulated
CUDA device (tests/helpers/simdevice.py): no operation CUDA would refuse, no host sync per training step, the same
numbers as on the CPU, and random draws that come from the runs' CPU generators whatever the device."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers.simdevice import DevTensor, simulated_device
from trainer import devices
from trainer.algorithms.common import active_multinomial, active_rand
from trainer.config import METHODS, TrainConfig
from trainer.data import device_multinomial, epoch_batches, run_multinomial
from trainer.experiment import prepare, run

CPU = torch.device("cpu")
TRAINER = [sys.executable, "-m", "trainer.cli"]


def kw(synth, **over):
    return {**dict(store=synth["store"], manifests=synth["manifests"], model="m", dataset="ds", epochs_baseline=4,
                   epochs_stage2=4, batch_size=16, lr=1e-3, plots=False, progress=False, threads=1, seeds=(0, 1)),
            **over}


# -- the option ------------------------------------------------------------------------------------------------------
def test_device_values_are_checked_when_the_config_is_built():
    for ok in ("auto", "cpu", "cuda", "cuda:0", "cuda:3"):
        assert TrainConfig(method="baseline", device=ok).device == ok  # the format only: nothing asked of torch
    for bad in ("gpu", "cuda:", "cuda:x", "CPU", "cuda:0:1", ""):
        with pytest.raises(ValueError, match=r"--device .*: use auto, cpu, cuda or cuda:I"):
            TrainConfig(method="baseline", device=bad)


def test_resolve_names_the_option_and_what_torch_sees(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.resolve("auto") == CPU and devices.resolve(CPU) == CPU and devices.resolve("cpu") == CPU
    with pytest.raises(ValueError, match=r"^--device cuda: torch .*(without CUDA|sees no CUDA device); use "
                                         r"--device cpu \(or auto\)$"):
        devices.resolve("cuda")
    with pytest.raises(ValueError, match=r"^device cuda:1: "):
        devices.resolve("cuda:1", "device")
    monkeypatch.setattr(torch.version, "cuda", "12.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert devices.resolve("auto") == devices.resolve("cuda") == torch.device("cuda", 0)
    assert devices.resolve("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ValueError, match=r"^--device cuda:2: torch sees 2 CUDA devices \(cuda:0..cuda:1\); use an "
                                         r"index below 2$"):
        devices.resolve("cuda:2")


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cli_missing_cuda_is_a_one_line_error_exit_2(synth, tmp_path):
    common = ["--store", synth["store"], "--manifests", synth["manifests"], "--dataset", "ds", "--out",
              str(tmp_path / "out")]
    p = subprocess.run([*TRAINER, "run", "baseline", *common, "--device", "cuda"], capture_output=True, text=True,
                       timeout=300)
    err = p.stderr.strip()
    assert p.returncode == 2 and "\n" not in err and err.startswith("error: --device cuda: torch"), (p.returncode, err)
    assert "--device cpu" in err and not (tmp_path / "out").exists()  # nothing was trained or written
    from typer.testing import CliRunner

    from trainer.cli import app

    for args in (["run", "b-grpo", *common, "--device", "cuda:1"], ["bench", "--device", "cuda", "--n", "50"]):
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 2 and f"error: --device {args[args.index('--device') + 1]}: torch" in r.output
    r = CliRunner().invoke(app, ["run", "baseline", *common, "--device", "gpu"])
    assert r.exit_code == 2 and "--device 'gpu': use auto, cpu, cuda or cuda:I" in r.output


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_pipeline_device_it_cannot_use_stops_before_any_cell(synth, tmp_path):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "t"\n[defaults]\nmodel = "m"\nepochs_baseline = 1\n[[grid]]\nmethod = ["baseline"]\n'
                    'dataset = ["ds"]\n')
    p = subprocess.run([*TRAINER, "pipeline", str(spec), "--store", synth["store"], "--manifests", synth["manifests"],
                        "--out", str(tmp_path / "out"), "--set", "device=cuda"], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 2 and "device cuda: torch" in p.stderr and not (tmp_path / "out").exists()


def test_device_is_in_no_run_name_hash_or_row():
    for extra in ({}, {"method": "b-grpo", "reward": "r3", "teacher": "t"}, {"method": "dino", "head": "mean"}):
        base = TrainConfig(**{"method": "baseline", "store": "s", "manifests": "m", "model": "m", "dataset": "d",
                              **extra})
        for device in ("cpu", "cuda", "cuda:1"):
            c = base.replace(device=device)
            assert (c.run_name, c.config_hash, c.settings()) == (base.run_name, base.config_hash, base.settings())
            assert c.to_dict()["device"] == device  # results.json's config says where it ran when it was asked
        assert "device" not in base.to_dict()  # at its default, earlier results.json configs keep their keys


# -- the CPU path is today's ---------------------------------------------------------------------------------------
RECORDED = {
    "baseline": [(0.9466422466422466, 1.0002795457839966), (0.6470058503042305, 1.1444826126098633),
                 (0.4938480853735091, 1.1260044574737549), (0.7755120977522934, 1.0072880983352661)],
    "same": [(0.9898000815993472, 0.690534770488739), (0.955644766952882, 0.7569227814674377),
             (0.9118807315615827, 0.7019478678703308), (0.9215970720976978, 0.6553237438201904)],
    "bgrpo-sample": [(1.0, -0.26739707589149475), (0.9778953196945852, -0.21957306563854218),
                     (0.9326439137534692, -0.18104040622711182), (0.9430560835550932, -0.20281223952770233)],
    "grpo": [(0.6258730158730158, -0.12031195312738419), (0.30251710654936464, -0.14656005799770355),
             (0.4410602910602911, -0.06798096001148224), (0.7100595238095239, -0.09936700016260147)],
    "dino-noise": [(0.9466422466422466, 0.35001540184020996), (0.6470058503042305, 0.5772525072097778),
                   (0.4938480853735091, 0.7704942226409912), (0.7755120977522934, 0.4128635823726654)],
    "dino-frames": [(0.9466422466422466, 0.1563226580619812), (0.662587160404483, 0.30653586983680725),
                    (0.4938480853735091, 0.3268176317214966), (0.7755120977522934, 0.20860199630260468)],
    "fixmatch-frames": [(1.0, 0.9321683049201965), (0.966267412717841, 1.0840167999267578),
                        (0.9230912549510111, 0.979781448841095), (0.9434859786987912, 0.842906653881073)],
    "pseudo": [(1.0, 1.2941347360610962), (0.9345238095238095, 1.7435245513916016),
               (0.8900315370903606, 1.4455474615097046), (0.9434859786987912, 1.2182692289352417)],
    "teacher-adv-std": [(0.7544212699742654, 1.812695860862732), (0.47497658216732047, 1.797274112701416),
                        (0.7980416857535502, 1.7951630353927612), (0.7234973963234832, 1.9105463027954102)],
    "reference": [(1.0, 0.2951052486896515), (0.9564393939393939, 0.33769822120666504),
                  (0.9562599696196925, 0.354967325925827), (0.9658914728682171, 0.2741180956363678)],
}
"""Final rows (macro-F1, train loss) per (fold, seed) in order, recorded with the trainer before --device (main at
commit d6342c4, after the stage-2 fixes that changed b-grpo --action sample) on the synth fixture with ``kw``'s
settings. When --device was written, the rows, curves and predictions of 23 configurations of every method were also
compared file by file with --device cpu: identical."""
CASES = {
    "baseline": dict(method="baseline"),
    "same": dict(method="same-epochs", val_fraction=0.25, select="val"),
    "bgrpo-sample": dict(method="b-grpo", action="sample", mu=2, sup_weight=0.5, balance="inverse-freq"),
    "grpo": dict(method="grpo", group_size=4),
    "dino-noise": dict(method="dino", dino_views="noise"),
    "dino-frames": dict(method="dino", model="mf"),
    "fixmatch-frames": dict(method="fixmatch", model="mf", fixmatch_threshold=0.5),
    "pseudo": dict(method="pseudo-label", pseudo_threshold=0.5),
    "teacher-adv-std": dict(method="teacher", teacher="t", regularize="ls,adv", standardize=True),
    "reference": dict(method="reference", reference_max_epochs=30, reference_patience=5),
}


@pytest.mark.parametrize("case", list(RECORDED))
def test_cpu_rows_are_those_recorded_before_the_device_option(synth, case):
    res = run(TrainConfig(**kw(synth, device="cpu", **CASES[case])))
    got = [(r["macro_f1"], r["train_loss"]) for r in res.rows
           if r["stage"] == "final" and r["method"] == res.cfg.method]
    assert len(got) == len(RECORDED[case])
    for (f1, loss), (f1_was, loss_was) in zip(got, RECORDED[case]):
        assert f1 == f1_was and loss == pytest.approx(loss_was, rel=1e-5, abs=1e-6)
    assert res.device == "cpu (1 thread)"


# -- plumbing with torch.device objects ------------------------------------------------------------------------------
def test_plumbing_with_cpu_device_objects(synth):
    t = torch.arange(6)
    assert devices.place(t, CPU) is t and devices.place(None, CPU) is None
    data = prepare(TrainConfig(**kw(synth, method="b-grpo")))
    assert data.to(CPU) is data  # nothing to send: the same object, the same tensors
    pools = data.unlabeled
    a = list(epoch_batches(pools, 16, [torch.Generator().manual_seed(s) for s in (1, 2, 3, 4)]))
    b = list(epoch_batches(pools, 16, [torch.Generator().manual_seed(s) for s in (1, 2, 3, 4)], device=CPU))
    assert len(a) == len(b) and all(torch.equal(x, y) for u, v in zip(a, b) for x, y in zip(u, v))


def test_prepared_to_sends_shared_tensors_once(synth, monkeypatch):
    data = prepare(TrainConfig(**kw(synth, method="b-grpo", reward="r3", teacher="t")))
    with simulated_device(monkeypatch):
        on = data.to(devices.resolve("cuda"))
    assert on is not data and on.Xu is on.X and isinstance(on.X, DevTensor) and isinstance(on.Xt, DevTensor)
    assert torch.equal(on.X, data.X) and not isinstance(data.X, DevTensor)
    assert on.labeled is data.labeled and not isinstance(on.labeled[0], DevTensor)  # rows stay on the host


# -- random streams are the CPU generators' on every device ----------------------------------------------------------
def gens(n=3, offset=0):
    return [torch.Generator().manual_seed(10 + offset + r) for r in range(n)]


def states(gs):
    return [g.get_state() for g in gs]


def test_device_multinomial_draws_what_cpu_multinomial_draws():
    torch.manual_seed(0)
    for trial in range(60):
        p = (torch.randn(3, int(torch.randint(1, 30, ())), int(torch.randint(2, 8, ()))) * 3).softmax(-1)
        for n in (None, 5):
            g1, g2 = gens(offset=trial), gens(offset=trial)
            cpu = torch.stack([torch.multinomial(p[r], n or 1, replacement=n is not None, generator=g)
                               for r, g in enumerate(g1)])
            assert torch.equal(device_multinomial(p, g2, n), cpu if n else cpu.squeeze(-1))
            assert all(torch.equal(a, b) for a, b in zip(states(g1), states(g2)))


def test_random_draws_come_from_the_cpu_generators_on_any_device(monkeypatch):
    pools = [torch.arange(0, 37), torch.arange(40, 60), torch.arange(60, 100)]
    p = torch.randn(3, 9, 5).softmax(-1)
    active = torch.tensor([True, False, True])
    host = [gens(), gens(offset=5), gens(offset=7)]
    ref_batches = list(epoch_batches(pools, 8, host[0]))
    ref_rand = active_rand("randn", (9, 4), host[1], active), active_rand("rand", (32, 600), host[1], active)
    ref_mult = (active_multinomial(p, host[2], active), run_multinomial(p, host[2], 3))
    dev = [gens(), gens(offset=5), gens(offset=7)]
    with simulated_device(monkeypatch):
        cuda = devices.resolve("cuda")
        batches = list(epoch_batches(pools, 8, dev[0], device=cuda))
        drawn = (active_rand("randn", (9, 4), dev[1], active, device=cuda),
                 active_rand("rand", (32, 600), dev[1], active, device=cuda))  # a large draw: threads on the host
        p_dev = devices.place(p, cuda)
        mult = (active_multinomial(p_dev, dev[2], active), run_multinomial(p_dev, dev[2], 3))
    assert all(g.device.type == "cpu" for gs in dev for g in gs)
    for (i, v, a), (ri, rv, ra) in zip(batches, ref_batches):
        assert isinstance(i, DevTensor) and isinstance(v, DevTensor) and not isinstance(a, DevTensor)
        assert torch.equal(i, ri) and torch.equal(v, rv)
        assert torch.equal(a, ra)
    assert all(isinstance(d, DevTensor) and torch.equal(d, r) for d, r in zip(drawn, ref_rand))
    for m, r in zip(mult, ref_mult):
        assert isinstance(m, DevTensor) and torch.equal(m, r)
    for a, b in zip(dev, host):
        assert all(torch.equal(x, y) for x, y in zip(states(a), states(b)))  # the same numbers were taken


# -- every method on the simulated device ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eam_store(tmp_path_factory):
    """'fm' (12-dim) and 'ft' (6-dim) entries whose pooled vectors are the means of their float16 frames (EAM)."""
    from emocache.store import write_arrays
    from trainer.synthetic import write_folds

    labels = {"neu": "Neutral", "hap": "Happy", "ang": "Angry", "sad": "Sad"}
    root = tmp_path_factory.mktemp("eam")
    rng = np.random.default_rng(0)
    raw = [list(labels)[i] for i in rng.integers(0, 4, 120)]
    keys = [f"ds-u{i:04d}" for i in range(120)]
    y = np.array([list(labels).index(r) for r in raw])
    for model, dim in (("fm", 12), ("ft", 6)):
        means = rng.normal(0, 1.5, (4, dim))
        F = [(means[y[i]] + rng.normal(0, 1, (int(rng.integers(2, 10)), dim))).astype(np.float16) for i in range(120)]
        write_arrays(str(root / "store"), model, "ds", keys, raw, np.stack([f.astype(np.float32).mean(0) for f in F]),
                     frames=F)
    write_folds(root / "man", "ds", keys, raw, 2, labels)
    return {"store": str(root / "store"), "manifests": str(root / "man")}


SIM_CASES = {
    "baseline --select val --save-model": dict(method="same-epochs", val_fraction=0.25, select="val", save_model=True),
    "full-labeled --standardize": dict(method="full-labeled", standardize=True),
    "b-grpo sample mu 2 sup inverse-freq": dict(method="b-grpo", action="sample", mu=2, sup_weight=0.5,
                                                balance="inverse-freq"),
    "b-grpo class-norm unlabeled-from": dict(method="b-grpo", balance="class-norm", advantage="signed",
                                             unlabeled_from="ext"),
    "b-grpo eswr teacher": dict(method="b-grpo", reward="eswr", teacher="t"),
    "grpo wheel sup": dict(method="grpo", reward="wheel", teacher="t", sup_weight=1.0, group_size=4),
    "dino frames": dict(method="dino", model="mf"),
    "dino noise attention": dict(method="dino", model="mf", head="attention", dino_views="noise"),
    "fixmatch frames": dict(method="fixmatch", model="mf", fixmatch_threshold=0.5),
    "fixmatch mean head": dict(method="fixmatch", model="mf", head="mean", fixmatch_threshold=0.5),
    "pseudo-label speaker": dict(method="pseudo-label", normalize="speaker",
                                 speaker_pattern=r"ds-utt(?P<speaker>\d\d\d)\d\d"),
    "teacher ls adv standardize": dict(method="teacher", teacher="t", regularize="ls,adv", standardize=True),
    "reference": dict(method="reference", reference_max_epochs=6, reference_patience=2),
    "teacher eam": dict(method="teacher", model="fm", teacher="ft", regularize="ls,eam,adv"),
    "b-grpo converged": dict(method="b-grpo", protocol="converged", val_fraction=0.25),
    "dino converged": dict(method="dino", protocol="converged", val_fraction=0.25),
    "emobox": dict(method="emobox", model="mf", head="emobox", labeled_fraction=1.0),
}


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows).drop(columns=["seconds"], errors="ignore")


def sim_run(cfg, monkeypatch):
    with simulated_device(monkeypatch) as sim:
        res = run(cfg)
    return res, sim.syncs


@pytest.mark.slow
@pytest.mark.parametrize("case", list(SIM_CASES))
def test_every_method_on_a_simulated_device(synth, eam_store, case, monkeypatch, tmp_path):
    """No operation CUDA refuses; the rows, predictions and saved weights of the CPU; the host waits for the device
    as often with 8 steps per epoch as with 2 (per epoch, never per step), except EAM's host-side mixing."""
    settings = SIM_CASES[case]
    where = eam_store if "eam" in case else synth
    cfg = TrainConfig(**{**kw(synth, out=str(tmp_path), epochs_baseline=2, epochs_stage2=2, store=where["store"],
                              manifests=where["manifests"]), **settings})
    res, syncs = sim_run(cfg.replace(device="cuda", batch_size=8), monkeypatch)
    ref = run(cfg.replace(device="cpu", batch_size=8))
    assert res.device == "cuda:0 (simulated)"
    assert frame(res.rows).equals(frame(ref.rows)) and frame(res.curves).equals(frame(ref.curves))
    assert res.predictions.equals(ref.predictions)
    if cfg.save_model:  # the reported model reaches the host whole
        assert all(torch.equal(a, b) for a, b in zip(res.policy.state_dict().values(),
                                                    ref.policy.state_dict().values()))
    if "converged" in case:  # the epochs trained depend on the batches, and so does every per-epoch count
        return
    _, fewer_steps = sim_run(cfg.replace(device="cuda", batch_size=32), monkeypatch)
    per_step = {k: (syncs[k], fewer_steps[k]) for k in set(syncs) | set(fewer_steps) if syncs[k] != fewer_steps[k]}
    if "eam" in case:  # Algorithm 1 mixes on the host: the batch's rows are read back once per batch
        assert set(per_step) == {"read back: .cpu()"}
    else:
        assert per_step == {}


# -- trainer bench's device rows, on the simulated device -------------------------------------------------------------
def test_bench_grid_times_each_method_on_the_device_and_the_cpu(monkeypatch):
    from trainer import bench

    seen = []
    with simulated_device(monkeypatch):
        rep = bench.bench(n=120, dim=8, folds=2, threads=1, device="cuda", grid=True, quick=True,
                          checkpoint=lambda r: seen.append(len(r["stacked"])))
    assert rep["devices"] == ["cuda:0 (simulated)", "cpu (1 thread)"] and rep["epochs_total"] == 2 * bench.QUICK_EPOCHS
    assert [(r["method"], r["on_cpu"]) for r in rep["stacked"]] == [(m, c) for m in bench.TABLE1_METHODS
                                                                    for c in (False, True)]
    assert seen == list(range(1, 11))  # the report after every row: a caller with a deadline keeps finished pairs
    dvc = rep["device_vs_cpu"]
    assert dvc["complete"] and dvc["methods"] == list(bench.TABLE1_METHODS)
    assert dvc["speedup"] == pytest.approx(dvc["cpu_seconds"] / dvc["device_seconds"])
    pairs = {}
    for r in rep["stacked"]:
        pairs.setdefault(r["method"], []).append(r["macro_f1_mean"])
    assert all(a == b for a, b in pairs.values())  # the same numbers on both
    md = bench.markdown(rep)
    assert "REDUCED" in md and "| all 5 methods | cuda:0 (simulated) |" in md and "Table-1 grid: cuda:0" in md
    partial = {**rep, "stacked": rep["stacked"][:3]}
    bench.summarise(partial)
    assert partial["device_vs_cpu"]["methods"] == ["baseline"] and not partial["device_vs_cpu"]["complete"]
    assert "the 1 of 5 methods timed on both" in bench.markdown(partial)


@pytest.mark.slow
def test_agreement_on_the_simulated_device(monkeypatch):
    from trainer import bench

    cases = bench.agreement_cases()
    assert {c[1]["method"] for c in cases} >= set(METHODS)
    keep = [c for c in cases if c[0] in ("b-grpo --action sample --mu 2 --sup-weight 0.5", "dino", "teacher")]
    monkeypatch.setattr(bench, "agreement_cases", lambda: keep)
    seen = []
    with simulated_device(monkeypatch):
        ag = bench.device_agreement("cuda", epochs=2, threads=1, checkpoint=lambda r: seen.append(len(r["rows"])))
    assert seen == [1, 2, 3]  # the report after every configuration
    assert ag["device"] == "cuda:0 (simulated)" and ag["ok"] and ag["max_prob_diff"] == 0  # the same kernels here
    assert [r["case"] for r in ag["rows"]] == [c[0] for c in keep]
    assert all(r["rerun_identical"] and r["same_pred"] == 1 for r in ag["rows"])
    assert "| b-grpo --action sample --mu 2 --sup-weight 0.5 |" in bench.agreement_markdown(ag)
