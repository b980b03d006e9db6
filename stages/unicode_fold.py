"""``nfkc_lower``: Unicode NFKC, then lower case, as ``pc.utf8_lower(pc.utf8_normalize(s, "NFKC"))``
gives it, byte for byte, from a compiled pass that maps each character through a table.

Why: utf8proc decomposes and recomposes every character it is given (about 8 ns a byte with the
lower-casing), though nearly every character of real text folds on its own: ASCII, CJK ideographs
and Latin letters stay (or only lose their case), full-width punctuation and no-break spaces become
their plain forms. A string made only of such characters folds to the folds of its characters one
after another. The rest (a string holding a combining mark, a Hangul jamo, a character Python's
Unicode tables do not know, or one of four UTF-8 bytes) goes to Arrow as before: 213 of the 59,149
quality windows of corpus-dev at 4x.

When a character folds on its own (UAX #15): it and every character of its NFKC form are assigned,
of canonical combining class 0, and not among those that compose with the character before them
although their class is 0 (``COMPOSES_WITH_PREVIOUS``). Then no reordering or composition reaches
across it, and Unicode's stability policy keeps that true under every later version, so Python's
``unicodedata`` can judge characters for the newer tables of Arrow's utf8proc. Each character's fold
itself is Arrow's, asked once per character, when a string first holds it: a corpus holds a few
thousand of the plane's 65,536, so a worker builds only those (building whole blocks of 256 cost
0.14 s of the quality stage's first task at 4x corpus-dev; these characters, 0.03 s).
"""
from __future__ import annotations

import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.utf8 import string_array, utf8_buffers
from pipeline.jit import njit

# Characters of class 0 that compose with the character before them (NFC_Quick_Check=Maybe): the
# Hangul vowel and trailing consonant jamo, and some vowel signs of Indic and Southeast Asian
# scripts (tests/test_dedup.py derives them from unicodedata).
COMPOSES_WITH_PREVIOUS = frozenset([
    0x09BE, 0x09D7, 0x0B3E, 0x0B56, 0x0B57, 0x0BBE, 0x0BD7, 0x0CC2, 0x0CD5, 0x0CD6, 0x0D3E, 0x0D57,
    0x0DCF, 0x0DDF, 0x0FB5, 0x0FB7, 0x102E, 0x1B35, 0x11127, 0x1133E, 0x11357, 0x114B0, 0x114BA,
    0x114BD, 0x115AF, 0x11930, *range(0x1161, 0x1176), *range(0x11A8, 0x11C3),
])

MAX_FOLD_BYTES = 127  # an int8 length (the longest fold, of U+FDFA, has 33)
UNBUILT, ARROW = -2, -1  # ``_LENGTH`` of a character not looked at yet / that Arrow folds

# Per code point below U+10000: where its fold starts in ``_BYTES`` and how many bytes it has (or
# UNBUILT, ARROW); 320 KB for the plane, filled in as strings first hold its characters.
_START = np.zeros(0x10000, dtype=np.int32)
_LENGTH = np.full(0x10000, UNBUILT, dtype=np.int8)
_BYTES = np.zeros(0, dtype=np.uint8)


def nfkc_lower(strings: pa.Array) -> pa.Array:
    """``pc.utf8_lower(pc.utf8_normalize(strings, "NFKC"))`` of a null-free string array."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    offsets, data = utf8_buffers(strings)
    while True:
        missing = np.zeros(0x10000, dtype=np.bool_)
        sizes = fold_sizes(data, offsets, _LENGTH, missing)
        if not missing.any():
            break
        _build(np.flatnonzero(missing).tolist())
    by_arrow = np.flatnonzero(sizes < 0)
    folded_offsets, folded = utf8_buffers(pc.utf8_lower(pc.utf8_normalize(
        strings.take(pa.array(by_arrow, pa.int64())), "NFKC"))) if by_arrow.size else (np.zeros(1, np.int64), data[:0])
    out_offsets, out = fold_write(data, offsets, sizes, _START, _LENGTH, _BYTES, folded, folded_offsets)
    return string_array(out_offsets, out, large=pa.types.is_large_string(strings.type))


def _folds_alone(char: str) -> bool:
    return (unicodedata.combining(char) == 0 and unicodedata.category(char) != "Cn"
            and ord(char) not in COMPOSES_WITH_PREVIOUS)


def _build(points: list[int]) -> None:
    """Fill in the table for ``points`` (below U+10000, no surrogates: what valid UTF-8 holds):
    Arrow's fold of each on its own, where that is its fold in any string (``_folds_alone``, the
    character and every one of its NFKC form)."""
    global _BYTES
    _LENGTH[points] = ARROW
    chars = [chr(point) for point in points]
    normalised = pc.utf8_normalize(pa.array(chars, pa.string()), "NFKC")
    folds = pc.utf8_lower(normalised).to_pylist()
    pieces = []
    start = _BYTES.size
    for point, char, nfkc, fold in zip(points, chars, normalised.to_pylist(), folds):
        if _folds_alone(char) and (nfkc == char or all(map(_folds_alone, nfkc))):
            encoded = fold.encode("utf-8")
            if len(encoded) <= MAX_FOLD_BYTES:
                _START[point] = start
                _LENGTH[point] = len(encoded)
                pieces.append(encoded)
                start += len(encoded)
    _BYTES = np.concatenate([_BYTES, np.frombuffer(b"".join(pieces), dtype=np.uint8)])


@njit(cache=True, nogil=True, inline="always")
def _bmp_point(b, i, c):
    """The code point and width of the two- or three-byte character at ``b[i]`` (lead byte ``c``)."""
    if c < 0xE0:
        return (np.int64(c & 0x1F) << 6) | np.int64(b[i + 1] & 0x3F), 2
    return (np.int64(c & 0x0F) << 12) | (np.int64(b[i + 1] & 0x3F) << 6) | np.int64(b[i + 2] & 0x3F), 3


@njit(cache=True, nogil=True)
def fold_sizes(b, offsets, length, missing):
    """The bytes of each string's fold (strings of UTF-8 ``b`` at int64 ``offsets``), or -1 where a
    character's fold is left to Arrow; ``missing[point]`` is set for each character not looked at yet."""
    n = offsets.size - 1
    sizes = np.empty(n, dtype=np.int64)
    for d in range(n):
        size = 0
        i = offsets[d]
        end = offsets[d + 1]
        while i < end:
            c = b[i]
            if c < 0x80:
                size += 1
                i += 1
                continue
            if c >= 0xF0:
                size = -1
                break
            point, width = _bmp_point(b, i, c)
            i += width
            k = length[point]
            if k >= 0:
                if size >= 0:
                    size += k
            elif k == UNBUILT:
                missing[point] = True
                size = -1  # keeps reading: every new character of the batch is found in one pass
            else:
                size = -1
                break
        sizes[d] = size
    return sizes


@njit(cache=True, nogil=True)
def fold_write(b, offsets, sizes, start, length, table, folded, folded_offsets):
    """The folded strings' (offsets, bytes): those with a size from ``fold_sizes``' table, the others
    (size -1) copied in order from Arrow's ``folded``."""
    n = offsets.size - 1
    out_offsets = np.empty(n + 1, dtype=np.int64)
    total = 0
    k = 0
    for d in range(n):
        out_offsets[d] = total
        if sizes[d] >= 0:
            total += sizes[d]
        else:
            total += folded_offsets[k + 1] - folded_offsets[k]
            k += 1
    out_offsets[n] = total
    out = np.empty(total, dtype=np.uint8)
    k = 0
    for d in range(n):
        o = out_offsets[d]
        if sizes[d] < 0:
            for j in range(folded_offsets[k], folded_offsets[k + 1]):
                out[o] = folded[j]
                o += 1
            k += 1
            continue
        i = offsets[d]
        end = offsets[d + 1]
        while i < end:
            c = b[i]
            if c < 0x80:
                out[o] = c + 32 if 65 <= c <= 90 else c
                o += 1
                i += 1
                continue
            point, width = _bmp_point(b, i, c)
            i += width
            s = start[point]
            for j in range(s, s + length[point]):
                out[o] = table[j]
                o += 1
    return out_offsets, out
