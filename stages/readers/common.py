"""What the file readers share: block-wise decompression that tells a damaged file from an I/O
error, lines split on b'\\n' only, a one-document file read whole, and the quarantine of a damaged
file's unreadable rest.

``.gz`` and ``.zst`` are decompressed here, in small blocks, rather than by pyarrow, whose buffered
decompression loses up to a megabyte of good records before the damage and cannot tell a damaged
file from an I/O error.
"""
from __future__ import annotations

import zlib
from contextlib import contextmanager
from typing import Any, Iterator

import pyarrow.fs as pafs
import zstandard

from pipeline.readers import InputFile
from pipeline.storage import resolve


class CorruptFile(Exception):
    """The decompressor (or Parquet decoder) found damaged data: ``offset`` compressed bytes were
    consumed when it did, ``message`` is its error."""

    def __init__(self, message: str, offset: int | None = None):
        super().__init__(message)
        self.message, self.offset = message, offset


def whole_file(item: InputFile, limit: int) -> tuple[bytes, CorruptFile | None, int]:
    """The decompressed bytes of a file that is one document, the damage that stopped the read
    (None when it was read to the end), and 0; or, for a file of more than ``limit`` bytes, its first
    ``HEAD`` bytes, None and the bytes read when the read stopped there."""
    fs, _ = resolve(item.source.path)
    parts: list[bytes] = []
    size = 0
    with decompressed(fs, item.path) as chunks:
        try:
            for chunk in chunks:
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    return b"".join(parts)[:HEAD], None, size
        except CorruptFile as damage:
            return b"".join(parts), damage, 0
    return b"".join(parts), None, 0


def reject_rest(item: InputFile, records, damage: CorruptFile, offset: int, pending: bytes,
                 line: int | None) -> None:
    """Quarantine the unreadable rest of a damaged file as one ``corrupt_file`` row."""
    meta: dict[str, Any] = {"_ingest": {"file": item.relative, "byte": offset}}
    if line is not None:
        meta["_ingest"]["line"] = line
    where = f"byte {offset}"
    compressed = f" (compressed byte {damage.offset})" if damage.offset is not None else ""
    meta["error"] = f"unreadable after byte {offset} of the decompressed data{compressed}: {damage.message}"
    records.reject("corrupt_file", pending.decode("utf-8", "replace"), meta, where)


class Lines:
    """Lines of a stream of byte chunks, split on b'\\n' only (not on other Unicode line breaks that
    may sit inside text). ``offset`` is the byte offset of ``pending``, the start of the line not yet
    complete, and ``count`` the lines handed out: where a damaged file stops being readable.

    A line longer than a chunk is kept as its chunks and joined once, when it ends: appending each
    chunk to it would copy it again at every chunk (a 100 MB line took 4 s, and 500 MB minutes).
    A line longer than ``limit`` is handed out as its first ``HEAD`` bytes, and ``cut`` is then its
    length (0 for a line handed out whole): its bytes past those are never held."""

    def __init__(self, chunks: Iterator[bytes], limit: int | None = None):
        self.chunks = chunks
        self.limit = limit
        self._parts: list[bytes] = []  # the line not yet complete (its head, once past the limit)
        self._size = 0  # ... and its length
        self.offset = 0
        self.count = 0
        self.cut = 0

    @property
    def pending(self) -> bytes:
        return b"".join(self._parts)

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            if b"\n" not in chunk:
                self._hold(chunk)
                continue
            *complete, rest = chunk.split(b"\n")
            parts, size = self._take()
            self._hold(rest)  # held before any line is handed out: ``pending`` is the chunk's rest
            yield self._line(parts, size, complete[0], 1)
            for line in complete[1:]:  # most lines: whole in one chunk, and short
                if self.limit is not None and len(line) > self.limit:
                    yield self._line([], 0, line, 1)
                    continue
                self.cut = 0
                self.offset += len(line) + 1
                self.count += 1
                yield line
        if self._size:
            yield self._line(*self._take(), b"", 0)

    def _take(self) -> tuple[list[bytes], int]:
        parts, size = self._parts, self._size
        self._parts, self._size = [], 0
        return parts, size

    def _hold(self, piece: bytes) -> None:
        past = self.limit is not None and self._size > self.limit  # the head is all that is kept
        self._size += len(piece)
        if not past:
            self._parts.append(piece)
            if self.limit is not None and self._size > self.limit:
                self._parts = [b"".join(self._parts)[:HEAD]]

    def _line(self, parts: list[bytes], held: int, last: bytes, newline: int) -> bytes:
        """The line of ``parts`` (``held`` bytes, or their head) and ``last``, and a newline or the end."""
        size = held + len(last)
        if self.limit is not None and size > self.limit:
            line, self.cut = (b"".join(parts) + last[:HEAD])[:HEAD], size
        else:
            line, self.cut = (b"".join(parts) + last if parts else last), 0
        self.offset += size + newline
        self.count += 1
        return line


# A record of more raw bytes than this many times ``ingest.max_doc_bytes`` is not read: its text could
# be under the limit only with other fields as large (JSON takes at most 6 bytes for a byte of text),
# and holding it would take memory by the gigabyte and fail at Arrow's 2 GB a string. It is removed as
# ``record_too_large``, its first ``HEAD`` bytes in its row.
UNREAD_FACTOR = 8
HEAD = 1 << 16


def unread_limit(config: Any) -> int:
    """The raw bytes past which a record is not read, for an ``IngestConfig``."""
    return UNREAD_FACTOR * config.max_doc_bytes


def too_large(records, head: bytes, size: int, meta: dict, where: str, doc_id: str | None = None) -> None:
    """Remove a record not read for its size (``UNREAD_FACTOR``) as ``record_too_large``."""
    meta["error"] = (f"{size:,} bytes, more than {UNREAD_FACTOR} x ingest.max_doc_bytes: not read "
                     f"(its first {len(head):,} bytes are this row's text)")
    records.reject("record_too_large", head.decode("utf-8", "replace"), meta, where, doc_id)


READ = 1 << 20  # compressed bytes read at a time
FEED = 1 << 12  # ... and fed to the decoder at a time: a decoder that fails loses that call's output


def _slices(stream) -> Iterator[bytes]:
    """The stream's bytes in FEED-sized pieces, so the output lost with a failing decoder call is
    small (zstd still emits whole blocks, up to 128 kB of text, so that much may go with it)."""
    while block := stream.read(READ):
        for start in range(0, len(block), FEED):
            yield block[start:start + FEED]


@contextmanager
def decompressed(fs: pafs.FileSystem, path: str) -> Iterator[Iterator[bytes]]:
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
    return _frames(stream, lambda: zlib.decompressobj(16 + zlib.MAX_WBITS), zlib.error, "gzip", "member")


def _unzstd(stream) -> Iterator[bytes]:
    """zstd frames one after another, each block's output handed out as soon as it is decoded."""
    return _frames(stream, lambda: zstandard.ZstdDecompressor().decompressobj(), zstandard.ZstdError, "zstd", "frame")


def _frames(stream, new_decoder, error: type[Exception], codec: str, unit: str) -> Iterator[bytes]:
    """Concatenated compressed ``unit``s decoded one after another; damage raises ``CorruptFile``
    with the compressed offset of the block it was found in."""
    consumed, decoder, started = 0, new_decoder(), False
    for block in _slices(stream):
        data = block
        while data:
            if decoder.eof:  # the next member or frame starts in what the last one left over
                decoder, started = new_decoder(), False
            try:
                out = decoder.decompress(data)
            except error as exc:
                raise CorruptFile(f"corrupt {codec} data ({exc})", consumed) from None
            started = True
            if out:
                yield out
            data = decoder.unused_data if decoder.eof else b""
        consumed += len(block)
    if started and not decoder.eof:
        raise CorruptFile(f"truncated {codec} data (the stream ends inside a {unit})", consumed)


