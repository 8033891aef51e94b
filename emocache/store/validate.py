"""Validation of untrusted stores: allowed codecs, array specs, entry attributes (a store is data, never code)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import zarr

FORMAT_NAME = "emocache_format"
SAFE_CODECS = frozenset({"bytes", "vlen-utf8", "zstd", "gzip", "blosc", "crc32c", "transpose"})
"""Codecs a store may use; anything else (pickle, custom plugins, sharding) is refused before a chunk is decoded."""
MAX_ROWS = 1 << 40
"""Ceiling of any integer attribute that counts rows (the configurable bound is :attr:`Limits.rows`)."""
MAX_DIM = 1 << 20
"""Largest ``dim`` and ``frame_dim`` (features per vector)."""
MAX_LAYER = 10_000
"""Largest hidden_states index in the ``layers`` attribute."""
WINDOW_BYTES = 16 << 20
"""Bytes of rows read at once (at least one block): the index (1 Mi rows) and pooled vectors are read in windows of
whole blocks over the chunks actually stored, so no reader allocates for rows the store only declares."""
GAP_BLOCKS = 8
"""Absent chunks read between two stored ones (an absent index chunk reads as pending) so that a listing-driven
read takes few requests; the absent chunks read are at most this many times the stored ones."""


@dataclass(frozen=True)
class Limits:
    """Bounds on what an untrusted store can make emocache read or allocate; raise them for stores you trust."""

    chunk_bytes: int = 128 << 20
    """Largest decoded chunk, from the array's declared chunk shape and dtype and each chunk's compression header
    (checked before decompressing); also bounds each stored object (``--max-chunk-mb``)."""
    metadata_bytes: int = 64 << 20
    """Largest metadata document (a ``zarr.json``, or a packed store's consolidated root) (``--max-metadata-mb``)."""
    json_depth: int = 64
    """Deepest nesting of a metadata document (``--max-json-depth``)."""
    rows: int = 1 << 24
    """Most utterances per entry (``--max-rows``)."""
    json_values: int = 2 << 20
    """Most JSON values in one metadata document, counted before parsing as its ``,`` ``:`` ``[`` ``{`` bytes (an
    upper bound; ``--max-json-values``): 6 MB of ``[{},{},...]`` parses into hundreds of MB. A packed store's
    consolidated root holds about 41 per node, so the default admits about 50,000 nodes."""

    @classmethod
    def from_cli(cls, chunk_mb: float, metadata_mb: float, json_depth: int, rows: int,
                 json_values: int = 2 << 20) -> "Limits":
        for name, v in (("--max-chunk-mb", chunk_mb), ("--max-metadata-mb", metadata_mb),
                        ("--max-json-depth", json_depth), ("--max-rows", rows), ("--max-json-values", json_values)):
            if not v > 0:
                raise StoreError(f"{name} {v}: must be positive")
        return cls(int(chunk_mb * (1 << 20)), int(metadata_mb * (1 << 20)), int(json_depth), int(rows),
                   int(json_values))


class StoreError(ValueError):
    """A store or entry that cannot be used as asked; the message says which and what to do."""


class StoreIOError(StoreError):
    """A write or delete the file system refused (disk full, permissions, a folder removed meanwhile)."""

    def __init__(self, msg: str, errno: int | None = None):
        super().__init__(msg)
        self.errno = errno


def codec_names(codecs) -> set[str]:
    """Every codec name in a v3 codec list, including those nested in sharding codecs."""
    out: set[str] = set()
    for c in codecs or ():
        if isinstance(c, str):
            out.add(c)
            continue
        if not isinstance(c, dict):
            out.add(repr(c))
            continue
        out.add(str(c.get("name")))
        conf = c.get("configuration") or {}
        if isinstance(conf, dict):
            out |= codec_names(conf.get("codecs")) | codec_names(conf.get("index_codecs"))
    return out


def check_array(arr, where: str, dtypes: tuple[str, ...], shape: tuple | None = None, ndim: int | None = None):
    """Refuse an array with an unsafe codec, another data type or shape, or chunks decoding to more than the
    store's :class:`Limits` allow (StoreError naming ``where``)."""
    if not isinstance(arr, zarr.Array):
        raise StoreError(f"{where}: expected an array, found a {type(arr).__name__}")
    meta = arr.metadata.to_dict()
    if meta.get("zarr_format") != 3:
        raise StoreError(f"{where}: Zarr format {meta.get('zarr_format')}; emocache stores are Zarr v3")
    bad = codec_names(meta.get("codecs")) - SAFE_CODECS
    if bad:
        raise StoreError(f"{where}: uses codec(s) {sorted(bad)}; emocache reads only {sorted(SAFE_CODECS)} "
                         "(a store is data, never code). Ask its author to re-extract with emocache")
    dt = str(meta.get("data_type"))
    if dt not in dtypes:
        raise StoreError(f"{where}: data type {dt}, expected {' or '.join(dtypes)}")
    if ndim is not None and len(arr.shape) != ndim:
        raise StoreError(f"{where}: {len(arr.shape)}-d, expected {ndim}-d")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise StoreError(f"{where}: shape {tuple(arr.shape)}, expected {tuple(shape)} from the entry's attributes")
    limits = getattr(arr.store, "limits", None) or Limits()
    chunk = math.prod(arr.chunks) * (arr.dtype.itemsize if dt != "string" else 1)
    if chunk > limits.chunk_bytes:
        raise StoreError(f"{where}: chunks of {chunk} bytes, over the limit of {limits.chunk_bytes} "
                         "(raise --max-chunk-mb only for a store you trust)")
    return arr


def int_attr(attrs: dict, name: str, where: str, lo: int, hi: int = MAX_ROWS) -> int:
    """An integer attribute in [lo, hi], else StoreError."""
    v = attrs.get(name)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise StoreError(f"{where}: attribute {name}={v!r} must be an integer in [{lo}, {hi}]; the store is damaged "
                         "or not written by emocache")
    return v


def member(group, name: str, where: str):
    """``group[name]`` with unreadable metadata (unknown codec, bad JSON) turned into a StoreError."""
    try:
        return group[name]
    except KeyError:
        raise StoreError(f"{where}/{name}: missing; the entry is incomplete or damaged") from None
    except StoreError:
        raise
    except Exception as e:
        raise StoreError(f"{where}/{name}: unreadable metadata ({type(e).__name__}: {e})") from None
