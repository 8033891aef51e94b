"""Storage backends: a scheme -> guarded store class registry; unknown schemes name the known ones."""

from __future__ import annotations

import pytest
from zarr.storage import FsspecStore, LocalStore, ZipStore

from emocache.store import BACKENDS, StoreError, open_store, write_arrays, zarr_store
from emocache.store.guard import Guard, SafeFsspecStore, SafeLocalStore, SafeZipStore
from emocache.store.storage import scheme


def test_backends_are_module_level_guarded_classes():
    assert BACKENDS["file"] is SafeLocalStore and BACKENDS["zip"] is SafeZipStore
    assert BACKENDS["s3"] is BACKENDS["gs"] is SafeFsspecStore
    for cls, base in ((SafeLocalStore, LocalStore), (SafeZipStore, ZipStore), (SafeFsspecStore, FsspecStore)):
        assert issubclass(cls, Guard) and issubclass(cls, base) and callable(cls.connect)


@pytest.mark.parametrize("url,kind", [("store", "file"), ("/a/b.zip", "zip"), ("file:///a/b", "file"),
                                      ("file:///a/b.zip", "zip"), ("s3://bucket/s", "s3"), ("GS://b/s", "gs"),
                                      ("ftp://host/s", "ftp")])
def test_scheme(url, kind):
    assert scheme(url) == kind


def test_unknown_scheme_lists_the_known_ones():
    with pytest.raises(StoreError, match=r"ftp://host/s: unknown storage scheme ftp://; known: a local folder or "
                                         r"\.zip \(file://\), s3://, gs://, gcs://"):
        zarr_store("ftp://host/s")
    with pytest.raises(StoreError, match="unknown storage scheme"):
        open_store("ftp://host/s")


def test_file_urls_and_local_paths_open_the_same_store(tmp_path):
    import numpy as np

    write_arrays(tmp_path / "s", "m", "ds", ["a"], ["x"], np.ones((1, 2), np.float32))
    assert isinstance(zarr_store(f"file://{tmp_path / 's'}"), SafeLocalStore)
    assert open_store(f"file://{tmp_path / 's'}").entries() == open_store(tmp_path / "s").entries() == [("m", "ds")]
