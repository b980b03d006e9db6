"""``unicode_fold.nfkc_lower`` must give Arrow's NFKC-then-lower-case, byte for byte, on any text."""
from __future__ import annotations

import gzip
import random

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from stages import unicode_fold
from stages.unicode_fold import nfkc_lower


def arrow_fold(strings: pa.Array) -> pa.Array:
    return pc.utf8_lower(pc.utf8_normalize(strings, "NFKC"))


def assert_folds_as_arrow(strings: pa.Array) -> None:
    got, want = nfkc_lower(strings), arrow_fold(strings)
    assert got.type == want.type
    bad = [i for i, (a, b) in enumerate(zip(got.to_pylist(), want.to_pylist())) if a != b]
    assert not bad, [(strings[i].as_py(), got[i].as_py(), want[i].as_py()) for i in bad[:5]]


# Characters before which a later one may compose or reorder: Latin letters that take accents, an
# Oriya and a Tamil vowel sign's bases, a Hangul leading jamo and an LV syllable, a compatibility
# jamo, a full-width letter, a combining mark, a four-byte character.
STARTERS = ["", "e", "A", "o", "\u0b47", "\u0bc6", "\u1100", "\uac00", "\u3131", "\uff21", "\u0301", "\U0001d15e"]


def test_every_bmp_character_after_and_before_the_characters_things_compose_with():
    points = [p for p in range(0x10000) if not 0xD800 <= p < 0xE000]
    strings = [s + chr(p) + t for p in points for s, t in ((s, "") for s in STARTERS)]
    strings += [chr(p) + t for p in points for t in ("\u0301", "\u1161", "\u11a8", "\u0b3e", "X")]
    assert_folds_as_arrow(pa.array(strings, pa.string()))


def test_random_mixtures_of_every_kind_of_character_sliced_and_large():
    rng = random.Random(7)
    pools = [
        [chr(p) for p in range(0x20, 0x7F)],
        [chr(p) for p in range(0xA0, 0x250)],                      # Latin-1, Latin Extended
        [chr(p) for p in range(0x300, 0x370)],                     # combining marks
        [chr(p) for p in range(0x370, 0x530)],                     # Greek (final sigma), Cyrillic
        [chr(p) for p in range(0x0B00, 0x0C00)],                   # Oriya, Tamil
        [chr(p) for p in range(0x1100, 0x1200)] + [chr(p) for p in range(0x3130, 0x3190)],  # jamo
        [chr(p) for p in range(0x3000, 0x3100)] + [chr(p) for p in range(0xFF00, 0xFFF0)],  # CJK punctuation, full width
        [chr(p) for p in range(0x4E00, 0x4F00)] + [chr(p) for p in range(0xAC00, 0xAD00)],
        ["\ufdfa", "\ufb01", "\u2126", "\u212a", "\u0130", "\u1e9b", "\u00df", "\u3392", "\U0001f600", "\U00020000"],
    ]
    strings = ["".join(rng.choice(rng.choice(pools)) for _ in range(rng.randrange(0, 60))) for _ in range(20_000)]
    array = pa.array(strings + [""], pa.string())
    assert_folds_as_arrow(array)
    assert_folds_as_arrow(array.slice(1234, 5000))
    assert_folds_as_arrow(array.slice(0, 0))
    assert_folds_as_arrow(pa.array(strings[:500], pa.large_string()))
    assert len(nfkc_lower(pa.chunked_array([array.slice(0, 10), array.slice(10, 5)]))) == 15


def test_only_strings_with_characters_that_need_context_go_to_arrow(monkeypatch):
    # ASCII, CJK, Latin with accents, full-width and compatibility forms fold by table; a combining
    # mark, a conjoining jamo, an unassigned code point or a four-byte character sends its string
    # to Arrow (the table must not claim them).
    import numpy as np
    from pipeline.utf8 import utf8_buffers

    monkeypatch.setattr(unicode_fold, "_START", np.zeros(0x10000, dtype=np.int32))
    monkeypatch.setattr(unicode_fold, "_LENGTH", np.full(0x10000, unicode_fold.UNBUILT, dtype=np.int8))
    monkeypatch.setattr(unicode_fold, "_BYTES", np.zeros(0, dtype=np.uint8))
    strings = ["Hello", "北京大学，你好！", "Ｈｅｌｌｏ ﬁne café", "e\u0301", "\u1100\u1161", "\u0378", "x\U0001f600"]
    assert nfkc_lower(pa.array(strings)).equals(arrow_fold(pa.array(strings)))  # looks up their characters
    offsets, data = utf8_buffers(pa.array(strings))
    missing = np.zeros(0x10000, dtype=np.bool_)
    sizes = unicode_fold.fold_sizes(data, offsets, unicode_fold._LENGTH, missing)
    assert [size >= 0 for size in sizes] == [True, True, True, False, False, False, False]
    assert not missing.any()
    # Only the characters met are built: not the rest of their blocks.
    assert unicode_fold._LENGTH[ord("北")] >= 0 and unicode_fold._LENGTH[ord("北") + 1] == unicode_fold.UNBUILT


def test_real_text_of_the_shared_data_in_many_languages(shared_data):
    with gzip.open(shared_data / "langid-dev.tsv.gz", "rt", encoding="utf-8") as handle:
        next(handle)
        lines = pa.array([line.rstrip("\n").split("\t")[1] for line in handle], pa.string())
    assert len(lines) > 100_000
    assert nfkc_lower(lines).equals(arrow_fold(lines))
    for path in sorted((shared_data / "corpus-dev").glob("*.parquet")):
        texts = pc.fill_null(pq.read_table(path, columns=["text"]).column("text").combine_chunks(), "")
        assert nfkc_lower(texts).equals(arrow_fold(texts)), path
