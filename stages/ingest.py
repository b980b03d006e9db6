"""Ingest: raw input files -> document-schema Parquet shards, bad records quarantined with a reason.

Reads JSONL (plain, .gz, .zst), Parquet and directories of .txt files, through pyarrow filesystems
(so ``s3://`` works where credentials exist). Each configured input source declares its category;
fields are mapped to the document schema:

- ``id``: with an ``id_field``, ``<source>/<value>`` when the source's path is one file, and
  ``<source>/<file path within the source>#<value>`` when it is a directory or a glob; without one,
  ``<source>/<file path within the source>:<line or row number>`` (``<source>/<file path>`` for a
  .txt file). Stable across reruns, and unique by construction: input names are unique and contain
  no ``/`` (config validation), file paths are unique within a source, and within one file a second
  record with an id already seen is quarantined as ``duplicate_id``. The file path is in the id of
  a many-file source because checking one id set across all its files would need the whole source's
  ids in one place (memory that grows with the corpus, or a global pass); per file, the set is
  bounded by the file, which one task already holds;
- ``text``: the ``text_field``; ``source`` and ``category`` from the config;
- ``meta``: a JSON object of every other field of the record, plus ``_ingest: {file, line|row}``.

One task reads one input file. Records that are not usable documents never crash the worker and are
never dropped silently: with ``on_bad_input: quarantine`` they go to ``removed/`` with one of the
reasons below (their raw content in ``text``); with ``on_bad_input: fail`` the run stops with an
``InputError`` naming the file, the line and what was expected.

A damaged file (a truncated or corrupt ``.gz``/``.zst``, a Parquet file that cannot be decoded) is
bad input too, not a task failure: retrying cannot repair it. Every record read before the damage
is kept as usual; the unreadable rest becomes one removed row with reason ``corrupt_file``, whose
``meta`` names the file, the byte offset (in the decompressed data; ``row`` for Parquet) where the
readable part ends and the decoder's error, and whose ``text`` holds the incomplete last line.
``.gz`` and ``.zst`` are decompressed here, in small blocks, rather than by pyarrow, whose
buffered decompression loses up to a megabyte of good records before the damage and cannot tell a
damaged file from an I/O error.
"""
from __future__ import annotations

import fnmatch
import json
import posixpath
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import zstandard

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
    "empty_text": "the text is empty or only whitespace (or NUL characters)",
    "too_large": "the text is larger than ingest.max_doc_bytes",
    "missing_id": "the record has no value in the configured id_field",
    "duplicate_id": "an earlier record of the same file has the same id",
    "corrupt_file": "the file is truncated or corrupt from here on",
}

TEXT_PROBLEMS = {"missing_text", "non_string_text", "empty_text"}
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson", ".jsonl.zstd")
REMOVED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field(REASON_COLUMN, pa.string()))


class InputError(Exception):
    """Bad input under ``on_bad_input: fail``: the message names the file, the line and the problem."""


class CorruptFile(Exception):
    """The decompressor (or Parquet decoder) found damaged data: ``offset`` compressed bytes were
    consumed when it did, ``message`` is its error."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.message, self.offset = message, offset


@dataclass(frozen=True)
class InputFile:
    """One unit of ingest work: a file of one source, with its path relative to the source root.

    ``many_files``: the source's path is a directory or a glob (it may hold several files), so ids
    taken from its ``id_field`` carry the file path to stay unique across files."""

    source: InputSource
    path: str
    relative: str
    many_files: bool = False

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
    is_glob = any(ch in source.path for ch in "*?[")
    info = None
    if is_glob:
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
    # decided by the config's form, not by how many files match today, so ids stay stable when a
    # directory gains a second file
    many = is_glob or info.type == pafs.FileType.Directory
    return [InputFile(source, p, posixpath.relpath(p, root), many) for p in sorted(files)]


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
        # NUL is not whitespace to str.strip(), but a text of NULs is no more a document than a blank one
        if not text.replace("\x00", "").strip():
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
            detail = f": {meta['error']}" if reason == "corrupt_file" else ""
            raise InputError(f"{self.item.path}:{where}: {REASONS[reason]} ({reason}){expected}{detail}")
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
    """The document id (see the module docstring), or None when the id field has no value."""
    field = item.source.id_field
    if field is None:
        return f"{item.source.name}/{item.relative}:{where}"
    value = record.get(field)
    if value is None or value == "":
        return None
    return f"{item.source.name}/{item.relative}#{value}" if item.many_files else f"{item.source.name}/{value}"


def _meta(item: InputFile, record: dict, where_key: str, where: int) -> dict:
    skip = {item.source.text_field, item.source.id_field}
    meta = {k: v for k, v in record.items() if k not in skip}
    meta["_ingest"] = {"file": item.relative, where_key: where}
    return meta


def _read_jsonl(item: InputFile, batches: Batches) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    with _decompressed(fs, item.path) as chunks:
        lines = _Lines(chunks)
        try:
            yield from _parse_jsonl(item, batches, lines)
        except CorruptFile as damage:
            _reject_rest(item, batches, damage, lines.offset, lines.pending, lines.count + 1)
            yield


def _reject_rest(item: InputFile, batches: Batches, damage: CorruptFile, offset: int, pending: bytes,
                 line: int | None) -> None:
    """Quarantine the unreadable rest of a damaged file as one ``corrupt_file`` row."""
    meta: dict[str, Any] = {"_ingest": {"file": item.relative, "byte": offset}}
    if line is not None:
        meta["_ingest"]["line"] = line
    where = f"byte {offset}"
    compressed = f" (compressed byte {damage.offset})" if damage.offset is not None else ""
    meta["error"] = f"unreadable after byte {offset} of the decompressed data{compressed}: {damage.message}"
    batches.reject("corrupt_file", pending.decode("utf-8", "replace"), meta, where)


def _parse_jsonl(item: InputFile, batches: Batches, lines: Iterator[bytes]) -> Iterator[None]:
    for number, raw_line in enumerate(lines, start=1):
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


class _Lines:
    """Lines of a stream of byte chunks, split on b'\\n' only (not on other Unicode line breaks that
    may sit inside text). ``offset`` is the byte offset of ``pending``, the start of the line not yet
    complete, and ``count`` the lines handed out: where a damaged file stops being readable."""

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.pending = b""
        self.offset = 0
        self.count = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.pending += chunk
            *complete, self.pending = self.pending.split(b"\n")
            for line in complete:
                self.offset += len(line) + 1
                self.count += 1
                yield line
        if self.pending:
            line, self.pending = self.pending, b""
            self.offset += len(line)
            self.count += 1
            yield line


READ = 1 << 20  # compressed bytes read at a time
FEED = 1 << 12  # ... and fed to the decoder at a time: a decoder that fails loses that call's output


def _slices(stream) -> Iterator[bytes]:
    """The stream's bytes in FEED-sized pieces, so the output lost with a failing decoder call is
    small (zstd still emits whole blocks, up to 128 kB of text, so that much may go with it)."""
    while block := stream.read(READ):
        for start in range(0, len(block), FEED):
            yield block[start:start + FEED]


@contextmanager
def _decompressed(fs: pafs.FileSystem, path: str) -> Iterator[Iterator[bytes]]:
    """The decompressed chunks of a file. ``.gz`` and ``.zst``/``.zstd`` are decoded here, so damage
    raises ``CorruptFile`` after every chunk before it was handed out (I/O errors stay OSErrors, to
    be retried); other compressions (``.bz2``, ``.lz4``) are left to pyarrow."""
    name = path.lower()
    if name.endswith(".gz"):
        decode = _gunzip
    elif name.endswith((".zst", ".zstd")):
        decode = _unzstd
    else:
        with fs.open_input_stream(path, compression="detect") as stream:
            yield iter(lambda: stream.read(1 << 20), b"")
        return
    with fs.open_input_stream(path, compression=None) as stream:
        yield decode(stream)


def _gunzip(stream) -> Iterator[bytes]:
    """gzip members one after another (``cat a.gz b.gz`` is a valid .gz), as gzip -d reads them."""
    consumed, decoder, started = 0, zlib.decompressobj(16 + zlib.MAX_WBITS), False
    for block in _slices(stream):
        data = block
        while data:
            if decoder.eof:  # the next member starts in what the last one left over
                decoder, started = zlib.decompressobj(16 + zlib.MAX_WBITS), False
            try:
                out = decoder.decompress(data)
            except zlib.error as error:
                raise CorruptFile(f"corrupt gzip data ({error})", consumed) from None
            started = True
            if out:
                yield out
            data = decoder.unused_data if decoder.eof else b""
        consumed += len(block)
    if started and not decoder.eof:
        raise CorruptFile("truncated gzip data (the stream ends inside a member)", consumed)


def _unzstd(stream) -> Iterator[bytes]:
    """zstd frames one after another, each block's output handed out as soon as it is decoded."""
    consumed, decoder, started = 0, zstandard.ZstdDecompressor().decompressobj(), False
    for block in _slices(stream):
        data = block
        while data:
            if decoder.eof:
                decoder, started = zstandard.ZstdDecompressor().decompressobj(), False
            try:
                out = decoder.decompress(data)
            except zstandard.ZstdError as error:
                raise CorruptFile(f"corrupt zstd data ({error})", consumed) from None
            started = True
            if out:
                yield out
            data = decoder.unused_data if decoder.eof else b""
        consumed += len(block)
    if started and not decoder.eof:
        raise CorruptFile("truncated zstd data (the stream ends inside a frame)", consumed)


def _read_parquet(item: InputFile, batches: Batches) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    row = 0
    with fs.open_input_file(item.path) as source:
        try:
            parquet = pq.ParquetFile(source)
            names = parquet.schema_arrow.names
            if item.source.text_field not in names:
                raise InputError(f"{item.path}: no column {item.source.text_field!r} (the text_field of source {item.source.name!r}); columns are {names}")
            for record_batch in parquet.iter_batches(batch_size=1000):
                for record in record_batch.to_pylist():
                    row += 1
                    where = f"row {row}"
                    text = record.get(item.source.text_field)
                    raw = text if isinstance(text, str) else json.dumps(record, default=str, ensure_ascii=False)
                    batches.add(_record_id(item, record, where), text, _meta(item, record, "row", row), where, raw)
                    yield
        except (pa.ArrowInvalid, OSError) as error:
            if not _undecodable(fs, error):
                raise
            meta = {"_ingest": {"file": item.relative, "row": row + 1},
                    "error": f"unreadable from row {row + 1}: {type(error).__name__}: {error}"}
            batches.reject("corrupt_file", "", meta, f"row {row + 1}")
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


def _read_txt(item: InputFile, batches: Batches) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    parts: list[bytes] = []
    meta: dict[str, Any] = {"_ingest": {"file": item.relative}}
    doc_id = f"{item.source.name}/{item.relative}"
    with _decompressed(fs, item.path) as chunks:
        try:
            for chunk in chunks:
                parts.append(chunk)
        except CorruptFile as damage:  # one file is one document: it is the damaged record
            data = b"".join(parts)
            _reject_rest(item, batches, damage, len(data), data, None)
            yield
            return
    data = b"".join(parts)
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
