"""Step 1, per input shard: tokenize every document once, count exactly, split long documents.

``count_shard`` writes ``tokens/<unit>.parquet`` (one row per piece of a document, in document and
piece order: id, piece, pieces, category, lang, bytes, n_tokens, bin, and tokens: the piece's ids as
one string of their little-endian bytes, ``mixture.packing.run_bytes``) and then its receipt
``tokens/_receipts/<unit>.json`` with exact document, piece, byte and token counts per category,
language and (category, language). Later steps read the token ids from here instead of tokenizing
again. ``sum_histograms`` folds the ``bin`` and ``n_tokens`` columns of several token files into
per-(category, language) histograms for the planner.

Why documents are split: phases take whole sampling bins, so a phase can miss a category's target by
up to the tokens of the bin it stops at. One 400 KB document alone in a bin would make that bin
~100,000 tokens, and a phase that must not overshoot stops before it. So a document longer than
``max_piece_tokens`` is cut into pieces (``piece`` 0 .. ``pieces`` - 1; a short document is one
piece, piece 0 of 1), and piece k goes to bin ``first + k`` (``mixture.hashing.first_bins``): no bin
holds more than one piece of a document, whatever the document sizes. Cuts fall after a newline token
when the last half of the window has one, else after a sentence end, else at the limit, so a piece is
between half and all of ``max_piece_tokens`` (the last one may be shorter). The cut is on the token
sequence itself: the pieces' tokens concatenate to exactly the document's tokens, and composition
counts are unchanged.

Pieces are a sampling unit, not a training unit: the planner takes bins in tape order, so a phase
takes a run of consecutive bins and with it every piece of a document lying in them, and scatter
(``mixture.packing``) joins the consecutive pieces of a document it is given back into one token
sequence, to which the packer (``mixture.pack``) appends one end-of-document id. A phase gets a document in part only where its range
of bins begins or ends inside that document's bins.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mixture.hashing import first_bins, piece_bins
from mixture.packing import run_bytes
from pipeline import storage
from pipeline.commit import Ledger
from pipeline.stats import Stats
from tokenizer import Tokenizer, load_tokenizer

UNKNOWN_LANG = "unknown"  # documents of a corpus that never went through langid
# Text per encode call: words repeat within it (each distinct one is encoded once), and the call's
# arrays (a few bytes per byte of text) stay small.
ENCODE_BYTES = 8 << 20
ROW_GROUP_ROWS = 512  # token-file rows per Parquet row group
HISTOGRAM_COLUMNS = ["category", "lang", "bin", "n_tokens", "piece", "pieces"]
# A piece may end after a token ending in one of these (when no newline token is near the limit).
SENTENCE_ENDS = tuple(".!?;。！？；…")


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
    max_piece_tokens: int


_TOKENIZERS: dict[str, Tokenizer] = {}
_BOUNDARIES: dict[str, "Boundaries"] = {}


def _tokenizer(task: CountTask) -> Tokenizer:
    """The tokenizer of this worker process, loaded once per model."""
    if task.tokenizer_sha256 not in _TOKENIZERS:
        _TOKENIZERS[task.tokenizer_sha256] = load_tokenizer(task.tokenizer_dir)
    return _TOKENIZERS[task.tokenizer_sha256]


@dataclass(frozen=True)
class Boundaries:
    """Per token id: whether a piece may end after it, and how many UTF-8 bytes it stands for."""

    line: np.ndarray  # bool: the token holds a newline
    sentence: np.ndarray  # bool: the token ends with sentence punctuation
    bytes: np.ndarray  # int64: the bytes it decodes to (identity normalization, byte fallback)


def boundaries(tokenizer: Tokenizer) -> Boundaries:
    """The ``Boundaries`` of a tokenizer's vocabulary, from its pieces' text."""
    processor = tokenizer.processor
    size = tokenizer.vocab_size
    line, sentence, width = np.zeros(size, bool), np.zeros(size, bool), np.zeros(size, np.int64)
    for token in range(size):
        if processor.is_control(token) or processor.is_unknown(token):
            continue
        if processor.is_byte(token):  # <0xXX>: one byte of a character outside the vocabulary
            width[token] = 1
            line[token] = processor.id_to_piece(token) == "<0x0A>"
            continue
        text = processor.id_to_piece(token).replace("\u2581", " ")
        width[token] = len(text.encode("utf-8"))
        line[token] = "\n" in text
        sentence[token] = text.rstrip(" ").endswith(SENTENCE_ENDS)
    return Boundaries(line, sentence, width)


def piece_ends(ids: np.ndarray, limit: int, marks: Boundaries) -> list[int]:
    """Where the pieces of a document with token ids ``ids`` end (exclusive offsets; the last is
    ``len(ids)``): one piece when it has at most ``limit`` tokens. Depends on the ids alone."""
    ends, start, total = [], 0, len(ids)
    while total - start > limit:
        low, high = start + limit // 2, start + limit  # a cut after token j, low <= j < high
        window = ids[low:high]
        cut = high
        for flags in (marks.line, marks.sentence):
            hits = np.flatnonzero(flags[window])
            if len(hits):
                cut = low + int(hits[-1]) + 1
                break
        ends.append(cut)
        start = cut
    ends.append(total)
    return ends


def token_type(vocab_size: int) -> pa.DataType:
    """uint16 when every id fits (a 65,536 vocabulary does), else uint32."""
    return pa.uint16() if vocab_size <= 1 << 16 else pa.uint32()


def token_path(directory: str, unit: str) -> str:
    """The token file of input shard ``unit``."""
    return storage.join(directory, f"{unit}.parquet")


def count_shard(task: CountTask) -> dict:
    """Tokenize one input shard, write its token file, then its receipt (the commit point)."""
    started = time.perf_counter()
    fs, directory = storage.resolve(task.directory)
    documents = _read_documents(task.source)
    tokenizer = _tokenizer(task)
    if task.tokenizer_sha256 not in _BOUNDARIES:  # 0.26 CPU-s for a 65,536 vocabulary: once per worker
        _BOUNDARIES[task.tokenizer_sha256] = boundaries(tokenizer)
    marks = _BOUNDARIES[task.tokenizer_sha256]
    ids_type = token_type(tokenizer.vocab_size)
    lang = (documents.column("lang").fill_null(UNKNOWN_LANG) if "lang" in documents.column_names
            else pa.array([UNKNOWN_LANG] * documents.num_rows, pa.string()))
    parts = []
    for start, stop in _batches(documents.column("text")):
        batch = documents.slice(start, stop - start)
        # On this thread: a task holds one CPU, and the executor runs one task per CPU.
        ids, offsets = tokenizer.encode_flat(batch.column("text").combine_chunks())
        parts.append(_rows(batch, lang.slice(start, stop - start), ids, offsets, marks, task, ids_type))
    table = pa.concat_tables(parts) if parts else empty_token_table()
    storage.write_parquet(fs, token_path(directory, task.unit), table, row_group_size=ROW_GROUP_ROWS)
    receipt = {
        "unit": task.unit, "input_fingerprint": task.fingerprint, "step_hash": task.step_hash,
        "documents": table.num_rows, "stats": count_stats(table),
        "seconds": round(time.perf_counter() - started, 4),
    }
    # last: the receipt's presence means the token file is complete
    Ledger(fs, storage.join(directory, "_receipts"), key="step_hash").commit(task.unit, receipt)
    return receipt


def _batches(texts: pa.ChunkedArray) -> list[tuple[int, int]]:
    """(start, stop) rows of consecutive documents holding about ``ENCODE_BYTES`` of text each."""
    sizes = pc.binary_length(texts).to_numpy().astype(np.int64)
    before = np.concatenate(([0], np.cumsum(sizes)))
    cuts, start = [], 0
    while start < len(sizes):
        stop = max(int(np.searchsorted(before, before[start] + ENCODE_BYTES, "right")) - 1, start + 1)
        cuts.append((start, stop))
        start = stop
    return cuts


def _rows(batch: pa.Table, lang: pa.Array, ids: np.ndarray, offsets: np.ndarray, marks: Boundaries,
          task: CountTask, ids_type: pa.DataType) -> pa.Table:
    """The token-file rows of one encoded batch (document ``i``'s ids are ``ids[offsets[i]:offsets[i + 1]]``,
    ``offsets[0]`` is 0):
    one per piece, a document's pieces consecutive and in order (one row for a document of at most
    ``max_piece_tokens``)."""
    text_bytes = pc.binary_length(batch.column("text")).cast(pa.int64()).to_pylist()
    source, pieces, counts, sizes, cuts = [], [], [], [], [0]
    for row, (begin, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
        if end - begin <= task.max_piece_tokens:
            source.append(row), pieces.append(0), counts.append(1), sizes.append(text_bytes[row]), cuts.append(end)
            continue
        ends = [begin + cut for cut in piece_ends(ids[begin:end], task.max_piece_tokens, marks)]
        for number, piece_end in enumerate(ends):
            source.append(row), pieces.append(number), counts.append(len(ends)), cuts.append(piece_end)
            sizes.append(int(marks.bytes[ids[cuts[-2]:piece_end]].sum()))
    rows = pa.array(source, pa.int64())
    doc_ids = batch.column("id").take(rows)
    piece = np.asarray(pieces, np.int64)
    first = first_bins(task.seed, doc_ids.to_pylist(), counts, task.bins)
    # The rows cover the batch's ids in order: the list offsets are the cuts.
    cut_offsets = np.asarray(cuts, np.int64)
    tokens = run_bytes(pa.LargeListArray.from_arrays(pa.array(cut_offsets), pa.array(ids).cast(ids_type)))
    return pa.table({
        "id": doc_ids,
        "piece": pa.array(pieces, pa.int32()),
        "pieces": pa.array(counts, pa.int32()),
        "category": batch.column("category").take(rows),
        "lang": lang.take(rows),
        "bytes": pa.array(sizes, pa.int64()),
        "n_tokens": pa.array(np.diff(cut_offsets), pa.int64()),
        "bin": pa.array(piece_bins(first, piece, task.bins)),
        "tokens": tokens,
    })


def _read_documents(source: str) -> pa.Table:
    """The columns counting needs (``meta`` and the stages' scores can be large and are not read)."""
    fs, path = storage.resolve(source)
    with fs.open_input_file(path) as handle:
        parquet = pq.ParquetFile(handle)
        wanted = [name for name in ("id", "text", "category", "lang") if name in parquet.schema_arrow.names]
        return parquet.read(columns=wanted)


def empty_token_table() -> pa.Table:
    """A token file without rows (an empty input shard), with the full schema."""
    return pa.table({
        "id": pa.array([], pa.string()), "piece": pa.array([], pa.int32()),
        "pieces": pa.array([], pa.int32()), "category": pa.array([], pa.string()),
        "lang": pa.array([], pa.string()), "bytes": pa.array([], pa.int64()),
        "n_tokens": pa.array([], pa.int64()), "bin": pa.array([], pa.int32()),
        "tokens": pa.array([], pa.large_binary()),
    })


def count_stats(table: pa.Table) -> Stats:
    """Documents, pieces, UTF-8 bytes and tokens per category, per language and per category/language.

    A split document counts once in ``documents`` (its piece 0) and once per piece in ``pieces``, the
    rows the planner and scatter see; a short document is one of each."""
    stats = Stats()
    if table.num_rows == 0:
        return stats
    group = pc.binary_join_element_wise(table.column("category"), table.column("lang"), "/")
    first = pc.equal(table.column("piece"), 0).cast(pa.int64())
    keyed = (table.select(["category", "lang", "bytes", "n_tokens"]).append_column("group", group)
             .append_column("first", first))
    for column, heading in (("category", "by_category"), ("lang", "by_lang"), ("group", "by_group")):
        aggregated = keyed.group_by(column).aggregate([("bytes", "sum"), ("n_tokens", "sum"), ("bytes", "count"),
                                                       ("first", "sum")])
        for row in aggregated.to_pylist():
            stats.add(heading, row[column], "documents", row["first_sum"])
            stats.add(heading, row[column], "pieces", row["bytes_count"])
            stats.add(heading, row[column], "bytes", row["bytes_sum"])
            stats.add(heading, row[column], "tokens", row["n_tokens_sum"])
    return stats


def sum_histograms(task: tuple[list[str], int]) -> dict[str, dict[str, np.ndarray]]:
    """Per ``category/lang``, summed over the token files ``task[0]`` with ``task[1]`` bins:

    - ``packed``: packed tokens per bin: each piece's tokens, plus one end-of-document id on the last
      piece of each document (a document's pieces, packed together, carry one separator);
    - ``crossings``: per bin j, the pieces in bin j - 1 (mod bins) whose next piece lies in bin j:
      the documents a phase cuts when its range of bins ends before bin j (each such cut ends a run
      of pieces with a separator of its own, which ``mixture.phases`` adds to the realised tokens).

    Reads six small columns only."""
    paths, bins = task
    packed_by_group: dict[str, np.ndarray] = {}
    crossings_by_group: dict[str, np.ndarray] = {}
    for path in paths:
        fs, local = storage.resolve(path)
        table = storage.read_parquet(fs, local, columns=HISTOGRAM_COLUMNS)
        if table.num_rows == 0:
            continue
        group = pc.binary_join_element_wise(table.column("category"), table.column("lang"), "/")
        last = table.column("piece").to_numpy() == table.column("pieces").to_numpy() - 1
        packed = table.column("n_tokens").to_numpy() + last
        bin_index = table.column("bin").to_numpy().astype(np.int64)
        for key in pc.unique(group).to_pylist():
            mask = pc.equal(group, key).to_numpy(zero_copy_only=False)
            counts = packed_by_group.setdefault(key, np.zeros(bins, np.int64))
            np.add.at(counts, bin_index[mask], packed[mask])  # integer sums: counts stay exact
            crossings = crossings_by_group.setdefault(key, np.zeros(bins, np.int64))
            np.add.at(crossings, (bin_index[mask & ~last] + 1) % bins, 1)
    return {"packed": packed_by_group, "crossings": crossings_by_group}
