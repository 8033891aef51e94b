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


def test_export_hf_without_manifest_and_errors(tmp_path, cli):
    rng = np.random.default_rng(0)
    keys, labels = [f"k{i}" for i in range(5)], ["a", "b", "a", "c", "b"]
    X = rng.normal(size=(5, 7)).astype(np.float32)
    write_arrays(str(tmp_path / "s.zarr"), "m", "d", keys, labels, X)
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "hf")
    assert code == 0 and "give --manifest to add them" in out, out
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    assert ds.column_names == ["key", "label", "pooled"]
    assert ds["key"] == keys and ds.features["label"].names == ["a", "b", "c"]
    assert ds.features["label"].int2str(list(ds["label"])) == labels
    assert np.array_equal(np.asarray(ds.with_format("numpy")["pooled"]), X)
    assert json.loads(ds.info.description)["emocache_entry"] == "m/d"
    assert not list(tmp_path.glob(".hf.*"))  # the temporary arrow file is gone

    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "hf")
    assert code == 2 and "exists" in out
    code, out = cli("export", "m/x", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "hf2")
    assert code == 2 and "no entry m/x; did you mean 'm/d'? entries: m/d" in out
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "kaldi", tmp_path / "k")
    assert code == 2 and "known: hf, lhotse" in out
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "hff", tmp_path / "k")
    assert code == 2 and "did you mean 'hf'?" in out
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "hf", "--frames", tmp_path / "k")
    assert code == 2 and "has no frames" in out
    code, out = cli("export", "m/d", "--store", tmp_path / "s.zarr", "--to", "lhotse", "--frames", tmp_path / "k")
    assert code == 2 and "--frames is for --to hf" in out


def test_export_hf_keeps_the_stored_layers(tmp_path):
    from emocache.interop import export_hf

    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=(4, 2, 3)).astype(np.float32)  # (N, L, D)
    st = open_store(tmp_path / "s.zarr", mode="a")
    e = st.create_entry("m", "d", ["a", "b", "c", "d"], ["x", "y", "x", "y"], 3, 3, {"model": "m", "layers": [0, 2]},
                        has_frames=False, block_size=2, layers=(0, 2))
    for b in range(e.n_blocks):
        e.write_block(b, X[e.block_slice(b)], None, {1: "broken"} if b == 1 else {}, Y[e.block_slice(b)])
    assert export_hf(str(tmp_path / "s.zarr"), "m/d", tmp_path / "hf") == 3  # the failed one is left out
    ds = datasets.load_from_disk(str(tmp_path / "hf")).with_format("numpy")
    assert list(ds["key"]) == ["a", "b", "c"]
    assert np.array_equal(np.stack([np.stack(v) for v in ds["layers"]]), Y[:3])


@pytest.fixture
def extracted(tmp_path):
    """Audio in a folder, a manifest with speakers and an extra field, and an fbank-stats entry with frames."""
    from emocache.extract import ExtractConfig, extract

    lines = []
    for i, (path, emo, spk) in enumerate(_wavs(tmp_path / "corpus")):
        lines.append({"key": f"toy-u{i}", "dataset": "toy", "wav": f"corpus/{path.relative_to(tmp_path / 'corpus')}",
                      "emo": emo, "speaker": spk, "gender": "f" if i % 2 else "m", "length": 0.4 + 0.1 * i})
    man = tmp_path / "toy.jsonl"
    man.write_text("".join(json.dumps(d) + "\n" for d in lines))
    root = f"corpus={tmp_path / 'corpus'}"
    store = tmp_path / "s.zarr"
    assert extract(ExtractConfig(model="fbank-stats", manifests=(str(man),), store=str(store), audio_root=(root,)),
                   progress=False).ok
    return man, root, store, lines


def test_export_hf_round_trip_with_speakers_fields_and_frames(extracted, tmp_path, cli):
    man, root, store, lines = extracted
    code, out = cli("export", "fbank-stats/toy", "--store", store, "--to", "hf", tmp_path / "hf", "--manifest", man,
                    "--audio-root", root, "--frames")
    assert code == 0 and "warning" not in out, out
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
    st = open_store(store)
    keys, X = st.pooled("fbank-stats", "toy")
    by_key = {d["key"]: d for d in lines}
    assert ds["key"] == keys
    assert isinstance(ds.features["label"], datasets.ClassLabel)
    assert ds.features["label"].int2str(list(ds["label"])) == st.labels("fbank-stats", "toy")
    assert ds["speaker"] == [by_key[k]["speaker"] for k in keys]
    assert ds["gender"] == [by_key[k]["gender"] for k in keys] and ds["dataset"] == ["toy"] * len(keys)
    assert ds["length"] == pytest.approx([by_key[k]["length"] for k in keys])
    assert ds["wav"] == [str(tmp_path / by_key[k]["wav"]) for k in keys]  # as --audio-root remaps it
    np_ds = ds.with_format("numpy")
    assert np.array_equal(np.stack(np_ds["pooled"]), X)
    for i, k in enumerate(keys):
        assert np.array_equal(np.stack(np_ds[i]["frames"]), st.frames("fbank-stats", "toy", k))


def test_export_lhotse_round_trip_with_recordings_and_speakers(extracted, tmp_path, cli):
    from emocache.extract import ExtractConfig, extract

    man, root, store, lines = extracted
    code, out = cli("export", "fbank-stats/toy", "--store", store, "--to", "lhotse", tmp_path / "lh",
                    "--manifest", man, "--audio-root", root)
    assert code == 0 and "warning" not in out, out
    st = open_store(store)
    keys, X = st.pooled("fbank-stats", "toy")
    by_key = {d["key"]: d for d in lines}
    cuts = lhotse.CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz")
    assert [c.id for c in cuts] == keys
    for c, x, lab in zip(cuts, X, st.labels("fbank-stats", "toy")):
        d, sup = by_key[c.id], c.supervisions[0]
        assert c.has_recording and c.recording.sources[0].source == str(tmp_path / d["wav"])
        assert c.duration == pytest.approx(c.recording.duration) and c.start == 0
        assert sup.speaker == d["speaker"] and sup.custom == {"emotion": lab, "dataset": "toy", "gender": d["gender"]}
        assert np.array_equal(c.features.load(), st.frames("fbank-stats", "toy", c.id))
        assert np.array_equal(c.load_pooled(), x)
        assert c.load_audio().shape[1] == c.recording.num_samples

    back = tmp_path / "back.jsonl"  # and back: a manifest from the cuts, extracted again, the same vectors
    code, out = cli("manifest", "--from-lhotse", tmp_path / "lh" / "cuts.jsonl.gz", "--dataset", "toy", "--out", back)
    assert code == 0, out
    again = _lines(back)
    assert [d["key"] for d in again] == keys
    assert [d["emo"] for d in again] == st.labels("fbank-stats", "toy")
    assert [d["speaker"] for d in again] == [by_key[k]["speaker"] for k in keys]
    assert extract(ExtractConfig(model="fbank-stats", manifests=(str(back),), store=str(tmp_path / "s2.zarr")),
                   progress=False).ok
    keys2, X2 = open_store(tmp_path / "s2.zarr").pooled("fbank-stats", "toy")
    assert keys2 == keys and np.array_equal(X2, X)


def test_export_lhotse_audio_missing(extracted, tmp_path, cli):
    man, root, store, lines = extracted
    code, out = cli("export", "fbank-stats/toy", "--store", store, "--to", "lhotse", tmp_path / "lh", "--manifest", man)
    assert code == 0 and "cuts without recordings: none of the 6 audio files is there" in out, out
    cuts = list(lhotse.CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz"))
    assert not cuts[0].has_recording and cuts[0].supervisions[0].speaker == lines[0]["speaker"]
    by_key = {d["key"]: d for d in lines}
    for c in cuts:  # without a recording the manifest's audio fields stay in the supervision
        d = by_key[c.id]
        assert c.supervisions[0].custom == {"emotion": d["emo"], **{k: d[k] for k in ("dataset", "wav", "gender",
                                                                                       "length")}}
    (tmp_path / lines[2]["wav"]).unlink()
    code, out = cli("export", "fbank-stats/toy", "--store", store, "--to", "lhotse", tmp_path / "lh2",
                    "--manifest", man, "--audio-root", root)
    assert code == 2 and "toy-u2: audio file" in out and "1 of 6 missing" in out and not (tmp_path / "lh2").exists()


def test_export_speakers_from_the_dataset_rule_or_a_pattern(tmp_path, cli):
    keys = ["urdu-SM20_F8_N012", "urdu-SF3_F1_A001", "urdu-SM20_F9_S013"]
    write_arrays(str(tmp_path / "s.zarr"), "m", "urdu", keys, ["N", "A", "S"], np.eye(3, dtype=np.float32))
    man = tmp_path / "urdu.jsonl"
    man.write_text("".join(json.dumps({"key": k, "wav": f"/nowhere/{k}.wav", "emo": e}) + "\n"
                           for k, e in zip(keys, "NAS")))
    code, out = cli("export", "m/urdu", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "a", "--manifest", man)
    assert code == 0, out
    assert datasets.load_from_disk(str(tmp_path / "a"))["speaker"] == ["SM20", "SF3", "SM20"]
    code, out = cli("export", "m/urdu", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "b", "--manifest", man,
                    "--speaker-pattern", r"urdu-S(?P<speaker>[FM])\d+_.*")
    assert code == 0 and datasets.load_from_disk(str(tmp_path / "b"))["speaker"] == ["M", "F", "M"]
    code, out = cli("export", "m/urdu", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "c", "--manifest", man,
                    "--speaker-pattern", r"x(?P<speaker>\d)")
    assert code == 2 and "does not match --speaker-pattern" in out
    man.write_text(man.read_text().replace('"emo": "A"', '"emo": "H"'))
    code, out = cli("export", "m/urdu", "--store", tmp_path / "s.zarr", "--to", "hf", tmp_path / "d", "--manifest", man)
    assert code == 2 and "'urdu-SF3_F1_A001' has label 'H', the store 'A'" in out


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
