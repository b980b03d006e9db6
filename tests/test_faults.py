"""Faults that are not a lost machine: exceptions in tasks, a full disk, no permission to write.

Each test ends with the same output as an uninterrupted run of the sample (``sample_run``) and
conservation at every stage. The faults come from test-only code in ``stage_fixtures``: a wrapper
around every Ray task, and a pyarrow filesystem whose writes fail; the pipeline has no fault flag.
"""
from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml

from conftest import REPO, SAMPLE_CONFIG, sample_config
from pipeline import cli, storage
from pipeline.executor import RayExecutor, TaskFailed
from pipeline.runner import run_pipeline
from run_checks import assert_conserved, assert_only_complete_units_committed, assert_same_contents
from stage_fixtures import FaultyFileSystem, attempts, with_faults

# the stages are what these tests are about, stage by stage (fuse: false): their faults hit, and
# their messages name, one stage's own tasks (tests/test_fusion.py runs fused stages)
NO_STEPS = {"tokenizer": None, "mixture": None, "fuse": False}


def _injected(faults_dir: Path) -> list[str]:
    directory = faults_dir / "injected"
    return sorted(p.name.replace("__", "/") for p in directory.iterdir()) if directory.is_dir() else []


@pytest.mark.slow
def test_exceptions_in_one_percent_of_tasks_are_retried(sample_run, tmp_path, monkeypatch):
    reference, _, _ = sample_run
    faults = {"dir": str(tmp_path / "faults"), "fail_percent": 1}
    os.makedirs(faults["dir"])
    monkeypatch.setattr(RayExecutor, "map", with_faults(RayExecutor.map, faults))
    config = sample_config(tmp_path / "work", **NO_STEPS)
    assert config.ray.max_retries == 2
    run_pipeline(config, use_ray=True, log=lambda _: None)

    injected = _injected(tmp_path / "faults")  # which tasks: by a hash of their names, the same every run
    assert injected, "no task was chosen to fail"
    events = attempts(faults["dir"])
    for key in injected:  # failed once, then retried to completion
        assert [event for event, k, _ in events if k == key] == ["start", "start", "end"], key
    assert_same_contents(tmp_path / "work", reference)
    assert_conserved(tmp_path / "work")


@pytest.mark.slow
def test_without_retries_an_exception_stops_the_run_naming_the_task_and_a_rerun_resumes(
        sample_run, tmp_path, monkeypatch):
    reference, _, _ = sample_run
    faults = {"dir": str(tmp_path / "faults"), "fail_percent": 1}
    os.makedirs(faults["dir"])
    monkeypatch.setattr(RayExecutor, "map", with_faults(RayExecutor.map, faults))
    config = sample_config(tmp_path / "work", ray={"max_retries": 0}, **NO_STEPS)
    messages = []
    for _ in range(10):
        try:
            run_pipeline(config, use_ray=True, log=lambda _: None)
            break
        except TaskFailed as error:
            messages.append(str(error))
    else:
        pytest.fail(f"the run never finished: {messages}")
    # each fault stopped one run, with a message naming the task (or, for a task of several of a
    # step's items, the items) and the fault; the rerun went on from there
    injected = _injected(tmp_path / "faults")
    assert messages and len(messages) <= len(injected)
    named = []
    for message in messages:
        for key in injected:
            stage_or_function, item = key.split("/")
            task = re.escape(f"unit {item}" if item.startswith("part-") else f"{stage_or_function} {item}")
            group = rf"run_group {re.escape(stage_or_function)}\[([^\]]*,)?{re.escape(item)}(,[^\]]*)?\]"
            if re.search(rf"task for ({task}|{group}) failed after 0 retries: InjectedFault: injected fault in task "
                         + re.escape(key), message):
                named.append(key)
    assert len(named) == len(set(named)) == len(messages), messages
    assert_same_contents(tmp_path / "work", reference)
    assert_conserved(tmp_path / "work")


def _cli_config(tmp_path: Path) -> tuple[Path, Path]:
    """configs/sample.yaml in a file, with its work_dir under tmp_path and no steps after the stages."""
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    work = tmp_path / "work"
    raw.update(work_dir=str(work), **NO_STEPS)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path, work


def _faulty_work_dir(monkeypatch, work: Path, handler: FaultyFileSystem) -> None:
    """Make the runner write ``work`` through ``handler`` (inputs and models are read as usual)."""
    resolve = storage.resolve
    faulty = pafs.PyFileSystem(handler)
    monkeypatch.setattr(storage, "resolve", lambda path: (faulty, os.path.abspath(path))
                        if os.path.abspath(path) == str(work) else resolve(path))


def test_disk_full_mid_stage_names_the_path_commits_nothing_partial_and_resumes(
        sample_run, tmp_path, monkeypatch, capsys):
    reference, _, _ = sample_run
    config, work = _cli_config(tmp_path)
    disk = FaultyFileSystem(space=150_000, space_under=str(work / "03_rules"))  # rules writes ~600 kB
    _faulty_work_dir(monkeypatch, work, disk)

    assert cli.main(["run", str(config), "--no-ray"]) == 2
    message = capsys.readouterr().err
    assert "error: 03 rules: unit part-" in message
    assert f"cannot write {work / '03_rules'}/" in message
    assert "No space left on device; free space there, then rerun the same command" in message
    done = list((work / "03_rules" / "_receipts").glob("*.json"))
    assert 0 < len(done) < len(json.loads((work / "02_langid" / "_manifest.json").read_text())["units"])
    assert not (work / "03_rules" / "_manifest.json").exists()
    assert_only_complete_units_committed(work)
    assert not list(work.rglob(f"{storage.TMP_PREFIX}*")), "a failed write left its temporary file"

    disk.space = None  # space freed
    assert cli.main(["run", str(config), "--no-ray"]) == 0
    assert "[03 rules]" in capsys.readouterr().out
    assert_same_contents(work, reference)
    assert_conserved(work)


def test_permission_denied_names_the_path_and_a_rerun_after_fixing_it_completes(
        sample_run, tmp_path, monkeypatch, capsys):
    reference, _, _ = sample_run
    config, work = _cli_config(tmp_path)
    disk = FaultyFileSystem(read_only=(str(work / "03_rules"),))  # as after chmod -R a-w on it
    _faulty_work_dir(monkeypatch, work, disk)

    assert cli.main(["run", str(config), "--no-ray"]) == 2
    message = capsys.readouterr().err
    assert (f"error: 03 rules: cannot write {work / '03_rules' / '_stage.json'}: Permission denied; "
            "make it writable by the user running the pipeline, then rerun the same command") in message
    assert (work / "02_langid" / "_manifest.json").exists() and not (work / "03_rules").exists()
    assert_only_complete_units_committed(work)

    disk.read_only = ()
    assert cli.main(["run", str(config), "--no-ray"]) == 0
    capsys.readouterr()
    assert_same_contents(work, reference)
    assert_conserved(work)


def test_a_real_write_error_from_the_operating_system_is_reported_the_same_way(tmp_path):
    """No test double: the kernel refuses writes past RLIMIT_FSIZE (EFBIG) in a driver process."""
    config, work = _cli_config(tmp_path)
    limit = 40_000  # bytes: the sample's first ingest shard is larger

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    run = subprocess.run([sys.executable, "-m", "pipeline", "run", str(config), "--no-ray"], cwd=REPO,
                         capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert run.returncode == 2, run.stderr[-3000:]
    assert f"error: 01 ingest: unit 000-00000: cannot write {work / '01_ingest' / 'kept'}/" in run.stderr
    assert "File too large; raise the file size limit (ulimit -f)" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (work / "01_ingest" / "_receipts" / "000-00000.json").exists()
    assert_only_complete_units_committed(work)


def test_a_stage_being_redone_has_no_manifest_until_it_finishes(tmp_path, monkeypatch):
    """An input file changed, so its ingest unit is redone; the disk is full while it is: the old
    manifest, which no longer describes the outputs, must not be left claiming the stage is done."""
    from pipeline.config import parse_config

    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"document number {i}"}) + "\n" for i in range(5)))
    work = tmp_path / "work"
    config = parse_config({"work_dir": str(work), "inputs": [{"name": "t", "path": str(source), "category": "web"}]})
    disk = FaultyFileSystem()
    _faulty_work_dir(monkeypatch, work, disk)
    run_pipeline(config, use_ray=False, log=lambda _: None)
    assert json.loads((work / "01_ingest" / "_manifest.json").read_text())["totals"]["input_rows"] == 5

    with source.open("a") as more:
        more.write(json.dumps({"text": "one more document"}) + "\n")
    disk.space, disk.space_under = 0, str(work / "01_ingest" / "kept")
    with pytest.raises(TaskFailed, match="No space left on device"):
        run_pipeline(config, use_ray=False, log=lambda _: None)
    assert not (work / "01_ingest" / "_manifest.json").exists()
    assert_only_complete_units_committed(work)

    disk.space = None
    run_pipeline(config, use_ray=False, log=lambda _: None)
    assert json.loads((work / "01_ingest" / "_manifest.json").read_text())["totals"]["input_rows"] == 6
