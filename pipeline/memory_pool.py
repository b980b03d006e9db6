"""Which allocator Arrow uses in the processes that run the pipeline: jemalloc where this pyarrow has it.

pyarrow's default pool is mimalloc, which gives freed memory back to the system within milliseconds
and, on a machine with transparent huge pages, takes it back as 2 MB pages that the kernel zeroes
on first touch. Every unit reads a shard into new buffers and writes its outputs from new ones, so
that cost recurs on every read and write: the quality stage over corpus-dev in one process took 65
such page faults with mimalloc and 15 with jemalloc. In process, on corpus-dev and on its 4x mixed
copy, each stage's units ran 4-17% faster with jemalloc, and each process peaked 50-90 MB lower
(``docs/performance-history.md``, seventeenth session). The choice changes no output byte.

``ARROW_DEFAULT_MEMORY_POOL``, Arrow's own setting (``jemalloc``, ``mimalloc`` or ``system``), wins when
set, so a machine where another allocator does better can say so without a code change. Builds of
pyarrow without jemalloc (Windows wheels) keep their default.
"""
from __future__ import annotations

import os

import pyarrow as pa

_chosen = False


def use_jemalloc() -> None:
    """Make jemalloc Arrow's default pool in this process, once, unless ``ARROW_DEFAULT_MEMORY_POOL``
    is set or pyarrow was built without it. Buffers allocated before stay in their own pool."""
    global _chosen
    if _chosen:
        return
    _chosen = True
    if os.environ.get("ARROW_DEFAULT_MEMORY_POOL"):
        return
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:  # "jemalloc support is not enabled"
        return
    pa.set_memory_pool(pool)
