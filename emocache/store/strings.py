"""String arrays (an entry's ``keys`` and ``labels``) read chunk by chunk, item by item.

zarr decodes a ``vlen-utf8`` chunk into an object array and copies it into the output, so a tiny chunk of
repetitive strings (a few KB of zstd for 2^24 one-character keys) costs gigabytes before anything could look at its
values. Here each chunk's bytes are fetched through the guarded store (size and compression header checked: at
least 4 + 4 bytes per declared item), checksum-verified, decompressed, then parsed one item at a time: keys stop at
the first duplicate, and repeated labels share one string object. Memory then follows what the store holds (its
distinct strings), not what its headers declare.
"""

from __future__ import annotations

import struct

import google_crc32c
from numcodecs import GZip, Zstd
from numcodecs.blosc import Blosc

from emocache.store.storage import get_bytes
from emocache.store.validate import StoreError

DECOMPRESSORS = {"zstd": Zstd, "gzip": GZip, "blosc": Blosc}
"""Bytes-to-bytes codecs a string array may use besides ``crc32c`` (a subset of the safe codecs)."""


def codec_chain(arr, where: str) -> list[str]:
    """The bytes-to-bytes codec names after ``vlen-utf8``, in encoding order; a StoreError for any other chain."""
    names = [c.get("name") if isinstance(c, dict) else c for c in arr.metadata.to_dict().get("codecs") or ()]
    if names[:1] == ["transpose"] and arr.ndim == 1:
        names = names[1:]  # a 1-d transpose changes nothing
    rest = names[1:]
    if names[:1] != ["vlen-utf8"] or not all(n in DECOMPRESSORS or n == "crc32c" for n in rest):
        raise StoreError(f"{where}: codecs {names} are not a string array's vlen-utf8 followed by compression and "
                         "checksum codecs; a damaged or hostile store")
    return rest


def chunk_bytes(arr, c: int, chain: list[str], where: str) -> bytes:
    """Chunk ``c``'s decoded vlen-utf8 bytes (checksum verified, decompressed)."""
    key = arr.metadata.encode_chunk_key((c,))
    raw = get_bytes(arr.store, f"{arr.path}/{key}")  # guarded: links, size, compression header
    if raw is None:
        raise StoreError(f"{where}: chunk(s) [{key!r}] missing; the store is damaged (a missing chunk is never read "
                         "as its fill value)")
    try:
        for name in reversed(chain):
            if name == "crc32c":
                if len(raw) < 4 or google_crc32c.value(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
                    raise ValueError(f"Stored and computed checksum do not match in chunk {key}")
                raw = raw[:-4]
            else:
                raw = bytes(DECOMPRESSORS[name]().decode(raw))
    except Exception as e:
        raise StoreError(f"{where}: unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         "no redo repairs it: re-extract into a new store") from None
    return raw


def read_strings(arr, n: int, where: str, unique: bool) -> list[str]:
    """The first ``n`` strings of a 1-d ``string`` array whose every chunk is stored.

    ``unique``: a repeated string is a StoreError naming it and its two rows (read stops there). Otherwise equal
    strings share one object.
    """
    chain = codec_chain(arr, where)
    per = int(arr.chunks[0])
    out: list[str] = []
    first: dict[str, int] = {}
    for c in range(-(-n // per) if per else 0):
        buf = chunk_bytes(arr, c, chain, where)
        if len(buf) < 4 or struct.unpack_from("<I", buf, 0)[0] != per:
            raise StoreError(f"{where}: chunk {c} does not hold the {per} strings its array declares; a damaged or "
                             "hostile store (re-extract into a new store)")
        pos, size = 4, len(buf)
        for _ in range(min(per, n - len(out))):
            if pos + 4 > size:
                raise StoreError(f"{where}: chunk {c} ends inside its strings; a damaged store")
            (ln,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if pos + ln > size:
                raise StoreError(f"{where}: chunk {c} ends inside its strings; a damaged store")
            try:
                s = buf[pos:pos + ln].decode("utf-8")
            except UnicodeDecodeError:
                raise StoreError(f"{where}: chunk {c} holds a string that is not UTF-8; a damaged store") from None
            pos += ln
            i = first.setdefault(s, len(out))
            if i != len(out):
                if unique:
                    raise StoreError(f"{where}: duplicate key {s!r} (rows {i} and {len(out)}): the keys array is "
                                     "damaged; no redo repairs it: re-extract into a new store (`emocache verify` "
                                     "lists every problem)")
                s = out[i]
            out.append(s)
    return out
