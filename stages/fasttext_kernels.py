"""fastText's supervised ``predict`` (k=1), compiled with numba: the loops behind
``stages/fasttext_predict.py``, which holds the model tables they read and says why they exist.

Every step follows fastText's own code (``Dictionary::getLine``, ``computeSubwords``,
``addWordNgrams``, ``pushHash``, ``Model::computeHidden``, ``SoftmaxLoss::computeOutput``,
``HierarchicalSoftmaxLoss::dfs``, ``Loss::findKBest``) in the same order and the same float precision,
so that a line gets the label and the float32 probability fastText gives it, to the bit
(``tests/test_fasttext_predict.py`` compares them on real text).
"""
from __future__ import annotations

import numpy as np
from pipeline import jit
from pipeline.jit import njit

SOFTMAX, HIERARCHICAL = 0, 1
# ``Dictionary::pushHash``: what happens to a subword or word n-gram bucket.
PRUNE_NONE, PRUNE_ALL, PRUNE_MAP = 0, 1, 2
BOW, EOW = 60, 62  # "<" and ">" around a word, for its character n-grams


@njit(cache=True, nogil=True, inline="always")
def _mix(h, c):
    """One step of fastText's 32-bit FNV-1a: the byte sign extended first (read as ``int8_t``)."""
    x = np.int64(c)
    if x >= 128:
        x -= 256
    return ((h ^ np.uint64(x & 0xFFFFFFFF)) * np.uint64(16777619)) & np.uint64(0xFFFFFFFF)


@njit(cache=True, nogil=True)
def word_hash(b, start, end):
    """``Dictionary::hash`` of bytes ``b[start:end]``."""
    h = np.uint64(2166136261)
    for i in range(start, end):
        h = _mix(h, b[i])
    return h


@njit(cache=True, nogil=True)
def hash_table(b, offsets, size):
    """Open-addressing table of the byte strings at ``offsets``: from slot ``hash & (size - 1)`` on,
    ``hash << 32 | index`` of the string there, -1 where empty. Returns (slots, each string's
    ``word_hash``)."""
    slots = np.full(size, -1, dtype=np.int64)
    hashes = np.empty(offsets.size - 1, dtype=np.uint64)
    mask = size - 1
    for i in range(offsets.size - 1):
        h = word_hash(b, offsets[i], offsets[i + 1])
        hashes[i] = h
        slot = np.int64(h) & mask
        while slots[slot] != -1:
            slot = (slot + 1) & mask
        slots[slot] = np.int64((h << np.uint64(32)) | np.uint64(i))
    return slots, hashes


@njit(cache=True, nogil=True, inline="always")
def _packed(b, start, end):
    """Up to the first eight bytes of ``b[start:end]``, little-endian in an int64."""
    packed = np.int64(0)
    for k in range(start, min(end, start + 8)):
        packed |= np.int64(b[k]) << np.int64(8 * (k - start))
    return packed


@njit(cache=True, nogil=True)
def word_records(word_bytes, word_offsets, word_row_offsets):
    """What a lookup reads of each word, in one 32-byte record: its bytes ``_packed`` when it has at
    most eight (else where they start in ``word_bytes``), its length, and where its rows start and
    end in ``word_rows``."""
    n_words = word_offsets.size - 1
    records = np.empty((n_words, 4), dtype=np.int64)
    for w in range(n_words):
        start, end = word_offsets[w], word_offsets[w + 1]
        records[w, 0] = _packed(word_bytes, start, end) if end - start <= 8 else start
        records[w, 1] = end - start
        records[w, 2] = word_row_offsets[w]
        records[w, 3] = word_row_offsets[w + 1]
    return records


@njit(cache=True, nogil=True, inline="always")
def _find(slots, records, words, b, start, end, h, packed):
    """The index of the word equal to ``b[start:end]`` (hash ``h``, first bytes ``packed``), -1 if
    none: a slot's hash, then the word's length and bytes, from its record (``word_records``)."""
    mask = slots.size - 1
    length = end - start
    slot = np.int64(h) & mask
    while True:
        entry = slots[slot]
        if entry == -1:
            return -1
        if np.uint64(entry) >> np.uint64(32) == h:
            word = entry & 0xFFFFFFFF
            if records[word, 1] == length:
                if length <= 8:
                    if records[word, 0] == packed:
                        return word
                else:
                    base = records[word, 0]
                    same = True
                    for k in range(length):
                        if words[base + k] != b[start + k]:
                            same = False
                            break
                    if same:
                        return word
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True, inline="always")
def _bucket_row(bucket_id, prune_mode, prune_slots, n_words):
    """``pushHash``: the input row of a bucket, or -1 when the (pruned) model has none. A pruned
    model's kept buckets are ``prune_slots`` entries ``bucket << 32 | row``, probed from
    ``bucket * 0x9E3779B1``: one memory read per probe."""
    if prune_mode == PRUNE_ALL:
        return -1
    if prune_mode == PRUNE_MAP:
        mask = prune_slots.size - 1
        slot = (bucket_id * np.int64(0x9E3779B1)) & mask
        while True:
            entry = prune_slots[slot]
            if entry == -1:
                return -1
            if entry >> 32 == bucket_id:
                return n_words + (entry & 0xFFFFFFFF)
            slot = (slot + 1) & mask
    return n_words + bucket_id


@njit(cache=True, nogil=True)
def subword_rows(word, length, minn, maxn, bucket, prune_mode, prune_slots, n_words, rows, n_rows):
    """``computeSubwords``: the rows of the character n-grams (``minn`` to ``maxn`` UTF-8 characters)
    of ``word[:length]`` (the word between "<" and ">"), written to ``rows`` from ``n_rows``, which
    has room for ``length * maxn`` more (at most ``maxn`` n-grams start at each byte). Returns the new
    ``n_rows``."""
    for i in range(length):
        if (word[i] & 0xC0) == 0x80:
            continue
        h = np.uint64(2166136261)
        j = i
        n = 1
        while j < length and n <= maxn:
            h = _mix(h, word[j])
            j += 1
            while j < length and (word[j] & 0xC0) == 0x80:
                h = _mix(h, word[j])
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == length)):
                # fastText's ``hash(ngram) % bucket`` is 32-bit: so is this one, and cheaper for it.
                row = _bucket_row(np.int64(np.uint32(h) % np.uint32(bucket)), prune_mode, prune_slots, n_words)
                if row >= 0:
                    rows[n_rows] = row
                    n_rows += 1
            n += 1
    return n_rows


@njit(cache=True, nogil=True)
def word_rows_table(word_bytes, word_offsets, eos, minn, maxn, bucket, prune_mode, prune_slots):
    """``Dictionary::initNgrams``: each word's rows, its own then its character n-grams' (none for the
    end-of-sentence word ``eos``), as (offsets, rows)."""
    n_words = word_offsets.size - 1
    longest = 0
    for w in range(n_words):
        longest = max(longest, word_offsets[w + 1] - word_offsets[w])
    word = np.empty(longest + 2, dtype=np.uint8)
    rows = np.empty(n_words + (word_bytes.size + 2 * n_words) * maxn, dtype=np.int64)
    offsets = np.empty(n_words + 1, dtype=np.int64)
    n_rows = 0
    for w in range(n_words):
        offsets[w] = n_rows
        rows[n_rows] = w
        n_rows += 1
        if maxn > 0 and w != eos:
            length = word_offsets[w + 1] - word_offsets[w] + 2
            word[0] = BOW
            for k in range(word_offsets[w], word_offsets[w + 1]):
                word[k - word_offsets[w] + 1] = word_bytes[k]
            word[length - 1] = EOW
            n_rows = subword_rows(word, length, minn, maxn, bucket, prune_mode, prune_slots, n_words, rows, n_rows)
    offsets[n_words] = n_rows
    return offsets, rows[:n_rows].copy()


@njit(cache=True, nogil=True, inline="always")
def _std_log(x):
    """fastText's ``std_log``: ``log(x + 1e-5)`` in double, returned as float32."""
    return np.float32(np.log(np.float64(x) + 1e-5))


@njit(cache=True, nogil=True)
def predict_top(b, offsets, space, slots, word_hashes, word_bytes, records, word_rows,
                label_prefix, eos, minn, maxn, ngrams, bucket, prune_mode, prune_slots,
                input_matrix, output_matrix, output_scale, loss, tree_left, tree_right):
    """The top label and its probability for each line of UTF-8 ``b`` (lines at int64 ``offsets``):
    what fastText's ``predict(line + "\\n", k=1)`` returns, as (int64 label index, float32
    probability) arrays.

    The line's tokens are split at fastText's whitespace (``space``) and end with the end-of-sentence
    word ``eos`` (also where a newline or the word itself is met); tokens with the label prefix are
    skipped. A token is found among the words by its hash in ``slots`` and its ``records`` entry
    (``hash_table``, ``word_records``). A known word adds its rows (``word_rows``: the word's own and
    its character n-grams'),
    an unknown one its character n-grams' rows; every word's hash, known or not, goes into the word
    n-grams of up to ``ngrams`` words, whose rows follow. The rows are summed in that order and
    scaled by 1 / their number; the output is the softmax of ``output_matrix`` times that, or the
    best leaf of the label tree (``tree_left``/``tree_right``, leaves first, the root last)."""
    n_lines = offsets.size - 1
    n_words = records.shape[0]
    dim = input_matrix.shape[1]
    n_labels = output_matrix.shape[0] if loss == SOFTMAX else tree_left.size // 2 + 1
    eos_hash = word_hashes[eos]
    log_threshold = _std_log(np.float32(0.0))
    best = np.empty(n_lines, dtype=np.int64)
    top = np.empty(n_lines, dtype=np.float32)
    # Buffers for the longest line, allocated once: an array reassigned inside the loop would cost a
    # reference count update at every turn. A line of L bytes has at most L // 2 + 2 tokens.
    longest = 0
    for line in range(n_lines):
        longest = max(longest, offsets[line + 1] - offsets[line])
    max_tokens = longest // 2 + 2
    most_word_rows = 1
    for w in range(n_words):
        most_word_rows = max(most_word_rows, records[w, 3] - records[w, 2])
    hashes = np.empty(max_tokens, dtype=np.int64)
    rows = np.empty(max_tokens * (most_word_rows + ngrams) + (longest + 2 * max_tokens) * maxn, dtype=np.int64)
    word = np.empty(longest + 2, dtype=np.uint8)
    hidden = np.empty(dim, dtype=np.float32)
    output = np.empty(max(n_labels, 1), dtype=np.float32)
    stack_node = np.empty(2 * tree_left.size + 2, dtype=np.int64)
    stack_score = np.empty(2 * tree_left.size + 2, dtype=np.float32)
    for line in range(n_lines):
        n_hashes = 0
        n_rows = np.int64(0)  # not the literal 0: subword_rows would compile a second time for it
        i = offsets[line]
        end = offsets[line + 1]
        while True:
            while i < end and space[b[i]] and b[i] != 10:
                i += 1
            if i >= end or b[i] == 10:  # the newline a line ends with: the end-of-sentence word
                found = eos
                h = eos_hash
            else:
                start = i
                while i < end and not space[b[i]]:
                    i += 1
                is_label = i - start >= label_prefix.size
                if is_label:
                    for k in range(label_prefix.size):
                        if b[start + k] != label_prefix[k]:
                            is_label = False
                            break
                if is_label:
                    continue
                # ``word_hash`` and ``_packed`` in one pass over the bytes
                h = np.uint64(2166136261)
                packed = np.int64(0)
                for k in range(start, i):
                    h = _mix(h, b[k])
                    if k - start < 8:
                        packed |= np.int64(b[k]) << np.int64(8 * (k - start))
                found = _find(slots, records, word_bytes, b, start, i, h, packed)
                if found < 0 and maxn > 0:
                    length = i - start + 2
                    word[0] = BOW
                    for k in range(start, i):
                        word[k - start + 1] = b[k]
                    word[length - 1] = EOW
                    n_rows = subword_rows(word, length, minn, maxn, bucket, prune_mode, prune_slots, n_words,
                                          rows, n_rows)
            if found >= 0:
                for r in range(records[found, 2], records[found, 3]):
                    jit.prefetch_row(input_matrix, word_rows[r])
                    rows[n_rows] = word_rows[r]
                    n_rows += 1
            hashes[n_hashes] = np.int64(np.int32(h))  # fastText keeps word hashes as int32
            n_hashes += 1
            if found == eos:
                break
        for a in range(n_hashes):
            h = np.uint64(hashes[a])
            for c in range(a + 1, min(n_hashes, a + ngrams)):
                h = h * np.uint64(116049371) + np.uint64(hashes[c])
                row = _bucket_row(np.int64(h % np.uint64(bucket)), prune_mode, prune_slots, n_words)
                if row >= 0:
                    jit.prefetch_row(input_matrix, row)
                    rows[n_rows] = row
                    n_rows += 1
        # The rows are gathered first and summed after, so no row's read waits on the sum; each row's
        # read starts when it is gathered: a quality model's 200,000 word-pair rows (13 MB) are mostly
        # outside the cache, and prefetching them made its predict about a fifth faster.
        hidden[:] = 0
        for r in range(n_rows):
            row = rows[r]
            for j in range(dim):
                hidden[j] += input_matrix[row, j]
        scale = np.float32(1.0 / n_rows)
        for j in range(dim):
            hidden[j] *= scale

        chosen = -1
        chosen_score = np.float32(0.0)
        if loss == SOFTMAX:
            for o in range(n_labels):
                dot = np.float32(0.0)
                for j in range(dim):
                    dot += output_matrix[o, j] * hidden[j]
                output[o] = dot * output_scale[o]
            largest = output[0]
            for o in range(n_labels):
                if not output[o] < largest:
                    largest = output[o]
            z = np.float32(0.0)
            for o in range(n_labels):
                output[o] = np.float32(np.exp(np.float64(output[o] - largest)))
                z += output[o]
            for o in range(n_labels):
                score = _std_log(output[o] / z)
                # findKBest's heap of one: a later label takes the place of an equal one.
                if chosen < 0 or not score < chosen_score:
                    chosen = o
                    chosen_score = score
        else:
            # HierarchicalSoftmaxLoss::dfs, its recursion as a stack: left child first, so pushed last.
            stack_node[0] = tree_left.size - 1
            stack_score[0] = np.float32(0.0)
            depth = 1
            while depth > 0:
                depth -= 1
                node = stack_node[depth]
                score = stack_score[depth]
                if score < log_threshold or (chosen >= 0 and score < chosen_score):
                    continue
                if tree_left[node] == -1 and tree_right[node] == -1:
                    chosen = node
                    chosen_score = score
                    continue
                dot = np.float32(0.0)
                row = node - n_labels
                for j in range(dim):
                    dot += output_matrix[row, j] * hidden[j]
                dot = dot * output_scale[row]
                f = np.float32(1.0 / np.float64(np.float32(1.0) + np.exp(-dot)))
                stack_node[depth] = tree_right[node]
                stack_score[depth] = score + _std_log(f)
                stack_node[depth + 1] = tree_left[node]
                stack_score[depth + 1] = score + _std_log(np.float32(1.0 - np.float64(f)))
                depth += 2
        best[line] = chosen
        top[line] = np.exp(chosen_score)
    return best, top
