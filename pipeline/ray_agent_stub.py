"""Stands in for Ray's two per-node agents on a Ray that ``pipeline.local_ray`` starts: run by the
raylet, with the agent's own arguments, in place of ``ray/dashboard/agent.py`` or
``ray/_private/runtime_env/agent/main.py``.

The raylet waits, before it registers its node, until each agent has written its ports to the
session directory; both agents import Ray first, which kept every local start waiting about 0.85 s
on 2 cores (and took that much CPU from the rest of the start-up, twice). A local run uses neither
agent: with Ray's minimal install and no dashboard, the dashboard agent only writes that it serves
nothing (port -1 for the metrics agent, its export port and its HTTP listener), which this script
writes at once; the runtime environment agent serves only tasks and jobs that ask for a runtime
environment, which the pipeline never does (``start_local_ray`` keeps the real one where ``ray.init``
is given a ``runtime_env``). For it this script reserves a port on which nothing answers, so a task
that asked for a runtime environment anyway stops that Ray with Ray's own message about this agent
(the raylet exits after 30 s).

The script imports nothing of Ray or the pipeline, and it exits when the raylet that started it is
gone (Ray kills its agents at shutdown; this covers a raylet that was killed).
"""
from __future__ import annotations

import argparse
import os
import socket
import time

# The port files a minimal dashboard agent writes, each holding -1.
DASHBOARD_PORTS = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port")
RUNTIME_ENV_PORT = "runtime_env_agent_port"


def persist_port(session_dir: str, node_id: str, name: str, port: int) -> None:
    """What ``ray._raylet.persist_port`` writes: ``<session_dir>/<name>_<node_id>`` holding the port;
    written to a temporary name first, so the raylet never reads half a number."""
    path = os.path.join(session_dir, f"{name}_{node_id}")
    with open(f"{path}.{os.getpid()}.tmp", "w", encoding="ascii") as sink:
        sink.write(str(port))
    os.replace(f"{path}.{os.getpid()}.tmp", path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--session-dir", required=True)
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--node-ip-address", default="127.0.0.1")
    parser.add_argument("--runtime-env-agent-port", type=int, default=None)
    args, _ = parser.parse_known_args()
    if args.runtime_env_agent_port is None:
        for name in DASHBOARD_PORTS:
            persist_port(args.session_dir, args.node_id, name, -1)
    else:
        # Bound, never listening: the port stays ours, and a connection to it is refused at once.
        reserved = socket.socket(socket.AF_INET6 if ":" in args.node_ip_address else socket.AF_INET)
        reserved.bind((args.node_ip_address, args.runtime_env_agent_port))
        persist_port(args.session_dir, args.node_id, RUNTIME_ENV_PORT, reserved.getsockname()[1])
    raylet = os.getppid()
    while os.getppid() == raylet:
        time.sleep(0.5)


if __name__ == "__main__":
    main()
