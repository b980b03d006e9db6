"""``pipeline.warmup``: on a machine whose numba cache is empty, each stage's loops are compiled once,
a task per stage, before the stages run; with a cache, or with one worker, nothing happens."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import sample_config
from pipeline.executor import InProcessExecutor, RayExecutor
from pipeline.planning import plan_stages
from pipeline.stage import Stage
from pipeline.warmup import start_warm_up, warm_stage, warm_up
from pipeline import jit


@pytest.fixture
def specs(tmp_path):
    config = sample_config(tmp_path / "work")
    return config, plan_stages(config)


def test_an_empty_cache_compiles_each_stage_once_in_a_task_of_its_own(ray_cluster, specs, tmp_path, monkeypatch):
    config, stage_specs = specs
    # The driver looks for numba's index files where NUMBA_CACHE_DIR says: an empty one is a first run.
    # (The workers keep their own cache, so their tasks load rather than compile.)
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert "stages.langid_kernels" in jit.uncached_modules() and "stages.dedup.kernels" in jit.uncached_modules()
    lines = []
    warm_up(stage_specs, RayExecutor(config.ray), lines.append)
    assert lines[0].startswith("numba: ") and "(langid, rules, quality, dedup)" in lines[0], lines
    assert lines[-1].startswith("numba: compiled ahead in "), lines
    assert len(lines) == 2, lines  # no stage's warm-up failed


def test_a_cache_or_a_single_worker_skips_it(ray_cluster, specs, tmp_path, monkeypatch):
    config, stage_specs = specs
    cache = tmp_path / "cache"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(cache))
    lines = []
    warm_up(stage_specs, InProcessExecutor(), lines.append)  # one worker: nothing to split
    assert lines == []
    for module in jit.uncached_modules("stages."):  # an index file of each, where numba would put it
        directory = cache / jit._cache_dirs(module)[0].removeprefix(str(cache) + "/")
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{module.rsplit('.', 1)[-1]}.kernel-1.py311.nbi").write_bytes(b"")
    assert jit.uncached_modules("stages.") == []
    # The tokenizer's loops, which only its step compiles, do not count: a run without that step
    # would otherwise warm up every time.
    assert jit.uncached_modules() == ["tokenizer.bpe", "tokenizer.segments"]
    warm_up(stage_specs, RayExecutor(config.ray), lines.append)
    assert lines == []


class _Failing(Stage):
    name = "rules"

    def process(self, batch):
        raise ValueError("no such column")


def test_a_warm_up_that_fails_says_why_and_the_run_goes_on(specs):
    _, stage_specs = specs
    rules = next(spec for spec in stage_specs if spec.name == "rules")
    assert warm_stage(rules) is None
    failing = dataclasses.replace(rules, stage_type=_Failing)
    assert warm_stage(failing) == "ValueError: no such column"


def test_while_the_driver_trains_a_model_the_workers_compile_the_other_stages(ray_cluster, specs, tmp_path,
                                                                             monkeypatch):
    config, stage_specs = specs
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))
    quality = next(spec for spec in stage_specs if spec.name == "quality")
    untrained = dataclasses.replace(quality, config=quality.config.model_copy(
        update={"model_path": str(tmp_path / "not-trained-yet.bin")}))
    assert untrained.stage_type.assets_missing(untrained.config)
    lines = []
    started = [untrained if spec is quality else spec for spec in stage_specs]
    wait = start_warm_up(started, RayExecutor(config.ray), lines.append)
    wait()  # the driver would train the model before this
    assert "(langid, rules, dedup)" in lines[0], lines  # every stage but the one whose model is missing
    assert lines[-1].startswith("numba: compiled ahead in "), lines


def test_with_its_assets_in_place_nothing_starts_before_the_run_is_planned(sample_run, specs, tmp_path,
                                                                            monkeypatch):
    _, stage_specs = specs  # the sample's run trained the model its config names
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-cache"))
    quality = next(spec for spec in stage_specs if spec.name == "quality")
    assert not quality.stage_type.assets_missing(quality.config)

    class NotStarted:  # the run may have nothing to do: Ray must not start for a warm-up
        @property
        def workers(self):
            raise AssertionError("looked at the workers, which starts Ray")

    lines = []
    start_warm_up(stage_specs, NotStarted(), lines.append)()
    assert lines == []
