"""Ingest: raw input files -> document-schema Parquet shards, bad records quarantined with a reason.

Reads JSONL (plain, .gz, .zst), Parquet and directories of .txt files, through pyarrow filesystems
(so ``s3://`` works where credentials exist). Each configured input source declares its category;
fields are mapped to the document schema:

- ``id``: ``<source>/<value of id_field>`` when the source has an id field, else
  ``<source>/<file path within the source>:<line or row number>`` (stable across reruns);
- ``text``: the ``text_field``; ``source`` and ``category`` from the config;
- ``meta``: a JSON object of every other field of the record, plus ``_ingest: {file, line|row}``.

One task reads one input file. Records that are not usable documents never crash the worker and are
never dropped silently: with ``on_bad_input: quarantine`` they go to ``removed/`` with one of the
reasons below (their raw content in ``text``); with ``on_bad_input: fail`` the run stops with an
``InputError`` naming the file, the line and what was expected.
"""
from __future__ import annotations

import fnmatch
import json
import posixpath
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import IngestConfig, InputSource
from pipeline.stage import DOCUMENT_SCHEMA, REASON_COLUMN
from pipeline.stats import Stats
from pipeline.storage import resolve

REASONS = {
    "malformed_json": "the line is not valid JSON",
    "not_an_object": "the JSON value is not an object",
    "invalid_utf8": "the bytes are not valid UTF-8",
    "missing_text": "the record has no text field (or it is null)",
    "non_string_text": "the text field is not a string",
    "empty_text": "the text is empty or only whitespace",
    "too_large": "the text is larger than ingest.max_doc_bytes",
    "missing_id": "the record has no value in the configured id_field",
    "duplicate_id": "another record of the same file has the same id",
}

TEXT_PROBLEMS = {"missing_text", "non_string_text", "empty_text"}
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson", ".jsonl.zstd")
REMOVED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field(REASON_COLUMN, pa.string()))


class InputError(Exception):
    """Bad input under ``on_bad_input: fail``: the message names the file, the line and the problem."""


@dataclass(frozen=True)
class InputFile:
    """One unit of ingest work: a file of one source, with its path relative to the source root."""

    source: InputSource
    path: str
    relative: str

    @property
    def format(self) -> str:
        if self.source.format != "auto":
            return self.source.format
        name = self.path.lower()
        if name.endswith(".parquet"):
            return "parquet"
        if name.endswith(".txt"):
            return "txt"
        if name.endswith(JSONL_SUFFIXES):
            return "jsonl"
        raise InputError(f"{self.path}: cannot tell the format from the name; set `format` for source {self.source.name!r}")


def list_input_files(source: InputSource) -> list[InputFile]:
    """Expand a source's path (file, directory searched recursively, or glob) into sorted files."""
    fs, path = resolve(source.path)
    if any(ch in source.path for ch in "*?["):
        root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        candidates = _files_under(fs, root)
        # `*` stays within one directory level unless the pattern says `**`, as in a shell.
        files = [p for p in candidates if fnmatch.fnmatch(p, path)
                 and ("**" in path or p.count("/") == path.count("/"))]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input {source.name!r}: {source.path} does not exist")
        root = path if info.type == pafs.FileType.Directory else posixpath.dirname(path)
        files = _files_under(fs, path) if info.type == pafs.FileType.Directory else [path]
        if info.type == pafs.FileType.Directory:
            wanted = (".txt",) if source.format == "txt" else (".txt", ".parquet", *JSONL_SUFFIXES)
            files = [p for p in files if p.lower().endswith(wanted)]
    if not files:
        raise InputError(f"input {source.name!r}: no files match {source.path}")
    return [InputFile(source, p, posixpath.relpath(p, root)) for p in sorted(files)]


def _files_under(fs: pafs.FileSystem, root: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return [i.path for i in infos if i.type == pafs.FileType.File and not posixpath.basename(i.path).startswith(".")]


class Batches:
    """Collects kept and quarantined records and hands them out in size-bounded tables."""

    def __init__(self, item: InputFile, config: IngestConfig):
        self.item, self.config = item, config
        self.kept: dict[str, list] = {name: [] for name in DOCUMENT_SCHEMA.names}
        self.removed: dict[str, list] = {name: [] for name in REMOVED_SCHEMA.names}
        self.kept_bytes = 0
        self.seen_ids: set[str] = set()
        self.records = 0
        self.stats = Stats()

    def add(self, doc_id: str | None, text: Any, meta: dict, where: str, raw: str) -> None:
        """Validate one record and file it as kept or quarantined (``raw``: the record as read)."""
        self.records += 1
        reason, size = self._problem(doc_id, text)
        if reason is None:
            self.seen_ids.add(doc_id)
            self._append(self.kept, doc_id, text, meta)
            self.kept_bytes += size
        else:
            self._quarantine(reason, doc_id or self.fallback_id(where), raw, meta, where)

    def _problem(self, doc_id: str | None, text: Any) -> tuple[str | None, int]:
        if doc_id is None:
            return "missing_id", 0
        if text is None:
            return "missing_text", 0
        if not isinstance(text, str):
            return "non_string_text", 0
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates from JSON escapes such as "\ud800"
            return "invalid_utf8", 0
        if not text.strip():
            return "empty_text", 0
        if size > self.config.max_doc_bytes:
            return "too_large", 0
        if doc_id in self.seen_ids:
            return "duplicate_id", 0
        return None, size

    def reject(self, reason: str, raw: str, meta: dict, where: str, doc_id: str | None = None) -> None:
        """A record that could not even be parsed: count it and quarantine it."""
        self.records += 1
        self._quarantine(reason, doc_id or self.fallback_id(where), raw, meta, where)

    def _quarantine(self, reason: str, doc_id: str, raw: str, meta: dict, where: str) -> None:
        if self.config.on_bad_input == "fail":
            expected = f"; expected a non-empty string in field {self.item.source.text_field!r}" if reason in TEXT_PROBLEMS else ""
            raise InputError(f"{self.item.path}:{where}: {REASONS[reason]} ({reason}){expected}")
        self._append(self.removed, doc_id, raw, meta)
        self.removed[REASON_COLUMN].append(reason)

    def fallback_id(self, where: str) -> str:
        return f"{self.item.source.name}/{self.item.relative}:{where}"

    def _append(self, columns: dict, doc_id: str, text: str, meta: dict) -> None:
        columns["id"].append(doc_id)
        columns["text"].append(text)
        columns["source"].append(self.item.source.name)
        columns["category"].append(self.item.source.category)
        columns["meta"].append(_dump_meta(meta))

    def full(self) -> bool:
        return self.kept_bytes >= self.config.shard_bytes

    def take_kept(self) -> pa.Table:
        table = pa.Table.from_pydict(self.kept, schema=DOCUMENT_SCHEMA)
        self.kept = {name: [] for name in DOCUMENT_SCHEMA.names}
        self.kept_bytes = 0
        return table

    def take_removed(self) -> pa.Table:
        return pa.Table.from_pydict(self.removed, schema=REMOVED_SCHEMA)


def _dump_meta(meta: dict) -> str:
    text = json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in some field: escape rather than fail the shard
        text = json.dumps(meta, sort_keys=True, default=str)
    return text


def read_file(item: InputFile, config: IngestConfig, limit: int | None = None) -> Iterator[tuple[pa.Table, Batches]]:
    """Yield (kept table, batches) each time a shard's worth of text is read, and once more at the
    end; ``batches.take_removed()`` then holds every quarantined record of the file. ``limit`` stops
    after that many records (for debugging)."""
    batches = Batches(item, config)
    reader = {"jsonl": _read_jsonl, "parquet": _read_parquet, "txt": _read_txt}[item.format]
    for _ in reader(item, batches):
        if limit is not None and batches.records >= limit:
            break
        if batches.full():
            yield batches.take_kept(), batches
    yield batches.take_kept(), batches


def _record_id(item: InputFile, record: dict, where: str) -> str | None:
    field = item.source.id_field
    if field is None:
        return f"{item.source.name}/{item.relative}:{where}"
    value = record.get(field)
    return None if value is None or value == "" else f"{item.source.name}/{value}"


def _meta(item: InputFile, record: dict, where_key: str, where: int) -> dict:
    skip = {item.source.text_field, item.source.id_field}
    meta = {k: v for k, v in record.items() if k not in skip}
    meta["_ingest"] = {"file": item.relative, where_key: where}
    return meta


def _read_jsonl(item: InputFile, batches: Batches) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    with fs.open_input_stream(item.path, compression="detect") as stream:
        for number, raw_line in enumerate(_lines(stream), start=1):
            if not raw_line.strip():
                batches.stats.add("blank_lines_skipped", 1)
                continue
            where = str(number)
            provenance = {"_ingest": {"file": item.relative, "line": number}}
            try:
                line = raw_line.decode("utf-8")
            except UnicodeDecodeError as error:
                provenance["error"] = f"invalid UTF-8 at byte {error.start} of the line"
                batches.reject("invalid_utf8", raw_line.decode("utf-8", "replace"), provenance, where)
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                provenance["error"] = f"{error.msg} at column {error.colno}"
                batches.reject("malformed_json", line, provenance, where)
                continue
            if not isinstance(record, dict):
                batches.reject("not_an_object", line, provenance, where)
                continue
            text = record.get(item.source.text_field)
            batches.add(_record_id(item, record, where), text, _meta(item, record, "line", number), where, line)
            yield


def _lines(stream) -> Iterator[bytes]:
    """Split a byte stream on b'\\n' only (not on other Unicode line breaks that may sit inside text)."""
    pending = b""
    while chunk := stream.read(1 << 20):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        yield from complete
    if pending:
        yield pending


def _read_parquet(item: InputFile, batches: Batches) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    with fs.open_input_file(item.path) as source:
        parquet = pq.ParquetFile(source)
        names = parquet.schema_arrow.names
        if item.source.text_field not in names:
            raise InputError(f"{item.path}: no column {item.source.text_field!r} (the text_field of source {item.source.name!r}); columns are {names}")
        row = 0
        for record_batch in parquet.iter_batches(batch_size=1000):
            for record in record_batch.to_pylist():
                row += 1
                where = f"row {row}"
                text = record.get(item.source.text_field)
                raw = text if isinstance(text, str) else json.dumps(record, default=str, ensure_ascii=False)
                batches.add(_record_id(item, record, where), text, _meta(item, record, "row", row), where, raw)
                yield


def _read_txt(item: InputFile, batches: Batches) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    with fs.open_input_stream(item.path, compression="detect") as stream:
        data = stream.read()
    meta = {"_ingest": {"file": item.relative}}
    doc_id = f"{item.source.name}/{item.relative}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        meta["error"] = f"invalid UTF-8 at byte {error.start}"
        batches.reject("invalid_utf8", data.decode("utf-8", "replace"), meta, "file", doc_id)
        return
    batches.add(doc_id, text, meta, "file", text)
    yield


def text_bytes(table: pa.Table) -> int:
    """UTF-8 bytes of the text column (what MB/s figures count)."""
    if table.num_rows == 0:
        return 0
    return int(pc.sum(pc.binary_length(table.column("text"))).as_py() or 0)
