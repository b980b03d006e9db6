"""``pipeline.warmup``: on a machine whose numba cache is empty, each stage's loops are compiled once,
a task per stage, before the stages run; with a cache, or with one worker, nothing happens."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import sample_config
from pipeline.executor import InProcessExecutor, RayExecutor
from pipeline.planning import plan_stages
from pipeline.stage import Stage
from pipeline.warmup import warm_stage, warm_up
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
    assert jit.uncached_modules() == ["tokenizer.bpe"]
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
