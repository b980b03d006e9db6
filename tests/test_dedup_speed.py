"""Dedup's fast paths give exactly what the plain definitions give: tokens cut into pieces before
simplifying, the whitespace collapse on bytes, the shingle windows, the hash caches and the binary
signature column. Each is compared with its reference on inputs built to break it."""
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

from stages.dedup import documents, minhash, text

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


def test_digests_are_blake2b_of_the_utf8_bytes():
    strings = ["", "a", "Ünïcödé", "中文", "x" * 300]
    expected = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in strings]
    assert text.digests(pa.array(strings)).tolist() == expected
    assert text.digests(pa.array(["skip"] + strings).slice(1)).tolist() == expected
    assert text.digests(pa.array(strings, pa.large_string())).tolist() == expected


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
