"""The mixture builder on the sample run's dedup output, tokenized with the tokenizer trained on it.

Covers the exact composition table, the phase plan (deterministic, disjoint, running out reported,
epochs), packing (decoding gives back the selected documents in order with separators; no token lost or
duplicated across shards), the training-shard reader (resumable), the Megatron export, resuming, and
identical output on Ray and in-process.
"""
from __future__ import annotations

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
from mixture.hashing import sampling_bins, shuffle_keys
from mixture.phases import plan_phases
from pipeline.config import ConfigError
from pipeline.executor import InProcessExecutor, RayExecutor
from pipeline.steps import finished_shards, tokenizer_dir, train_tokenizer_step
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
                            "available_tokens": 200, "segments": [[0, 0, 3]]}]
    assert b["groups"][0]["lang"] == "zh" and b["groups"][0]["tokens"] == 10  # all zh had left
    assert b["groups"][0]["segments"] == [[0, 3, 16]]
    assert b["categories"]["web"]["ran_out"]


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
    bins = dict(zip(documents, sampling_bins(0, list(documents), MixtureConfig().sampling_bins)))
    for phase in result["phases"]:
        ids = [doc_id for _, _, shard_ids in read_phase(Path(config.work_dir), phase["name"]) for doc_id in shard_ids]
        assert len(ids) == len(set(ids))  # no epochs allowed: each document at most once
        # Recompute the selection from the ids alone: sampling bin inside the phase's segments.
        expected = {doc_id for doc_id, row in documents.items() for group in phase["groups"]
                    if group["category"] == row["category"] and group["lang"] in (None, row["lang"])
                    for _, low, high in group["segments"] if low <= bins[doc_id] < high}
        assert set(ids) == expected
        selected[phase["name"]] = set(ids)
        realised = Counter(documents[doc_id]["category"] for doc_id in ids)
        assert {c: row["documents"] for c, row in phase["categories"].items() if row["documents"]} == dict(realised)
    assert not selected["first"] & selected["second"]
    assert result["phases"][0]["tokens"] == pytest.approx(40_000, rel=0.15)
    assert not any(row["ran_out"] for phase in result["phases"] for row in phase["categories"].values())


def test_packed_sequences_decode_to_the_documents_in_order_with_separators(small, documents):
    config, result, _ = small
    tokenizer = load_tokenizer(tokenizer_dir(config))
    for phase, entry in zip(result["phases"], result["manifest"]["phases"]):
        shards = read_phase(Path(config.work_dir), phase["name"])
        assert len(shards) == phase["shards"] > 1
        total = 0
        for index, ((stream, starts, ids), shard) in enumerate(zip(shards, entry["shards"])):
            assert len(stream) == shard["tokens"] and len(ids) == shard["documents"]
            # Dealt and ordered by the shuffle hash of (seed, phase, epoch, id), whoever packed them.
            keys = shuffle_keys(0, phase["name"], 0, ids)
            assert (keys % np.uint64(phase["shards"]) == index).all() and (keys[1:] >= keys[:-1]).all()
            # The stream is the documents, each followed by the separator, nothing else.
            ends = np.flatnonzero(stream == tokenizer.eod_id)
            assert list(ends + 1) == starts[1:] + [len(stream)]
            pieces = np.split(stream, ends + 1)[:-1]
            for doc_id, piece in zip(ids, pieces):
                assert piece[-1] == tokenizer.eod_id
                assert tokenizer.decode(piece[:-1].tolist()) == documents[doc_id]["text"]
                assert piece[:-1].tolist() == tokenizer.encode([documents[doc_id]["text"]])[0]
            total += len(stream)
        # Every token the plan chose is in exactly one shard: none lost, none duplicated.
        assert total == phase["tokens"] == entry["tokens"]
        assert entry["sequences"] * (config_seq_len(config) + 1) == entry["tokens"] + entry["pad_tokens"]


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
    one, two = ({doc_id for _, _, ids in read_phase(tmp_path / "work", name) for doc_id in ids} for name in ("one", "two"))
    assert one & two and all(documents[doc_id]["category"] == "books" for doc_id in one & two)


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

