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
segments are found by a compiled pass over the UTF-8 bytes, numbered by Arrow's hash
(``dictionary_encode``), and their ids copied by a compiled loop: no Python loop per segment.
"""
from __future__ import annotations

from itertools import chain
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.jit import njit
from pipeline.utf8 import utf8_buffers

SPACE = "\u2581"  # sentencepiece's escaped space; a literal one in the text reads the same


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


_OTHER, _SPACE, _NEWLINE = 0, 1, 2


@njit(cache=True, nogil=True)
def segment_starts(b, offsets):
    """The byte offsets where segments of the documents ``b[offsets[d]:offsets[d + 1]]`` start:
    at each document's start, where a run of newlines starts or ends, and where a run of spaces starts
    after any other character."""
    starts = np.empty(b.size, np.int64)
    count = 0
    for document in range(offsets.size - 1):
        at, high = offsets[document], offsets[document + 1]
        before = -1  # the kind of the character before; none at the document's start
        while at < high:
            byte, width = b[at], 1
            if byte > 0x20 and byte != 0xE2:  # most bytes: of a character that is neither
                kind = _OTHER
            elif byte == 0x0A:
                kind = _NEWLINE
            elif byte == 0x20:
                kind = _SPACE
            elif byte == 0xE2 and at + 2 < high and b[at + 1] == 0x96 and b[at + 2] == 0x81:  # U+2581
                kind, width = _SPACE, 3
            else:
                kind = _OTHER
            if kind != before and not (kind == _OTHER and before == _SPACE):
                starts[count] = at
                count += 1
            before = kind
            at += width
    return starts[:count]


@njit(cache=True, nogil=True)
def _copy_ids(ids, first_id, lengths, number, total):
    """Every segment's ids (segment ``s`` is distinct word ``number[s]``, whose ids are
    ``ids[first_id[w]:first_id[w] + lengths[w]]``), one segment after another."""
    out = np.empty(total, np.int64)
    at = 0
    for segment in range(number.size):
        word = number[segment]
        start = first_id[word]
        for k in range(lengths[word]):
            out[at + k] = ids[start + k]
        at += lengths[word]
    return out


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
    before = np.concatenate(([0], np.cumsum(lengths[number])))
    flat = _copy_ids(ids, first_id, lengths, number, before[-1])
    return flat, before[np.searchsorted(starts, offsets)]


def encode_words_with(processor) -> Callable[[pa.Array], tuple[np.ndarray, np.ndarray]]:
    """``encode_words`` for ``encode_segments`` by sentencepiece's own encoder."""

    def encode_words(words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        encoded = processor.encode(words.to_pylist(), num_threads=1)
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        return np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(lengths.sum())), lengths

    return encode_words
