"""C4's per-line loops, compiled with numba: undoing hard wrapping, and the line rules, which also
look for the phrase rules' phrases in the lines they keep.

Why compiled: they were Python loops over every line of the corpus (strip, split, count words, test
the end, join wrapped lines) and a lowercased copy of the kept text searched once per phrase; a loop
over the document's code points does the same in a fraction of the time (see ``kernels`` on numba's
cache).

Lines are those of ``str.splitlines``, stripped as ``str.strip`` strips them, words those of
``str.split`` (CJK documents: Han and kana characters and runs of other letters and digits), and
lengths are in characters, as ``c4.py`` defines the rules; ``tests/test_rules.py`` checks the loops
against a plain-Python C4 cleaner on random texts.
"""
from __future__ import annotations

import numpy as np
from pipeline.jit import njit

from stages.rules.kernels import BREAK, RUN, SINGLE, SPACE

# What ``clean_lines`` did with a line: a line rule's code is its index in ``c4.LINE_RULES``.
BLANK, KEPT, TOO_LONG_WORD, NO_TERMINAL_PUNCT, TOO_FEW_WORDS = -1, 0, 1, 2, 3
LINE_RULE_CODES = 6
MIN_WRAPPED_LINES = 5


@njit(cache=True, nogil=True, inline="always")
def _line_at(points, classes, start):
    """The line of ``str.splitlines`` starting at ``start``: (its end, where the next one starts)."""
    n = points.size
    i = start
    while i < n and not classes[points[i]] & BREAK:
        i += 1
    if i == n:
        return n, n
    if points[i] == 13 and i + 1 < n and points[i + 1] == 10:
        return i, i + 2
    return i, i + 1


@njit(cache=True, nogil=True, inline="always")
def _strip(points, classes, start, end):
    while start < end and classes[points[start]] & SPACE:
        start += 1
    while end > start and classes[points[end - 1]] & SPACE:
        end -= 1
    return start, end


@njit(cache=True, nogil=True, inline="always")
def _wrap_width(points, classes, low, high, min_share):
    """The column the text is hard-wrapped at, or -1: the 90th percentile of the lengths of its
    non-blank lines (right-stripped) when there are at least ``MIN_WRAPPED_LINES``, ``min_share`` of
    them are 75-100% of it, at most 5% longer than 120% of it, and it lies in [low, high]."""
    lengths = np.empty(points.size // 2 + 1, dtype=np.int64)  # a non-blank line and its break
    count = 0
    start = 0
    while start < points.size:
        end, following = _line_at(points, classes, start)
        first, last = _strip(points, classes, start, end)
        if last > first:
            lengths[count] = last - start
            count += 1
        start = following
    if count < MIN_WRAPPED_LINES:
        return -1
    lengths = np.sort(lengths[:count])
    width = lengths[(count - 1) * 9 // 10]
    if not low <= width <= high:
        return -1
    near = beyond = 0
    for length in lengths:
        if 0.75 * width <= length <= width:
            near += 1
        elif length > 1.2 * width:
            beyond += 1
    if near < min_share * count or beyond > 0.05 * count:
        return -1
    return width


@njit(cache=True, nogil=True, inline="always")
def _ends_in(points, start, end, terminal):
    """Whether the line ends in one of the ``terminal`` characters."""
    if end > start:
        for c in terminal:
            if points[end - 1] == c:
                return True
    return False


@njit(cache=True, nogil=True)
def unwrap(points, classes, low, high, min_share, terminal, cjk):
    """Undo hard wrapping (books, e-mail): if the text is wrapped (``_wrap_width``), join each line to
    the previous one when that one runs to 60% of the width or more without ending in ``terminal``;
    short lines (headings, a paragraph's last line) and blank lines end a paragraph. Lines are
    stripped and joined by a space (nothing in CJK documents). Returns (the wrap width or -1, the
    paragraphs joined by newlines, lines joined to a previous one)."""
    width = _wrap_width(points, classes, low, high, min_share)
    if width < 0:
        return width, points[:0], 0
    full = 0.6 * width
    out = np.empty(points.size, dtype=np.uint32)
    size = joined = start = 0
    continues = False
    while start < points.size:
        end, following = _line_at(points, classes, start)
        first, last = _strip(points, classes, start, end)
        if continues and last > first:
            if not cjk:
                out[size] = 32
                size += 1
            joined += 1
        elif start:
            out[size] = 10
            size += 1
        out[size : size + last - first] = points[first:last]
        size += last - first
        continues = False
        if last > first and last - first >= full:
            continues = not _ends_in(points, first, last, terminal)
        start = following
    return width, out[:size], joined


@njit(cache=True, nogil=True, inline="always")
def _longest_token(points, classes, start, end):
    longest = run = 0
    for i in range(start, end):
        run = 0 if classes[points[i]] & SPACE else run + 1
        longest = max(longest, run)
    return longest


@njit(cache=True, nogil=True, inline="always")
def _has_words(points, classes, start, end, cjk, enough):
    """Whether the line holds ``enough`` words."""
    count = 0
    inside = False
    for i in range(start, end):
        flags = classes[points[i]]
        if cjk:
            if flags & SINGLE or (flags & RUN and not inside):
                count += 1
            inside = (flags & RUN) != 0
        else:
            if not flags & SPACE and not inside:
                count += 1
            inside = not flags & SPACE
        if count >= enough:
            return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _ends_badly(points, start, end, terminal):
    """Not ending in one of ``terminal``, or ending in an ellipsis (``...`` or ``…``)."""
    if not _ends_in(points, start, end, terminal):
        return True
    last = points[end - 1]
    if last == 0x2026 or (last == 46 and end - start >= 3 and points[end - 2] == 46 and points[end - 3] == 46):
        return True
    return False


@njit(cache=True, nogil=True, inline="always")
def _find_phrases(points, start, end, lower, phrases, offsets, by_first, found):
    """Set ``found[k]`` where phrase k occurs in points[start:end] lowercased by ``lower``; phrases
    are looked up by their first character's low 6 bits (``by_first``: 65 offsets into their order,
    which is by those bits)."""
    for i in range(start, end):
        c = lower[points[i]]
        bucket = c & 63
        for k in range(by_first[bucket], by_first[bucket + 1]):
            first, last = offsets[k], offsets[k + 1]
            if found[k] or phrases[first] != c or i + last - first > end:
                continue
            j = 1
            while first + j < last and lower[points[i + j]] == phrases[first + j]:
                j += 1
            found[k] = first + j == last


@njit(cache=True, nogil=True)
def clean_lines(points, marked, strip, classes, terminal, long_word, max_word, check_end, few_words,
                min_words, cjk, forced, lower, phrases, phrase_offsets, by_first):
    """C4's line rules over the lines of ``points``. With ``strip`` they are the text's lines, to be
    stripped, and hold no citation marks (``marked`` is ``points``); otherwise they are stripped
    already, and ``marked`` holds them with their citation marks removed, which the terminal
    punctuation rule reads and kept lines keep. A line is removed by the first rule that hits: a word
    longer than ``max_word`` (``long_word``), a bad end (``check_end``, ``terminal`` code points),
    fewer than ``min_words`` words (``few_words``, min_words >= 1), or ``forced[i]`` where ``forced``
    has an entry per line.

    Returns (per line: BLANK, KEPT or the rule's code; per rule code: lines, characters, and the first
    line it removed or -1; the kept lines joined by newlines, a blank line between two kept lines
    where one or more were between them; per phrase, whether a kept line holds it lowercased by
    ``lower``). Phrase k is phrases[phrase_offsets[k]:phrase_offsets[k + 1]], none empty, found by
    ``by_first`` (see ``_find_phrases``)."""
    hits = np.empty(points.size, dtype=np.int8)
    removed = np.zeros((3, LINE_RULE_CODES), dtype=np.int64)
    removed[2, :] = -1
    out = np.empty(marked.size, dtype=np.uint32)  # kept lines and their breaks come from ``marked``
    found = np.zeros(phrase_offsets.size - 1, dtype=np.bool_)
    size = line = start = mark_start = 0
    kept = paragraph_break = False
    while start < points.size:
        end, following = _line_at(points, classes, start)
        if strip:
            start, end = _strip(points, classes, start, end)
            mark_start, mark_end, mark_following = start, end, following
        else:
            mark_end, mark_following = _line_at(marked, classes, mark_start)  # (size, size) past the end
        if end == start:
            hits[line] = BLANK
            paragraph_break = kept
        else:
            if long_word and end - start > max_word and _longest_token(points, classes, start, end) > max_word:
                hit = TOO_LONG_WORD
            elif check_end and _ends_badly(marked, mark_start, mark_end, terminal):
                hit = NO_TERMINAL_PUNCT
            elif few_words and not _has_words(points, classes, start, end, cjk, min_words):
                hit = TOO_FEW_WORDS
            elif forced.size:
                hit = forced[line]
            else:
                hit = KEPT
            hits[line] = hit
            if hit != KEPT:
                if removed[2, hit] < 0:
                    removed[2, hit] = line
                removed[0, hit] += 1
                removed[1, hit] += end - start
            else:
                if kept:
                    out[size] = 10
                    size += 1
                    if paragraph_break:
                        out[size] = 10
                        size += 1
                        paragraph_break = False
                out[size : size + mark_end - mark_start] = marked[mark_start:mark_end]
                size += mark_end - mark_start
                kept = True
                if found.size:
                    _find_phrases(points, start, end, lower, phrases, phrase_offsets, by_first, found)
        line += 1
        start = following
        mark_start = mark_following
    return hits[:line], removed, out[:size], found
