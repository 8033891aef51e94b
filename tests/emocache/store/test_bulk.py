"""Whole-entry frame reads (emocache/store/bulk.py): equal to the per-key readers, checksums kept, damage refused."""

from __future__ import annotations

import numpy as np
import pytest

import emocache.store.bulk as bulk
from emocache.store import FrameSet, StoreError, open_store, write_arrays
from emocache.share import pack

DIM = 2048  # frames chunks hold (1 MiB // (DIM * 2)) = 256 rows: several chunks per block, utterances across them


def entry_with_frames(url, n=14, block_size=4, seed=0, failed=(5,), codec=None):
    """An entry of ``n`` utterances with 1-700 float32 frames each (stored float16), failed rows ``failed``;
    ``codec`` a frame codec of emocache.store.storage.FRAME_CODECS (None: the default)."""
    rng = np.random.default_rng(seed)
    keys = [f"u{i:03d}" for i in range(n)]
    lengths = [1, 700, 3, 256, 255, 40, 513, 90, 1, 300, 257, 2, 128, 600][:n]
    frames = [rng.normal(size=(ln, DIM)).astype(np.float32) for ln in lengths]
    pooled = np.stack([f.mean(0) for f in frames])
    st = open_store(url, mode="a")
    e = st.create_entry("m", "ds", keys, ["a"] * n, DIM, DIM, {"model": "m", "weights": "w", "layer": "last",
                                                                "pooling": "mean"}, block_size=block_size)
    if codec is not None:
        e.frame_codec = codec
    for b in range(e.n_blocks):
        sl = e.block_slice(b)
        e.write_block(b, pooled[sl], [None if i in failed else frames[i] for i in range(sl.start, sl.stop)],
                      {i - sl.start: "bad audio" for i in failed if sl.start <= i < sl.stop})
    return keys, frames


def assert_same(fs: FrameSet, expected: dict[str, np.ndarray]):
    assert fs.keys == list(expected)
    assert fs.offsets[-1] == len(fs.data) and fs.data.shape[1] == DIM
    for i, k in enumerate(fs.keys):
        assert fs.lengths[i] == len(expected[k])
        np.testing.assert_array_equal(fs.frames(i), expected[k])


@pytest.mark.parametrize("threads", [1, 3])
def test_all_frames_equals_per_key_reads(tmp_path, threads):
    url = tmp_path / "s"
    keys, frames = entry_with_frames(url)
    st = open_store(url)
    e = st.entry("m", "ds")
    assert e.block_frames(1).chunks[0] == 256 and e.block_frames(1).shape[0] > 3 * 256  # several chunks a block
    old = dict(st.iter_frames("m", "ds"))
    assert "u005" not in old and len(old) == 13  # the failed utterance is left out by both
    fs = st.all_frames("m", "ds", threads=threads)
    assert fs.data.dtype == np.float32
    assert_same(fs, old)
    for k in ("u001", "u006", "u013"):
        np.testing.assert_array_equal(fs.frames(fs.keys.index(k)), st.frames("m", "ds", k))
        np.testing.assert_array_equal(fs.frames(fs.keys.index(k)), frames[keys.index(k)].astype(np.float16))
    # a subset, store order whatever order it is asked in; float16 is the stored precision, unconverted
    sub = st.all_frames("m", "ds", keys=["u010", "u001", "u004"], threads=threads)
    assert_same(sub, dict(st.iter_frames("m", "ds", keys=["u010", "u001", "u004"])))
    half = st.all_frames("m", "ds", dtype=np.float16, threads=threads)
    assert half.data.dtype == np.float16
    np.testing.assert_array_equal(half.data.astype(np.float32), fs.data)
    padded, mask = fs.padded()
    assert padded.shape == (13, 700, DIM) and (mask.sum(1) == fs.lengths).all()
    np.testing.assert_array_equal(padded[1, :700], old["u001"])
    assert not padded[0, 1:].any()
    cut, cmask = fs.padded(max_frames=100)
    assert cut.shape == (13, 100, DIM) and cmask.sum() == np.minimum(fs.lengths, 100).sum()


def test_all_frames_through_zarr_and_zip_equal(tmp_path, monkeypatch):
    """The other read paths: a packed .zip (chunks through the guarded store's get), and arrays whose codecs are
    not emocache's (read through zarr block by block), give the same values."""
    url = tmp_path / "s"
    entry_with_frames(url)
    old = dict(open_store(url).iter_frames("m", "ds"))
    pack(url, tmp_path / "s.zip")
    assert_same(open_store(tmp_path / "s.zip").all_frames("m", "ds", threads=2), old)
    monkeypatch.setattr(bulk, "fast_codecs", lambda arr, frame_dim: False)
    assert_same(open_store(url).all_frames("m", "ds", threads=2), old)


def codec_chain(arr) -> list[str]:
    return [type(c).__name__ for c in arr.metadata.codecs]


@pytest.mark.parametrize("threads", [1, 2])
def test_zstd_and_blosc_stores_read_equal_on_the_fast_path(tmp_path, threads):
    """Frames written with the store's codec (bytes + zstd + crc32c, the default) and with the blosc candidate
    (bytes + blosc(zstd, shuffle) + crc32c) both take the fast path and give the same values as each other and as
    the per-key readers."""
    old_url, new_url = tmp_path / "old", tmp_path / "new"
    keys, frames = entry_with_frames(old_url)
    entry_with_frames(new_url, codec="blosc-zstd")
    old, new = open_store(old_url), open_store(new_url)
    assert codec_chain(old.entry("m", "ds").block_frames(0)) == ["BytesCodec", "ZstdCodec", "Crc32cCodec"]
    assert codec_chain(new.entry("m", "ds").block_frames(0)) == ["BytesCodec", "BloscCodec", "Crc32cCodec"]
    assert bulk.fast_codecs(old.entry("m", "ds").block_frames(0), DIM) == "zstd"
    assert bulk.fast_codecs(new.entry("m", "ds").block_frames(0), DIM) == "blosc"
    a, b = old.all_frames("m", "ds", threads=threads), new.all_frames("m", "ds", threads=threads)
    assert_same(a, dict(old.iter_frames("m", "ds")))
    assert a.keys == b.keys
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.frames(a.keys.index("u006")), frames[6].astype(np.float16))


def test_float32_blocks_read_exactly_and_refused_as_float16(tmp_path):
    rng = np.random.default_rng(1)
    F = [rng.normal(size=(int(rng.integers(2, 50)), 8)).astype(np.float32) for _ in range(6)]
    F[4][0, 0] = 1e6  # beyond float16: block 1 is stored float32
    write_arrays(tmp_path / "s", "m", "ds", [f"u{i}" for i in range(6)], ["a"] * 6,
                 np.stack([f.mean(0) for f in F]), F, block_size=3)
    st = open_store(tmp_path / "s")
    fs = st.all_frames("m", "ds")
    np.testing.assert_array_equal(fs.frames(4), F[4])
    np.testing.assert_array_equal(fs.frames(0), F[0].astype(np.float16).astype(np.float32))
    with pytest.raises(StoreError, match="block 1 stores float32"):
        st.all_frames("m", "ds", dtype=np.float16)
    with pytest.raises(ValueError, match="float32 or float16"):
        st.all_frames("m", "ds", dtype=np.int8)
    with pytest.raises(KeyError, match="not in the entry"):
        st.all_frames("m", "ds", keys=["nope"])


def test_no_frames_entry_refused(tmp_path):
    write_arrays(tmp_path / "s", "m", "ds", ["a", "b"], ["x", "y"], np.ones((2, 4)), None)
    with pytest.raises(StoreError, match="--no-frames"):
        open_store(tmp_path / "s").all_frames("m", "ds")


def chunk_file(url, block: int, chunk: int):
    return url / "m" / "ds" / "blocks" / f"b{block:06d}" / "frames" / "c" / str(chunk) / "0"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("codec", ["blosc-zstd", "zstd"])
def test_corrupt_chunk_is_a_clear_error(tmp_path, threads, codec):
    """A flipped byte fails the chunk's CRC32C in both readers, with an error naming the block and the fix (either
    frame codec)."""
    url = tmp_path / "s"
    entry_with_frames(url, codec=codec)
    f = chunk_file(url, 1, 2)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    st = open_store(url)
    for read in (lambda: list(st.iter_frames("m", "ds")), lambda: st.all_frames("m", "ds", threads=threads)):
        with pytest.raises(StoreError, match=r"m/ds/blocks/b000001/frames: unreadable \(ValueError: Stored and "
                                             r"computed checksum do not match.*--redo-failed"):
            read()
    # utterances whose frames lie in other chunks still read
    fs = st.all_frames("m", "ds", keys=["u000", "u011"], threads=threads)
    assert fs.keys == ["u000", "u011"]


def test_missing_and_truncated_chunks_are_errors(tmp_path):
    url = tmp_path / "s"
    entry_with_frames(url)
    chunk_file(url, 2, 1).unlink()
    with pytest.raises(StoreError, match=r"b000002/frames: chunk\(s\) \['c/1/0'\] missing from a committed block"):
        open_store(url).all_frames("m", "ds", threads=2)
    url2 = tmp_path / "t"
    entry_with_frames(url2)
    f = chunk_file(url2, 0, 0)
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(StoreError, match=r"b000000/frames: unreadable.*--redo-failed"):
        open_store(url2).all_frames("m", "ds")


def test_verify_checks_blosc_frames(tmp_path):
    """`emocache verify` reads blosc-zstd frames: a clean store passes, a flipped byte names its block."""
    from emocache.verify import verify_store

    url = tmp_path / "s"
    entry_with_frames(url, codec="blosc-zstd")
    (chk,) = verify_store(open_store(url))
    assert chk.ok and chk.committed == 4
    f = chunk_file(url, 2, 0)
    data = bytearray(f.read_bytes())
    data[len(data) // 3] ^= 0x10
    f.write_bytes(bytes(data))
    (chk,) = verify_store(open_store(url))
    assert not chk.ok and chk.bad_blocks == [2] and "checksum" in chk.problems[2]


@pytest.mark.parametrize("field", ["nbytes", "cbytes", "typesize"])
def test_blosc_header_mismatch_refused_before_decoding(tmp_path, field):
    """A blosc chunk whose header (checksum recomputed, as a hostile store would) declares another decoded size,
    another stored length or another item size than its array is refused by the fast path, naming the chunk."""
    import google_crc32c

    url = tmp_path / "s"
    entry_with_frames(url, codec="blosc-zstd")
    f = chunk_file(url, 1, 1)
    body = bytearray(f.read_bytes()[:-4])
    at = {"nbytes": 4, "cbytes": 12, "typesize": 3}[field]
    if field == "typesize":
        body[at] = 4
    else:
        body[at:at + 4] = (int.from_bytes(body[at:at + 4], "little") - 2).to_bytes(4, "little")
    f.write_bytes(bytes(body) + google_crc32c.value(bytes(body)).to_bytes(4, "little"))
    with pytest.raises(StoreError, match=r"b000001/frames: unreadable \(chunk c/1/0: blosc header declares"):
        open_store(url).all_frames("m", "ds", threads=2)


@pytest.mark.parametrize("what", ["chunk", "folder"])
def test_links_inside_the_store_are_refused(tmp_path, what):
    """The local fast path keeps the guard's rule: no symbolic link anywhere below the root is followed."""
    url = tmp_path / "s"
    entry_with_frames(url)
    target = chunk_file(url, 0, 1) if what == "chunk" else chunk_file(url, 0, 1).parent
    elsewhere = tmp_path / "elsewhere"
    target.rename(elsewhere)
    target.symlink_to(elsewhere)
    with pytest.raises(StoreError, match="symbolic link inside the store"):
        open_store(url).all_frames("m", "ds", threads=2)


def test_index_past_the_frames_refused_before_allocating(tmp_path):
    """An index row claiming more frames than its block holds is refused, naming the block, before the output
    array (sized from the index) is allocated."""
    url = tmp_path / "s"
    entry_with_frames(url)
    e = open_store(url, mode="a").entry("m", "ds")
    idx = e.index(e.block_slice(1))
    idx[0, 1] = 1 << 40  # 2^40 frames of 2,048 float32 values: no machine could allocate the output
    e.index_array[e.block_slice(1)] = idx
    with pytest.raises(StoreError, match=r"index points past block 1's frames"):
        open_store(url).all_frames("m", "ds")
