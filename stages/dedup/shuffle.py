"""What every dedup task shares: the job description, steps, document numbers and shuffle files.

Documents are numbered ``shard_index << 32 | row``, which is corpus order. Shuffle files are written
sorted by their first column (a partition number or a document number) in row groups of at least
``MIN_GROUP_BYTES``, LZ4 without dictionaries like every scratch file here, and ``gather`` reads
from many of them only the row groups whose min/max statistics overlap the wanted range: a reduce
task reads its slice of every map output without a file per pair (above a size, dedup's own
exchanges go through a gather level instead: ``stages.dedup.exchange``). A task whose driver needs a
few numbers from it (counts for the summary, whether a round changed anything) writes them into its
output file's metadata (``write_sorted(counts=...)``, ``read_counts``), so the file and its counts
are committed by the same rename.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from pipeline.listing import Listing
from stages.dedup.config import DedupConfig
from stages.dedup.kept_reads import kept_file

DOC_BITS = 32
READ_BATCH_ROWS = 1000
# Directories whose contents depend on which documents are kept as cluster keepers: each keeper round
# (``stages.dedup.steps``) writes its own, ``<name>`` in round 0 and ``<name>-round<r>`` after.
ROUND_SCOPED = frozenset({"clusters", "cluster-components", "cluster-members", "cluster-keepers", "paragraphs",
                          "paragraph-removals", "successor-removals", "too-short-keepers", "short-successors"})
COUNTS_KEY = b"dedup_counts"
# Scratch files up to this size are read whole (``read_table``, ``read_range``): reading the bytes a
# reader does not need costs less than Parquet's read-ahead and threads up to about this size, and a
# remote file is then one request.
WHOLE_FILE_BYTES = 1 << 19
# Decoded bytes a row group of a sorted scratch file holds at least. A row group per target made
# map files of a few hundred rows with 60 row groups (footers larger than their rows, each parsed by
# every reader, and a column chunk per group to write); a target now may read rows of its neighbours
# and drops them. 32, 64, 128 and 256 kB were tried on dedup's exchanges at 4x corpus-dev: 64 kB read
# and wrote them in the least time.
MIN_GROUP_BYTES = 1 << 16


@dataclass(frozen=True)
class Job:
    """What every task of one prepare run needs; sent (pickled) with each task, so its size must not
    grow with the corpus (the shard lists travel as ``Listing``s)."""

    config: DedupConfig
    filesystem: Any
    scratch: str
    shards: Listing  # shard names, in corpus order
    inputs: Listing  # their Parquet paths
    bands: int
    rows: int
    round: int = 0  # keeper round: which copy of the ROUND_SCOPED directories tasks read and write
    run: str = ""  # this prepare run's own name (``make_job``): what a process's kept reads belong to

    def directory(self, directory: str) -> str:
        """``directory`` as this job's round names it (see ``ROUND_SCOPED``)."""
        return f"{directory}-round{self.round}" if self.round and directory in ROUND_SCOPED else directory

    def path(self, directory: str, name: int | str, suffix: str = "parquet") -> str:
        name = f"{name:05d}" if isinstance(name, int) else name
        return storage.join(self.scratch, self.directory(directory), f"{name}.{suffix}")

    def paths(self, directory: str, count: int) -> list[str]:
        return [self.path(directory, i) for i in range(count)]


@dataclass(frozen=True)
class Step:
    """One global step: ``fn((job, item))`` for each item whose ``output(item)`` does not exist yet.

    ``reads_text``: the step reads the input shards' text, seconds of work per item on real shards,
    so each item is a task of its own. The other steps read scratch files, a few milliseconds per
    item at small scale, and ``steps.run_step`` runs their items several to a task."""

    name: str
    fn: Callable
    items: tuple
    output: Callable[[Any], str]
    reads_text: bool = False


def shard_range(shard: int) -> tuple[int, int]:
    """The document numbers of a shard: ``low <= doc < high``."""
    return shard << DOC_BITS, (shard + 1) << DOC_BITS


def partition(keys: np.ndarray, job: Job) -> np.ndarray:
    return (keys % np.uint64(job.config.partitions)).astype(np.int32)


def node_partition(docs: np.ndarray, job: Job) -> np.ndarray:
    """The partition of document numbers, hashed first, so that no regularity of the numbers (the
    shard in the high bits, rows in order, a corpus that repeats every n-th document) can pile
    documents into one partition."""
    mixed = docs.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing; wraps mod 2**64
    return ((mixed >> np.uint64(32)) % np.uint64(job.config.partitions)).astype(np.int32)


def batches(job: Job, shard: int, wanted: list[str]) -> Iterator[tuple[np.ndarray, pa.Table]]:
    """(document numbers, table) for each batch of a shard, with those ``wanted`` columns it has."""
    with job.filesystem.open_input_file(job.inputs[shard]) as source:
        parquet = pq.ParquetFile(source)
        columns = [c for c in wanted if c in parquet.schema_arrow.names]
        row = 0
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
            yield shard_range(shard)[0] + row + np.arange(batch.num_rows, dtype=np.int64), \
                pa.Table.from_batches([batch])
            row += batch.num_rows


def write_sorted(job: Job, path: str, table: pa.Table, groups: int, counts: dict | None = None) -> None:
    """Write ``table`` sorted by its first column, in about ``groups`` row groups but none of less
    than ``MIN_GROUP_BYTES`` (a small file: one), with ``counts`` (JSON) in the file's metadata."""
    table = sorted_with_counts(table, counts)
    groups = max(1, min(groups, table.nbytes // MIN_GROUP_BYTES))
    size = max(1, math.ceil(table.num_rows / groups))
    write_row_groups(job, path, table, list(range(size, table.num_rows, size)))


def sorted_with_counts(table: pa.Table, counts: dict | None) -> pa.Table:
    """``table`` sorted by its first column, in one chunk, with ``counts`` (JSON) in its metadata."""
    table = table.sort_by([(table.column_names[0], "ascending")]).combine_chunks()
    if counts is not None:
        table = table.replace_schema_metadata({COUNTS_KEY: json.dumps(counts, sort_keys=True)})
    return table


def write_row_groups(job: Job, path: str, table: pa.Table, bounds: list[int]) -> None:
    """Write ``table`` as LZ4 Parquet without dictionaries, atomically, a row group starting at each
    of ``bounds``. Statistics go on the first column only: readers choose row groups by them, and
    those of the others (a signature's min and max: 1 kB) would grow the footer that every reader
    parses. These files are the exchanges' scratch, mostly hashes and document numbers, written and
    read once or twice: a dictionary tried on every column chunk, and zstd, cost more than the bytes
    they save (docs/performance-history.md)."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, compression="lz4", use_dictionary=False,
                          write_statistics=[table.column_names[0]]) as writer:
        for start, end in zip([0, *bounds], [*bounds, table.num_rows]):
            writer.write_table(table.slice(start, end - start), row_group_size=max(1, end - start))
    storage.write_bytes(job.filesystem, path, sink.getvalue())


def write_scratch(job: Job, path: str, table: pa.Table) -> None:
    """A scratch file that readers read whole (``read_table``), as ``write_row_groups`` writes them,
    in row groups of ``storage.ROW_GROUP_ROWS``."""
    write_row_groups(job, path, table, list(range(storage.ROW_GROUP_ROWS, table.num_rows, storage.ROW_GROUP_ROWS)))


def read_counts(job: Job, path: str) -> dict:
    """The ``counts`` that ``write_sorted`` put into ``path`` (its footer only is read)."""
    with job.filesystem.open_input_file(path) as source:
        return json.loads(pq.ParquetFile(source).metadata.metadata[COUNTS_KEY])


def overlapping_row_groups(parquet: pq.ParquetFile, low: int, high: int) -> list[int]:
    """The row groups of ``parquet`` whose first column may hold keys in ``[low, high)``."""
    groups = []
    metadata = parquet.metadata
    for group in range(metadata.num_row_groups):
        stats = metadata.row_group(group).column(0).statistics
        if stats is None or not stats.has_min_max or (stats.min < high and stats.max >= low):
            groups.append(group)
    return groups


def read_table(filesystem: Any, path: str, columns: list[str] | None = None) -> pa.Table:
    """``storage.read_parquet`` without the dataset layer, which costs more than reading a scratch
    file does (several times, on small ones)."""
    with filesystem.open_input_file(path) as source:
        parquet, small = _open_parquet(source)
        return parquet.read(columns=columns, use_threads=not small)


def _open_parquet(source: pa.NativeFile) -> tuple[pq.ParquetFile, bool]:
    """``source`` as Parquet, and whether it is small (``WHOLE_FILE_BYTES``): a small file is read
    whole and decoded on this thread."""
    if source.size() > WHOLE_FILE_BYTES:
        return pq.ParquetFile(source), False
    return pq.ParquetFile(pa.BufferReader(source.read_buffer()), pre_buffer=False), True


def read_range(job: Job, path: str, low: int, high: int) -> pa.Table:
    """Rows of ``path`` whose first column is in ``[low, high)``, reading only overlapping row groups
    (of this process's copy of the file, when it keeps one: ``stages.dedup.kept_reads``)."""
    kept = kept_file(job.filesystem, path, job.run, job.config.shuffle.read_cache_mb << 20)
    if kept is not None and (rows := kept.sorted_range(low, high)) is not None:
        return rows
    if kept is not None:
        groups = overlapping_row_groups(kept.parquet, low, high)
        table = kept.row_groups(groups) if groups else kept.parquet.schema_arrow.empty_table()
    else:
        with job.filesystem.open_input_file(path) as source:
            parquet, small = _open_parquet(source)
            groups = overlapping_row_groups(parquet, low, high)
            table = parquet.read_row_groups(groups, use_threads=not small) if groups \
                else parquet.schema_arrow.empty_table()
    # The mask in numpy, chunk by chunk as Arrow's kernels would cut it: a few times cheaper on the
    # small tables of one row group.
    keys = (chunk.to_numpy() for chunk in table.column(0).chunks)
    return table.filter(pa.chunked_array([pa.array((key >= low) & (key < high)) for key in keys], pa.bool_()))


def gather(job: Job, paths: list[str], low: int, high: int) -> pa.Table:
    """``read_range`` over many files, concatenated (without the files' ``counts``)."""
    return pa.concat_tables([read_range(job, path, low, high) for path in paths]).replace_schema_metadata(None)
