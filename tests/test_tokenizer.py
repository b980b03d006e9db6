"""The BPE tokenizer: real sentencepiece training on real text (small vocabularies, seconds).

Covers the sample (determinism, weights, byte cap, held-out set, long lines), the trained model
(size, special tokens, byte fallback, round trips on code and rare scripts), the evaluation report
and the Hugging Face export (same ids as sentencepiece on real text).
"""
from __future__ import annotations

import importlib.util
import json
import random
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from pipeline.stage import DOCUMENT_SCHEMA
from pipeline.utf8 import utf8_buffers
from tokenizer import TokenizerConfig, evaluate_tokenizer, load_tokenizer, train_tokenizer
from tokenizer.sample import draw_sample, read_sample, split_long_line
from tokenizer import bpe
from tokenizer.bpe import WordEncoder
from tokenizer.segments import independent_segments, segment_starts
from tokenizer.train import trainer_options

SCHEMA = DOCUMENT_SCHEMA.append(pa.field("lang", pa.string()))
TRICKY = [
    "def f(x):\n\tif x:\n        return x  \n\n\n\n    pass\r\n",
    "  leading and trailing  ",
    "emoji 😀👩‍👩‍👧 and flags 🇨🇳",
    "Linear B 𐀀𐀁, cuneiform 𒀀, Tifinagh ⵜⴰⵎⴰⵣⵉⵖⵜ, Ogham ᚛ᚁᚂ᚜",
    "e\u0301 ﬁ Ｆｕｌｌｗｉｄｔｈ ①②",
    "NUL \x00 vertical tab \x0b form feed \x0c",
    "中文：数字12345，标点。「引号」",
    "literal specials </s> <s> <pad> <unk> stay text",
]


def write_shards(directory: Path, rows: list[dict], shards: int) -> list[str]:
    """Rows dealt round-robin into ``shards`` Parquet files in the document schema (plus lang)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(shards):
        part = rows[index::shards]
        table = pa.table(
            {
                "id": [r["id"] for r in part],
                "text": [r["text"] for r in part],
                "source": [r.get("source", "test") for r in part],
                "category": [r["category"] for r in part],
                "meta": ["{}"] * len(part),
                "lang": [r["lang"] for r in part],
            },
            schema=SCHEMA,
        )
        path = directory / f"part-{index:05d}.parquet"
        pq.write_table(table, path, row_group_size=100)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def dev_rows(shared_data) -> list[dict]:
    """About 2.5 MB of real corpus-dev documents, every category and script, at most 20k chars each."""
    rows = []
    for path in sorted((shared_data / "corpus-dev").glob("*.parquet")):
        for row in pq.read_table(path).to_pylist()[::12]:
            if len(row["text"]) <= 20_000:
                category = "papers" if row["category"] == "academic" else row["category"]
                rows.append({**row, "category": category})
    return rows


@pytest.fixture(scope="module")
def trained(dev_rows, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tokenizer")
    shards = write_shards(directory / "kept", dev_rows, shards=3)
    config = TokenizerConfig(
        vocab_size=4000, sample_bytes=1_500_000, eval_bytes=400_000, holdout_fraction=0.05,
        character_coverage=0.99,
        special_tokens=["<|endoftext|>", "<|im_start|>"], eod_token="<|endoftext|>",
    )
    output = str(directory / "tokenizer")
    report = train_tokenizer(config, shards, output, log=lambda _: None)
    return config, shards, output, report


def python_source_rows(limit_bytes: int) -> list[dict]:
    """Real code that every Python installation has: the standard library's own sources."""
    rows, total = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        text = path.read_text(encoding="utf-8", errors="replace")
        rows.append({"id": path.name, "text": text, "category": "code", "lang": "en"})
        total += len(text.encode())
        if total >= limit_bytes:
            break
    return rows


# --- configuration ---------------------------------------------------------------------------


def test_config_rejects_unknown_keys_bad_tokens_and_weights():
    with pytest.raises(ValidationError):
        TokenizerConfig(vocab_sise=1000)
    with pytest.raises(ValidationError, match="eod_token"):
        TokenizerConfig(eod_token="<|endoftext|>")
    with pytest.raises(ValidationError):
        TokenizerConfig(category_weights={"webb": 1.0})
    with pytest.raises(ValidationError, match=">= 0"):
        TokenizerConfig(language_weights={"en": -1.0})
    assert TokenizerConfig().vocab_size == 65_536
    assert trainer_options(TokenizerConfig())["byte_fallback"] is True


# --- the sample --------------------------------------------------------------------------------


def synthetic_rows(n: int) -> list[dict]:
    categories = ["web", "code"]
    return [
        {"id": f"doc-{i:05d}", "text": f"document {i} " * 20, "category": categories[i % 2],
         "lang": "en"}
        for i in range(n)
    ]


def sample_ids(config, shards, tmp_path) -> tuple[set[str], list[str], dict]:
    result = draw_sample(config, shards, str(tmp_path / f"sample-{len(shards)}"), log=lambda _: None)
    drawn = {line.split(" ")[1] for line in read_sample(result.parts)}
    return drawn, [d["id"] for d in result.heldout], result.stats


def test_sample_is_independent_of_sharding_and_batches(tmp_path):
    rows = synthetic_rows(3000)
    config = TokenizerConfig(sample_bytes=100_000, holdout_fraction=0.05, eval_bytes=20_000)
    one = sample_ids(config, write_shards(tmp_path / "one", rows, 1), tmp_path)
    reordered = rows[1::2] + rows[::2]
    five = sample_ids(config, write_shards(tmp_path / "five", reordered, 5), tmp_path)
    assert one[0] == five[0]
    assert sorted(one[1]) == sorted(five[1])
    assert one[2]["sample"]["bytes"] == five[2]["sample"]["bytes"]
    other_seed = sample_ids(config.model_copy(update={"seed": 1}), write_shards(tmp_path / "s", rows, 1),
                            tmp_path)
    assert other_seed[0] != one[0]


def test_sample_does_not_depend_on_how_its_tasks_group_the_shards(tmp_path, monkeypatch):
    import tokenizer.sample

    shards = write_shards(tmp_path / "kept", synthetic_rows(3000), 6)
    config = TokenizerConfig(sample_bytes=100_000, holdout_fraction=0.05, eval_bytes=20_000)
    drawn = []
    for per_worker in (1, 6):  # one task for every shard, and one task per shard
        monkeypatch.setattr(tokenizer.sample, "TASKS_PER_WORKER", per_worker)
        result = draw_sample(config, shards, str(tmp_path / f"sample-{per_worker}"), log=lambda _: None)
        drawn.append((len(result.parts), list(read_sample(result.parts)), result.heldout, result.stats))
    assert (drawn[0][0], drawn[1][0]) == (1, 6)
    assert drawn[0][1:] == drawn[1][1:]


def test_sample_respects_cap_weights_and_holdout(tmp_path):
    rows = synthetic_rows(4000)
    size = max(len(row["text"].encode()) for row in rows)
    shards = write_shards(tmp_path / "kept", rows, 2)
    config = TokenizerConfig(
        sample_bytes=size * 800, holdout_fraction=0.05, eval_bytes=size * 50,
        category_weights={"web": 1.0, "code": 4.0}, language_weights={},
    )
    drawn, heldout, stats = sample_ids(config, shards, tmp_path)
    sample = stats["sample"]
    assert config.sample_bytes <= sample["bytes"] < config.sample_bytes + size
    assert sample["docs"] == len(drawn)
    # Weight 4 against 1 with a binding cap: code must dominate though the corpus is half and half.
    assert sample["by_category"]["code"]["docs"] > 0.7 * sample["docs"]
    assert not drawn & set(heldout)
    assert config.eval_bytes <= stats["heldout"]["bytes"] < config.eval_bytes + size
    assert stats["corpus"]["docs"] == 4000

    no_code = config.model_copy(update={"category_weights": {"web": 1.0, "code": 0.0}})
    _, _, stats = sample_ids(no_code, shards, tmp_path)
    assert "code" not in stats["sample"]["by_category"]


def test_long_lines_are_split_at_spaces_or_characters_never_dropped(tmp_path):
    chinese = "长文本没有空格" * 5000  # 105,000 bytes, no space to cut at
    english = " ".join(f"word{i}" for i in range(20_000))
    for line in (chinese, english):
        pieces = split_long_line(line, 4096)
        assert "".join(pieces) == line
        assert all(len(piece.encode()) <= 4096 for piece in pieces)
    assert all(piece.startswith(" ") for piece in split_long_line(english, 4096)[1:])

    rows = [{"id": "long-zh", "text": chinese + "\n\nshort line", "category": "web", "lang": "zh"},
            {"id": "long-en", "text": english, "category": "web", "lang": "en"}]
    config = TokenizerConfig(max_sentence_length=4096, holdout_fraction=0.0)
    result = draw_sample(config, write_shards(tmp_path / "kept", rows, 1), str(tmp_path / "sample"),
                         log=lambda _: None)
    stats = result.stats["sample"]
    lines = list(read_sample(result.parts))
    assert stats["long_lines"] == 2
    assert stats["lines"] == len(lines) == stats["chunks_from_long_lines"] + 1
    assert max(len(line.encode()) for line in lines) <= 4096
    assert sum(len(line) for line in lines) == len(chinese) + len("short line") + len(english)


# --- the trained tokenizer ---------------------------------------------------------------------


def test_vocabulary_size_special_tokens_and_files(trained):
    config, _, output, report = trained
    tokenizer = load_tokenizer(output)
    assert tokenizer.vocab_size == config.vocab_size
    assert tokenizer.special_ids() == {
        "<unk>": 0, "<s>": 1, "</s>": 2, "<pad>": 3, "<|endoftext|>": 4, "<|im_start|>": 5,
    }
    assert tokenizer.eod_id == report["tokenizer"]["eod_id"] == 4
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "report.json"):
        assert (Path(output) / name).is_file()
    # Special tokens are inserted by id, never produced from text; newline runs are one token each.
    ids = tokenizer.encode(["a </s> <|endoftext|> b\n\nc"])[0]
    assert not set(ids) & set(tokenizer.special_ids().values())
    assert tokenizer.processor.piece_to_id("\n\n") in ids


def test_round_trip_and_byte_fallback_on_code_emoji_and_rare_scripts(trained):
    tokenizer = load_tokenizer(trained[2])
    processor = tokenizer.processor
    for text, ids in zip(TRICKY, tokenizer.encode(TRICKY)):
        assert tokenizer.decode(ids) == text
        assert processor.unk_id() not in ids
    emoji_ids = tokenizer.encode(["😀"])[0]
    assert [processor.id_to_piece(i) for i in emoji_ids] == ["<0xF0>", "<0x9F>", "<0x98>", "<0x80>"]


def spaced_texts(n: int, seed: int = 0) -> list[str]:
    """Texts made of what segments are cut at (spaces, U+2581, newline runs) and what they hold."""
    rng = random.Random(seed)
    parts = [" ", "  ", "\u2581", " \u2581", "\n", "\n\n", "\n\n\n", "\t", "\r\n", "the", "word", "中文", "😀",
             "e\u0301", "12345", ".", "x"]
    return ["".join(rng.choice(parts) for _ in range(rng.randint(0, 60))) for _ in range(n)] + ["", " ", "\n", "\u2581"]


def assert_flat_encoding_is_encode(tokenizer, texts: list[str]):
    want = tokenizer.encode(texts)
    array = pa.array(texts)
    for part, expected in ((array, want), (array.slice(7, 40), want[7:47]), (array.cast(pa.large_string()), want)):
        ids, offsets = tokenizer.encode_flat(part)
        assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == expected


def test_flat_encoding_gives_the_ids_of_encoding_each_document_whole(trained, dev_rows):
    tokenizer = load_tokenizer(trained[2])
    assert independent_segments(tokenizer.processor)  # the trainer's settings keep pieces inside words
    assert_flat_encoding_is_encode(tokenizer, [row["text"] for row in dev_rows[:400]] + TRICKY + spaced_texts(2000))
    ids, offsets = tokenizer.encode_flat(pa.array(["a b", None, ""]))  # null reads as ""
    length = len(tokenizer.encode(["a b"])[0])
    assert offsets.tolist() == [0, length, length, length] and ids.tolist() == tokenizer.encode(["a b"])[0]


def test_a_model_with_pieces_across_spaces_has_its_documents_encoded_whole(tmp_path):
    import io

    import sentencepiece as spm

    from tokenizer.load import Tokenizer

    lines = ["of the people by the people for the people"] * 200 + [f"line {i} of the text" for i in range(300)]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=120,
        split_by_whitespace=False, add_dummy_prefix=False, control_symbols=["<eod>"], minloglevel=2)
    tokenizer = Tokenizer(model.getvalue(), "<eod>")
    assert any("\u2581" in piece[1:] for piece in map(tokenizer.processor.id_to_piece, range(tokenizer.vocab_size)))
    assert not independent_segments(tokenizer.processor)
    assert_flat_encoding_is_encode(tokenizer, lines[195:210] + spaced_texts(200, seed=1))


def word_list(texts: list[str]) -> list[str]:
    """The distinct segments (``tokenizer.segments``) of some texts: the words ``WordEncoder`` takes."""
    array = pa.array(texts)
    offsets, data = utf8_buffers(array)
    starts = segment_starts(data, offsets).tolist() + [len(data)]
    raw = data.tobytes()
    return sorted({raw[a:b].decode() for a, b in zip(starts, starts[1:])})


def assert_words_encode_as_sentencepiece(encoder, processor, words: list[str]):
    ids, lengths = encoder.encode(pa.array(words))
    want = processor.encode(words, num_threads=1)
    assert lengths.tolist() == [len(w) for w in want]
    assert ids.tolist() == [token for w in want for token in w]


def test_compiled_bpe_gives_sentencepiece_ids_on_real_and_adversarial_words(trained, dev_rows):
    processor = load_tokenizer(trained[2]).processor
    encoder = WordEncoder.of(processor)
    assert encoder is not None  # the trainer's models are the ones it is for
    rng = random.Random(3)
    letters = list("aaabbe ▁中文的了。！😀é́xyz01") + ["́", "𒀀"]
    adversarial = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 40))) for _ in range(3000)]
    # Runs of one character: equal pairs everywhere, so the leftmost-first order decides every merge;
    # long ones take the agenda through thousands of entries.
    runs = [character * k for character in "ae中的0 ▁" for k in (1, 2, 3, 4, 5, 7, 16, 33, 200, 3000)]
    words = word_list([row["text"] for row in dev_rows] + TRICKY + adversarial) + runs + ["", "\n", "a\nb", "\n\n\n"]
    assert len(words) > 50_000
    assert_words_encode_as_sentencepiece(encoder, processor, words)
    # Characters outside the vocabulary (byte fallback) are encoded by the loop, not handed back.
    rare = ["😀", "a😀b", " 𒀀𒀀"]
    lengths = np.empty(len(rare), np.int64)
    offsets, data = utf8_buffers(pa.array(rare))
    bpe.encode_words(data, offsets, encoder.char_ids, encoder.byte_ids, processor.unk_id(), encoder.pairs,
                     encoder.rank, processor.get_piece_size(), np.empty(data.size, np.int64), lengths)
    assert (lengths > 0).all()


def test_models_the_compiled_bpe_does_not_reproduce_are_left_to_sentencepiece(tmp_path):
    rows = python_source_rows(300_000)
    texts = [row["text"] for row in rows]
    config = TokenizerConfig(vocab_size=1200, character_coverage=0.999, export_hf=False, eval_bytes=0,
                             user_defined_symbols=["<tag>"])
    shards = write_shards(tmp_path / "kept", rows, 1)
    train_tokenizer(config, shards, str(tmp_path / "tokenizer"), log=lambda _: None)
    tokenizer = load_tokenizer(str(tmp_path / "tokenizer"))
    assert WordEncoder.of(tokenizer.processor) is None  # "<tag>" is matched whole before merging
    assert_flat_encoding_is_encode(tokenizer, texts[:20] + ["a<tag>b <tag> x<tag>"] + spaced_texts(200, seed=2))


def test_evaluation_on_heldout_documents(trained, dev_rows):
    _, _, _, report = trained
    evaluation = report["evaluation"]
    assert evaluation["documents"] == report["sample"]["heldout"]["docs"] > 50
    assert evaluation["unknown_tokens"] == 0
    assert evaluation["round_trip"]["failures"] == 0
    assert {"code", "encyclopedia"} <= set(evaluation["by_category"])
    assert {"en", "zh"} <= set(evaluation["by_lang"])
    # Even a 4,000-entry BPE must beat 2 bytes per token, and most Chinese characters (3 bytes)
    # must be single tokens, not byte fallback.
    assert evaluation["overall"]["bytes_per_token"] > 2.0
    assert evaluation["by_lang"]["zh"]["bytes_per_token"] > 2.0
    vocabulary = evaluation["vocabulary"]
    assert 0.1 < vocabulary["cjk_share"] < 0.9
    assert vocabulary["byte_pieces"] == 256
    assert vocabulary["whitespace_only_pieces"] > 0
    assert report["sample"]["sample"]["docs"] + evaluation["documents"] <= len(dev_rows)


def test_evaluate_tokenizer_reproduces_the_training_report(trained):
    config, shards, output, report = trained
    evaluation = evaluate_tokenizer(config, list(reversed(shards)), output, log=lambda _: None)
    assert evaluation["overall"] == report["evaluation"]["overall"]
    assert json.loads((Path(output) / "evaluation.json").read_text())["documents"] == evaluation["documents"]


def test_hf_export_gives_sentencepiece_ids_on_real_text(trained, dev_rows):
    tokenizers = pytest.importorskip("tokenizers")
    _, _, output, report = trained
    assert report["evaluation"]["hf_export"]["failures"] == 0
    tokenizer = load_tokenizer(output)
    hf = tokenizers.Tokenizer.from_file(str(Path(output) / "tokenizer.json"))
    hf.encode_special_tokens = True
    texts = [row["text"] for row in dev_rows] + TRICKY
    expected = tokenizer.encode(texts)
    got = [encoding.ids for encoding in hf.encode_batch(texts, add_special_tokens=False)]
    mismatched = [i for i, (a, b) in enumerate(zip(expected, got)) if a != b]
    assert mismatched == []
    assert hf.decode_batch(got[-len(TRICKY):], skip_special_tokens=False) == TRICKY


def test_training_is_deterministic_across_sharding(dev_rows, tmp_path):
    config = TokenizerConfig(vocab_size=2000, sample_bytes=500_000, eval_bytes=0, export_hf=False,
                             character_coverage=0.98)
    pieces, models = [], []
    for shards, threads in ((1, 1), (4, 2)):
        paths = write_shards(tmp_path / f"kept-{shards}", dev_rows[::-1] if shards > 1 else dev_rows, shards)
        output = tmp_path / f"out-{shards}"
        train_tokenizer(config.model_copy(update={"num_threads": threads}), paths, str(output),
                        log=lambda _: None)
        processor = load_tokenizer(str(output)).processor
        pieces.append([(processor.id_to_piece(i), processor.get_score(i)) for i in range(2000)])
        models.append((output / "tokenizer.model").read_bytes())
    assert pieces[0] == pieces[1]
    assert models[0] == models[1]  # the thread count is not written into the model


def test_trains_on_python_sources_without_shared_data(tmp_path):
    """Runs everywhere (no ../shared/data): real code in, exact round trips and export out."""
    rows = python_source_rows(600_000)
    shards = write_shards(tmp_path / "kept", rows, 2)
    has_tokenizers = importlib.util.find_spec("tokenizers") is not None
    config = TokenizerConfig(vocab_size=1500, character_coverage=0.999, holdout_fraction=0.1,
                             export_hf=has_tokenizers)
    report = train_tokenizer(config, shards, str(tmp_path / "tokenizer"), log=lambda _: None)
    evaluation = report["evaluation"]
    assert evaluation["documents"] > 0
    assert evaluation["round_trip"]["failures"] == evaluation["unknown_tokens"] == 0
    assert evaluation["hf_export"].get("failures", 0) == 0
    tokenizer = load_tokenizer(str(tmp_path / "tokenizer"))
    assert_flat_encoding_is_encode(tokenizer, [row["text"] for row in rows[:20]] + TRICKY + spaced_texts(300))
    indent = tokenizer.processor.piece_to_id("▁▁▁▁")
    assert indent != tokenizer.processor.unk_id()  # four-space indentation became one piece


def test_too_small_sample_fails_with_a_clear_message(tmp_path):
    shards = write_shards(tmp_path / "kept", synthetic_rows(20), 1)
    with pytest.raises(ValueError, match="could not train"):
        train_tokenizer(TokenizerConfig(vocab_size=60_000, export_hf=False), shards,
                        str(tmp_path / "out"), log=lambda _: None)
    empty = TokenizerConfig(category_weights={"web": 0.0, "code": 0.0})
    with pytest.raises(ValueError, match="sample is empty"):
        train_tokenizer(empty, shards, str(tmp_path / "out"), log=lambda _: None)
