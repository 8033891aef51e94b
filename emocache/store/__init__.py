"""The Zarr v3 feature store (layout and protocol documented in docs/STORE.md).

::

    <root>/                                   attrs {"emocache_format": 1}
      <model>/<dataset>/                      attrs: provenance, n, block_size, dim, frame_dim, has_frames
        keys     [N] string                   manifest keys, store order
        labels   [N] string                   raw manifest labels
        pooled   [N, D] float32               chunk = one block of utterances
        index    [N, 2] int64                 (offset, length) into the block's frames; the commit record,
                                              written last: -1 pending, -2 failed, >= 0 done
        blocks/b<000000>/                     one group per block, one writer each; attrs {"errors": {key: msg}}
          frames [sum T_i, D_frames]          float16 (float32 when a block's values overflow float16)

Crash-safety invariants (read before reordering any write):

1. **One chunk per block.** ``pooled`` and ``index`` are chunked by ``block_size`` rows, so every storage object
   has exactly one writer (the process running that block); there is no sharding.
2. **Index written last.** A block's group, frames and pooled chunk are written first; its ``index`` chunk is
   the commit record. A block is committed iff none of its index rows is -1; anything else is rewritten on resume.
3. **write_empty_chunks on** for frames and pooled, so an all-zero chunk is stored and ``verify`` can tell zeros
   from a lost chunk (zarr would otherwise read a missing chunk as its fill value).
4. **Half-created arrays replaced.** An array left by a creation that crashed before the entry's attributes were
   written is replaced when its spec differs; the entry exists only once its attributes are written (one write).
5. **Concurrent create_entry is safe.** Every creation step writes identical objects, so N processes creating
   the same entry end with one valid entry.
6. **Consolidated metadata dropped on write.** A writer opening the store removes it, so no reader sees a stale
   listing; ``emocache consolidate`` after the last writer.

Modules: :mod:`~emocache.store.layout` (names, numbers, index-row checks), :mod:`~emocache.store.validate`
(untrusted stores; every limit), :mod:`~emocache.store.storage` (backends: :data:`BACKENDS`, a scheme -> class
registry), :mod:`~emocache.store.guard` (the guarded store classes: checks on every object read or written),
:mod:`~emocache.store.strings` (keys and labels), :mod:`~emocache.store.entry` (reading an entry),
:mod:`~emocache.store.bulk` (whole-entry frame reads on threads), :mod:`~emocache.store.commit` (writing and
committing blocks), :mod:`~emocache.store.root` (the store, ``write_arrays`` and the Python API),
:mod:`~emocache.store.report` (``emocache info``), :mod:`~emocache.store.zarr_compat` (zarr's private API, only
there).
"""

from emocache.config import DEFAULT_BLOCK
from emocache.store.bulk import FrameSet
from emocache.store.entry import BlockCounts, Entry
from emocache.store.layout import (F16_MAX, FAILED, FORMAT, PENDING, BlockState, block_name, block_path, frames_end,
                                   index_problem, invalid_rows, overlapping_blocks)
from emocache.store.report import describe, dumps, entry_bytes
from emocache.store.root import Store, open_store, write_arrays
from emocache.store.storage import (BACKENDS, STORAGE_OPTIONS_ENV, is_remote, parse_storage_options,
                                    storage_options_for, zarr_store)
from emocache.store.validate import MAX_ROWS, SAFE_CODECS, Limits, StoreError, check_array

__all__ = ["BACKENDS", "DEFAULT_BLOCK", "F16_MAX", "FAILED", "FORMAT", "MAX_ROWS", "PENDING", "SAFE_CODECS",
           "STORAGE_OPTIONS_ENV", "BlockCounts", "BlockState", "Entry", "FrameSet", "Limits", "Store", "StoreError",
           "block_name", "block_path", "check_array", "describe", "dumps", "entry_bytes", "frames_end",
           "index_problem", "invalid_rows", "is_remote", "open_store", "overlapping_blocks", "parse_storage_options",
           "storage_options_for", "write_arrays", "zarr_store"]
