"""Regression tests of issue 15 (ingest, config, runner): damaged input files, ids that were not
unique, lax config types, errors retried that cannot succeed, a rerun that redid bookkeeping, and
``--from`` hints that walked back one stage at a time. Real Ray (``ray_cluster``), real Parquet."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
import zstandard

from conftest import REPO, SAMPLE_CONFIG
from pipeline import cli, registry
from pipeline.config import ConfigError, load_config, parse_config
from pipeline.executor import TaskFailed
from pipeline.runner import PipelineError, run_pipeline
from pipeline.stage import Stage, StageConfig, StageOutput


def _rows(work: Path, stage_dir: str, side: str) -> list[dict]:
    files = sorted((work / stage_dir / side).glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _docs(count: int, prefix: str = "d") -> list[dict]:
    """Documents that compress poorly enough for a damaged block to fall in the middle of a file."""
    return [{"id": f"{prefix}{i}", "text": " ".join(f"w{(i * 7919 + k * 104729) % 100003}" for k in range(40))}
            for i in range(count)]


def _jsonl(docs: list[dict]) -> bytes:
    return b"".join(json.dumps(doc).encode() + b"\n" for doc in docs)


def _damaged_inputs(directory: Path) -> list[dict]:
    """A .gz cut in half, a .zst with garbage in its middle, and an intact .jsonl; the documents."""
    directory.mkdir(parents=True)
    docs = _docs(3000)
    data = _jsonl(docs)
    packed = gzip.compress(data)
    (directory / "a-truncated.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    packed = bytearray(zstandard.ZstdCompressor().compress(data))
    middle = len(packed) // 2
    packed[middle:middle + 64] = bytes(b ^ 0xFF for b in packed[middle:middle + 64])
    (directory / "b-corrupt.jsonl.zst").write_bytes(bytes(packed))
    (directory / "c-intact.jsonl").write_bytes(_jsonl(_docs(5, prefix="ok")))
    return docs


def _write_config(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ------------------------------------------------------------------------------ damaged input files

def test_damaged_gz_and_zst_keep_what_was_readable_and_quarantine_the_rest(ray_cluster, tmp_path):
    docs = _damaged_inputs(tmp_path / "in")
    work = tmp_path / "work"
    config = parse_config({"work_dir": str(work), "ray": {"max_retries": 2},
                           "inputs": [{"name": "web", "path": str(tmp_path / "in"), "category": "web"}]})
    run_pipeline(config, use_ray=True, log=lambda _: None)

    kept, removed = _rows(work, "01_ingest", "kept"), _rows(work, "01_ingest", "removed")
    corrupt = {json.loads(row["meta"])["_ingest"]["file"]: row for row in removed}
    assert {row["reason"] for row in removed} == {"corrupt_file"}
    assert sorted(corrupt) == ["a-truncated.jsonl.gz", "b-corrupt.jsonl.zst"]
    for name, row in corrupt.items():
        meta = json.loads(row["meta"])
        file_kept = [r for r in kept if json.loads(r["meta"])["_ingest"]["file"] == name]
        # every record before the damage is kept, in order, and the rest is one removed row
        assert 0 < len(file_kept) < len(docs), name
        assert [r["text"] for r in file_kept] == [d["text"] for d in docs[: len(file_kept)]]
        offset = meta["_ingest"]["byte"]
        assert offset == len(_jsonl(docs[: len(file_kept)])), name
        assert meta["_ingest"]["line"] == len(file_kept) + 1
        assert f"byte {offset}" in meta["error"] and row["id"] == f"web/{name}:byte {offset}"
    assert sum(json.loads(r["meta"])["_ingest"]["file"] == "c-intact.jsonl" for r in kept) == 5
    manifest = json.loads((work / "01_ingest" / "_manifest.json").read_text())
    assert manifest["totals"]["input_rows"] == len(kept) + len(removed)


def test_damaged_file_without_ray_and_in_the_stage_command_is_no_crash(tmp_path, capsys):
    _damaged_inputs(tmp_path / "in")
    raw = {"work_dir": str(tmp_path / "work"),
           "inputs": [{"name": "web", "path": str(tmp_path / "in" / "a-truncated.jsonl.gz"), "category": "web"}]}
    config = _write_config(tmp_path, raw)
    assert cli.main(["stage", "ingest", str(config)]) == 0
    assert "corrupt_file: 1" in capsys.readouterr().out
    assert cli.main(["run", str(config), "--no-ray"]) == 0
    assert "corrupt_file 1" in capsys.readouterr().out


def test_damaged_file_with_on_bad_input_fail_is_one_line_naming_the_file(tmp_path):
    _damaged_inputs(tmp_path / "in")
    path = tmp_path / "in" / "b-corrupt.jsonl.zst"
    config = _write_config(tmp_path, {"work_dir": str(tmp_path / "work"), "ingest": {"on_bad_input": "fail"},
                                      "inputs": [{"name": "web", "path": str(path), "category": "web"}]})
    run = subprocess.run([sys.executable, "-m", "pipeline", "run", str(config), "--no-ray"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{path}:byte " in errors[0] and "(corrupt_file)" in errors[0], run.stderr
    assert "Traceback" not in run.stderr


def test_text_of_only_nul_characters_is_empty(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(_jsonl([{"text": "\u0000\u0000\u0000"}, {"text": "\u0000 \n"},
                                                {"text": "real text"}]))
    config = parse_config({"work_dir": str(tmp_path / "work"),
                           "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "web"}]})
    run_pipeline(config, use_ray=False, log=lambda _: None)
    assert [row["text"] for row in _rows(tmp_path / "work", "01_ingest", "kept")] == ["real text"]
    assert [row["reason"] for row in _rows(tmp_path / "work", "01_ingest", "removed")] == ["empty_text"] * 2


# ------------------------------------------------------------------------------ unique ids

def test_ids_are_unique_across_the_files_of_a_source_and_within_a_file(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    (source / "one.jsonl").write_bytes(_jsonl([{"id": "x", "text": "first x"}, {"id": "y", "text": "a y"},
                                               {"id": "x", "text": "second x in the same file"}]))
    (source / "two.jsonl").write_bytes(_jsonl([{"id": "x", "text": "an x of another file"}]))
    single = tmp_path / "single.jsonl"
    single.write_bytes(_jsonl([{"id": "x", "text": "x of a one-file source"}]))
    config = parse_config({"work_dir": str(tmp_path / "work"), "inputs": [
        {"name": "many", "path": str(source), "category": "web", "id_field": "id"},
        {"name": "one", "path": str(single), "category": "web", "id_field": "id"}]})
    run_pipeline(config, use_ray=False, log=lambda _: None)
    kept = _rows(tmp_path / "work", "01_ingest", "kept")
    ids = [row["id"] for row in kept]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == ["many/one.jsonl#x", "many/one.jsonl#y", "many/two.jsonl#x", "one/x"]
    removed = _rows(tmp_path / "work", "01_ingest", "removed")
    assert [(row["reason"], json.loads(row["text"])["text"]) for row in removed] == [
        ("duplicate_id", "second x in the same file")]


@pytest.mark.parametrize("inputs, message", [
    ([{"name": "a", "path": "x", "category": "web"}, {"name": "a", "path": "y", "category": "web"}],
     "inputs.1.name: duplicate input name 'a' (also inputs.0.name)"),
    ([{"name": "a/b", "path": "x", "category": "web"}], "inputs.0.name: 'a/b'"),
])
def test_input_names_that_could_repeat_ids_are_config_errors(tmp_path, inputs, message):
    path = _write_config(tmp_path, {"work_dir": "w", "inputs": inputs})
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_config(path)
    assert str(path) in str(error.value)


# ------------------------------------------------------------------------------ strict config types

@pytest.mark.parametrize("yaml_text, message", [
    ("ingest: {max_doc_bytes: true}\n", "ingest.max_doc_bytes: Input should be a valid integer"),
    ("ingest: {shard_bytes: \"100000\"}\n", "ingest.shard_bytes: Input should be a valid integer"),
    ("ray: {max_retries: false}\n", "ray.max_retries: Input should be a valid integer"),
    ("stages: {langid: {max_chars: true}}\n", "stages.langid.max_chars: Input should be a valid integer"),
    ("ingest:\n  shard_bytes: 1000\n  on_bad_input: fail\n  shard_bytes: 2000\n",
     "line 6: duplicate key 'shard_bytes' (first given at line 4)"),
])
def test_config_types_are_strict_and_duplicate_keys_are_errors(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text("work_dir: w\ninputs: [{name: a, path: x, category: web}]\n" + yaml_text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_strict_types_still_accept_the_shipped_configs():
    for name in ("sample.yaml", "full.yaml"):
        load_config(REPO / "configs" / name)


# ------------------------------------------------------------------------------ deterministic errors

class AttemptsConfig(StageConfig):
    attempts: str  # a file: one line per attempt of a task
    fail_in_init: bool = False


class FailingStage(Stage):
    """Raises a ValueError in every task (as a bug or a bad value would): the same every attempt."""

    name = "failing"
    Config = AttemptsConfig

    def __init__(self, config: AttemptsConfig):
        super().__init__(config)
        if config.fail_in_init:
            import a_package_that_is_not_installed  # noqa: F401

    def process(self, batch) -> StageOutput:
        with open(self.config.attempts, "a") as log:
            log.write("attempt\n")
        raise ValueError("threshold -1 makes no sense")


def _failing_config(tmp_path: Path, fail_in_init: bool = False):
    (tmp_path / "in.jsonl").write_bytes(_jsonl([{"text": "one document"}]))
    return parse_config({"work_dir": str(tmp_path / "work"), "ray": {"max_retries": 2},
                         "stages": {"failing": {"attempts": str(tmp_path / "attempts.log"), "fail_in_init": fail_in_init}},
                         "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "web"}]})


@pytest.fixture
def failing_stage(monkeypatch):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this file
    monkeypatch.setitem(registry.STAGES, "failing", f"{__name__}:FailingStage")


def test_a_deterministic_error_in_a_task_is_not_retried(ray_cluster, failing_stage, tmp_path):
    config = _failing_config(tmp_path)
    with pytest.raises(TaskFailed) as error:
        run_pipeline(config, use_ray=True, log=lambda _: None)
    message = str(error.value)
    assert "ValueError: threshold -1 makes no sense" in message and "not retried" in message
    assert "\n" not in message
    assert (tmp_path / "attempts.log").read_text().count("attempt") == 1


def test_a_missing_package_stops_the_run_before_any_stage_starts(ray_cluster, failing_stage, tmp_path):
    config = _failing_config(tmp_path, fail_in_init=True)
    with pytest.raises(PipelineError, match="stage failing cannot start: ModuleNotFoundError: "
                                            "No module named 'a_package_that_is_not_installed'"):
        run_pipeline(config, use_ray=True, log=lambda _: None)
    assert not (tmp_path / "work").exists()  # checked in the driver, before ingest ran


def test_a_missing_model_file_is_one_error_line(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(_jsonl([{"text": "one document"}]))
    config = _write_config(tmp_path, {
        "work_dir": str(tmp_path / "work"), "stages": {"langid": {"model_path": str(tmp_path / "no-such.ftz")}},
        "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "web"}]})
    run = subprocess.run([sys.executable, "-m", "pipeline", "run", str(config)], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stage langid cannot start: FileNotFoundError: "), run.stderr
    assert "no-such.ftz" in lines[0]
    assert not (tmp_path / "work").exists()


# ------------------------------------------------------------------------------ rerun and --from

SPY = """
import sys, ray
calls = []
real_init = ray.init
def spy(*args, **kwargs):
    calls.append(1)
    return real_init(*args, **kwargs)
ray.init = spy
from pipeline.cli import main
code = main(["run", sys.argv[1]])
print("ray.init calls:", len(calls))
sys.exit(code)
"""


def test_a_finished_run_is_up_to_date_without_ray_or_writes(ray_cluster, tmp_path):
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    work = tmp_path / "work"
    raw.update(work_dir=str(work), tokenizer=None, mixture=None,  # the steps keep their own bookkeeping
               inputs=[dict(source, path=str(REPO / source["path"])) for source in raw["inputs"][:2]],
               stages={name: raw["stages"][name] for name in ("langid", "rules", "dedup")})
    config = _write_config(tmp_path, raw)
    first = run_pipeline(load_config(config), use_ray=True, log=lambda _: None)
    assert [result.spec.name for result in first] == ["ingest", "langid", "rules", "dedup"]
    before = {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()}
    env = {**os.environ, "RAY_ADDRESS": ray_cluster}
    run = subprocess.run([sys.executable, "-c", SPY, str(config)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "ray.init calls: 0" in run.stdout
    for name in ("ingest", "langid", "rules", "dedup"):
        assert f"{name}: up to date" in run.stdout, run.stdout
    assert "MB/s" not in run.stdout and "Ray ready" not in run.stdout
    assert {p: p.stat().st_mtime_ns for p in work.rglob("*") if p.is_file()} == before


def test_from_a_late_stage_names_the_first_stage_without_output(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(_jsonl([{"text": f"document number {i}"} for i in range(3)]))
    config = parse_config({"work_dir": str(tmp_path / "work"), "stages": {"langid": {}, "rules": {}, "dedup": {}},
                           "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "web"}]})
    with pytest.raises(PipelineError, match=r"--from dedup: .*run `python -m pipeline run CONFIG --from ingest`"):
        run_pipeline(config, use_ray=False, start="dedup", log=lambda _: None)
    run_pipeline(config, use_ray=False, only="ingest", log=lambda _: None)
    with pytest.raises(PipelineError, match=r"--from dedup: .*run `python -m pipeline run CONFIG --from langid`"):
        run_pipeline(config, use_ray=False, start="dedup", log=lambda _: None)
