"""Storage backends: which zarr store serves a URL (local path, .zip, s3://, gs://) and its options."""

from __future__ import annotations

import contextlib
import json
import os
import warnings
import zipfile
from pathlib import Path

from emocache.store.validate import Limits, StoreError

STORAGE_OPTIONS_ENV = "EMOCACHE_STORAGE_OPTIONS"
"""JSON fsspec storage options used when none are passed (e.g. {"endpoint_url": ...} for an S3-compatible server)."""


@contextlib.contextmanager
def quiet_zarr():
    """Silence zarr's notices that string arrays and consolidated metadata are not yet in the v3 spec, here only."""
    from zarr.errors import UnstableSpecificationWarning, ZarrUserWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnstableSpecificationWarning)
        warnings.filterwarnings("ignore", message=".*not part (of|in) the Zarr format 3.*", category=ZarrUserWarning)
        yield


def codecs(level: int = 3):
    """zstd then a CRC32C checksum on every chunk (frames use level 1: features compress little, speed wins)."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

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
    from zarr.codecs import BloscCodec, Crc32cCodec

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


def storage_options_for(storage_options: dict | None = None) -> dict:
    """The given options, else those in $EMOCACHE_STORAGE_OPTIONS (JSON), else none."""
    if storage_options:
        return dict(storage_options)
    from emocache.config import parse_storage_options

    try:
        return parse_storage_options(os.environ.get(STORAGE_OPTIONS_ENV), f"${STORAGE_OPTIONS_ENV}")
    except ValueError as e:
        raise StoreError(str(e)) from None


def zarr_store(url: str | Path, read_only: bool = True, storage_options: dict | None = None,
               limits: Limits | None = None):
    """The guarded zarr storage for a URL (see :mod:`emocache.store.guard`): LocalStore for paths (atomic
    writes), ZipStore for .zip, fsspec otherwise."""
    from emocache.store.guard import guarded_classes

    SafeLocal, SafeZip, SafeFsspec = guarded_classes()
    limits = limits or Limits()
    url = local_path(url)
    if url.endswith(".zip") and not is_remote(url):
        if not read_only:
            raise StoreError(f"{url}: zip stores are read-only; write to a directory, then `emocache pack` it")
        from emocache.inputs import InputError, check_file

        try:
            check_file(url, 1 << 62)  # the members are bounded by the limits, not the archive
        except InputError as e:
            raise StoreError(f"{e}; a packed store is one .zip file") from None
        zs = SafeZip(url, mode="r").guard(limits, url)
        try:
            zs._sync_open()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise StoreError(f"{url}: not a readable zip file ({type(e).__name__}: {e}); the file is truncated "
                             "or not made by `emocache pack`") from None
        return zs
    if is_remote(url):
        try:
            zs = SafeFsspec.from_url(url, read_only=read_only, storage_options=storage_options_for(storage_options))
        except ImportError as e:
            raise StoreError(f"{url}: {e}; install the filesystem package (s3fs for s3://, gcsfs for gs://)") from None
        return zs.guard(limits, url)
    try:
        os.stat(url)
    except FileNotFoundError:
        pass
    except OSError as e:  # a name longer than the file system allows, a component that is a file
        raise StoreError(f"{url}: not a usable path ({e.strerror or e}); give a shorter or valid store path") from None
    if read_only and not Path(url).exists():
        raise StoreError(f"{url}: no store here (nothing extracted yet? run `emocache extract ... --store {url}`)")
    if Path(url).exists() and not Path(url).is_dir():
        raise StoreError(f"{url}: not a folder; a store is a folder (or a .zip made by `emocache pack`)")
    return SafeLocal(url, read_only=read_only).guard(limits, url)


async def _list(zs) -> list[str]:
    return [k async for k in zs.list()]


def object_keys(zs) -> list[str]:
    """Every object of a store except temporary files of interrupted LocalStore writes."""
    from zarr.core.sync import sync

    return sorted(k for k in sync(_list(zs)) if not k.endswith(".partial"))


def get_bytes(zs, key: str) -> bytes | None:
    """One object's bytes, None when absent."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    buf = sync(zs.get(key, prototype=default_buffer_prototype()))
    return None if buf is None else buf.to_bytes()


def exists(zs, key: str) -> bool:
    from zarr.core.sync import sync

    return bool(sync(zs.exists(key)))


def has_consolidated(zs) -> bool:
    """Whether the root metadata holds consolidated metadata (writers drop it)."""
    raw = get_bytes(zs, "zarr.json")
    return raw is not None and json.loads(raw).get("consolidated_metadata") is not None
