"""Step 1, per input shard: tokenize every document once and count exactly.

``count_shard`` writes ``tokens/<unit>.parquet`` (one row per document: id, category, lang, bytes,
n_tokens, bin, tokens) and then its receipt ``tokens/_receipts/<unit>.json`` with exact document,
byte and token counts per category, language and (category, language). Later steps read the token
ids from here instead of tokenizing again. ``sum_histograms`` folds the ``bin`` and ``n_tokens``
columns of several token files into per-(category, language) histograms for the phase planner.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixture.hashing import sampling_bins
from pipeline import storage
from pipeline.stats import Stats
from tokenizer import Tokenizer, load_tokenizer

UNKNOWN_LANG = "unknown"  # documents of a corpus that never went through langid
ENCODE_BATCH = 512  # documents per encode call: bounds the Python lists of ids alive at once
HISTOGRAM_COLUMNS = ["category", "lang", "bin", "n_tokens"]


@dataclass(frozen=True)
class CountTask:
    """One input shard to tokenize; ``directory`` is the step's output directory (path or URI)."""

    unit: str
    source: str
    fingerprint: str
    step_hash: str
    directory: str
    tokenizer_dir: str
    tokenizer_sha256: str
    seed: int
    bins: int


_TOKENIZERS: dict[str, Tokenizer] = {}


def _tokenizer(task: CountTask) -> Tokenizer:
    """The tokenizer of this worker process, loaded once per model."""
    if task.tokenizer_sha256 not in _TOKENIZERS:
        _TOKENIZERS[task.tokenizer_sha256] = load_tokenizer(task.tokenizer_dir)
    return _TOKENIZERS[task.tokenizer_sha256]


def token_type(vocab_size: int) -> pa.DataType:
    """uint16 when every id fits (a 65,536 vocabulary does), else uint32."""
    return pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()


def token_path(directory: str, unit: str) -> str:
    """The token file of input shard ``unit``."""
    return storage.join(directory, f"{unit}.parquet")


def receipt_path(directory: str, unit: str) -> str:
    """The receipt of input shard ``unit``: written last, its presence means the token file is complete."""
    return storage.join(directory, "_receipts", f"{unit}.json")


def count_shard(task: CountTask) -> dict:
    """Tokenize one input shard, write its token file, then its receipt (the commit point)."""
    started = time.perf_counter()
    fs, directory = storage.resolve(task.directory)
    documents = _read_documents(task.source)
    tokenizer = _tokenizer(task)
    ids_type = pa.large_list(token_type(tokenizer.vocab_size))
    lang = (documents.column("lang").fill_null(UNKNOWN_LANG) if "lang" in documents.column_names
            else pa.array([UNKNOWN_LANG] * documents.num_rows, pa.string()))
    parts = []
    for start in range(0, documents.num_rows, ENCODE_BATCH):
        batch = documents.slice(start, ENCODE_BATCH)
        # One thread: a task holds one CPU, and the executor runs one task per CPU.
        encoded = tokenizer.encode(batch.column("text").to_pylist(), num_threads=1)
        parts.append(pa.table({
            "id": batch.column("id"),
            "category": batch.column("category"),
            "lang": lang.slice(start, ENCODE_BATCH),
            "bytes": pc.binary_length(batch.column("text")).cast(pa.int64()),
            "n_tokens": pa.array([len(ids) for ids in encoded], pa.int64()),
            "bin": pa.array(sampling_bins(task.seed, batch.column("id").to_pylist(), task.bins)),
            "tokens": pa.array(encoded, ids_type),
        }))
    table = pa.concat_tables(parts) if parts else empty_token_table(ids_type)
    storage.write_parquet(fs, token_path(directory, task.unit), table, row_group_size=ENCODE_BATCH)
    receipt = {
        "unit": task.unit, "input_fingerprint": task.fingerprint, "step_hash": task.step_hash,
        "documents": table.num_rows, "stats": count_stats(table),
        "seconds": round(time.perf_counter() - started, 4),
    }
    storage.write_json(fs, receipt_path(directory, task.unit), receipt)
    return receipt


def _read_documents(source: str) -> pa.Table:
    """The columns counting needs (``meta`` and the stages' scores can be large and are not read)."""
    fs, path = storage.resolve(source)
    with fs.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        wanted = [name for name in ("id", "text", "category", "lang") if name in parquet.schema_arrow.names]
        return parquet.read(columns=wanted)


def empty_token_table(ids_type: pa.DataType) -> pa.Table:
    """A token file without rows (an empty input shard), with the full schema."""
    return pa.table({
        "id": pa.array([], pa.string()), "category": pa.array([], pa.string()),
        "lang": pa.array([], pa.string()), "bytes": pa.array([], pa.int64()),
        "n_tokens": pa.array([], pa.int64()), "bin": pa.array([], pa.int32()),
        "tokens": pa.array([], ids_type),
    })


def count_stats(table: pa.Table) -> Stats:
    """Documents, UTF-8 bytes and tokens per category, per language and per category/language."""
    stats = Stats()
    if table.num_rows == 0:
        return stats
    group = pc.binary_join_element_wise(table.column("category"), table.column("lang"), "/")
    keyed = table.select(["category", "lang", "bytes", "n_tokens"]).append_column("group", group)
    for column, heading in (("category", "by_category"), ("lang", "by_lang"), ("group", "by_group")):
        aggregated = keyed.group_by(column).aggregate([("bytes", "sum"), ("n_tokens", "sum"), ("bytes", "count")])
        for row in aggregated.to_pylist():
            stats.add(heading, row[column], "documents", row["bytes_count"])
            stats.add(heading, row[column], "bytes", row["bytes_sum"])
            stats.add(heading, row[column], "tokens", row["n_tokens_sum"])
    return stats


def sum_histograms(task: tuple[list[str], int]) -> dict[str, np.ndarray]:
    """Packed tokens (document tokens + 1 separator) per sampling bin, per ``category/lang``,
    summed over the token files ``task[0]`` with ``task[1]`` bins. Reads four small columns only."""
    paths, bins = task
    histograms: dict[str, np.ndarray] = {}
    for path in paths:
        fs, local = storage.resolve(path)
        table = storage.read_parquet(fs, local, columns=HISTOGRAM_COLUMNS)
        if table.num_rows == 0:
            continue
        group = pc.binary_join_element_wise(table.column("category"), table.column("lang"), "/")
        packed = table.column("n_tokens").to_numpy() + 1
        bin_index = table.column("bin").to_numpy()
        for key in pc.unique(group).to_pylist():
            mask = pc.equal(group, key).to_numpy(zero_copy_only=False)
            counts = histograms.setdefault(key, np.zeros(bins, np.int64))
            np.add.at(counts, bin_index[mask], packed[mask])  # integer sums: counts stay exact
    return histograms
