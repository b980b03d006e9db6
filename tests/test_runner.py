"""The runner on a real local Ray cluster: end to end, resume, kill, determinism, invalidation."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SAMPLE_CONFIG, read_stage, sample_config
from pipeline.runner import run_pipeline

STAGE_DIRS = ["01_ingest", "02_langid", "03_rules", "04_quality", "05_dedup"]


def _contents(work_dir: Path) -> dict:
    """Everything a run produced that matters: kept and removed rows of every stage."""
    return {(stage, side): read_stage(work_dir, stage, side) for stage in STAGE_DIRS for side in ("kept", "removed")}


def test_sample_run_end_to_end(sample_run):
    work_dir, _, results = sample_run
    assert [r.spec.name for r in results] == ["ingest", "langid", "rules", "quality", "dedup"]
    previous_kept = None
    for result in results:
        manifest = json.loads((Path(result.spec.directory) / "_manifest.json").read_text())
        totals = manifest["totals"]
        assert manifest["complete"] is True
        assert totals["input_rows"] == totals["kept_rows"] + totals["removed_rows"]
        if previous_kept is not None:
            assert totals["input_rows"] == previous_kept
        previous_kept = totals["kept_rows"]
        # every stage removes something in the sample, each document with a reason
        removed = read_stage(work_dir, Path(result.spec.directory).name, "removed")
        assert removed, f"stage {result.spec.name} removed nothing from the sample"
        assert all(row["reason"] for row in removed)
    ids = [row["id"] for row in read_stage(work_dir, "05_dedup", "kept")]
    assert len(ids) == len(set(ids)) > 100


def test_rerun_does_no_work(sample_run):
    work_dir, config, _ = sample_run
    receipts = sorted(work_dir.glob("*/_receipts/*.json"))
    before = {p: p.stat().st_mtime_ns for p in receipts}
    results = run_pipeline(config, use_ray=True, log=lambda _: None)
    assert all(r.reused == len(r.receipts) for r in results)
    assert {p: p.stat().st_mtime_ns for p in receipts} == before


def test_one_and_two_workers_give_identical_output(sample_run, tmp_path):
    work_dir, _, _ = sample_run
    one = tmp_path / "one-worker"
    config = sample_config(one, ray={"num_workers": 1})
    run_pipeline(config, use_ray=True, log=lambda _: None)
    assert _contents(one) == _contents(work_dir)


def test_too_few_or_too_small_shards_are_pointed_out_with_a_shard_size_that_fits_the_workers(sample_run, tmp_path):
    _, config, _ = sample_run
    lines: list[str] = []
    encyclopedia = [source.model_dump(exclude_unset=True) for source in config.inputs if source.name == "encyclopedia"]
    few = sample_config(tmp_path / "few", inputs=encyclopedia,
                        ingest={**config.ingest.model_dump(), "shard_bytes": 50_000_000})
    (result,) = run_pipeline(few, use_ray=True, only="ingest", log=lines.append)
    shards = sum(len(receipt["kept_files"]) for receipt in result.receipts)
    (note,) = [line for line in lines if line.startswith("note:")]
    assert f"ingest made {shards} shards for 2 workers" in note and "(now 50000000)" in note
    suggested = int(note.split("`ingest.shard_bytes: ")[1].split("`")[0])
    many = sample_config(tmp_path / "many", inputs=encyclopedia,
                         ingest={**config.ingest.model_dump(), "shard_bytes": suggested})
    lines.clear()
    (result,) = run_pipeline(many, use_ray=True, only="ingest", log=lines.append)
    assert sum(len(receipt["kept_files"]) for receipt in result.receipts) >= 8 and lines
    # (the one file is now more than a shard and is read whole, which another note says)
    assert not [line for line in lines if line.startswith("note:") and "fewer than four each" in line]
    lines.clear()
    run_pipeline(few, use_ray=True, only="ingest", log=lines.append)  # up to date: nothing ran, nothing said
    assert not [line for line in lines if line.startswith("note:")]
    tiny = sample_config(tmp_path / "tiny", inputs=encyclopedia, ingest={**config.ingest.model_dump(), "shard_bytes": 1000})
    lines.clear()
    (result,) = run_pipeline(tiny, use_ray=True, only="ingest", log=lines.append)
    shards = sum(len(receipt["kept_files"]) for receipt in result.receipts)
    (note,) = [line for line in lines if line.startswith("note:")]
    assert shards > 32 and f"ingest made {shards:,} shards of " in note and "(now 1000)" in note
    assert int(note.split("`ingest.shard_bytes: ")[1].split("`")[0]) == suggested  # the size the few shards were told


def test_killed_run_resumes_to_identical_output(sample_run, ray_cluster, tmp_path):
    work_dir, _, _ = sample_run
    resumed = tmp_path / "work"
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw["work_dir"] = str(resumed)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    command = [sys.executable, "-m", "pipeline", "run", str(config_path)]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    receipts = resumed / "03_rules" / "_receipts"
    deadline = time.monotonic() + 300
    while not (receipts.is_dir() and any(receipts.glob("*.json"))):
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "the rules stage never started"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (resumed / "03_rules" / "_manifest.json").exists(), "killed too late: rules had finished"
    finished = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "reused" in finished.stdout
    assert _contents(resumed) == _contents(work_dir)


def test_config_change_reruns_that_stage_and_later_ones_only(sample_run, tmp_path):
    work_dir, _, _ = sample_run
    copy = tmp_path / "work"
    shutil.copytree(work_dir, copy)
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    config = sample_config(copy, stages=_with_changed_rules(raw["stages"]))
    results = {r.spec.name: r for r in run_pipeline(config, use_ray=True, log=lambda _: None)}
    assert results["ingest"].reused == len(results["ingest"].receipts)
    assert results["langid"].reused == len(results["langid"].receipts)
    for name in ("rules", "quality", "dedup"):
        assert results[name].reused == 0, name


def _with_changed_rules(stages: dict) -> dict:
    """The same stages with one rules threshold changed."""
    changed = json.loads(json.dumps(stages))
    rules = changed.setdefault("rules", {}) or {}
    changed["rules"] = rules
    family = rules.setdefault("gopher_quality", {})
    family["min_doc_words"] = family.get("min_doc_words", 50) + 1
    return changed


def test_lost_rows_fail_the_run_loudly(tmp_path, monkeypatch):
    from pipeline import registry
    from pipeline.executor import TaskFailed

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    monkeypatch.setitem(registry.STAGES, "leaky", "stage_fixtures:LeakyStage")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    from pipeline.config import parse_config

    config = parse_config({"work_dir": str(tmp_path / "work"), "stages": {"leaky": {}},
                           "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "web"}]})
    with pytest.raises(TaskFailed, match="stage leaky lost rows in"):
        run_pipeline(config, use_ray=False, log=lambda _: None)
    assert not list((tmp_path / "work").glob("02_leaky/_receipts/*.json"))


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("stage", ["GarblingStage", "StreamingGarblingStage"])
def test_a_stage_that_makes_text_that_is_not_utf8_stops_the_run_before_writing_it(tmp_path, monkeypatch, stage, fuse):
    """Arrow builds a string array from any bytes; written, they would reach every later stage and
    the tokenizer as text. The worker validates each table before it writes it, whether the stage
    runs in ingest's task (``fuse``) or in tasks of its own, reading its shard whole or streamed."""
    from pipeline import registry
    from pipeline.config import parse_config
    from pipeline.executor import TaskFailed

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    monkeypatch.setitem(registry.STAGES, "garbling", f"stage_fixtures:{stage}")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    config = parse_config({"work_dir": str(tmp_path / "work"), "stages": {"garbling": {}}, "fuse": fuse,
                           "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "web"}]})
    with pytest.raises(TaskFailed, match=r"stage garbling made invalid data for kept/part-000-00000-0000\.parquet, "
                                         r"not written \(a bug in the stage\): column 'text' at row 0 \(id t/in\.jsonl:1\): "
                                         r"Invalid UTF8 sequence"):
        run_pipeline(config, use_ray=False, log=lambda _: None)
    assert list((tmp_path / "work").glob("01_ingest/kept/*.parquet"))  # the stage before wrote its output
    assert not list((tmp_path / "work").glob("02_garbling/**/*.parquet"))
    assert not list((tmp_path / "work").glob("02_garbling/_receipts/*.json"))
