"""Steps 3 and 4: deal each phase's documents to training shards, then pack every shard.

Scatter (one task per input shard, ``scatter_shard``): take the documents whose sampling bin lies in
the phase's segments (a document taken in two epochs is taken twice), give each copy a shuffle key
(``hash(seed, phase, epoch, id)``), and write them sorted by (training shard = key mod shards, key),
one Parquet row group per training shard, to ``scatter/<phase>/<unit>.parquet``.

Pack (one task per training shard, ``pack_shard``): read that shard's row group from every scatter
file (found by the ``shard`` column's row-group statistics), order the documents by key, append the
end-of-document id to each, concatenate and cut into rows of ``seq_len + 1`` tokens. The order depends
on ids and the seed alone, so the shards are the same for any number of workers or input shards.

Training shard schema (``shards/<phase>/part-NNNNN.parquet``):

- ``tokens``: fixed_size_list<uint16 | uint32>[seq_len + 1]
- ``n_tokens``: int32, the real tokens in the row: seq_len + 1 except on a shard's last row, which is
  padded with the pad id (never dropped, so no token is lost); the manifest counts the padding
- ``segment_starts``: list<int32>, where each document segment begins in the row; the first is
  always 0, and it continues the previous row's last document when the ids are equal
- ``segment_ids``: list<string>, the document id of each segment

Each document ends with one end-of-document id, inside its last segment. With ``megatron: true`` a
shard also gets ``part-NNNNN.bin``/``.idx`` in Megatron-LM's indexed-dataset format, one sequence
per document (its tokens and separator), in the same order.
"""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixture.hashing import shuffle_keys
from pipeline import storage
from pipeline.stats import Stats

SORT_KEYS = [("key", "ascending"), ("id", "ascending"), ("epoch", "ascending")]


@dataclass(frozen=True)
class ScatterTask:
    """One token file to deal into the training shards of every phase."""

    unit: str
    tokens_file: str
    directory: str
    step_hash: str
    seed: int
    # Per phase: {"name", "shards", "groups": [{"category", "lang" (None: all), "segments": [[epoch, lo, hi]]}]}
    phases: list


def scatter_path(directory: str, phase: str, unit: str) -> str:
    """Input shard ``unit``'s documents for ``phase``, grouped by training shard."""
    return storage.join(directory, phase, f"{unit}.parquet")


def scatter_receipt_path(directory: str, unit: str) -> str:
    """Written after every phase's scatter file of ``unit``."""
    return storage.join(directory, "_receipts", f"{unit}.json")


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
        storage.write_bytes(fs, path, _one_row_group_per_shard(selected))
        phases[phase["name"]] = {"documents": selected.num_rows}
    receipt = {"unit": task.unit, "step_hash": task.step_hash, "phases": phases,
               "seconds": round(time.perf_counter() - started, 4)}
    storage.write_json(fs, scatter_receipt_path(directory, task.unit), receipt)
    return receipt


def _deal(table: pa.Table, rows: np.ndarray, epochs: np.ndarray, seed: int, phase: dict) -> pa.Table:
    """The selected document copies with their shuffle key and training shard, sorted by both."""
    taken = table.take(pa.array(rows, pa.int64())).select(["id", "category", "lang", "n_tokens", "tokens"])
    ids = taken.column("id").to_pylist()
    keys = np.zeros(len(ids), np.uint64)
    for epoch in np.unique(epochs):
        copies = np.flatnonzero(epochs == epoch)
        keys[copies] = shuffle_keys(seed, phase["name"], int(epoch), [ids[i] for i in copies])
    shard = (keys % np.uint64(phase["shards"])).astype(np.int32)
    dealt = (taken.append_column("epoch", pa.array(epochs, pa.int32()))
             .append_column("key", pa.array(keys, pa.uint64()))
             .append_column("shard", pa.array(shard, pa.int32())))
    return dealt.sort_by([("shard", "ascending"), *SORT_KEYS])


def _one_row_group_per_shard(table: pa.Table) -> pa.Buffer:
    """Parquet bytes with one row group per training shard, so ``pack_shard`` reads only its own."""
    sink = pa.BufferOutputStream()
    with pq.ParquetWriter(sink, table.schema, compression="zstd") as writer:
        shards = table.column("shard").to_numpy()
        bounds = np.flatnonzero(np.diff(shards)) + 1
        starts, ends = np.concatenate([[0], bounds]), np.concatenate([bounds, [len(shards)]])
        for start, end in zip(starts.tolist(), ends.tolist()):
            if end > start:
                writer.write_table(table.slice(start, end - start), row_group_size=end - start)
    return sink.getvalue()


@dataclass(frozen=True)
class PackTask:
    """One training shard of one phase: its inputs (scatter files) and its output paths."""

    phase: str
    shard: int
    sources: list
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
    documents = _gather(task)
    width = task.seq_len + 1
    dtype = np.dtype(task.token_type)
    lengths = documents.column("n_tokens").to_numpy().astype(np.int64) + 1  # each with its separator
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(offsets[-1])
    stream = np.full(total, task.eod_id, dtype)
    body = np.ones(total, bool)
    body[offsets[1:] - 1] = False
    stream[body] = pc.list_flatten(documents.column("tokens")).to_numpy()
    rows = -(-total // width)
    padded = np.full(rows * width, task.pad_id, dtype)
    padded[:total] = stream
    fs, path = storage.resolve(task.path)
    table = _rows_table(padded.reshape(rows, width), total, offsets, documents.column("id"), task.token_type)
    storage.write_parquet(fs, path, table, row_group_size=task.rows_per_row_group)
    if task.megatron:
        write_megatron(fs, path[: -len(".parquet")], stream, offsets)
    receipt = {"phase": task.phase, "shard": task.shard, "step_hash": task.step_hash,
               "sequences": rows, "tokens": total, "pad_tokens": rows * width - total,
               "documents": documents.num_rows, "stats": _category_stats(documents, lengths),
               "seconds": round(time.perf_counter() - started, 4)}
    receipt_fs, receipt_path = storage.resolve(task.receipt)
    storage.write_json(receipt_fs, receipt_path, receipt)
    return receipt


def _gather(task: PackTask) -> pa.Table:
    """This shard's documents from every scatter file, in shuffled order."""
    columns = ["id", "category", "epoch", "key", "n_tokens", "tokens"]
    parts = []
    for source in task.sources:
        fs, path = storage.resolve(source)
        with fs.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            metadata = parquet.metadata
            index = [metadata.schema.column(i).path for i in range(metadata.num_columns)].index("shard")
            mine = [group for group in range(metadata.num_row_groups)
                    if _only_value(metadata.row_group(group).column(index).statistics) == task.shard]
            if mine:
                parts.append(parquet.read_row_groups(mine, columns=columns))
    if not parts:
        return pa.table({"id": pa.array([], pa.string()), "category": pa.array([], pa.string()),
                         "epoch": pa.array([], pa.int32()),
                         "key": pa.array([], pa.uint64()), "n_tokens": pa.array([], pa.int64()),
                         "tokens": pa.array([], pa.large_list(pa.from_numpy_dtype(np.dtype(task.token_type))))})
    return pa.concat_tables(parts).sort_by(SORT_KEYS)


def _category_stats(documents: pa.Table, lengths: np.ndarray) -> Stats:
    """Document copies and packed tokens (separators included) per category of one shard."""
    stats = Stats()
    grouped = pa.table({"category": documents.column("category"), "packed": pa.array(lengths, pa.int64())})
    for row in grouped.group_by("category").aggregate([("packed", "sum"), ("packed", "count")]).to_pylist():
        stats.add("by_category", row["category"], "documents", row["packed_count"])
        stats.add("by_category", row["category"], "tokens", row["packed_sum"])
    return stats


def _only_value(statistics) -> int:
    """The single value of a row group's column, from its statistics (scatter writes one per group)."""
    if statistics is None or not statistics.has_min_max or statistics.min != statistics.max:
        raise ValueError("scatter file without one training shard per row group")
    return statistics.min


def _rows_table(rows: np.ndarray, total: int, offsets: np.ndarray, ids: pa.ChunkedArray,
                token_type: str) -> pa.Table:
    """The training rows with their real lengths and document segments."""
    width = rows.shape[1]
    count = rows.shape[0]
    n_tokens = np.full(count, width, np.int32)
    if count:
        n_tokens[-1] = total - (count - 1) * width
    # A segment starts at every document start and at every row start (continuing a document).
    starts = np.union1d(offsets[:-1], np.arange(count, dtype=np.int64) * width)
    starts = starts[starts < total]
    document = np.searchsorted(offsets, starts, side="right") - 1
    row = starts // width
    list_offsets = np.searchsorted(row, np.arange(count + 1), side="left").astype(np.int32)
    token_values = pa.array(rows.reshape(-1), pa.from_numpy_dtype(np.dtype(token_type)))
    return pa.table({
        "tokens": pa.FixedSizeListArray.from_arrays(token_values, width),
        "n_tokens": pa.array(n_tokens, pa.int32()),
        "segment_starts": pa.ListArray.from_arrays(pa.array(list_offsets), pa.array((starts - row * width).astype(np.int32))),
        "segment_ids": pa.ListArray.from_arrays(pa.array(list_offsets), ids.combine_chunks().take(pa.array(document))),
    })


MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {"uint16": 8, "uint32": 4}  # Megatron has no uint32 code: int32 holds any vocab < 2^31


def write_megatron(fs, prefix: str, stream: np.ndarray, offsets: np.ndarray) -> None:
    """``prefix``.bin (the token stream) and ``prefix``.idx (Megatron-LM's MMIDIDX index, version 1):
    one sequence and one document per packed document; ``offsets`` are the documents' bounds in
    ``stream`` (n + 1 of them)."""
    data = stream if stream.dtype == np.uint16 else stream.astype(np.int32)
    code = MEGATRON_DTYPES[str(stream.dtype)]
    lengths = np.diff(offsets).astype(np.int32)
    pointers = offsets[:-1].astype(np.int64) * data.itemsize
    document_indices = np.arange(len(lengths) + 1, dtype=np.int64)
    index = b"".join([
        MEGATRON_HEADER, struct.pack("<Q", 1), struct.pack("<B", code),
        struct.pack("<Q", len(lengths)), struct.pack("<Q", len(document_indices)),
        lengths.tobytes(), pointers.tobytes(), document_indices.tobytes(),
    ])
    storage.write_bytes(fs, prefix + ".bin", data.tobytes())
    storage.write_bytes(fs, prefix + ".idx", index)
