"""The input-reader contract: how the source stage reads one input format.

A reader is one file that defines a ``Reader`` and one line in ``pipeline.registry.READERS``::

    def read_csv(item: InputFile, records) -> Iterator[None]:
        fs, _ = storage.resolve(item.source.path)
        with fs.open_input_stream(item.path) as stream:
            for number, row in enumerate(csv.DictReader(io.TextIOWrapper(stream)), start=1):
                where = str(number)
                records.add(record_id(item, row, where), row.get(item.source.text_field),
                            record_meta(item, row, "line", number), where, json.dumps(row))
                yield  # once per record: the caller cuts shards and honours --limit between them

    READER = Reader(name="csv", patterns=(".csv",), read=read_csv)

``patterns`` are the file-name endings the reader takes (an input with ``format: auto`` is read by the
first registered reader whose pattern matches; a directory input lists the files some reader takes).
``read(item, records)`` feeds every record of one file to ``records.add(id, text, meta, where, raw)``
(validation, ids, quarantine and shard cutting are the source stage's), ``records.reject(reason, raw,
meta, where)`` for one it cannot parse (bad input: with ``on_bad_input: fail`` the run stops), or
``records.skip(reason, raw, meta, where)`` for one that is not a document by design (a WARC request
record, a 404 page: removed with its reason, never an error), and yields after each.
``split(item, target_bytes)`` cuts one large file into pieces of about ``target_bytes`` (each an
``InputFile`` with its ``piece``, which ``read`` then honours), so a big file is several units of
work; a reader without it reads a file as one unit, and the source stage groups small files into
one unit up to the same size. A reader whose pieces must know what the pieces before them hold
(a JSON-lines piece: the number of its first line, the ids already seen) also gives
``index(item, ingest_config)``: a piece's ``PieceIndex``. The source stage runs it on every piece of
a file at once, in a pass before it reads any, and hands each piece the sum of those before it as
``item.before`` (a ``Before``); with ``index_for_ids`` (Parquet: a piece knows its rows' numbers
from the footer) only for an input with an ``id_field``. ``text_bytes(item)``, where a reader can tell cheaply (a Parquet footer),
says about how many text bytes a file (or piece) holds: the source stage then cuts a unit's kept rows
into shards of equal size, the nearest count to ``shard_bytes`` each, instead of full shards and a
small last one. It asks only for units of at most ``TEXT_BYTES_FILES`` files, so a reader may keep
what it read for the answer (a footer) until it reads those files. ``options`` are the
optional input keys the reader reads (``text_field``, ``id_field``...); an input that sets another
one is a config error naming the key.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Callable, Iterator

from pipeline import registry
from pipeline.errors import InputError


@dataclass(frozen=True)
class InputFile:
    """One unit of ingest work: a file of one source, with its path relative to the source root.

    ``many_files``: the source's path is a directory or a glob (it may hold several files), so ids
    taken from its ``id_field`` carry the file path to stay unique across files."""

    source: Any  # pipeline.config.InputSource
    path: str
    relative: str
    many_files: bool = False
    size: int = -1  # bytes on storage, from the listing (-1: not listed)
    mtime_ns: int = -1
    piece: Any = None  # the part of the file this unit reads, when its reader splits it (``Reader.split``)
    before: "Before | None" = None  # what the pieces before this one hold (``Reader.index``), set to read it

    @cached_property  # asked several times per file by planning and ingest: 100,000 files are common
    def format(self) -> str:
        if self.source.format != "auto":
            return self.source.format
        name = self.path.lower()
        for reader in registry.readers():
            if name.endswith(reader.patterns):
                return reader.name
        raise InputError(f"{self.path}: cannot tell the format from the name; set `format` for source {self.source.name!r}")

    @property
    def reader(self) -> "Reader":
        return registry.reader(self.format)


@dataclass(frozen=True)
class PieceIndex:
    """What one piece of a file holds that the pieces after it need: how many records it numbers
    (a JSON-lines piece: its lines, blank ones included) and the ids its records hold."""

    records: int
    ids: list[str]


@dataclass(frozen=True)
class Before:
    """What the pieces of a file before this one hold: ``first``, the number this piece's first record
    takes (its line number in the whole file), and ``seen``, the ids earlier records hold that a
    record of this piece may hold too (those a record here then repeats are ``duplicate_id``)."""

    first: int
    seen: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reader:
    name: str
    patterns: tuple[str, ...]
    read: Callable[[InputFile, Any], Iterator[None]]
    split: Callable[[InputFile, int], list[InputFile]] | None = None  # None: the file is read whole
    index: Callable[[InputFile, Any], PieceIndex] | None = None  # None: a piece needs nothing from those before it
    index_for_ids: bool = False  # True: a piece numbers its records itself, so only an id_field needs ``index``
    text_bytes: Callable[[InputFile], int | None] | None = None  # None: unknown before reading
    options: tuple[str, ...] = ("text_field", "id_field")


# the most files of a unit whose text the source stage asks their readers about (``Reader.text_bytes``)
TEXT_BYTES_FILES = 64

# every input key but these is a reader's option (pipeline.config.InputSource)
_EVERY_READER = {"name", "path", "category", "format"}


def unread_option(source: Any, reader: Reader) -> str | None:
    """``"<key>: ..."`` for the first key the input sets that its reader does not read (for a reader
    that takes ``html_field``, ``extractor`` without one), else None."""
    given = _given(source)
    unread = sorted(given - _EVERY_READER - set(reader.options))
    if unread:
        takes = ", ".join(reader.options) or "none of the optional keys"
        return f"{unread[0]}: not read by the {reader.name} reader (it takes {takes}); remove it"
    if "extractor" in given and "html_field" in reader.options and source.html_field is None:
        return f"extractor: the {reader.name} reader extracts only an html_field's HTML; set html_field or remove it"
    return None


def _given(source: Any) -> set[str]:
    """The keys an input sets to something other than their default: one given its default reads as
    not given, so a config written out whole (``model_dump()``, every default in it) loads again."""
    fields = type(source).model_fields
    return {key for key in source.model_fields_set
            if getattr(source, key) != fields[key].get_default(call_default_factory=True)}


def file_patterns(format: str) -> tuple[str, ...]:
    """The file-name endings a directory input of this format lists: its reader's, or every reader's."""
    if format != "auto":
        return registry.reader(format).patterns
    return tuple(pattern for reader in registry.readers() for pattern in reader.patterns)


def record_id(item: InputFile, record: dict, where: str) -> str | None:
    """The document id (see ``stages.ingest``), or None when the id field has no value."""
    field = item.source.id_field
    if field is None:
        return f"{item.source.name}/{item.relative}:{where}"
    return record_ids(item, [record.get(field)])[0]


def record_ids(item: InputFile, values: list) -> list[str | None]:
    """``record_id`` of each value of the ``id_field`` column (a source with one): the same ids from
    a whole column at once. A value is written as ``str`` writes it, but a boolean, an object or an
    array as JSON (``true``, ``{"a":1}``), not as Python's repr (``True``, ``{'a': 1}``)."""
    prefix = f"{item.source.name}/{item.relative}#" if item.many_files else f"{item.source.name}/"
    return [None if value is None or value == "" else
            f"{prefix}{value if type(value) in _AS_STR else _id_json(value)}" for value in values]


_AS_STR = (str, int)  # by far the most ids: written as they are, without a call


def _id_json(value) -> str:
    """An id value that is neither a string nor an integer, as ``record_ids`` writes it."""
    if isinstance(value, (bool, dict, list, tuple)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return str(value)


def record_meta(item: InputFile, record: dict, where_key: str, where: int) -> dict:
    """Every field but the text (or the HTML it is extracted from) and the id, plus where the record
    came from (``_ingest``)."""
    skip = {item.source.html_field or item.source.text_field, item.source.id_field}
    meta = {k: v for k, v in record.items() if k not in skip}
    meta["_ingest"] = {"file": item.relative, where_key: where}
    return meta
