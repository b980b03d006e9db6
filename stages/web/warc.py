"""Streaming WARC/WET reading: one record in memory at a time, every record accounted for.

``iter_warc_records(source)`` and ``iter_wet_records(source)`` take a path (``.warc``, ``.warc.gz``,
``.wet``, ``.wet.gz``) or a binary stream and yield, for each WARC record, exactly one of:

- ``WebDocument(text, meta)``: a page's main text; ``meta`` has ``url``, ``domain``, ``date``
  (WARC-Date, ISO 8601), ``record_id`` (WARC-Record-ID), ``content_language`` (Common Crawl's
  ``WARC-Identified-Content-Language``, when present), ``http_content_language`` (the HTTP
  ``Content-Language`` header, when present), ``http_status``, ``charset``, ``method``, ``offset``
  (the record's position in the decompressed stream);
- ``WebRemoval(reason, meta, raw)``: a record that is not a document, with a reason from ``REASONS``.

So records in = documents + removals, always (``ReadStats.check``); nothing is dropped silently.

Parsing is FastWARC's (Rust; 4x warcio's records/s on the dev files, docs/web.md). Gzip is
decompressed here, member by member with zlib, instead of by FastWARC: FastWARC (like warcio)
stops silently at a truncated last member, and a corrupt member ends its iteration with an error
that does not say where. Here every record read before the damage is yielded as usual; a record
cut short is ``truncated_record``, and when the stream ends inside a member (truncated file) or a
member cannot be decompressed (corrupt file), or bytes that are no WARC record stand where one
should start (FastWARC raises ``OSError``), one more ``truncated_record`` removal stands for the
unreadable rest, with the byte offsets and the error in its meta.
"""
from __future__ import annotations

import gzip
import io
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator, Union
from urllib.parse import urlsplit

from stages.web.html import ExtractResult, extract

REASONS = {
    "not_html": "a response whose payload is not HTML (PDF, image, JSON...)",
    "http_status": "a response whose HTTP status is not 200 (redirects, errors)",
    "no_text": "no main text in the page (or an empty WET conversion record)",
    "charset_undecodable": "the payload decodes under no declared or detected charset",
    "truncated_record": "the record, or the rest of the file from it on, is cut short or corrupt",
    "skipped_warcinfo": "a warcinfo record (about the file, not a page)",
    "skipped_request": "an HTTP request record",
    "skipped_metadata": "a metadata record (crawler's notes on a fetch)",
    "skipped_revisit": "a revisit record (a duplicate payload, no content of its own)",
    "skipped_other": "a record of another type (resource, continuation, unknown...)",
    "url_blocked": "the URL matched a block list rule (only with a url_filter)",
}

HTML_TYPES = ("text/html", "application/xhtml+xml")
Source = Union[str, os.PathLike, BinaryIO]


@dataclass(frozen=True)
class WebDocument:
    text: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class WebRemoval:
    """``raw``: up to ``raw_limit`` bytes of the record's payload, for the removed row's text."""

    reason: str
    meta: dict[str, Any]
    raw: bytes = b""


@dataclass
class ReadStats:
    """Counters of one file: records by WARC type, documents, removals by reason."""

    records: int = 0
    documents: int = 0
    by_type: Counter = field(default_factory=Counter)
    removed: Counter = field(default_factory=Counter)
    by_method: Counter = field(default_factory=Counter)

    def check(self) -> None:
        """Conservation: records in = documents out + records removed with a reason."""
        removed = sum(self.removed.values())
        if self.records != self.documents + removed:
            raise AssertionError(f"{self.records} records != {self.documents} documents + {removed} removed")

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "documents": self.documents, "by_type": dict(self.by_type),
                "removed": dict(self.removed), "by_method": dict(self.by_method)}


class _ForwardSeek(io.RawIOBase):
    """FastWARC asks its Python stream for ``tell``/``seek`` (and panics when they are missing):
    report the position and allow forward seeks (by reading), which is all a stream can do."""

    out = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.out

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.out + offset if whence == io.SEEK_CUR else None
        if target is None or target < self.out:
            raise io.UnsupportedOperation("only forward seeks on a WARC stream")
        buffer = bytearray(1 << 16)
        while self.out < target:
            n = self.readinto(memoryview(buffer)[: min(len(buffer), target - self.out)])
            if not n:
                break
        return self.out


class _GzipMembers(_ForwardSeek):
    """A readable stream of the decompressed gzip members of ``raw``, one after another.

    A truncated or corrupt member ends the stream (EOF), never an exception: ``error`` then says
    what happened and ``error_offset`` the compressed offset of the member it happened in;
    ``complete_end`` is the decompressed offset where the last complete member ended.
    """

    CHUNK = 1 << 16

    def __init__(self, raw: BinaryIO):
        self.raw = raw
        self.decomp = zlib.decompressobj(wbits=31)
        self.pending = b""
        self.consumed = 0  # compressed bytes fed to the current and earlier members
        self.member_start = 0
        self.out = 0  # decompressed bytes handed out
        self.produced = 0  # decompressed bytes produced by complete members and the current one
        self.complete_end = 0
        self.error: str | None = None
        self.error_offset: int | None = None
        self.eof = False

    def readable(self) -> bool:
        return True

    def _fill(self) -> None:
        while not self.pending and not self.eof:
            data = self.decomp.unconsumed_tail or self.raw.read(self.CHUNK)
            if not data:
                self.eof = True
                if self.produced > self.complete_end or self.consumed > self.member_start:
                    self.error = "truncated gzip member (unexpected end of file)"
                    self.error_offset = self.member_start
                return
            if not self.decomp.unconsumed_tail:
                self.consumed += len(data)
            rest = self._decompress(data, self.CHUNK)
            # bytes after a member's end belong to the next member; decompress them now
            while rest and not self.eof:
                rest = self._decompress(rest, 0)

    def _decompress(self, data: bytes, max_length: int) -> bytes:
        """Decode ``data`` into ``pending``; return what follows the current member when it ends
        (the next member's bytes), else b"". A zlib error ends the stream with ``error`` set."""
        try:
            chunk = self.decomp.decompress(data, max_length)
        except zlib.error as err:
            self.eof = True
            self.error = f"corrupt gzip data: {err}"
            self.error_offset = self.member_start
            return b""
        self.produced += len(chunk)
        self.pending += chunk
        if not self.decomp.eof:
            return b""
        rest = self.decomp.unused_data
        self.complete_end = self.produced
        self.member_start = self.consumed - len(rest)
        self.decomp = zlib.decompressobj(wbits=31)
        return rest

    def readinto(self, buffer) -> int:
        self._fill()
        n = min(len(buffer), len(self.pending))
        buffer[:n] = self.pending[:n]
        self.pending = self.pending[n:]
        self.out += n
        return n


class _Counting(_ForwardSeek):
    """Counts the bytes read from a plain (uncompressed) stream."""

    def __init__(self, raw: BinaryIO):
        self.raw, self.out = raw, 0
        self.error: str | None = None
        self.error_offset: int | None = None
        self.complete_end = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.out += len(data)
        return len(data)


def _open(source: Source) -> tuple[BinaryIO, bool, str]:
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        stream = open(name, "rb")
        return stream, True, name
    return source, False, getattr(source, "name", "<stream>")


def _is_gzip(stream: BinaryIO) -> tuple[BinaryIO, bool]:
    buffered = stream if hasattr(stream, "peek") else io.BufferedReader(stream)  # type: ignore[arg-type]
    return buffered, buffered.peek(2)[:2] == b"\x1f\x8b"


def _domain(url: str | None) -> str | None:
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host[4:] if host and host.startswith("www.") else host


def _skip_reason(record_type: str) -> str:
    return {"warcinfo": "skipped_warcinfo", "request": "skipped_request", "metadata": "skipped_metadata",
            "revisit": "skipped_revisit"}.get(record_type, "skipped_other")


def _decode_content_encoding(payload: bytes, encoding: str | None) -> bytes:
    """Undo an HTTP Content-Encoding the crawler kept (Common Crawl stores decoded payloads)."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("gzip", "x-gzip"):
        return gzip.decompress(payload)
    if encoding == "deflate":
        try:
            return zlib.decompress(payload)
        except zlib.error:
            return zlib.decompress(payload, -15)
    if encoding == "br":
        import brotli

        return brotli.decompress(payload)
    return payload


class WarcReader:
    """Iterate one WARC or WET file; ``stats`` holds its counters once the iteration is done.

    ``extract_fn(payload, http_charset, url) -> ExtractResult`` turns an HTML payload into text
    (default ``stages.web.html.extract``); ``url_filter`` (a ``UrlFilter``) removes blocked URLs
    before any extraction work; ``statuses``: the HTTP statuses whose pages are kept;
    ``raw_limit``: bytes of the payload kept in a removal's ``raw``.
    """

    def __init__(self, source: Source, *, wet: bool = False,
                 extract_fn: Callable[..., ExtractResult] = extract, url_filter: Any = None,
                 statuses: tuple[int, ...] = (200,), raw_limit: int = 2048):
        self.source, self.wet = source, wet
        self.extract_fn, self.url_filter = extract_fn, url_filter
        self.statuses, self.raw_limit = statuses, raw_limit
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[WebDocument | WebRemoval]:
        from fastwarc.warc import ArchiveIterator

        stream, owned, name = _open(self.source)
        try:
            stream, gz = _is_gzip(stream)
            reader = _GzipMembers(stream) if gz else _Counting(stream)
            last_end, records, unparsable = 0, iter(ArchiveIterator(reader, parse_http=not self.wet)), None
            while True:
                try:
                    record = next(records)
                except StopIteration:
                    break
                except OSError as error:  # bytes that are no WARC record where one should start
                    unparsable = f"not a WARC record: {error}"
                    break
                item, end = self._one(record, reader, name)
                last_end = max(last_end, end)
                yield self._count(item)
            if reader.error is not None or unparsable is not None:
                yield self._count(WebRemoval("truncated_record", {
                    "file": name, "offset": last_end, "compressed_offset": reader.error_offset,
                    "error": reader.error or unparsable, "record_type": "unreadable_rest"}))
        finally:
            if owned:
                stream.close()

    def _count(self, item: WebDocument | WebRemoval) -> WebDocument | WebRemoval:
        self.stats.records += 1
        if isinstance(item, WebDocument):
            self.stats.documents += 1
            self.stats.by_method[item.meta.get("method", "")] += 1
        else:
            self.stats.removed[item.reason] += 1
        return item

    def _one(self, record, reader, name: str) -> tuple[WebDocument | WebRemoval, int]:
        record_type = str(record.record_type).rsplit(".", 1)[-1]
        self.stats.by_type[record_type] += 1
        headers = record.headers
        url = headers.get("WARC-Target-URI")
        if url and url.startswith("<") and url.endswith(">"):
            # WARC/1.0's grammar writes the URI in angle brackets, and some writers (Dolma's) do so
            url = url[1:-1]
        meta: dict[str, Any] = {
            "url": url, "domain": _domain(url), "date": headers.get("WARC-Date"),
            "record_id": headers.get("WARC-Record-ID"), "record_type": record_type,
            "offset": record.stream_pos,
        }
        language = headers.get("WARC-Identified-Content-Language")
        if language:
            meta["content_language"] = language
        payload = record.reader.read()
        declared = int(headers.get("Content-Length") or 0)
        end = record.stream_pos + declared
        # a record cut by the end of the stream: FastWARC hands out what there is
        if len(payload) < record.content_length or (
                reader.error is not None and reader.complete_end is not None and end > reader.complete_end):
            meta["error"] = reader.error or "record shorter than its Content-Length"
            return WebRemoval("truncated_record", meta, payload[: self.raw_limit]), end
        wanted = "conversion" if self.wet else "response"
        if record_type != wanted:
            return WebRemoval(_skip_reason(record_type), meta), end
        if self.url_filter is not None and url:
            decision = self.url_filter.decide(url)
            if not decision.allowed:
                meta["url_rule"], meta["url_list"] = decision.rule, decision.list
                return WebRemoval("url_blocked", meta), end
        if self.wet:
            text = payload.decode("utf-8", errors="replace").strip()
            if not text:
                return WebRemoval("no_text", meta), end
            meta["method"] = "wet"
            return WebDocument(text, meta), end
        return self._response(record, payload, meta), end

    def _response(self, record, payload: bytes, meta: dict[str, Any]) -> WebDocument | WebRemoval:
        http = record.http_headers
        status = http.status_code if http is not None else None
        meta["http_status"] = status
        language = http.get("Content-Language") if http is not None else None
        if language:
            meta["http_content_language"] = language
        raw = payload[: self.raw_limit]
        if status not in self.statuses:
            return WebRemoval("http_status", meta, raw)
        content_type = (record.http_content_type or "").lower()
        meta["content_type"] = content_type or None
        identified = (record.headers.get("WARC-Identified-Payload-Type") or "").lower()
        if content_type and content_type not in HTML_TYPES and identified not in HTML_TYPES:
            return WebRemoval("not_html", meta, raw)
        try:
            payload = _decode_content_encoding(payload, http.get("Content-Encoding") if http else None)
        except Exception as err:  # noqa: BLE001 - a broken encoding is this record's problem only
            meta["error"] = f"content-encoding: {err}"
            return WebRemoval("truncated_record", meta, raw)
        if not content_type and not payload.lstrip()[:1] == b"<":
            return WebRemoval("not_html", meta, raw)
        result = self.extract_fn(payload, record.http_charset, meta["url"])
        meta["charset"] = result.charset
        if result.reason is not None:
            return WebRemoval(result.reason, meta, raw)
        meta["method"] = result.method
        return WebDocument(result.text, meta)


def iter_warc_records(source: Source, **options: Any) -> WarcReader:
    """The documents and removals of a WARC file (iterate the result; ``.stats`` after)."""
    return WarcReader(source, wet=False, **options)


def iter_wet_records(source: Source, **options: Any) -> WarcReader:
    """The documents and removals of a WET file (Common Crawl's own text extraction): one document
    per ``conversion`` record, its text as Common Crawl wrote it."""
    return WarcReader(source, wet=True, **options)
