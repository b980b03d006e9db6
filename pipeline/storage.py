"""Paths and atomic writes over pyarrow filesystems (local disk, s3://, gs://, hdfs://).

Every file the pipeline writes goes to a temporary name beside its target and is renamed into
place only when complete, so a crash never leaves a half-written shard under a final name. A write
that fails because the disk is full or the path is not writable raises ``StorageError``, whose
message names the path and what to do; the temporary is removed (or, if even that fails, left for
``remove_temporaries`` on the next run).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import posixpath
import re
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.errors import StorageError

# Rows per row group of the shards stages write (write_parquet and ParquetStream alike): where a reader
# of the file meets chunk and batch boundaries (pipeline.fusion hands rows on cut the same way).
ROW_GROUP_ROWS = 2000

TMP_PREFIX = ".tmp-"

# Write errors that retrying cannot fix, and what the person running the pipeline should do.
_WHAT_TO_DO = {
    errno.ENOSPC: "free space there",
    errno.EDQUOT: "free space there or raise the disk quota",
    errno.EFBIG: "raise the file size limit (ulimit -f) or use smaller shards (ingest.shard_bytes)",
    errno.EACCES: "make it writable by the user running the pipeline",
    errno.EPERM: "make it writable by the user running the pipeline",
    errno.EROFS: "use a writable filesystem for work_dir",
}


@contextmanager
def _reported(path: str, action: str = "write") -> Iterator[None]:
    """Turn the OSErrors of ``_WHAT_TO_DO`` into a StorageError naming ``path``; others pass through."""
    try:
        yield
    except StorageError:
        raise
    except OSError as error:
        if error.errno not in _WHAT_TO_DO:
            raise
        raise StorageError(f"cannot {action} {path}: {os.strerror(error.errno)}; {_WHAT_TO_DO[error.errno]}, "
                           "then rerun the same command: finished units are kept") from error


def resolve(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and a path on it. Plain paths are made absolute against the working directory."""
    if "://" in uri_or_path:
        return pafs.FileSystem.from_uri(uri_or_path)
    return pafs.LocalFileSystem(), os.path.abspath(uri_or_path)


def join(*parts: str) -> str:
    """Path parts joined with ``/``; on a URI with options (``s3://bucket/run?endpoint_override=...``)
    the parts go before the options, so a file under the work_dir keeps its endpoint and region."""
    first, *rest = parts
    if "://" in first and "?" in first:
        base, options = first.split("?", 1)
        return posixpath.join(base, *rest) + "?" + options
    return posixpath.join(*parts)


def shown(uri_or_path: str) -> str:
    """A URI fit for a log line: credentials in it (``s3://KEY:SECRET@bucket``) replaced by ``***``."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@?]*@", r"\1***@", uri_or_path)


def uri_beside(base: str, path: str) -> str:
    """``path``, a path on the filesystem the URI ``base`` resolves to, as a URI with ``base``'s
    scheme, credentials and options (a plain path when ``base`` is one)."""
    if "://" not in base:
        return path
    scheme, rest = base.split("://", 1)
    location, _, options = rest.partition("?")
    authority = location.split("/", 1)[0]
    credentials = authority.rsplit("@", 1)[0] + "@" if "@" in authority else ""
    return f"{scheme}://{credentials}{path}" + (f"?{options}" if options else "")


def exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_files(fs: pafs.FileSystem, directory: str, suffix: str = "") -> list[str]:
    """Finished files directly in ``directory`` ending in ``suffix``, sorted; temporaries skipped."""
    if not exists(fs, directory):
        return []
    infos = fs.get_file_info(pafs.FileSelector(directory, recursive=False))
    return sorted(
        info.path
        for info in infos
        if info.type == pafs.FileType.File
        and info.path.endswith(suffix)
        and not posixpath.basename(info.path).startswith(TMP_PREFIX)
    )


def _temporary_beside(path: str) -> str:
    directory, name = posixpath.split(path)
    return posixpath.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}-{name}")


@contextmanager
def atomic_output(fs: pafs.FileSystem, path: str) -> Iterator[Any]:
    """An output stream on a temporary beside ``path``, renamed to ``path`` when the block ends
    without an error (and deleted when it raises)."""
    with _reported(path):
        fs.create_dir(posixpath.dirname(path), recursive=True)
        temporary = _temporary_beside(path)
        try:
            with fs.open_output_stream(temporary) as sink:
                yield sink
            fs.move(temporary, path)
        except BaseException:
            try:
                fs.delete_file(temporary)
            except OSError:  # never created, or not deletable either: remove_temporaries gets it later
                pass
            raise


def _write_atomically(fs: pafs.FileSystem, path: str, write: Callable[[Any], None]) -> None:
    """``write(sink)`` to a temporary beside ``path``, then rename it to ``path``."""
    with atomic_output(fs, path) as sink:
        write(sink)


class _Hashing:
    """A file-like sink that forwards writes and keeps their sha256 and size."""

    def __init__(self, sink: Any):
        self.sink, self.digest, self.size, self.closed = sink, hashlib.sha256(), 0, False

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.digest.update(view)
        self.size += view.nbytes
        self.sink.write(data)
        return view.nbytes

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class ParquetStream:
    """A Parquet file written batch by batch (``write(table)``), atomically: the same bytes as
    ``write_parquet`` of all the batches concatenated, since rows are buffered into row groups of
    ``row_group_size`` whatever the batches' sizes, with memory bounded by one row group and one batch.
    After the ``with`` block, ``rows``, ``size`` and ``sha256`` describe the file."""

    def __init__(self, fs: pafs.FileSystem, path: str, row_group_size: int = ROW_GROUP_ROWS):
        self.fs, self.path, self.row_group_size = fs, path, row_group_size
        self.buffer: list[pa.Table] = []
        self.buffered = self.rows = self.size = 0
        self.schema: pa.Schema | None = None
        self.sha256 = ""

    def write(self, table: pa.Table) -> None:
        if self.schema is None:
            self.schema = table.schema
        if table.num_rows:
            self.buffer.append(table)
            self.buffered += table.num_rows
            self.rows += table.num_rows

    def _flush(self, writer: pq.ParquetWriter, final: bool) -> None:
        if not self.buffer:
            return
        pending = pa.concat_tables(self.buffer)
        whole = pending.num_rows if final else pending.num_rows - pending.num_rows % self.row_group_size
        # one row group at a time, its columns in one chunk each, as they are when ``write_parquet``
        # slices a table read whole: how a column chunk is cut into pages depends on its Arrow chunks
        for start in range(0, whole, self.row_group_size):
            group = pending.slice(start, min(self.row_group_size, whole - start)).combine_chunks()
            writer.write_table(group, row_group_size=self.row_group_size)
        rest = pending.slice(whole)
        self.buffer, self.buffered = ([rest] if rest.num_rows else []), rest.num_rows

    def __enter__(self) -> "ParquetStream":
        self._context = atomic_output(self.fs, self.path)
        self._sink = _Hashing(self._context.__enter__())
        self._writer: pq.ParquetWriter | None = None
        return self

    def _writer_for(self) -> pq.ParquetWriter:
        if self._writer is None:
            self._writer = pq.ParquetWriter(pa.PythonFile(self._sink, mode="w"), self.schema, compression="zstd")
        return self._writer

    def flush(self) -> None:
        """Write the row groups that are complete (called by ``write`` users between batches)."""
        if self.buffered >= self.row_group_size:
            self._flush(self._writer_for(), final=False)

    def __exit__(self, kind, error, traceback) -> bool:
        try:
            if kind is None:
                writer = self._writer_for()
                self._flush(writer, final=True)
                if not self.rows:  # as ``write_parquet`` writes a table without rows: one empty row group
                    writer.write_table(self.schema.empty_table(), row_group_size=self.row_group_size)
                writer.close()
        finally:
            self._context.__exit__(kind, error, traceback)
        self.size, self.sha256 = self._sink.size, self._sink.digest.hexdigest()
        return False


def write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table, row_group_size: int = ROW_GROUP_ROWS) -> tuple[int, str]:
    """Write ``table`` as zstd Parquet atomically; return the file's size in bytes and its sha256."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    data = sink.getvalue()
    write_bytes(fs, path, data)
    return data.size, hashlib.sha256(data).hexdigest()


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """Write ``data`` to ``path`` atomically."""
    _write_atomically(fs, path, lambda sink: sink.write(data))


def read_parquet(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    with fs.open_input_file(path) as source:
        return pq.read_table(source, columns=columns)


def write_json(fs: pafs.FileSystem, path: str, payload: Any) -> None:
    """Write JSON atomically (indented, keys sorted, so diffs between runs are readable)."""
    write_bytes(fs, path, json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False).encode())


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as source:
        return json.loads(source.read().decode())


def sha256(fs: pafs.FileSystem, path: str) -> str:
    """The sha256 of a file, read in 8 MB blocks (model files can be large)."""
    digest = hashlib.sha256()
    with fs.open_input_stream(path) as source:
        while block := source.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()


def read_json_if_exists(fs: pafs.FileSystem, path: str) -> Any | None:
    """``read_json``, or None when there is no file at ``path``."""
    return read_json(fs, path) if exists(fs, path) else None


def delete_file(fs: pafs.FileSystem, path: str) -> None:
    with _reported(path, "delete"):
        fs.delete_file(path)


def delete_dir_contents(fs: pafs.FileSystem, directory: str) -> None:
    with _reported(directory, "empty"):
        fs.delete_dir_contents(directory)


def remove_temporaries(fs: pafs.FileSystem, directory: str) -> None:
    """Delete leftovers of writes interrupted by a crash, anywhere under ``directory``."""
    if not exists(fs, directory):
        return
    for info in fs.get_file_info(pafs.FileSelector(directory, recursive=True)):
        if info.type == pafs.FileType.File and posixpath.basename(info.path).startswith(TMP_PREFIX):
            try:
                delete_file(fs, info.path)
            except FileNotFoundError:  # its writer removed it (or renamed it into place) since the listing
                pass
