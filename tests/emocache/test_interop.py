"""lhotse and Hugging Face `datasets`: manifests from their corpora, store entries exported to them (round trips)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.helpers.audio import tone, write_wav
from emocache.manifest import read_manifest
from emocache.store import open_store, write_arrays

lhotse = pytest.importorskip("lhotse", reason='optional extra: pip install -e ".[interop]"')
datasets = pytest.importorskip("datasets", reason='optional extra: pip install -e ".[interop]"')
pytest.importorskip("h5py", reason='optional extra: pip install -e ".[interop]"')

EMOS = ("ang", "neu", "sad")


def _wavs(folder, n=6):
    out = []
    for i in range(n):
        out.append((write_wav(folder / f"spk{i % 2}" / f"u{i}.wav", tone(0.4 + 0.1 * i, freq=150.0 + 50 * i)),
                    EMOS[i % 3], f"spk{i % 2}"))
    return out


def _cutset(tmp_path, segment=False):
    cuts = []
    for path, emo, spk in _wavs(tmp_path / "audio"):
        rec = lhotse.Recording.from_file(path)
        cut = rec.to_cut()
        if segment:
            cut = cut.truncate(offset=0.1, duration=0.2)
        cut.supervisions = [lhotse.SupervisionSegment(id=cut.id, recording_id=rec.id, start=0.0,
                                                      duration=cut.duration, speaker=spk,
                                                      custom={"emotion": emo})]
        cuts.append(cut)
    p = tmp_path / "cuts.jsonl.gz"
    lhotse.CutSet.from_cuts(cuts).to_file(p)
    return p


def _lines(path):
    return [json.loads(s) for s in path.read_text().splitlines()]


def test_manifest_from_lhotse_then_extract_and_export_back(tmp_path, cli):
    from emocache.extract import ExtractConfig, extract

    cuts = _cutset(tmp_path)
    man = tmp_path / "toy.jsonl"
    code, out = cli("manifest", "--from-lhotse", cuts, "--dataset", "toy", "--out", man)
    assert code == 0, out
    src = lhotse.CutSet.from_file(cuts)
    lines = _lines(man)
    assert [d["key"] for d in lines] == [c.id for c in src]
    assert [d["wav"] for d in lines] == [c.recording.sources[0].source for c in src]
    assert [d["emo"] for d in lines] == [c.supervisions[0].custom["emotion"] for c in src]
    assert [d["speaker"] for d in lines] == [c.supervisions[0].speaker for c in src]
    assert {d["channel"] for d in lines} == {1} and len(read_manifest(man)) == 6

    store = tmp_path / "s.zarr"
    assert extract(ExtractConfig(model="fbank-stats", manifests=(str(man),), store=str(store)), progress=False).ok
    code, out = cli("export", "fbank-stats/toy", "--store", store, "--to", "lhotse", tmp_path / "lh")
    assert code == 0, out
    st = open_store(store)
    keys, X = st.pooled("fbank-stats", "toy")
    back = lhotse.CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz")
    assert [c.id for c in back] == keys
    frame_rate = st.provenance("fbank-stats", "toy")["frame_rate"]
    for c, x, lab in zip(back, X, st.labels("fbank-stats", "toy")):
        F = st.frames("fbank-stats", "toy", c.id)
        assert np.array_equal(c.load_features(), F) and c.has_features
        assert c.features.frame_shift == pytest.approx(1 / frame_rate)
        assert np.array_equal(c.load_pooled(), x)
        assert c.supervisions[0].custom["emotion"] == lab
        assert c.duration == pytest.approx(len(F) / frame_rate, abs=1e-5)


def test_lhotse_segments_and_missing_labels_are_clear_errors(tmp_path, cli):
    code, out = cli("manifest", "--from-lhotse", _cutset(tmp_path, segment=True), "--dataset", "toy",
                    "--out", tmp_path / "m.jsonl")
    assert code == 2 and "is a segment" in out and "save_audios" in out
    (tmp_path / "whole").mkdir()
    code, out = cli("manifest", "--from-lhotse", _cutset(tmp_path / "whole"), "--dataset", "toy", "--out",
                    tmp_path / "m.jsonl", "--label-field", "mood")
    assert code == 2 and "no 'mood'" in out


def _hf_dataset(tmp_path):
    wavs = _wavs(tmp_path / "audio")
    rows = [{"path": str(p), "bytes": None} if i < 3 else {"path": p.name, "bytes": p.read_bytes()}
            for i, (p, _, _) in enumerate(wavs)]
    ds = datasets.Dataset.from_dict({"audio": rows, "label": [EMOS.index(e) for _, e, _ in wavs],
                                     "spk": [s for _, _, s in wavs]})
    ds = ds.cast_column("audio", datasets.Audio()).cast_column("label", datasets.ClassLabel(names=list(EMOS)))
    ds.save_to_disk(str(tmp_path / "hf"))  # embeds the audio bytes, keeps file names
    return wavs


def test_manifest_from_hf_writes_embedded_audio(tmp_path, cli):
    wavs = _hf_dataset(tmp_path)
    man = tmp_path / "toy.jsonl"
    code, out = cli("manifest", "--from-hf", tmp_path / "hf", "--dataset", "toy", "--out", man,
                    "--speaker-column", "spk")
    assert code == 0, out
    lines = _lines(man)
    assert [d["key"] for d in lines] == [f"toy-u{i}" for i in range(6)]
    assert [d["emo"] for d in lines] == [e for _, e, _ in wavs]
    assert [d["speaker"] for d in lines] == [s for _, _, s in wavs]
    for d, (p, _, _) in zip(lines, wavs):
        assert open(d["wav"], "rb").read() == p.read_bytes()
    assert all(d["wav"].startswith(str(tmp_path / "toy_audio")) for d in lines)
    assert len(read_manifest(man)) == 6
    code, out = cli("manifest", "--from-hf", tmp_path / "hf", "--dataset", "toy", "--out", man,
                    "--label-field", "emotion")
    assert code == 2 and "no column 'emotion'" in out and "audio, label, spk" in out


def test_export_hf_round_trip_and_errors(tmp_path, cli):
    rng = np.random.default_rng(0)
    keys, labels = [f"k{i}" for i in range(5)], ["a", "b", "a", "c", "b"]
    X = rng.normal(size=(5, 7)).astype(np.float32)
    write_arrays(str(tmp_path / "s.zarr"), "m", "d", keys, labels, X)
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "hf")
    assert code == 0, out
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert ds["key"] == keys and ds["label"] == labels
    assert np.array_equal(np.asarray(ds.with_format("numpy")["pooled"]), X)
    assert json.loads(ds.info.description)["emocache_entry"] == "m/d"

    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "hf")
    assert code == 2 and "exists" in out
    code, out = cli("export", "m/x", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "hf2")
    assert code == 2 and "no entry m/x (entries: m/d)" in out
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "kaldi", tmp_path / "k")
    assert code == 2 and "known: hf, lhotse" in out


def test_export_lhotse_without_frames_keeps_pooled(tmp_path, cli):
    X = np.arange(12, dtype=np.float32).reshape(3, 4)
    write_arrays(str(tmp_path / "s.zarr"), "m", "d", ["a", "b", "c"], ["x", "y", "x"], X)
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "lhotse", tmp_path / "lh")
    assert code == 0, out
    back = list(lhotse.CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz"))
    assert [c.id for c in back] == ["a", "b", "c"] and not back[0].has_features
    assert np.array_equal(np.stack([c.load_pooled() for c in back]), X)


def test_missing_optional_package_names_the_extra(tmp_path, cli, monkeypatch):
    import sys

    cuts = _cutset(tmp_path)
    monkeypatch.setitem(sys.modules, "lhotse", None)  # import lhotse now raises ImportError
    code, out = cli("manifest", "--from-lhotse", cuts, "--dataset", "toy", "--out", tmp_path / "m.jsonl")
    assert code == 2 and "optional package 'lhotse'" in out and ".[interop]" in out


def test_manifest_sources_do_not_mix(tmp_path, cli):
    code, out = cli("manifest", "--dataset", "toy", "--out", tmp_path / "m.jsonl")
    assert code == 2 and "give a FOLDER of audio, or --from-lhotse CUTS / --from-hf DATASET" in out
    code, out = cli("manifest", "--from-hf", tmp_path, "--pattern", "(?P<emo>.)", "--dataset", "toy",
                    "--out", tmp_path / "m.jsonl")
    assert code == 2 and "label a FOLDER" in out
    code, out = cli("manifest", tmp_path, "--from-lhotse", tmp_path / "c.jsonl", "--dataset", "toy",
                    "--out", tmp_path / "m.jsonl")
    assert code == 2 and "give one source" in out
    code, out = cli("manifest", tmp_path, "--pattern", "(?P<emo>.)", "--speaker-column", "spk", "--dataset", "toy",
                    "--out", tmp_path / "m.jsonl")
    assert code == 2 and "go with --from-lhotse / --from-hf" in out
