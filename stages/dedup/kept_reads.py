"""What a worker process keeps of the scratch files it read, for the exchange reads that come back to them.

Every target of an exchange reads its slice of every file the step before wrote (``shuffle.gather``):
on corpus-dev at 4x (60 shards, 15 partitions) a dedup run makes 12,150 such reads of 450 files, each
file read by 15 or 60 targets, most of them in the same few processes. A process that reads a file
again finds it here: its bytes with the footer parsed, and for a file of one row group (every target
reads all of it) the decoded rows as well. A repeat read then costs the row-group choice and the
filter, not the open, the footer, the I/O and, for a small file, the decoding; in a one-group file
sorted by its first column (what ``shuffle.write_sorted`` writes), a binary search and a slice. The
rows are the ones a fresh read returns, in the same chunks.

Why keeping them is safe: within one prepare run a scratch path's bytes never change. Each file is
written once, by an atomic rename, by a step that ends before any step that reads it starts; an item
whose output exists is skipped; a retried task writes the same rows again; each keeper round writes
its own copies (``shuffle.ROUND_SCOPED``). Entries belong to the prepare run that read them
(``Job.run``, new in every ``steps.make_job``), and a process forgets an earlier run's entries when
it first reads for a new one, so a rerun over the same scratch directory (a resume, ``--force``)
never sees the bytes of the run before.

Bounded by ``ShuffleConfig.read_cache_mb`` per process. A file that does not fit first evicts the
files of other directories (their steps are over), least recently read first; if it still does not fit it is read
as before and not kept, so a step whose files exceed the bound keeps a fixed part of them rather than
evicting each file just before its next read. Tasks in one process run one at a time (Ray runs one
task per worker process; the in-process executor, one after another), so nothing here is locked.
"""
from __future__ import annotations

import posixpath
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


@dataclass
class KeptFile:
    """One scratch file as a reader needs it again: parsed, in memory."""

    parquet: pq.ParquetFile
    nbytes: int  # what keeping it costs: its bytes, and the decoded rows of a one-group file
    rows: pa.Table | None = None  # a one-group file's rows, as ``read_row_groups([0])`` returns them
    keys: np.ndarray | None = None  # ``rows``' first column (signed integers) where one chunk in ascending order

    def sorted_range(self, low: int, high: int) -> pa.Table | None:
        """The rows whose first column is in ``[low, high)``, as a slice of ``rows`` (the one chunk a
        filter of them would give), or None where the file is not one sorted chunk."""
        if self.keys is None or not _INT64_MIN <= low <= high <= _INT64_MAX:
            return None
        start, end = np.searchsorted(self.keys, np.array([low, high], np.int64)).tolist()
        return self.rows.slice(start, end - start)

    def row_groups(self, groups: list[int]) -> pa.Table:
        if self.rows is not None and groups == [0]:
            return self.rows
        return self.parquet.read_row_groups(groups, use_threads=False)


@dataclass
class _Kept:
    run: str = ""
    files: OrderedDict[str, KeptFile] = field(default_factory=OrderedDict)  # least recently read first
    nbytes: int = 0

    def forget(self, path: str) -> None:
        self.nbytes -= self.files.pop(path).nbytes

    def make_room(self, path: str, nbytes: int, limit: int) -> bool:
        """Evict other directories' files, least recently read first, until ``nbytes`` more fit under
        ``limit``; whether they fit."""
        if self.nbytes + nbytes <= limit:
            return True
        directory = posixpath.dirname(path)
        for other in [p for p in self.files if posixpath.dirname(p) != directory]:
            if self.nbytes + nbytes <= limit:
                break
            self.forget(other)
        return self.nbytes + nbytes <= limit


_KEPT = _Kept()
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def kept_file(filesystem: Any, path: str, run: str, limit_bytes: int) -> KeptFile | None:
    """``path`` from this process's kept files, or read and kept there; None when the job keeps
    nothing (no ``run``, or a limit of 0) or the file does not fit (the caller reads it as before)."""
    if not run or limit_bytes <= 0:
        return None
    if _KEPT.run != run:
        _KEPT.files.clear()
        _KEPT.run, _KEPT.nbytes = run, 0
    found = _KEPT.files.get(path)
    if found is not None:
        _KEPT.files.move_to_end(path)
        return found
    with filesystem.open_input_file(path) as source:
        if not _KEPT.make_room(path, source.size(), limit_bytes):
            return None
        data = source.read_buffer()
    parquet = pq.ParquetFile(pa.BufferReader(data), pre_buffer=False)
    kept = KeptFile(parquet, data.size)
    if parquet.metadata.num_row_groups == 1:
        kept.rows = parquet.read_row_groups([0], use_threads=False)
        kept.nbytes += kept.rows.nbytes
        first = kept.rows.column(0)
        if first.num_chunks == 1 and first.null_count == 0 and pa.types.is_signed_integer(first.type):
            keys = first.chunk(0).to_numpy().astype(np.int64, copy=False)  # compared with Python ints
            kept.keys = keys if bool(np.all(keys[1:] >= keys[:-1])) else None
    if _KEPT.make_room(path, kept.nbytes, limit_bytes):  # else read once, for this caller only
        _KEPT.files[path] = kept
        _KEPT.nbytes += kept.nbytes
    return kept
