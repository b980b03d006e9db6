"""The Ray executor: results always in item order, with ``sizes`` largest started first, never more
tasks at once than ``num_workers``; several items to a task (``Group``) with a failing item named;
the settings of a Ray it starts itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray._private.utils import get_dashboard_dependency_error

from conftest import REPO
from pipeline.config import RayConfig
from pipeline.errors import TaskFailed
from pipeline.executor import Group, InProcessExecutor, RayExecutor, run_group, submission_order
from pipeline.local_ray import AGENT_STUB, local_system_config


def _record_start(item: tuple[str, int]) -> int:
    log, value = item
    with open(log, "a") as handle:
        handle.write(f"{value}\n")
    return value * 10


def _meet(item: tuple[str, int]) -> int:
    """Wait (30 s at most) until ``count`` tasks, this one included, have arrived in ``directory``;
    this worker's process id."""
    import os
    import time

    directory, count = item
    Path(directory, f"arrived-{os.getpid()}").touch()
    deadline = time.time() + 30
    while len(list(Path(directory).glob("arrived-*"))) < count and time.time() < deadline:
        time.sleep(0.01)
    return os.getpid()


def _record_span(item: tuple[str, int]) -> int:
    import time

    log, value = item
    started = time.time()
    time.sleep(0.15)
    with open(log, "a") as handle:
        handle.write(f"{value} {started} {time.time()}\n")
    return value


def _tenth(item: tuple[str, int]) -> float:
    if item[1] == 3:
        raise ValueError(f"no tenth of {item[1]}")
    return item[1] / 10


def _slow_unless_first(item: tuple[str, int]) -> int:
    """Item 0 fails at once; the others run for seconds, marking their start and (however they end) their end."""
    import time

    folder, value = item
    if value == 0:
        time.sleep(0.3)
        raise ValueError("the first item fails")
    try:  # the start marker inside: a cancel may land while it is being made, and still end the task
        Path(folder, f"start-{value}").touch()
        for _ in range(100):
            time.sleep(0.03)
        return value
    finally:
        Path(folder, f"end-{value}").touch()


def test_submission_order_is_largest_first_with_ties_in_item_order():
    assert submission_order(5, None) == [0, 1, 2, 3, 4]
    assert submission_order(5, [3, 9, 3, 1, 9]) == [1, 4, 0, 2, 3]
    with pytest.raises(ValueError, match="2 sizes for 3 items"):
        submission_order(3, [1, 2])


def test_ray_starts_the_largest_items_first_and_returns_results_in_item_order(ray_cluster, tmp_path: Path):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/
    log = tmp_path / "started.txt"
    sizes = [1, 50, 7, 50, 3, 20]
    executor = RayExecutor(RayConfig(num_workers=1))  # one task at a time: start order = run order
    results = executor.map(_record_start, [(str(log), value) for value in range(6)], "order", sizes=sizes)
    assert results == [0, 10, 20, 30, 40, 50]
    assert [int(line) for line in log.read_text().split()] == [1, 3, 5, 2, 4, 0]


def test_a_full_cluster_queues_a_task_per_worker_yet_runs_no_more_than_its_workers(ray_cluster, tmp_path: Path):
    # With num_workers covering the cluster's CPUs the executor keeps a second task per worker
    # waiting in Ray; Ray's CPUs still hold the tasks running at once to the workers.
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    log = tmp_path / "spans.txt"
    executor = RayExecutor(RayConfig(num_workers=2))
    # Both worker processes up first: started on demand, on a busy 2-core machine the second one's
    # start can outlast all eight tasks, which then run one at a time for want of it.
    assert len(set(executor.map(_meet, [(str(tmp_path), 2)] * 2, "warm-up"))) == 2
    assert executor.map(_record_span, [(str(log), value) for value in range(8)], "spans") == list(range(8))
    spans = [tuple(map(float, line.split()))[1:] for line in log.read_text().splitlines()]
    assert len(spans) == 8
    most = max(sum(start <= moment < end for start, end in spans) for moment, _ in spans)
    assert most == 2


def _plus_ten(result: float) -> list[tuple[str, int]]:
    """``map``'s ``more`` for ``_tenth``: one item more (ten more) for a result under 1, none for the others."""
    value = round(result * 10)
    return [("x", value + 10)] if value < 10 else []


def test_more_adds_items_that_run_and_return_after_the_others(ray_cluster):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = RayExecutor(RayConfig(num_workers=2))
    results = executor.map(_tenth, [("x", 1), ("x", 2), ("x", 4)], "tenths", more=_plus_ten)
    # the added items' results in the order they were added, which is the order their parents ended
    assert results[:3] == [0.1, 0.2, 0.4] and sorted(results[3:]) == [1.1, 1.2, 1.4]
    assert InProcessExecutor().map(_tenth, [("x", 1), ("x", 2)], "tenths", more=_plus_ten) == [0.1, 0.2, 1.1, 1.2]
    with pytest.raises(TaskFailed, match=r"tenths: task for _tenth 3 failed: ValueError: no tenth of 3"):
        executor.map(_tenth, [("x", 2)], "tenths", more=lambda result: [("x", 3)])


def _pid(_item: int) -> int:
    import os

    return os.getpid()


def test_maps_of_one_function_share_its_remote_function_yet_own_process_still_gets_a_process_per_task(ray_cluster):
    # Ray ships every new remote function to each worker before its first task: a dedup step's few
    # milliseconds. So a function's remote is made once per executor, with its own per setting.
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = RayExecutor(RayConfig(num_workers=1))
    executor.map(_pid, [0, 1, 2], "pids")
    executor.map(_pid, [3, 4], "pids again")
    assert len(executor._remotes) == 1
    own = executor.map(_pid, [0, 1, 2], "own processes", own_process=True)
    assert len(executor._remotes) == 2
    assert len(set(own)) == 3  # each of those processes exited after its task


def test_a_group_runs_its_items_in_order_and_a_failing_item_is_named(ray_cluster):
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    assert run_group(Group(_tenth, (("x", 1), ("x", 2)))) == [0.1, 0.2]
    executor = RayExecutor(RayConfig(num_workers=2))
    groups = [Group(_tenth, (("x", 0), ("x", 1))), Group(_tenth, (("x", 2), ("x", 4)))]
    assert executor.map(run_group, groups, "tenths") == [[0.0, 0.1], [0.2, 0.4]]
    assert repr(groups[1]) == "_tenth[2,4]"
    with pytest.raises(TaskFailed, match=r"tenths: task for _tenth 3 failed: ValueError: no tenth of 3 \(at "):
        executor.map(run_group, [Group(_tenth, (("x", 2), ("x", 3), ("x", 4)))], "tenths")


def test_a_failing_task_stops_the_run_only_after_its_other_running_tasks_have_ended(ray_cluster, tmp_path: Path):
    # A rerun started right after a failure must not meet a task of the failed run still writing
    # (a temporary it removes, then the rerun's cleanup cannot find).
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    executor = RayExecutor(RayConfig(num_workers=2))
    with pytest.raises(TaskFailed, match="the first item fails"):
        executor.map(_slow_unless_first, [(str(tmp_path), value) for value in range(4)], "stop")
    started = {path.name.split("-")[1] for path in tmp_path.glob("start-*")}
    ended = {path.name.split("-")[1] for path in tmp_path.glob("end-*")}
    # a task cancelled before its start marker leaves only an end marker
    assert started and started <= ended


def _processes() -> list[tuple[int, str]]:
    """(parent pid, command line) of every process this user can read in /proc."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):  # gone meanwhile, or not ours to read
            continue
        parents = [line.split()[1] for line in status.splitlines() if line.startswith("PPid:")]
        if parents:
            found.append((int(parents[0]), command))
    return found


def _agents(raylet_pid: int) -> list[str]:
    """The command lines of the processes ``raylet_pid`` started that run an agent: Ray's (which
    retitle themselves ``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``) or the stub."""
    return [command for parent, command in _processes() if parent == raylet_pid and "agent" in command.lower()]


def _stubs_of(sessions: set[str]) -> list[str]:
    """Command lines of running stubs started for any of these Ray sessions."""
    return [command for _, command in _processes() if AGENT_STUB in command and _sessions([command]) & sessions]


def _sessions(commands: list[str]) -> set[str]:
    return {part.split("=", 1)[1] for command in commands for part in command.split() if part.startswith("--session-dir=")}


_REPORT_A_STARTED_RAY = """
import json, pathlib, ray, sys
sys.path.insert(0, "tests")
from test_executor import _agents
from pipeline.config import RayConfig
from pipeline.executor import RayExecutor
executor = RayExecutor(RayConfig(num_cpus=1))
node = ray._private.worker._global_node
raylet = node.all_processes["raylet"][0].process.pid
ports = {path.name.rsplit("_", 1)[0]: path.read_text() for path in pathlib.Path(node.get_session_dir_path()).glob("*_port_*")}
print(json.dumps([ray._private.state.state.get_system_config(), sorted(node.all_processes), _agents(raylet), ports,
                  executor.map(abs, [-1, -2], "abs")]))
executor.shutdown()
"""
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads processes from /proc (Linux)")
# The project installs Ray's minimal package; with ray[default] the dashboard agent stays Ray's.
MINIMAL_RAY = pytest.mark.skipif(get_dashboard_dependency_error() is None, reason="ray[default] is installed")


@LINUX_PROC
@MINIMAL_RAY
def test_a_ray_the_executor_starts_gets_its_settings_and_leaves_out_what_a_local_run_never_uses():
    # local_system_config() spares a local start Ray's 1 s wait for its object store; Ray refuses
    # system settings from a driver that joins a running cluster, so those must not be passed there.
    # The API server and the autoscaler's monitor are left out, and the raylet runs the stub in
    # place of both of Ray's agents (pipeline/local_ray.py); the log monitor, which brings what
    # workers print to the console, stays. Tasks run; the stubs end with the raylet.
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    result = subprocess.run([sys.executable, "-c", _REPORT_A_STARTED_RAY], capture_output=True, text=True, env=env,
                            cwd=REPO, timeout=300, check=True)
    started, processes, agents, ports, results = json.loads(result.stdout.strip().splitlines()[-1])
    assert {key: started.get(key) for key in local_system_config()} == local_system_config()
    assert {"gcs_server", "raylet", "log_monitor"} <= set(processes)
    assert not {"dashboard", "monitor"} & set(processes)
    assert len(agents) == 2 and all(AGENT_STUB in command for command in agents), agents
    assert {ports[name] for name in ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port")} == {"-1"}
    assert int(ports["runtime_env_agent_port"]) > 0
    assert results == [1, 2]
    sessions = _sessions(agents)
    deadline = time.monotonic() + 10  # Ray ends its agents at shutdown; a stub polls for its raylet twice a second
    while _stubs_of(sessions) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _stubs_of(sessions)


@LINUX_PROC
@MINIMAL_RAY
def test_a_ray_given_a_runtime_env_keeps_ray_s_runtime_env_agent(ray_cluster):
    # The test session's Ray is started with a runtime_env (conftest.py): its tasks need the real
    # runtime environment agent, and they run (every other test here is the proof); the dashboard
    # agent is the stub.
    import ray

    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    agents = _agents(raylet)
    assert len(agents) == 2
    assert sum(AGENT_STUB in command for command in agents) == 1
    assert sum("RuntimeEnvAgent" in command or "runtime_env/agent/main.py" in command for command in agents) == 1


def test_joining_a_running_cluster_passes_no_system_settings(ray_cluster):
    code = ("import ray; from pipeline.config import RayConfig; from pipeline.executor import RayExecutor; "
            f"executor = RayExecutor(RayConfig(address={ray_cluster!r})); "
            "print(executor.workers); executor.shutdown()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                            timeout=300, check=True)
    assert result.stdout.strip().splitlines()[-1] == "2"
