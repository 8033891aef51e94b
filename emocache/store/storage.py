"""Storage backends: which zarr store serves a URL (local path, .zip, s3://, gs://) and its options."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from pathlib import Path

from zarr.buffer import default_buffer_prototype
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec
from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

from emocache.store.guard import SafeFsspecStore, SafeLocalStore, SafeZipStore
from emocache.store.validate import Limits, StoreError
from emocache.store.zarr_compat import collect, sync

STORAGE_OPTIONS_ENV = "EMOCACHE_STORAGE_OPTIONS"
"""JSON fsspec storage options used when none are passed (e.g. {"endpoint_url": ...} for an S3-compatible server)."""


@contextlib.contextmanager
def quiet_zarr():
    """Silence zarr's notices that string arrays and consolidated metadata are not yet in the v3 spec, here only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message=".*not part (of|in) the Zarr format 3.*", category=ZarrUserWarning)
        yield


def codecs(level: int = 3):
    """zstd then a CRC32C checksum on every chunk (frames use level 1: features compress little, speed wins)."""
    return [ZstdCodec(level=level), Crc32cCodec()]


FRAME_CODECS = ("zstd", "blosc-zstd")
"""Frame codecs emocache can write: ``zstd`` (the default, the store format) and ``blosc-zstd`` (ours, issue 10's
faster option, written only when asked: tests and ``emocache bench --store``). Readers, fast path included, take both."""
BLOSC_BLOCK = 1 << 18
"""Blosc block size for frames: 256 KiB, so zstd's entropy tables see enough of each shuffled byte plane."""


def frame_codecs(itemsize: int, codec: str = "zstd"):
    """Compressors of a block's frames array (after the bytes codec), CRC32C last.

    ``zstd``: zstd level 1 (the format). ``blosc-zstd``: blosc with byte shuffle (typesize = ``itemsize``:
    float16's high bytes, sign and exponent, end up together and entropy-code well; the near-random low bytes are
    stored as they are), zstd level 1 inside, 256 KiB blocks; on float16 frames it stored 8-12 % fewer bytes than
    zstd level 1. ``all_frames`` read it 1.4-1.8x faster than zstd with 2 threads on a quiet 2-core AMD EPYC
    machine (3.9-4.5 vs 2.3-2.9 GB/s float32). zstd already meets the 2 GB/s target, so the format keeps zstd
    (docs/BENCHMARKS.md, "Frame reads on a quiet AMD EPYC machine").
    """
    if codec == "zstd":
        return codecs(level=1)
    if codec != "blosc-zstd":
        raise ValueError(f"frame codec {codec!r}: one of {', '.join(FRAME_CODECS)}")
    return [BloscCodec(typesize=itemsize, cname="zstd", clevel=1, shuffle="shuffle", blocksize=BLOSC_BLOCK),
            Crc32cCodec()]


def is_remote(url: str) -> bool:
    return "://" in str(url) and not str(url).startswith("file://")


def local_path(url: str) -> str:
    """A local URL without its ``file://`` prefix."""
    url = str(url)
    return url[len("file://"):] if url.startswith("file://") else url


def parse_storage_options(raw: str | None, source: str = "--storage-options") -> dict:
    """Storage options given as JSON (the ``--storage-options`` flag, or ``source`` naming where else they came
    from) -> dict, empty when not given; a one-line ValueError otherwise."""
    if not raw:
        return {}
    try:
        opts = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"{source} is not JSON ({e}); e.g. '{{\"endpoint_url\": \"http://host:9000\"}}'") from None
    if not isinstance(opts, dict):
        raise ValueError(f"{source} must hold a JSON object, got {type(opts).__name__}")
    return opts


def storage_options_for(storage_options: dict | None = None) -> dict:
    """The given options, else those in $EMOCACHE_STORAGE_OPTIONS (JSON), else none."""
    if storage_options:
        return dict(storage_options)
    try:
        return parse_storage_options(os.environ.get(STORAGE_OPTIONS_ENV), f"${STORAGE_OPTIONS_ENV}")
    except ValueError as e:
        raise StoreError(str(e)) from None


BACKENDS: dict[str, type] = {"file": SafeLocalStore, "zip": SafeZipStore, "s3": SafeFsspecStore,
                             "gs": SafeFsspecStore, "gcs": SafeFsspecStore}
"""URL scheme -> guarded zarr store class (:mod:`emocache.store.guard`): ``file`` for local folders (and
``file://`` URLs: zarr's LocalStore, atomic writes), ``zip`` for a local ``.zip`` (read-only), fsspec for object
stores (s3fs for ``s3://``; gcsfs for ``gs://``/``gcs://``, the same code path, untested here)."""


def scheme(url: str) -> str:
    """The :data:`BACKENDS` key of a URL: its scheme; ``zip`` or ``file`` for a local path."""
    url = str(url)
    if is_remote(url):
        return url.split("://", 1)[0].lower()
    return "zip" if local_path(url).endswith(".zip") else "file"


def zarr_store(url: str | Path, read_only: bool = True, storage_options: dict | None = None,
               limits: Limits | None = None):
    """The guarded zarr storage for a URL, from :data:`BACKENDS` (see :mod:`emocache.store.guard`)."""
    kind = scheme(str(url))
    cls = BACKENDS.get(kind)
    if cls is None:
        remote = ", ".join(f"{k}://" for k in BACKENDS if k not in ("file", "zip"))
        raise StoreError(f"{url}: unknown storage scheme {kind}://; known: a local folder or .zip (file://), "
                         f"{remote}")
    opts = storage_options_for(storage_options) if cls is SafeFsspecStore else {}
    return cls.connect(local_path(str(url)), read_only, opts, limits or Limits())


def object_keys(zs) -> list[str]:
    """Every object of a store except temporary files of interrupted LocalStore writes."""
    return sorted(collect(zs.list(), lambda k: not k.endswith(".partial")))


def metadata_keys(zs) -> list[str]:
    """The key of every metadata document (``zarr.json``) in a store, listed from its objects (not from any
    consolidated metadata)."""
    own = getattr(zs, "metadata_keys", None)  # a local store's walk that passes over links to data
    if own is not None:
        return sorted(own())
    return sorted(collect(zs.list(), lambda k: k == "zarr.json" or k.endswith("/zarr.json")))


def list_prefix(zs, prefix: str) -> list[str]:
    """The keys of the objects under ``prefix`` (a folder path ending in ``/``)."""
    return collect(zs.list_prefix(prefix))


def list_dir(zs, prefix: str) -> list[str]:
    """The names directly under ``prefix`` (objects and folders)."""
    return collect(zs.list_dir(prefix))


def get_bytes(zs, key: str) -> bytes | None:
    """One object's bytes, None when absent."""
    buf = sync(zs.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def set_bytes(zs, key: str, data: bytes) -> None:
    """Write one object."""
    sync(zs.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def exists(zs, key: str) -> bool:
    return bool(sync(zs.exists(key)))


def has_consolidated(zs) -> bool:
    """Whether the root metadata holds consolidated metadata (writers drop it)."""
    raw = get_bytes(zs, "zarr.json")
    return raw is not None and json.loads(raw).get("consolidated_metadata") is not None
