"""Where tasks run: Ray tasks on a local or remote cluster, or in this process for debugging.

Both executors have one method, ``map(fn, items, label)``, which returns results in item order, so
nothing downstream can depend on which worker finished first. Ray executes at most ``num_workers``
tasks at once (one CPU each) and retries a task up to ``max_retries`` times, on any node, when it
raised or when its worker process or whole node died (Ray notices a dead node after its missed
health checks, 15 s by default); tasks write their outputs atomically, so a retry simply redoes
the unit. A runner task that hits a problem retrying cannot fix (bad input, lost rows, a full disk, no
permission) returns a ``Failure`` instead of raising, so it is not retried, and the run stops with
the task's own message. When a task fails for good, the tasks still in flight are cancelled.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from tqdm import tqdm

from pipeline.config import RayConfig


class TaskFailed(Exception):
    """A task failed (after its retries); the message names the stage and the unit of work."""


@dataclass(frozen=True)
class Failure:
    """Returned by a task for a problem retrying cannot fix; ``message`` is shown to the user."""

    message: str


def _check(result: Any, label: str) -> Any:
    if isinstance(result, Failure):
        raise TaskFailed(f"{label}: {result.message}")
    return result


class InProcessExecutor:
    """Runs every task in this process, one after another: print statements and debuggers work."""

    workers = 1
    startup_seconds = 0.0

    def map(self, fn: Callable, items: Sequence, label: str = "") -> list:
        results = []
        for item in tqdm(items, desc=label, unit="task", disable=not items, file=sys.stderr, leave=False):
            results.append(_check(fn(item), label))
        return results

    def shutdown(self) -> None:
        pass


class RayExecutor:
    """Runs tasks on Ray: joins ``ray.address`` (or RAY_ADDRESS) when set, else starts Ray locally."""

    def __init__(self, config: RayConfig):
        import ray

        self.ray = ray
        self.config = config
        started = time.perf_counter()
        self.owns_cluster = not ray.is_initialized()
        if self.owns_cluster:
            address = config.address or os.environ.get("RAY_ADDRESS")
            ray.init(
                # "local": a Ray of our own even where `ray start` runs on this machine, which a
                # plain ray.init() would join (it reads the address `ray start` left in Ray's temp dir)
                address=address or "local",
                num_cpus=None if address else config.num_cpus,
                include_dashboard=False,
                configure_logging=False,
                log_to_driver=True,
            )
        self.startup_seconds = time.perf_counter() - started
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = config.num_workers or cluster_cpus

    def map(self, fn: Callable, items: Sequence, label: str = "") -> list:
        remote = self.ray.remote(num_cpus=1, max_retries=self.config.max_retries, retry_exceptions=True)(fn)
        results: list[Any] = [None] * len(items)
        pending: dict[Any, int] = {}
        next_item = 0
        progress = tqdm(total=len(items), desc=label, unit="task", disable=not items, file=sys.stderr, leave=False)
        try:
            while next_item < len(items) or pending:
                while next_item < len(items) and len(pending) < self.workers:
                    pending[remote.remote(items[next_item])] = next_item
                    next_item += 1
                done, _ = self.ray.wait(list(pending), num_returns=1)
                index = pending.pop(done[0])
                try:
                    try:
                        results[index] = _check(self.ray.get(done[0]), label)
                    except self.ray.exceptions.RayError as error:
                        raise TaskFailed(f"{label}: task for {_describe(fn, items[index])} failed after "
                                         f"{self.config.max_retries} retries: {_cause(error)}") from None
                except TaskFailed:
                    for ref in pending:  # the run stops: do not leave the other tasks running
                        self.ray.cancel(ref)
                    raise
                progress.update(1)
        finally:
            progress.close()
        return results

    def shutdown(self) -> None:
        if self.owns_cluster:
            self.ray.shutdown()


def _describe(fn: Callable, item: Any) -> str:
    """``unit NAME`` for a runner task (a (spec, unit) pair); else the function and the item's last
    part, e.g. ``link_partition 7`` for a dedup task (a (job, partition) pair)."""
    last = item[-1] if isinstance(item, tuple) and item else item
    if getattr(last, "unit", None):
        return f"unit {last.unit}"
    return f"{getattr(fn, '__name__', 'task')} {repr(last)[:200]}"


def _cause(error: BaseException) -> str:
    """The original exception of a Ray error, without Ray's wrapper traceback."""
    cause = getattr(error, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    return str(error).strip().splitlines()[-1]


def make_executor(config: RayConfig, use_ray: bool):
    return RayExecutor(config) if use_ray else InProcessExecutor()
