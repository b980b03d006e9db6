"""Sentencepiece's BPE encoding of single words as a compiled loop: the same ids, several times faster.

The mixture counts every token of the corpus, and sentencepiece's encoder was most of that cost even
with each distinct word encoded once (``tokenizer.segments``): it looks pieces up by their text in a
hash map and allocates per word. ``WordEncoder`` runs the same algorithm on piece ids. Sentencepiece's
BPE (``bpe_model.cc``, ``Model::SampleEncode`` without dropout) starts from one symbol per character
and, while some two adjacent symbols concatenate to a piece of the vocabulary, merges the pair whose
piece has the highest score, the leftmost of equals, into that piece; a character that is not a piece
stays a symbol of its own, which byte fallback writes as its UTF-8 bytes' byte pieces. Here a pair is
looked up by its two symbols' ids in a table of every way a piece splits into two pieces: the same
test as looking up their concatenated text, because every symbol is a character or a piece.

It handles what a model trained by ``tokenizer.train`` holds: normal pieces, byte fallback, and
user-defined pieces made of newlines (the default ``\\n`` and ``\\n\\n``, matched whole before merging), by
leaving the few words with a newline to sentencepiece. ``WordEncoder.of`` gives ``None`` for a model
with anything else (unused pieces, other user-defined ones, no byte fallback), whose words sentencepiece
then encodes.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from sentencepiece import sentencepiece_model_pb2

from pipeline.utf8 import utf8_buffers
from pipeline.jit import njit
from tokenizer.segments import encode_words_with

SPACE = "\u2581"  # what sentencepiece's normalizer makes of " "
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _BYTE = 1, 2, 3, 4, 6  # ModelProto.SentencePiece.Type
_EMPTY = -1  # a free slot of the pair table
_TO_SENTENCEPIECE = -2  # a character whose words sentencepiece encodes
_PIECE_BITS = 24  # a pair table slot's low bits: the piece the pair makes
_PIECE_MASK = (1 << _PIECE_BITS) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the pair key times 2^64 / phi


class WordEncoder:
    """Encodes words (text without a newline) to a model's ids as ``processor.encode`` does."""

    def __init__(self, processor, char_ids: np.ndarray, byte_ids: np.ndarray, pairs: np.ndarray,
                 rank: np.ndarray):
        self.processor = processor
        # int32 per code point: its one-character piece; -1 if it is none; _TO_SENTENCEPIECE (newline)
        self.char_ids = char_ids
        self.byte_ids = byte_ids  # int64 per byte value: its byte piece
        # Open addressing, one int64 per slot (one cache line for key and value): the pair's key
        # (left id * vocabulary size + right id) << _PIECE_BITS | the piece it makes; _EMPTY if free.
        self.pairs = pairs
        self.rank = rank  # int64 per id: merge order, by descending score (equal scores, equal rank)

    @classmethod
    def of(cls, processor) -> "WordEncoder | None":
        """The encoder of a sentencepiece BPE processor, or None when its model holds what this loop
        does not reproduce."""
        proto = sentencepiece_model_pb2.ModelProto()
        proto.ParseFromString(processor.serialized_model_proto())
        spec = proto.trainer_spec
        if spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE or not spec.byte_fallback:
            return None
        normal: dict[str, int] = {}
        for token, piece in enumerate(proto.pieces):
            if piece.type == _NORMAL:
                normal[piece.piece] = token
            elif piece.type == _USER_DEFINED and set(piece.piece) != {"\n"}:
                return None  # matched as a whole before merging: not modelled here
            elif piece.type not in (_USER_DEFINED, _UNKNOWN, _CONTROL, _BYTE):
                return None  # unused pieces are resegmented after merging: not modelled here
        if SPACE not in normal or not set("".join(normal)) <= {piece for piece in normal if len(piece) == 1}:
            return None  # a piece with a character that is not one: merging could reach it otherwise
        byte_ids = np.asarray([processor.piece_to_id(f"<0x{byte:02X}>") for byte in range(256)], np.int64)
        if not all(processor.is_byte(int(token)) for token in byte_ids):
            return None
        char_ids = np.full(0x110000, -1, np.int32)
        for piece, token in normal.items():
            if len(piece) == 1:
                char_ids[ord(piece)] = token
        char_ids[ord(" ")] = normal[SPACE]
        char_ids[ord("\n")] = _TO_SENTENCEPIECE
        left, right, whole = [], [], []
        for piece, token in normal.items():
            for cut in range(1, len(piece)):
                a, b = normal.get(piece[:cut]), normal.get(piece[cut:])
                if a is not None and b is not None:
                    left.append(a), right.append(b), whole.append(token)
        size = len(proto.pieces)
        if size ** 2 >= 1 << (63 - _PIECE_BITS):
            return None
        scores = np.asarray([piece.score for piece in proto.pieces], np.float64)
        rank = np.unique(-scores, return_inverse=True)[1].astype(np.int64)
        if np.unique(rank[whole]).size != len(set(whole)):
            return None  # two pieces a merge makes share a score: the agenda's stale test needs one each
        keys = np.asarray(left, np.int64) * size + np.asarray(right, np.int64)
        return cls(processor, char_ids, byte_ids, _pair_table(keys << _PIECE_BITS | np.asarray(whole, np.int64)),
                   rank)

    def encode(self, words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """The ids of a null-free string array's words, one word after another (int64), and each
        word's count of them: ``processor.encode(words.to_pylist())``, flattened."""
        offsets, data = utf8_buffers(words)
        lengths = np.empty(len(words), np.int64)
        out = np.empty(data.size, np.int64)  # a word has at most one id per byte
        used = encode_words(data, offsets, self.char_ids, self.byte_ids, self.processor.unk_id(), self.pairs,
                            self.rank, self.processor.get_piece_size(), out, lengths)
        left = np.flatnonzero(lengths < 0)
        if not left.size:
            return out[:used], lengths
        lengths[left] = 0
        fast_before = np.cumsum(lengths) - lengths  # where each word's ids begin in ``out``
        slow_ids, lengths[left] = encode_words_with(self.processor)(words.take(pa.array(left)))
        # The few words sentencepiece encoded (a batch's newline runs), put in their place.
        return np.insert(out[:used], np.repeat(fast_before[left], lengths[left]), slow_ids), lengths


def _pair_table(entries: np.ndarray) -> np.ndarray:
    table = np.full(1 << max(int(entries.size * 2).bit_length(), 4), _EMPTY, np.int64)  # at most half full
    fill_pairs(entries, table)
    return table


@njit(cache=True, nogil=True, inline="always")
def _slot(pairs, key):
    """The slot of ``key`` in the open-addressing table ``pairs`` (of a power of two slots), or of the
    free slot it would take."""
    mask = pairs.size - 1
    slot = np.int64(((np.uint64(key) * _GOLDEN) >> np.uint64(40)) & np.uint64(mask))
    while pairs[slot] != _EMPTY and (pairs[slot] >> _PIECE_BITS) != key:
        slot = (slot + 1) & mask
    return slot


@njit(cache=True, nogil=True)
def fill_pairs(entries, table):
    for i in range(entries.size):
        table[_slot(table, entries[i] >> _PIECE_BITS)] = entries[i]


@njit(cache=True, nogil=True, inline="always")
def _piece(pairs, vocabulary, left, right):
    """The piece the symbols ``left`` and ``right`` (ids) make together, or -1."""
    entry = pairs[_slot(pairs, left * vocabulary + right)]
    return -1 if entry == _EMPTY else entry & _PIECE_MASK


@njit(cache=True, nogil=True)
def encode_words(data, offsets, char_ids, byte_ids, unknown, pairs, ranks, vocabulary, out, lengths):
    """BPE-encode word ``w`` (``data[offsets[w]:offsets[w + 1]]``, UTF-8) into ``out`` after the words
    before it, with its id count in ``lengths[w]``, or -1 there (and nothing in ``out``) when it has a
    character that ``char_ids`` leaves to sentencepiece. Returns how many ids were written.

    The agenda is a binary min-heap of ``rank << 32 | left``: the pair of symbol ``left`` and the
    one after it, pushed when it made a piece of that rank. Popped, it is merged if the two symbols
    there still make a piece of that rank; else it is stale and skipped, as sentencepiece skips one
    whose symbols have changed. The two tests agree because a piece's rank is its own
    (``WordEncoder.of`` checks) and a symbol only ever grows: the pair at ``left`` makes the same
    piece again only if it is the same two symbols."""
    longest = 1
    for w in range(offsets.size - 1):
        longest = max(longest, offsets[w + 1] - offsets[w])
    symbol = np.empty(longest, np.int64)
    after = np.empty(longest, np.int64)
    before = np.empty(longest, np.int64)
    at = np.empty(longest, np.int64)  # where each character starts in data
    heap = np.empty(3 * longest, np.int64)  # n - 1 first pairs, then at most two per merge
    written = 0
    for w in range(offsets.size - 1):
        n = 0
        i = offsets[w]
        end = offsets[w + 1]
        start = i
        while i < end:
            c = np.int64(data[i])
            if c < 0x80:
                point = c
                i += 1
            elif c < 0xE0:
                point = ((c & 0x1F) << 6) | (np.int64(data[i + 1]) & 0x3F)
                i += 2
            elif c < 0xF0:
                point = ((c & 0x0F) << 12) | ((np.int64(data[i + 1]) & 0x3F) << 6) | (np.int64(data[i + 2]) & 0x3F)
                i += 3
            else:
                point = (((c & 0x07) << 18) | ((np.int64(data[i + 1]) & 0x3F) << 12)
                         | ((np.int64(data[i + 2]) & 0x3F) << 6) | (np.int64(data[i + 3]) & 0x3F))
                i += 4
            token = char_ids[point]
            if token == _TO_SENTENCEPIECE:
                n = -1
                break
            # A character that is no piece is the unknown piece, which no pair makes a piece with;
            # written out as its UTF-8 bytes' byte pieces.
            symbol[n] = token if token >= 0 else unknown
            at[n] = start
            start = i
            after[n] = n + 1
            before[n] = n - 1
            n += 1
        if n <= 0:
            lengths[w] = n
            continue
        after[n - 1] = -1
        size = 0
        for k in range(n - 1):
            size = _push(heap, size, pairs, ranks, vocabulary, symbol, k, k + 1)
        while size > 0:
            top = heap[0]
            size -= 1
            _sift_down(heap, size, heap[size])
            a = top & 0xFFFFFFFF
            b = after[a]
            if symbol[a] < 0 or b < 0:
                continue
            made = _piece(pairs, vocabulary, symbol[a], symbol[b])
            if made < 0 or ranks[made] != top >> 32:
                continue
            symbol[a] = made
            symbol[b] = -1
            after[a] = after[b]
            if after[b] >= 0:
                before[after[b]] = a
            if before[a] >= 0:
                size = _push(heap, size, pairs, ranks, vocabulary, symbol, before[a], a)
            if after[a] >= 0:
                size = _push(heap, size, pairs, ranks, vocabulary, symbol, a, after[a])
        count = 0
        k = 0
        while k >= 0:
            if symbol[k] != unknown:
                out[written + count] = symbol[k]
                count += 1
            else:
                for j in range(at[k], at[k] + _utf8_length(data[at[k]])):
                    out[written + count] = byte_ids[data[j]]
                    count += 1
            k = after[k]
        lengths[w] = count
        written += count
    return written


@njit(cache=True, nogil=True, inline="always")
def _utf8_length(lead):
    return 1 if lead < 0x80 else 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4


@njit(cache=True, nogil=True, inline="always")
def _push(heap, size, pairs, ranks, vocabulary, symbol, a, b):
    """Put the pair of symbols ``a`` and ``b`` on the agenda if it makes a piece; the heap's new size."""
    made = _piece(pairs, vocabulary, symbol[a], symbol[b])
    if made < 0:
        return size
    entry = ranks[made] << 32 | a
    i = size
    while i > 0:
        parent = (i - 1) >> 1
        if heap[parent] <= entry:
            break
        heap[i] = heap[parent]
        i = parent
    heap[i] = entry
    return size + 1


@njit(cache=True, nogil=True, inline="always")
def _sift_down(heap, size, entry):
    """Put ``entry`` (the heap's last, just cut off) in the place of the popped top."""
    if size == 0:
        return
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] < heap[child]:
            child += 1
        if heap[child] >= entry:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = entry
