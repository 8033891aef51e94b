"""Bounded readers of files from others: manifests, label maps, teacher folders, similarity files, pipeline
specs, model configs. Every one goes through :func:`check_file` (a regular file, no special file, no link where
a link is not the user's own choice, at most a size) before a byte is read; JSON is depth-bounded after parsing
and Python's own recursion limit is caught. The limits are :class:`InputLimits` (docs/STORE.md, threat model,
lists them next to the store's). The store's metadata guard (:mod:`emocache.store.guard`) uses
:func:`json_depth` from here.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InputLimits:
    """Bounds on what a file from someone else can make emocache or the trainer read, allocate or write."""

    json_bytes: int = 16 << 20
    """Largest JSON document: teacher.json, label_map.json, --similarity, a --save-model config.json."""
    json_depth: int = 64
    """Deepest JSON nesting of those documents and of a manifest line (the store's metadata limit too)."""
    spec_bytes: int = 1 << 20
    """Largest pipeline spec (TOML) and model config (config.yaml, config.json)."""
    manifest_bytes: int = 128 << 20
    """Largest manifest file, checked with stat before a line is read (EmoBox's largest, MELD's, is 3.5 MB for
    13,706 lines; 128 MiB holds about 500,000 such lines). A bigger dataset is split over several manifests."""
    manifest_lines: int = 1 << 19
    """Most lines of one manifest (524,288; counted while streaming, so memory stays bounded)."""
    line_bytes: int = 64 << 10
    """Longest manifest line (read at most this plus one byte at a time)."""
    key_bytes: int = 512
    """Longest utterance key, speaker or dataset field of a manifest line."""
    label_bytes: int = 256
    """Longest label (a manifest's ``emo``, a label map's names)."""
    path_bytes: int = 4096
    """Longest audio path of a manifest line (PATH_MAX)."""
    teacher_bytes: int = 1 << 30
    """Largest teacher.safetensors."""
    grid_cells: int = 10_000
    """Most cells of one pipeline spec (counted before any is built)."""
    model_bytes: int = 4 << 30
    """Largest estimated training memory of one stacked MLP (parameters, gradients, Adam moments, a batch's
    activations) built from sizes the user gives (``--hidden``)."""


LIMITS = InputLimits()


class InputError(ValueError):
    """A file from someone else that cannot be used; the one-line message names it and the fix."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket"), (stat.S_ISDIR, "folder")):
        if test(mode):
            return name
    return "special file"


def check_file(path: str | Path, max_bytes: int, what: str = "", links: bool = True) -> os.stat_result:
    """The stat of ``path`` when it is a regular file of at most ``max_bytes``; else InputError naming it.

    ``links``: whether ``path`` may be a symbolic link (to a regular file): True for a path the user named, False
    for a file found inside a folder from someone else (teacher folders, fold manifests). A FIFO or device is
    refused before it is opened, so nothing hangs.
    """
    path = Path(path)
    at = f"{what} {path}" if what else str(path)
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            if not links:
                raise InputError(f"{at}: a symbolic link; files inside a folder from someone else are read only "
                                 "when they are regular files (replace the link with the file)")
            st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{at}: no such file") from None
    except OSError as e:
        raise InputError(f"{at}: cannot read it ({e.strerror or e})") from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{at}: a {_kind(st.st_mode)}, not a regular file; give a regular file")
    if st.st_size > max_bytes:
        raise InputError(f"{at}: {st.st_size} bytes, over the limit of {max_bytes} for this kind of file; "
                         "a damaged or hostile file (see docs/STORE.md, threat model)")
    return st


def read_bounded(path: str | Path, max_bytes: int, what: str = "", links: bool = True) -> bytes:
    """The bytes of a regular file of at most ``max_bytes`` (:func:`check_file`; a file growing meanwhile is read
    only to the limit plus one byte, then refused)."""
    check_file(path, max_bytes, what, links)
    at = f"{what} {path}" if what else str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if links else getattr(os, "O_NOFOLLOW", 0)))
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise InputError(f"{at}: cannot read it ({e.strerror or e})") from None
    if len(data) > max_bytes:
        raise InputError(f"{at}: over the limit of {max_bytes} bytes for this kind of file")
    return data


def json_depth(obj) -> int:
    """Nesting depth of parsed JSON (a scalar is 0), iteratively."""
    depth, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if isinstance(o, dict):
            o = list(o.values())
        if isinstance(o, list):
            depth = max(depth, d)
            stack.extend((v, d + 1) for v in o if isinstance(v, (dict, list)))
    return depth


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def parse_json(text: str | bytes, where: str, max_depth: int = LIMITS.json_depth):
    """Parsed JSON of ``text`` with NaN/Infinity literals refused and nesting bounded; InputError naming ``where``."""
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        obj = _DECODER.decode(text)
    except RecursionError:
        raise InputError(f"{where}: JSON nested too deeply to parse (limit {max_depth}); a damaged or hostile "
                         "file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"{where}: not valid JSON ({str(e).splitlines()[0][:200]})") from None
    depth = json_depth(obj) if text.count("[") + text.count("{") > max_depth else 0  # cheap bound first
    if depth > max_depth:
        raise InputError(f"{where}: JSON nested {depth} levels deep, over the limit of {max_depth}; a damaged or "
                         "hostile file")
    return obj


def load_json(path: str | Path, what: str = "", max_bytes: int = LIMITS.json_bytes,
              max_depth: int = LIMITS.json_depth, links: bool = True):
    """A JSON file through :func:`read_bounded` and :func:`parse_json`."""
    raw = read_bounded(path, max_bytes, what, links)
    return parse_json(raw, f"{what} {path}" if what else str(path), max_depth)


def finite_number(value) -> bool:
    """A JSON number (not a bool) that is finite (an integer within float range)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) < 1e308 if isinstance(value, int) else math.isfinite(value)


__all__ = ["LIMITS", "InputError", "InputLimits", "check_file", "finite_number", "json_depth", "load_json",
           "parse_json", "read_bounded"]
