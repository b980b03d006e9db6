"""Step 3: deal each phase's documents to training shards (step 4, packing them, is ``mixture.pack``).

Scatter (one task per input shard, ``scatter_shard``): take the pieces whose sampling bin lies in the
phase's segments (a piece taken in two epochs is taken twice), join the consecutive pieces of a
document taken in one epoch into one run (its tokens are that stretch of the document, exactly), give
each run the shuffle key of its document (``hash(seed, phase, epoch, id)``), and write the runs sorted
by (training shard = key mod shards, key, id, first piece) to ``scatter/<phase>/<unit>.parquet``, one
Parquet row group per training shard, or, for a phase that goes through the gather level, per gather
block of training shards (a footer lists every row group, and is parsed at every open: per training
shard it would grow with T, and be read S x T / B times). A document is one row of the input shard,
so all of its pieces are in the same scatter task. The files' ``tokens`` column holds each run's
token ids as one string of their bytes (``run_bytes``; gather files copy it as it is).

Pack (one task per training shard, ``mixture.pack.pack_shard``): read that shard's row group from
every scatter file (or, on a large corpus, the one file a gather task collected them into:
``mixture.gather``), order the runs by key, append the end-of-document id to each, concatenate and cut
into rows of ``seq_len + 1`` tokens, written as below.

Training shard schema (``shards/<phase>/part-NNNNN.parquet``):

- ``tokens``: fixed_size_list<uint16 | uint32>[seq_len + 1]
- ``n_tokens``: int32, the real tokens in the row: seq_len + 1 except on a shard's last row, which is
  padded with the pad id (never dropped, so no token is lost); the manifest counts the padding
- ``segment_starts``: list<int32>, where each document segment begins in the row; the first is
  always 0, and it continues the previous row's last document when the ids are equal
- ``segment_ids``: list<string>, the document id of each segment; ``<id>#<first>-<last>`` (pieces,
  0-based, inclusive; ``mixture.count``) for a run that is only part of a document: the phase's
  range of sampling bins began or ended inside it

Each run (a whole document, or the part of one a phase took) ends with exactly one end-of-document
id, inside its last segment, and has none inside it. ``documents`` in receipts, phases.json and the
manifest counts runs, i.e. end-of-document ids; ``partial_documents`` counts the runs that are only
part of a document. With ``megatron: true`` a shard also gets ``part-NNNNN.bin``/``.idx`` in
Megatron-LM's indexed-dataset format, one sequence per run (its tokens and separator), in the same
order.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixture.hashing import shuffle_keys
from pipeline import storage
from pipeline.commit import Ledger
from pipeline.listing import Listing

SORT_KEYS = [("key", "ascending"), ("id", "ascending"), ("first_piece", "ascending"), ("epoch", "ascending")]
RUN_COLUMNS = ["id", "first_piece", "last_piece", "pieces", "category", "epoch", "key", "n_tokens", "tokens"]


@dataclass(frozen=True)
class ScatterTask:
    """One token file to deal into the training shards of every phase."""

    unit: str
    tokens_file: str
    directory: str
    step_hash: str
    seed: int
    # Per phase: {"name", "shards", "block": training shards per row group (1 unless the phase is
    # gathered), "groups": [{"category", "lang" (None: all), "segments": [[epoch, lo, hi]]}]}
    phases: list


def scatter_path(directory: str, phase: str, unit: str) -> str:
    """Input shard ``unit``'s documents for ``phase``, grouped by training shard."""
    return storage.join(directory, phase, f"{unit}.parquet")


UNITS_FILE = "_units.json"


@dataclass(frozen=True)
class ScatterFiles:
    """One phase's scatter files, in input-shard order, as the tasks that read them all receive them:
    the names of the input shards travel as one file (a ``pipeline.listing.Listing``), so a task
    pickles to a few hundred bytes whatever the number S of input shards. A list of S paths in each
    of T pack tasks grew as S x T: 3 MB per task at the 5 TB plan of docs/scaling.md (39,000 s3://
    paths), 49 GB of task arguments over its 16,000 pack tasks."""

    directory: str
    phase: str
    units: Listing

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> str:
        return scatter_path(self.directory, self.phase, self.units[index])

    def __iter__(self) -> Iterator[str]:
        return (self[index] for index in range(len(self.units)))


def scatter_files(directory: str, phases: list[str], units: list[str]) -> dict[str, ScatterFiles]:
    """Every phase's ``ScatterFiles``; writes the list of input shards they share (``_units.json``)."""
    fs, path = storage.resolve(storage.join(directory, UNITS_FILE))
    listing = Listing(tuple(units), fs, path)
    return {phase: ScatterFiles(directory, phase, listing) for phase in phases}


def scatter_shard(task: ScatterTask) -> dict:
    """Write this input shard's share of every phase; then its receipt with per-phase counts."""
    started = time.perf_counter()
    fs, directory = storage.resolve(task.directory)
    tokens_fs, tokens_file = storage.resolve(task.tokens_file)
    table = storage.read_parquet(tokens_fs, tokens_file)
    category = table.column("category").to_numpy(zero_copy_only=False)
    lang = table.column("lang").to_numpy(zero_copy_only=False)
    bins = table.column("bin").to_numpy()
    phases = {}
    for phase in task.phases:
        rows, epochs = [], []
        for group in phase["groups"]:
            member = category == group["category"]
            if group["lang"] is not None:  # None: every language of the category
                member &= lang == group["lang"]
            for epoch, low, high in group["segments"]:
                taken = np.flatnonzero(member & (bins >= low) & (bins < high))
                rows.append(taken)
                epochs.append(np.full(len(taken), epoch, np.int32))
        selected = _deal(table, np.concatenate(rows or [[]]).astype(np.int64),
                         np.concatenate(epochs or [[]]).astype(np.int32), task.seed, phase)
        path = scatter_path(directory, phase["name"], task.unit)
        storage.write_bytes(fs, path, _row_group_per_block(selected, phase["block"]))
        phases[phase["name"]] = {"documents": selected.num_rows, "partial_documents": partial_runs(selected)}
    receipt = {"unit": task.unit, "step_hash": task.step_hash, "phases": phases,
               "seconds": round(time.perf_counter() - started, 4)}
    # last, after every phase's scatter file of the unit
    Ledger(fs, storage.join(directory, "_receipts"), key="step_hash").commit(task.unit, receipt)
    return receipt


def _deal(table: pa.Table, rows: np.ndarray, epochs: np.ndarray, seed: int, phase: dict) -> pa.Table:
    """The selected pieces joined into runs (consecutive pieces of one document in one epoch), with
    their document's shuffle key and training shard, sorted by both. The runs are ordered on their
    small columns first and their token ids copied once, in that order: a run's pieces are
    consecutive rows of the token file, so its ids (as ``run_bytes`` strings) are those rows',
    concatenated."""
    order = np.lexsort((rows, epochs))  # token files list a document's pieces consecutively, in order
    rows, epochs = rows[order], epochs[order]
    piece = table.column("piece").to_numpy()
    begins = np.ones(len(rows), bool)  # a run begins where the previous row is not its piece before
    begins[1:] = (epochs[1:] != epochs[:-1]) | (rows[1:] != rows[:-1] + 1) | (piece[rows[1:]] == 0)
    firsts = np.flatnonzero(begins)
    lasts = np.concatenate([firsts[1:] - 1, [len(rows) - 1]]).astype(np.int64) if len(rows) else firsts
    lengths = table.column("n_tokens").to_numpy()[rows]
    run_tokens = np.add.reduceat(lengths, firsts) if len(rows) else np.zeros(0, np.int64)
    heads = pa.array(rows[firsts], pa.int64())
    ids = table.column("id").take(heads)
    run_epochs = epochs[firsts]
    keys = np.zeros(len(firsts), np.uint64)
    id_list = ids.to_pylist()
    for epoch in np.unique(run_epochs):
        copies = np.flatnonzero(run_epochs == epoch)
        keys[copies] = shuffle_keys(seed, phase["name"], int(epoch), [id_list[i] for i in copies])
    shard = (keys % np.uint64(phase["shards"])).astype(np.int32)
    runs = pa.table({
        "id": ids,
        "first_piece": table.column("piece").take(heads),
        "last_piece": table.column("piece").take(pa.array(rows[lasts], pa.int64())),
        "pieces": table.column("pieces").take(heads),
        "category": table.column("category").take(heads),
        "epoch": pa.array(run_epochs, pa.int32()),
        "key": pa.array(keys, pa.uint64()),
        "n_tokens": pa.array(run_tokens, pa.int64()),
        "shard": pa.array(shard, pa.int32()),
    })
    ranking = pc.sort_indices(runs, sort_keys=[("shard", "ascending"), *SORT_KEYS])
    runs, ranked = runs.take(ranking), ranking.to_numpy()
    # The token-file rows of the sorted runs, each run's from its first to its last piece.
    pieces = (lasts - firsts + 1)[ranked]
    starts = np.cumsum(pieces) - pieces
    token_rows = np.repeat(rows[firsts][ranked] - starts, pieces) + np.arange(len(rows))
    taken = table.column("tokens").take(pa.array(token_rows, pa.int64())).combine_chunks()
    if len(taken):
        _, row_offsets, data = taken.buffers()
        ends = np.frombuffer(row_offsets, np.int64)[taken.offset: taken.offset + len(taken) + 1]
        # A run's bytes are its rows' bytes one after another: the taken rows' data, cut where runs begin.
        bounds = pa.py_buffer(ends[np.append(starts, len(token_rows))])
        tokens = pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(starts), [None, bounds, data])
    else:
        tokens = pa.array([], pa.large_binary())
    return runs.add_column(runs.column_names.index("shard"), "tokens", tokens)


def partial_runs(runs: pa.Table) -> int:
    """Runs that are not a whole document."""
    whole = pc.and_(pc.equal(runs.column("first_piece"), 0),
                    pc.equal(runs.column("last_piece"), pc.subtract(runs.column("pieces"), 1)))
    return runs.num_rows - pc.sum(whole.cast(pa.int64())).as_py() if runs.num_rows else 0


def _row_group_per_block(table: pa.Table, block: int) -> pa.Buffer:
    """Parquet bytes with one row group per ``block`` consecutive training shards (the runs are sorted
    by shard), so that ``pack_shard`` (block 1) or ``gather_block`` reads only its own."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
        blocks = table.column("shard").to_numpy() // block
        bounds = np.flatnonzero(np.diff(blocks)) + 1
        starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(blocks)]])
        for start, end in zip(starts.tolist(), ends.tolist()):
            if end > start:
                writer.write_table(table.slice(start, end - start), row_group_size=end - start)
    return sink.getvalue()


def run_bytes(tokens: pa.Array | pa.ChunkedArray) -> pa.LargeBinaryArray:
    """Lists of token ids (a large_list of uint16 or uint32: a run's, or a piece's in the token
    files), each as the string of its ids' little-endian bytes: the same buffers, not copied on a
    little-endian machine. Parquet encodes a list column with levels per token id, a string column
    with one length per list: on corpus-dev's dealt tokens this writes 2.8x and reads 1.9x as fast,
    in 11% fewer bytes (``run_token_ids`` reads them back)."""
    if isinstance(tokens, pa.ChunkedArray):
        tokens = tokens.combine_chunks()
    values = tokens.values.to_numpy()
    values = values.astype(values.dtype.newbyteorder("<"), copy=False)
    offsets = tokens.offsets.to_numpy() * values.itemsize
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(tokens),
                                            [None, pa.py_buffer(offsets), pa.py_buffer(values)])


def run_token_ids(column: pa.LargeBinaryArray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """The token ids of the runs of ``run_bytes`` (ids of ``dtype``), without a copy: all of them in
    one array, and where each run begins in it (one offset more than runs, the last its end)."""
    dtype = np.dtype(dtype).newbyteorder("<")
    _, offsets, data = column.buffers()
    starts = np.frombuffer(offsets, np.int64)[column.offset: column.offset + len(column) + 1] // dtype.itemsize
    return (np.frombuffer(data, dtype) if data is not None else np.zeros(0, dtype)), starts
