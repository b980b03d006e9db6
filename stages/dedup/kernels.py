"""Dedup's hot loops, compiled with numba: BLAKE2b, the normalised form of documents and of their
lines, cutting texts into pieces, words and characters, ``simplify``'s character classes, and the
MinHash shingles and signatures.

Why compiled: each was a chain of numpy and Arrow passes over every byte, token or shingle (BLAKE2b
a Python call per string), allocating and re-reading whole arrays; one loop that visits each once
costs a fraction of that (``bench/bench_dedup.py speed``). numba compiles the loops on first use
(about 15 s) and keeps the machine code in ``__pycache__`` (``cache=True``), so a worker loads them
instead, for about 0.3 s and 110 MB once per process. They
are one module because numba checks only a function's own file before it reuses cached code: a
helper inlined from another file could change under it unseen.

What the loops must equal, to the bit: ``_digest`` is ``hashlib.blake2b(digest_size=8)`` read as a
little-endian integer (RFC 7693, no key); ``_is_space`` is Arrow's whitespace (``utf8_is_space``,
``utf8_trim_whitespace``, ``utf8_split_whitespace``); ``_collapse`` then ``_trim`` is what
``text.normalise`` did with a regular expression and Arrow; ``reclass`` is ``simplify``'s regular
expressions; ``shingle_hashes`` and ``min_hashes`` use datasketch's MurmurHash3 finalizers
(``FMIX_CONSTANTS``) and affine32 permutations (``minhash.affine32_permutations``). The callers in
``stages.dedup.text`` and ``stages.dedup.minhash`` hold the definitions the tests check these
against. Unicode normalisation and lowercasing stay Arrow's.
"""
from __future__ import annotations

import numpy as np
from pipeline.jit import njit

U64 = np.uint64
# MurmurHash3's finalizers, (shift, multiplier, shift, multiplier, shift) for 32 and 64 bits:
# datasketch's ``_FMIX_CONSTANTS`` (tests/test_dedup.py checks they agree), written out because
# importing any part of datasketch imports its LSH module and scipy.integrate with it, 0.2 s in every
# worker that runs dedup.
FMIX_CONSTANTS = {32: (16, 0x85EBCA6B, 13, 0xC2B2AE35, 16), 64: (33, 0xFF51AFD7ED558CCD, 33, 0xC4CEB9FE1A85EC53, 33)}
# BLAKE2b's initial state; the parameter block of an unkeyed 8-byte digest (fanout and depth 1).
_IV = np.array([0x6A09E667F3BCC908, 0xBB67AE8584CAA73B, 0x3C6EF372FE94F82B, 0xA54FF53A5F1D36F1,
                0x510E527FADE682D1, 0x9B05688C2B3E6C1F, 0x1F83D9ABFB41BD6B, 0x5BE0CD19137E2179], dtype=U64)
_H0 = _IV[0] ^ U64(0x01010008)
_LAST = U64(0xFFFFFFFFFFFFFFFF)
_R32, _R24, _R16, _R63, _L40, _L48, _L1 = U64(32), U64(24), U64(16), U64(63), U64(40), U64(48), U64(1)
_BYTE_SHIFTS = np.arange(0, 64, 8).astype(U64)
_S1_32, _M1_32, _S2_32, _M2_32, _S3_32 = (U64(c) for c in FMIX_CONSTANTS[32])
_S1_64, _M1_64, _S2_64, _M2_64, _S3_64 = (U64(c) for c in FMIX_CONSTANTS[64])
_LOW32 = U64(0xFFFFFFFF)
# CJK Unified Ideographs and Extension A: tokens of their own when shingling by characters.
IDEOGRAPHS = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF))
# ``pieces`` numbers pieces in an open-addressing table (``_MIX``: Fibonacci hashing of a key mixed
# FNV-1a-like from their 8-byte words), room for _RESERVE more made before each stretch of a text.
_FNV_BASIS, _FNV_PRIME, _MIX = U64(0xCBF29CE484222325), U64(0x100000001B3), U64(0x9E3779B97F4A7C15)
_RESERVE = 1 << 14
# Classes of characters in ``reclass`` (0: not classified yet).
MARK, DIGIT, SEPARATOR, OTHER = 1, 2, 3, 4


# ----------------------------------------------------------------------------- BLAKE2b-64

# ``_g`` and ``_digest`` are compiled once each and called, not inlined by numba: numba inlines in
# its own IR, and did so with _g 96 times per _compress and _compress once in each of three callers,
# 44 s of the first run's compiling. LLVM inlines ``_g`` all the same (the hashing runs as fast); a
# call of ``_digest`` costs a few nanoseconds per string.
@njit(cache=True, nogil=True)
def _g(a, b, c, d, x, y):
    a = a + b + x
    d ^= a
    d = (d >> _R32) | (d << _R32)
    c = c + d
    b ^= c
    b = (b >> _R24) | (b << _L40)
    a = a + b + y
    d ^= a
    d = (d >> _R16) | (d << _L48)
    c = c + d
    b ^= c
    b = (b >> _R63) | (b << _L1)
    return a, b, c, d


@njit(cache=True, nogil=True, inline="always")
def _round(v, m, s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15):
    """One round on the working state ``v``, message words ``m`` taken in the order ``s0``..``s15``."""
    v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15 = v
    v0, v4, v8, v12 = _g(v0, v4, v8, v12, m[s0], m[s1])
    v1, v5, v9, v13 = _g(v1, v5, v9, v13, m[s2], m[s3])
    v2, v6, v10, v14 = _g(v2, v6, v10, v14, m[s4], m[s5])
    v3, v7, v11, v15 = _g(v3, v7, v11, v15, m[s6], m[s7])
    v0, v5, v10, v15 = _g(v0, v5, v10, v15, m[s8], m[s9])
    v1, v6, v11, v12 = _g(v1, v6, v11, v12, m[s10], m[s11])
    v2, v7, v8, v13 = _g(v2, v7, v8, v13, m[s12], m[s13])
    v3, v4, v9, v14 = _g(v3, v4, v9, v14, m[s14], m[s15])
    return v0, v1, v2, v3, v4, v5, v6, v7, v8, v9, v10, v11, v12, v13, v14, v15


@njit(cache=True, nogil=True, inline="always")
def _compress(h, m, count, last):
    """The compression of message words ``m`` into state ``h``, ``count`` bytes in. The schedule is
    written out, not read from a table, so that the words stay in registers: a quarter faster on
    short strings."""
    v = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], _IV[0], _IV[1], _IV[2], _IV[3],
         _IV[4] ^ U64(count), _IV[5], _IV[6] ^ _LAST if last else _IV[6], _IV[7])
    v = _round(v, m, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    v = _round(v, m, 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3)
    v = _round(v, m, 11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4)
    v = _round(v, m, 7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8)
    v = _round(v, m, 9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13)
    v = _round(v, m, 2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9)
    v = _round(v, m, 12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11)
    v = _round(v, m, 13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10)
    v = _round(v, m, 6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5)
    v = _round(v, m, 10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0)
    v = _round(v, m, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
    v = _round(v, m, 14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3)
    for i in range(8):
        h[i] ^= v[i] ^ v[i + 8]


@njit(cache=True, nogil=True, inline="always")
def _load_block(source, start, m):
    for w in range(16):
        word = U64(0)
        for k in range(8):
            word |= U64(source[start + 8 * w + k]) << _BYTE_SHIFTS[k]
        m[w] = word


@njit(cache=True, nogil=True)
def _digest(data, start, end, h, m, last_block):
    """BLAKE2b-64 of ``data[start:end]``; ``h``, ``m``, ``last_block``: scratch of 8, 16 words, 128 bytes.
    Callers pass ``start`` and ``end`` as int64 variables: a literal (``0``) is another argument type,
    and numba would compile all of this again for it."""
    h[:] = _IV
    h[0] = _H0
    length, done = end - start, 0
    while True:
        last = length - done <= 128
        if last:
            last_block[:] = 0
            last_block[:length - done] = data[start + done:end]
            _load_block(last_block, 0, m)
            done = length
        else:
            _load_block(data, start + done, m)
            done += 128
        _compress(h, m, done, last)
        if last:
            return h[0]


# ----------------------------------------------------------------------------- UTF-8 and whitespace

@njit(cache=True, nogil=True, inline="always")
def _decode(data, i):
    """The code point of the UTF-8 character at ``data[i]``, and its length in bytes."""
    c = np.int64(data[i])
    if c < 0xC0:
        return c, 1
    if c < 0xE0:
        return ((c & 0x1F) << 6) | np.int64(data[i + 1] & 0x3F), 2
    if c < 0xF0:
        return ((c & 0x0F) << 12) | (np.int64(data[i + 1] & 0x3F) << 6) | np.int64(data[i + 2] & 0x3F), 3
    return (((c & 0x07) << 18) | (np.int64(data[i + 1] & 0x3F) << 12) | (np.int64(data[i + 2] & 0x3F) << 6)
            | np.int64(data[i + 3] & 0x3F)), 4


@njit(cache=True, nogil=True, inline="always")
def _is_space(c):
    if c < 0x80:
        return c == 0x20 or 0x09 <= c <= 0x0D or 0x1C <= c <= 0x1F
    return (c == 0x85 or c == 0xA0 or c == 0x1680 or 0x2000 <= c <= 0x200A or c == 0x2028 or c == 0x2029
            or c == 0x202F or c == 0x205F or c == 0x3000)


@njit(cache=True, nogil=True, inline="always")
def _collapse(data, start, end, out, lines):
    """Copies ``data[start:end]`` (with ``lines``, only up to the next newline) to ``out`` with each
    run of ASCII tab, newline, form feed, carriage return and space one space. Returns where it
    stopped in ``data``, and the bytes and characters written."""
    o = chars = 0
    run = False
    while start < end:
        b = data[start]
        if b == 0x0A and lines:
            break
        if b == 0x20 or b == 0x0A or b == 0x09 or b == 0x0C or b == 0x0D:
            if not run:
                out[o] = 0x20
                o, chars = o + 1, chars + 1
            run = True
        else:
            out[o] = b
            o += 1
            chars += (b & 0xC0) != 0x80
            run = False
        start += 1
    return start, o, chars


@njit(cache=True, nogil=True, inline="always")
def _trim(out, size, chars):
    """Start, end and characters of ``out[:size]`` (``chars`` characters) less leading and trailing whitespace."""
    first, last = 0, size
    while first < last:
        c, width = _decode(out, first)
        if not _is_space(c):
            break
        first, chars = first + width, chars - 1
    while last > first:
        lead = last - 1
        while (out[lead] & 0xC0) == 0x80:
            lead -= 1
        c, _ = _decode(out, lead)
        if not _is_space(c):
            break
        last, chars = lead, chars - 1
    return first, last, chars


@njit(cache=True, nogil=True, inline="always")
def _line(data, start, end):
    """Where the line from ``start`` ends (the next newline, or ``end``), and its characters."""
    chars = 0
    while start < end and data[start] != 0x0A:
        chars += (data[start] & 0xC0) != 0x80
        start += 1
    return start, chars


# ----------------------------------------------------------------------------- documents and lines

@njit(cache=True, nogil=True)
def squeeze(data, offsets):
    """Each string ``_collapse``d, then ``_trim``med: their bytes and offsets."""
    out, scratch, new_offsets = np.empty(data.size, np.uint8), np.empty(data.size, np.uint8), np.zeros_like(offsets)
    for i in range(offsets.size - 1):
        _, size, chars = _collapse(data, offsets[i], offsets[i + 1], scratch, False)
        first, last, _ = _trim(scratch, size, chars)
        new_offsets[i + 1] = new_offsets[i] + last - first
        out[new_offsets[i]:new_offsets[i + 1]] = scratch[first:last]
    return out[:new_offsets[-1]].copy(), new_offsets


@njit(cache=True, nogil=True)
def squeezed_digests(data, offsets):
    """The BLAKE2b-64 of each string ``squeeze``d, without the squeezed strings."""
    h, m, last_block = np.empty(8, U64), np.empty(16, U64), np.empty(128, np.uint8)
    out, longest = np.empty(offsets.size - 1, U64), 0
    for i in range(out.size):
        longest = max(longest, offsets[i + 1] - offsets[i])
    squeezed = np.empty(longest, np.uint8)
    for i in range(out.size):
        _, size, chars = _collapse(data, offsets[i], offsets[i + 1], squeezed, False)
        first, last, _ = _trim(squeezed, size, chars)
        out[i] = _digest(squeezed, first, last, h, m, last_block)
    return out


@njit(cache=True, nogil=True)
def paragraph_hashes(data, offsets, lowered, lowered_offsets, rows, min_chars, exempt, exempt_offsets):
    """The lines of each text at ``rows`` that are paragraphs: the same line of ``lowered`` (the
    texts in NFC, lowercased: line for line the same lines), ``_collapse``d and ``_trim``med, has
    ``min_chars`` characters or more and is none of the ``exempt`` strings. Per such line: its text,
    its index there, the BLAKE2b-64 of its normalised form, and its characters in ``data``."""
    lines = rows.size
    for t in rows:
        for i in range(lowered_offsets[t], lowered_offsets[t + 1]):
            lines += lowered[i] == 0x0A
    row, index = np.empty(lines, np.int64), np.empty(lines, np.int32)
    hashes, chars = np.empty(lines, U64), np.empty(lines, np.int64)
    h, m, last_block = np.empty(8, U64), np.empty(16, U64), np.empty(128, np.uint8)
    line = np.empty(lowered.size, np.uint8)
    found = 0
    for t in rows:
        i, j, number = offsets[t], lowered_offsets[t], 0
        while True:
            i, characters = _line(data, i, offsets[t + 1])
            j, size, length = _collapse(lowered, j, lowered_offsets[t + 1], line, True)
            first, last, length = _trim(line, size, length)
            listed = False
            for e in range(exempt_offsets.size - 1):
                if exempt_offsets[e + 1] - exempt_offsets[e] == last - first:
                    listed |= np.array_equal(line[first:last], exempt[exempt_offsets[e]:exempt_offsets[e + 1]])
            if length >= min_chars and not listed:
                row[found], index[found], chars[found] = t, number, characters
                hashes[found] = _digest(line, first, last, h, m, last_block)
                found += 1
            if i == offsets[t + 1]:
                break
            i, j, number = i + 1, j + 1, number + 1
    return row[:found], index[:found], hashes[:found], chars[:found]


@njit(cache=True, nogil=True)
def drop_lines(data, offsets, rows, drop_offsets, drops):
    """The strings at ``rows``, the k-th without its lines numbered ``drops[drop_offsets[k]:]`` up to
    ``drop_offsets[k + 1]`` (ascending), the others joined by newlines again. Returns their bytes,
    offsets, and the characters removed in all."""
    out, new_offsets = np.empty(data.size, np.uint8), np.zeros(rows.size + 1, np.int64)
    o = removed = 0
    for k in range(rows.size):
        i, end = offsets[rows[k]], offsets[rows[k] + 1]
        drop, number, first = drop_offsets[k], 0, True
        while True:
            line_end, line_chars = _line(data, i, end)
            while drop < drop_offsets[k + 1] and drops[drop] < number:
                drop += 1
            if drop < drop_offsets[k + 1] and drops[drop] == number:
                # with a newline, but for the last line when every line before it went too
                removed += line_chars + (0 if first and line_end == end else 1)
            else:
                if not first:
                    out[o] = 0x0A
                    o += 1
                out[o:o + line_end - i] = data[i:line_end]
                o, first = o + line_end - i, False
            if line_end == end:
                break
            i, number = line_end + 1, number + 1
        new_offsets[k + 1] = o
    return out[:o].copy(), new_offsets, removed


# ----------------------------------------------------------------------------- MinHash tokens

@njit(cache=True, nogil=True, inline="always")
def _grown(array, size):
    """``array``, or a copy with room for at least ``size`` entries."""
    if size <= array.size:
        return array
    bigger = np.empty(max(size, 2 * array.size), array.dtype)
    bigger[:array.size] = array
    return bigger


@njit(cache=True, nogil=True)
def _rehashed(table, size):
    """The rows of ``table`` (free where the last column is 0) in a table of ``size`` rows, a power
    of two: each at its home row (from ``_MIX`` times its first column) or the next free one."""
    bigger = np.zeros((size, table.shape[1]), U64)
    for row in range(table.shape[0]):
        if table[row, -1]:
            slot = np.int64((table[row, 0] * _MIX) >> U64(32)) & (size - 1)
            while bigger[slot, -1]:
                slot = (slot + 1) & (size - 1)
            bigger[slot] = table[row]
    return bigger


@njit(cache=True, nogil=True)
def pieces(data, offsets, cut, by_chars):
    """Each text cut into items: pieces (maximal runs of bytes neither ``cut`` nor, ``by_chars``, in
    one of the ``IDEOGRAPHS``) and, ``by_chars``, single ideographs. Returns per item the number of
    its piece among the distinct ones (in order of first occurrence), or ``-1 - code point`` for an
    ideograph; where each text's items start (one entry more); the distinct pieces' bytes and
    offsets, and which of them are all ASCII."""
    items, text_items = np.empty(0, np.int64), np.empty(offsets.size, np.int64)
    store, bounds, plain = np.empty(data.size, np.uint8), np.zeros(1, np.int64), np.empty(0, np.bool_)
    # Per row: key, length, first 8 bytes, number + 1. A piece of up to 8 bytes (most words) is
    # then told from the others without reading ``store``.
    table = np.zeros((4 * _RESERVE, 4), U64)
    count = distinct = 0
    for t in range(offsets.size - 1):
        text_items[t] = count
        i, end = offsets[t], offsets[t + 1]
        start, key, word, head, ascii = -1, _FNV_BASIS, U64(0), U64(0), True
        while i <= end:
            # Room made out here: arrays that may be replaced inside a loop make it several times slower.
            items, bounds, plain = _grown(items, count + _RESERVE), _grown(bounds, distinct + _RESERVE + 1), \
                _grown(plain, distinct + _RESERVE)
            if 2 * (distinct + _RESERVE) > table.shape[0]:
                table = _rehashed(table, 2 * table.shape[0])
            mask, limit = table.shape[0] - 1, count + _RESERVE - 2  # a byte adds two items at most
            while i <= end and count <= limit:
                b = data[i] if i < end else np.uint8(0)
                ideograph, c = False, 0
                if by_chars and i < end and 0xE3 <= b <= 0xE9:
                    c, _ = _decode(data, i)
                    ideograph = IDEOGRAPHS[0][0] <= c <= IDEOGRAPHS[0][1] or IDEOGRAPHS[1][0] <= c <= IDEOGRAPHS[1][1]
                if i < end and not ideograph and not cut[b]:
                    if start < 0:
                        start, key, word, ascii = i, _FNV_BASIS, U64(0), True
                    elif (i - start) % 8 == 0:
                        if i - start == 8:
                            head = word
                        key, word = (key ^ word) * _FNV_PRIME, U64(0)
                    word |= U64(b) << U64(8 * ((i - start) % 8))
                    ascii &= b < 0x80
                    i += 1
                    continue
                if start >= 0:  # a piece ends here: its number, a new one if it is new
                    length = i - start
                    if length <= 8:
                        head = word
                    key = ((key ^ word) * _FNV_PRIME) ^ U64(length)
                    slot = np.int64((key * _MIX) >> U64(32)) & mask
                    while table[slot, 3]:
                        found = np.int64(table[slot, 3]) - 1
                        if table[slot, 0] == key and table[slot, 1] == length and table[slot, 2] == head and (
                                length <= 8 or np.array_equal(data[start:i], store[bounds[found]:bounds[found + 1]])):
                            break
                        slot = (slot + 1) & mask
                    if not table[slot, 3]:
                        found, distinct = distinct, distinct + 1
                        bounds[distinct] = bounds[found] + length
                        store[bounds[found]:bounds[distinct]] = data[start:i]
                        plain[found] = ascii
                        table[slot, 0], table[slot, 1], table[slot, 2], table[slot, 3] = key, length, head, distinct
                    items[count] = found
                    count += 1
                    start = -1
                if ideograph:
                    items[count] = -1 - c
                    count += 1
                    i += 3
                else:
                    i += 1
    text_items[-1] = count
    return items[:count].copy(), text_items, store[:bounds[distinct]].copy(), bounds[:distinct + 1].copy(), \
        plain[:distinct].copy()


@njit(cache=True, nogil=True)
def reclass(data, offsets, classes, marks):
    """Each string without its ``MARK`` characters (``marks``), or else with each run of ``DIGIT``
    characters one 0 and each run of ``SEPARATOR`` characters one space, then ``_trim``med
    (``classes``: by code point). Returns the bytes and offsets, and the code points that have no
    class yet: if there are any, the rest is to be thrown away."""
    out, new_offsets, unknown = np.empty(data.size, np.uint8), np.zeros_like(offsets), np.empty(data.size, np.int64)
    o = unknowns = 0
    for t in range(offsets.size - 1):
        i, begin, previous = offsets[t], o, 0
        while i < offsets[t + 1]:
            c, width = _decode(data, i)
            kind = classes[c]
            if kind == 0:
                unknown[unknowns] = c
                unknowns += 1
            elif marks and kind == MARK:
                pass
            elif not marks and (kind == DIGIT or kind == SEPARATOR):
                if kind != previous:  # the first of a run stands for it
                    out[o] = 0x30 if kind == DIGIT else 0x20
                    o += 1
            else:
                out[o:o + width] = data[i:i + width]
                o += width
            previous = kind
            i += width
        if not marks:
            first, last, _ = _trim(out[begin:o], o - begin, 0)
            for k in range(last - first):  # leftwards: each byte is read before it is written over
                out[begin + k] = out[begin + first + k]
            o = begin + last - first
        new_offsets[t + 1] = o
    return out[:o if unknowns == 0 else 0].copy(), new_offsets, unknown[:unknowns].copy()


@njit(cache=True, nogil=True, inline="always")
def _fold(b, previous):
    """What ``simplify`` makes of ASCII letter or digit ``b`` after ``previous``: lowercase, a digit
    0, nothing (-1) for a digit after a digit."""
    if 0x30 <= b <= 0x39:
        return -1 if 0x30 <= previous <= 0x39 else 0x30
    return b + 0x20 if 0x41 <= b <= 0x5A else b


@njit(cache=True, nogil=True)
def word_hashes(data, starts, ends, fold):
    """BLAKE2b-64 of the words of each string ``data[starts[i]:ends[i]]`` (split at whitespace,
    empty words left out), and the number per string. ``fold``: each string is one word of ASCII
    letters and digits, hashed as ``_fold`` makes it."""
    h, m, last_block = np.empty(8, U64), np.empty(16, U64), np.empty(128, np.uint8)
    counts, out, word = np.zeros(starts.size, np.int64), np.empty(0, U64), np.empty(0, np.uint8)
    found = 0
    for s in range(starts.size):
        i, end = starts[s], ends[s]
        out, word = _grown(out, found + (end - i + 1) // 2 + 1), _grown(word, end - i)  # the most it can hold
        while i < end:
            c, width = _decode(data, i)
            if _is_space(c) and not fold:
                i += width
                continue
            size = 0
            while i < end and (fold or not _is_space(c)):
                for k in range(i, i + width):
                    b = _fold(np.int64(data[k]), np.int64(data[k - 1]) if k > starts[s] else 0) if fold \
                        else np.int64(data[k])
                    if b >= 0:
                        word[size] = b
                        size += 1
                i += width
                if i < end:
                    c, width = _decode(data, i)
            out[found] = _digest(word, np.int64(0), np.int64(size), h, m, last_block)
            counts[s], found = counts[s] + 1, found + 1
    return out[:found].copy(), counts


@njit(cache=True, nogil=True)
def code_points(data, starts, ends, fold):
    """The code points but spaces (U+0020) of each string ``data[starts[i]:ends[i]]``, and the
    number per string. ``fold``: the strings are ASCII letters and digits, read as ``_fold`` makes them."""
    counts, out = np.zeros(starts.size, np.int64), np.empty(0, np.uint32)
    found = 0
    for s in range(starts.size):
        out, i = _grown(out, found + ends[s] - starts[s]), starts[s]
        while i < ends[s]:
            c, width = _decode(data, i)
            if fold:
                c = _fold(c, np.int64(data[i - 1]) if i > starts[s] else 0)
            if c >= 0 and c != 0x20:
                out[found] = c
                found, counts[s] = found + 1, counts[s] + 1
            i += width
    return out[:found].copy(), counts


@njit(cache=True, nogil=True)
def assemble(items, text_items, first, size, pool, ideograph_hashes):
    """Each text's tokens: per item, its piece's ``size[p]`` tokens from ``pool[first[p]:]``, or for
    an ideograph the next of ``ideograph_hashes``. Returns them all, and the number per text."""
    counts = np.zeros(text_items.size - 1, np.int64)
    for t in range(counts.size):
        for k in range(text_items[t], text_items[t + 1]):
            counts[t] += size[items[k]] if items[k] >= 0 else 1
    out = np.empty(counts.sum(), U64)
    o = ideograph = 0
    for k in range(items.size):
        piece = items[k]
        if piece < 0:
            out[o] = ideograph_hashes[ideograph]
            o, ideograph = o + 1, ideograph + 1
        else:
            out[o:o + size[piece]] = pool[first[piece]:first[piece] + size[piece]]
            o += size[piece]
    return out, counts


# ----------------------------------------------------------------------------- MinHash

@njit(cache=True, nogil=True)
def shingle_hashes(token_hashes, counts, n, multipliers):
    """Per document, each run of ``n`` consecutive tokens (of all, when fewer) summed with its
    positions' ``multipliers``, mixed with MurmurHash3's 64-bit finalizer: the high 32 bits. Returns
    them, and the number per document."""
    per_doc = np.zeros(counts.size, np.int64)
    for d in range(counts.size):
        if counts[d] > 0:
            per_doc[d] = max(counts[d] - n + 1, 1)
    out = np.empty(per_doc.sum(), np.uint32)
    start = o = 0
    for d in range(counts.size):
        for w in range(per_doc[d]):
            total = U64(0)
            for p in range(min(n, counts[d])):
                total += token_hashes[start + w + p] * multipliers[p]
            total ^= total >> _S1_64
            total *= _M1_64
            total ^= total >> _S2_64
            total *= _M2_64
            total ^= total >> _S3_64
            out[o] = np.uint32(total >> U64(32))
            o += 1
        start += counts[d]
    return out, per_doc


@njit(cache=True, nogil=True)
def min_hashes(values, per_doc, a, b):
    """datasketch's affine32 MinHash of each document's ``values``: each mixed with MurmurHash3's
    32-bit finalizer, then the minimum of ``a[k] * h + b[k] mod 2**32`` per permutation ``k``; all
    0xFFFFFFFF (the empty MinHash) for a document without values."""
    signatures = np.full((per_doc.size, a.size), np.uint32(0xFFFFFFFF), np.uint32)
    start = 0
    for d in range(per_doc.size):
        row = signatures[d]
        for j in range(start, start + per_doc[d]):
            h = U64(values[j])
            h ^= h >> _S1_32
            h = (h * _M1_32) & _LOW32
            h ^= h >> _S2_32
            h = (h * _M2_32) & _LOW32
            h = np.uint32(h ^ (h >> _S3_32))
            for k in range(a.size):
                row[k] = min(row[k], np.uint32(a[k] * h + b[k]))
        start += per_doc[d]
    return signatures
