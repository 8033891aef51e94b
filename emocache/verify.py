"""Integrity checks: every entry found, every committed block readable, checksums match, index consistent, no
orphans, complete.

Entries are listed twice, from the objects actually stored (every ``zarr.json``, each read through the guard, so a
refused codec anywhere is an error) and from the metadata readers use (consolidated metadata when the store has
it); a node outside the layout (an entry one group deeper), a node one listing has and the other lacks, or a node
whose consolidated metadata differs from its own ``zarr.json`` is a store problem. Each entry's index is read in
windows over its stored chunks, so memory stays bounded whatever an entry declares.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import zarr

from emocache.store import PENDING, Entry, Store, StoreError, block_name, index_problem
from emocache.store.layout import BLOCKS
from emocache.store.storage import get_bytes, metadata_keys, quiet_zarr

__all__ = ["EntryCheck", "StoreCheck", "index_problem", "layout_problems", "verify_entry", "verify_store"]

ENTRY_ARRAYS = ("keys", "labels", "pooled", "index", "layers")
"""The arrays an entry group holds (``layers`` only with ``--layers``)."""
MAX_LISTED = 10
"""Store problems of one kind printed before the rest are counted."""


@dataclass
class EntryCheck:
    model: str
    dataset: str
    blocks: int = 0
    committed: int = 0
    problems: dict[int, str] = field(default_factory=dict)
    """block -> what is wrong (redo these)."""
    orphans: list[str] = field(default_factory=list)
    """block groups written by an interrupted run and not committed (rewritten on resume)."""
    entry_problems: list[str] = field(default_factory=list)
    """damage outside the blocks (keys, labels): no redo fixes it; re-extract into a new store."""
    pending: int = 0
    """blocks not committed yet (an interrupted or partial extraction or merge)."""

    @property
    def bad_blocks(self) -> list[int]:
        return sorted(self.problems)

    @property
    def complete(self) -> bool:
        return self.pending == 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.entry_problems


@dataclass
class StoreCheck(Sequence):
    """The checks of every entry (a sequence of :class:`EntryCheck`) and the store's own problems."""

    entries: list[EntryCheck]
    problems: list[str] = field(default_factory=list)
    """Store-level damage: entries hidden outside the layout, listings that disagree, metadata that differs."""

    def __getitem__(self, i):
        return self.entries[i]

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ok(self) -> bool:
        return not self.problems and all(c.ok for c in self.entries)


def _index_blocks(entry: Entry, chk: EntryCheck) -> Iterator[tuple[int, np.ndarray]]:
    """(block, its index rows) for every block read from a stored index chunk, window by window; a block whose chunk
    is unreadable or holds impossible rows is recorded in ``chk.problems`` instead."""
    for run in entry.index_runs():
        try:
            rows = entry.index(entry.run_rows(run))
        except StoreError:
            rows = None
        for b in range(*run):
            sl = entry.block_slice(b)
            if rows is not None:
                first = entry.run_rows(run).start
                yield b, rows[sl.start - first:sl.stop - first]
                continue
            try:
                yield b, entry.index(sl)
            except StoreError as e:
                chk.problems[b] = f"index chunk unreadable ({e})"


def _check_block(entry: Entry, b: int, rows: np.ndarray, names: set[str]) -> None:
    """Raise on anything wrong with committed block ``b`` (index rows ``rows``)."""
    if not entry.chunk_exists(entry.pooled_array, (b, 0)):
        raise ValueError("pooled chunk missing")
    entry.block_pooled(b)  # NaN/inf refused unless the entry allows them
    if entry.layer_ids:
        if not entry.chunk_exists(entry.layers_array, (b, 0, 0)):
            raise ValueError("layers chunk missing")
        entry.block_layers(b)
    if block_name(b) not in names:
        raise ValueError("block group missing")
    F = entry.stored_frames(b) if entry.has_frames else None  # every chunk listed as stored
    problem = index_problem(rows, None if F is None else F.shape[0])
    if problem:
        raise ValueError(problem)
    for sl in F.windows() if F is not None else ():
        F[sl]  # read: every chunk checksum-verified, a window at a time
    entry.block_errors(b)


def verify_entry(entry: Entry) -> EntryCheck:
    """Read every chunk of every committed block (CRC32C-checked), the keys and labels, and check the index rows
    against the frames; say which blocks are damaged and whether every block is committed."""
    chk = EntryCheck(entry.model, entry.dataset, blocks=entry.n_blocks)
    for what in ("keys", "labels"):  # stored in full, keys unique (the readers' checks); labels need sound keys
        try:
            getattr(entry, what)
        except StoreError as e:
            chk.entry_problems.append(str(e))
            break
    names = entry.block_groups()
    committed: set[int] = set()
    for b, rows in _index_blocks(entry, chk):
        if (rows[:, 0] == PENDING).any():
            continue
        committed.add(b)
        try:
            _check_block(entry, b, rows, names)
        except Exception as e:
            chk.problems[b] = f"{type(e).__name__}: {e}"
    chk.committed = len(committed)
    chk.pending = entry.n_blocks - len(committed) - len(set(chk.problems) - committed)
    chk.orphans = sorted(nm for nm in names if int(nm[1:]) < entry.n_blocks and int(nm[1:]) not in committed
                         and int(nm[1:]) not in chk.problems)
    return chk


def _is_block(name: str) -> bool:
    return name.startswith("b") and name[1:].isdigit()


def _node_problem(path: str, meta: dict) -> str | None:
    """Why the node at ``path`` (metadata ``meta``) lies outside the store layout; None when it belongs."""
    parts = path.split("/")
    kind = meta.get("node_type")
    if len(parts) <= 2:  # a model group; an entry group (attribute n) or one whose creation has not finished
        return None if kind == "group" else f"an array where {'a model' if len(parts) == 1 else 'an entry'} group " \
                                            "belongs; a damaged or hostile store"
    rest = parts[2:]
    if (len(rest) == 1 and (rest[0] in ENTRY_ARRAYS and kind == "array" or rest[0] == BLOCKS and kind == "group")
            or len(rest) == 2 and rest[0] == BLOCKS and _is_block(rest[1]) and kind == "group"
            or len(rest) == 3 and rest[0] == BLOCKS and _is_block(rest[1]) and rest[2] == "frames"
            and kind == "array"):
        return None
    attrs = meta.get("attributes")
    if kind == "group" and isinstance(attrs, dict) and "n" in attrs:
        return ("an entry hidden outside the layout (entries are MODEL/DATASET), which readers do not list; a "
                "damaged or hostile store")
    return "a node outside the emocache layout, which readers never use; a damaged or hostile store"


def layout_problems(store: Store) -> tuple[list[str], list[tuple[str, str]]]:
    """Store problems and the entries (model, dataset) found from the stored objects: every ``zarr.json`` is listed
    (not taken from consolidated metadata) and read through the guard (size, nesting, codecs), checked against the
    layout and, when the root holds consolidated metadata, against it."""
    zs = store.zstore
    raw = get_bytes(zs, "zarr.json")
    root = json.loads(raw) if raw is not None else {}
    cons = root.get("consolidated_metadata") if isinstance(root, dict) else None
    listed = cons.get("metadata") if isinstance(cons, dict) else None
    listed = listed if isinstance(listed, dict) else None
    nodes: dict[str, dict] = {}
    for key in metadata_keys(zs):
        if key == "zarr.json":
            continue
        doc = get_bytes(zs, key)  # guarded: size, depth and codecs checked as it is read
        if doc is None:
            continue
        meta = json.loads(doc)
        nodes[key[:-len("/zarr.json")]] = meta if isinstance(meta, dict) else {}
    entries = {p for p, m in nodes.items() if len(p.split("/")) == 2 and m.get("node_type") == "group"
               and isinstance(m.get("attributes"), dict) and "n" in m["attributes"]}
    out: list[str] = []
    flagged: set[str] = set()
    for path in sorted(nodes):
        parts = path.split("/")
        if any("/".join(parts[:i]) in flagged for i in range(1, len(parts))):
            continue  # below a node already named
        why = _node_problem(path, nodes[path])
        if why:
            flagged.add(path)
            if len(flagged) <= MAX_LISTED:
                out.append(f"{store.url}/{path}: {why}")
    if len(flagged) > MAX_LISTED:
        out.append(f"{store.url}: {len(flagged) - MAX_LISTED} more node(s) outside the emocache layout")
    if listed is not None:
        only_tree = sorted(set(nodes) - set(listed))
        only_meta = sorted(set(listed) - set(nodes))
        differ = sorted(p for p in set(nodes) & set(listed)
                        if _comparable(nodes[p]) != _comparable(listed[p]))
        for paths, why in ((only_tree, "stored but missing from the consolidated metadata, so readers do not see "
                                       "it"),
                           (only_meta, "in the consolidated metadata but not stored"),
                           (differ, "its zarr.json differs from its consolidated metadata (readers use the latter)")):
            out += [f"{store.url}/{p}: {why}; re-pack the store with `emocache pack` (or run `emocache consolidate`)"
                    for p in paths[:MAX_LISTED]]
            if len(paths) > MAX_LISTED:
                out.append(f"{store.url}: {len(paths) - MAX_LISTED} more node(s) {why}")
    return out, [tuple(p.split("/")) for p in sorted(entries)]


def _comparable(meta) -> dict:
    """A node's metadata without the consolidated listing a group carries."""
    return {k: v for k, v in meta.items() if k != "consolidated_metadata"} if isinstance(meta, dict) else {}


def verify_store(store: Store) -> StoreCheck:
    """Every entry, found from the stored objects and from the metadata readers use, checked with
    :func:`verify_entry` (as stored, not as consolidated metadata describes it); store problems listed."""
    problems, tree = layout_problems(store)
    with quiet_zarr():
        root = zarr.open_group(store.zstore, mode="r", zarr_format=3, use_consolidated=False)
    checks = [verify_entry(Entry(root[f"{model}/{dataset}"], model, dataset, store.url)) for model, dataset in tree]
    return StoreCheck(checks, problems)
