"""Ingest: raw input files -> document-schema Parquet shards, bad records quarantined with a reason.

Reads JSONL (plain, .gz, .zst), Parquet, directories of .txt files, WARC and WET crawl files and
HTML pages, through pyarrow filesystems (so ``s3://`` works where credentials exist). Each
configured input source declares its category; fields are mapped to the document schema:

- ``id``: with an ``id_field``, ``<source>/<value>`` when the source's path is one file, and
  ``<source>/<file path within the source>#<value>`` when it is a directory or a glob; without one,
  ``<source>/<file path within the source>:<line or row number>`` (``<source>/<file path>`` for a
  .txt file). Stable across reruns, and unique by construction: input names are unique and contain
  no ``/`` (config validation), file paths are unique within a source, and within one file a second
  record with an id already seen is quarantined as ``duplicate_id`` (in a piece of a large Parquet
  or plain JSON-lines file that its reader cut, an id any record of an earlier piece holds counts as
  seen, kept or not: the pieces of a file are indexed first, ``stages.ingest_pieces``; a Parquet
  piece's index reads its id column alone, not its text). The file path is in the id of
  a many-file source because checking one id set across all its files would need the whole source's
  ids in one place (memory that grows with the corpus, or a global pass); per file, the set is
  bounded by the file, which one task already holds;
- ``text``: the ``text_field`` (with ``html_field``: the main text of that field's HTML);
  ``source`` and ``category`` from the config;
- ``meta``: a JSON object of every other field of the record, plus ``_ingest: {file, line|row}``,
  and with a ``lang_field``, ``_lang``: the record's declared language (lower-cased base, a
  region or script after ``-`` as given), which langid takes instead of classifying.

WARC/WET records and HTML files are documents by their own rules (``stages/readers/warc.py``,
``html.py``, ``web.py``): ids ``<source>/<file>#<WARC-Record-ID>`` and ``<source>/<file>``, meta
from the WARC headers, and every record that is not a page's text (a request, a 404, a PDF, a
page of menus, a URL on a block list) removed with its reason from ``stages.web.warc.REASONS``,
never silently skipped: records in = kept + removed holds for crawl files as for any other.

Formats are plug-ins (``pipeline.readers``; JSONL, Parquet and .txt in ``stages/readers/``): a
reader turns one file into records, and this stage validates them, gives them ids, quarantines bad
ones and cuts shards. One task reads one input file (or one piece of it, when its reader splits it). Records that are not usable documents never crash the worker and are
never dropped silently: with ``on_bad_input: quarantine`` they go to ``removed/`` with one of the
reasons below (their raw content in ``text``); with ``on_bad_input: fail`` the run stops with an
``InputError`` naming the file, the line and what was expected.

A damaged file (a truncated or corrupt ``.gz``/``.zst``, a Parquet file that cannot be decoded) is
bad input too, not a task failure: retrying cannot repair it. Every record read before the damage
is kept as usual; the unreadable rest becomes one removed row with reason ``corrupt_file``, whose
``meta`` names the file, the byte offset (in the decompressed data; ``row`` for Parquet) where the
readable part ends and the decoder's error, and whose ``text`` holds the incomplete last line (for
a WARC file, reason ``truncated_record``, its ``error`` naming the file and the offset).
``.gz`` and ``.zst`` are decompressed in small blocks (``stages.readers.common``).
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import math
import posixpath
import re
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipeline.config import IngestConfig, InputSource, PipelineConfig
from pipeline.errors import InputError  # noqa: F401  (raised here, and by readers)
from pipeline.readers import TEXT_BYTES_FILES, InputFile, file_patterns, unread_option
from pipeline.stage import CATEGORIES, DOCUMENT_SCHEMA, REASON_COLUMN, PrepareContext, Stage
from pipeline.stats import Stats
from pipeline.storage import resolve
from pipeline.worker import UnitOutput, UnitWriter, text_bytes  # noqa: F401  (text_bytes: re-exported)
from stages.ingest_pieces import prepare_pieces, with_before
from stages.readers.web import url_list_digests
from stages.web.warc import REASONS as WEB_REASONS

REASONS = {
    "malformed_json": "the line is not valid JSON",
    "not_an_object": "the JSON value is not an object",
    "invalid_utf8": "the bytes are not valid UTF-8",
    "missing_text": "the record has no text field (or it is null)",
    "non_string_text": "the text field is not a string",
    "empty_text": "the text is empty or only whitespace (or NUL characters)",
    "too_large": "the text is larger than ingest.max_doc_bytes",
    "record_too_large": "the record's raw bytes are more than 8 x ingest.max_doc_bytes: not read, its first 64 KiB kept",
    "missing_id": "the record has no value in the configured id_field",
    "invalid_id": "the id_field's value is not valid Unicode (a JSON escape of a lone surrogate, such as \\ud800)",
    "duplicate_id": "an earlier record of the same file has the same id",
    "corrupt_file": "the file is truncated or corrupt from here on",
    "bad_category": "the record's category_field is empty (and the input has no category) or not a category",
    "bad_lang": "the record's lang_field is not a language code (a string such as en, zh or zh-Hant)",
    **WEB_REASONS,  # the web readers' (not_html, http_status, no_text, skipped_request, url_blocked...)
}
# input keys added with the web readers: hashed only when set, so that adding them kept the stage
# hashes (and the finished work) of existing runs
_HASHED_WHEN_SET = ("html_field", "extractor", "url_filter", "lang_field")
# ISO 639 base (2-3 letters, or "code"), then optional script/region subtags: en, zh-Hant, pt_BR, sr-Latn-RS
_LANG_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*|code")
# ISO 639's codes for no one language (undetermined, several, uncoded, no linguistic content): a
# record declaring one has declared nothing, and langid classifies it.
NO_LANGUAGE = {"und", "mul", "mis", "zxx"}

TEXT_PROBLEMS = {"missing_text", "non_string_text", "empty_text"}
# A shard (or a part of removed rows) is cut at ``shard_bytes`` of text, or at this many times that of
# meta, whichever comes first: records whose other fields dwarf their text (a page's HTML beside it)
# made one shard of 2.2 GB of meta for 18 MB of text, and its task peaked at 12.8 GB. Meta a few
# times the text (an abstract beside its title and authors) still leaves shards cut by text.
META_LIMIT = 4
REMOVED_SCHEMA = DOCUMENT_SCHEMA.append(pa.field(REASON_COLUMN, pa.string()))
_NO_KEPT, _NO_REMOVED = DOCUMENT_SCHEMA.empty_table(), REMOVED_SCHEMA.empty_table()


class Ingest(Stage):
    """The source stage (``registry.SOURCE``): its units are the input files, listed in the driver;
    each unit reads one file through its reader and writes kept shards of about ``shard_bytes``
    text bytes and one removed shard."""

    name = "ingest"
    Config = IngestConfig

    @staticmethod
    def source_config(config: PipelineConfig) -> IngestConfig:
        return config.ingest

    @staticmethod
    def hash_inputs(config: PipelineConfig) -> list[dict]:
        """What the stage's hash covers besides its config: the input declarations, and the content
        of their URL lists (a list edited in place reruns ingest)."""
        hashed = []
        for source in config.inputs:
            declared = {key: value for key, value in source.model_dump().items()
                        if key not in _HASHED_WHEN_SET or value != InputSource.model_fields[key].default}
            if source.url_filter is not None:
                declared["url_lists"] = url_list_digests(source)
            hashed.append(declared)
        return hashed

    @staticmethod
    def units(config: PipelineConfig) -> list[tuple[str, tuple[InputFile, ...], str]]:
        """(name, files, fingerprint) of every unit. A file of at least ``shard_bytes`` is its own
        unit, or several when its reader can cut it (``Reader.split``); consecutive smaller files of
        one input share a unit up to ``shard_bytes`` and ``max_files_per_unit`` files, so 100,000
        tiny files are neither 100,000 tasks nor 100,000 tiny shards for every later stage. Sizes
        here are the files' sizes on disk: a compressed file holds more text than that."""
        target, most = config.ingest.shard_bytes, config.ingest.max_files_per_unit
        units = []
        for source_index, source in enumerate(config.inputs):
            groups: list[list[InputFile]] = []
            group_bytes = target  # no open group yet
            checked: set[str] = set()  # the formats this input's keys were checked against
            for item in list_input_files(source):
                known = _has_format(item)
                if known and source.format == "auto" and item.format not in checked:
                    if problem := unread_option(source, item.reader):
                        raise InputError(f"input {source.name!r}, {item.relative}: {problem}")
                    checked.add(item.format)
                split = item.reader.split if known else None
                if item.size >= target:
                    groups.extend([piece] for piece in (split(item, target) if split else [item]))
                    group_bytes = target
                elif group_bytes + item.size < target and len(groups[-1]) < most:
                    groups[-1].append(item)
                    group_bytes += item.size
                else:
                    groups.append([item])
                    group_bytes = item.size
            for index, group in enumerate(groups):
                units.append((f"{source_index:03d}-{index:05d}", tuple(group), _fingerprint(group)))
        return units

    def prepare(self, context: PrepareContext) -> None:
        """Before any unit: the pieces of cut files whose reader indexes them are indexed, at once
        (``stages.ingest_pieces``); nothing to do, and no task, for every other input."""
        prepare_pieces(context.inputs, self.config, context.scratch, context.filesystem, context.map, context.log)

    def run_unit(self, unit, writer: UnitWriter) -> UnitOutput:
        """Read the unit's files into kept shards of about ``shard_bytes`` of text, and its removed
        rows into one file, ``part-<unit>``, or, past ``shard_bytes`` of raw text, more (``_0001``...):
        a file whose records are mostly removed (a wrong ``text_field``, pages with no text) is held
        a part at a time, not whole."""
        kept_files, removed_files, removed, read, stats = [], [], [], 0, Stats()
        spec = writer.spec
        items = tuple(with_before(item, spec.scratch, spec.filesystem, unit.name) for item in unit.source)
        held = held_meta = 0  # text and meta bytes of the removed rows not yet written

        def write_removed() -> None:
            # the first part keeps the name a unit's one removed file has; the others sort after it
            name = f"part-{unit.name}" + (f"_{len(removed_files):04d}" if removed_files else "")
            removed_files.append(writer.write("removed", name, pa.concat_tables(removed)))
            removed.clear()

        for table, removed_rows, records in read_files(items, self.config, limit=unit.limit):
            if table.num_rows:
                kept_files.append(writer.write("kept", f"part-{unit.name}-{len(kept_files):04d}", table))
            if removed_rows.num_rows:
                removed.append(removed_rows)
                held += text_bytes(removed_rows)
                held_meta += pc.sum(pc.binary_length(removed_rows.column("meta"))).as_py() or 0
                if held >= self.config.shard_bytes or held_meta >= META_LIMIT * self.config.shard_bytes:  # as ``Records``
                    write_removed()
                    held = held_meta = 0
            if records is not None:  # a file is done: its counts and stats
                read += records.records
                stats.merge(records.stats)
        if removed:
            write_removed()
        read_bytes = sum(f["bytes"] for f in kept_files + removed_files)
        return UnitOutput(read, read_bytes, kept_files, removed_files, stats)


def _fingerprint(group: list[InputFile]) -> str:
    """What says a unit's input changed: its file's size and mtime (and piece), or for a group a
    digest of every file's, so a manifest line stays short whatever the group's size."""
    parts = [f"{i.size}:{i.mtime_ns}" + ("" if i.piece is None else f":{i.piece}") for i in group]
    if len(parts) == 1:
        return parts[0]
    listing = "\n".join(f"{item.relative}={part}" for item, part in zip(group, parts))
    return "files:" + hashlib.sha256(listing.encode()).hexdigest()[:32]


def _has_format(item: InputFile) -> bool:
    """Whether some reader takes this file (else the unit fails later, naming the file)."""
    try:
        item.format
    except InputError:
        return False
    return True


def list_input_files(source: InputSource) -> list[InputFile]:
    """Expand a source's path (file, directory searched recursively, or glob) into sorted files."""
    fs, path = resolve(source.path)
    is_glob = any(ch in path for ch in "*?[")  # the path on its filesystem: a URI's options follow a "?"
    info = None
    if is_glob:
        root = path.split("*")[0].split("?")[0].split("[")[0].rsplit("/", 1)[0]
        candidates = _files_under(fs, root)
        # `*` stays within one directory level unless the pattern says `**`, as in a shell.
        files = [i for i in candidates if fnmatch.fnmatch(i.path, path)
                 and ("**" in path or i.path.count("/") == path.count("/"))]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"input {source.name!r}: {source.path} does not exist")
        root = path if info.type == pafs.FileType.Directory else posixpath.dirname(path)
        files = _files_under(fs, path) if info.type == pafs.FileType.Directory else [info]
        if info.type == pafs.FileType.Directory:
            patterns = file_patterns(source.format)
            files = [i for i in files if i.path.lower().endswith(patterns)]
    if not files:
        raise InputError(f"input {source.name!r}: no files match {source.path}")
    # decided by the config's form, not by how many files match today, so ids stay stable when a
    # directory gains a second file
    many = is_glob or info.type == pafs.FileType.Directory
    # size and mtime come with the listing: one stat per file would be one request per file on S3
    return [InputFile(source, i.path, _relative(i.path, root), many, i.size or 0,
                      i.mtime_ns if i.mtime_ns is not None else -1)
            for i in sorted(files, key=lambda i: i.path)]


def _relative(path: str, root: str) -> str:
    """``posixpath.relpath(path, root)`` of a file listed under ``root``, at a fraction of its cost
    (planning lists the inputs more than once, and 100,000 files are common)."""
    prefix = root.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else posixpath.relpath(path, root)


def _files_under(fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return [i for i in infos if i.type == pafs.FileType.File and not posixpath.basename(i.path).startswith(".")]


class Records:
    """The records of one file, as a reader hands them over: validated, filed as kept or quarantined,
    and handed out in size-bounded tables."""

    def __init__(self, item: InputFile, config: IngestConfig, carried: "Records | None" = None,
                 budget: int | None = None, shard_limit: float | None = None):
        """``carried``: the Records of the file read before this one in the same unit, whose kept
        rows not yet handed out go on into this file's first shard. ``budget``: the records this
        file may still give (the unit's ``--limit`` less the earlier files'), None for all.
        ``shard_limit``: the kept text bytes that fill the next shard (``shard_limits``),
        ``shard_bytes`` when not given."""
        self.item, self.config, self.budget = item, config, budget
        self.shard_limit = config.shard_bytes if shard_limit is None else shard_limit
        self.kept: dict[str, list] = carried.kept if carried else {name: [] for name in DOCUMENT_SCHEMA.names}
        self.removed: dict[str, list] = {name: [] for name in REMOVED_SCHEMA.names}
        self.removed_chars = self.removed_meta = 0  # of the removed rows' texts and meta not yet taken
        self.removed_parts: list[pa.Table] = []  # removed rows of shard_bytes characters each, to write
        self.kept_bytes = carried.kept_bytes if carried else 0
        self.kept_meta = carried.kept_meta if carried else 0  # characters of the kept rows' meta
        self.seen_ids: set[str] = set()
        self.records = 0
        self.stats = Stats()

    def add(self, doc_id: str | None, text: Any, meta: dict, where: str, raw: str | Callable[[], str],
            checked: tuple[str | None, int] | None = None) -> None:
        """Validate one record and file it as kept or quarantined (``raw``: the record as read, or a
        function that gives it, called only if the record is quarantined). ``checked``: for a text
        handed over as a ``TextRef``, what ``text_problem`` says of it, found by the reader on the
        whole column (``TextRef.checks``)."""
        self.records += 1
        reason, size = self._problem(doc_id, text, checked)
        if reason is None and self._category(meta) not in CATEGORIES:
            reason = "bad_category"
        if reason is None and self.item.source.lang_field:
            reason = self._declare_language(meta)
        if reason is None:
            self.seen_ids.add(doc_id)
            self._append(self.kept, doc_id, text, meta)
            self.kept_bytes += size
            self.kept_meta += len(self.kept["meta"][-1])
        else:
            self._quarantine(reason, self._shown_id(doc_id, where), raw, meta, where)

    def add_rows(self, rows: "PreparedRows", start: int) -> int:
        """Rows ``start...`` of a batch whose ids, texts, meta and checks a reader prepared a column
        at a time (``PreparedRows``), decided exactly as ``add`` decides each record, until a row
        fills a shard or the budget is spent (where ``add``'s caller would cut the shard or stop).
        Returns the row to go on from."""
        stop = len(rows.ids) if self.budget is None else min(len(rows.ids), start + self.budget - self.records)
        kept, source = self.kept, self.item.source.name
        for index in range(start, stop):
            self.records += 1
            doc_id, category = rows.ids[index], rows.categories[index]
            reason, size = self._problem(doc_id, None, rows.checks[index])
            if reason is None and category not in CATEGORIES:
                reason = "bad_category"
            if reason is not None:
                where = f"row {rows.first_row + index}"
                self._quarantine(reason, self._shown_id(doc_id, where), lambda: rows.raw(index), rows.metas[index],
                                 where, category=category)
                continue
            self.seen_ids.add(doc_id)
            kept["id"].append(doc_id)
            kept["text"].append(TextRef(rows.texts, index))
            kept["source"].append(source)
            kept["category"].append(category)
            kept["meta"].append(rows.metas[index])
            self.kept_bytes += size
            self.kept_meta += len(rows.metas[index])
            if self.full():
                return index + 1
        return stop

    def _problem(self, doc_id: str | None, text: Any, checked: tuple[str | None, int] | None) -> tuple[str | None, int]:
        if doc_id is None:
            return "missing_id", 0
        if not _writable(doc_id):
            return "invalid_id", 0
        reason, size = text_problem(text) if checked is None else checked
        if reason is not None:
            return reason, 0
        if size > self.config.max_doc_bytes:
            return "too_large", 0
        if doc_id in self.seen_ids:
            return "duplicate_id", 0
        return None, size

    def _category(self, meta: dict) -> str | None:
        """The record's category: its ``category_field`` when the input has one (the input's
        ``category`` where the field is empty), else the input's."""
        field = self.item.source.category_field
        return record_category(self.item.source, meta.get(field) if field else None)

    def _declare_language(self, meta: dict) -> str | None:
        """Put the record's ``lang_field`` value, normalised, in ``meta["_lang"]`` (not one of
        ``NO_LANGUAGE``); ``bad_lang`` when it is neither empty nor a language code. The base is
        lower-cased because the classifier's labels are (lid.176: ``en``, ``zh``), so ``EN`` and
        ``en`` must meet the same ``languages``."""
        value = meta.get(self.item.source.lang_field)
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str) or not _LANG_CODE.fullmatch(value.strip()):
            return "bad_lang"
        base, _, rest = value.strip().replace("_", "-").partition("-")
        if base.lower() not in NO_LANGUAGE:
            meta["_lang"] = base.lower() + (f"-{rest}" if rest else "")
        return None

    def seen_before(self, ids) -> None:
        """Ids that earlier records of the file hold, read by a reader that starts inside the file
        (a piece of a large Parquet file): a record here with one of them is a ``duplicate_id``."""
        self.seen_ids.update(ids)

    def reject(self, reason: str, raw: str | Callable[[], str], meta: dict, where: str, doc_id: str | None = None) -> None:
        """A record that could not even be parsed: count it and quarantine it."""
        self.records += 1
        self._quarantine(reason, self._shown_id(doc_id, where), raw, meta, where)

    def skip(self, reason: str, raw: str | Callable[[], str], meta: dict, where: str, doc_id: str | None = None) -> None:
        """A record that is not a document by design (a WARC request record, a 404 page, a blocked
        URL): count it and remove it with its reason, whatever ``on_bad_input`` says."""
        self.records += 1
        self._quarantine(reason, self._shown_id(doc_id, where), raw, meta, where, bad=False)

    def _quarantine(self, reason: str, doc_id: str, raw: str | Callable[[], str], meta: dict | str, where: str,
                    bad: bool = True, category: Any = None) -> None:
        """``meta``: the record's meta, or already as its JSON (``add_rows``, which gives its
        ``category`` too)."""
        if bad and self.config.on_bad_input == "fail":
            field = self.item.source.html_field or self.item.source.text_field
            expected = f"; expected a non-empty string in field {field!r}" if reason in TEXT_PROBLEMS else ""
            if reason == "bad_category":
                value = category if isinstance(meta, str) else meta.get(self.item.source.category_field)
                expected = (f"; field {self.item.source.category_field!r} is {value!r}, "
                            f"expected one of {', '.join(CATEGORIES)}")
            if reason == "bad_lang":
                expected = (f"; field {self.item.source.lang_field!r} is {meta.get(self.item.source.lang_field)!r}, "
                            f"expected a language code such as en, zh or zh-Hant")
            detail = (f": {meta['error']}" if reason in ("corrupt_file", "truncated_record", "record_too_large")
                      and "error" in meta else "")
            raise InputError(f"{self.item.path}:{where}: {REASONS[reason]} ({reason}){expected}{detail}")
        text = raw() if callable(raw) else raw
        self._append(self.removed, doc_id, text, meta, category)
        self.removed[REASON_COLUMN].append(reason)
        self.removed_chars += len(text)
        self.removed_meta += len(self.removed["meta"][-1])
        # at this record, however the reader yields; meta counted apart, as in ``full``
        if self.removed_chars >= self.config.shard_bytes or self.removed_meta >= META_LIMIT * self.config.shard_bytes:
            self.removed_parts.append(self.take_removed())

    def fallback_id(self, where: str) -> str:
        return f"{self.item.source.name}/{self.item.relative}:{where}"

    def _shown_id(self, doc_id: str | None, where: str) -> str:
        """The id a quarantined record is filed under: its own, or where it is in the file when it
        has none or one that cannot be written (``invalid_id``)."""
        return doc_id if doc_id and _writable(doc_id) else self.fallback_id(where)

    def _append(self, columns: dict, doc_id: str, text: str, meta: dict | str, category: Any = None) -> None:
        columns["id"].append(doc_id)
        columns["text"].append(text)
        columns["source"].append(self.item.source.name)
        if not isinstance(meta, str):
            category, meta = self._category(meta), _dump_meta(meta)
        columns["category"].append(category if category in CATEGORIES else None)
        columns["meta"].append(meta)

    def full(self) -> bool:
        """Whether the kept rows fill a shard: ``shard_limit`` of text, or ``META_LIMIT`` times
        ``shard_bytes`` characters of meta."""
        return self.kept_bytes >= self.shard_limit or self.kept_meta >= META_LIMIT * self.config.shard_bytes

    def take_kept(self) -> pa.Table:
        table = pa.Table.from_pydict({**self.kept, "text": _text_array(self.kept["text"])}, schema=DOCUMENT_SCHEMA)
        self.kept = {name: [] for name in DOCUMENT_SCHEMA.names}
        self.kept_bytes = self.kept_meta = 0
        return table

    def take_removed(self) -> pa.Table:
        """The removed rows not yet taken."""
        if not self.removed["id"]:  # most files: no table built for each of 100,000 small ones
            return _NO_REMOVED
        table = pa.Table.from_pydict(self.removed, schema=REMOVED_SCHEMA)
        self.removed = {name: [] for name in REMOVED_SCHEMA.names}
        self.removed_chars = self.removed_meta = 0
        return table


def _writable(doc_id: str) -> bool:
    """Whether an id can be written as UTF-8: not when a JSON escape made a lone surrogate of it."""
    if doc_id.isascii():
        return True
    try:
        doc_id.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_problem(text: Any) -> tuple[str | None, int]:
    """Why a record's text is no document (``missing_text``, ``non_string_text``, ``invalid_utf8``,
    ``empty_text``) or None, and its UTF-8 bytes (0 with a reason)."""
    if text is None:
        return "missing_text", 0
    if not isinstance(text, str):
        return "non_string_text", 0
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates from JSON escapes such as "\ud800"
        return "invalid_utf8", 0
    # NUL is not whitespace to str.strip(), but a text of NULs is no more a document than a blank one.
    # (strip() returns the text itself when nothing is stripped: no copy of a long text unless it has a NUL.)
    stripped = text.strip()
    if not stripped or ("\x00" in stripped and not stripped.replace("\x00", "").strip()):
        return "empty_text", 0
    return None, size


# A character that is neither NUL nor whitespace to str.strip() (str.isspace, every one of which is
# below U+3001): a text holding one is not empty, as ``text_problem`` decides.
_NOT_BLANK = "[^\\x{0}" + "".join(f"\\x{{{c:x}}}" for c in range(0x3001) if chr(c).isspace()) + "]"


class TextRef:
    """Row ``index`` of a reader's Arrow string array: a text that goes into a shard without
    becoming a Python string (decoding and re-encoding every text was a third of ingest's time)."""

    __slots__ = ("array", "index")

    def __init__(self, array: pa.Array, index: int):
        self.array, self.index = array, index

    @staticmethod
    def checks(texts: pa.Array) -> list[tuple[str | None, int]] | None:
        """``text_problem`` of every row of a string array, decided on the whole array; None when
        it is not valid UTF-8 (its rows must then go through Python one by one)."""
        try:
            texts.validate(full=True)
        except pa.ArrowInvalid:
            return None
        sizes = pc.binary_length(texts).fill_null(0).to_numpy(zero_copy_only=False).tolist()
        missing = texts.is_null().to_numpy(zero_copy_only=False).tolist()
        filled = pc.match_substring_regex(texts.fill_null(""), _NOT_BLANK).to_numpy(zero_copy_only=False).tolist()
        return [("missing_text", 0) if gone else (None, size) if full else ("empty_text", 0)
                for gone, full, size in zip(missing, filled, sizes)]


def _text_array(texts: list) -> pa.Array:
    """The kept texts as one string array: each run of ``TextRef``s into one array taken from it,
    each run of Python strings converted."""
    chunks = []
    for _, run in groupby(texts, key=lambda text: id(text.array) if isinstance(text, TextRef) else None):
        run = list(run)
        if not isinstance(run[0], TextRef):
            chunks.append(pa.array(run, pa.string()))
        elif run[-1].index - run[0].index == len(run) - 1:  # consecutive rows (indices only grow): no copy
            chunks.append(run[0].array.slice(run[0].index, len(run)))
        else:
            chunks.append(run[0].array.take(pa.array([text.index for text in run], pa.int64())))
    return pa.concat_arrays([chunk.cast(pa.string()) for chunk in chunks]) if chunks else pa.array([], pa.string())


# json.dumps with options builds an encoder per call; one per process is a third of the cost per record.
# allow_nan=False: Python would write NaN and Infinity, which strict JSON readers (orjson, DuckDB,
# JavaScript) refuse; ``_finite`` writes such a number (a pandas NaN in a Parquet column, NaN or
# 1e400 in a JSON line) as null, as JavaScript's JSON.stringify does.
_META_JSON = json.JSONEncoder(ensure_ascii=False, sort_keys=True, default=str, allow_nan=False).encode
_META_JSON_ASCII = json.JSONEncoder(sort_keys=True, default=str, allow_nan=False).encode
_JSON_STRING = json.encoder.encode_basestring  # what _META_JSON writes for a str (ensure_ascii=False)


def _dump_meta(meta: dict) -> str:
    try:
        text = _META_JSON(meta)
    except ValueError:  # a NaN or infinite number
        meta = _finite(meta)
        text = _META_JSON(meta)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate in some field: escape rather than fail the shard
        text = _META_JSON_ASCII(meta)
    return text


def _json_values(values: list) -> list[str]:
    """Each value as ``_META_JSON`` writes it, NaN and infinities as null."""
    try:
        return [_META_JSON(value) for value in values]
    except ValueError:
        return [_META_JSON(_finite(value)) for value in values]


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float inside it replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def record_category(source: Any, value: Any) -> Any:
    """A record's category from its ``category_field`` value, case and surrounding spaces aside
    (``Web`` is ``web``): the input's ``category`` where the value is missing or blank."""
    if isinstance(value, str):
        value = value.strip().lower()
    return source.category if value is None or value == "" else value


def meta_json_rows(item: InputFile, batch: pa.RecordBatch, skip: set, where_key: str, first: int) -> list[str] | None:
    """``_dump_meta(record_meta(...))`` of every row of ``batch`` (``first``: the first row's number),
    built a column at a time: JSON with sorted keys is each key's encoded name and value in key
    order, so encoding each column's values once gives the same text as encoding each record.
    None when a row's dict would not hold every column (two columns of one name)."""
    names = [name for name in batch.schema.names if name not in skip and name != "_ingest"]
    if len(set(names)) != len(names):
        return None
    columns = {"_ingest": [f'{{"file": {_JSON_STRING(item.relative)}, "{where_key}": {row}}}'
                           for row in range(first, first + batch.num_rows)]}
    for name in names:
        values, kind = batch.column(name).to_pylist(), batch.schema.field(name).type
        # Arrow decodes strings strictly, so none holds a lone surrogate: _dump_meta's fallback never applies
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            columns[name] = ["null" if value is None else _JSON_STRING(value) for value in values]
        else:
            columns[name] = _json_values(values)
    keys = sorted(columns)
    prefixes = [_JSON_STRING(key) + ": " for key in keys]
    return ["{" + ", ".join(map(str.__add__, prefixes, values)) + "}" for values in zip(*(columns[key] for key in keys))]


@dataclass
class PreparedRows:
    """One batch of records as columns, for ``Records.add_rows``: each row's id (None: missing),
    text (row of ``texts``), ``TextRef.checks`` result, meta JSON and category; ``raw(index)`` gives a
    quarantined row's raw content."""

    ids: list[str | None]
    texts: pa.Array
    checks: list[tuple[str | None, int]]
    metas: list[str]
    categories: list[Any]
    first_row: int
    raw: Callable[[int], str]


def read_files(items: tuple[InputFile, ...], config: IngestConfig,
               limit: int | None = None) -> Iterator[tuple[pa.Table, pa.Table, Records | None]]:
    """The files of one unit in order, their kept rows cut into shards across file boundaries:
    yields (kept table, no rows, None) for each full shard, (no rows, removed rows, None) for each
    ``shard_bytes`` of removed raw text (characters, cut at the record that fills them), and (empty
    or last table, the rest of the removed rows, records) once per file as it ends (its counts are
    then complete). ``limit``: records of the whole unit."""
    carried, seen, shards, limits = None, 0, 0, shard_limits(items, config.shard_bytes)
    for position, item in enumerate(items):
        records = Records(item, config, carried, None if limit is None else limit - seen, limits(shards))
        for _ in item.reader.read(item, records):
            if limit is not None and seen + records.records >= limit:
                break
            while records.removed_parts:
                yield _NO_KEPT, records.removed_parts.pop(0), None
            if records.full():
                yield records.take_kept(), _NO_REMOVED, None
                shards += 1
                records.shard_limit = limits(shards)
        seen += records.records
        while records.removed_parts:
            yield _NO_KEPT, records.removed_parts.pop(0), None
        last = position == len(items) - 1 or (limit is not None and seen >= limit)
        yield (records.take_kept() if last else _NO_KEPT), records.take_removed(), records
        if last:
            return
        carried = records


def shard_limits(items: tuple[InputFile, ...], target: int) -> Callable[[int], float]:
    """The kept text bytes that fill the n-th shard of this unit: ``target`` (``shard_bytes``), or,
    where the readers of all its files tell how much text they hold (``Reader.text_bytes``), that
    total over the nearest whole number of shards. So 9 MB of text at a 5 MB target is two shards
    of 4.5 MB, not 5 and 4, and 5.6 MB is one shard, not 5 and 0.6: every later stage then runs
    fewer and evener units. The last of those shards takes at least ``target`` and a quarter more
    than its share, for text the estimate missed (a dictionary-encoded Parquet column stores a
    repeated text once), and any shard after it ``target``: an estimate that is far too low cuts
    no smaller shards than no estimate does. A shard holds 3/4 to 15/8 of the target. A unit of
    more than ``TEXT_BYTES_FILES`` files (small ones) is cut at ``target``."""
    if len(items) > TEXT_BYTES_FILES:
        return lambda shard: target
    total = 0
    for item in items:
        estimate = _has_format(item) and item.reader.text_bytes
        size = estimate(item) if estimate else None
        if size is None:
            return lambda shard: target
        total += size
    count = max(1, round(total / target))
    even = total / count
    return lambda shard: even if shard < count - 1 else max(even * 1.25, target) if shard == count - 1 else target
