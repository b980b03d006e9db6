"""The steps around the stages: the quality model as a stage asset, the tokenizer step, their CLI."""
from __future__ import annotations

import json
import os
import shutil

import ray
import yaml

from conftest import SAMPLE_CONFIG, sample_config
from pipeline.cli import main
from pipeline.runner import run_pipeline
from pipeline.steps import finished_shards
from tokenizer.step import tokenizer_dir, train_tokenizer_step
from stages.quality_train import train_quality_model
from tokenizer import load_tokenizer


def _raw() -> dict:
    return yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))


def test_sample_run_trains_the_tokenizer_on_the_dedup_output(sample_run):
    work_dir, config, _ = sample_run
    report = json.loads((work_dir / "tokenizer" / "report.json").read_text())
    assert report["tokenizer"]["vocab_size"] == config.tokenizer.vocab_size
    assert report["inputs"]["shards"] == len(finished_shards(config, "dedup"))
    assert report["evaluation"]["round_trip"]["failures"] == 0
    assert report["evaluation"]["unknown_tokens"] == 0
    # Trained in a Ray task on every CPU of the node, never in the driver (this process).
    assert report["trained_in"]["pid"] != os.getpid()
    assert report["trained_in"]["threads"] == int(ray.cluster_resources()["CPU"])
    tokenizer = load_tokenizer(tokenizer_dir(config))
    assert tokenizer.decode(tokenizer.encode(["语言模型 language model 🙂"])[0]) == "语言模型 language model 🙂"


def test_tokenizer_step_skips_when_up_to_date_and_retrains_when_its_config_changes(sample_run, tmp_path):
    work_dir, _, _ = sample_run
    copy = tmp_path / "work"
    shutil.copytree(work_dir, copy)
    config = sample_config(copy)
    model = copy / "tokenizer" / "tokenizer.model"
    before = model.stat().st_mtime_ns
    messages: list[str] = []
    train_tokenizer_step(config, log=messages.append)
    assert model.stat().st_mtime_ns == before and any("up to date" in m for m in messages)

    larger = sample_config(copy, tokenizer={**_raw()["tokenizer"], "vocab_size": 4000})
    report = train_tokenizer_step(larger, log=lambda _: None)
    assert report["tokenizer"]["vocab_size"] == 4000
    assert load_tokenizer(tokenizer_dir(larger)).vocab_size == 4000


def test_a_retrained_quality_model_reruns_quality_and_the_stages_after_it(sample_run, tmp_path):
    work_dir, _, _ = sample_run
    copy = tmp_path / "work"
    shutil.copytree(work_dir, copy)
    raw = _raw()
    raw["stages"]["quality"]["model_path"] = str(tmp_path / "quality.bin")
    config = sample_config(copy, stages=raw["stages"])
    first = {r.spec.name: r for r in run_pipeline(config, use_ray=False, only=None, log=lambda _: None)}
    assert first["rules"].reused == len(first["rules"].receipts)  # the model path is quality's business

    quality = config.stage_configs()["quality"]
    retrained = quality.model_copy(update={"train": quality.train.model_copy(update={"epoch": 3})})
    train_quality_model(retrained, log=lambda _: None)
    second = {r.spec.name: r for r in run_pipeline(config, use_ray=False, log=lambda _: None)}
    assert second["rules"].reused == len(second["rules"].receipts)
    assert second["quality"].reused == 0 and second["dedup"].reused == 0

    third = run_pipeline(config, use_ray=False, log=lambda _: None)
    assert all(r.reused == len(r.receipts) for r in third)


def test_commands_name_the_missing_section(tmp_path, capsys):
    raw = _raw()
    raw["work_dir"] = str(tmp_path / "work")
    for section in ("tokenizer", "mixture"):
        raw.pop(section, None)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["train-tokenizer", str(config_path)]) == 2
    assert "no `tokenizer:` section" in capsys.readouterr().err
    assert main(["mixture", str(config_path)]) == 2
    assert "no `mixture:` section" in capsys.readouterr().err


def test_train_tokenizer_before_the_stages_ran_says_what_to_do(tmp_path, capsys):
    raw = _raw()
    raw["work_dir"] = str(tmp_path / "work")
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["train-tokenizer", str(config_path)]) == 2
    error = capsys.readouterr().err
    assert "stage dedup has not finished" in error and "python -m pipeline run" in error


def test_report_sums_the_stages_and_the_steps_of_a_finished_run(sample_run, tmp_path, capsys):
    work_dir, config, results = sample_run
    raw = _raw()
    raw["work_dir"] = str(work_dir)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    assert main(["report", str(config_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for stage, result in zip(report["stages"], results):
        assert stage["complete"] and stage["units_done"] == len(result.receipts), stage
        assert stage["docs_in"] == stage["kept"] + stage["removed"] == sum(r["input_rows"] for r in result.receipts)
    composition = json.loads((work_dir / "mixture" / "composition.json").read_text())
    assert report["mixture"]["tokens"] == sum(row["tokens"] for row in composition["by_category"])
    assert [p["name"] for p in report["mixture"]["phases"]] == [p["name"] for p in config.mixture["phases"]]
    assert report["tokenizer"]["vocab_size"] == config.tokenizer.vocab_size
    assert main(["report", str(config_path)]) == 0
    text = capsys.readouterr().out
    assert "tokenizer: 3,000 entries" in text and "mixture:" in text and "dedup      done" in text
