"""Arrow's allocator in the pipeline's processes (``pipeline.memory_pool``): jemalloc where pyarrow has it,
unless ``ARROW_DEFAULT_MEMORY_POOL`` says otherwise."""
from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest

from conftest import REPO
from pipeline.config import RayConfig
from pipeline.executor import RayExecutor

try:
    pa.jemalloc_memory_pool()
    HAS_JEMALLOC = True
except NotImplementedError:
    HAS_JEMALLOC = False

needs_jemalloc = pytest.mark.skipif(not HAS_JEMALLOC, reason="this pyarrow is built without jemalloc")


def _allocation_pools(size: int) -> tuple[str, int]:
    """The default pool's name, and how much more jemalloc holds while a new ``size``-byte buffer lives."""
    before = pa.jemalloc_memory_pool().bytes_allocated()
    buffer = pa.allocate_buffer(size)
    grew = pa.jemalloc_memory_pool().bytes_allocated() - before
    del buffer
    return pa.default_memory_pool().backend_name, grew


@needs_jemalloc
def test_ray_tasks_allocate_arrow_buffers_from_jemalloc(ray_cluster):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = RayExecutor(RayConfig(num_workers=2))
    for name, grew in executor.map(_allocation_pools, [8 << 20] * 4, "pools"):
        assert name == "jemalloc"
        assert grew >= 8 << 20


def _pool_in_fresh_process(**environment: str) -> str:
    code = ("import pyarrow as pa; from pipeline.executor import InProcessExecutor; "
            "InProcessExecutor(); print(pa.default_memory_pool().backend_name)")
    env = {key: value for key, value in os.environ.items() if key != "ARROW_DEFAULT_MEMORY_POOL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**env, **environment},
                            capture_output=True, text=True, check=True)
    return result.stdout.strip()


@needs_jemalloc
def test_an_in_process_run_uses_jemalloc():
    assert _pool_in_fresh_process() == "jemalloc"


def test_arrows_own_setting_wins():
    assert _pool_in_fresh_process(ARROW_DEFAULT_MEMORY_POOL="system") == "system"
