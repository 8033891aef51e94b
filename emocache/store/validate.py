"""Validation of untrusted stores: allowed codecs, array specs, entry attributes (a store is data, never code)."""

from __future__ import annotations

FORMAT_NAME = "emocache_format"
SAFE_CODECS = frozenset({"bytes", "vlen-utf8", "zstd", "gzip", "blosc", "crc32c", "transpose", "sharding_indexed"})
"""Codecs a store may use; anything else (pickle, custom plugins) is refused before a chunk is decoded."""
MAX_ROWS = 1 << 40


class StoreError(ValueError):
    """A store or entry that cannot be used as asked; the message says which and what to do."""


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
    """Refuse an array with an unsafe codec, another data type or shape (StoreError naming ``where``)."""
    import zarr

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
