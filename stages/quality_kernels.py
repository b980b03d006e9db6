"""The quality stage's hot loops, compiled with numba: splitting prepared text into lines and
tokens, the n-gram model's per-token probabilities, looking tokens up in a set of strings (the
model's vocabulary, the stop words) and the line signals of the scored windows.

Why compiled: both were chains of a dozen or more numpy passes over every byte or token, each
allocating and re-reading whole arrays; one loop that visits each byte or token once costs a fifth
as much (``bench/bench_quality.py throughput``). numba compiles the loops on first use and keeps the
machine code in ``__pycache__`` (``cache=True``), so a worker loads them instead of compiling again.

The loops do what their numpy predecessors did, to the byte and to the bit: ``split_utf8`` reads the
same per-character tables (``quality_lm.CharClasses``), and ``interpolated_probs`` performs the same
floating-point operations in the same order (the logarithm stays numpy's). Their callers,
``quality_lm.split_text`` and ``quality_lm.token_log_probs``, hold the definitions they are tested
against. ``find_strings`` answers what ``pc.index_in`` answered, and ``line_counts`` counts what
``pc.split_pattern``, ``pc.utf8_trim_whitespace``, ``pc.utf8_length``, the terminal-punctuation
regular expression and ``pc.dictionary_encode`` counted (``quality_signals``, whose tables say which
characters are trimmed and terminal; ``tests/test_quality_speed.py`` holds the Arrow definitions).

Helpers are inlined from this module only: numba's disk cache keys a function on its own file, so a
change to a helper inlined from another module would leave stale machine code behind.
"""
from __future__ import annotations

import numpy as np
from pipeline.jit import njit

# Flags of a character in ``quality_lm.CharClasses.table`` (the same values).
SPACE, MARK, DIGIT, NOT_ALNUM = 1, 2, 4, 8

MIX = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # no n-gram key reaches it: keys are below (V + 2) ** 3 < 2 ** 63
# Flags of a code point in ``quality_signals``' line table: trimmed as whitespace (``pc.utf8_trim_whitespace``),
# terminal punctuation at the end of a line (``quality_signals._TERMINAL``).
TRIM, TERMINAL = 1, 2
# Eight bytes at a time: each byte's low bit, each byte's high bit, a newline in every byte.
LOW_BITS, HIGH_BITS = np.uint64(0x0101010101010101), np.uint64(0x8080808080808080)
NEWLINES = np.uint64(0x0A0A0A0A0A0A0A0A)


@njit(cache=True, nogil=True)
def split_utf8(b, offsets, table, by_prefix, prefix_base, ascii_line):
    """Lines and tokens of UTF-8 text ``b`` (documents at int64 ``offsets``, the first 0).

    Per character, by its flags (``table`` by code point for ASCII and four-byte characters, which
    the caller has classified; ``by_prefix`` by first three bytes for two- and three-byte ones):
    whitespace ends a token; a marked character is a token of its own with a space either side
    in the line; a non-ASCII digit becomes ``0``; ASCII bytes are written through ``ascii_line``
    (digits to ``0``, newline to space). Returns (line bytes, line offsets, token bytes, token
    offsets, first token of each document (one entry more), whether each token is alphanumeric:
    none of its characters is flagged not alphanumeric)."""
    n = b.size
    n_docs = offsets.size - 1
    line = np.empty(3 * n, dtype=np.uint8)  # at most two spaces added per character
    line_offsets = np.empty(n_docs + 1, dtype=np.int64)
    token_bytes = np.empty(n, dtype=np.uint8)
    token_offsets = np.empty(n + 1, dtype=np.int64)
    alnum = np.empty(n, dtype=np.bool_)
    doc_tokens = np.empty(n_docs + 1, dtype=np.int64)
    out = 0
    t = 0
    tokens = 0
    for d in range(n_docs):
        line_offsets[d] = out
        doc_tokens[d] = tokens
        in_token = False
        i = offsets[d]
        end = offsets[d + 1]
        while i < end:
            c = b[i]
            if c < 0x80:
                f = table[c]
                width = 1
            elif c >= 0xF0:
                f = table[(np.int64(c & 0x07) << 18) | (np.int64(b[i + 1] & 0x3F) << 12)
                          | (np.int64(b[i + 2] & 0x3F) << 6) | np.int64(b[i + 3] & 0x3F)]
                width = 4
            else:
                # A two-byte character's third byte is the next character's (or none at the very
                # end): its table entries read the same for every value.
                third = b[i + 2] if i + 2 < n else np.uint8(0)
                f = by_prefix[((np.int64(c) << 16) | (np.int64(b[i + 1]) << 8) | np.int64(third)) - prefix_base]
                width = 2 if c < 0xE0 else 3
            mark = (f & MARK) != 0
            space = (f & SPACE) != 0
            if mark:
                line[out] = 32
                out += 1
            start = t
            if c < 0x80:
                x = ascii_line[c]
                line[out] = x
                out += 1
                if not space:
                    token_bytes[t] = x
                    t += 1
            elif (f & DIGIT) != 0:
                line[out] = 48
                out += 1
                if not space:
                    token_bytes[t] = 48
                    t += 1
            else:
                for k in range(width):
                    line[out] = b[i + k]
                    out += 1
                if not space:
                    for k in range(width):
                        token_bytes[t] = b[i + k]
                        t += 1
            if mark:
                line[out] = 32
                out += 1
            if space:
                in_token = False
            elif mark or not in_token:
                token_offsets[tokens] = start
                alnum[tokens] = (f & NOT_ALNUM) == 0
                tokens += 1
                in_token = not mark
            elif (f & NOT_ALNUM) != 0:
                alnum[tokens - 1] = False
            i += width
    line_offsets[n_docs] = out
    doc_tokens[n_docs] = tokens
    token_offsets[tokens] = t
    return line[:out], line_offsets, token_bytes[:t], token_offsets[:tokens + 1], doc_tokens, alnum[:tokens]


@njit(cache=True, nogil=True, inline="always")
def _slot(slots, shift, mask, key):
    """Open addressing (``quality_lm._HashIndex``): from the key's home slot to the key or an empty slot."""
    position = np.int64((key * MIX) >> shift)
    while True:
        found = slots[position]
        if found == key:
            return position
        if found == EMPTY:
            return -1
        position = (position + 1) & mask


@njit(cache=True, nogil=True)
def place_keys(keys, shift, mask):
    """``quality_lm._HashIndex``'s table of distinct ``keys``: each key in the first empty slot from its
    home slot on, in key order. Returns (slots, the slot of each key)."""
    slots = np.full(mask + 1, EMPTY, dtype=np.uint64)
    slot_of_key = np.empty(keys.size, dtype=np.int64)
    for k in range(keys.size):
        position = np.int64((keys[k] * MIX) >> shift)
        while slots[position] != EMPTY:
            position = (position + 1) & mask
        slots[position] = keys[k]
        slot_of_key[k] = position
    return slots, slot_of_key


@njit(cache=True, nogil=True)
def find_slots(slots, shift, mask, queries):
    """The slot of each query, -1 where it is absent."""
    result = np.empty(queries.size, dtype=np.int64)
    for i in range(queries.size):
        result[i] = _slot(slots, shift, mask, queries[i])
    return result


@njit(cache=True, nogil=True)
def interpolated_probs(ids, offsets, base, unigram_p, seen1, scale1, total1,
                       bigram_slots, bigram_shift, bigram_mask, discounted2, seen2, scale2, total2,
                       trigram_slots, trigram_shift, trigram_mask, discounted3):
    """P(token | two before) of every token (documents at ``offsets``), ``quality_lm._Scoring``'s
    terms interpolated: the unigram, then the bigram where the previous token was seen as a
    context, then the trigram where the two before were. Per-slot arrays have one entry more at
    the end, the value of an absent n-gram."""
    p_out = np.empty(ids.size, dtype=np.float64)
    bos = base - np.uint64(1)
    bigram_miss = discounted2.size - 1
    trigram_miss = discounted3.size - 1
    for d in range(offsets.size - 1):
        u = bos
        v = bos
        context2 = bigram_miss  # the bigram (u, v) as a trigram context: none for a first token
        for i in range(offsets[d], offsets[d + 1]):
            w = ids[i]
            p = unigram_p[w]
            context1 = np.int64(v)
            slot = _slot(bigram_slots, bigram_shift, bigram_mask, v * base + w)
            bigram = slot if slot >= 0 else bigram_miss
            if seen1[context1]:
                p = (discounted2[bigram] + scale1[context1] * p) / total1[context1]
            if seen2[context2]:
                # A trigram u v w seen twice means the bigram v w was: otherwise it is not looked up.
                trigram = trigram_miss
                if slot >= 0:
                    found = _slot(trigram_slots, trigram_shift, trigram_mask, (u * base + v) * base + w)
                    if found >= 0:
                        trigram = found
                p = (discounted3[trigram] + scale2[context2] * p) / total2[context2]
            p_out[i] = p
            u = v
            v = w
            context2 = bigram
    return p_out


# ---------------------------------------------------------------------------------------------
# Strings: hashing, a set lookup, and the line signals
# ---------------------------------------------------------------------------------------------


@njit(cache=True, nogil=True, inline="always")
def _load8(b, i):
    """The eight bytes ``b[i:i + 8]`` as a little-endian integer. The index is made unsigned so that
    numba adds no negative-index fix-up to each byte's read and LLVM joins the eight into one load
    (signed, the loop over a batch's tokens took seven times as long)."""
    i = np.uint64(i)
    return (np.uint64(b[i]) | (np.uint64(b[i + np.uint64(1)]) << np.uint64(8))
            | (np.uint64(b[i + np.uint64(2)]) << np.uint64(16)) | (np.uint64(b[i + np.uint64(3)]) << np.uint64(24))
            | (np.uint64(b[i + np.uint64(4)]) << np.uint64(32)) | (np.uint64(b[i + np.uint64(5)]) << np.uint64(40))
            | (np.uint64(b[i + np.uint64(6)]) << np.uint64(48)) | (np.uint64(b[i + np.uint64(7)]) << np.uint64(56)))


@njit(cache=True, nogil=True, inline="always")
def _word(b, start, end):
    """The first (up to) eight bytes of ``b[start:end]`` as a little-endian integer, zero above them:
    a string of at most eight bytes is this number and its length."""
    n = end - start
    if start + 8 <= b.size:
        w = _load8(b, start)
        if n < 8:
            w &= (np.uint64(1) << (np.uint64(n) << np.uint64(3))) - np.uint64(1)
        return w
    w = np.uint64(0)
    for k in range(min(n, 8)):
        w |= np.uint64(b[start + k]) << np.uint64(8 * k)
    return w


@njit(cache=True, nogil=True, inline="always")
def _hash_bytes(b, start, end):
    """A 64-bit hash of ``b[start:end]``, eight bytes a step. Only a hint: equal hashes are confirmed
    by comparing the bytes (``_same_bytes``), so no answer depends on a collision."""
    h = np.uint64(end - start) * MIX
    i = start
    while end - i > 8:
        h = (h ^ _load8(b, i)) * MIX
        h ^= h >> np.uint64(29)
        i += 8
    h = (h ^ _word(b, i, end)) * MIX
    return h ^ (h >> np.uint64(32))


@njit(cache=True, nogil=True, inline="always")
def _same_bytes(a, a_start, a_end, b, b_start, b_end):
    """``a[a_start:a_end] == b[b_start:b_end]``, eight bytes a step."""
    n = a_end - a_start
    if n != b_end - b_start:
        return False
    k = 0
    while k < n:
        if _word(a, a_start + k, a_end) != _word(b, b_start + k, b_end):
            return False
        k += 8
    return True


# ``StringIndex`` tables: per slot, the string's tag (a string of at most eight bytes: ``_word``, the
# string itself; a longer one: its hash) and ``(index + 1) << 8 | length`` (length ``LONG`` above
# eight bytes); 0 there: an empty slot.
LONG = np.uint64(255)


@njit(cache=True, nogil=True, inline="always")
def _short_slot(tag, n, seed, shift):
    """Home slot of a string of at most eight bytes (``seed`` lets the caller try other placements)."""
    return ((tag ^ (np.uint64(n) * seed)) * MIX) >> shift


@njit(cache=True, nogil=True)
def place_strings(data, offsets, shift, mask, seed):
    """The table of ``quality_lm.StringIndex``: string ``k`` (UTF-8 ``data`` at int64 ``offsets``) in
    the first empty slot from its home slot on, in order; a string equal to an earlier one is left out,
    so a lookup finds the first, as ``pc.index_in`` does. Returns the table and whether every string
    has at most eight bytes and lies in its home slot (then one slot read answers a lookup)."""
    table = np.zeros((mask + np.uint64(1), 2), dtype=np.uint64)
    single = True
    for k in range(offsets.size - 1):
        start = offsets[k]
        end = offsets[k + 1]
        n = end - start
        if n <= 8:
            tag = _word(data, start, end)
            position = _short_slot(tag, n, seed, shift)
            length = np.uint64(n)
        else:
            tag = _hash_bytes(data, start, end)
            position = (tag * MIX) >> shift
            length = LONG
            single = False
        home = position
        duplicate = False
        while table[position, 1] != 0:
            entry = table[position, 1]
            if (entry & LONG) == length and table[position, 0] == tag:
                other = np.int64(entry >> np.uint64(8)) - 1
                if n <= 8 or _same_bytes(data, offsets[other], offsets[other + 1], data, start, end):
                    duplicate = True
                    break
            position = (position + np.uint64(1)) & mask
        if not duplicate:
            single = single and position == home
            table[position, 0] = tag
            table[position, 1] = (np.uint64(k + 1) << np.uint64(8)) | length
    return table, single


@njit(cache=True, nogil=True)
def find_strings(table, shift, mask, seed, single, key_data, key_offsets, data, offsets, starts, counts):
    """The index among the table's strings (``place_strings`` of ``key_data`` at ``key_offsets``) of
    each string ``starts[r]``, ..., ``starts[r] + counts[r] - 1`` of ``data`` at int64 ``offsets``,
    range after range; -1 where it is none of them.

    ``single`` (every string of the table short and in its home slot): the home slot holds the
    string or none equal to it, so the answer is read without a branch on it: most tokens are not
    stop words, but which are is not predictable, and a mispredicted branch cost more than the read."""
    result = np.empty(counts.sum(), dtype=np.int64)
    out = 0
    for r in range(starts.size):
        for s in range(starts[r], starts[r] + counts[r]):
            start = offsets[s]
            end = offsets[s + 1]
            n = end - start
            if single:
                tag = _word(data, start, end)
                position = _short_slot(tag, n, seed, shift)
                entry = table[position, 1]
                same = ((entry & LONG) == np.uint64(n)) & (table[position, 0] == tag)
                result[out] = np.int64(entry >> np.uint64(8)) * np.int64(same) - 1
                out += 1
                continue
            found = -1
            if n <= 8:
                tag = _word(data, start, end)
                position = _short_slot(tag, n, seed, shift)
                while True:
                    entry = table[position, 1]
                    if entry == 0:
                        break
                    if (entry & LONG) == np.uint64(n) and table[position, 0] == tag:
                        found = np.int64(entry >> np.uint64(8)) - 1
                        break
                    position = (position + np.uint64(1)) & mask
            else:
                tag = _hash_bytes(data, start, end)
                position = (tag * MIX) >> shift
                while True:
                    entry = table[position, 1]
                    if entry == 0:
                        break
                    if (entry & LONG) == LONG and table[position, 0] == tag:
                        k = np.int64(entry >> np.uint64(8)) - 1
                        if _same_bytes(key_data, key_offsets[k], key_offsets[k + 1], data, start, end):
                            found = k
                            break
                    position = (position + np.uint64(1)) & mask
            result[out] = found
            out += 1
    return result


@njit(cache=True, nogil=True, inline="always")
def _point(b, i):
    """The code point and width of the UTF-8 character at ``b[i]``. The same as ``langid_kernels._point``:
    no kernel module calls another's, because numba's cache checks only a function's own file for changes."""
    c = np.int64(b[i])
    if c < 0x80:
        return c, 1
    if c < 0xE0:
        return ((c & 0x1F) << 6) | np.int64(b[i + 1] & 0x3F), 2
    if c < 0xF0:
        return ((c & 0x0F) << 12) | (np.int64(b[i + 1] & 0x3F) << 6) | np.int64(b[i + 2] & 0x3F), 3
    return ((c & 0x07) << 18) | (np.int64(b[i + 1] & 0x3F) << 12) | (np.int64(b[i + 2] & 0x3F) << 6) \
        | np.int64(b[i + 3] & 0x3F), 4


@njit(cache=True, nogil=True, inline="always")
def _point_start(b, start, end):
    """Where the UTF-8 character that ends at ``b[end]`` (exclusive) begins, not before ``start``."""
    i = end - 1
    while i > start and (b[i] & 0xC0) == 0x80:
        i -= 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _line_flags(table, known, needed, block_bits, point):
    """``table``'s flags of a code point; 0 for one of a block not classified yet (``known``), which
    is marked in ``needed`` for the caller to classify before it calls again."""
    block = point >> block_bits
    if not known[block]:
        needed[block] = True
        return 0
    return table[point]


@njit(cache=True, nogil=True)
def line_counts(b, offsets, table, known, block_bits):
    """Per document (UTF-8 ``b`` at int64 ``offsets``), over its lines (split at ``\\n``) with the
    ``TRIM`` characters cut from both ends, the non-empty ones: how many, their characters (code
    points), how many end in a ``TERMINAL`` character, and the characters of those equal to an
    earlier line of the document (byte for byte: a hash finds candidates, the bytes decide).

    ``table`` holds the flags by code point for the blocks of ``2 ** block_bits`` code points marked
    ``known``; a character of another block reads as neither and is marked in the returned ``needed``:
    the counts are right when nothing is (the caller classifies those blocks and calls again).
    Returns (lines, characters, terminal lines, repeated characters, needed), int64 per document."""
    n_docs = offsets.size - 1
    lines = np.zeros(n_docs, dtype=np.int64)
    chars = np.zeros(n_docs, dtype=np.int64)
    terminal = np.zeros(n_docs, dtype=np.int64)
    repeated = np.zeros(n_docs, dtype=np.int64)
    needed = np.zeros(known.size, dtype=np.bool_)
    # One document's non-empty lines, and an open-addressing table of them whose slots belong to the
    # document that wrote them last (``owner``): no clearing. Sized by the most lines a document has.
    most = 1
    for d in range(n_docs):
        newlines = 0
        for at in range(np.uint64(offsets[d]), np.uint64(offsets[d + 1])):
            newlines += b[at] == 10
        most = max(most, newlines + 1)
    line_start = np.empty(most, dtype=np.int64)
    line_end = np.empty(most, dtype=np.int64)
    line_chars = np.empty(most, dtype=np.int64)
    line_hash = np.empty(most, dtype=np.uint64)
    bits = 4
    while (1 << bits) < 2 * most:
        bits += 1
    owner = np.full(1 << bits, -1, dtype=np.int64)
    slot_line = np.empty(1 << bits, dtype=np.int64)
    for d in range(n_docs):
        end = offsets[d + 1]
        i = offsets[d]
        k = 0
        while True:
            # The line's end and its characters (bytes that do not continue one): eight bytes a step
            # up to the word holding the newline, then byte by byte.
            j = i
            points = 0
            while j + 8 <= end:
                w = _load8(b, j)
                x = w ^ NEWLINES
                if (x - LOW_BITS) & ~x & HIGH_BITS:
                    break
                points += 8 - np.int64((((w & ~(w << np.uint64(1)) & HIGH_BITS) >> np.uint64(7)) * LOW_BITS)
                                       >> np.uint64(56))
                j += 8
            while j < end and b[np.uint64(j)] != 10:
                points += (b[np.uint64(j)] & 0xC0) != 0x80
                j += 1
            first = i
            while first < j:
                point, width = _point(b, first)
                if not _line_flags(table, known, needed, block_bits, point) & TRIM:
                    break
                first += width
                points -= 1
            last = j
            ends_terminal = False
            while last > first:
                start = _point_start(b, first, last)
                flags = _line_flags(table, known, needed, block_bits, _point(b, start)[0])
                if not flags & TRIM:
                    ends_terminal = (flags & TERMINAL) != 0
                    break
                last = start
                points -= 1
            if last > first:
                line_start[k] = first
                line_end[k] = last
                line_chars[k] = points
                k += 1
                chars[d] += points
                terminal[d] += ends_terminal
            if j >= end:
                break
            i = j + 1
        lines[d] = k
        if k < 2:
            continue
        table_bits = 4
        while (1 << table_bits) < 2 * k:
            table_bits += 1
        shift = np.uint64(64 - table_bits)
        mask = np.int64((1 << table_bits) - 1)
        for x in range(k):
            h = _hash_bytes(b, line_start[x], line_end[x])
            line_hash[x] = h
            position = np.int64((h * MIX) >> shift)
            seen = False
            while owner[position] == d:
                y = slot_line[position]
                if line_hash[y] == h and _same_bytes(b, line_start[y], line_end[y], b, line_start[x], line_end[x]):
                    seen = True
                    break
                position = (position + 1) & mask
            if seen:
                repeated[d] += line_chars[x]
            else:
                owner[position] = d
                slot_line[position] = x
    return lines, chars, terminal, repeated, needed


@njit(cache=True, nogil=True)
def trimmed_windows(b, offsets, limits, table, known, block_bits):
    """Per document (UTF-8 ``b`` at int64 ``offsets``): its first ``limits[d]`` characters (code
    points) once the ``TRIM`` characters are cut from both its ends, copied out, and the byte length
    of the whole document so cut: what ``pc.utf8_slice_codeunits(pc.utf8_trim_whitespace(texts), 0,
    limit)`` and ``pc.binary_length`` of the trimmed texts give, without copying whole texts to trim
    them. ``table``, ``known`` and the returned ``needed`` as for ``line_counts``: only the
    characters at the ends are looked up. Returns (window offsets, window bytes, trimmed byte lengths,
    needed)."""
    n_docs = offsets.size - 1
    starts = np.empty(n_docs, dtype=np.int64)
    window_offsets = np.empty(n_docs + 1, dtype=np.int64)
    trimmed_bytes = np.empty(n_docs, dtype=np.int64)
    needed = np.zeros(known.size, dtype=np.bool_)
    window_offsets[0] = 0
    for d in range(n_docs):
        first = offsets[d]
        last = offsets[d + 1]
        while first < last:
            point, width = _point(b, first)
            if not _line_flags(table, known, needed, block_bits, point) & TRIM:
                break
            first += width
        while last > first:
            start = _point_start(b, first, last)
            if not _line_flags(table, known, needed, block_bits, _point(b, start)[0]) & TRIM:
                break
            last = start
        trimmed_bytes[d] = last - first
        # The window ends before its limit + 1st character: the limit + 1st byte that starts one.
        end = first
        points = 0
        limit = limits[d]
        while end < last:
            if (b[end] & 0xC0) != 0x80:
                if points == limit:
                    break
                points += 1
            end += 1
        starts[d] = first
        window_offsets[d + 1] = window_offsets[d] + end - first
    window = np.empty(window_offsets[n_docs], dtype=np.uint8)
    for d in range(n_docs):
        window[window_offsets[d]:window_offsets[d + 1]] = b[starts[d]:starts[d] + window_offsets[d + 1] - window_offsets[d]]
    return window_offsets, window, trimmed_bytes, needed
