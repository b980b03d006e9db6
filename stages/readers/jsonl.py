"""JSON Lines (plain, .gz, .zst): one record per line; a damaged compressed file keeps every record
before the damage and quarantines the rest as one ``corrupt_file`` row. With ``html_field`` or
``url_filter``, records go through ``stages.readers.web.add_record``.

A plain (uncompressed) file larger than a unit is cut by byte range (``split``) into pieces of about
the target, each a unit of its own: a piece holds the lines that start in its range, and reads on to
the end of its last one. Lines keep their numbers in the whole file, so ids and ``_ingest.line`` do
not depend on how the file was cut: before any piece is read, the source stage runs ``index`` on
every piece (its line count and ids, at once on the workers) and hands each piece the number of its
first line and the ids before it (``pipeline.readers.Before``). A compressed file cannot be entered
in the middle, and is read whole."""
from __future__ import annotations

import dataclasses
import json
from typing import Callable, Iterator

import orjson

from pipeline.config import IngestConfig
from pipeline.readers import InputFile, PieceIndex, Reader, record_ids
from pipeline.storage import resolve
from stages.readers.common import READ, CorruptFile, Lines, decompressed, reject_rest, too_large, unread_limit
from stages.readers.web import add_record

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson", ".jsonl.zstd")
OPTIONS = ("text_field", "id_field", "category_field", "lang_field", "html_field", "extractor", "url_filter")
PLAIN = (".jsonl", ".ndjson")  # the suffixes of files that can be cut by byte range
# A byte order mark before a line (some Windows tools write one before the first; files joined with
# `cat` have one before the first line of each) is not part of the record; json.loads would call the
# line malformed.
BOM = b"\xef\xbb\xbf"
# Deeper records are malformed_json: far below where Python's decoder runs out of stack (about 950
# levels) and far above any real record's nesting.
MAX_DEPTH = 200
BIG = 2.0 ** 63  # orjson reads an integer literal beyond 64 bits as a float, Python as an exact int
PLAIN_VALUES = {str, int, bool, type(None)}  # values orjson and Python's decoder always read alike


def _read_jsonl(item: InputFile, records) -> Iterator[None]:
    if item.piece is not None:
        if item.before is None:  # the source stage's pass over the pieces did not run: a bug
            raise RuntimeError(f"{item.path}: piece {item.piece} read without the line count of the pieces before it")
        records.seen_before(item.before.seen)
        lines = Lines(_piece_chunks(item), unread_limit(records.config))
        yield from _parse_jsonl(item, records, lines, item.before.first)
        return
    fs, _ = resolve(item.source.path)
    with decompressed(fs, item.path) as chunks:
        lines = Lines(chunks, unread_limit(records.config))
        try:
            yield from _parse_jsonl(item, records, lines)
        except CorruptFile as damage:
            reject_rest(item, records, damage, lines.offset, lines.pending, lines.count + 1)
            yield


def _parse_jsonl(item: InputFile, records, lines: Lines, first: int = 1) -> Iterator[None]:
    for number, raw_line in enumerate(lines, start=first):
        if raw_line.startswith(BOM):
            raw_line = raw_line[len(BOM):]
        if not raw_line.strip():
            records.stats.add("blank_lines_skipped", 1)
            continue
        where = str(number)
        provenance = {"_ingest": {"file": item.relative, "line": number}}
        if lines.cut:
            too_large(records, raw_line, lines.cut, provenance, where)
            continue
        record, reason, error, line = _parse_line(raw_line)
        if reason is not None:
            if error is not None:
                provenance["error"] = error
            records.reject(reason, line, provenance, where)
            continue
        add_record(item, records, record, where, "line", number, line)
        yield


def _parse_line(raw_line: bytes) -> tuple[dict | None, str | None, str | None, str | Callable[[], str]]:
    """(record, None, None, the line as text or a function that gives it) for a line that is a JSON
    object, else (None, the reason it is bad input, the error to show or None, the line as text):
    UTF-8 first, then JSON. The pass over a cut file's pieces (``_index``) takes ids by the same rules.

    orjson decodes first: at twice the speed of Python's decoder, the same values for strict JSON.
    What it refuses (malformed lines, and what only Python's decoder takes: NaN, 1e400, escaped lone
    surrogates) and what it may read otherwise (integers beyond 64 bits, which it makes floats) goes
    to Python's decoder, whose record or reason stands as it always did."""
    try:
        record = orjson.loads(raw_line)
    except orjson.JSONDecodeError:
        pass
    else:
        if type(record) is dict and not _unlike_python(record):
            return record, None, None, lambda: raw_line.decode("utf-8")
    try:
        line = raw_line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, "invalid_utf8", f"invalid UTF-8 at byte {error.start} of the line", raw_line.decode("utf-8", "replace")
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return None, "malformed_json", f"{error.msg} at column {error.colno}", line
    except RecursionError:  # Python's decoder recurses once per level of arrays and objects
        return None, "malformed_json", f"nested more than {MAX_DEPTH} levels deep", line
    if not isinstance(record, dict):
        return None, "not_an_object", None, line
    if _too_deep(record):
        return None, "malformed_json", f"nested more than {MAX_DEPTH} levels deep", line
    return record, None, None, line


def _too_deep(record: dict) -> bool:
    """Whether a decoded record nests arrays and objects more than ``MAX_DEPTH`` levels deep. The
    decoder itself fails only where Python's stack runs out, which depends on where it is called
    (in a Ray worker, in a fused task, in process): a fixed limit keeps the same lines out everywhere."""
    stack = [(value, 2) for value in record.values() if type(value) in (list, dict)]  # most records: none
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if type(value) is dict else value
        stack.extend((child, depth + 1) for child in children if type(child) in (list, dict))
    return False


def _unlike_python(record: dict) -> bool:
    """Whether Python's decoder might read ``record``'s line otherwise than orjson did: a float of
    2**63 or more may have been an integer literal that Python keeps exact (a real float so large
    is merely decoded twice), and a record nested deeper than ``_too_deep`` allows is Python's
    decoder's to judge. Each object or array is looked at a whole at a time (its values' types,
    its floats' largest magnitude): most records hold only plain values, and an embedding of
    1,536 floats costs no loop in Python."""
    containers = [(record, 1)]
    while containers:
        container, depth = containers.pop()
        if depth > MAX_DEPTH:
            return True
        items = container.values() if type(container) is dict else container
        kinds = set(map(type, items))
        if kinds <= PLAIN_VALUES:
            continue
        if float in kinds:
            floats = items if len(kinds) == 1 else [item for item in items if type(item) is float]
            if max(map(abs, floats)) >= BIG:
                return True
        if dict in kinds or list in kinds:
            containers.extend((item, depth + 1) for item in items if type(item) is dict or type(item) is list)
    return False


def _split(item: InputFile, target_bytes: int) -> list[InputFile]:
    """A plain file of at least one and a half targets as byte ranges (start, end) of about equal
    size, as many as it holds targets, rounded; any other file whole."""
    count = round(item.size / target_bytes)
    if count <= 1 or not item.path.lower().endswith(PLAIN):
        return [item]
    bounds = [item.size * k // count for k in range(count + 1)]
    return [dataclasses.replace(item, piece=(start, end)) for start, end in zip(bounds, bounds[1:])]


def _piece_bytes(item: InputFile) -> int | None:
    """A piece's bytes on disk, for the source stage's even shards: about its text and a little more
    (the JSON around it), so a piece of up to one and a half targets is one shard, not a full one and
    a small rest. None for a file read whole: its size may be compressed."""
    return None if item.piece is None else item.piece[1] - item.piece[0]


def _piece_chunks(item: InputFile) -> Iterator[bytes]:
    """The bytes of the lines that start in the piece's range: from the first line start at or after
    its start to the first at or after its end (the end of the last line, which may lie past it)."""
    fs, _ = resolve(item.source.path)
    start, end = item.piece
    with fs.open_input_file(item.path) as source:
        begin = _line_start(source, start, end)
        if begin >= end:  # no line starts in the piece: it lies inside one line, read by an earlier piece
            return
        stop = _line_start(source, end, source.size())
        source.seek(begin)
        left = stop - begin
        while left > 0:
            chunk = source.read(min(READ, left))
            if not chunk:
                raise OSError(f"{item.path}: the file ended at byte {stop - left}, before byte {stop}: "
                              f"it changed while it was read")
            left -= len(chunk)
            yield chunk


def _line_start(source, offset: int, bound: int) -> int:
    """The first byte at or after ``offset`` that starts a line (0, or the byte after the first newline
    at or after ``offset - 1``), or ``bound`` if none does before it: the search reads no further, so
    the pieces inside one long line cost a read of their own range, not of the rest of the line."""
    if offset <= 0:
        return 0
    position = offset - 1
    source.seek(position)
    while position < bound:
        chunk = source.read(min(1 << 16, bound - position))
        if not chunk:
            break
        found = chunk.find(b"\n")
        if found >= 0:
            return min(position + found + 1, bound)
        position += len(chunk)
    return bound


def _index(item: InputFile, config: IngestConfig) -> PieceIndex:
    """A piece's line count and the ids its records hold (every line that is a JSON object with a
    value in the ``id_field``, whatever else the source stage then finds wrong with it); no ids
    without an ``id_field``: ids are then line numbers, unique by construction."""
    chunks = _piece_chunks(item)
    field = item.source.id_field
    if field is None:
        lines, last = 0, b"\n"
        for chunk in chunks:
            lines += chunk.count(b"\n")
            last = chunk[-1:]
        return PieceIndex(lines + (last != b"\n"), [])
    lines, values = 0, []
    reader = Lines(chunks, unread_limit(config))
    for raw_line in reader:
        lines += 1
        if reader.cut:  # not read, so no id: ``record_too_large``
            continue
        if raw_line.startswith(BOM):
            raw_line = raw_line[len(BOM):]
        record, reason, _, _ = _parse_line(raw_line)
        if reason is None and field in record:  # a line that is no JSON object has no id
            values.append(record[field])
    return PieceIndex(lines, [doc_id for doc_id in record_ids(item, values) if doc_id is not None])


READER = Reader(name="jsonl", patterns=SUFFIXES, read=_read_jsonl, options=OPTIONS, split=_split, index=_index,
                text_bytes=_piece_bytes)
