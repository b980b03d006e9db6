"""Parquet: one record per row, read in batches of 1,000 rows; a file that cannot be decoded keeps
the rows read before and quarantines the rest as one ``corrupt_file`` row. With ``html_field`` or
``url_filter``, rows go through ``stages.readers.web.add_record``."""
from __future__ import annotations

import json
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import InputError
from pipeline.readers import InputFile, Reader
from pipeline.storage import resolve
from stages.readers.jsonl import OPTIONS
from stages.readers.web import add_record


def _read_parquet(item: InputFile, records) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    row = 0
    with fs.open_input_file(item.path) as source:
        try:
            parquet = pq.ParquetFile(source)
            names = parquet.schema_arrow.names
            key = "html_field" if item.source.html_field else "text_field"
            column = getattr(item.source, key)
            if column not in names:
                raise InputError(f"{item.path}: no column {column!r} (the {key} of source {item.source.name!r}); columns are {names}")
            for record_batch in parquet.iter_batches(batch_size=1000):
                for record in record_batch.to_pylist():
                    row += 1
                    text = record.get(column)
                    raw = text if isinstance(text, str) else json.dumps(record, default=str, ensure_ascii=False)
                    add_record(item, records, record, f"row {row}", "row", row, raw)
                    yield
        except (pa.ArrowInvalid, OSError) as error:
            if not _undecodable(fs, error):
                raise
            meta = {"_ingest": {"file": item.relative, "row": row + 1},
                    "error": f"unreadable from row {row + 1}: {type(error).__name__}: {error}"}
            records.reject("corrupt_file", "", meta, f"row {row + 1}")
            yield


def _undecodable(fs: pafs.FileSystem, error: Exception) -> bool:
    """Whether a Parquet read error means a damaged file. ArrowInvalid always does (no magic bytes,
    a bad footer); a plain OSError (an undecodable page) only on local disk: from an object store it
    may be a dropped connection, which a retry of the task can fix."""
    if isinstance(error, pa.ArrowInvalid):
        return True
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    return fs.type_name == "local"


READER = Reader(name="parquet", patterns=(".parquet",), read=_read_parquet, options=OPTIONS)
