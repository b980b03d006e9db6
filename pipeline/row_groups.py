"""Parquet files filled from many small pieces at once: a shuffle's gather task (the mixture's,
``mixture.gather``, and dedup's, ``stages.dedup.exchange``) writes one file per target of its block,
each from the pieces every map file holds for it, and holds at most a row group's worth of each."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.storage import atomic_output


class RowGroupBuffer:
    """Pieces of one Parquet file (tables or record batches) appended as they come, written as one
    row group once they reach ``group_bytes`` decoded bytes or ``group_pieces`` pieces (and at the
    end): a shuffle's gather task fills many such files at once, from many small pieces, and holds
    at most that much of each."""

    def __init__(self, writer: pq.ParquetWriter, group_bytes: int, group_pieces: int):
        self.writer, self.group_bytes, self.group_pieces = writer, group_bytes, group_pieces
        self.pending: list[pa.Table] = []
        self.bytes = 0

    def add(self, piece: pa.Table | pa.RecordBatch) -> None:
        self.pending.append(piece if isinstance(piece, pa.Table) else pa.Table.from_batches([piece]))
        self.bytes += piece.nbytes
        if self.bytes >= self.group_bytes or len(self.pending) >= self.group_pieces:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            table = pa.concat_tables(self.pending).combine_chunks()
            self.writer.write_table(table, row_group_size=table.num_rows)
            self.pending, self.bytes = [], 0


@contextmanager
def row_group_output(fs: pafs.FileSystem, path: str, schema: pa.Schema, group_bytes: int, group_pieces: int,
                     write_statistics: bool = True) -> Iterator[RowGroupBuffer]:
    """A ``RowGroupBuffer`` on a zstd Parquet file written to a temporary and renamed to ``path``
    when the block ends without an error; nothing added gives a file without row groups, which
    reads as an empty table."""
    with atomic_output(fs, path) as sink:
        writer = pq.ParquetWriter(sink, schema, compression="zstd", write_statistics=write_statistics)
        output = RowGroupBuffer(writer, group_bytes, group_pieces)
        try:
            yield output
            output.flush()
        finally:
            writer.close()
