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
session's ``docs/performance-history.md``). The job, state and dashboard APIs and ``ray status`` are
therefore not available on a Ray the pipeline started; the log monitor stays, so what workers print
still reaches the console. A cluster the run joins is used as it is.

Two waits of the start-up remain, and ``start_local_ray`` shortens both (``_quick_node``):

- the raylet registers its node only once its two agents (the dashboard agent and the runtime
  environment agent) have written their ports, and both import Ray first (about 0.85 s, and that
  much CPU each). A local run uses neither, so ``pipeline/ray_agent_stub.py`` stands in for both
  and writes what a minimal install's agents write at once. The runtime environment agent stays
  real where ``ray.init`` is given a ``runtime_env`` (the test suite's Ray is), the dashboard agent
  where the dashboard's dependencies are installed (``ray[default]``: it then exports Ray's
  metrics; the project installs Ray's minimal package). Nothing the pipeline does needs them; a
  task that asked for a runtime environment of its own on such a Ray would stop it: after 30 s the
  raylet exits, saying its runtime environment agent does not answer;
- ``ray.init`` asks the GCS for the node 0.1 s after starting the raylet and, if it has not
  registered yet, asks again a whole second later (Ray's ``GlobalStateAccessor::GetNode``). Here
  the GCS's node table is read every 10 ms until the node is there, and only then is Ray's call made.

Each alone saves nothing (the node registers after the agents, or the second ask comes a second
later anyway); with both, ``ray.init`` took a median 1.06 s against 1.81 s here (2 CPUs, 8 starts
each way, alternately; docs/performance-history.md).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

AGENT_STUB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ray_agent_stub.py")


def local_system_config() -> dict[str, int]:
    """Ray's settings (``ray.init``'s ``_system_config``) for a Ray this process starts itself; a new
    dict each time, because ray.init adds its own keys to the one it is given.

    The raylet connects to its object store, started on another thread, right away; when the store
    is not listening yet (8 of 15 starts with 2 CPUs here) it waits Ray's whole retry interval, 1 s.
    A hundred times as many tries, 10 ms apart, keep Ray's 10 s budget without the wait: ray.init's
    median 3.14 -> 2.21 s over 15 starts each way (docs/performance-history.md). `ray start` takes the same
    settings as RAY_raylet_client_connect_timeout_milliseconds and RAY_raylet_client_num_connect_attempts.
    Ray refuses keys it does not know (its GCS exits): Ray is pinned in pyproject.toml, and every
    test that starts Ray would show an upgrade that dropped them."""
    return {"raylet_client_connect_timeout_milliseconds": 10, "raylet_client_num_connect_attempts": 1000}


def start_local_ray(num_cpus: int | None, **options: Any) -> None:
    """Start a new local Ray with ``local_system_config()``, no dashboard, no API server or autoscaler
    monitor, its agents stubbed, and ``options`` for ray.init; ``address="local"``: our own Ray even
    where a `ray start` cluster runs here, which ray.init() would join."""
    import ray

    with _head_without_api_server_or_monitor(), _quick_node(runtime_env="runtime_env" in options):
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


@contextmanager
def _quick_node(runtime_env: bool) -> Iterator[None]:
    """While the block runs, a raylet Ray starts runs ``AGENT_STUB`` in place of its dashboard agent
    (with Ray's minimal install, the project's) and, unless ``runtime_env``, of its runtime
    environment agent; and ``ray.init`` asks for the node once the GCS has it (module functions of
    ``ray._private.services`` of the Ray pinned in pyproject.toml; ``tests/test_executor.py`` checks
    that no agent of Ray's runs and that tasks do)."""
    from ray._private import ray_constants, services
    from ray._private.utils import get_dashboard_dependency_error

    # With the dashboard's dependencies installed (ray[default]) the agent exports Ray's metrics: kept.
    agents = [os.path.join(services.RAY_PATH, "dashboard", "agent.py")] if get_dashboard_dependency_error() else []
    if not runtime_env:
        agents.append(os.path.join(services.RAY_PATH, "_private", "runtime_env", "agent", "main.py"))
    saved_start, saved_get_node = services.start_ray_process, services.get_node

    def start_ray_process(command: list[str], process_type: str, *args: Any, **kwargs: Any):
        if process_type == ray_constants.PROCESS_TYPE_RAYLET and " " not in AGENT_STUB:
            command = [_stubbed(argument, agents) for argument in command]
        return saved_start(command, process_type, *args, **kwargs)

    services.start_ray_process = start_ray_process
    services.get_node = _once_registered(saved_get_node)
    try:
        yield
    finally:
        services.start_ray_process, services.get_node = saved_start, saved_get_node


def _stubbed(argument: str, agents: list[str]) -> str:
    """A raylet argument with each agent script in it (its ``--*_agent_command=``) replaced by the stub."""
    if argument.startswith("--") and "_agent_command=" in argument:
        for script in agents:
            argument = argument.replace(script, AGENT_STUB)
    return argument


def _once_registered(get_node: Callable[[str, str], dict], timeout_s: float = 30.0) -> Callable[[str, str], dict]:
    """``get_node``, called once the GCS's node table holds the node alive (read every 10 ms, for at
    most ``timeout_s``; after that, or if reading the table fails, Ray's call waits and fails as it
    would have)."""
    def wait_then_get(gcs_address: str, node_id: str) -> dict:
        from ray._private import services
        from ray._private.state import GlobalState

        state = GlobalState()
        deadline = time.monotonic() + timeout_s
        try:
            state._initialize_global_state(services._get_gcs_client_options(gcs_address))
            while time.monotonic() < deadline:
                if any(node["NodeID"] == node_id and node["Alive"] for node in state.node_table()):
                    break
                time.sleep(0.01)
        except Exception:  # a shortcut only: Ray's own call below waits, or fails naming why
            pass
        finally:
            state.disconnect()
        return get_node(gcs_address, node_id)

    return wait_then_get
