"""Exact matching: the normalised form of documents and paragraphs, and their 64-bit hashes.

Exact duplicates are compared after a light normalisation (Unicode NFC, lowercase, every run of
ASCII whitespace one space, no leading or trailing whitespace), so copies that differ only in case, line
wrapping or indentation still match. A paragraph is one line of the document (``text`` split on
``"\\n"``, as ``str.split("\\n")`` does), so paragraph indices here and in ``Dedup.process`` agree.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.utf8 import utf8_buffers
from stages.dedup import kernels
from stages.unicode_fold import COMPOSES_WITH_PREVIOUS


def normalise(texts: pa.Array) -> pa.Array:
    """NFC, lowercase, each run of ASCII whitespace (tab, newline, form feed, carriage return,
    space) one space, leading and trailing Unicode whitespace trimmed (the last two in
    ``kernels.squeeze``). The runs are of RE2's ``\\s``, with which it was first written (not vertical
    tab, not the Unicode spaces), so that every key computed before stays the same."""
    lowered = pc.utf8_lower(nfc(pc.fill_null(texts, "")))
    offsets, data = utf8_buffers(lowered)
    data, offsets = kernels.squeeze(data, offsets)
    width = np.int64 if pa.types.is_large_string(lowered.type) else np.int32
    return pa.Array.from_buffers(lowered.type, len(lowered), [
        None, pa.py_buffer(offsets.astype(width)), pa.py_buffer(data)])


# NFC changes no string whose characters all have canonical combining class 0 and
# NFC_Quick_Check=Yes (UAX #15), and Unicode's stability policy keeps such a string unchanged under
# every later version: so Python's unicodedata can tell which strings the (newer) tables of Arrow's
# utf8proc would change, provided it knows their characters. Those of class 0 that compose with the
# character before them are ``unicode_fold.COMPOSES_WITH_PREVIOUS``.
# Lead bytes 0xCC and above of UTF-8 characters that NFC leaves alone wherever they stand (all
# assigned, class 0, Quick_Check=Yes), as every character below U+0300 (lead bytes below 0xCC) is:
# U+03C0-047F and U+04C0-04FF (Greek and Cyrillic), U+0680-06BF (Arabic letters), U+4000-9FFF (CJK
# ideographs), U+B000-CFFF (Hangul syllables), U+E000-EFFF (private use). Checked against
# unicodedata by tests/test_dedup.py; the characters of other lead bytes are looked up one by one.
_NFC_STABLE_LEAD = np.zeros(256, dtype=bool)
_NFC_STABLE_LEAD[[0xCF, 0xD0, 0xD1, 0xD3, 0xDA, *range(0xE4, 0xEA), 0xEB, 0xEC, 0xEE]] = True
# Per code point, whether NFC may change a string holding it; filled in as code points are first
# seen (np.zeros takes untouched pages from the OS: unseen scripts cost no memory).
_NFC_CHECKED = np.zeros(0x110000, dtype=bool)
_NFC_UNSTABLE = np.zeros(0x110000, dtype=bool)


def nfc(strings: pa.Array) -> pa.Array:
    """``pc.utf8_normalize(strings, "NFC")`` of a null-free string array. utf8proc decomposes and
    recomposes every string it is given, though nearly all text is in NFC already: only the strings
    holding a character that NFC may change go through it."""
    if isinstance(strings, pa.ChunkedArray):
        strings = strings.combine_chunks()
    offsets, data = utf8_buffers(strings)
    # Characters below U+0300 are all stable; so are CJK ideographs (lead bytes E4-E9), the
    # commonest of the rest, left out before positions are listed, which is the costly part.
    check = (data - np.uint8(0xE4)) > 5
    check &= data >= 0xCC
    leads = np.flatnonzero(check)
    leads = leads[~_NFC_STABLE_LEAD[data[leads]]]
    points = _code_points(data, leads)
    new = np.unique(points[~_NFC_CHECKED[points]])
    if len(new):
        _NFC_UNSTABLE[new] = [_nfc_unstable(point) for point in new.tolist()]
        _NFC_CHECKED[new] = True
    changing = np.unique(np.searchsorted(offsets, leads[_NFC_UNSTABLE[points]], side="right") - 1)
    if not len(changing):
        return strings
    normalised = pc.utf8_normalize(strings.take(pa.array(changing, pa.int64())), "NFC")
    order = np.arange(len(strings))
    order[changing] = len(strings) + np.arange(len(changing))
    return pa.concat_arrays([strings, normalised]).take(pa.array(order))


def _nfc_unstable(point: int) -> bool:
    """Whether NFC may change a string holding this character (unassigned ones included: a newer
    Unicode version may give them a decomposition)."""
    char = chr(point)
    return (unicodedata.category(char) == "Cn" or unicodedata.combining(char) != 0
            or point in COMPOSES_WITH_PREVIOUS or unicodedata.normalize("NFC", char) != char)


def _code_points(data: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """The code points of the multi-byte UTF-8 characters that start at ``leads`` in ``data``."""
    lead = data[leads].astype(np.uint32)
    points = (lead & 0x1F) << 6 | (data[leads + 1] & 0x3F)
    longer = np.flatnonzero(lead >= 0xE0)
    points[longer] = (lead[longer] & 0x0F) << 12 | (points[longer] & 0x3F) << 6 | (data[leads[longer] + 2] & 0x3F)
    four = longer[lead[longer] >= 0xF0]
    points[four] = (lead[four] & 0x07) << 18 | (points[four] & 0xFFF) << 6 | (data[leads[four] + 3] & 0x3F)
    return points


def nfc_lower(texts: pa.Array) -> pa.Array:
    """The first two steps of ``normalise``, NFC then lowercase, nulls as empty strings: what the
    document keys and the paragraphs are computed from, once per batch for both."""
    return pc.utf8_lower(nfc(pc.fill_null(texts, "")))


def normalised_digests(lowered: pa.Array) -> np.ndarray:
    """The 64-bit BLAKE2b hash of each text's ``normalise``d UTF-8 bytes, as uint64 (its digest read
    little-endian), from the texts ``nfc_lower``ed, without making the normalised strings."""
    offsets, data = utf8_buffers(lowered)
    return kernels.squeezed_digests(data, offsets)


@dataclass
class Paragraphs:
    """The paragraphs of a batch that take part in paragraph dedup, one entry per paragraph."""

    row: np.ndarray  # int64: the row of the batch it belongs to
    index: np.ndarray  # int32: its position in the document's list of lines
    hash: np.ndarray  # uint64: hash of its normalised form
    chars: np.ndarray  # int64: its length in characters, as written


def paragraphs(texts: pa.Array, lowered: pa.Array, min_chars: int, exempt: tuple[str, ...],
               rows: np.ndarray | None = None) -> Paragraphs:
    """Every line of every text (of those at ``rows``, by default all) whose normalised form has at
    least ``min_chars`` characters and is not in ``exempt`` (headings like "References" repeat across
    documents and must stay); ``lowered`` is the texts ``nfc_lower``ed.

    NFC and lowercasing run on whole texts, not line by line, with the same result: neither reaches
    across a newline (a starter that composes with nothing) nor makes or removes one."""
    offsets, data = utf8_buffers(pc.fill_null(texts, ""))
    lowered_offsets, lowered_data = utf8_buffers(lowered)
    exempt_offsets, exempt_data = utf8_buffers(normalise(pa.array(exempt, pa.string())))
    rows = np.arange(len(texts), dtype=np.int64) if rows is None else rows.astype(np.int64)
    row, index, hashes, chars = kernels.paragraph_hashes(
        data, offsets, lowered_data, lowered_offsets, rows, min_chars, exempt_data, exempt_offsets)
    return Paragraphs(row=row, index=index, hash=hashes, chars=chars)


def drop_lines(texts: pa.Array, drops: dict[int, list[int]]) -> tuple[pa.Array, int]:
    """The texts at the rows ``drops`` names, in its order, less the lines it lists for them (their
    indices in ``text.split("\\n")``, ascending, as the decisions hold them); and the characters
    that removes in all."""
    offsets, data = utf8_buffers(texts)
    lines = list(drops.values())
    counts = np.fromiter(map(len, lines), np.int64, len(lines))
    edited, edited_offsets, removed = kernels.drop_lines(
        data, offsets, np.fromiter(drops, np.int64, len(drops)), np.concatenate([[0], np.cumsum(counts)]),
        np.fromiter(chain.from_iterable(lines), np.int64, counts.sum()))
    return pa.Array.from_buffers(pa.string(), len(lines), [
        None, pa.py_buffer(edited_offsets.astype(np.int32)), pa.py_buffer(edited)]), int(removed)
