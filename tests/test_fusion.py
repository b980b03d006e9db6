"""Stage fusion (``fuse: true``, ``pipeline.fusion``): consecutive per-document stages run as one task
per unit, and every file each stage writes is the same as without fusion, byte for byte, in-process
and on Ray with one worker or two; a fused run resumes from the receipts it left; ``fuse: false`` is
the stage-by-stage run; a stage that loses rows inside a fused task stops the run, named."""
from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import pytest

from conftest import sample_config
from pipeline.config import parse_config
from pipeline.errors import ConfigError, TaskFailed
from pipeline.executor import InProcessExecutor
from pipeline.runner import run_pipeline

NO_STEPS = {"tokenizer": None, "mixture": None}
TIMING = {"seconds", "task_seconds"}  # the only fields of the JSON a run may change


def _without_timing(value):
    if isinstance(value, dict):
        return {key: _without_timing(item) for key, item in value.items() if key not in TIMING}
    if isinstance(value, list):
        return [_without_timing(item) for item in value]
    return value


def _outputs(work_dir: Path) -> dict[str, str]:
    """Every file of every stage directory: a Parquet file's sha256, a JSON file's content less timing."""
    outputs = {}
    for path in sorted(work_dir.glob("[0-9][0-9]_*/**/*")):
        if "_scratch" in path.parts:  # dedup's working files, not a stage's output
            continue
        relative = str(path.relative_to(work_dir))
        if path.suffix == ".parquet":
            outputs[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.suffix == ".json":
            outputs[relative] = json.dumps(_without_timing(json.loads(path.read_text())), sort_keys=True)
    return outputs


def _labels(monkeypatch) -> list[str]:
    """The labels of the in-process executor's task maps (its progress bars), as a run makes them."""
    labels: list[str] = []
    original = InProcessExecutor.map

    def recording(self, fn, items, label="", *args, **kwargs):
        labels.append(label)
        return original(self, fn, items, label, *args, **kwargs)
    monkeypatch.setattr(InProcessExecutor, "map", recording)
    return labels


@pytest.fixture(scope="module")
def unfused_sample(sample_run, tmp_path_factory):
    """The sample's stages run in-process one at a time (``fuse: false``): the reference."""
    work_dir = tmp_path_factory.mktemp("unfused") / "work"
    run_pipeline(sample_config(work_dir, fuse=False, **NO_STEPS), use_ray=False, log=lambda _: None)
    return _outputs(work_dir)


def test_fused_runs_write_the_same_bytes_in_process_and_on_ray(unfused_sample, sample_run, tmp_path):
    fused = tmp_path / "fused"
    results = run_pipeline(sample_config(fused, **NO_STEPS), use_ray=False, log=lambda _: None)
    assert [r.spec.name for r in results] == ["ingest", "langid", "rules", "quality", "dedup"]
    assert len(unfused_sample) > 150 and _outputs(fused) == unfused_sample
    # sample_run: fused, on Ray with two workers
    reference, _, _ = sample_run
    assert _outputs(reference) == unfused_sample
    for fuse in (True, False):
        one_worker = tmp_path / f"ray-one-worker-{fuse}"
        run_pipeline(sample_config(one_worker, fuse=fuse, ray={"num_workers": 1}, **NO_STEPS), use_ray=True,
                     log=lambda _: None)
        assert _outputs(one_worker) == unfused_sample, f"fuse: {fuse}"


def _documents(tmp_path: Path) -> dict:
    """A corpus that makes the stages cut batches: 12,000 documents in one shard (batches of 4,000 rows
    with batch_rows 2,500: two row groups), some of them too short for rules, some with an e-mail
    address for pii, and an input whose documents langid removes entirely (an empty file after it)."""
    rng = random.Random(7)
    words = ("the river runs past old mills and quiet farms where people still bake bread in stone "
             "ovens every morning while children walk to school along the water").split()
    lines = []
    for number in range(12000):
        text = " ".join(rng.choice(words) for _ in range(rng.choice((8, 300, 400)))) + "."
        if number % 7 == 0:
            text += f" Write to person{number}@mail-provider.org for more."
        lines.append(json.dumps({"id": str(number), "text": text}))
    (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "digits.jsonl").write_text("".join(json.dumps({"id": str(n), "text": f"{n} {n * 7} {n * 13}"}) + "\n"
                                                   for n in range(50)))
    return {"inputs": [{"name": "docs", "path": str(tmp_path / "docs.jsonl"), "category": "web", "id_field": "id"},
                       {"name": "digits", "path": str(tmp_path / "digits.jsonl"), "category": "web", "id_field": "id"}],
            "batch_rows": 2500,
            "stages": {"langid": {"languages": ["en"]}, "rules": {}, "pii": {"remove_over": 0}}}


def test_batches_and_empty_files_handed_on_give_the_same_bytes(tmp_path):
    raw = _documents(tmp_path)
    outputs = {}
    for fuse in (False, True):
        work_dir = tmp_path / f"work-{fuse}"
        results = run_pipeline(parse_config({**raw, "work_dir": str(work_dir), "fuse": fuse}), use_ray=False,
                               log=lambda _: None)
        outputs[fuse] = _outputs(work_dir)
    assert outputs[True] == outputs[False]
    kept = {r.spec.name: sum(x["kept_rows"] for x in r.receipts) for r in results}
    removed = {r.spec.name: sum(x["removed_rows"] for x in r.receipts) for r in results}
    assert kept["ingest"] == 12050 and kept["rules"] > 4000 and all(removed[name] for name in ("langid", "rules", "pii"))
    empty = [x for x in results[2].receipts if x["input_rows"] == 0]  # rules on the digits' empty langid output
    assert empty and empty[0]["kept_files"][0]["rows"] == 0


def _stage_by_stage_and_fused(tmp_path: Path, monkeypatch, inputs: list[dict]) -> tuple[list, list[str]]:
    """Ingest, langid and rules at 20 kB shards, without fusion and then with it, in process; checks
    that every file is the same both ways and returns the fused run's results and task map labels."""
    raw = {"inputs": inputs, "ingest": {"shard_bytes": 20_000}, "stages": {"langid": {"languages": ["en"]}, "rules": {}}}
    labels = _labels(monkeypatch)
    outputs = {}
    for fuse in (False, True):
        labels.clear()
        results = run_pipeline(parse_config({**raw, "work_dir": str(tmp_path / f"work-{fuse}"), "fuse": fuse}),
                               use_ray=False, log=lambda _: None)
        outputs[fuse] = _outputs(tmp_path / f"work-{fuse}")
    assert outputs[True] == outputs[False]
    return results, labels


def test_a_source_units_other_shards_start_as_it_returns_not_after_every_source_unit(tmp_path, monkeypatch):
    """A source unit hands on its first kept file; the others get tasks of their own in the same map
    of tasks, queued as soon as it returns (``fusion.follow_ups``), not in a second round once every
    source unit is done. The files are still those of the stage-by-stage run."""
    rng = random.Random(3)
    words = "a quiet town by the river where the old mill still grinds wheat every autumn".split()
    inputs = []
    for name in ("first", "second"):  # compressed: read whole, one source unit of several shards each
        (tmp_path / f"{name}.jsonl.gz").write_bytes(gzip.compress("".join(
            json.dumps({"id": str(n), "text": " ".join(rng.choice(words) for _ in range(60)) + "."}) + "\n"
            for n in range(300)).encode()))
        inputs.append({"name": name, "path": str(tmp_path / f"{name}.jsonl.gz"), "category": "web", "id_field": "id"})
    results, labels = _stage_by_stage_and_fused(tmp_path, monkeypatch, inputs)
    assert len(results[0].receipts) == 2 and len(results[1].receipts) == 10  # two source units, ten shards
    assert labels == ["01 ingest + 02 langid + 03 rules"]


def test_a_fused_run_killed_between_two_receipts_redoes_only_what_has_none(unfused_sample, tmp_path):
    work_dir = tmp_path / "work"
    config = sample_config(work_dir, **NO_STEPS)
    run_pipeline(config, use_ray=False, log=lambda _: None)
    # what a fused task killed after committing its rules receipt leaves: no manifest of the group's
    # stages (the driver removes them before the tasks), and no quality receipt for that unit; and
    # what one killed after its langid receipt leaves: no rules or quality receipt either
    for stage in ("01_ingest", "02_langid", "03_rules", "04_quality"):
        (work_dir / stage / "_manifest.json").unlink()
    units = sorted(p.stem for p in (work_dir / "04_quality" / "_receipts").glob("*.json"))
    (work_dir / "04_quality" / "_receipts" / f"{units[0]}.json").unlink()
    (work_dir / "03_rules" / "_receipts" / f"{units[1]}.json").unlink()
    (work_dir / "04_quality" / "_receipts" / f"{units[1]}.json").unlink()
    (work_dir / "03_rules" / "kept" / f"{units[1]}.parquet").unlink()
    before = {p: p.stat().st_mtime_ns for p in work_dir.glob("*/_receipts/*.json")}

    results = {r.spec.name: r for r in run_pipeline(config, use_ray=False, log=lambda _: None)}
    after = {p: p.stat().st_mtime_ns for p in work_dir.glob("*/_receipts/*.json")}
    rewritten = sorted(f"{p.parent.parent.name}/{p.stem}" for p in after if before.get(p) != after[p])
    assert rewritten == [f"03_rules/{units[1]}", f"04_quality/{units[0]}", f"04_quality/{units[1]}"]
    assert [results[name].reused == len(results[name].receipts) for name in ("ingest", "langid")] == [True, True]
    assert len(results["rules"].receipts) - results["rules"].reused == 1
    assert len(results["quality"].receipts) - results["quality"].reused == 2
    assert _outputs(work_dir) == unfused_sample


def test_fuse_false_runs_stage_by_stage_and_only_from_keep_working(tmp_path, monkeypatch):
    labels = _labels(monkeypatch)
    work_dir = tmp_path / "work"
    run_pipeline(sample_config(work_dir, fuse=False, **NO_STEPS), use_ray=False, log=lambda _: None)
    assert [label for label in labels if "prepare" not in label] == [
        "01 ingest", "02 langid", "03 rules", "04 quality", "05 dedup"]
    labels.clear()
    run_pipeline(sample_config(work_dir, **NO_STEPS), use_ray=False, force=True, start="langid", log=lambda _: None)
    assert [label for label in labels if "prepare" not in label] == ["02 langid + 03 rules + 04 quality", "05 dedup"]
    labels.clear()
    lines: list[str] = []
    run_pipeline(sample_config(work_dir, **NO_STEPS), use_ray=False, force=True, only="rules", log=lines.append)
    assert labels == ["03 rules"] and all(line.startswith("[03 rules]") for line in lines)
    labels.clear()
    lines.clear()  # a rules setting changed: langid is only reported, rules and quality rerun together
    stages = json.loads(json.dumps(sample_config(work_dir).stages))
    stages["rules"] = {"gopher_quality": {"min_doc_words": 51}}
    run_pipeline(sample_config(work_dir, stages=stages, **NO_STEPS), use_ray=False, log=lines.append)
    assert [label for label in labels if "prepare" not in label] == ["03 rules + 04 quality", "05 dedup"]
    assert lines[1].startswith("langid: up to date")
    assert [line.split("]")[0] for line in lines if " units |" in line] == ["[03 rules", "[04 quality", "[05 dedup"]
    with pytest.raises(ConfigError, match="fuse"):
        sample_config(work_dir, fuse="yes")


def test_a_stage_that_loses_rows_in_a_fused_task_stops_the_run_named(tmp_path, monkeypatch):
    from pipeline import registry

    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(5)))
    monkeypatch.setitem(registry.STAGES, "leaky", "stage_fixtures:LeakyStage")
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    labels = _labels(monkeypatch)
    config = parse_config({"work_dir": str(tmp_path / "work"), "stages": {"langid": {"bypass_categories": ["code"]}, "leaky": {}},
                           "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "code"}]})
    with pytest.raises(TaskFailed, match="stage leaky lost rows in part-000-00000-0000"):
        run_pipeline(config, use_ray=False, log=lambda _: None)
    assert labels == ["01 ingest + 02 langid + 03 leaky"]
    assert not list((tmp_path / "work").glob("*/_receipts/*.json"))  # the task committed nothing


def test_a_fused_group_led_by_ingest_runs_its_pass_over_a_cut_file_first(tmp_path, monkeypatch):
    """A plain JSON-lines file cut into pieces leads a fused group as any source unit does: the
    source stage's pass over the pieces runs before the group's tasks, and every file is the one
    the stage-by-stage run writes."""
    rng = random.Random(5)
    words = "a quiet town by the river where the old mill still grinds wheat every autumn".split()
    (tmp_path / "dump.jsonl").write_text("".join(
        json.dumps({"id": str(n % 250), "text": " ".join(rng.choice(words) for _ in range(60)) + "."}) + "\n"
        for n in range(300)))  # the last 50 ids repeat ones an earlier piece holds
    inputs = [{"name": "dump", "path": str(tmp_path / "dump.jsonl"), "category": "web", "id_field": "id"}]
    results, labels = _stage_by_stage_and_fused(tmp_path, monkeypatch, inputs)
    assert labels == ["01 ingest prepare", "01 ingest + 02 langid + 03 rules"]
    assert len(results[0].receipts) > 3 and results[0].reasons == {"duplicate_id": 50}
