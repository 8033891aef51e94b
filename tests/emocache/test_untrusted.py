"""Stores from others are data, never code: hand-crafted malicious or broken stores fail with clear errors."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import emocache
from emocache.store import StoreError, open_store, write_arrays
from emocache.verify import verify_store
from tests.helpers.store import edit

ENTRY = ("m", "ds")


def make(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    frames = [rng.normal(size=(int(rng.integers(2, 6)), 3)).astype(np.float32) for _ in range(10)]
    url = tmp_path / "s"
    write_arrays(url, *ENTRY, [f"k{i}" for i in range(10)], [f"l{i % 2}" for i in range(10)],
                 np.stack([f.mean(0) for f in frames]), frames, block_size=4)
    return url


def entry_json(url: Path, *parts: str) -> Path:
    return url.joinpath(*ENTRY, *parts, "zarr.json")


class _Touch:
    """Unpickling this creates the marker file: what a malicious pickle would do, harmlessly."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def evil_codec():
    """A codec that unpickles chunk bytes, registered like a third-party plugin would be."""
    import zarr
    from zarr.abc.codec import BytesBytesCodec

    @dataclass(frozen=True)
    class EvilPickle(BytesBytesCodec):
        is_fixed_size = False

        @classmethod
        def from_dict(cls, data):
            return cls()

        def to_dict(self):
            return {"name": "evil.pickle"}

        async def _decode_single(self, chunk_bytes, chunk_spec):
            pickle.loads(chunk_bytes.to_bytes())
            return chunk_bytes

        async def _encode_single(self, chunk_bytes, chunk_spec):
            return chunk_bytes

        def compute_encoded_size(self, input_byte_length, chunk_spec):
            return input_byte_length

    zarr.registry.register_codec("evil.pickle", EvilPickle)
    yield
    # unregister (zarr has no public call for it), so no later test can decode with the plugin
    getattr(zarr.registry, "__codec_registries").pop("evil.pickle", None)


def test_pickle_codec_is_refused_before_any_chunk_is_decoded(tmp_path, evil_codec):
    import zarr

    marker = tmp_path / "marker"
    url = make(tmp_path)
    edit(entry_json(url, "pooled"), lambda m: m["codecs"].append({"name": "evil.pickle"}))  # decoded first
    url.joinpath(*ENTRY, "pooled", "c", "0", "0").write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(Exception):  # plain zarr with the plugin installed runs the payload...
        zarr.open_array(str(url / "m" / "ds" / "pooled"), mode="r")[:4]  # chunk 0 only: decoded for sure
    assert marker.exists()
    marker.unlink()
    with pytest.raises(StoreError, match=r"m/ds/pooled: uses codec\(s\) \['evil.pickle'\].*never code"):
        emocache.open_store(str(url)).pooled(*ENTRY)  # ...emocache refuses the store first
    with pytest.raises(StoreError, match="evil.pickle"):
        verify_store(open_store(url))
    assert not marker.exists()


def test_evil_codec_is_unregistered_after_its_test():
    import zarr

    with pytest.raises(KeyError):
        zarr.registry.get_codec_class("evil.pickle")


def test_unknown_codec_is_a_clear_error(tmp_path):
    url = make(tmp_path)
    edit(entry_json(url, "index"), lambda m: m["codecs"].insert(1, {"name": "numcodecs.pickle"}))
    with pytest.raises(StoreError, match="m/ds/index"):
        open_store(url).entry(*ENTRY)


@pytest.mark.parametrize("attr,value,match", [
    ("n", "10", "attribute n='10' must be an integer"),
    ("n", 10.0, "attribute n=10.0 must be an integer"),
    ("n", True, "attribute n=True"),
    ("block_size", 0, "attribute block_size=0"),
    ("dim", -3, "attribute dim=-3"),
    ("frame_dim", [3], "attribute frame_dim"),
    ("has_frames", "yes", "has_frames='yes' must be true or false"),
    ("provenance", "evil", "provenance must be a JSON object"),
    ("n", 11, r"keys: shape \(10,\), expected \(11,\)"),
    ("dim", 4, r"pooled: shape \(10, 3\), expected \(10, 4\)"),
    ("block_size", 5, "chunks of 4 rows, expected one block"),
])
def test_bad_attributes(tmp_path, attr, value, match):
    url = make(tmp_path)
    edit(entry_json(url), lambda m: m["attributes"].__setitem__(attr, value))
    with pytest.raises(StoreError, match=match):
        open_store(url).entry(*ENTRY)


@pytest.mark.parametrize("array,change,match", [
    ("pooled", {"data_type": "float64", "fill_value": 0.0}, "pooled: data type float64, expected float32"),
    ("index", {"data_type": "float32", "fill_value": 0.0}, "index: data type float32, expected int64"),
    ("keys", {"data_type": "int64", "fill_value": 0,
              "codecs": [{"name": "bytes", "configuration": {"endian": "little"}}]}, "keys: data type int64"),
])
def test_wrong_dtypes(tmp_path, array, change, match):
    url = make(tmp_path)
    edit(entry_json(url, array), lambda m: m.update(change))
    with pytest.raises(StoreError, match=match):
        open_store(url).entry(*ENTRY)


def test_bad_index_values_and_frames(tmp_path):
    url = make(tmp_path)
    st = open_store(url, mode="a")
    e = st.entry(*ENTRY)
    e.index_array[0] = np.array([-7, 1])
    with pytest.raises(StoreError, match=r"invalid \(offset, length\) rows in block\(s\) \[0\]"):
        open_store(url).pooled(*ENTRY)

    e.index_array[0] = np.array([0, 10_000])  # points past the block's frames
    with pytest.raises(StoreError, match="points past block 0's frames"):
        open_store(url).frames(*ENTRY, "k0")
    with pytest.raises(StoreError, match="points past block 0's frames"):
        list(open_store(url).iter_frames(*ENTRY))


def test_bad_block_frames_and_errors(tmp_path):
    url = make(tmp_path)
    edit(entry_json(url, "blocks", "b000001", "frames"), lambda m: m.update({"data_type": "int32", "fill_value": 0}))
    with pytest.raises(StoreError, match="b000001/frames: data type int32"):
        open_store(url).frames(*ENTRY, "k5")
    edit(entry_json(url, "blocks", "b000000", "frames"), lambda m: m.update({"shape": [m["shape"][0], 5]}))
    with pytest.raises(StoreError, match="5 columns, the entry says frame_dim=3"):
        open_store(url).frames(*ENTRY, "k0")

    e = open_store(url, mode="a").entry(*ENTRY)
    e.index_array[8] = np.array([-2, 0])  # a failed utterance, so errors() reads the block's attributes
    edit(entry_json(url, "blocks", "b000002"), lambda m: m["attributes"].__setitem__("errors", ["x"]))
    with pytest.raises(StoreError, match="attribute errors must map keys to messages"):
        open_store(url).errors(*ENTRY)


def test_wrong_store_format_and_not_a_store(tmp_path):
    url = make(tmp_path)
    edit(url / "zarr.json", lambda m: m["attributes"].__setitem__("emocache_format", 99))
    with pytest.raises(StoreError, match="store format 99"):
        open_store(url)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "zarr.json").write_text("{not json")
    with pytest.raises(StoreError):
        open_store(tmp_path / "junk")


def test_store_code_never_unpickles():
    import inspect

    import emocache.share
    import emocache.store
    import emocache.verify

    for mod in (emocache.store, emocache.share, emocache.verify):
        src = inspect.getsource(mod)
        assert "import pickle" not in src and "allow_pickle" not in src and "torch.load" not in src
