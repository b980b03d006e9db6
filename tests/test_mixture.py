"""The mixture builder on the sample run's dedup output, tokenized with the tokenizer trained on it.

Covers the exact composition table, the phase plan (deterministic, disjoint, running out reported,
epochs), packing (decoding gives back the selected documents in order with separators; no token lost or
duplicated across shards), the training-shard reader (resumable), the Megatron export, resuming, and
identical output on Ray and in-process.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from conftest import sample_config
from mixture import MixtureConfig, run_mixture
from mixture.hashing import first_bins, piece_bins, sampling_bins, shuffle_keys
from mixture.packing import run_bytes, run_token_ids
from mixture.phases import plan_phases
from pipeline.config import ConfigError
from pipeline.executor import InProcessExecutor, RayExecutor
from pipeline.steps import finished_shards
from tokenizer.step import tokenizer_dir, train_tokenizer_step
from tokenizer import TrainingShards, load_tokenizer

SMALL_ROWS = {"seq_len": 63, "sequences_per_shard": 200}  # many rows and shards from a small corpus


@pytest.fixture(scope="module")
def corpus(sample_run, tmp_path_factory) -> Path:
    """A copy of the sample run (dedup output and tokenizer) without any mixture output."""
    work_dir, config, _ = sample_run
    train_tokenizer_step(config, log=lambda _: None)  # a no-op when the run trained it already
    copy = tmp_path_factory.mktemp("mixture-corpus") / "work"
    shutil.copytree(work_dir, copy, ignore=shutil.ignore_patterns("mixture"))
    return copy


@pytest.fixture(scope="module")
def documents(corpus) -> dict[str, dict]:
    """Every document of the corpus by id."""
    config = sample_config(corpus)
    rows = [row for path in finished_shards(config, "dedup") for row in pq.read_table(path).to_pylist()]
    return {row["id"]: row for row in rows}


def build(corpus: Path, directory: Path, mixture: dict, executor=None, **kwargs):
    """Run the mixture on a copy of ``corpus`` in ``directory``; (config, result, log lines)."""
    if not directory.exists():
        shutil.copytree(corpus, directory)
    config = sample_config(directory, mixture=mixture)
    lines: list[str] = []
    result = run_mixture(config, executor or InProcessExecutor(), log=lines.append, **kwargs)
    return config, result, lines


def read_phase(work_dir: Path, phase: str) -> list[tuple[np.ndarray, list[int], list[str]]]:
    """Per training shard of ``phase``: its real tokens in order, segment starts and ids (stream offsets)."""
    shards = TrainingShards(str(work_dir / "mixture"), phase)
    result = []
    for shard in shards.phase["shards"]:
        table = pq.read_table(work_dir / "mixture" / shard["path"])
        width = shards.seq_len + 1
        tokens = table.column("tokens").combine_chunks().flatten().to_numpy().reshape(-1, width)
        stream, starts, ids = [], [], []
        for index, row in enumerate(table.to_pylist()):
            for start, doc_id in zip(row["segment_starts"], row["segment_ids"]):
                if not (start == 0 and ids and ids[-1] == doc_id):  # a continuation, not a new document
                    starts.append(index * width + start)
                    ids.append(doc_id)
            stream.append(tokens[index, : row["n_tokens"]])
            assert (tokens[index, row["n_tokens"]:] == shards.pad_id).all()
        result.append((np.concatenate(stream) if stream else np.array([], np.uint16), starts, ids))
    return result


def token_rows(work_dir: Path) -> dict[tuple[str, int], dict]:
    """Every row of the mixture's token files (a piece of a document; a short document is one piece)
    by (document id, piece)."""
    table = pq.read_table(sorted((work_dir / "mixture" / "tokens").glob("*.parquet")))
    rows = table.select(["id", "piece", "pieces", "category", "lang", "n_tokens", "bin"]).to_pylist()
    ids, starts = run_token_ids(table.column("tokens").combine_chunks(), np.uint16)
    for row, start, end in zip(rows, starts[:-1], starts[1:]):
        row["tokens"] = ids[start:end].tolist()
    return {(row["id"], row["piece"]): row for row in rows}


def run_pieces(label: str, pieces: dict[tuple[str, int], dict]) -> tuple[str, list[int]]:
    """The document and pieces of a segment id: ``<id>`` is the whole document, ``<id>#<a>-<b>`` its
    pieces a..b."""
    if (label, 0) in pieces:
        return label, list(range(pieces[(label, 0)]["pieces"]))
    doc_id, span = label.rsplit("#", 1)
    first, last = (int(number) for number in span.split("-"))
    count = pieces[(doc_id, 0)]["pieces"]
    assert 0 <= first <= last < count and (first, last) != (0, count - 1)
    return doc_id, list(range(first, last + 1))


def selected_pieces(phase: dict, pieces: dict[tuple[str, int], dict]) -> dict[int, set[tuple[str, int]]]:
    """Per epoch, the pieces whose sampling bin lies in the phase's segments (from the plan alone)."""
    chosen: dict[int, set] = {}
    for key, row in pieces.items():
        for group in phase["groups"]:
            if group["category"] == row["category"] and group["lang"] in (None, row["lang"]):
                for epoch, low, high in group["segments"]:
                    if low <= row["bin"] < high:
                        chosen.setdefault(epoch, set()).add(key)
    return chosen


def config_seq_len(config) -> int:
    return MixtureConfig(**config.mixture).seq_len


# --- configuration -----------------------------------------------------------------------------


def test_config_errors_name_the_key():
    raw = {"work_dir": "w", "inputs": [{"name": "a", "path": "a.jsonl", "category": "web"}]}
    from pipeline.config import parse_config

    with pytest.raises(ConfigError, match=r"mixture\.phases\.0\.weights\.webb"):
        parse_config({**raw, "mixture": {"phases": [{"weights": {"webb": 1.0}}]}})
    with pytest.raises(ConfigError, match=r"mixture\.seq_lne: unknown key"):
        parse_config({**raw, "mixture": {"seq_lne": 10}})
    with pytest.raises(ValidationError, match="max_epochs must be >= 1"):
        MixtureConfig(max_epochs={"books": 0.5})
    with pytest.raises(ValidationError, match="distinct"):
        MixtureConfig(phases=[{"name": "a"}, {"name": "a"}])
    with pytest.raises(ValidationError, match="without a weight"):
        MixtureConfig(phases=[{"weights": {"web": 1.0}, "languages": {"code": {"en": 1.0}}}])
    with pytest.raises(ValidationError, match="at least one weight"):
        MixtureConfig(phases=[{"weights": {"web": 0.0}}])
    assert MixtureConfig().seq_len == 2048 and MixtureConfig().phases[0].weights["web"] == 75.1


# --- the planner, on histograms ------------------------------------------------------------------


def test_plan_is_exact_disjoint_and_says_when_a_category_runs_out():
    bins = 16
    histograms = {"web/en": np.full(bins, 100), "books/en": np.full(bins, 20)}
    phases = [{"name": "one", "tokens": 1000, "weights": {"web": 0.8, "books": 0.2}},
              {"name": "two", "tokens": 1000, "weights": {"web": 0.8, "books": 0.2}}]
    warnings: list[str] = []
    plan = plan_phases(MixtureConfig(sampling_bins=bins, phases=phases), histograms, warn=warnings.append)
    one, two = plan
    assert one["categories"]["web"]["tokens"] == 800 and one["categories"]["books"]["tokens"] == 200
    assert [g["segments"] for g in one["groups"]] == [[[0, 0, 8]], [[0, 0, 10]]]
    # Phase two starts where phase one stopped; books has 120 tokens left of the 200 it wants.
    assert [g["segments"] for g in two["groups"]] == [[[0, 8, 16]], [[0, 10, 16]]]
    books = two["categories"]["books"]
    assert books["ran_out"] and books["tokens"] == 120 and books["shortfall_tokens"] == 80
    assert books["weight"] == pytest.approx(120 / 920) and books["cumulative_epochs"] == 1.0
    assert not two["categories"]["web"]["ran_out"] and two["categories"]["web"]["cumulative_epochs"] == 1.0
    assert warnings == ["mixture: phase two: books ran out: 200 tokens wanted, 120 left (max_epochs 1); "
                        "its weight is 13.04% against a target of 20.00%"]

    again = plan_phases(MixtureConfig(sampling_bins=bins, phases=phases, max_epochs={"books": 3}), histograms)
    books = again[1]["categories"]["books"]
    assert not books["ran_out"] and books["reuses_documents"] and books["cumulative_epochs"] == 1.25
    assert [g["segments"] for g in again[1]["groups"]] == [[[0, 8, 16]], [[0, 10, 16], [1, 0, 4]]]

    largest = plan_phases(MixtureConfig(sampling_bins=bins, phases=[{"weights": {"web": 0.5, "books": 0.5}}]),
                          histograms)
    assert largest[0]["budget"] == 640 and largest[0]["categories"]["books"]["tokens"] == 320
    assert not largest[0]["categories"]["books"]["ran_out"]

    # A category the corpus lacks, and a phase after everything was used: said, not silently empty.
    warnings.clear()
    lacking = plan_phases(MixtureConfig(sampling_bins=bins, phases=[
        *phases, {"name": "three", "tokens": 100, "weights": {"code": 0.5, "web": 0.5}},
        {"name": "four", "weights": {"web": 1.0}}]), histograms, warn=warnings.append)
    assert lacking[2]["categories"]["code"]["ran_out"] and lacking[2]["categories"]["code"]["shortfall_tokens"] == 50
    assert lacking[3]["tokens"] == 0 and lacking[3]["categories"]["web"]["ran_out"]
    assert "mixture: phase four is empty: none of its categories has anything left" in warnings


def test_plan_takes_the_nearest_bin_boundary_and_splits_by_language():
    padding = [0] * 11
    histograms = {"web/en": np.array([5, 0, 50, 5, 40] + padding), "web/zh": np.array([30, 30, 30, 0, 10] + padding)}
    config = MixtureConfig(sampling_bins=16, phases=[
        {"name": "a", "tokens": 120, "weights": {"web": 1.0}},
        {"name": "b", "tokens": 60, "weights": {"web": 1.0}, "languages": {"web": {"zh": 1.0}}}])
    a, b = plan_phases(config, histograms)
    # One tape for web (en + zh): 35, 65, 145: 120 is nearer 145 than 65.
    assert a["groups"] == [{"category": "web", "lang": None, "target_tokens": 120, "tokens": 145,
                            "available_tokens": 200, "cut_documents": 0, "segments": [[0, 0, 3]]}]
    assert b["groups"][0]["lang"] == "zh" and b["groups"][0]["tokens"] == 10  # all zh had left
    assert b["groups"][0]["segments"] == [[0, 3, 16]]
    assert b["categories"]["web"]["ran_out"]


def test_plan_counts_the_separator_of_each_document_a_range_end_cuts():
    """Histograms count one separator per document (on its last piece); a range of bins that ends
    inside a document's bins ends its run early, with a separator of its own: the plan counts it, and
    the documents cut at either end of the range."""
    bins = 16
    histograms = {"books/en": np.full(bins, 100)}
    crossings = {"books/en": np.array([0, 0, 0, 0, 2, 0, 1, 0, 3] + [0] * 7)}  # into bins 4, 6 and 8
    phases = [{"name": "one", "tokens": 400, "weights": {"books": 1.0}},
              {"name": "two", "tokens": 400, "weights": {"books": 1.0}},
              {"name": "three", "weights": {"books": 1.0}}]
    one, two, three = plan_phases(MixtureConfig(sampling_bins=bins, phases=phases), histograms, crossings=crossings)
    assert [g["segments"] for p in (one, two, three) for g in p["groups"]] == [[[0, 0, 4]], [[0, 4, 8]], [[0, 8, 16]]]
    # one ends inside the 2 documents crossing into bin 4; two starts inside them, ends inside 3.
    assert [p["groups"][0]["cut_documents"] for p in (one, two, three)] == [2, 5, 3]
    assert [p["tokens"] for p in (one, two, three)] == [402, 403, 800]
    # Without crossings (every document one piece) nothing is cut.
    plain = plan_phases(MixtureConfig(sampling_bins=bins, phases=phases), histograms)
    assert [p["tokens"] for p in plain] == [400, 400, 800] and not any(p["groups"][0]["cut_documents"] for p in plain)


# --- the built mixture -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(corpus, tmp_path_factory):
    """Two phases with short rows, built in-process."""
    mixture = {**SMALL_ROWS, "phases": [
        {"name": "first", "tokens": 40_000, "weights": {"web": 0.5, "encyclopedia": 0.3, "code": 0.2}},
        {"name": "second", "weights": {"web": 0.4, "encyclopedia": 0.4, "papers": 0.2}}]}
    return build(corpus, tmp_path_factory.mktemp("small") / "work", mixture)


def test_token_counts_are_exact_and_the_table_reads_like_table_1(small, documents):
    config, result, lines = small
    tokenizer = load_tokenizer(tokenizer_dir(config))
    expected: dict[str, Counter] = {}
    texts = [row["text"] for row in documents.values()]
    for row, ids in zip(documents.values(), tokenizer.encode(texts)):
        counts = expected.setdefault(row["category"], Counter())
        counts.update(tokens=len(ids), documents=1, bytes=len(row["text"].encode()))
    table = result["composition"]
    for row in table["by_category"]:
        assert {k: row[k] for k in ("tokens", "documents", "bytes")} == {
            k: expected.get(row["category"], Counter())[k] for k in ("tokens", "documents", "bytes")}
    assert sum(row["share"] for row in table["by_category"]) == pytest.approx(1.0)
    assert sum(row["share"] for row in table["by_lang"]) == pytest.approx(1.0)
    assert sum(row["tokens"] for row in table["by_lang"]) == table["total"]["tokens"]
    output = Path(config.work_dir) / "mixture"
    markdown = (output / "composition.md").read_text()
    assert "| Category | Tokens | Share | Documents | Bytes |" in markdown
    web = next(row for row in table["by_category"] if row["category"] == "web")
    assert f"| Web | {web['tokens']:,} | {web['share']:.1%} | {web['documents']:,} |" in markdown
    assert "| Academic papers |" in markdown and "| **Total** |" in markdown
    assert (output / "composition.csv").read_text().startswith("table,key,tokens,share,documents,bytes")
    assert (output / "composition.svg").read_text().startswith("<svg") and (output / "phases.svg").exists()
    assert any("| Web |" in line for line in lines)  # the table is printed


def test_phases_take_exactly_the_planned_documents_and_never_the_same_twice(small, documents):
    config, result, _ = small
    selected = {}
    pieces = token_rows(Path(config.work_dir))
    assert {doc_id for doc_id, _ in pieces} == set(documents)
    # Bins come from the ids alone: a document's first bin, then one bin per piece.
    ids, numbers, counts = zip(*((doc_id, piece, row["pieces"]) for (doc_id, piece), row in pieces.items()))
    first = first_bins(0, ids, counts, MixtureConfig().sampling_bins)
    assert list(piece_bins(first, np.array(numbers), MixtureConfig().sampling_bins)) == [
        row["bin"] for row in pieces.values()]
    whole = [key for key, row in pieces.items() if row["pieces"] == 1]
    assert [pieces[key]["bin"] for key in whole] == list(sampling_bins(0, [doc_id for doc_id, _ in whole],
                                                                       MixtureConfig().sampling_bins))
    for phase in result["phases"]:
        labels = [label for _, _, shard_ids in read_phase(Path(config.work_dir), phase["name"]) for label in shard_ids]
        assert len(labels) == len(set(labels))  # no epochs allowed: each document (or part) at most once
        taken = [(doc_id, piece) for label in labels for doc_id, numbers in [run_pieces(label, pieces)]
                 for piece in numbers]
        assert len(taken) == len(set(taken))
        # Recompute the selection from the ids alone: sampling bin inside the phase's segments.
        assert {0: set(taken)} == selected_pieces(phase, pieces)
        selected[phase["name"]] = set(taken)
        realised = Counter(pieces[(run_pieces(label, pieces)[0], 0)]["category"] for label in labels)
        assert {c: row["documents"] for c, row in phase["categories"].items() if row["documents"]} == dict(realised)
    assert not selected["first"] & selected["second"]
    assert result["phases"][0]["tokens"] == pytest.approx(40_000, rel=0.15)
    assert not any(row["ran_out"] for phase in result["phases"] for row in phase["categories"].values())


def test_long_documents_are_split_into_pieces_that_add_up_to_them(small, documents):
    config, _, _ = small
    tokenizer = load_tokenizer(tokenizer_dir(config))
    settings = MixtureConfig(**config.mixture)
    limit = settings.max_piece_tokens
    split: dict[str, list[dict]] = {}
    for (doc_id, _), row in token_rows(Path(config.work_dir)).items():
        if row["pieces"] > 1:
            split.setdefault(doc_id, []).append(row)
    assert split, "the sample has documents longer than max_piece_tokens"
    for doc_id, rows in split.items():
        rows.sort(key=lambda row: row["piece"])
        assert [row["piece"] for row in rows] == list(range(rows[0]["pieces"]))
        # Consecutive bins, all on one pass of the tape: no document crosses its end.
        assert [row["bin"] for row in rows] == list(range(rows[0]["bin"], rows[0]["bin"] + len(rows)))
        assert rows[-1]["bin"] < settings.sampling_bins
        assert all(row["n_tokens"] == len(row["tokens"]) <= limit for row in rows)
        assert all(row["n_tokens"] >= limit // 2 for row in rows[:-1])
        whole = [token for row in rows for token in row["tokens"]]
        assert whole == tokenizer.encode([documents[doc_id]["text"]])[0]
        texts = [tokenizer.decode(row["tokens"]) for row in rows]
        assert "".join(texts) == documents[doc_id]["text"]
        # Cut at a line end where the text has one in the window: every piece but the last ends a line.
        if documents[doc_id]["text"].count("\n") > 2 * len(rows):
            assert all(text.endswith("\n") for text in texts[:-1])


def test_packed_sequences_decode_to_the_documents_in_order_with_separators(small, documents):
    config, result, _ = small
    tokenizer = load_tokenizer(tokenizer_dir(config))
    pieces = token_rows(Path(config.work_dir))
    for phase, entry in zip(result["phases"], result["manifest"]["phases"]):
        shards = read_phase(Path(config.work_dir), phase["name"])
        assert len(shards) == phase["shards"] > 1
        total = 0
        for index, ((stream, starts, ids), shard) in enumerate(zip(shards, entry["shards"])):
            assert len(stream) == shard["tokens"] and len(ids) == shard["documents"]
            runs = [run_pieces(label, pieces) for label in ids]
            assert shard["partial_documents"] == sum(label not in documents for label in ids)
            # Dealt and ordered by the shuffle hash of (seed, phase, epoch, document id), whoever packed them.
            keys = shuffle_keys(0, phase["name"], 0, [doc_id for doc_id, _ in runs])
            assert (keys % np.uint64(phase["shards"]) == index).all() and (keys[1:] >= keys[:-1]).all()
            # The stream is the runs (documents, or consecutive pieces of one), each followed by the
            # separator, nothing else.
            ends = np.flatnonzero(stream == tokenizer.eod_id)
            assert list(ends + 1) == starts[1:] + [len(stream)]
            segments = np.split(stream, ends + 1)[:-1]
            for label, (doc_id, numbers), segment in zip(ids, runs, segments):
                assert segment[-1] == tokenizer.eod_id
                joined = [token for piece in numbers for token in pieces[(doc_id, piece)]["tokens"]]
                assert segment[:-1].tolist() == joined
                if label == doc_id:  # a whole document, however many pieces
                    assert tokenizer.decode(segment[:-1].tolist()) == documents[doc_id]["text"]
                    assert segment[:-1].tolist() == tokenizer.encode([documents[doc_id]["text"]])[0]
            total += len(stream)
        # Every token the plan chose is in exactly one shard: none lost, none duplicated.
        assert total == phase["tokens"] == entry["tokens"]
        assert entry["sequences"] * (config_seq_len(config) + 1) == entry["tokens"] + entry["pad_tokens"]


def test_a_long_document_a_phase_takes_whole_is_its_exact_tokens_and_one_separator(small, documents):
    """A document of several pieces, taken whole, is one stretch of the stream: its token sequence, no
    end-of-document id inside it, one after it, across as many rows as it needs, named by one segment
    per row, which a reader sees as one document."""
    config, result, _ = small
    tokenizer = load_tokenizer(tokenizer_dir(config))
    width = config_seq_len(config) + 1
    pieces = token_rows(Path(config.work_dir))
    long = {doc_id: row for (doc_id, piece), row in pieces.items() if piece == 0 and row["pieces"] > 1}
    # From the plan: the long documents whose bins all lie in one of a phase's ranges.
    inside = {(phase["name"], doc_id) for phase in result["phases"] for doc_id, row in long.items()
              for group in phase["groups"] if group["category"] == row["category"]
              and group["lang"] in (None, row["lang"]) for _, low, high in group["segments"]
              if low <= row["bin"] and row["bin"] + row["pieces"] <= high}
    checked = set()
    for phase in result["phases"]:
        shards = TrainingShards(str(Path(config.work_dir) / "mixture"), phase["name"])
        streams = read_phase(Path(config.work_dir), phase["name"])
        for (stream, starts, ids), shard in zip(streams, shards.phase["shards"]):
            table = pq.read_table(Path(config.work_dir) / "mixture" / shard["path"]).to_pylist()
            for label, start, end in zip(ids, starts, starts[1:] + [len(stream)]):
                count = pieces.get((label, 0), {}).get("pieces", 1)
                if count == 1:
                    continue
                expected = tokenizer.encode([documents[label]["text"]])[0]
                assert stream[start:end].tolist() == expected + [tokenizer.eod_id]
                assert tokenizer.eod_id not in expected
                # Rows start..end - 1 each name it once: at its start, then at 0 in every further row.
                for row in range(start // width, (end - 1) // width + 1):
                    offset = max(start - row * width, 0)
                    assert [doc for at, doc in zip(table[row]["segment_starts"], table[row]["segment_ids"])
                            if at == offset] == [label]
                    assert table[row]["segment_ids"].count(label) == 1
                checked.add((phase["name"], label))
                assert len(expected) > MixtureConfig(**config.mixture).max_piece_tokens and end - start > 2 * width
    assert checked == inside and checked, "the sample has long documents the phases take whole"


def test_reader_yields_numpy_batches_and_resumes_at_any_position(small):
    config, result, _ = small
    shards = TrainingShards(str(Path(config.work_dir) / "mixture"), "first")
    batches = list(shards.batches(batch_size=7))
    assert sum(len(b.tokens) for b in batches) == len(shards) == result["manifest"]["phases"][0]["sequences"]
    assert batches[0].tokens.dtype == np.uint16 and batches[0].tokens.shape == (7, config_seq_len(config) + 1)
    assert all(b.start == i * 7 for i, b in enumerate(batches))
    shard_rows = result["manifest"]["phases"][0]["shards"][0]["sequences"]
    for resume in (batches[3].end, shard_rows - 2, shard_rows):  # mid-shard, across a shard boundary
        index = next(i for i, b in enumerate(batches) if b.start <= resume < b.end)
        resumed = list(shards.batches(batch_size=7, start=resume))
        expected = np.concatenate([b.tokens for b in batches])[resume:]
        assert np.array_equal(np.concatenate([b.tokens for b in resumed]), expected)
        if resume == batches[index].start:
            assert all(np.array_equal(a.tokens, b.tokens) and a.segment_ids == b.segment_ids
                       for a, b in zip(resumed, batches[index:]))
    assert all(len(b.tokens) == 7 for b in shards.batches(batch_size=7, drop_last=True))
    assert list(shards.batches(batch_size=7, start=len(shards))) == []
    with pytest.raises(KeyError, match="no phase"):
        TrainingShards(str(Path(config.work_dir) / "mixture"), "nope")


def test_a_category_that_runs_out_is_reported_and_epochs_repeat_it_when_allowed(corpus, tmp_path, documents):
    phases = [{"name": "one", "tokens": 30_000, "weights": {"books": 0.5, "web": 0.5}},
              {"name": "two", "tokens": 30_000, "weights": {"books": 0.5, "web": 0.5}}]
    _, result, lines = build(corpus, tmp_path / "work", {**SMALL_ROWS, "phases": phases})
    books = result["phases"][1]["categories"]["books"]
    assert books["ran_out"] and books["shortfall_tokens"] > 0 and books["weight"] < 0.5
    assert any("phase two: books ran out" in line for line in lines)
    assert "**ran out**" in (tmp_path / "work" / "mixture" / "phases.md").read_text()

    _, result, lines = build(corpus, tmp_path / "work", {**SMALL_ROWS, "phases": phases, "max_epochs": {"books": 3}})
    assert any("plan changed" in line for line in lines)
    books = result["phases"][1]["categories"]["books"]
    assert not books["ran_out"] and books["reuses_documents"] and books["cumulative_epochs"] > 1
    pieces = token_rows(tmp_path / "work")
    one, two = ({(doc_id, piece) for _, _, ids in read_phase(tmp_path / "work", name) for label in ids
                 for doc_id, numbers in [run_pieces(label, pieces)] for piece in numbers} for name in ("one", "two"))
    assert one & two and all(pieces[key]["category"] == "books" for key in one & two)


def test_megatron_export_holds_the_same_documents(corpus, tmp_path):
    config, result, _ = build(corpus, tmp_path / "work", {**SMALL_ROWS, "megatron": True,
                                                          "phases": [{"tokens": 20_000}]})
    for (stream, starts, ids), shard in zip(read_phase(tmp_path / "work", "pretrain"),
                                            result["manifest"]["phases"][0]["shards"]):
        prefix = tmp_path / "work" / "mixture" / shard["path"][: -len(".parquet")]
        index = Path(f"{prefix}.idx").read_bytes()
        assert index[:9] == b"MMIDIDX\x00\x00"
        version, code, sequences, entries = struct.unpack("<QBQQ", index[9:34])
        assert (version, code, sequences, entries) == (1, 8, len(ids), len(ids) + 1)
        sizes = np.frombuffer(index, np.int32, sequences, 34)
        pointers = np.frombuffer(index, np.int64, sequences, 34 + 4 * sequences)
        assert list(sizes) == list(np.diff(starts + [len(stream)]))
        assert list(pointers) == [2 * start for start in starts]
        assert np.array_equal(np.fromfile(f"{prefix}.bin", np.uint16), stream)


def test_ray_and_in_process_give_identical_shards_and_reruns_resume(sample_run, corpus, tmp_path):
    work_dir, config, _ = sample_run
    executor = RayExecutor(config.ray)
    on_ray = run_mixture(config, executor, log=lambda _: None)  # sample.yaml's mixture: the sample run's own
    _, in_process, _ = build(corpus, tmp_path / "work", sample_config(work_dir).mixture)
    assert on_ray["manifest"] == in_process["manifest"] and on_ray["phases"] == in_process["phases"]
    for phase in on_ray["manifest"]["phases"]:
        assert len(phase["shards"]) > 1
        for shard in phase["shards"]:
            assert pq.read_table(work_dir / "mixture" / shard["path"]).equals(
                pq.read_table(tmp_path / "work" / "mixture" / shard["path"]))

    # A rerun does no work; a lost training shard is packed again, alone.
    _, _, lines = build(corpus, tmp_path / "work", sample_config(work_dir).mixture)
    assert any(f"({len(finished_shards(config, 'dedup'))} already counted)" in line for line in lines)
    assert any("packing 0 training shards" in line for line in lines)
    shards = sorted((tmp_path / "work" / "mixture" / "shards" / "pretrain").glob("*.parquet"))
    before = {path.name: path.stat().st_mtime_ns for path in shards}
    shards[1].unlink()
    _, again, lines = build(corpus, tmp_path / "work", sample_config(work_dir).mixture)
    assert any("packing 1 training shards" in line for line in lines)
    assert again["manifest"] == in_process["manifest"]
    after = {path.name: path.stat().st_mtime_ns for path in sorted(shards[0].parent.glob("*.parquet"))}
    assert [name for name in before if before[name] != after[name]] == [shards[1].name]
    _, _, lines = build(corpus, tmp_path / "work", sample_config(work_dir).mixture, force=True)
    assert any("(0 already counted)" in line for line in lines)



# --- one very long document ------------------------------------------------------------------------

LONG_PAGE_ID = "long-web-page"


def long_web_page(shared_data: Path, size: int = 400_000) -> str:
    """About ``size`` bytes of distinct natural paragraphs, one per line: the unwrapped paragraphs of
    Frankenstein (Project Gutenberg, public domain, from corpus-dev). It passes every filter."""
    table = pq.read_table(shared_data / "corpus-dev" / "part-00008.parquet",
                          filters=[("id", "=", "gutenberg/pg84.txt")])
    paragraphs = [" ".join(block.split()) for block in table.column("text")[0].as_py().split("\n\n")]
    chosen, total = [], 0
    # Prose only: the table of contents is one long line without a full stop, which rules would drop.
    for paragraph in (p for p in paragraphs if len(p) >= 80 and p[-1] in ".!?;\"”’"):
        chosen.append(paragraph)
        total += len(paragraph.encode()) + 1
        if total >= size:
            break
    return "\n".join(chosen)


@pytest.fixture(scope="module")
def long_page_run(shared_data, tmp_path_factory):
    """The sample pipeline (configs/sample.yaml) run in-process with one ~400 KB web page added."""
    import yaml

    from conftest import SAMPLE_CONFIG
    from pipeline.runner import run_pipeline

    directory = tmp_path_factory.mktemp("long-page")
    text = long_web_page(shared_data)
    page = directory / "long.jsonl"
    page.write_text(json.dumps({"id": LONG_PAGE_ID, "text": text}) + "\n", encoding="utf-8")
    inputs = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))["inputs"]
    inputs.append({"name": "long_web", "path": str(page), "category": "web", "id_field": "id"})
    config = sample_config(directory / "work", inputs=inputs)
    lines: list[str] = []
    run_pipeline(config, use_ray=False, log=lines.append)
    return config, inputs, text, lines


def test_a_400_kb_document_leaves_every_weight_within_a_point_of_its_target(long_page_run):
    config, _, text, lines = long_page_run
    work_dir = Path(config.work_dir)
    assert len(text.encode()) >= 400_000
    kept = {row["id"]: row["text"] for path in finished_shards(config, "dedup")
            for row in pq.read_table(path, columns=["id", "text"]).to_pylist()}
    long_id = next(doc_id for doc_id in kept if doc_id.endswith(LONG_PAGE_ID))
    assert kept[long_id] == text  # it passed every filter, untouched

    settings = MixtureConfig(**config.mixture)
    rows = [row for row in token_rows(work_dir).values() if row["id"] == long_id]
    assert len(rows) > 100 and all(row["n_tokens"] <= settings.max_piece_tokens for row in rows)
    phases = {phase["name"]: phase for phase in json.loads((work_dir / "mixture" / "phases.json").read_text())}
    pretrain = phases["pretrain"]["categories"]
    # Before pieces: web took 14,210 of its 100,879 target tokens (29.7% of the mix instead of 75.1%).
    for category, row in pretrain.items():
        assert abs(row["weight"] - row["target_weight"]) <= 0.01, (category, row)
        assert not row["off_target"] and not row["ran_out"]
    assert pretrain["web"]["tokens"] == pytest.approx(pretrain["web"]["target_tokens"], rel=0.02)
    # Anneal has a fixed budget and papers has too little left for it: off, and said so.
    markdown = (work_dir / "mixture" / "phases.md").read_text()
    for category, row in phases["anneal"]["categories"].items():
        if abs(row["weight"] - row["target_weight"]) > 0.01:
            assert row["ran_out"] or (row["off_target"] and "ran out" in row["off_target_because"])
    short = [category for category, row in phases["anneal"]["categories"].items() if row["ran_out"]]
    assert all(any(f"phase anneal: {category} ran out" in line for line in lines) for category in short)
    assert "**ran out**" in markdown and ("**off target** by" in markdown) == any(
        row["off_target"] for row in phases["anneal"]["categories"].values())


def test_bins_too_coarse_for_the_budget_are_a_warning_and_a_note(long_page_run, tmp_path):
    """With pieces as large as the long page (the behaviour before pieces), its bin alone is ~100,000
    tokens: whether pretrain takes it or stops before it, web's weight misses its target by far more
    than a point, and the plan must say so rather than stay silent."""
    config, inputs, _, _ = long_page_run
    shutil.copytree(config.work_dir, tmp_path / "work", ignore=shutil.ignore_patterns("mixture"))
    coarse = sample_config(tmp_path / "work", inputs=inputs,
                           mixture={**config.mixture, "max_piece_tokens": 1_000_000})
    lines: list[str] = []
    result = run_mixture(coarse, InProcessExecutor(), log=lines.append)
    web = next(phase for phase in result["phases"] if phase["name"] == "pretrain")["categories"]["web"]
    assert web["off_target"] and not web["ran_out"] and abs(web["weight"] - web["target_weight"]) > 0.01
    assert any(line.startswith("mixture: phase pretrain: web's weight is") and "too coarse" in line for line in lines)
    assert "**off target** by" in (tmp_path / "work" / "mixture" / "phases.md").read_text()


def expected_runs(phase: dict, pieces: dict[tuple[str, int], dict]) -> Counter:
    """The segment ids a phase's shards must hold, from the plan alone: per epoch, the maximal runs of
    consecutive pieces of one document among the pieces its segments select."""
    labels: Counter = Counter()
    for chosen in selected_pieces(phase, pieces).values():
        for doc_id, piece in chosen:
            if (doc_id, piece - 1) in chosen:
                continue
            last = piece
            while (doc_id, last + 1) in chosen:
                last += 1
            whole = piece == 0 and last == pieces[(doc_id, 0)]["pieces"] - 1
            labels[doc_id if whole else f"{doc_id}#{piece}-{last}"] += 1
    return labels


def test_a_phase_takes_part_of_a_document_only_where_its_bins_begin_or_end(long_page_run):
    """The fragmentation bound: a phase takes a range of consecutive bins per category (language) and
    epoch, so it takes part of a document only when one end of such a range falls strictly inside the
    document's bins; per draw, at most ``cut_documents`` documents (the crossings at its range ends)."""
    config, _, _, _ = long_page_run
    work_dir = Path(config.work_dir)
    pieces = token_rows(work_dir)
    bins = MixtureConfig(**config.mixture).sampling_bins
    span = {doc_id: (row["bin"], row["bin"] + row["pieces"]) for (doc_id, piece), row in pieces.items() if piece == 0}
    plan = json.loads((work_dir / "mixture" / "plan.json").read_text())["phases"]
    report = {phase["name"]: phase for phase in json.loads((work_dir / "mixture" / "phases.json").read_text())}
    measured = {}
    for phase in plan:
        labels = Counter(label for _, _, ids in read_phase(work_dir, phase["name"]) for label in ids)
        assert labels == expected_runs(phase, pieces)
        partial = [label for label in labels.elements() if (label, 0) not in pieces]
        for group in phase["groups"]:
            owner = {label: pieces[(label.rsplit("#", 1)[0], 0)] for label in partial}
            cut_here = [label for label in partial if owner[label]["category"] == group["category"]
                        and group["lang"] in (None, owner[label]["lang"])]
            ends = {end % bins for _, low, high in group["segments"] if (low, high) != (0, bins) for end in (low, high)}
            for label in cut_here:  # a range end falls strictly inside the document's bins
                low, high = span[label.rsplit("#", 1)[0]]
                assert any(low < end < high for end in ends), (phase["name"], label)
            assert len(cut_here) <= group["cut_documents"]
        for category, row in report[phase["name"]]["categories"].items():
            assert row["partial_documents"] == sum(pieces[(label.rsplit("#", 1)[0], 0)]["category"] == category
                                                   for label in partial)
        split = [label for label in labels.elements() if pieces.get((label, 0), {}).get("pieces", 1) > 1]
        measured[phase["name"]] = {"runs": sum(labels.values()), "whole_split_documents": len(split),
                                   "partial": len(partial),
                                   "cut_bound": sum(group["cut_documents"] for group in phase["groups"])}
        # The 400 KB page (136 pieces): in one run wherever a phase takes it.
        long_runs = [label for label in labels if label.split("#")[0].endswith(LONG_PAGE_ID)]
        assert len(long_runs) <= 1 and all(label.endswith(LONG_PAGE_ID) or "#0-" in label for label in long_runs)
    # Measured (seed 0): pretrain 102 runs, 1 in part (pieces 0-79 of the page's 136: its web range
    # ends inside it); anneal 68 runs, 1 in part (a two-piece book its books range ends inside).
    assert all(row["partial"] <= row["cut_bound"] <= 1 for row in measured.values()), measured


def test_scatter_joins_the_consecutive_pieces_of_a_document_into_runs():
    """Pieces taken in one epoch and consecutive become one run; a gap or another epoch starts another.
    Runs of one document in one epoch share its shuffle key and follow each other in piece order."""
    import pyarrow as pa

    from mixture.packing import _deal
    from mixture.hashing import segment_labels

    table = pa.table({
        "id": ["a"] * 5 + ["b"] + ["c"] * 3, "piece": pa.array([0, 1, 2, 3, 4, 0, 0, 1, 2], pa.int32()),
        "pieces": pa.array([5] * 5 + [1] + [3] * 3, pa.int32()), "category": ["web"] * 9,
        "n_tokens": pa.array([2, 2, 2, 2, 1, 3, 1, 1, 1], pa.int64()),
        "tokens": run_bytes(pa.array([[1, 2], [3, 4], [5, 6], [7, 8], [9], [10, 11, 12], [13], [14], [15]],
                                     pa.large_list(pa.uint16())))})
    rows = np.array([8, 1, 2, 5, 4, 6, 7, 0]); epochs = np.array([0, 0, 0, 0, 0, 1, 1, 1], np.int32)
    runs = _deal(table, rows, epochs, 0, {"name": "p", "shards": 1})
    ids, starts = run_token_ids(runs.column("tokens").combine_chunks(), np.uint16)
    run_tokens = [ids[start:end].tolist() for start, end in zip(starts[:-1], starts[1:])]
    got = {(label, epoch): tokens for label, epoch, tokens in zip(
        segment_labels(*(runs.column(name).to_pylist() for name in ("id", "first_piece", "last_piece", "pieces"))),
        runs.column("epoch").to_pylist(), run_tokens)}
    assert got == {("a#1-2", 0): [3, 4, 5, 6], ("a#4-4", 0): [9], ("b", 0): [10, 11, 12],
                   ("c#2-2", 0): [15], ("a#0-0", 1): [1, 2], ("c#0-1", 1): [13, 14]}
    order = [(doc, first) for doc, first, epoch in zip(runs.column("id").to_pylist(),
                                                       runs.column("first_piece").to_pylist(),
                                                       runs.column("epoch").to_pylist()) if epoch == 0 and doc == "a"]
    assert order == [("a", 1), ("a", 4)]
    assert runs.column("n_tokens").to_pylist() == [len(tokens) for tokens in run_tokens]
    # Pieces without ids deal into empty runs.
    empty = table.set_column(table.column_names.index("tokens"), "tokens",
                             run_bytes(pa.array([[]] * table.num_rows, pa.large_list(pa.uint16()))))
    assert _deal(empty, rows, epochs, 0, {"name": "p", "shards": 1}).column("tokens").to_pylist() == [b""] * len(got)
    # Pieces go to consecutive bins; a document of more pieces than bins wraps around the tape.
    first = first_bins(0, ["x", "y"], [3, 20], 16)
    assert 0 <= first[0] <= 13 and list(piece_bins(np.full(20, first[1]), np.arange(20), 16)) == [
        (first[1] + k) % 16 for k in range(20)]


# --- packing in bounded memory -----------------------------------------------------------------------


def test_rows_built_a_few_tokens_at_a_time_are_the_rows_built_at_once(corpus, tmp_path, monkeypatch):
    """Packing builds rows CHUNK_TOKENS tokens at a time; chunks that end anywhere in a row or a
    document give the bytes of one chunk per shard, Megatron files included."""
    from mixture import pack

    settings = {**SMALL_ROWS, "megatron": True, "phases": [{"tokens": 20_000}]}
    files = {}
    for chunk_tokens in (1 << 30, 37):
        monkeypatch.setattr(pack, "CHUNK_TOKENS", chunk_tokens)
        work_dir = tmp_path / f"chunks-{chunk_tokens}"
        build(corpus, work_dir, settings)
        shards = work_dir / "mixture" / "shards" / "pretrain"
        files[chunk_tokens] = {path.name: path.read_bytes() for path in shards.glob("part-*")}
    assert len(files[37]) > 3 and files[37] == files[1 << 30]


def task_memory_script(imports: str, call: str, result: str) -> str:
    """A script that runs one mixture task (``call``, after ``imports``) in a fresh process and prints
    its peak memory above the interpreter's with those imports, and ``result`` (argv: the task's
    sources as JSON, its output directory)."""
    return f"""
import json, sys
import pyarrow as pa
pa.set_cpu_count(1)  # as in a Ray task of one CPU
{imports}

def peak_mb():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

baseline = peak_mb()
sources, directory = json.loads(sys.argv[1]), sys.argv[2]
receipt = {call}
print(json.dumps({{"task_mb": peak_mb() - baseline, {result}}}))
"""


PACK_MEMORY = task_memory_script(
    "from mixture.pack import PackTask, pack_shard",
    '''pack_shard(PackTask(phase="p", shard=0, sources=sources, path=f"{directory}/part-00000.parquet",
                              receipt=f"{directory}/receipt.json", step_hash="h", seq_len=2047, eod_id=2, pad_id=3,
                              token_type="uint16", rows_per_row_group=1024, megatron=True))''',
    '"tokens": receipt["tokens"]')


def scatter_files(directory: Path, files: int, runs: int, tokens_per_run: int) -> list[str]:
    """Scatter files of one training shard (shard 0), as ``mixture.packing`` writes them: runs of
    random token ids, sorted by shuffle key."""
    import pyarrow as pa

    from mixture.packing import _row_group_per_block

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    paths = []
    for number in range(files):
        keys = np.sort(rng.integers(0, 2**63, runs, dtype=np.uint64))
        offsets = np.arange(runs + 1, dtype=np.int64) * tokens_per_run
        values = rng.integers(4, 60_000, runs * tokens_per_run, dtype=np.uint16)
        table = pa.table({
            "id": [f"doc-{number}-{run}" for run in range(runs)], "first_piece": pa.array(np.zeros(runs, np.int32)),
            "last_piece": pa.array(np.zeros(runs, np.int32)), "pieces": pa.array(np.ones(runs, np.int32)),
            "category": ["web"] * runs, "epoch": pa.array(np.zeros(runs, np.int32)), "key": pa.array(keys),
            "n_tokens": pa.array(np.full(runs, tokens_per_run, np.int64)),
            "tokens": run_bytes(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))),
            "shard": pa.array(np.zeros(runs, np.int32))})
        path = directory / f"part-{number}.parquet"
        path.write_bytes(_row_group_per_block(table, 1).to_pybytes())
        paths.append(str(path))
    return paths


def pack_task_memory(sources: list[str], directory: Path) -> dict:
    """``pack_shard`` of shard 0 of ``sources`` in a fresh process: its peak memory over the
    interpreter's (MiB) and the tokens it packed."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", PACK_MEMORY, json.dumps(sources), str(directory)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_pack_task_holds_its_shard_tokens_once(tmp_path):
    """A pack task's peak memory (VmHWM of a fresh process) grows by less than 2 bytes per extra byte
    of its shard's token ids: it holds them once, as read, plus a few row groups. A build of the whole
    shard at once (token stream, padded rows, row table, Parquet and Megatron bytes) grew by about 10:
    2.1 GB for 50,000 rows of 2,049 uint16 ids (bench/bench_steps.py)."""
    sources = scatter_files(tmp_path / "scatter", files=16, runs=3000, tokens_per_run=1000)
    small = pack_task_memory(sources[:4], tmp_path / "small")
    large = pack_task_memory(sources, tmp_path / "large")
    assert (small["tokens"], large["tokens"]) == (4 * 3000 * 1001, 16 * 3000 * 1001)
    extra_token_mb = (large["tokens"] - small["tokens"]) * 2 / 2**20
    assert large["task_mb"] - small["task_mb"] < 2 * extra_token_mb, (small, large)
