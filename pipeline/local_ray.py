"""The Ray a run starts on this machine when no cluster is named (``ray.address`` and RAY_ADDRESS
unset): ``start_local_ray``, with the settings that make its start-up shorter.

A local start costs a run about 2.5 s on 2 cores, every process of Ray's head starting at once and
most of them importing Ray. Two of them a local run never uses, and ``start_local_ray`` leaves them
out (``Node.start_api_server`` and ``Node.start_monitor`` are skipped while ``ray.init`` runs):

- the API server (the dashboard's head process): with ``include_dashboard=False`` it serves only
  Ray's usage statistics, yet ``ray.init`` waits for it to register, 0.7 s here;
- the autoscaler's monitor, which scales a cluster that a local run's fixed node never changes and
  keeps the state ``ray status`` shows.

Without them ``ray.init`` took a median 1.85 s against 2.6 s here (2 CPUs, 4 starts each, this
session's ``docs/performance.md``). The job, state and dashboard APIs and ``ray status`` are
therefore not available on a Ray the pipeline started; the log monitor stays, so what workers print
still reaches the console. A cluster the run joins is used as it is.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator


def local_system_config() -> dict[str, int]:
    """Ray's settings (``ray.init``'s ``_system_config``) for a Ray this process starts itself; a new
    dict each time, because ray.init adds its own keys to the one it is given.

    The raylet connects to its object store, started on another thread, right away; when the store
    is not listening yet (8 of 15 starts with 2 CPUs here) it waits Ray's whole retry interval, 1 s.
    A hundred times as many tries, 10 ms apart, keep Ray's 10 s budget without the wait: ray.init's
    median 3.14 -> 2.21 s over 15 starts each way (docs/performance.md). `ray start` takes the same
    settings as RAY_raylet_client_connect_timeout_milliseconds and RAY_raylet_client_num_connect_attempts.
    Ray refuses keys it does not know (its GCS exits): Ray is pinned in pyproject.toml, and every
    test that starts Ray would show an upgrade that dropped them."""
    return {"raylet_client_connect_timeout_milliseconds": 10, "raylet_client_num_connect_attempts": 1000}


def start_local_ray(num_cpus: int | None, **options: Any) -> None:
    """Start a new local Ray with ``local_system_config()``, no dashboard, no API server or autoscaler
    monitor, and ``options`` for ray.init; ``address="local"``: our own Ray even where a `ray start`
    cluster runs here, which ray.init() would join."""
    import ray

    with _head_without_api_server_or_monitor():
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _system_config=local_system_config(),
                 **options)


@contextmanager
def _head_without_api_server_or_monitor() -> Iterator[None]:
    """Ray's head node, while the block runs, starts neither process (private methods of the Ray
    pinned in pyproject.toml; ``tests/test_executor.py`` checks that they are still the ones that
    start them)."""
    from ray._private.node import Node

    saved = Node.start_api_server, Node.start_monitor
    Node.start_api_server = lambda self, **_: None
    Node.start_monitor = lambda self: None
    try:
        yield
    finally:
        Node.start_api_server, Node.start_monitor = saved
