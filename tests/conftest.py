"""Shared fixtures: one real local Ray cluster per test session, and the shared dev data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_cluster():
    """A real local Ray cluster, started once; yields its address so subprocesses can join it."""
    import ray

    if not ray.is_initialized():
        # a Ray of its own, never a `ray start` cluster that happens to run on this machine
        from pipeline.local_ray import start_local_ray

        start_local_ray(2, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    address = ray.get_runtime_context().gcs_address
    os.environ["RAY_ADDRESS"] = address
    yield address
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout; tests that need it skip cleanly where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


SAMPLE_CONFIG = REPO / "configs" / "sample.yaml"


def sample_config(work_dir: Path, **overrides) -> "PipelineConfig":
    """configs/sample.yaml with its work_dir moved (and top-level sections overridden)."""
    import yaml

    from pipeline.config import parse_config

    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    raw["work_dir"] = str(work_dir)
    raw.update(overrides)
    return parse_config(raw, source=str(SAMPLE_CONFIG))


def read_stage(work_dir: Path, stage_dir: str, side: str) -> list[dict]:
    """Every row of one side (kept/removed) of a finished stage, in manifest order."""
    import json

    import pyarrow.parquet as pq

    directory = work_dir / stage_dir
    manifest = json.loads((directory / "_manifest.json").read_text())
    rows = []
    for unit in manifest["units"]:
        for file in unit[f"{side}_files"]:
            rows.extend(pq.read_table(directory / file["path"]).to_pylist())
    return rows


@pytest.fixture(scope="session")
def sample_run(ray_cluster, tmp_path_factory):
    """The sample pipeline run once on the real Ray cluster; tests compare against its outputs."""
    from pipeline.runner import run_pipeline

    work_dir = tmp_path_factory.mktemp("sample") / "work"
    config = sample_config(work_dir)
    results = run_pipeline(config, use_ray=True, log=lambda _: None)
    return work_dir, config, results
