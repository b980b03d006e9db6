"""Step 4, one task per training shard (``pack_shard``): the shard's runs, in shuffled order, cut into
rows of ``seq_len + 1`` tokens (the schema is in ``mixture.packing``).

The task reads the shard's row group from every scatter file (found by the ``shard`` column's
row-group statistics) or, where its phase went through the gather level (``mixture.gather``), the one
file that gathered them in the same order; orders the runs by (key, id, first piece, epoch), appends
the end-of-document id to each, concatenates and cuts into rows. The order depends on ids and the seed
alone, so the shards are the same for any number of workers or input shards, with or without gathering.

Memory: the runs are read once, ``READ_RUNS`` at a time, and their token ids kept as one array per
batch (a shard's tokens: about ``sequences_per_shard`` x (seq_len + 1) ids, 205 MB of uint16 at
50,000 rows of 2,049); they are ordered by sorting their keys alone, and the rows are built and written
``CHUNK_TOKENS`` tokens at a time (``storage.ParquetStream``: the same bytes as one table written
whole), as is the Megatron .bin. So a task holds one copy of its shard's tokens plus a few row
groups (and up to ``PREBUFFER_BYTES`` of them compressed, as read), never the token stream, the
padded rows, the row table and the Parquet bytes of the whole shard at once.
"""
from __future__ import annotations

import contextlib
import posixpath
import struct
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixture.hashing import segment_labels
from mixture.packing import RUN_COLUMNS, SORT_KEYS, partial_runs, run_token_ids
from pipeline import storage
from pipeline.commit import Ledger
from pipeline.stats import Stats

CHUNK_TOKENS = 1 << 22  # tokens of runs turned into rows at a time: 8 MB of uint16, two row groups of 1,024 rows
READ_RUNS = 512  # runs decoded at a time
READ_BUFFER = 1 << 20  # bytes of a column chunk read at a time (unbuffered: the whole chunk)
PREBUFFER_BYTES = 1 << 24  # compressed bytes of row groups fetched and held at a time
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {"uint16": 8, "uint32": 4}  # Megatron has no uint32 code: int32 holds any vocab < 2^31


@dataclass(frozen=True)
class PackTask:
    """One training shard of one phase: its inputs and its output paths. ``sources``: every scatter
    file of the phase (a ``mixture.packing.ScatterFiles``), or the shard's gather file alone."""

    phase: str
    shard: int
    sources: Sequence[str]
    path: str
    receipt: str
    step_hash: str
    seq_len: int
    eod_id: int
    pad_id: int
    token_type: str
    rows_per_row_group: int
    megatron: bool


def pack_shard(task: PackTask) -> dict:
    """Pack one training shard (and its Megatron files); then write its receipt."""
    started = time.perf_counter()
    runs = _Runs(task)
    rows = _Rows(task.seq_len + 1, np.dtype(task.token_type), task.pad_id)
    fs, path = storage.resolve(task.path)
    stats, documents, partial, total = Stats(), 0, 0, 0
    with storage.ParquetStream(fs, path, task.rows_per_row_group) as parquet, \
            _megatron(fs, path[: -len(".parquet")], task) as megatron:
        for chunk, stream, lengths in runs.chunks(task.eod_id):
            labels = pa.array(segment_labels(*(chunk.column(name).to_pylist()
                                               for name in ("id", "first_piece", "last_piece", "pieces"))), pa.string())
            parquet.write(rows.add(stream, lengths, labels))
            parquet.flush()
            if megatron is not None:
                megatron.write(stream, lengths)
            stats.merge(_category_stats(chunk, lengths))
            documents, partial, total = documents + chunk.num_rows, partial + partial_runs(chunk), total + len(stream)
        parquet.write(rows.finish())
    receipt = {"phase": task.phase, "shard": task.shard, "step_hash": task.step_hash,
               "sequences": rows.count, "tokens": total, "pad_tokens": rows.count * rows.width - total,
               "documents": documents, "partial_documents": partial, "stats": stats,
               "seconds": round(time.perf_counter() - started, 4)}
    receipt_fs, receipt_path = storage.resolve(task.receipt)
    ledger = Ledger(receipt_fs, posixpath.dirname(receipt_path), key="step_hash")
    ledger.commit(posixpath.basename(receipt_path)[: -len(".json")], receipt)  # last: the shard's commit point
    return receipt


class _Runs:
    """A training shard's runs, read from every scatter file in batches of ``READ_RUNS``: their columns
    other than ``tokens`` in one table, their token ids as one array per batch with each run's offset
    in it, and the order of ``SORT_KEYS``, which a stable sort of the runs in file order gives (as
    sorting the concatenated table would)."""

    def __init__(self, task: PackTask):
        metadata, self.values, self.offsets = [], [], []
        for source in task.sources:
            for batch in _read_shard(source, task.shard):
                values, offsets = run_token_ids(batch.column("tokens"), np.dtype(task.token_type))
                # Copied out, so that the decoded batch is freed: holding every batch Parquet decoded
                # kept Arrow's allocator from reusing their pages (peak 775 MB against 530 for a task
                # of 50,000 rows, 206 MB of ids).
                self.values.append(values.copy())
                self.offsets.append(offsets)
                part = np.full(batch.num_rows, len(self.values) - 1, np.int32)
                metadata.append(pa.table(batch.drop_columns(["tokens"])).append_column("part", pa.array(part))
                                .append_column("row", pa.array(np.arange(batch.num_rows, dtype=np.int64))))
        self.table = pa.concat_tables(metadata).combine_chunks() if metadata else None
        self.order = pc.sort_indices(self.table, sort_keys=SORT_KEYS).to_numpy() if metadata else np.zeros(0, np.int64)

    def chunks(self, eod_id: int) -> Iterator[tuple[pa.Table, np.ndarray, np.ndarray]]:
        """In order, runs of about ``CHUNK_TOKENS`` tokens: their columns, their token stream (each
        run's ids and its end-of-document id) and each run's length in that stream."""
        if self.table is None:
            return
        lengths = self.table.column("n_tokens").to_numpy()[self.order] + 1
        ends = np.cumsum(lengths)
        start = 0
        while start < len(self.order):
            stop = max(int(np.searchsorted(ends, ends[start] - lengths[start] + CHUNK_TOKENS, "right")), start + 1)
            chunk = self.table.take(pa.array(self.order[start:stop]))
            yield chunk, self._stream(chunk, lengths[start:stop], eod_id), lengths[start:stop]
            start = stop

    def _stream(self, chunk: pa.Table, lengths: np.ndarray, eod_id: int) -> np.ndarray:
        stream = np.full(int(lengths.sum()), eod_id, self.values[0].dtype)
        position = 0
        for part, row, length in zip(chunk.column("part").to_numpy(), chunk.column("row").to_numpy(), lengths):
            begin = self.offsets[part][row]
            stream[position:position + length - 1] = self.values[part][begin:begin + length - 1]
            position += length
        return stream


def _read_shard(source: str, shard: int) -> Iterator[pa.RecordBatch]:
    """The runs of training shard ``shard`` in one scatter file (its own row groups), in batches: a
    row group decoded whole needs several times its size for a moment (Parquet's repetition and
    definition levels, ids decoded as int32), a batch as many times less."""
    fs, path = storage.resolve(source)
    with fs.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle, buffer_size=READ_BUFFER)
        ranges = row_group_shards(parquet.metadata)
        mine = [group for group, (first, last) in enumerate(ranges) if first <= shard <= last]
        if any(ranges[group] != (shard, shard) for group in mine):
            raise ValueError(f"{path}: a row group of several training shards (written for a gather level)")
        yield from read_row_groups(parquet, mine, RUN_COLUMNS)


def read_row_groups(parquet: pq.ParquetFile, groups: list[int], columns: list[str] | None = None
                    ) -> Iterator[pa.RecordBatch]:
    """Row groups ``groups`` of ``parquet`` (opened pre-buffering, pyarrow's default) in batches of
    ``READ_RUNS`` rows, fetched in spans of about ``PREBUFFER_BYTES`` compressed: a span's column
    chunks come in a few coalesced reads (adjacent row groups in one) and are held until its batches
    are decoded. Pre-buffering a 100 MB gather file whole held about 60 MB more in its pack task."""
    metadata = parquet.metadata
    span, size = [], 0
    for group in groups:
        row_group = metadata.row_group(group)
        compressed = sum(row_group.column(i).total_compressed_size for i in range(row_group.num_columns))
        if span and size + compressed > PREBUFFER_BYTES:
            yield from parquet.iter_batches(batch_size=READ_RUNS, row_groups=span, columns=columns)
            span, size = [], 0
        span.append(group)
        size += compressed
    if span:
        yield from parquet.iter_batches(batch_size=READ_RUNS, row_groups=span, columns=columns)


def row_group_shards(metadata: pq.FileMetaData) -> list[tuple[int, int]]:
    """The first and last training shard of each row group of a scatter or gather file, from the
    ``shard`` column's statistics. The column is found through a column chunk's path, not
    ``metadata.schema``: with pyarrow 26 touching that kept each file's parsed footer alive (3.5 MB per
    scatter file of 512 training shards, never freed), which grew a pack task that reads S scatter
    files by S times that."""
    if not metadata.num_row_groups:
        return []
    first = metadata.row_group(0)
    index = [first.column(i).path_in_schema for i in range(metadata.num_columns)].index("shard")
    return [_bounds(metadata.row_group(group).column(index).statistics) for group in range(metadata.num_row_groups)]


def _bounds(statistics) -> tuple[int, int]:
    if statistics is None or not statistics.has_min_max:
        raise ValueError("scatter or gather file without the statistics of its training shards")
    return statistics.min, statistics.max


class _Rows:
    """The packed rows of a token stream that arrives in pieces: ``add`` returns the rows completed
    (the rest waits, with the runs it belongs to), ``finish`` the last row, padded with ``pad_id``."""

    def __init__(self, width: int, dtype: np.dtype, pad_id: int):
        self.width, self.dtype, self.pad_id, self.count = width, dtype, pad_id, 0
        self.tail = np.zeros(0, dtype)
        self.tail_starts = np.zeros(0, np.int64)  # where the tail's runs start, relative to the tail
        self.tail_labels = pa.array([], pa.string())

    def add(self, stream: np.ndarray, lengths: np.ndarray, labels: pa.Array) -> pa.Table:
        tokens = np.concatenate([self.tail, stream])
        starts = np.concatenate([self.tail_starts, len(self.tail) + np.cumsum(lengths) - lengths])
        labels = pa.concat_arrays([self.tail_labels, labels])
        whole = len(tokens) // self.width * self.width
        table = self._table(tokens[:whole], whole, starts, labels)
        first = max(int(np.searchsorted(starts, whole, "right")) - 1, 0)  # the run the tail begins in
        self.tail, self.tail_starts, self.tail_labels = tokens[whole:], starts[first:] - whole, labels[first:]
        return table

    def finish(self) -> pa.Table:
        total = len(self.tail)
        padded = np.full(-(-total // self.width) * self.width, self.pad_id, self.dtype)
        padded[:total] = self.tail
        return self._table(padded, total, self.tail_starts, self.tail_labels)

    def _table(self, tokens: np.ndarray, total: int, run_starts: np.ndarray, labels: pa.Array) -> pa.Table:
        """Rows of ``tokens`` (a multiple of the width; ``total`` of them real) with their real
        lengths and segments; ``run_starts`` (the first may be negative: a run begun in an earlier
        row) and ``labels`` are the runs the tokens belong to."""
        width, count = self.width, len(tokens) // self.width
        n_tokens = np.full(count, width, np.int32)
        if count:
            n_tokens[-1] = total - (count - 1) * width
        # A segment starts at every document start and at every row start (continuing a document).
        starts = np.union1d(run_starts, np.arange(count, dtype=np.int64) * width)
        starts = starts[(starts >= 0) & (starts < total)]
        run = np.searchsorted(run_starts, starts, side="right") - 1
        row = starts // width
        list_offsets = np.searchsorted(row, np.arange(count + 1), side="left").astype(np.int32)
        self.count += count
        return pa.table({
            "tokens": pa.FixedSizeListArray.from_arrays(pa.array(tokens, pa.from_numpy_dtype(self.dtype)), width),
            "n_tokens": pa.array(n_tokens, pa.int32()),
            "segment_starts": pa.ListArray.from_arrays(pa.array(list_offsets),
                                                       pa.array((starts - row * width).astype(np.int32))),
            "segment_ids": pa.ListArray.from_arrays(pa.array(list_offsets), labels.take(pa.array(run))),
        })


def _category_stats(runs: pa.Table, lengths: np.ndarray) -> Stats:
    """Runs (document copies, whole or in part), runs in part and packed tokens (separators included)
    per category."""
    stats = Stats()
    whole = pc.and_(pc.equal(runs.column("first_piece"), 0),
                    pc.equal(runs.column("last_piece"), pc.subtract(runs.column("pieces"), 1)))
    grouped = pa.table({"category": runs.column("category"), "packed": pa.array(lengths, pa.int64()),
                        "partial": pc.invert(whole).cast(pa.int64())})
    for row in grouped.group_by("category").aggregate([("packed", "sum"), ("packed", "count"),
                                                       ("partial", "sum")]).to_pylist():
        stats.add("by_category", row["category"], "documents", row["packed_count"])
        stats.add("by_category", row["category"], "partial_documents", row["partial_sum"])
        stats.add("by_category", row["category"], "tokens", row["packed_sum"])
    return stats


@contextlib.contextmanager
def _megatron(fs, prefix: str, task: PackTask) -> Iterator["_Megatron | None"]:
    """A ``_Megatron`` writer when the task wants Megatron files, else None."""
    if not task.megatron:
        yield None
        return
    with storage.atomic_output(fs, prefix + ".bin") as sink:
        writer = _Megatron(sink, task.token_type)
        yield writer
    storage.write_bytes(fs, prefix + ".idx", writer.index())


class _Megatron:
    """``prefix``.bin (the token stream, written as it comes) and the bytes of ``prefix``.idx
    (Megatron-LM's MMIDIDX index, version 1): one sequence and one document per packed run."""

    def __init__(self, sink, token_type: str):
        self.sink, self.code, self.lengths = sink, MEGATRON_DTYPES[token_type], []
        self.dtype = np.dtype(np.uint16 if token_type == "uint16" else np.int32)

    def write(self, stream: np.ndarray, lengths: np.ndarray) -> None:
        self.sink.write(stream.astype(self.dtype, copy=False).tobytes())
        self.lengths.append(lengths.astype(np.int32))

    def index(self) -> bytes:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int32)
        pointers = (np.cumsum(lengths, dtype=np.int64) - lengths) * self.dtype.itemsize
        document_indices = np.arange(len(lengths) + 1, dtype=np.int64)
        return b"".join([
            MEGATRON_HEADER, struct.pack("<Q", 1), struct.pack("<B", self.code),
            struct.pack("<Q", len(lengths)), struct.pack("<Q", len(document_indices)),
            lengths.tobytes(), pointers.tobytes(), document_indices.tobytes(),
        ])
