"""Parquet: one record per row, read in batches of 1,000 rows (fewer where rows are large:
``_batch_rows``); a file that cannot be decoded keeps
the rows read before and quarantines the rest as one ``corrupt_file`` row. With ``html_field`` or
``url_filter``, rows go through ``stages.readers.web.add_record``. Otherwise a string text column (or
a binary one, read as UTF-8 strings) is checked as a whole (``stages.ingest.TextRef.checks``: the
same reasons ``text_problem`` gives a Python string) and its texts go into the shards as Arrow data,
never decoded into Python strings; the rows' ids, meta JSON and categories are then built a column
at a time (``_prepared``, unless the input has a ``lang_field``) and filed by ``Records.add_rows``,
which decides each row as ``Records.add`` would.

A file larger than a unit is cut (``split``) into pieces of about the target's text (the text
column's uncompressed bytes), each a unit of its own: at row-group boundaries, and a row group of
more than one and a half targets (a file of one group: ``pq.write_table`` puts up to a million rows
in one) into parts by row count. A piece's rows keep their numbers in the whole file, so ids and
``_ingest.row`` do not depend on how the file was cut. The footer also tells the source stage how
much text a unit holds (``text_bytes``), so it cuts shards of even size."""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.readers import TEXT_BYTES_FILES, InputFile, PieceIndex, Reader, record_id, record_ids, record_meta
from pipeline.storage import resolve
from stages.readers.jsonl import OPTIONS
from stages.ingest import PreparedRows, TextRef, meta_json_rows, record_category
from stages.readers.web import add_record, url_filter


def _read_parquet(item: InputFile, records) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    first_group, end_group, row, skip, take = item.piece if item.piece is not None else (0, None, 0, 0, None)
    with fs.open_input_file(item.path) as source:
        try:
            parquet = pq.ParquetFile(source, metadata=_footer_of(item))
            groups = range(first_group, parquet.num_row_groups if end_group is None else end_group)
            names = parquet.schema_arrow.names
            key = "html_field" if item.source.html_field else "text_field"
            column = getattr(item.source, key)
            if column not in names:
                raise InputError(f"{item.path}: no column {column!r} (the {key} of source {item.source.name!r}); columns are {names}")
            if item.before is not None:  # the ids of earlier pieces that some row here holds too
                records.seen_before(item.before.seen)
            # A plain text column goes into the shards as Arrow data (``stages.ingest.TextRef``); HTML
            # to extract, a URL list or a text column of another type needs each record in Python.
            as_string = None if item.source.html_field else _STRING_VIEWS.get(parquet.schema_arrow.field(column).type)
            columnar = (as_string is not None and url_filter(item.source) is None and column != item.source.id_field)
            batches = parquet.iter_batches(batch_size=_batch_rows(parquet.metadata, groups), row_groups=groups)
            for record_batch in _rows(batches, skip, take):
                texts = record_batch.column(column).view(as_string) if columnar else None
                checks = TextRef.checks(texts) if columnar else None
                if checks is None:
                    for record in record_batch.to_pylist():
                        row += 1
                        text = record.get(column)
                        if isinstance(text, bytes) and not item.source.html_field:
                            raw = text.decode("utf-8", "replace")
                            # bytes that are not UTF-8 become lone surrogates, which ``text_problem`` calls invalid_utf8
                            record[column] = text.decode("utf-8", "surrogateescape")
                        else:
                            raw = text if isinstance(text, str) else json.dumps(record, default=str, ensure_ascii=False)
                        add_record(item, records, record, f"row {row}", "row", row, raw)
                        yield
                    continue
                prepared = None if item.source.lang_field else _prepared(item, record_batch, texts, checks, row + 1)
                if prepared is not None:
                    start = 0
                    while start < record_batch.num_rows:
                        start = records.add_rows(prepared, start)
                        yield
                    row += record_batch.num_rows
                    continue
                for index, record in enumerate(record_batch.drop_columns([column]).to_pylist()):
                    row += 1
                    where = f"row {row}"
                    records.add(record_id(item, record, where), TextRef(texts, index), record_meta(item, record, "row", row),
                                where, functools.partial(_raw, record_batch, column, index), checks[index])
                    yield
        except (pa.ArrowInvalid, OSError) as error:
            if not _undecodable(fs, error):
                raise
            meta = {"_ingest": {"file": item.relative, "row": row + 1},
                    "error": f"unreadable from row {row + 1}: {type(error).__name__}: {error}"}
            records.reject("corrupt_file", "", meta, f"row {row + 1}")
            yield


def _prepared(item: InputFile, batch: pa.RecordBatch, texts: pa.Array, checks: list, first: int) -> PreparedRows | None:
    """The batch's rows as columns for ``Records.add_rows``: what ``record_id`` and ``record_meta``
    give each row, without a Python dict per row (those were most of ingest's time). None where
    the columns do not make one dict per row (``meta_json_rows``)."""
    source, names = item.source, batch.schema.names
    skip = {source.text_field, source.id_field}
    metas = meta_json_rows(item, batch, skip, "row", first)
    if metas is None or source.category_field == "_ingest":  # that field is the record's origin in meta
        return None
    if source.id_field is None:
        ids = [record_id(item, {}, f"row {row}") for row in range(first, first + batch.num_rows)]
    elif source.id_field in names:
        ids = record_ids(item, batch.column(source.id_field).to_pylist())
    else:
        ids = [None] * batch.num_rows
    field = source.category_field
    if field and field not in skip and field in names:
        categories = [record_category(source, value) for value in batch.column(field).to_pylist()]
    else:
        categories = [source.category] * batch.num_rows
    return PreparedRows(ids, texts, checks, metas, categories, first,
                        functools.partial(_raw, batch, source.text_field))


BATCH_BYTES = 32_000_000  # about the most a batch holds uncompressed: rows of 1 MB are read 32 at a time


def _batch_rows(metadata: pq.FileMetaData, groups: range) -> int:
    """Rows per batch: 1,000, or fewer where the widest group's rows average more than
    ``BATCH_BYTES`` / 1,000 uncompressed (a page's HTML beside its text: batches of 1,000 such rows
    of 1 MB made a task of 7.6 GB). Records are filed one by one, so the batches do not change
    the output."""
    widest = max((metadata.row_group(group).total_byte_size / max(1, metadata.row_group(group).num_rows)
                  for group in groups), default=0)
    return max(1, min(1000, int(BATCH_BYTES // max(1, widest))))


def _rows(batches: Iterator[pa.RecordBatch], skip: int, take: int | None) -> Iterator[pa.RecordBatch]:
    """The rows of ``batches`` less the first ``skip``, at most ``take`` of them (None: all). pyarrow
    cannot start a row group in the middle, so a piece that does decodes the rows it skips."""
    for batch in batches:
        if skip >= batch.num_rows:
            skip -= batch.num_rows
            continue
        batch, skip = batch.slice(skip), 0
        if take is not None:
            batch, take = batch.slice(0, take), take - min(take, batch.num_rows)
        if batch.num_rows:
            yield batch
        if take == 0:
            return


def _index(item: InputFile, config) -> PieceIndex:
    """A piece's row count and the ids of its rows (the id column alone), for the pass before the
    pieces are read (``stages.ingest_pieces``): a piece then holds as seen only the ids of earlier
    pieces that it holds too, instead of reading every earlier piece's ids itself. Where the file
    cannot be decoded, the ids read before the damage, which is where the piece's read stops too."""
    first_group, end_group, _, skip, take = item.piece
    metadata = _footer_of(item)  # read, or the file would not have been cut
    rows = sum(metadata.row_group(group).num_rows for group in range(first_group, end_group)) - skip
    rows = rows if take is None else min(rows, take)
    fs, _ = resolve(item.source.path)
    ids: list[str] = []
    with fs.open_input_file(item.path) as source:
        try:
            parquet = pq.ParquetFile(source, metadata=metadata)
            if item.source.id_field in parquet.schema_arrow.names:
                batches = parquet.iter_batches(batch_size=10_000, row_groups=range(first_group, end_group),
                                               columns=[item.source.id_field])
                for batch in _rows(batches, skip, take):
                    ids.extend(doc_id for doc_id in record_ids(item, batch.column(0).to_pylist()) if doc_id is not None)
        except (pa.ArrowInvalid, OSError) as error:
            if not _undecodable(fs, error):
                raise
    return PieceIndex(rows, ids)


# A text column of these types goes into the shards as Arrow strings: binary ones (Parquet byte
# arrays without the UTF-8 annotation, as some writers leave text) are read as strings, and the
# check of the whole column (``TextRef.checks``) finds the rows that are not UTF-8.
_STRING_VIEWS = {pa.string(): pa.string(), pa.large_string(): pa.large_string(),
                 pa.binary(): pa.string(), pa.large_binary(): pa.large_string()}


def _raw(batch: pa.RecordBatch, column: str, index: int) -> str:
    """A quarantined row as the removed side shows it: its text, or without one the whole record as JSON."""
    text = batch.column(column)[index].as_py()
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return text if isinstance(text, str) else json.dumps(batch.slice(index, 1).to_pylist()[0], default=str, ensure_ascii=False)


def _undecodable(fs: pafs.FileSystem, error: Exception) -> bool:
    """Whether a Parquet read error means a damaged file. ArrowInvalid always does (no magic bytes,
    a bad footer); a plain OSError (an undecodable page) only on local disk: from an object store it
    may be a dropped connection, which a retry of the task can fix."""
    if isinstance(error, pa.ArrowInvalid):
        return True
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return fs.type_name == "local"


def _footer_of(item: InputFile) -> pq.FileMetaData | None:
    return _footer(item.source.path, item.path, item.size, item.mtime_ns)


@functools.lru_cache(maxsize=TEXT_BYTES_FILES)
def _footer(source_path: str, path: str, size: int, mtime_ns: int) -> pq.FileMetaData | None:
    """A file's footer, or None where it cannot be read (the reader then meets the damage itself).
    Cached for as many files as the source stage asks ``_text_bytes`` about in one unit, so the
    footer read before the unit's shards were planned serves its read too (on object storage, a
    request per file), and no more: a large file's footer can take a megabyte."""
    fs, _ = resolve(source_path)
    try:
        with fs.open_input_file(path) as source:
            return pq.ParquetFile(source).metadata
    except (pa.ArrowInvalid, OSError):
        return None


def _text_column(metadata: pq.FileMetaData, item: InputFile) -> int | None:
    """The index of the input's text column among the file's leaf columns, or None: no such
    column, or an HTML column (extraction keeps a small and unknown share of it)."""
    if item.source.html_field:
        return None
    return next((index for index in range(metadata.num_columns)
                 if metadata.schema.column(index).path == item.source.text_field), None)


def _text_bytes(item: InputFile) -> int | None:
    """About how many text bytes the file (or piece) holds, from its footer's text column (a part
    of a row group: the group's share by rows)."""
    metadata = _footer_of(item)
    column = None if metadata is None else _text_column(metadata, item)
    if column is None:
        return None
    first, end, _, _, take = item.piece if item.piece is not None else (0, metadata.num_row_groups, 0, 0, None)
    size = sum(_chunk_text(metadata.row_group(group).column(column)) for group in range(first, end))
    return max(0, size if take is None else size * take // max(1, metadata.row_group(first).num_rows))


def _chunk_text(chunk: pq.ColumnChunkMetaData) -> int:
    """About the text bytes of a string column chunk: its size uncompressed, less the 4-byte length
    each string has in it."""
    return chunk.total_uncompressed_size - 4 * chunk.num_values


# A row group of more than one and a half targets is cut into parts of about a target's text, at
# most this many: pyarrow reads a group from its start, so the k-th of N parts decodes k/N of it, and
# N parts cost (N - 1) / 2 decodings of the group more than one read. Decoding is about 15% of
# ingest's CPU time (corpus-dev x 4 in one zstd group: 4 parts took 4.0-4.1 s of CPU, one read
# 3.2-3.5 s), so 8 parts add about half again and can cut ingest's wall time to about a quarter,
# given the workers.
MAX_PARTS = 8


def _split(item: InputFile, target_bytes: int) -> list[InputFile]:
    """Pieces of about equal text, as many as the file holds ``target_bytes`` of text (as
    ``_text_bytes`` counts it; all columns' size where there is no text column), rounded: each
    a run of whole row groups, or a part of a large group (``MAX_PARTS``) by row count. A piece is
    (first group, end group, rows of the file before its first row, rows of its first group it
    skips, rows it takes or None for all). A file of less than one and a half targets is one."""
    metadata = _footer_of(item)
    if metadata is None:
        return [item]  # read whole, where the reader quarantines what it cannot decode
    column = _text_column(metadata, item)
    groups = [metadata.row_group(index) for index in range(metadata.num_row_groups)]
    sizes = [group.total_byte_size if column is None else _chunk_text(group.column(column))
             for group in groups]
    total = sum(sizes)
    count = round(total / target_bytes)
    if count <= 1:
        return [item]
    segments = []  # (group, rows skipped, rows taken or None, text): whole groups and parts of large ones
    for index, (group, size) in enumerate(zip(groups, sizes)):
        parts = min(round(size / target_bytes), MAX_PARTS, group.num_rows) if size >= 1.5 * target_bytes else 1
        for part in range(parts):
            skip, end = group.num_rows * part // parts, group.num_rows * (part + 1) // parts
            segments.append((index, skip, None if parts == 1 else end - skip, size * (end - skip) / max(1, group.num_rows)))
    pieces, first, done = [], 0, 0
    starts = list(itertools.accumulate((group.num_rows for group in groups), initial=0))
    for position, (index, skip, take, size) in enumerate(segments):
        done += size
        last = position == len(segments) - 1
        if (done >= total * (len(pieces) + 1) / count or last or take is not None
                or segments[position + 1][2] is not None):  # a part is a piece of its own
            group = segments[first][0]
            pieces.append((group, index + 1, starts[group] + skip, skip, take))
            first = position + 1
    if len(pieces) == 1:
        return [item]
    return [dataclasses.replace(item, piece=piece) for piece in pieces]


READER = Reader(name="parquet", patterns=(".parquet",), read=_read_parquet, options=OPTIONS, split=_split,
                index=_index, index_for_ids=True, text_bytes=_text_bytes)
