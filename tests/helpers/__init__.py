"""Helpers the tests import (plain functions and classes; fixtures live in the conftest files).

- :mod:`tests.helpers.audio`: ``tone``, ``write_wav``, ``write_mp4``, ``write_jsonl``, ``emobox_line``.
- :mod:`tests.helpers.corpus`: ``Corpus`` and ``make_corpus_at`` (the synthetic demo corpus in a folder).
- :mod:`tests.helpers.cli`: ``EMOCACHE_BIN``, ``run_emocache`` (the console script in a subprocess) and
  ``run_measured`` (a CLI module in a subprocess, with its peak memory), ``run_emocache_peak`` (the same for
  ``emocache``).
- :mod:`tests.helpers.store`: ``edit`` (change a store's JSON metadata in place).
- :mod:`tests.helpers.scale`: helpers of the scale-out tests (child processes, bit-for-bit entry comparison).
"""
