"""Guarded storage: every object a store serves is checked before zarr decodes it.

Local stores resolve each key inside the store root and refuse symbolic links and special files (FIFOs,
devices, sockets) for reading, writing, listing and deleting; zip members are checked against their declared
size; every metadata document is bounded in bytes and JSON nesting, and an array document naming a codec outside
:data:`~emocache.store.validate.SAFE_CODECS` is refused as it is read (also inside consolidated metadata); every
chunk's decoded size is read from its compression header (zstd frame content size, blosc header, gzip by bounded
inflation) and checked against the array's declared chunk shape and dtype before zarr decompresses it (for strings
also from below: at least the 4 + 4 bytes per item their encoding needs, so a string array backs the rows it
declares). A chunk that zarr asks for and the store lacks is remembered (``missing``), so readers can refuse a fill
value standing in for a committed block.

The guarded classes (:class:`SafeLocalStore`, :class:`SafeZipStore`, :class:`SafeFsspecStore`) each open their kind
of URL with ``connect``; :data:`emocache.store.storage.BACKENDS` maps URL schemes to them.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from zarr.abc.store import RangeByteRequest
from zarr.buffer import default_buffer_prototype
from zarr.storage import FsspecStore, LocalStore, ZipStore

from emocache.inputs import InputError, check_file, json_depth  # one guard for store metadata and input files
from emocache.store.validate import SAFE_CODECS, Limits, StoreError, StoreIOError, codec_names

COMPRESSORS = ("zstd", "gzip", "blosc")
ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "int32": 4, "uint32": 4,
            "float32": 4, "int64": 8, "uint64": 8, "float64": 8, "complex64": 8, "complex128": 16}
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BLOSC_HEADER = 16
"""Bytes of a blosc chunk header: version, format, flags, typesize, then nbytes, blocksize and cbytes (uint32 LE)."""


def is_metadata(key: str) -> bool:
    return key == "zarr.json" or key.endswith("/zarr.json")


def zstd_content_size(raw: bytes) -> int | None:
    """The decompressed size a zstd frame header declares; None when the frame does not declare one."""
    if len(raw) < 6 or raw[:4] != ZSTD_MAGIC:
        return None
    fhd = raw[4]
    single = (fhd >> 5) & 1
    pos = 5 + (0 if single else 1) + (0, 1, 2, 4)[fhd & 3]
    width = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    if not width or len(raw) < pos + width:
        return None
    size = int.from_bytes(raw[pos:pos + width], "little")
    return size + 256 if width == 2 else size


def gzip_size(raw: bytes, limit: int) -> int:
    """Bytes the gzip stream inflates to, counted up to ``limit + 1`` in 1 MiB steps (memory stays bounded)."""
    total, data = 0, raw
    d = zlib.decompressobj(47)
    while data and total <= limit:
        total += len(d.decompress(data, 1 << 20))
        data = d.unconsumed_tail
        if d.eof:
            data = d.unused_data
            d = zlib.decompressobj(47)
    return total


@dataclass(frozen=True)
class ChunkSpec:
    """What a chunk of one array may decode to."""

    decoded: int | None
    """Bytes of one chunk from the declared chunk shape and dtype (None for variable-length strings)."""
    items: int
    """Values per chunk (the product of the chunk shape)."""
    compressor: str | None
    """The one compression codec (zstd, gzip, blosc) or None."""
    n_compressors: int


def chunk_spec(meta: dict) -> ChunkSpec | None:
    """The ChunkSpec of an array's metadata document, None when it is not a (readable) array document."""
    if not isinstance(meta, dict) or meta.get("node_type") != "array":
        return None
    try:
        shape = meta["chunk_grid"]["configuration"]["chunk_shape"]
        item = ITEMSIZE.get(str(meta.get("data_type")))
        items = math.prod(int(s) for s in shape)
        decoded = items * item if item else None
        names = [c.get("name") if isinstance(c, dict) else c for c in meta.get("codecs") or ()]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    comps = [n for n in names if n in COMPRESSORS]
    return ChunkSpec(decoded, items, comps[0] if comps else None, len(comps))


class Guard:
    """Mixed into a zarr store class: checks every object read (see the module docstring)."""

    limits: Limits
    label: str

    def guard(self, limits: Limits, label: str):
        self.limits = limits
        self.label = label.rstrip("/")
        self.specs: dict[str, ChunkSpec] = {}
        self.missing: set[str] = set()
        return self

    def where(self, key: str) -> str:
        return f"{self.label}/{key}"

    def max_object(self, key: str) -> int:
        """Largest stored object accepted for ``key`` (compressed chunks may exceed their decoded size a little)."""
        if is_metadata(key):
            return self.limits.metadata_bytes
        return self.limits.chunk_bytes + self.limits.chunk_bytes // 64 + 4096

    def too_big(self, key: str, size: int):
        what = ("metadata document", "--max-metadata-mb") if is_metadata(key) else ("chunk", "--max-chunk-mb")
        return StoreError(f"{self.where(key)}: {what[0]} of {size} bytes, over the limit of {self.max_object(key)}; "
                          f"a damaged or hostile store (raise {what[1]} only for a store you trust)")

    def before_get(self, key: str) -> None:
        """Backend checks before any byte is read (path, type, declared size)."""

    async def get(self, key, prototype=None, byte_range=None):
        prototype = prototype or default_buffer_prototype()
        self.before_get(key)
        buf = await super().get(key, prototype, byte_range)
        if byte_range is None:
            self.after_get(key, buf)
        return buf

    async def get_partial_values(self, prototype, key_ranges):
        return [await self.get(k, prototype, r) for k, r in key_ranges]

    def after_get(self, key: str, buf) -> None:
        if buf is None:
            if not is_metadata(key):
                self.missing.add(key)
            return
        self.missing.discard(key)
        raw = buf.to_bytes()
        if len(raw) > self.max_object(key):
            raise self.too_big(key, len(raw))
        if is_metadata(key):
            self.check_metadata(key, raw)
        else:
            self.check_chunk(key, raw)

    def check_metadata(self, key: str, raw: bytes) -> None:
        values = sum(raw.count(c) for c in (b",", b":", b"[", b"{"))  # an upper bound on the values parsing makes
        if values > self.limits.json_values:
            raise StoreError(f"{self.where(key)}: metadata document with up to {values} JSON values, over the limit "
                             f"of {self.limits.json_values}; a damaged or hostile store (raise --max-json-values only "
                             "for a store you trust)")
        try:
            meta = json.loads(raw)
        except RecursionError:
            raise StoreError(f"{self.where(key)}: JSON nested too deeply to parse; a damaged or hostile "
                             "store") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise StoreError(f"{self.where(key)}: not valid JSON ({e}); the store is damaged") from None
        depth = json_depth(meta)
        if depth > self.limits.json_depth:
            raise StoreError(f"{self.where(key)}: JSON nested {depth} levels deep, over the limit of "
                             f"{self.limits.json_depth} (raise --max-json-depth only for a store you trust)")
        prefix = key[:-len("zarr.json")]
        self.add_node(prefix.rstrip("/"), meta)
        cons = meta.get("consolidated_metadata") if isinstance(meta, dict) else None
        nodes = cons.get("metadata") if isinstance(cons, dict) else None
        if isinstance(nodes, dict):
            for path, m in nodes.items():
                self.add_node(f"{prefix}{path}".strip("/"), m)

    def add_node(self, path: str, meta) -> None:
        """Check one node's metadata (its codecs) and remember its chunk spec."""
        if not isinstance(meta, dict) or meta.get("node_type") != "array":
            return
        bad = codec_names(meta.get("codecs")) - SAFE_CODECS
        if bad:
            raise StoreError(f"{self.where(path)}: uses codec(s) {sorted(bad)}; emocache reads only "
                             f"{sorted(SAFE_CODECS)} (a store is data, never code). Ask its author to re-extract "
                             "with emocache")
        spec = chunk_spec(meta)
        if spec is not None:
            self.specs[path] = spec

    def spec_for(self, key: str) -> ChunkSpec | None:
        path = key
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in self.specs:
                return self.specs[path]
        return None

    def check_chunk(self, key: str, raw: bytes) -> None:
        spec = self.spec_for(key)
        limit = self.limits.chunk_bytes
        if spec is not None and spec.decoded is not None:
            if spec.decoded > limit:
                raise StoreError(f"{self.where(key)}: the array declares chunks of {spec.decoded} bytes, over the "
                                 f"limit of {limit} (raise --max-chunk-mb only for a store you trust)")
            limit = spec.decoded
        if spec is not None and spec.n_compressors > 1:
            raise StoreError(f"{self.where(key)}: the array stacks {spec.n_compressors} compression codecs; "
                             "emocache reads one (a damaged or hostile store)")
        comp = spec.compressor if spec is not None else ("zstd" if raw[:4] == ZSTD_MAGIC else None)
        if comp == "zstd":
            size = zstd_content_size(raw)
            if size is None:
                raise StoreError(f"{self.where(key)}: zstd chunk without a declared content size; emocache "
                                 "writes it and reads no other (a damaged or hostile store)")
        elif comp == "blosc":
            size = int.from_bytes(raw[4:8], "little") if len(raw) >= BLOSC_HEADER else limit + 1
        elif comp == "gzip":
            size = gzip_size(raw, limit)
        else:
            return
        if size > limit:
            amount = f"more than {limit}" if comp == "gzip" else f"{size}"
            bound = ("its array declares" if spec is not None and spec.decoded is not None
                     else "allowed (--max-chunk-mb)")
            raise StoreError(f"{self.where(key)}: chunk inflates to {amount} bytes, more than the {limit} {bound}; "
                             "a damaged or hostile store (a compression bomb) is not decoded")
        if spec is not None and spec.decoded is None and size < 4 + 4 * spec.items:
            raise StoreError(f"{self.where(key)}: chunk decodes to {size} bytes, fewer than the {4 + 4 * spec.items} "
                             f"bytes its {spec.items} strings need at least; the array declares more than the store "
                             "holds (a damaged or hostile store)")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def _link_error(path) -> StoreError:
    return StoreError(f"{path}: a symbolic link inside the store; emocache never follows links in a store (remove it "
                      "or replace it with the real file)")


def _special_error(path, mode: int) -> StoreError:
    return StoreError(f"{path}: a {_kind(mode)} inside the store; only regular files and folders are read (remove it)")


class SafeLocalStore(Guard, LocalStore):
    """LocalStore that stays inside its root: no symbolic links, no special files, errors in one line."""

    @classmethod
    def connect(cls, url: str, read_only: bool, storage_options: dict, limits: Limits) -> "SafeLocalStore":
        """The store folder at ``url`` (created on first write unless ``read_only``)."""
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
        return cls(url, read_only=read_only).guard(limits, url)

    def resolve(self, key: str, final: str = "file",
                folder: tuple[str, Path] | None = None) -> tuple[Path, os.stat_result | None]:
        """The path of ``key`` under the root, each component checked with lstat (never followed).

        ``folder`` = (key prefix, its path) from an earlier resolve of a folder above ``key``: only the
        components below it are checked (a bulk reader resolving many chunks of one array).
        """
        parts = key.strip("/").split("/") if key.strip("/") else []
        if any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"{self.where(key)}: not a valid object key")
        path = self.root
        above = folder[0].strip("/").split("/") if folder is not None else None
        if above and parts[:len(above)] == above and len(parts) > len(above):
            path, parts = folder[1], parts[len(above):]
        try:
            st = os.stat(path)  # the root itself is the user's choice and may be a link
        except OSError:
            return path, None
        for i, p in enumerate(parts):
            path = path / p
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                return path, None
            if stat.S_ISLNK(st.st_mode):
                raise _link_error(path)
            if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                raise _special_error(path, st.st_mode)
            if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
                return path, None
        return path, st

    def before_get(self, key: str) -> None:
        _, st = self.resolve(key)
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size > self.max_object(key):
            raise self.too_big(key, st.st_size)

    async def set(self, key, value):
        path, _ = self.resolve(key)
        return await self._guarded(super().set, path, key, value)

    async def set_if_not_exists(self, key, value):
        path, _ = self.resolve(key)
        return await self._guarded(super().set_if_not_exists, path, key, value)

    async def _guarded(self, fn, path, *args):
        """Run a write; an OSError (disk full, permissions) becomes a one-line StoreError naming the path."""
        try:
            return await fn(*args)
        except StoreError:
            raise
        except OSError as e:
            hint = ("; free space and rerun the same command (committed blocks are kept)"
                    if e.errno in (errno.ENOSPC, errno.EDQUOT) else "")
            raise StoreIOError(f"{path}: {e.strerror or e}{hint}", e.errno) from None

    async def delete(self, key):
        path, _ = self.resolve(key)
        return await self._guarded(super().delete, path, key)

    async def delete_dir(self, prefix):
        path, _ = self.resolve(prefix)
        return await self._guarded(super().delete_dir, path, prefix)

    async def exists(self, key):
        _, st = self.resolve(key)
        return st is not None and stat.S_ISREG(st.st_mode)

    async def getsize(self, key):
        path, st = self.resolve(key)
        if st is None:
            raise FileNotFoundError(path)
        return st.st_size

    def _walk(self, base: Path):
        """Relative keys of every regular file under ``base``; links and special files are errors."""
        skip = len(str(self.root).rstrip(os.sep)) + 1
        stack = [str(base)]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                if e.is_symlink():
                    raise _link_error(e.path)
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    yield e.path[skip:].replace(os.sep, "/")
                else:
                    raise _special_error(e.path, e.stat(follow_symlinks=False).st_mode)

    async def list(self):
        for k in self._walk(self.root):
            yield k

    def metadata_keys(self) -> list[str]:
        """Every ``zarr.json`` key under the root. Unlike :meth:`list`, a link or special file under another name
        is passed over (no reader takes metadata from it; the readers of its data refuse it), so ``verify`` can
        still name the blocks it damages; a linked folder or ``zarr.json`` is an error."""
        out, stack = [], [self.root]
        while stack:
            d = stack.pop()
            try:
                entries = list(os.scandir(d))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for e in entries:
                p = Path(e.path)
                if e.is_dir(follow_symlinks=False):
                    stack.append(p)
                elif e.name == "zarr.json":
                    if e.is_symlink():
                        raise _link_error(p)
                    if not e.is_file(follow_symlinks=False):
                        raise _special_error(p, e.stat(follow_symlinks=False).st_mode)
                    out.append(p.relative_to(self.root).as_posix())
                elif e.is_symlink() and e.is_dir():
                    raise _link_error(p)
        return out

    def _folder(self, prefix):
        """The resolved path of ``prefix`` when it is a folder in the store, else None."""
        path, st = self.resolve(prefix.rstrip("/"))
        return path if st is not None and stat.S_ISDIR(st.st_mode) else None

    async def list_prefix(self, prefix):
        path = self._folder(prefix)
        if path is not None:
            for k in self._walk(path):
                yield k

    async def list_dir(self, prefix):
        path = self._folder(prefix)
        if path is None:
            return
        for e in os.scandir(path):
            if e.is_symlink():
                raise _link_error(e.path)
            if not (e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False)):
                raise _special_error(e.path, e.stat(follow_symlinks=False).st_mode)
            yield e.name


class SafeZipStore(Guard, ZipStore):
    """ZipStore (read-only) whose members are checked against their declared sizes before they are read."""

    members: zipfile.ZipFile
    """The zip's central directory, read once when connecting (member names and declared sizes)."""

    @classmethod
    def connect(cls, url: str, read_only: bool, storage_options: dict, limits: Limits) -> "SafeZipStore":
        """The packed store at ``url``: a regular file whose central directory reads."""
        if not read_only:
            raise StoreError(f"{url}: zip stores are read-only; write to a directory, then `emocache pack` it")
        try:
            check_file(url, 1 << 62)  # the members are bounded by the limits, not the archive
        except InputError as e:
            raise StoreError(f"{e}; a packed store is one .zip file") from None
        zs = cls(url, mode="r").guard(limits, url)
        try:
            zs.members = zipfile.ZipFile(url)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise StoreError(f"{url}: not a readable zip file ({type(e).__name__}: {e}); the file is truncated "
                             "or not made by `emocache pack`") from None
        return zs

    def before_get(self, key: str) -> None:
        try:
            info = self.members.getinfo(key)
        except KeyError:
            return
        if info.file_size > self.max_object(key):
            raise self.too_big(key, info.file_size)

    async def get(self, key, prototype=None, byte_range=None):
        try:
            return await Guard.get(self, key, prototype, byte_range)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError) as e:
            # zipfile never inflates past the declared size; data that disagrees with it fails here
            raise StoreError(f"{self.where(key)}: damaged zip member ({type(e).__name__}: {e}); re-pack or "
                             "re-download the store") from None


class SafeFsspecStore(Guard, FsspecStore):
    """FsspecStore reading at most the limit plus one byte of any object."""

    @classmethod
    def connect(cls, url: str, read_only: bool, storage_options: dict, limits: Limits) -> "SafeFsspecStore":
        """The store at an fsspec URL (s3://, gs://), with these fsspec options."""
        try:
            zs = cls.from_url(url, read_only=read_only, storage_options=storage_options)
        except ImportError as e:
            raise StoreError(f"{url}: {e}; install the filesystem package (s3fs for s3://, gcsfs for gs://)") from None
        return zs.guard(limits, url)

    async def get(self, key, prototype=None, byte_range=None):
        prototype = prototype or default_buffer_prototype()
        if byte_range is not None:
            return await FsspecStore.get(self, key, prototype, byte_range)
        limit = self.max_object(key)
        buf = await FsspecStore.get(self, key, prototype, RangeByteRequest(0, limit + 1))
        if buf is not None and len(buf) > limit:
            raise self.too_big(key, len(buf))
        self.after_get(key, buf)
        return buf
