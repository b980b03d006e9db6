"""Decontamination: word and CJK n-gram matches with provenance, redaction, the frequency cap from
prepare, the index as an asset (fingerprint), config checks, and a small planted-recall run on real
corpus-dev with GSM8K and HumanEval (bench/bench_decontam.py is the full one)."""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from conftest import REPO
from pipeline import registry
from pipeline.stage import DOCUMENT_SCHEMA, PrepareContext
from stages.decontaminate import Decontaminate, DecontaminateConfig

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")
ZH_QUESTION = "下列关于中华人民共和国宪法修改程序的说法中，正确的是由全国人民代表大会常务委员会或者五分之一以上的全国人民代表大会代表提议"
FILLER = "The weather in the valley was mild this spring and farmers planted early crops along the river. " * 3


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def config(tmp_path: Path, **overrides) -> DecontaminateConfig:
    bench = write_jsonl(tmp_path / "bench.jsonl", [
        {"qid": "q1", "question": QUESTION, "answer": "72"},
        {"qid": "q2", "question": ZH_QUESTION, "answer": "A"}])
    settings = {"index_path": str(tmp_path / "index.npz"), "frequency_cap": None, **overrides}
    return DecontaminateConfig(benchmarks=[
        {"name": "toy", "path": bench, "fields": ["question"], "id_field": "qid"}], **settings)


def table(texts: list[str]) -> pa.Table:
    rows = [{"id": f"d{i}", "text": t, "source": "t", "category": "web", "meta": "{}"} for i, t in enumerate(texts)]
    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)


def stage_for(cfg: DecontaminateConfig) -> Decontaminate:
    Decontaminate.ensure_assets(cfg, lambda m: None)
    return registry.stage_class("decontaminate")(cfg)


def test_matches_after_case_whitespace_and_punctuation_changes(tmp_path):
    stage = stage_for(config(tmp_path))
    edited = QUESTION.upper().replace(",", "").replace("?", " ?").replace(" ", "\n  ")
    zh_edited = "，".join(ZH_QUESTION[i:i + 7] for i in range(0, len(ZH_QUESTION), 7))  # punctuation inserted
    texts = [FILLER + QUESTION, FILLER + "\n" + edited + "\n" + FILLER, "前言。" + zh_edited + "。后记", FILLER,
             "Natalia sold clips to 48 of her friends in April."]  # 10 words: shorter than one 13-gram
    out = stage.process(table(texts))
    assert out.removed.column("id").to_pylist() == ["d0", "d1", "d2"]
    assert set(out.removed.column("reason").to_pylist()) == {"benchmark_contamination"}
    first = json.loads(out.removed.column("contamination")[0].as_py())[0]
    assert first["benchmark"] == "toy" and first["item"] == "q1"
    assert first["ngram"] == "natalia sold clips to 48 of her friends in april and then she"
    assert texts[0][first["spans"][0][0]:first["spans"][0][1]] == QUESTION.rstrip("?")
    zh = json.loads(out.removed.column("contamination")[2].as_py())[0]
    assert zh["item"] == "q2" and len(zh["ngram"]) == 20
    assert out.kept.column("contamination").to_pylist() == [None, None]
    assert out.stats["contaminated_docs"] == {"toy": 3}


def test_redact_cuts_the_span_and_keeps_the_page(tmp_path):
    stage = stage_for(config(tmp_path, action="redact", redaction="[removed]"))
    out = stage.process(table([FILLER + QUESTION + " " + FILLER, QUESTION]))
    assert out.kept.column("text")[0].as_py() == FILLER + "[removed]? " + FILLER
    assert out.removed.column("id").to_pylist() == ["d1"]  # nothing left but the question mark
    assert out.stats["redacted_docs"] == 1


def test_frequency_cap_ignores_ngrams_common_in_the_corpus(tmp_path):
    """prepare counts the documents holding each benchmark n-gram; those over the cap are ignored."""
    cfg = config(tmp_path, frequency_cap=2)
    stage = stage_for(cfg)
    inputs = {}
    for shard, texts in enumerate([[FILLER + QUESTION] * 2, [QUESTION, ZH_QUESTION]]):
        path = tmp_path / f"part-{shard}.parquet"
        pq.write_table(table(texts), path)
        inputs[path.stem] = str(path)
    scratch = str(tmp_path / "scratch")
    (tmp_path / "scratch").mkdir()
    stage.prepare(PrepareContext(inputs=inputs, scratch=scratch, filesystem=pafs.LocalFileSystem(),
                                 map=lambda fn, items: [fn(i) for i in items], log=lambda m: None))
    summary = json.loads((tmp_path / "scratch" / "ignored_ngrams.json").read_text())
    assert summary["ignored"] > 0 and summary["most_common"][0]["item"] == "q1"
    fresh = registry.stage_class("decontaminate")(cfg)  # as a worker: state only from scratch
    fresh.begin_shard("part-1", scratch, pafs.LocalFileSystem())
    out = fresh.process(pq.read_table(inputs["part-1"]))
    assert out.removed.column("id").to_pylist() == ["d1"]  # the Chinese item (1 document) still counts
    with pytest.raises(RuntimeError, match="prepare did not finish"):
        fresh.begin_shard("part-1", str(tmp_path / "nowhere"), pafs.LocalFileSystem())


def test_index_is_an_asset_whose_fingerprint_follows_the_benchmark(tmp_path):
    cfg = config(tmp_path)
    assert Decontaminate.fingerprint(cfg) == ""
    Decontaminate.ensure_assets(cfg, lambda m: None)
    before = Decontaminate.fingerprint(cfg)
    Decontaminate.ensure_assets(cfg, lambda m: None)  # up to date: not rebuilt
    assert Decontaminate.fingerprint(cfg) == before
    write_jsonl(Path(cfg.benchmarks[0].path), [{"qid": "q9", "question": FILLER}])
    Decontaminate.ensure_assets(cfg, lambda m: None)
    assert Decontaminate.fingerprint(cfg) != before
    assert stage_for(cfg).process(table([FILLER])).removed.num_rows == 1


def test_config_rejects_unknown_keys_and_bad_values(tmp_path):
    with pytest.raises(ValidationError):
        DecontaminateConfig(ngram=13)
    with pytest.raises(ValidationError):
        DecontaminateConfig(action="delete")
    with pytest.raises(ValidationError):
        DecontaminateConfig(benchmarks=[{"name": "a", "path": "x", "fields": ["q"], "split": "test"}])
    with pytest.raises(FileNotFoundError):
        Decontaminate.ensure_assets(DecontaminateConfig(benchmarks=[{"name": "a", "path": str(tmp_path / "no"),
                                                                      "fields": ["q"]}]), lambda m: None)


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_decontam", REPO / "bench" / "bench_decontam.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_planted_gsm8k_and_humaneval_in_real_corpus_dev(shared_data, tmp_path):
    """The bench's recall section, small: 60 planted documents in one corpus-dev shard (all variants)."""
    bench = _bench_module()
    from bench.common import document_table

    original = document_table(shared_data / "corpus-dev" / "part-00003.parquet")
    rows = sorted(random.Random(3).sample(range(original.num_rows), 60))
    planted_table, planted = bench.plant(original, rows, bench.planted_items(), seed=3)
    cfg = bench.benchmarks_config(index_path=str(tmp_path / "index.npz"))
    (out,), _, _, _ = bench.run_stage(cfg, [planted_table], tmp_path / "run")
    found = {r["id"]: json.loads(r["contamination"]) for r in out.removed.to_pylist()}
    hits = {p["variant"]: [] for p in planted}
    for p in planted:
        hits[p["variant"]].append(any(e["item"] == p["item"] for e in found.get(p["id"], [])))
    assert all(hits["verbatim"]), hits
    edited = [h for v, h in hits.items() if v != "verbatim"]
    assert sum(map(sum, edited)) / sum(map(len, edited)) >= 0.95, hits
    false_flags = set(found) - {p["id"] for p in planted}
    assert len(false_flags) <= 0.001 * original.num_rows + 1, false_flags


def test_both_stages_run_in_the_pipeline_in_config_order(tmp_path):
    """decontaminate then pii through the runner (in-process): removed/ rows with reasons, the new
    columns in kept/, the index fingerprint in the stage hash, and a rerun that does nothing."""
    from conftest import read_stage
    from pipeline.config import parse_config
    from pipeline.runner import run_pipeline

    cfg = config(tmp_path, frequency_cap=5)
    docs = [{"id": "a", "text": FILLER + QUESTION}, {"id": "b", "text": FILLER + " Mail li.wei@qq.com today."},
            {"id": "c", "text": FILLER}]
    raw = {"work_dir": str(tmp_path / "work"), "ray": {"num_cpus": 1},
           "inputs": [{"name": "toy", "path": write_jsonl(tmp_path / "docs.jsonl", docs), "category": "web", "id_field": "id"}],
           "stages": {"decontaminate": cfg.model_dump(mode="json"), "pii": {}}}
    pipeline_config = parse_config(raw)
    results = run_pipeline(pipeline_config, use_ray=False, log=lambda m: None)
    work = tmp_path / "work"
    removed = read_stage(work, "02_decontaminate", "removed")
    assert [(r["id"], r["reason"]) for r in removed] == [("toy/a", "benchmark_contamination")]
    kept = {r["id"]: r for r in read_stage(work, "03_pii", "kept")}
    assert set(kept) == {"toy/b", "toy/c"} and kept["toy/b"]["text"].endswith("Mail <EMAIL> today.")
    assert kept["toy/c"]["contamination"] is None and kept["toy/c"]["pii_spans"] is None
    again = run_pipeline(pipeline_config, use_ray=False, log=lambda m: None)
    assert all(r.up_to_date for r in again) and len(again) == len(results)
