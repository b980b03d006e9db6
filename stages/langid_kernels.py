"""Compiled loops of langid's views (``stages.langid``), one pass over the UTF-8 of a whole batch:
blanking the runs of ASCII punctuation that touch Han or kana, and counting the characters that vote
for a Chinese script. Per document, as regular expressions with a Python callback per run, they took
a third of the stage's Python time on corpus-dev at 4x.

``classes`` holds the bits below for every code point under ``len(classes)``; ``langid`` builds it from
its own regular expressions, so the loops and the patterns cannot disagree on a character.
"""
from __future__ import annotations

import numpy as np

from pipeline.jit import njit

HAN, KANA, SIMPLIFIED, TRADITIONAL, PUNCTUATION = 1, 2, 4, 8, 16


@njit(cache=True, nogil=True, inline="always")
def _point(b, i):
    """The code point and width of the UTF-8 character at ``b[i]``."""
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
def _cjk(classes, point):
    return point < classes.size and (classes[point] & (HAN | KANA)) != 0


@njit(cache=True, nogil=True, inline="always")
def _cjk_before(b, start, i, classes):
    """Whether the character that ends right before ``b[i]`` (none before ``start``) is Han or kana."""
    if i == start:
        return False
    k = i - 1
    while k > start and (b[k] & 0xC0) == 0x80:  # back over continuation bytes to the lead byte
        k -= 1
    return _cjk(classes, _point(b, k)[0])


@njit(cache=True, nogil=True)
def blank_punctuation(b, offsets, classes):
    """Each string (UTF-8 ``b`` at int64 ``offsets``) with every maximal run of ``PUNCTUATION``
    characters (all ASCII) that has a Han or kana character right before or right after it replaced
    by one space. Returns the bytes (a view of a buffer as long as ``b``), the int64 offsets of the
    strings, and whether each string changed. Only the characters around a run are decoded, and the
    bytes between blanked runs are copied in one piece."""
    out, new_offsets, o = np.empty(b.size, np.uint8), np.zeros_like(offsets), 0
    changed = np.zeros(offsets.size - 1, np.bool_)
    for t in range(offsets.size - 1):
        start, end = offsets[t], offsets[t + 1]
        copied = i = start
        while i < end:
            if b[i] >= 0x80 or not classes[b[i]] & PUNCTUATION:
                i += 1
                continue
            j = i + 1
            while j < end and b[j] < 0x80 and classes[b[j]] & PUNCTUATION:
                j += 1
            # Runs are maximal, so the character before one is never punctuation.
            if _cjk_before(b, start, i, classes) or (j < end and _cjk(classes, _point(b, j)[0])):
                out[o:o + i - copied] = b[copied:i]
                o += i - copied
                out[o] = 0x20
                o += 1
                copied = j
                changed[t] = True
            i = j
        out[o:o + end - copied] = b[copied:end]
        o += end - copied
        new_offsets[t + 1] = o
    return out[:o], new_offsets, changed


@njit(cache=True, nogil=True)
def script_votes(b, offsets, classes):
    """Per string: its Han characters, its simplified-only and its traditional-only ones."""
    votes = np.zeros((offsets.size - 1, 3), np.int64)
    for t in range(offsets.size - 1):
        i = offsets[t]
        while i < offsets[t + 1]:
            if b[i] < 0x80:
                i += 1
                continue
            point, width = _point(b, i)
            if point < classes.size:
                kind = classes[point]
                votes[t, 0] += (kind & HAN) != 0
                votes[t, 1] += (kind & SIMPLIFIED) != 0
                votes[t, 2] += (kind & TRADITIONAL) != 0
            i += width
    return votes
