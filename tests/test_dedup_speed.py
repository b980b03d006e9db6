"""Dedup's fast paths give exactly what the plain definitions give: tokens cut into pieces before
simplifying, the whitespace collapse on bytes, the shingle windows, the hash caches, the binary
signature column, and the compiled loops (``stages.dedup.kernels``): BLAKE2b, words and characters,
``simplify``'s character classes, paragraphs and dropped lines. Each is compared with its reference
on inputs built to break it."""
from __future__ import annotations

import hashlib
import random
import re
import unicodedata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from datasketch.minhash import _fmix

from pipeline.utf8 import utf8_buffers
from stages.dedup import documents, kernels, minhash, text

# Characters that act on their neighbours under normalisation: every combining mark, Hangul jamo
# (which compose into syllables), the kana voicing marks, U+0338 (which composes with < = >).
MARKS = [chr(c) for c in range(0x110000)
         if unicodedata.category(chr(c)).startswith("M") or unicodedata.combining(chr(c))]
JAMO = [chr(c) for c in range(0x1100, 0x1200)]
CUTS = [chr(c) for c in range(0x80) if not chr(c).isalnum()]
IDEOGRAPHS = [chr(c) for low, high in minhash.IDEOGRAPHS for c in range(low, high + 1)]


def reference_tokens(texts: list[str | None], by_chars: bool) -> tuple[np.ndarray, np.ndarray]:
    return minhash.tokens(minhash.simplify(pa.array(texts, pa.string())), by_chars)


def assert_tokens_equal(texts: list[str | None]) -> None:
    for by_chars in (False, True):
        expected, expected_counts = reference_tokens(texts, by_chars)
        got, counts = minhash.text_tokens(pa.array(texts, pa.string()), by_chars)
        assert counts.dtype == np.int64 and got.dtype == np.uint64
        if not (np.array_equal(counts, expected_counts) and np.array_equal(got, expected)):
            bounds = np.concatenate([[0], np.cumsum(counts)])
            expected_bounds = np.concatenate([[0], np.cumsum(expected_counts)])
            wrong = next(i for i in range(len(texts)) if not np.array_equal(
                got[bounds[i]:bounds[i + 1]], expected[expected_bounds[i]:expected_bounds[i + 1]]))
            pytest.fail(f"by_chars={by_chars}: tokens differ for {texts[wrong]!r}")


def test_every_cut_character_next_to_every_mark():
    """The pieces are cut at ASCII punctuation: a mark after it, a digit run or a composition across
    it would change the tokens if the cut were wrong."""
    texts = [f"{before}{cut}{mark}" for cut in CUTS for before in ("a", "1", "é", MARKS[0]) for mark in MARKS]
    texts += [f"{cut}{mark}x" for cut in "<=>" for mark in MARKS] + ["1,2", "１.２", "a-b_c", "x\u0338=\u0338y"]
    assert_tokens_equal(texts)


def test_every_ideograph_between_marks_digits_and_jamo():
    neighbours = MARKS + JAMO + ["１", "1", "\u3099", "a", "ー"]
    texts = [f"{neighbours[i % len(neighbours)]}{ideograph}{neighbours[(i * 7 + 3) % len(neighbours)]}"
             for i, ideograph in enumerate(IDEOGRAPHS)]
    assert_tokens_equal(texts)


def test_random_mixed_script_texts():
    alphabet = (CUTS + MARKS[:400] + JAMO[:60] + IDEOGRAPHS[:300] + list("abcXYZ0123456789")
                + list("éÉñßİıΣσςЁё１２３٣۴߀ｶﾞガか\u3099ㄱ가각АБв \t\n\v\f\r\x1c\x85\u00a0\u2028\u3000。，、")
                + ["\U00020000", "\U0001F600", "\u1E9E", "\uFB01", "\u2460", "\u00bd", "\u0130"])
    rng = random.Random(20)
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(4000)]
    assert_tokens_equal(texts + [None, "", "   ", "...", "2024", "Ab1 2cD"])


@pytest.mark.parametrize("texts", [[], [None], ["", "   ", "...!?", None], ["中"], ["a"]])
def test_batches_without_pieces_or_without_ideographs(texts):
    assert_tokens_equal(texts)


def test_more_pieces_than_the_kernel_makes_room_for_at_once():
    """Tens of thousands of distinct pieces (the table of pieces grows), a text of more items than
    one stretch of ``kernels.pieces`` takes, pieces that agree in their first 8 bytes, and plain
    pieces longer than a BLAKE2b block."""
    rng = random.Random(14)
    words = [f"w{rng.randrange(10**9)}" for _ in range(40_000)] + ["abcdefgh" + tail for tail in ("i", "j", "ij", "ji")]
    words += ["Ab12" * n for n in (31, 32, 33, 64, 100)]
    long_text = " ".join(rng.choice(words) + rng.choice(["", "中", "é", "文字"]) for _ in range(3 * kernels._RESERVE))
    assert_tokens_equal([" ".join(words), long_text, "abcdefghij abcdefghji abcdefghij"])


def test_real_prose_in_both_modes():
    english = "The 3 quick brown foxes (aged 12–14) jumped over 2,000 lazy dogs’ backs; naïve café-goers watched. " * 5
    chinese = "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。2024年，ＧＰＴ-４发布了！" * 5
    assert_tokens_equal([english, chinese, english + chinese, "Ｈｅｌｌｏ　ｗｏｒｌｄ", "한국어 텍스트 입니다"])


def reference_normalise(texts: pa.Array) -> pa.Array:
    lowered = pc.utf8_lower(pc.utf8_normalize(pc.fill_null(texts, ""), "NFC"))
    return pc.utf8_trim_whitespace(pc.replace_substring_regex(lowered, r"\s+", " "))


def test_normalise_collapses_whitespace_as_the_regex_did():
    spaces = ["\t", "\n", "\v", "\f", "\r", " ", "\x1c", "\x85", "\u00a0", "\u2028", "\u3000"]
    rng = random.Random(4)
    texts = ["".join(rng.choice(spaces + ["a", "É", "中", "e\u0301"]) for _ in range(rng.randint(0, 12)))
             for _ in range(3000)]
    texts += [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF] + [None]
    array = pa.array(texts, pa.string())
    assert text.normalise(array).equals(reference_normalise(array))
    sliced = array.slice(5, 500)  # offsets that do not start at 0
    assert text.normalise(sliced).equals(reference_normalise(sliced))
    large = array.slice(0, 3000).cast(pa.large_string())
    assert text.normalise(large).equals(reference_normalise(large))


def blake2b_64(value: str) -> int:
    return int.from_bytes(hashlib.blake2b(value.encode(), digest_size=8).digest(), "little")


def test_document_keys_are_blake2b_of_the_normalised_text():
    """Lengths on both sides of BLAKE2b's 128-byte blocks, and texts that normalising shortens."""
    rng = random.Random(8)
    letters = "aBc中é\U0001F600 \t\n\u3000"
    strings = [None, "", " ", "a", "Ünïcödé", "中文", "x" * 300, " \t Padded  Text \n"]
    strings += ["".join(rng.choice(letters) for _ in range(length)) for length in range(0, 400)]
    strings += ["y" * length for length in (127, 128, 129, 255, 256, 257, 100_000)]
    array = pa.array(strings, pa.string())
    for part in (array, array.slice(3), array.cast(pa.large_string())):
        expected = [blake2b_64(s) for s in text.normalise(part).to_pylist()]
        assert text.normalised_digests(text.nfc_lower(part)).tolist() == expected


def test_word_hashes_split_as_arrow_and_hash_as_hashlib():
    """Every whitespace character Arrow knows (and some it does not) between words of every length.

    Arrow's whitespace is ``str.isspace``'s, so ``str.split`` is the reference: pyarrow 26.0.1's
    ``utf8_split_whitespace`` split the last string here, three spaces, into ``['', ' ']`` in full
    test runs (never alone), a word that is a space."""
    spaces = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF and chr(c).isspace()]
    others = list("abc中é1-") + ["\u200b", "\U0001F600", "\u0301", "\x00"]
    rng = random.Random(9)
    texts = ["".join(rng.choice(spaces if rng.random() < 0.2 else others) for _ in range(rng.randint(0, 60)))
             for _ in range(3000)]
    texts += ["w" * length for length in range(120, 400)] + ["", "   "]
    array = pa.array(texts, pa.string())
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    assert spaces == [c for c, space in zip(every, pc.utf8_is_space(pa.array(every)).to_pylist()) if space]
    words = [w for text in texts for w in text.split()]
    expected_counts = [len(text.split()) for text in texts]
    offsets, data = utf8_buffers(array)
    hashes, counts = kernels.word_hashes(data, offsets[:-1], offsets[1:], False)
    assert counts.tolist() == expected_counts
    assert hashes.tolist() == [blake2b_64(w) for w in words]


def test_code_points_are_the_characters_but_spaces():
    rng = random.Random(10)
    alphabet = [" ", "\t", "a", "é", "中", "\U0001F600", "\u0301", "\u3000"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(2000)]
    offsets, data = utf8_buffers(pa.array(texts, pa.string()))
    points, counts = kernels.code_points(data, offsets[:-1], offsets[1:], False)
    expected = [[ord(c) for c in t if c != " "] for t in texts]
    assert counts.tolist() == [len(e) for e in expected]
    assert points.tolist() == [p for e in expected for p in e]


def test_simplify_by_character_classes_equals_the_regular_expressions():
    """Every code point alone and among marks, digits and separators; then random mixes."""
    points = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    texts = points + [f" {c}1\u0301{c}{c}2 x{c}" for c in points[::7]]
    rng = random.Random(11)
    alphabet = rng.sample(points, 2000) + list(" \t\n12345,.;-_'\"éÉ中文") + MARKS[:50] + ["٣", "１", "\u00a0"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(20_000)]
    array = pa.array(texts, pa.string())
    assert minhash._simplified(array).equals(minhash.simplify(array))


def reference_paragraphs(texts: pa.Array, min_chars: int, exempt: tuple[str, ...]) -> text.Paragraphs:
    """Paragraphs as first written: split, each line normalised and hashed on its own."""
    lines = pc.split_pattern(pc.fill_null(texts, ""), "\n")
    flat = pc.list_flatten(lines)
    rows = pc.list_parent_indices(lines).to_numpy().astype(np.int64)
    offsets = lines.offsets.to_numpy()
    index = (np.arange(len(flat)) - (offsets[rows] - offsets[0])).astype(np.int32)
    normalised = reference_normalise(flat)
    keep = pc.and_(pc.greater_equal(pc.utf8_length(normalised), min_chars),
                   pc.invert(pc.is_in(normalised, value_set=reference_normalise(pa.array(exempt, pa.string())))))
    mask = keep.to_numpy(zero_copy_only=False)
    return text.Paragraphs(row=rows[mask], index=index[mask],
                           hash=np.array([blake2b_64(s) for s in normalised.filter(keep).to_pylist()], np.uint64),
                           chars=pc.utf8_length(flat).to_numpy()[mask].astype(np.int64))


@pytest.mark.parametrize("min_chars,exempt", [(30, ()), (1, ("References", "  SEE ALSO\t")), (5, ("x" * 5,))])
def test_paragraphs_equal_lines_normalised_one_by_one(min_chars, exempt):
    """Whole texts normalised at once give each line what it gets alone: marks, jamo and final sigma
    next to newlines, carriage returns, lines of whitespace, lengths around ``min_chars``."""
    pieces = ["\n", "\r\n", "\n\n", " ", "\t", "\u3000", "a", "Σ", "ΑΣ", "\u0301", "\u1100", "\u1161", "e\u0301",
              "中文", "İ", "references", "REFERENCES", "See also", "xxxxx", "\U0001F600", "word " * 7]
    rng = random.Random(12)
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    texts += [None, "", "\n", "References", "x" * 5000 + "\n" + "y" * 29 + "\n" + "z" * 30]
    array = pa.array(texts, pa.string())
    for part in (array, array.slice(7), array.cast(pa.large_string())):
        got, expected = text.paragraphs(part, text.nfc_lower(part), min_chars, exempt), \
            reference_paragraphs(part, min_chars, exempt)
        for field in ("row", "index", "hash", "chars"):
            assert getattr(got, field).dtype == getattr(expected, field).dtype, field
            assert np.array_equal(getattr(got, field), getattr(expected, field)), field
    # some rows only: the others' paragraphs are not looked at
    rows = np.array(sorted(random.Random(14).sample(range(len(array)), 1000)))
    got = text.paragraphs(array, text.nfc_lower(array), min_chars, exempt, rows)
    expected = reference_paragraphs(array.take(pa.array(rows)), min_chars, exempt)
    assert np.array_equal(got.row, rows[expected.row])
    for field in ("index", "hash", "chars"):
        assert np.array_equal(getattr(got, field), getattr(expected, field)), field


def test_drop_lines_equals_joining_the_lines_left():
    rng = random.Random(13)
    lines = ["", "a", "中文 line", "\r", "  ", "\U0001F600 é"]
    texts = ["\n".join(rng.choice(lines) for _ in range(rng.randint(1, 8))) for _ in range(2000)]
    drops = {}
    for row in rng.sample(range(len(texts)), 1500):
        count = texts[row].count("\n") + 1
        drops[row] = sorted(rng.sample(range(count + 2), rng.randint(1, count + 2)))  # some past the end
    drops[0] = [0, 0, 1]  # repeated
    edited, removed = text.drop_lines(pa.array(texts, pa.string()), drops)
    expected = ["\n".join(line for i, line in enumerate(texts[row].split("\n")) if i not in set(indices))
                for row, indices in drops.items()]
    assert edited.to_pylist() == expected
    assert removed == sum(len(texts[row]) - len(e) for row, e in zip(drops, expected))


def test_code_point_hashes_are_token_hashes_on_every_call():
    points = np.array([0x4E2D, 0x61, 0x1F600, 0x4E2D, 0x10FFFF, 0x61], dtype=np.uint32)
    expected = [minhash.token_hash(chr(p)) for p in points.tolist()]
    assert minhash._char_hashes(points).tolist() == expected
    assert minhash._char_hashes(points).tolist() == expected  # from the cache this time


@pytest.mark.parametrize("n", [1, 2, 5, 64])
def test_shingles_are_the_position_weighted_sums(n):
    rng = np.random.default_rng(n)
    counts = np.array([0, 1, n - 1, n, n + 1, 3 * n, 0, 2], dtype=np.int64)
    token_hashes = rng.integers(0, 2**64, size=int(counts.sum()), dtype=np.uint64)
    values, per_doc = minhash.shingles(token_hashes, counts, n)
    expected, start = [], 0
    for count in counts.tolist():
        tokens = token_hashes[start:start + count].tolist()
        for first in range(max(count - n + 1, 1) if count else 0):
            window = tokens[first:first + n]
            total = sum(h * int(minhash.POSITION_MULTIPLIERS[p]) for p, h in enumerate(window)) % 2**64
            expected.append(int(_fmix(np.array([total], np.uint64), 64)[0] >> np.uint64(32)))
        start += count
    assert per_doc.tolist() == [max(c - n + 1, 1) if c else 0 for c in counts.tolist()]
    assert values.tolist() == expected


def test_signature_column_round_trips_and_old_lists_are_read():
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, size=(5, 16), dtype=np.uint64).astype(np.uint32)
    column = documents.signature_column(signatures)
    assert column.type == pa.binary(64)
    assert np.array_equal(documents.signature_matrix(column, 16), signatures)
    assert np.array_equal(documents.signature_matrix(pa.chunked_array([column.slice(0, 2), column.slice(2)]), 16),
                          signatures)
    assert np.array_equal(documents.signature_matrix(column.slice(3), 16), signatures[3:])
    listed = pa.FixedSizeListArray.from_arrays(pa.array(signatures.reshape(-1)), 16)
    assert np.array_equal(documents.signature_matrix(listed, 16), signatures)
    assert documents.signature_matrix(column.slice(5), 16).shape == (0, 16)


def test_word_pieces_are_cut_at_ascii_punctuation_only():
    """What the cut rests on: no ASCII character but letters and digits survives simplify."""
    survivors = re.findall(r"\S", minhash.simplify(pa.array(["".join(CUTS)]))[0].as_py())
    assert survivors == []
