"""The rules stage's per-word and per-character loops, compiled with numba: a document's words with
their hashes and hashed pair counts, and the code family's data-blob pattern. The Gopher n-gram
statistics are in ``ngram_kernels``, C4's per-line loops in ``line_kernels``.

Why compiled: each ran as a chain of ten-odd numpy passes allocating and re-reading arrays of the
document's size, or as a regex scan; one loop over the document's code points
(``document.code_points``) does the same work in a fraction of the time. numba compiles the loops on
first use and keeps the machine code in ``__pycache__`` (``cache=True``), so a worker loads them
instead of compiling again: importing numba and loading the code of all three kernel modules costs a
worker about 0.5 s of CPU once (compiling them, when the cache is empty, about 10 s).

Each loop gives what its definition gives, on every text: ``find_words`` the whitespace tokens of
``str.split`` (CJK documents: each Han or kana character, each run of other letters and digits),
``blob_chars`` the characters of what ``re.findall`` finds of StarCoder's blob pattern (``code.py``).
Characters are classified by tables (``document.char_classes``, ``code.blob_classes``) built from
the regex engine's and ``str``'s own notions of letters, digits and whitespace.
``tests/test_rules.py`` checks each loop against its plain-Python definition on random texts.
"""
from __future__ import annotations

import numpy as np
from pipeline.jit import njit

# Flags of a code point in ``document.char_classes``.
SINGLE = 1  # a Han or kana letter or digit: a CJK word by itself
RUN = 2  # any other letter or digit: a run of them is one CJK word
ALPHA = 4  # str.isalpha
LETTER = 8  # [^\W\d_]
SPACE = 16  # str.isspace: what str.split splits on, str.strip strips and the regex engine's \s is
BREAK = 32  # a line break of str.splitlines

# Odd 64-bit constants (splitmix64's) for the word and pair hashes; uint64 arithmetic wraps.
MIX = np.uint64(0x9E3779B97F4A7C15)
BASE = np.uint64(0xBF58476D1CE4E5B9)


@njit(cache=True, nogil=True)
def find_words(points, classes, cjk):
    """The words of a document: (starts, lengths, hashes, pair counts, summary).

    A word's hash mixes its code point sum, first and last code point: equal for equal words, rarely
    for different ones. The pair count at i is how many adjacent word pairs share the hash bin of
    pair (i, i + 1), four bins per pair: at least how often that pair occurs. ``summary``: symbol
    words (no letter or digit; none in CJK documents), their characters, the characters of all
    words, words with a letter (``ALPHA`` in CJK documents, ``LETTER`` otherwise), the longest word,
    "#" characters, ellipses ("..." and "…", as ``str.count`` counts them)."""
    n = points.size
    hash_signs = ellipses = dots = 0
    for c in points:
        if c == 46:
            dots += 1
            continue
        ellipses += dots // 3
        dots = 0
        if c == 35:
            hash_signs += 1
        elif c == 0x2026:
            ellipses += 1
    ellipses += dots // 3
    starts = np.empty(n, dtype=np.int64)
    lengths = np.empty(n, dtype=np.int64)
    hashes = np.empty(n, dtype=np.uint64)
    alpha_flag = ALPHA if cjk else LETTER
    words = symbols = symbol_chars = chars = alpha = longest = 0
    i = 0
    while i < n:
        c = points[i]
        flags = classes[c]
        total = np.uint64(c)
        end = i + 1
        if cjk:
            if flags & RUN:
                while end < n and classes[points[end]] & RUN:
                    flags |= classes[points[end]]
                    total += np.uint64(points[end])
                    end += 1
            elif not flags & SINGLE:  # punctuation, symbols and spaces are no CJK words
                i += 1
                continue
        else:
            if flags & SPACE:
                i += 1
                continue
            while end < n and not classes[points[end]] & SPACE:
                flags |= classes[points[end]]
                total += np.uint64(points[end])
                end += 1
        hashes[words] = (total * MIX + np.uint64(points[i])) * MIX + np.uint64(points[end - 1])
        starts[words] = i
        lengths[words] = end - i
        words += 1
        chars += end - i
        longest = max(longest, end - i)
        if not cjk and not flags & (SINGLE | RUN):
            symbols += 1
            symbol_chars += end - i
        if flags & alpha_flag:
            alpha += 1
        i = end
    pairs = max(words - 1, 0)
    bits = 12
    while (4 * pairs) >> bits:
        bits += 1
    shift = np.uint64(64 - bits)
    bins = np.empty(pairs, dtype=np.int64)
    occupancy = np.zeros(1 << bits, dtype=np.int32)
    for k in range(pairs):
        bins[k] = np.int64(((hashes[k] * MIX + hashes[k + 1]) * BASE) >> shift)  # the product's top bits
        occupancy[bins[k]] += 1
    counts = np.empty(pairs, dtype=np.int64)
    for k in range(pairs):
        counts[k] = occupancy[bins[k]]
    summary = (symbols, symbol_chars, chars, alpha, longest, hash_signs, ellipses)
    return starts[:words], lengths[:words], hashes[:words], counts, summary


# The blob pattern's classes of a code point (``code.blob_classes``): base64, hex digit, the regex
# engine's \w and \s.
BLOB_BASE64, BLOB_HEX, BLOB_WORD, BLOB_SPACE = 1, 2, 4, 8


@njit(cache=True, nogil=True, inline="always")
def _is_word(points, table, i):
    r"""\w at i (nothing past either end of the text is)."""
    if i < 0 or i >= points.size:  # an if, not ``and``: numba compiles a returned ``and`` 3x slower here
        return False
    return (table[points[i]] & BLOB_WORD) != 0


@njit(cache=True, nogil=True, inline="always")
def _hex_byte(points, table, i):
    r"""Where ``\b(?:0x|\\x)?[0-9a-fA-F]{2}(?:,\s*|\b\s*)`` matching at i ends, or -1."""
    n = points.size
    if _is_word(points, table, i - 1) == _is_word(points, table, i):
        return -1
    if i + 1 < n and points[i + 1] == 120 and (points[i] == 48 or points[i] == 92):  # 0x, \x
        i += 2
    if i + 1 >= n or not table[points[i]] & table[points[i + 1]] & BLOB_HEX:
        return -1
    i += 2
    if i < n and points[i] == 44:
        i += 1
    elif _is_word(points, table, i):  # \b after a hex digit: no letter, digit or "_"
        return -1
    while i < n and table[points[i]] & BLOB_SPACE:
        i += 1
    return i


@njit(cache=True, nogil=True, inline="always")
def _unicode_escape(points, table, i):
    r"""Where ``\\u[0-9a-fA-F]{4}`` matching at i ends, or -1."""
    if i + 5 < points.size and points[i] == 92 and points[i + 1] == 117:
        if table[points[i + 2]] & table[points[i + 3]] & table[points[i + 4]] & table[points[i + 5]] & BLOB_HEX:
            return i + 6
    return -1


@njit(cache=True, nogil=True)
def blob_chars(points, table):
    r"""Characters in the matches ``re.findall`` finds of StarCoder's blob pattern, the first that
    matches at each place: 64 or more base64 characters, 8 or more hex bytes (``_hex_byte``), or 8 or
    more \u escapes. The regex engine's backtracking finds no other matches than these greedy
    runs: after "0x" or "\x" no two hex digits start, and where a byte's comma or whitespace is
    given back, the next byte cannot start."""
    n = points.size
    total = 0
    run_end = 0  # when i < run_end, base64 characters run from i to run_end, fewer than 64
    i = 0
    while i < n:
        flags = table[points[i]]
        if flags & BLOB_BASE64 and i >= run_end:
            run_end = i + 1
            while run_end < n and table[points[run_end]] & BLOB_BASE64:
                run_end += 1
            if run_end - i >= 64:
                total += run_end - i
                i = run_end
                continue
        end = i
        if flags & BLOB_HEX or points[i] == 92:
            units = 0
            following = _hex_byte(points, table, end)
            while following >= 0:
                units += 1
                end = following
                following = _hex_byte(points, table, end)
            if units < 8:
                units = 0
                end = i
                following = _unicode_escape(points, table, end)
                while following >= 0:
                    units += 1
                    end = following
                    following = _unicode_escape(points, table, end)
            if units < 8:
                end = i
        if end > i:
            total += end - i
            i = end
        else:
            i += 1
    return total
