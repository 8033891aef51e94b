"""The Zarr store: entries, pooled/frames round trips, commit index, resume, overflow, refusals, verify."""

from __future__ import annotations

import numpy as np
import pytest

import emocache
from emocache.store import FAILED, PENDING, StoreError, describe, open_store, write_arrays
from emocache.verify import verify_entry, verify_store


def ragged(n: int, d: int = 6, seed: int = 0) -> tuple[list[str], np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    keys = [f"u{i:03d}" for i in range(n)]
    frames = [rng.normal(size=(int(rng.integers(1, 9)), d)).astype(np.float32) for _ in range(n)]
    pooled = np.stack([f.mean(0) for f in frames]).astype(np.float32)
    return keys, pooled, frames


PROV = {"model": "m", "weights": "org/m", "revision": "abc", "layer": "last", "pooling": "mean"}


def new_entry(url, keys, dim=6, frame_dim=6, block_size=4, prov=None, has_frames=True, dataset="ds"):
    st = open_store(url, mode="a")
    return st, st.create_entry("m", dataset, keys, [f"lab{i % 3}" for i in range(len(keys))], dim, frame_dim,
                               prov or PROV, has_frames=has_frames, block_size=block_size)


def test_write_arrays_roundtrip_through_public_api(tmp_path):
    keys, P, F = ragged(10)
    url = tmp_path / "s"
    write_arrays(url, "m", "ds", keys, [f"l{i}" for i in range(10)], P, F, block_size=4)
    st = emocache.open_store(str(url))
    assert st.entries() == [("m", "ds")]
    k, X = st.pooled("m", "ds")
    assert k == keys and X.dtype == np.float32 and X.shape == (10, 6)
    np.testing.assert_array_equal(X, P)  # pooled is exact float32
    assert st.labels("m", "ds") == [f"l{i}" for i in range(10)]
    for i in (0, 5, 9):
        f = st.frames("m", "ds", keys[i])
        assert f.dtype == np.float32 and f.shape == F[i].shape
        np.testing.assert_array_equal(f, F[i].astype(np.float16).astype(np.float32))  # frames stored as float16
    got = dict(st.iter_frames("m", "ds"))
    assert list(got) == keys
    for key, f in zip(keys, F):
        np.testing.assert_array_equal(got[key], f.astype(np.float16).astype(np.float32))
    sub = list(st.iter_frames("m", "ds", keys=["u007", "u001"]))
    assert [k for k, _ in sub] == ["u001", "u007"]  # store order
    with pytest.raises(KeyError, match="not in the entry"):
        list(st.iter_frames("m", "ds", keys=["nope"]))
    with pytest.raises(KeyError, match="no utterance 'nope'"):
        st.frames("m", "ds", "nope")
    with pytest.raises(KeyError, match=r"no entry m/other \(entries: m/ds\)"):
        st.pooled("m", "other")
    e = st.entry("m", "ds")
    assert e.n_blocks == 3 and e.block_size == 4
    assert e.group["blocks"]["b000000"]["frames"].dtype == np.float16
    idx = e.index()
    assert idx[:, 1].tolist() == [f.shape[0] for f in F]
    assert idx[:4, 0].tolist() == np.cumsum([0] + [f.shape[0] for f in F[:3]]).tolist()  # offsets within block
    assert idx[4, 0] == 0


def test_overflowing_block_is_float32_others_float16(tmp_path):
    keys, P, F = ragged(8)
    F[5] = F[5] * 1e5  # > 65504: block 1 must keep float32
    write_arrays(tmp_path / "s", "m", "ds", keys, ["x"] * 8, P, F, block_size=4)
    st = open_store(tmp_path / "s")
    e = st.entry("m", "ds")
    assert e.group["blocks"]["b000000"]["frames"].dtype == np.float16
    assert e.group["blocks"]["b000001"]["frames"].dtype == np.float32
    np.testing.assert_array_equal(st.frames("m", "ds", "u005"), F[5])
    np.testing.assert_array_equal(st.frames("m", "ds", "u004"), F[4])
    assert np.isfinite(st.frames("m", "ds", "u005")).all()


def test_commit_index_pending_failed_and_errors(tmp_path):
    keys, P, F = ragged(10)
    st, e = new_entry(tmp_path / "s", keys)
    assert e.index()[:, 0].tolist() == [PENDING] * 10
    assert [s.committed for s in e.block_states()] == [False] * 3
    frames = [F[i] if i != 1 else None for i in range(4)]
    e.write_block(0, P[:4], frames, {1: "audio too short: 10 samples"})
    states = e.block_states()
    assert (states[0].done, states[0].failed, states[0].pending, states[0].committed) == (3, 1, 0, True)
    assert not states[1].committed and states[1].pending == 4
    assert st.errors("m", "ds") == {"u001": "audio too short: 10 samples"}
    k, X = st.pooled("m", "ds")
    assert k == ["u000", "u002", "u003"]
    np.testing.assert_array_equal(X, P[[0, 2, 3]])
    assert st.labels("m", "ds") == ["lab0", "lab2", "lab0"]  # aligned with the keys of pooled
    assert e.index()[1].tolist() == [FAILED, FAILED]
    with pytest.raises(KeyError, match="failed"):
        st.frames("m", "ds", "u001")
    with pytest.raises(KeyError, match="not extracted yet"):
        st.frames("m", "ds", "u005")
    np.testing.assert_array_equal(st.frames("m", "ds", "u002"), F[2].astype(np.float16).astype(np.float32))
    row = describe(open_store(tmp_path / "s"))[0]
    assert (row["n"], row["done"], row["failed"], row["pending"], row["blocks"]) == (10, 3, 1, 6, 3)
    assert row["bytes"] > 0 and row["provenance"]["weights"] == "org/m"
    # resetting makes a block pending again and hides it from pooled()
    e.reset_blocks([0])
    assert e.block_states()[0].pending == 4 and st.pooled("m", "ds")[0] == []
    assert st.errors("m", "ds") == {}


def test_reopen_same_identity_resumes_different_identity_refused(tmp_path):
    keys, P, F = ragged(6)
    st, e = new_entry(tmp_path / "s", keys)
    e.write_block(0, P[:4], F[:4], {})
    st2, e2 = new_entry(tmp_path / "s", keys)  # same weights: the existing entry comes back
    assert [s.committed for s in e2.block_states()] == [True, False]
    for field, value in (("weights", "org/other"), ("revision", "def"), ("layer", "12"), ("pooling", "max")):
        with pytest.raises(StoreError, match=rf"made with {field}=.*refusing to mix"):
            new_entry(tmp_path / "s", keys, prov={**PROV, field: value})
    with pytest.raises(StoreError, match="another manifest"):
        new_entry(tmp_path / "s", keys[:-1] + ["zzz"])
    with pytest.raises(StoreError, match="dim=6"):
        new_entry(tmp_path / "s", keys, dim=7)
    with pytest.raises(StoreError, match="dim="):
        new_entry(tmp_path / "s", keys, has_frames=False)
    assert [s.committed for s in open_store(tmp_path / "s").entry("m", "ds").block_states()] == [True, False]


def test_no_frames_entry(tmp_path):
    keys, P, _ = ragged(5)
    write_arrays(tmp_path / "s", "m", "ds", keys, ["a"] * 5, P, None, block_size=2)
    st = open_store(tmp_path / "s")
    assert not st.has_frames("m", "ds")
    np.testing.assert_array_equal(st.pooled("m", "ds")[1], P)
    with pytest.raises(StoreError, match="--no-frames"):
        st.frames("m", "ds", "u000")
    with pytest.raises(StoreError, match="--no-frames"):
        list(st.iter_frames("m", "ds"))
    assert verify_store(st)[0].ok


def test_open_store_errors(tmp_path):
    with pytest.raises(StoreError, match="no store here"):
        open_store(tmp_path / "missing")
    import zarr

    zarr.open_group(str(tmp_path / "plain"), mode="w", zarr_format=3)
    with pytest.raises(StoreError, match="not an emocache store"):
        open_store(tmp_path / "plain")
    with pytest.raises(StoreError, match="read-only"):
        open_store(tmp_path / "x.zip", mode="a")


def test_read_from_zip_and_file_url(tmp_path):
    import shutil

    keys, P, F = ragged(5)
    write_arrays(tmp_path / "s", "m", "ds", keys, ["a"] * 5, P, F, block_size=2)
    z = shutil.make_archive(str(tmp_path / "packed"), "zip", root_dir=tmp_path / "s")
    for url in (z, f"file://{tmp_path / 's'}"):
        st = open_store(url)
        np.testing.assert_array_equal(st.pooled("m", "ds")[1], P)
        np.testing.assert_array_equal(st.frames("m", "ds", "u004"), F[4].astype(np.float16).astype(np.float32))


def test_verify_finds_corrupt_and_missing_chunks(tmp_path):
    keys, P, F = ragged(12)
    url = tmp_path / "s"
    write_arrays(url, "m", "ds", keys, ["a"] * 12, P, F, block_size=4)
    chk = verify_store(open_store(url))
    assert len(chk) == 1 and chk[0].ok and chk[0].committed == 3 and chk[0].orphans == []
    frames_chunk = url / "m" / "ds" / "blocks" / "b000001" / "frames" / "c" / "0" / "0"
    data = bytearray(frames_chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    frames_chunk.write_bytes(bytes(data))
    (url / "m" / "ds" / "pooled" / "c" / "2" / "0").unlink()
    chk = verify_entry(open_store(url).entry("m", "ds"))
    assert chk.bad_blocks == [1, 2]
    assert "pooled chunk missing" in chk.problems[2]
    # an uncommitted block group left by an interrupted run is an orphan, not a problem
    st = open_store(url, mode="a")
    st.entry("m", "ds").reset_blocks([0])
    chk = verify_entry(open_store(url).entry("m", "ds"))
    assert chk.orphans == ["b000000"] and chk.bad_blocks == [1, 2] and chk.committed == 2


def test_xarray_opens_an_entry_directly(tmp_path):
    """dimension_names make `xr.open_zarr(store, group="MODEL/DATASET")` work: keys/labels/pooled/index."""
    xr = pytest.importorskip("xarray")
    keys, P, F = ragged(10)
    url = tmp_path / "s"
    write_arrays(url, "m", "ds", keys, [f"l{i % 3}" for i in range(10)], P, F, block_size=4)
    ds = xr.open_zarr(url, group="m/ds", consolidated=False)
    assert ds["pooled"].dims == ("utterance", "feature") and ds["index"].dims == ("utterance", "offset_length")
    assert ds.sizes["utterance"] == 10 and ds.attrs["n"] == 10
    assert [str(k) for k in ds["keys"].values] == keys
    assert [str(v) for v in ds["labels"].values] == [f"l{i % 3}" for i in range(10)]
    np.testing.assert_array_equal(ds["pooled"].values, open_store(url).pooled("m", "ds")[1])
    g = xr.open_zarr(url, group="m/ds/blocks/b000001", consolidated=False)
    off, ln = ds["index"].values[5]
    np.testing.assert_array_equal(g["frames"].values[off:off + ln].astype(np.float32),
                                  open_store(url).frames("m", "ds", keys[5]))


def _write_layers_entry(st, keys, P, Y, layers, label="x", failed_in_block_1=False):
    """Entry m/d of pooled P [N, D] and layers Y [N, L, D] in blocks of 2; row 0 of block 1 failed if asked."""
    n, dim = P.shape
    e = st.create_entry("m", "d", keys, [label] * n, dim, dim,
                        {"weights": "w", "layer": "last", "layers": list(layers)},
                        has_frames=False, block_size=2, layers=layers)
    for b in range(e.n_blocks):
        sl = e.block_slice(b)
        e.write_block(b, P[sl], None, {0: "bad"} if failed_in_block_1 and b == 1 else {}, Y[sl])


def test_layers_round_trip_and_old_reader_view(tmp_path):
    """An entry with --layers keeps pooled [N, D] (the final output) and adds layers [N, L, D]."""
    from emocache.store import StoreError, open_store

    rng = np.random.default_rng(0)
    keys, P, Y = [f"k{i}" for i in range(5)], rng.random((5, 4), np.float32), rng.random((5, 2, 4), np.float32)
    st = open_store(tmp_path / "s", mode="a")
    _write_layers_entry(st, keys, P, Y, (3, 7), label="a", failed_in_block_1=True)
    ok = [0, 1, 3, 4]
    r = open_store(tmp_path / "s")
    np.testing.assert_array_equal(r.pooled("m", "d")[1], P[ok])
    got_keys, got = r.layers("m", "d")
    assert got_keys == [keys[i] for i in ok] and got.dtype == np.float32
    np.testing.assert_array_equal(got, Y[ok])
    np.testing.assert_array_equal(r.pooled("m", "d", layer=7)[1], Y[ok, 1])
    with pytest.raises(StoreError, match=r"layer 5 not stored; stored layers: \[3, 7\]"):
        r.pooled("m", "d", layer=5)
    with pytest.raises(StoreError, match="--layers"):
        st.create_entry("m", "d", keys, ["a"] * 5, 4, 4, {"weights": "w", "layer": "last"}, has_frames=False,
                        block_size=2)
    plain = st.create_entry("m", "d2", keys, ["a"] * 5, 4, 4, {"weights": "w", "layer": "last"}, has_frames=False)
    plain.write_block(0, P, None, {})
    with pytest.raises(StoreError, match="--layers last"):
        r = open_store(tmp_path / "s")
        r.layers("m", "d2")


def test_layers_survive_merge_and_verify_names_a_missing_layers_chunk(tmp_path):
    from emocache.share import merge
    from emocache.store import open_store
    from emocache.verify import verify_store

    rng = np.random.default_rng(1)
    keys, P, Y = [f"k{i}" for i in range(4)], rng.random((4, 3), np.float32), rng.random((4, 2, 3), np.float32)
    _write_layers_entry(open_store(tmp_path / "a", mode="a"), keys, P, Y, (1, 2))
    merge(str(tmp_path / "a"), str(tmp_path / "b"))
    np.testing.assert_array_equal(open_store(tmp_path / "b").layers("m", "d")[1], Y)
    assert all(not c.problems for c in verify_store(open_store(tmp_path / "b")))
    chunk = tmp_path / "b" / "m" / "d" / "layers" / "c" / "1" / "0" / "0"
    assert chunk.exists()
    chunk.unlink()
    (check,) = verify_store(open_store(tmp_path / "b"))
    assert "layers chunk missing" in check.problems[1]
