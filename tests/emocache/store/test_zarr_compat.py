"""zarr's private API in one adapter (emocache/store/zarr_compat.py): it fails loudly when zarr moves what it uses,
and no other module touches zarr's private parts."""

from __future__ import annotations

import re
from pathlib import Path

import zarr
from zarr.storage import MemoryStore

import emocache
from emocache.store import zarr_compat
from emocache.store.storage import get_bytes, set_bytes

PACKAGE = Path(emocache.__file__).resolve().parent
PRIVATE = re.compile(r"zarr\.core|\._sync_open|\._zf\b|\._is_open|__codec_registries")


def test_the_private_api_is_where_the_adapter_expects_it():
    from zarr.core import sync as private  # what zarr_compat wraps: an upgrade that moves it fails here, by name

    assert callable(private.sync), (f"zarr {zarr.__version__} has no zarr.core.sync.sync (checked against "
                                    f"{zarr_compat.CHECKED_VERSION}): update emocache/store/zarr_compat.py")
    store = MemoryStore()
    set_bytes(store, "a/zarr.json", b"{}")
    set_bytes(store, "a/c/0", b"xy")
    assert get_bytes(store, "a/c/0") == b"xy" and get_bytes(store, "nope") is None
    assert sorted(zarr_compat.collect(store.list())) == ["a/c/0", "a/zarr.json"]
    assert zarr_compat.collect(store.list(), lambda k: k.endswith("zarr.json")) == ["a/zarr.json"]


def test_only_the_adapter_touches_private_zarr():
    hits = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if PRIVATE.search(p.read_text())}
    assert hits == {"store/zarr_compat.py"}, hits
