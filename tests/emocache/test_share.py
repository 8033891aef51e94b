"""Sharing: pack into one read-only .zip, merge entries (refusing provenance conflicts), consolidated metadata."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from tests.helpers.scale import MODEL, assert_entries_equal, entry_of, fbank_config

from emocache.extract import extract
from emocache.share import consolidate, merge
from emocache.store import StoreError, open_store, write_arrays


def test_pack_is_one_consolidated_read_only_file(fbank_store, tmp_path, cli):
    out = tmp_path / "feats.zip"
    code, text = cli("pack", fbank_store, out)
    assert code == 0, text
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        root = json.loads(z.read("zarr.json"))
    assert names[0] == "zarr.json" and not any(n.endswith(".partial") for n in names)
    assert f"{MODEL}/demo/index" in root["consolidated_metadata"]["metadata"]
    assert_entries_equal(entry_of(out), entry_of(fbank_store))
    with pytest.raises(StoreError, match="read-only"):
        open_store(out, mode="a")
    code, text = cli("info", out, "--json")
    (row,) = json.loads(text)
    assert row["bytes"] > 0 and row["provenance"]["weights"] == "none (weight-free)"
    code, text = cli("verify", out)
    assert code == 0, text
    code, text = cli("pack", fbank_store, out)
    assert code == 2 and "exists" in text


def test_merge_parts_equals_full_run(fbank_store, tmp_path, demo_corpus, cli):
    a, b, dst = tmp_path / "a", tmp_path / "b", tmp_path / "dst"
    extract(fbank_config(demo_corpus, a, part="0/2"), progress=False)
    extract(fbank_config(demo_corpus, b, part="1/2"), progress=False)
    code, text = cli("merge", a, dst)
    assert code == 0 and "5 block(s) copied" in text and "new entry" in text
    code, text = cli("merge", b, dst)
    assert code == 0 and "4 block(s) copied" in text
    assert_entries_equal(entry_of(dst), entry_of(fbank_store))
    code, text = cli("merge", fbank_store, dst)
    assert code == 0 and "0 block(s) copied, 9 already" in text


def test_merge_refuses_provenance_conflicts(fbank_store, tmp_path, cli):
    e = entry_of(fbank_store)
    other = tmp_path / "other"
    keys, P = e.pooled()
    write_arrays(other, MODEL, "demo", keys, e.labels_done(), P, provenance={**e.provenance, "layer": 7},
                 block_size=e.block_size)
    with pytest.raises(StoreError, match="provenance conflict.*layer"):
        merge(str(other), str(fbank_store))
    code, text = cli("merge", other, fbank_store)
    assert code == 2 and "refusing to merge" in " ".join(text.split())
    with pytest.raises(KeyError, match="no entry x/y"):
        merge(str(other), str(tmp_path / "dst"), entries=["x/y"])


def test_consolidated_metadata_is_dropped_by_writers(fbank_store, tmp_path, demo_corpus):
    import shutil

    store = tmp_path / "s"
    shutil.copytree(fbank_store, store)
    assert consolidate(str(store)) > 10
    st = open_store(store)
    assert st.root.metadata.consolidated_metadata is not None
    assert_entries_equal(st.entry(MODEL, "demo"), entry_of(fbank_store))
    write_arrays(store, "other", "ds", ["k"], ["x"], np.zeros((1, 3), np.float32))  # a writer opens the store
    assert "consolidated_metadata" not in json.loads((store / "zarr.json").read_text())
    assert open_store(store).entries() == [(MODEL, "demo"), ("other", "ds")]  # no stale listing


def test_bench_store_cli_small(cli, tmp_path):
    code, out = cli("bench", "--store", "--n", "20", "--frames", "10", "--dim", "8", "--workdir", tmp_path)
    text = " ".join(out.split())
    assert code == 0 and "per-utterance .npy (float32) | 20 |" in text and "emocache store" in text
    assert "iter_frames | 20 | " in text and "all_frames float32 (" in text and "all_frames float16 (" in text
    assert "frames float16 blosc-zstd, blocks" in text and "frames float16 zstd, blocks" in text  # both codecs
    assert list(tmp_path.iterdir()) == []  # the temporary files are removed
