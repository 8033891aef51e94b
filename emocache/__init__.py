"""emocache: frozen speech-encoder features for speech emotion recognition, cached in Zarr stores."""

from emocache.store import Store, StoreError, open_store, write_arrays

__version__ = "0.1.0"
__all__ = ["Store", "StoreError", "open_store", "write_arrays", "__version__"]
