"""The Gopher n-gram statistics, compiled with numba: upper bounds from the hashed pair counts of
``kernels.find_words``, and the exact counts the few documents the bounds do not settle need.

Why compiled: each was a chain of numpy passes (sliding minima, masks, cumulative sums, a sort of
the n-gram hashes) costing a few microseconds per call before any work; the rules run them on every
document, for several n. See ``kernels`` on numba's on-disk cache.

The loops compute what ``gopher.py`` defines: an n-gram's hash is the polynomial
sum(keys[i + k] * BASE ** (n - 1 - k)) of its word keys (wrapping in 64 bits); an n-gram repeats when
its hash occurred at an earlier position; ``tests/test_rules.py`` checks each loop against numpy.
"""
from __future__ import annotations

import numpy as np
from pipeline.jit import njit

from stages.rules.kernels import BASE


@njit(cache=True, nogil=True)
def top_ngram_bounds(pair_counts, lengths, sizes, cjk, longest):
    """Per n in ``sizes`` (n >= 2, at most the words; other entries are left 0), two upper bounds on
    the characters of the most frequent n-gram times its count: the largest count an n-gram's n - 1
    word pairs all reach times n of the ``longest`` word (and n - 1 spaces outside CJK documents),
    and the largest such count times the n-gram's own characters."""
    bounds = np.zeros((sizes.size, 2), dtype=np.int64)
    prefix = np.empty(pair_counts.size, dtype=np.int64)
    suffix = np.empty(pair_counts.size, dtype=np.int64)
    for s in range(sizes.size):
        n = sizes[s]
        if n < 2 or n > lengths.size:
            continue
        if n > 4:  # a window of n - 1 pairs is the minimum of two block minima, else of at most 3 pairs
            _block_mins(pair_counts, n - 1, prefix, suffix)
        gaps = 0 if cjk else n - 1
        chars = gaps
        for k in range(n):
            chars += lengths[k]
        most = most_chars = 0
        for i in range(lengths.size - n + 1):
            if i:
                chars += lengths[i + n - 1] - lengths[i - 1]
            if n > 4:
                least = min(suffix[i], prefix[i + n - 2])  # of pairs i .. i + n - 2
            else:
                least = pair_counts[i]
                for k in range(i + 1, i + n - 1):
                    least = min(least, pair_counts[k])
            most = max(most, least)
            most_chars = max(most_chars, least * chars)
        bounds[s, 0] = most * (n * longest + gaps)
        bounds[s, 1] = most_chars
    return bounds


@njit(cache=True, nogil=True, inline="always")
def _block_mins(counts, width, prefix, suffix):
    """Running minima within blocks of ``width``, forwards into ``prefix`` and backwards into
    ``suffix``: the minimum of any ``width`` in a row i .. j is min(suffix[i], prefix[j]) (van Herk)."""
    n = counts.size
    position = 0  # in the block
    for i in range(n):
        prefix[i] = counts[i] if position == 0 else min(prefix[i - 1], counts[i])
        position = position + 1 if position + 1 < width else 0
    position = (n - 1) % width
    for i in range(n - 1, -1, -1):
        suffix[i] = counts[i] if i == n - 1 or position == width - 1 else min(suffix[i + 1], counts[i])
        position = position - 1 if position > 0 else width - 1


@njit(cache=True, nogil=True)
def repeatable(pair_counts, n):
    """The positions (ascending) of the n-grams (n >= 2) whose word pairs all occur more than once."""
    found = np.empty(max(pair_counts.size - n + 2, 0), dtype=np.int64)
    count = 0
    run = 0  # pairs with a count over 1 ending at the window's last pair
    for last in range(pair_counts.size):
        run = run + 1 if pair_counts[last] > 1 else 0
        if run >= n - 1:
            found[count] = last - n + 2
            count += 1
    return found[:count]


@njit(cache=True, nogil=True)
def dup_ngram_bounds(pair_counts, lengths, n):
    """(how many n-grams may repeat, the characters of the words they cover): the n-grams (n >= 2)
    whose word pairs all occur more than once."""
    starts = repeatable(pair_counts, n)
    covered = 0
    end = 0  # the words before this one are counted
    for start in starts:
        for k in range(max(start, end), start + n):
            covered += lengths[k]
        end = start + n
    return starts.size, covered


@njit(cache=True, nogil=True, inline="always")
def _ngram_hashes(keys, positions, n):
    """The hash of the n-gram at each of ``positions``."""
    hashes = np.empty(positions.size, dtype=np.uint64)
    for j in range(positions.size):
        value = np.uint64(0)
        for k in range(positions[j], positions[j] + n):
            value = value * BASE + keys[k]
        hashes[j] = value
    return hashes


@njit(cache=True, nogil=True)
def repeated_ngram_chars(keys, lengths, positions, n):
    """Characters of the words covered by the n-grams at ``positions`` (ascending) whose hash over
    ``keys`` occurred at an earlier one of them."""
    hashes = _ngram_hashes(keys, positions, n)
    order = np.argsort(hashes, kind="mergesort")  # stable: the first of equal hashes is the earliest
    covered = 0
    end = 0  # the words before this one are counted
    repeats = np.zeros(positions.size, dtype=np.bool_)
    for j in range(1, order.size):
        repeats[order[j]] = hashes[order[j]] == hashes[order[j - 1]]
    for j in range(positions.size):
        if repeats[j]:
            for k in range(max(positions[j], end), positions[j] + n):
                covered += lengths[k]
            end = positions[j] + n
    return covered


@njit(cache=True, nogil=True)
def top_ngram_chars(keys, lengths, positions, n, gaps):
    """Of the n-grams at ``positions`` (ascending), by their hash over ``keys``: the characters of
    the most frequent one (``gaps`` added to its words') times its count, the earliest of equally
    frequent ones; 0 when none occurs twice (datatrove would still count the longest single one)."""
    hashes = _ngram_hashes(keys, positions, n)
    order = np.argsort(hashes, kind="mergesort")
    most = 1
    first = -1  # where the most frequent one first occurs
    j = 0
    while j < order.size:
        end = j + 1
        while end < order.size and hashes[order[end]] == hashes[order[j]]:
            end += 1
        if end - j > most or (end - j == most and most > 1 and order[j] < first):
            most = end - j
            first = order[j]
        j = end
    if first < 0:
        return 0
    chars = gaps
    for k in range(positions[first], positions[first] + n):
        chars += lengths[k]
    return chars * most
