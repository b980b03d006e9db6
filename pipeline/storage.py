"""Paths and atomic writes over pyarrow filesystems (local disk, s3://, gs://, hdfs://).

Every file the pipeline writes goes to a temporary name beside its target and is renamed into
place only when complete, so a crash never leaves a half-written shard under a final name.
"""
from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

TMP_PREFIX = ".tmp-"


def resolve(uri_or_path: str) -> tuple[pafs.FileSystem, str]:
    """A filesystem and a path on it. Plain paths are made absolute against the working directory."""
    if "://" in uri_or_path:
        return pafs.FileSystem.from_uri(uri_or_path)
    return pafs.LocalFileSystem(), os.path.abspath(uri_or_path)


def join(*parts: str) -> str:
    return posixpath.join(*parts)


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


def _commit(fs: pafs.FileSystem, temporary: str, path: str) -> None:
    try:
        fs.move(temporary, path)
    except BaseException:
        fs.delete_file(temporary)
        raise


def write_parquet(fs: pafs.FileSystem, path: str, table: pa.Table, row_group_size: int = 2000) -> int:
    """Write ``table`` as zstd Parquet atomically; return the file's size in bytes."""
    fs.create_dir(posixpath.dirname(path), recursive=True)
    temporary = _temporary_beside(path)
    with fs.open_output_stream(temporary) as sink:
        pq.write_table(table, sink, compression="zstd", row_group_size=row_group_size)
    _commit(fs, temporary, path)
    return fs.get_file_info(path).size


def write_bytes(fs: pafs.FileSystem, path: str, data: bytes | pa.Buffer) -> None:
    """Write ``data`` to ``path`` atomically."""
    fs.create_dir(posixpath.dirname(path), recursive=True)
    temporary = _temporary_beside(path)
    with fs.open_output_stream(temporary) as sink:
        sink.write(data)
    _commit(fs, temporary, path)


def read_parquet(fs: pafs.FileSystem, path: str, columns: list[str] | None = None) -> pa.Table:
    with fs.open_input_file(path) as source:
        return pq.read_table(source, columns=columns)


def write_json(fs: pafs.FileSystem, path: str, payload: Any) -> None:
    """Write JSON atomically (indented, keys sorted, so diffs between runs are readable)."""
    write_bytes(fs, path, json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False).encode())


def read_json(fs: pafs.FileSystem, path: str) -> Any:
    with fs.open_input_stream(path) as source:
        return json.loads(source.read().decode())


def remove_temporaries(fs: pafs.FileSystem, directory: str) -> None:
    """Delete leftovers of writes interrupted by a crash, anywhere under ``directory``."""
    if not exists(fs, directory):
        return
    for info in fs.get_file_info(pafs.FileSelector(directory, recursive=True)):
        if info.type == pafs.FileType.File and posixpath.basename(info.path).startswith(TMP_PREFIX):
            fs.delete_file(info.path)
