"""The one place emocache touches zarr's private API (checked against zarr 3.1.6).

zarr's stores are asynchronous and offer no public way to await one of their coroutines from synchronous code on
zarr's own event loop (the loop an fsspec filesystem such as s3fs is bound to; ``asyncio.run`` would start another
loop and break it). Everything else emocache uses from zarr is public (``zarr.buffer``, ``zarr.abc.store``,
``zarr.storage``, ``zarr.codecs``, array metadata via ``to_dict()``). When a zarr upgrade moves what is used here,
``tests/emocache/store/test_zarr_compat.py`` fails with this module's name.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar

import zarr

CHECKED_VERSION = "3.1.6"
"""The zarr release whose private API this module was checked against."""

try:
    from zarr.core.sync import sync as _zarr_sync
except ImportError as e:  # pragma: no cover - only on a zarr that moved it
    raise ImportError(f"emocache needs zarr.core.sync.sync (checked against zarr {CHECKED_VERSION}; this is zarr "
                      f"{zarr.__version__}): update emocache/store/zarr_compat.py ({e})") from None

T = TypeVar("T")


def sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine of a zarr store (``get``, ``exists``, ...) on zarr's event loop and return its result."""
    return _zarr_sync(coro)


async def _collect(items: AsyncIterator[str], keep: Callable[[str], bool] | None) -> list[str]:
    return [k async for k in items if keep is None or keep(k)]


def collect(items: AsyncIterator[str], keep: Callable[[str], bool] | None = None) -> list[str]:
    """The keys an async listing (``list``, ``list_prefix``, ``list_dir``) yields, only those ``keep`` accepts
    (filtered while listing, so a large store's keys are never all held at once)."""
    return sync(_collect(items, keep))
