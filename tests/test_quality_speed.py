"""The quality stage's compiled scoring passes give, bit for bit, what the Arrow passes they replaced gave.

The references below are the Arrow code as it stood before (``stages/quality_signals.py`` and
``NgramModel.perplexity`` in ``stages/quality_lm.py``): the stop words and the language model's ids
looked up with ``pc.index_in``, the line signals from ``pc.split_pattern``, ``pc.utf8_trim_whitespace``,
``pc.utf8_length``, the terminal-punctuation regular expression and ``pc.dictionary_encode``. They are
compared with the code of today on the shared dev corpus (skipped where it is absent) and on random
mixtures of what the passes have to get right: empty documents and lines, every kind of whitespace
Arrow trims and characters that look like it, terminal punctuation and near misses, trailing blanks
after punctuation, characters of one to four bytes (emoji and other characters above U+FFFF at both
ends of lines), lines repeated within a document or only across documents, and long lines that
differ only in the middle. ``tests/test_quality.py`` compares ``QualityModel.signals`` as a whole.
"""
from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from stages import quality_kernels, quality_lm, quality_signals
from stages.quality_lm import MAX_TOKENS, UNK, NgramModel, StringIndex, Tokens, ranges, token_log_probs
from stages.quality_model import CJK_LANGS, TextConfig, as_text_array, prepare_batch, prepare_texts, scored_windows
from stages.quality_signals import _TERMINAL, STOP_WORDS

SCORING_CHUNK = 2000

# --- the Arrow passes as they were -------------------------------------------------------------


def reference_trimmed(texts: pa.Array) -> pa.Array:
    return pc.utf8_trim_whitespace(texts)


def reference_window(texts: pa.Array, config: TextConfig, langs: list[str] | None = None) -> pa.Array:
    """The windows of trimmed texts, as the stage cut them with Arrow before ``scored_windows``."""
    windows = pc.utf8_slice_codeunits(texts, 0, config.max_chars)
    if langs is None or config.cjk_max_chars >= config.max_chars:
        return windows
    cjk = pa.array(np.isin(np.asarray(langs, dtype=object), CJK_LANGS))
    return pc.if_else(cjk, pc.utf8_slice_codeunits(windows, 0, config.cjk_max_chars), windows)


def reference_scored_windows(texts: pa.Array, config: TextConfig, langs: list[str] | None = None):
    trimmed = reference_trimmed(texts)
    return reference_window(trimmed, config, langs), pc.binary_length(trimmed).to_numpy(zero_copy_only=False)


def reference_compute(text_bytes: np.ndarray, window: pa.Array, tokens: Tokens, langs: list[str],
                      stop_words: dict[str, list[str]]) -> dict[str, np.ndarray]:
    window_words = tokens.words
    window_bytes = pc.binary_length(window).to_numpy(zero_copy_only=False).astype(np.float64)
    text_bytes = text_bytes.astype(np.float64)
    words = window_words * np.where(window_bytes > 0, text_bytes / np.maximum(window_bytes, 1), 0.0)
    return {
        "words": np.log1p(words),
        "stopwords": reference_stopword_share(tokens, window_words, langs, stop_words),
        **reference_line_signals(window),
    }


def reference_stopword_share(tokens: Tokens, n_words: np.ndarray, langs: list[str],
                             stop_words: dict[str, list[str]]) -> np.ndarray:
    vocabulary = sorted({word for words in stop_words.values() for word in words})
    languages = sorted(stop_words)
    table = np.zeros((len(vocabulary), len(languages) + 1), dtype=bool)  # last column: no stop list
    for j, lang in enumerate(languages):
        for word in stop_words[lang]:
            table[vocabulary.index(word), j] = True
    found = pc.index_in(tokens.flat, value_set=pa.array(vocabulary, type=pa.string()))
    word_row = pc.fill_null(found, -1).to_numpy(zero_copy_only=False)
    hits = np.flatnonzero(word_row >= 0)  # only these can count: a fraction of the tokens
    doc_of_hit = np.searchsorted(tokens.offsets, hits, side="right") - 1
    lang_index = {lang: j for j, lang in enumerate(languages)}
    doc_lang = np.array([lang_index.get(lang, len(languages)) for lang in langs], dtype=np.int64)
    is_stop = table[word_row[hits], doc_lang[doc_of_hit]]
    n_stop = np.bincount(doc_of_hit[is_stop], minlength=len(langs)).astype(np.float64)
    share = np.where(n_words > 0, n_stop / np.maximum(n_words, 1), 0.0)
    return np.where(doc_lang < len(languages), share, np.nan)


def reference_line_signals(window: pa.Array) -> dict[str, np.ndarray]:
    n_docs = len(window)
    split = pc.split_pattern(window, "\n")
    offsets = split.offsets.to_numpy().astype(np.int64) - split.offsets[0].as_py()
    doc_of = np.repeat(np.arange(n_docs), np.diff(offsets))
    lines = pc.utf8_trim_whitespace(split.flatten())
    length = pc.utf8_length(lines).to_numpy(zero_copy_only=False).astype(np.float64)
    nonblank = length > 0
    terminal = pc.match_substring_regex(lines, _TERMINAL).to_numpy(zero_copy_only=False) & nonblank
    n_lines = np.bincount(doc_of, weights=nonblank, minlength=n_docs)
    chars = np.bincount(doc_of, weights=length, minlength=n_docs)
    n_terminal = np.bincount(doc_of, weights=terminal, minlength=n_docs)
    repeated = reference_repeated_chars(doc_of[nonblank], lines.filter(pa.array(nonblank)), length[nonblank], n_docs)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "punct_lines": np.where(n_lines > 0, n_terminal / np.maximum(n_lines, 1), 0.0),
            "line_length": np.log1p(np.where(n_lines > 0, chars / np.maximum(n_lines, 1), 0.0)),
            "repetition": np.where(chars > 0, repeated / np.maximum(chars, 1), 0.0),
        }


def reference_repeated_chars(doc_of: np.ndarray, lines: pa.Array, length: np.ndarray, n_docs: int) -> np.ndarray:
    if len(lines) == 0:
        return np.zeros(n_docs)
    codes = pc.dictionary_encode(lines).indices.to_numpy(zero_copy_only=False).astype(np.int64)
    pairs = doc_of.astype(np.int64) * (int(codes.max()) + 1) + codes
    _, first = np.unique(pairs, return_index=True)
    repeat = np.ones(len(pairs), dtype=bool)
    repeat[first] = False
    return np.bincount(doc_of, weights=length * repeat, minlength=n_docs)


def reference_ids(flat: pa.Array, vocab: pa.Array) -> np.ndarray:
    found = pc.index_in(flat, value_set=vocab)
    return pc.fill_null(pc.add(found, 1), UNK).to_numpy(zero_copy_only=False).astype(np.uint64)


def reference_perplexity(self: NgramModel, tokens: Tokens, langs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    perplexity = np.full(len(langs), np.nan)
    known = tokens.words.copy()
    langs_array = np.array(langs, dtype=object)
    lengths = np.diff(tokens.offsets)
    for lang, tables in self.tables.items():
        docs = np.flatnonzero(langs_array == lang)
        if not docs.size:
            continue
        scored = np.minimum(lengths[docs], MAX_TOKENS)
        rows = ranges(tokens.offsets[docs], scored)
        ids = reference_ids(tokens.flat.take(pa.array(rows)), tables.vocab)
        log_probs = token_log_probs(tables, ids, np.concatenate(([0], np.cumsum(scored))))
        doc_of = np.repeat(np.arange(docs.size), scored)
        sums = np.bincount(doc_of, weights=log_probs, minlength=docs.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            perplexity[docs] = np.where(scored > 0, np.exp(-sums / np.maximum(scored, 1)), np.nan)
        known[docs] = np.bincount(doc_of, weights=(ids != UNK) & tokens.alnum[rows], minlength=docs.size)
    return perplexity, known


# --- random mixtures -----------------------------------------------------------------------------

# Everything pc.utf8_trim_whitespace trims (ASCII controls 0x1C-0x1F included), and what it does not.
SPACES = [" ", "\t", "\r", "\x0b", "\x0c", "\x1c", "\x1f", "\u0085", "\u00a0", "\u1680", "\u2000", "\u2007",
          "\u200a", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"]
NOT_SPACES = ["\u200b", "\ufeff", "\u180e", "\u2060", "\x00", "\x1b", "\x7f", "\u3164"]
TERMINALS = list(".!?。！？…\"'”’»)）:：;；")
NEAR_TERMINALS = ["“", "‘", "«", "(", "（", ",", "，", "、", "．", "﹒", "‥", "¡", "¿", "-", "]", "」", "』",
                  "›", "‼", "⁉", "。\u0301", "\U0001F6D1"]
ASTRAL = ["😀", "🙂", "👍🏽", "𠀀", "𠜎", "𝔘", "🀄", "\U000E0001", "\U0010FFFD", "\U0001F1E6\U0001F1EA", "𐍈"]
WORDS = ["the", "of", "and", "a", "to", "is", "der", "und", "nicht", "le", "les", "el", "que", "Wasser", "café",
         "naïve", "THE", "The", "中文", "的", "了", "我们", "們", "這", "の", "は", "ひらがな", "カタカナ", "한국어", "Ω",
         "e\u0301", "x" * 9, "abcdefgh", "abcdefghi", "0123456789abcdef0123", "2024年", "١٢٣", "Ⅻ", "ｆｕｌｌ"] + ASTRAL


def mixture(n: int, seed: int = 0) -> list[str]:
    """``n`` random documents (see the module's docstring for what they mix)."""
    rng = random.Random(seed)
    shared: list[str] = []  # lines any document may repeat: repeated across documents, not within
    docs = ["", "\n", "\n\n\n", " ", "\u3000", "\u3000\n\u2028\n\t", "\r\n", "x", ".", "😀", "\u200b", "a\n" * 5,
            " a \n\ta\t\n\u3000a.", "a.\u3000\nb!\u00a0\r\nc?\u2028", "\U0001F6D1\n\U0001F6D1"]
    while len(docs) < n:
        own: list[str] = []
        lines = []
        for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 8, 20, 60])):
            lines.append(_line(rng, own, shared))
        joiner = rng.choice(["\n", "\n", "\n", "\r\n", "\n\n", "\n \n", "\u2028"])
        doc = joiner.join(lines)
        if rng.random() < 0.2:
            doc = rng.choice(["\n", " ", "\u3000", "\n\n"]) * rng.randint(1, 3) + doc
        if rng.random() < 0.2:
            doc += rng.choice(["\n", " ", "\t\n", "\n\u00a0"]) * rng.randint(1, 3)
        docs.append(doc)
    return docs[:n]


def _line(rng: random.Random, own: list[str], shared: list[str]) -> str:
    kind = rng.random()
    if kind < 0.15 and own:
        body = rng.choice(own)  # repeated within the document
    elif kind < 0.25 and shared:
        body = rng.choice(shared)
    elif kind < 0.32 and own:
        # Same length, same ends, one character changed in the middle.
        base = rng.choice(own)
        middle = len(base) // 2
        body = base[:middle] + rng.choice("xyz中😀") + base[middle + 1:]
    elif kind < 0.38:
        body = ""
    elif kind < 0.45:
        body = "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 4)))
    else:
        body = " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 2, 3, 5, 8, 15, 40])))
        if rng.random() < 0.5:
            body += rng.choice(TERMINALS if rng.random() < 0.7 else NEAR_TERMINALS)
        if rng.random() < 0.15:
            body = rng.choice(ASTRAL + NOT_SPACES) + body
        if rng.random() < 0.15:
            body += rng.choice(ASTRAL + NOT_SPACES)
    if rng.random() < 0.3:
        body = "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 3))) + body
    if rng.random() < 0.3:
        body += "".join(rng.choice(SPACES) for _ in range(rng.randint(1, 3)))  # also after punctuation
    own.append(body.strip(" "))
    if rng.random() < 0.1:
        shared.append(body)
    return body


def corpus_dev(shared_data) -> tuple[list[str], list[str]]:
    table = pq.read_table(shared_data / "corpus-dev", columns=["text", "lang"])
    return table.column("text").to_pylist(), [lang or "" for lang in table.column("lang").to_pylist()]


def random_langs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(["en", "en", "zh", "zh", "de", "fr", "es", "ja", "ru", "", "xx"]) for _ in range(n)]


# --- comparisons ---------------------------------------------------------------------------------


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]):
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        assert np.array_equal(got[name], want[name], equal_nan=True), name
        assert got[name].tobytes() == want[name].tobytes(), name  # to the bit, NaNs included


def batches(texts: list[str], langs: list[str]):
    """Scored batches as ``QualityModel._signals`` made them with Arrow: trimmed texts, windows and
    tokens; each batch's windows are checked against ``scored_windows`` on the way."""
    array = reference_trimmed(as_text_array(texts))
    untrimmed = as_text_array(texts)
    for start in range(0, len(texts), SCORING_CHUNK):
        part, part_langs = array.slice(start, SCORING_CHUNK), langs[start:start + SCORING_CHUNK]
        windows = reference_window(part, TextConfig(), part_langs)
        assert_windows_as_before(untrimmed.slice(start, SCORING_CHUNK), part_langs, TextConfig())
        yield part, windows, prepare_batch(windows, TextConfig())[1], part_langs


def assert_windows_as_before(texts: pa.Array, langs: list[str] | None, config: TextConfig):
    got, text_bytes = scored_windows(texts, config, langs)
    want, want_bytes = reference_scored_windows(texts, config, langs)
    assert got.to_pylist() == want.to_pylist()
    assert text_bytes.tolist() == want_bytes.tolist()


def fresh(tokens: Tokens) -> Tokens:
    """The same tokens with nothing cached."""
    return Tokens(tokens.flat, tokens.offsets, tokens.alnum)


def assert_signals_as_before(texts: list[str], langs: list[str], stop_words=STOP_WORDS):
    for part, windows, tokens, part_langs in batches(texts, langs):
        text_bytes = pc.binary_length(part).to_numpy(zero_copy_only=False)
        assert_same(quality_signals.compute(text_bytes, windows, fresh(tokens), part_langs, stop_words),
                    reference_compute(text_bytes, windows, fresh(tokens), part_langs, stop_words))
    # Whole texts as windows too: longer documents, more lines, leading whitespace kept.
    for start in range(0, len(texts), SCORING_CHUNK):
        array = as_text_array(texts[start:start + SCORING_CHUNK])
        assert_same(quality_signals._line_signals(array), reference_line_signals(array))
        assert_same(quality_signals._line_signals(array.slice(3)), reference_line_signals(array.slice(3)))


def test_signals_on_the_dev_corpus_are_those_of_the_arrow_passes(shared_data):
    texts, langs = corpus_dev(shared_data)
    assert_signals_as_before(texts, langs)


def test_signals_on_random_mixtures_are_those_of_the_arrow_passes():
    texts = mixture(6000)
    langs = random_langs(len(texts))
    want = reference_line_signals(pa.array(texts))
    # The mixture reaches every case: blank documents, terminal and other line ends, repeats.
    assert (want["line_length"] == 0).sum() > 50
    assert ((want["punct_lines"] > 0) & (want["punct_lines"] < 1)).sum() > 500
    assert ((want["repetition"] > 0) & (want["repetition"] < 1)).sum() > 500
    assert_signals_as_before(texts, langs)
    assert_same(quality_signals._line_signals(pa.array([], pa.string())), reference_line_signals(pa.array([], pa.string())))
    assert_same(quality_signals._line_signals(pa.array(texts, pa.large_string())), want)


def test_windows_are_those_of_the_arrow_passes_at_any_limit():
    # The dev corpus and the mixtures above compare the default windows; here the limits fall inside
    # and just after multi-byte characters and whitespace, on sliced and large-string arrays too.
    texts = mixture(3000, seed=7) + ["", " ", "\u3000\n", " 😀 ", "é" * 9, "中文 " * 7, "\n a b \t"]
    langs = random_langs(len(texts), seed=7)
    for max_chars, cjk_max_chars in [(1, 1), (2, 1), (5, 3), (7, 40), (60, 30)]:
        config = TextConfig(max_chars=max_chars, cjk_max_chars=cjk_max_chars)
        assert_windows_as_before(pa.array(texts), langs, config)
        assert_windows_as_before(pa.array(texts).slice(5, 900), langs[5:905], config)
        assert_windows_as_before(pa.array(texts, pa.large_string()), None, config)


def test_stop_words_of_any_length_count_as_before():
    # Stop lists with words of more than eight bytes, duplicates across languages and an empty list
    # take the index's general path (probing, bytes compared).
    texts = mixture(3000, seed=1)
    langs = random_langs(len(texts), seed=1)
    stop_words = {"en": ["the", "abcdefghi", "0123456789abcdef0123", "xxxxxxxxx", "😀", "👍🏽"],
                  "zh": ["的", "中", "文", "𠀀"], "de": ["the", "und", "wasser"], "fr": []}
    assert not StringIndex(pa.array(sorted({w for ws in stop_words.values() for w in ws}))).single
    assert StringIndex(pa.array(sorted({w for ws in STOP_WORDS.values() for w in ws}))).single
    assert_signals_as_before(texts, langs, stop_words)


def test_string_index_finds_what_index_in_finds():
    rng = random.Random(2)
    alphabet = ["a", "b", "é", "中", "😀", " ", "\x00", "z"]

    def word(longest: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest)))

    cases = {
        "few short": [word(2) for _ in range(60)],
        "few, one long": [word(2) for _ in range(60)] + ["abcdefghijk"],
        "many short": [word(3) for _ in range(6000)],
        "many of any length": [word(12) for _ in range(6000)],
        "eight and nine bytes": ["abcdefgh", "abcdefghi", "abcdefg", "中中中", "中中中a", "😀😀", "😀😀a", ""],
    }
    singles = set()
    for name, keys in cases.items():
        keys = keys + keys[:5]  # duplicates: the first one's index, as index_in
        queries = keys + [word(12) for _ in range(5000)] + [k + "a" for k in keys[:50]] + [k[:-1] for k in keys[:50]]
        flat = pa.array(queries, pa.string())
        offsets = np.array([0, len(queries) // 3, len(queries)], dtype=np.int64)
        tokens = Tokens(flat, offsets, np.ones(len(queries), dtype=bool))
        index = StringIndex(pa.array(keys, pa.string()))
        singles.add(index.single)
        want = pc.fill_null(pc.index_in(flat, value_set=pa.array(keys, pa.string())), -1).to_numpy(zero_copy_only=False)
        assert index.find(tokens).tolist() == want.tolist(), name
        starts, counts = np.array([7, 0, 100, 5000]), np.array([10, 3, 0, len(queries) - 5000])
        rows = ranges(starts, counts)
        assert index.find(tokens, starts, counts).tolist() == want[rows].tolist(), name
        sliced = Tokens(flat.slice(11), offsets, tokens.alnum)
        assert index.find(sliced).tolist() == want[11:].tolist(), name
    assert singles == {True, False}  # both ways of looking up were taken


def test_a_key_followed_by_zero_bytes_is_not_the_key():
    # Up to eight bytes a string is compared as one number, "a" and "a\0" alike; only the length
    # tells them apart (also from "a\0\0\0\0\0\0\0..." longer than eight bytes, which reads as "a").
    letters = [chr(c) for c in range(1, 128)]
    queries = (["a" + "\x00" * k for k in range(300)] + ["a" + "\x00" * k + "b" for k in range(20)]
               + [letter + "\x00" * k for letter in letters for k in range(12)])
    flat = pa.array(queries, pa.string())
    tokens = Tokens(flat, np.array([0, len(queries)]), np.ones(len(queries), dtype=bool))
    for keys in (["a"], ["a", "the", "的", "a\x00\x00"], letters, letters + ["abcdefghi"],
                 [letter + "\x00" * k for letter in letters for k in range(8)] + ["abcdefghi"]):
        want = pc.fill_null(pc.index_in(flat, value_set=pa.array(keys)), -1).to_numpy(zero_copy_only=False)
        assert StringIndex(pa.array(keys)).find(tokens).tolist() == want.tolist(), keys


def language_models(texts: list[str], langs: list[str]) -> NgramModel:
    """Models of English (a vocabulary of words of any length: general lookups) and Chinese (single
    characters, a small set of short strings: one-slot lookups) trained on part of the texts."""
    by_lang = {lang: [t for t, lang_of in zip(texts, langs) if lang_of == lang][::2] for lang in ("en", "zh")}
    return NgramModel.train({lang: prepare_texts(lines, TextConfig(), [lang] * len(lines))
                             for lang, lines in by_lang.items()})


def assert_perplexity_as_before(model: NgramModel, texts: list[str], langs: list[str]):
    for _, _, tokens, part_langs in batches(texts, langs):
        got = model.perplexity(fresh(tokens), part_langs)
        want = reference_perplexity(model, fresh(tokens), part_langs)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.tobytes() == w.tobytes()


def test_perplexity_and_known_words_on_random_mixtures_are_as_before():
    texts = mixture(4000, seed=3)
    langs = random_langs(len(texts), seed=3)
    model = language_models(texts, langs)
    assert not model.tables["en"].vocab_index.single
    assert_perplexity_as_before(model, texts, langs)


def test_perplexity_and_known_words_on_the_dev_corpus_are_as_before(shared_data):
    texts, langs = corpus_dev(shared_data)
    model = language_models(texts, langs)
    assert len(model.tables["en"].vocab) > 4096 and not model.tables["en"].vocab_index.single
    assert_perplexity_as_before(model, texts, langs)


def test_small_vocabularies_of_short_words_take_one_slot_lookups():
    lines = ["的 了 是 在 和 有", "的 了 是 我 你 他", "a b c d e f"] * 3
    model = NgramModel.train({"zh": lines})
    assert model.tables["zh"].vocab_index.single
    texts = mixture(3000, seed=4)
    assert_perplexity_as_before(model, texts, ["zh"] * len(texts))


# --- the character table -----------------------------------------------------------------------


def fresh_line_classes(monkeypatch) -> quality_signals._LineClasses:
    classes = quality_signals._line_classes.__wrapped__()
    monkeypatch.setattr(quality_signals, "_line_classes", lambda: classes)
    return classes


def test_blocks_above_the_bmp_are_classified_when_a_line_first_ends_in_one(monkeypatch):
    classes = fresh_line_classes(monkeypatch)
    emoji_block = 0x1F600 >> quality_lm.BLOCK_BITS
    assert classes.known[:0x10000 >> quality_lm.BLOCK_BITS].all() and not classes.known[emoji_block]
    texts = ["a 😀", "😀 b\n\U0010FFFD", "\U000E0001\u3000"] + mixture(2000, seed=5)
    assert_same(quality_signals._line_signals(pa.array(texts)), reference_line_signals(pa.array(texts)))
    assert classes.known[emoji_block] and classes.known[0x10FFFD >> quality_lm.BLOCK_BITS]
    assert not classes.known[0x50000 >> quality_lm.BLOCK_BITS]  # no character of it in any text


def test_the_tables_hold_what_arrow_trims_and_the_pattern_matches(monkeypatch):
    classes = fresh_line_classes(monkeypatch)
    classes.classify(np.flatnonzero(~classes.known))
    trim = set(np.flatnonzero(classes.table & quality_kernels.TRIM).tolist())
    terminal = set(np.flatnonzero(classes.table & quality_kernels.TERMINAL).tolist())
    assert {ord(c) for c in SPACES} <= trim and not {ord(c) for c in NOT_SPACES} & trim
    assert terminal == {ord(c) for c in TERMINALS}
    assert not trim & terminal


@pytest.mark.parametrize("point, flag", [(0x3000, quality_kernels.TRIM), (0x00A0, quality_kernels.TRIM),
                                         (ord("\r"), quality_kernels.TRIM), (ord("。"), quality_kernels.TERMINAL),
                                         (ord("”"), quality_kernels.TERMINAL)])
def test_a_wrong_character_class_would_be_caught(monkeypatch, point, flag):
    # The comparisons above would see a kernel that trimmed or ended lines differently.
    texts = pa.array(mixture(2000, seed=6))
    want = reference_line_signals(texts)
    classes = fresh_line_classes(monkeypatch)
    assert classes.table[point] & flag
    classes.table[point] ^= flag
    got = quality_signals._line_signals(texts)
    assert any(not np.array_equal(got[name], want[name]) for name in want)


def test_lines_equal_but_for_the_whitespace_around_them_repeat(monkeypatch):
    texts = ["same line.\n  same line.\u3000\n\tsame line.\r", "abcdefghijklmnopq\nabcdefghXjklmnopq",
             "ab\nab\nab\nab", "x\ny\nx", "😀\n😀 ", "a\n\u200ba"]
    got = quality_signals._line_signals(pa.array(texts))
    assert_same(got, reference_line_signals(pa.array(texts)))
    assert got["repetition"].tolist() == [2 / 3, 0.0, 3 / 4, 1 / 3, 1 / 2, 0.0]
