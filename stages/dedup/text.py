"""Exact matching: the normalised form of documents and paragraphs, and their 64-bit hashes.

Exact duplicates are compared after a light normalisation (Unicode NFC, lowercase, every run of
whitespace one space, no leading or trailing space), so copies that differ only in case, line
wrapping or indentation still match. A paragraph is one line of the document (``text`` split on
``"\\n"``, as ``str.split("\\n")`` does), so paragraph indices here and in ``Dedup.process`` agree.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PARAGRAPH_SEPARATOR = "\n"


def normalise(texts: pa.Array) -> pa.Array:
    """NFC, lowercase, whitespace runs collapsed to one space, trimmed."""
    lowered = pc.utf8_lower(pc.utf8_normalize(pc.fill_null(texts, ""), "NFC"))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, r"\s+", " "))


def digests(strings: pa.Array) -> np.ndarray:
    """The 64-bit BLAKE2b hash of each string's UTF-8 bytes, as uint64."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "little")
         for s in strings.to_pylist()),
        dtype=np.uint64, count=len(strings))


@dataclass
class Paragraphs:
    """The paragraphs of a batch that take part in paragraph dedup, one entry per paragraph."""

    row: np.ndarray  # int64: the row of the batch it belongs to
    index: np.ndarray  # int32: its position in the document's list of lines
    hash: np.ndarray  # uint64: hash of its normalised form
    chars: np.ndarray  # int64: its length in characters, as written


def paragraphs(texts: pa.Array, min_chars: int, exempt: tuple[str, ...]) -> Paragraphs:
    """Every line of every text whose normalised form has at least ``min_chars`` characters and is
    not in ``exempt`` (headings like "References" repeat across documents and must stay)."""
    lines = pc.split_pattern(pc.fill_null(texts, ""), PARAGRAPH_SEPARATOR)
    flat = pc.list_flatten(lines)
    rows = pc.list_parent_indices(lines).to_numpy().astype(np.int64)
    offsets = lines.offsets.to_numpy()
    index = (np.arange(len(flat)) - (offsets[rows] - offsets[0])).astype(np.int32)
    normalised = normalise(flat)
    keep = pc.greater_equal(pc.utf8_length(normalised), min_chars)
    if exempt:
        listed = pc.is_in(normalised, value_set=normalise(pa.array(exempt, pa.string())))
        keep = pc.and_(keep, pc.invert(listed))
    mask = keep.to_numpy(zero_copy_only=False)
    return Paragraphs(
        row=rows[mask],
        index=index[mask],
        hash=digests(normalised.filter(keep)),
        chars=pc.utf8_length(flat).to_numpy()[mask].astype(np.int64),
    )


def drop_lines(text: str, indices: list[int]) -> str:
    """``text`` without the lines at ``indices``."""
    dropped = set(indices)
    return PARAGRAPH_SEPARATOR.join(
        line for i, line in enumerate(text.split(PARAGRAPH_SEPARATOR)) if i not in dropped)
