"""A real multi-node Ray cluster on one machine, for tests: a head node and worker nodes, each
started with ``ray start --block`` as its own process session (its own raylet, object store and
worker processes), so one node can be killed with SIGKILL without touching the others, or any
other Ray instance on the machine.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline.local_ray import local_system_config

RAY = str(Path(sys.executable).with_name("ray"))
OBJECT_STORE_BYTES = 80_000_000  # per node; Ray's minimum is about 75 MB
# The GCS declares a node dead after this many missed health checks of this period. Ray's defaults
# (5 x 3 s) leave tasks queued for the dead node waiting about 15 s; tests need not wait that long.
HEALTH_CHECK = {"RAY_health_check_period_ms": "500", "RAY_health_check_timeout_ms": "500",
                "RAY_health_check_failure_threshold": "3"}


def cluster_env(**extra: str) -> dict[str, str]:
    """The environment for the nodes and for drivers joining them.

    Token authentication is switched off explicitly: ``ray start --head`` turns it on by itself when
    ``~/.ray/auth_token`` exists (a local ``ray.init`` writes one), but ``ray start --address`` does
    not, so the worker nodes would be refused. A real cluster either sets ``RAY_AUTH_MODE=token``
    and ships the token to every node, or disables it like this.
    """
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", **extra)
    # What ``pipeline.local_ray.local_system_config`` gives a local Ray: no 1 s wait for a node's object store.
    env.update({f"RAY_{key}": str(value) for key, value in local_system_config().items()})
    return env


class LocalCluster:
    """``head`` has no CPUs (so every task runs on a worker node); each worker node has ``cpus``."""

    def __init__(self, log_dir: Path, workers: int = 2, cpus: int = 1):
        # Ray's session directory holds its Unix sockets, whose paths must stay under 108 bytes:
        # a short directory of our own under /tmp, not pytest's deep tmp_path. With RAY_TMPDIR set
        # to it, Ray sees this cluster as the machine's own (`ray start` writes its address there).
        self.system_temp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")
        self.temp_dir = os.path.join(self.system_temp, "ray")
        self.log_dir, self.cpus = log_dir, cpus
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: dict[str, subprocess.Popen] = {}  # the live ones
        self.started = 0  # worker nodes started so far
        try:
            self._start("head", ["--head", f"--port={self.port}", "--num-cpus=0", "--include-dashboard=false",
                                 f"--temp-dir={self.temp_dir}"], HEALTH_CHECK)
            for _ in range(workers):
                self.add_worker()
        except BaseException:
            self.shutdown()
            raise

    def add_worker(self) -> str:
        """Start one more worker node and wait until it runs; returns its name (worker-1, worker-2, ...).

        Nodes start one at a time: of two worker nodes started at once on one machine, one was
        seen never to register with the head."""
        self.started += 1
        name = f"worker-{self.started}"
        self._start(name, [f"--address={self.address}", f"--num-cpus={self.cpus}"])
        return name

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        path = self.log_dir / f"{name}.log"
        with open(path, "w") as log:
            node = subprocess.Popen(
                [RAY, "start", "--block", f"--object-store-memory={OBJECT_STORE_BYTES}", *args],
                env=cluster_env(**(env or {})), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.nodes[name] = node

        def started() -> bool:
            if node.poll() is not None:
                raise RuntimeError(f"ray start of {name} exited with {node.returncode}:\n{path.read_text()[-3000:]}")
            return "will now block forever" in path.read_text()
        _wait(started, 120, f"{name} did not start in 120 s; see {path}")

    def pids(self, name: str) -> set[int]:
        """The processes of one node now."""
        return _session_members(self.nodes[name].pid)  # start_new_session: session id = its pid

    def kill(self, name: str) -> set[int]:
        """SIGKILL every process of one node (``ray start``, raylet with its object store, agents,
        workers); returns their pids."""
        members = self.pids(name)
        node = self.nodes.pop(name)
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.wait()
        return members

    def shutdown(self) -> None:
        for name in [n for n in self.nodes if n != "head"] + ["head"]:
            if name in self.nodes:
                self.kill(name)
        shutil.rmtree(self.system_temp, ignore_errors=True)


def _session_members(session: int) -> set[int]:
    members = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == session:
                    members.add(int(entry.name))
            except (ProcessLookupError, PermissionError):
                pass
    return members


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(0.2)
