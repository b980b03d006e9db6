"""Encoding many documents fast: each distinct word encoded once, by sentencepiece itself.

A BPE model's pieces never cross a word boundary when it was trained with ``split_by_whitespace``
(``tokenizer.train``): no piece holds a space after another character, nor a newline beside
anything but a newline. sentencepiece's BPE only ever merges two adjacent symbols into a piece of
the vocabulary, so a document's tokens are then exactly the tokens of its segments, encoded one by
one and concatenated, where a segment is a run of newlines, or spaces followed by the characters up
to the next space or newline (or a run of spaces before a newline or the end); ``U+2581``, which
sentencepiece reads as a space, counts as one. ``independent_segments`` checks that property on the
model's pieces; ``Tokenizer.encode_flat`` encodes documents whole where it does not hold.

Words repeat (an English megabyte holds a tenth as many distinct words as words), so encoding each
distinct segment once and copying its ids to every occurrence replaces most of sentencepiece's work
with array copies; and it encodes a short segment faster per byte than a whole document. The
segments are found by numpy passes over the UTF-8 bytes and numbered by Arrow's hash
(``dictionary_encode``), with no Python loop per segment.
"""
from __future__ import annotations

from itertools import chain
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.utf8 import utf8_buffers

SPACE = "\u2581"  # sentencepiece's escaped space; a literal one in the text reads the same
_SPACE_BYTES = SPACE.encode()


def independent_segments(processor) -> bool:
    """Whether no piece of the model (control, unknown and byte pieces aside) crosses a segment
    boundary: no space after a character other than a space, no newline beside another character."""
    for token in range(processor.get_piece_size()):
        if processor.is_control(token) or processor.is_unknown(token) or processor.is_byte(token):
            continue
        piece = processor.id_to_piece(token)
        for left, right in zip(piece, piece[1:]):
            if (right == SPACE and left != SPACE) or ("\n" in (left, right) and left != right):
                return False
    return True


def segment_starts(b: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The byte offsets where segments of the documents ``b[offsets[d]:offsets[d + 1]]`` start:
    at each document's start, where a run of newlines starts or ends, and where a run of spaces starts
    after any other character."""
    n = b.size
    newline = b == 0x0A
    space_start = b == 0x20
    in_space = space_start.copy()
    lead = np.flatnonzero(b[:-2] == _SPACE_BYTES[0])
    lead = lead[(b[lead + 1] == _SPACE_BYTES[1]) & (b[lead + 2] == _SPACE_BYTES[2])]
    space_start[lead] = True
    for k in range(3):
        in_space[lead + k] = True
    other = ~(newline | in_space)
    start = np.zeros(n + 1, dtype=bool)
    start[offsets] = True
    start[1:n] |= newline[1:] != newline[:-1]
    start[1:n] |= space_start[1:] & other[:-1]
    return np.flatnonzero(start[:n])


def encode_segments(encode_words: Callable[[pa.Array], tuple[np.ndarray, np.ndarray]],
                    texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` (a string array; null reads as "") as one int64 array, and each
    text's offset into it (one entry more): what the model's ``encode`` gives for each text, one after
    another. The model must have ``independent_segments``; ``encode_words`` takes a string array of
    distinct segments and gives their ids one after another and each one's count of them
    (``tokenizer.bpe.WordEncoder.encode``, or ``encode_words_with`` a processor)."""
    texts = pc.fill_null(texts, "")
    offset_type = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets, b = utf8_buffers(texts)
    starts = segment_starts(b, offsets)
    # Segments tile the text, so one string array over the same bytes holds them all.
    segments = pa.Array.from_buffers(texts.type, starts.size, [
        None, pa.py_buffer(np.append(starts, b.size).astype(offset_type)), pa.py_buffer(b)])
    numbered = pc.dictionary_encode(segments)
    number = numbered.indices.to_numpy().astype(np.int64)
    ids, lengths = encode_words(numbered.dictionary)
    first_id = np.concatenate(([0], np.cumsum(lengths)))
    # Every segment's ids, copied from its distinct text's, one segment after another.
    segment_lengths = lengths[number]
    before = np.concatenate(([0], np.cumsum(segment_lengths)))
    flat = ids[np.repeat(first_id[number] - before[:-1], segment_lengths) + np.arange(before[-1])]
    return flat, before[np.searchsorted(starts, offsets)]


def encode_words_with(processor) -> Callable[[pa.Array], tuple[np.ndarray, np.ndarray]]:
    """``encode_words`` for ``encode_segments`` by sentencepiece's own encoder."""

    def encode_words(words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        encoded = processor.encode(words.to_pylist(), num_threads=1)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        return np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum())), lengths

    return encode_words
