"""JSON Lines (plain, .gz, .zst): one record per line; a damaged compressed file keeps every record
before the damage and quarantines the rest as one ``corrupt_file`` row. With ``html_field`` or
``url_filter``, records go through ``stages.readers.web.add_record``."""
from __future__ import annotations

import json
from typing import Iterator

from pipeline.readers import InputFile, Reader
from pipeline.storage import resolve
from stages.readers.common import CorruptFile, Lines, decompressed, reject_rest
from stages.readers.web import add_record

SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson", ".jsonl.zstd")
OPTIONS = ("text_field", "id_field", "category_field", "lang_field", "html_field", "extractor", "url_filter")
# Deeper records are malformed_json: far below where Python's decoder runs out of stack (about 950
# levels) and far above any real record's nesting.
MAX_DEPTH = 200


def _read_jsonl(item: InputFile, records) -> Iterator[None]:
    fs, _ = resolve(item.source.path)
    with decompressed(fs, item.path) as chunks:
        lines = Lines(chunks)
        try:
            yield from _parse_jsonl(item, records, lines)
        except CorruptFile as damage:
            reject_rest(item, records, damage, lines.offset, lines.pending, lines.count + 1)
            yield


def _parse_jsonl(item: InputFile, records, lines: Iterator[bytes]) -> Iterator[None]:
    for number, raw_line in enumerate(lines, start=1):
        if not raw_line.strip():
            records.stats.add("blank_lines_skipped", 1)
            continue
        where = str(number)
        provenance = {"_ingest": {"file": item.relative, "line": number}}
        try:
            line = raw_line.decode("utf-8")
        except UnicodeDecodeError as error:
            provenance["error"] = f"invalid UTF-8 at byte {error.start} of the line"
            records.reject("invalid_utf8", raw_line.decode("utf-8", "replace"), provenance, where)
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            provenance["error"] = f"{error.msg} at column {error.colno}"
            records.reject("malformed_json", line, provenance, where)
            continue
        except RecursionError:  # Python's decoder recurses once per level of arrays and objects
            record = None
        if record is None or _too_deep(record):
            provenance["error"] = f"nested more than {MAX_DEPTH} levels deep"
            records.reject("malformed_json", line, provenance, where)
            continue
        if not isinstance(record, dict):
            records.reject("not_an_object", line, provenance, where)
            continue
        add_record(item, records, record, where, "line", number, line)
        yield


def _too_deep(record) -> bool:
    """Whether a decoded record nests arrays and objects more than ``MAX_DEPTH`` levels deep. The
    decoder itself fails only where Python's stack runs out, which depends on where it is called
    (in a Ray worker, in a fused task, in process): a fixed limit keeps the same lines out everywhere."""
    if not isinstance(record, dict):
        return False
    stack = [(value, 2) for value in record.values() if type(value) in (list, dict)]  # most records: none
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = value.values() if type(value) is dict else value
        stack.extend((child, depth + 1) for child in children if type(child) in (list, dict))
    return False


READER = Reader(name="jsonl", patterns=SUFFIXES, read=_read_jsonl, options=OPTIONS)
