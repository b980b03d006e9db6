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
        if not isinstance(record, dict):
            records.reject("not_an_object", line, provenance, where)
            continue
        add_record(item, records, record, where, "line", number, line)
        yield


READER = Reader(name="jsonl", patterns=SUFFIXES, read=_read_jsonl, options=OPTIONS)
