"""File names from data: the one rule every key or name passes before it names a file or folder.

A key from a dataset, a name from a spec or a manifest, an ``hf:`` id or a ``--name`` becomes a path component
only through this module:

* :func:`check_name` refuses a name that breaks the rule (store entry names, ``--name``: the user chose them);
* :func:`safe_name` keeps a name that follows it and turns any other text into a readable prefix plus a hash
  (dataset keys, spec names: text from a stranger that must still name a file);
* :func:`confined` checks that the path a name makes lies inside its folder, links resolved;
* :func:`write_new` writes a file without ever replacing an existing one unless asked (``--overwrite``), and
  never through a link.

The rule (``NAME_RE``): letters, digits and ``_ . + : = @ -``, starting with a letter, digit or ``_`` (so no dot
files, no ``..``), no separator, NUL or control character, at most :data:`NAME_MAX` bytes in UTF-8, not one of
the store's own names (:data:`RESERVED_NAMES`), not ending in ``.partial`` (the store's temporary files).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

NAME_MAX = 128
"""Most bytes (UTF-8) of a name: one path component (file systems allow 255)."""
RESERVED_NAMES = frozenset({"zarr.json", "blocks", "c", "keys", "labels", "pooled", "index"})
"""Names that collide with the store's own objects."""
NAME_RE = re.compile(r"[\w][\w.+:=@-]*")
HASH_CHARS = 16
"""Hex digits of SHA-256 in a hashed name (64 bits: no accidental collision among a corpus's keys)."""


class UnsafeNameError(ValueError):
    """A name that cannot name a file or store entry, or a path outside its folder; the message says which."""


def is_safe_name(name) -> bool:
    """Whether ``name`` follows the rule of the module docstring."""
    return (isinstance(name, str) and NAME_RE.fullmatch(name) is not None and len(name.encode("utf-8")) <= NAME_MAX
            and name not in RESERVED_NAMES and not name.endswith(".partial"))


def _shown(name) -> str:
    text = str(name)
    return repr(text[:60]) + ("..." if len(text) > 60 else "")


def check_name(name, what: str = "dataset", where: str = "") -> str:
    """``name`` when it follows the rule; else UnsafeNameError naming ``what`` (and ``where`` it came from)."""
    if not is_safe_name(name):
        at = f"{where}: " if where else ""
        raise UnsafeNameError(f"{at}{what} name {_shown(name)} cannot name a store entry or file: use letters, digits "
                              f"and . _ + : = @ - (no '/', not starting with '.'), at most {NAME_MAX} bytes, not one "
                              f"of {sorted(RESERVED_NAMES)}")
    return name


def safe_name(text, what: str = "name") -> str:
    """``text`` when it follows the rule, else ``<readable part>-<16 hex digits of its SHA-256>``: the characters
    the rule allows (others as ``_``, at most 48 bytes), or ``what`` when none are left. Deterministic; distinct
    texts give distinct names (up to a 64-bit hash collision)."""
    text = str(text)
    if is_safe_name(text):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_CHARS]
    readable = re.sub(r"[^\w.+=@-]", "_", text).lstrip(".+=@-")
    readable = readable.encode("utf-8")[:48].decode("utf-8", "ignore").rstrip(".")
    name = f"{readable or (what if is_safe_name(what) else 'name')}-{digest}"
    return name if is_safe_name(name) else f"name-{digest}"


def confined(folder: str | Path, name: str | Path, what: str = "path") -> Path:
    """``folder / name``, checked to lie inside ``folder`` once both are resolved (links followed); an absolute
    ``name``, ``..`` or a link leading out is an UnsafeNameError naming ``what``."""
    base = Path(folder).resolve()
    path = Path(folder) / name
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as e:  # a name too long, a link loop
        raise UnsafeNameError(f"{what} {_shown(name)}: not a usable path under {folder} ({e})") from None
    if real == base or not real.is_relative_to(base):
        raise UnsafeNameError(f"{what} {_shown(name)} resolves to {real}, outside {base}; refusing to write there")
    return path


def write_new(path: str | Path, data: bytes, overwrite: bool = False, what: str = "file") -> bool:
    """Write ``data`` to ``path``; returns False when a regular file with these very bytes was already there.

    Without ``overwrite`` an existing file with other content is an UnsafeNameError (nothing is replaced); with
    it the file is replaced by a rename, so a link at ``path`` is replaced, never followed. Never writes through
    a link or into a special file.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
    except FileExistsError:
        fd = None
    if fd is not None:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    if not overwrite and path.is_file() and not path.is_symlink() and path.stat().st_size == len(data) \
            and path.read_bytes() == data:
        return False
    if not overwrite:
        raise UnsafeNameError(f"{what} {path} exists with other content; pass --overwrite to replace it, or choose "
                              "another folder (nothing was overwritten)")
    if path.is_dir() and not path.is_symlink():
        raise UnsafeNameError(f"{what} {path} is a folder; remove it or choose another folder")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".emocache-", suffix=".partial")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


__all__ = ["NAME_MAX", "NAME_RE", "RESERVED_NAMES", "UnsafeNameError", "check_name", "confined", "is_safe_name",
           "safe_name", "write_new"]
