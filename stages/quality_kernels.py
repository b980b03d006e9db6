"""The quality stage's two hot loops, compiled with numba: splitting prepared text into lines and
tokens, and the n-gram model's per-token probabilities.

Why compiled: both were chains of a dozen or more numpy passes over every byte or token, each
allocating and re-reading whole arrays; one loop that visits each byte or token once costs a fifth
as much (``bench/bench_quality.py throughput``). numba compiles the loops on first use and keeps the
machine code in ``__pycache__`` (``cache=True``), so a worker loads them instead of compiling again.

The loops do what their numpy predecessors did, to the byte and to the bit: ``split_utf8`` reads the
same per-character tables (``quality_lm.CharClasses``), and ``interpolated_probs`` performs the same
floating-point operations in the same order (the logarithm stays numpy's). Their callers,
``quality_lm.split_text`` and ``quality_lm.token_log_probs``, hold the definitions they are tested
against.
"""
from __future__ import annotations

import numpy as np
from stages.jit import njit

# Flags of a character in ``quality_lm.CharClasses.table`` (the same values).
SPACE, MARK, DIGIT, NOT_ALNUM = 1, 2, 4, 8

MIX = np.uint64(0x9E3779B97F4A7C15)
EMPTY = np.uint64(0xFFFFFFFFFFFFFFFF)  # no n-gram key reaches it: keys are below (V + 2) ** 3 < 2 ** 63


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
