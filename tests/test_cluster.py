"""Cluster mode on a real multi-node Ray cluster on this machine, and the machine-level faults.

The cluster (``local_cluster.LocalCluster``) is a head node with no CPUs and worker nodes with one
CPU each, every node its own ``ray start`` with its own raylet, object store and worker processes.
The pipeline is submitted as a separate driver process with ``ray.address`` set to the head node;
inputs, outputs and the quality model are on a path every node sees (here, the local disk).

A worker node is killed with SIGKILL (every process of it) while the rules stage runs and while
dedup's reduce step runs, and a replacement node joins, as a cluster manager would do. Separately,
the driver is killed mid-stage and restarted. Every run ends with the output of an uninterrupted
run of the same config (``sample_run``), and conservation at every stage.

The tasks of the rules stage and of dedup's reduce step (``link_partition``) are slowed down by a
test-only wrapper (``stage_fixtures.faulty``, through ``stage_fixtures.main``), so that the kills
land while those steps have tasks in flight. The wrapper also logs every task attempt with its
worker's pid, which shows which node ran what and that the interrupted tasks were run again.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, SAMPLE_CONFIG
from local_cluster import LocalCluster, cluster_env
from run_checks import assert_conserved, assert_same_contents
from stage_fixtures import FAULTS_VARIABLE, attempts

pytestmark = pytest.mark.slow

DRIVER = ["-c", "import sys, stage_fixtures; sys.exit(stage_fixtures.main(sys.argv[1:]))"]
SLOW = {"rules/": 0.6, "link_partition/": 0.4}  # seconds per task: rules has 10 tasks, the reduce 16
PARTITIONS = 16  # dedup's `partitions` here (one reduce task each): enough tasks to be killed among


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster-logs"), workers=2)
    yield cluster
    cluster.shutdown()


def _cluster_config(tmp_path: Path, cluster: LocalCluster) -> tuple[Path, Path]:
    """configs/sample.yaml for the cluster: absolute paths, URL lists included (workers do not share
    the driver's working directory), ``ray.address`` the head node, and no steps after the stages."""
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    work = tmp_path / "work"
    raw["work_dir"] = str(work)
    raw["ray"] = {"address": cluster.address, "max_retries": 2}
    for source in raw["inputs"]:
        source["path"] = str(REPO / source["path"])
        if source.get("url_filter"):
            source["url_filter"] = {key: [str(REPO / path) for path in paths]
                                    for key, paths in source["url_filter"].items()}
    quality = raw["stages"]["quality"]
    quality["model_path"] = str(REPO / quality["model_path"])  # the model sample_run trained
    # stage by stage: the faults slow and kill the rules stage's own tasks (with fusion, rules runs
    # inside ingest+langid+rules+quality tasks; tests/test_fusion.py covers fused runs)
    raw.update(tokenizer=None, mixture=None, fuse=False)
    raw["stages"]["dedup"]["partitions"] = PARTITIONS
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path, work


def _start_driver(config: Path, faults_dir: Path, log: Path) -> subprocess.Popen:
    faults_dir.mkdir(exist_ok=True)
    env = cluster_env(PYTHONPATH=f"{REPO / 'tests'}:{REPO}",
                      **{FAULTS_VARIABLE: json.dumps({"dir": str(faults_dir), "slow": SLOW})})
    with open(log, "a") as output:
        return subprocess.Popen([sys.executable, *DRIVER, "run", str(config)], cwd=REPO, env=env,
                                stdout=output, stderr=subprocess.STDOUT)


def _wait(condition, driver: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        assert driver.poll() is None, f"the run ended before {what}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _count(directory: Path, pattern: str) -> int:
    """Finished files (not temporaries) in ``directory`` matching ``pattern``."""
    return sum(not p.name.startswith(".") for p in directory.glob(pattern)) if directory.is_dir() else 0


def _in_flight(faults_dir: Path, pids: set[int], prefix: str) -> bool:
    """Whether one of ``pids`` has started a task under ``prefix`` and not finished it."""
    running = set()
    for event, key, pid in attempts(faults_dir):
        if pid in pids and key.startswith(prefix):
            (running.add if event == "start" else running.discard)((key, pid))
    return bool(running)


def _kill_mid_step(cluster: LocalCluster, node: str, faults_dir: Path, prefix: str, outputs: Path,
                   pattern: str, driver: subprocess.Popen, log: Path) -> tuple[set[int], int]:
    """Kill ``node`` once the step has written two outputs and ``node`` runs one of its tasks;
    returns the killed pids and how many outputs the step had then."""
    _wait(lambda: _count(outputs, pattern) >= 2 and _in_flight(faults_dir, cluster.pids(node), prefix),
          driver, log, f"a {prefix} task on {node}")
    killed = cluster.kill(node)
    return killed, _count(outputs, pattern)


def _finish(driver: subprocess.Popen, log: Path) -> None:
    assert driver.wait(timeout=600) == 0, log.read_text()[-5000:]


def _lost_and_redone(faults_dir: Path, killed: set[int], prefix: str) -> list[str]:
    """Tasks under ``prefix`` that a killed process started and never finished, and that another
    process then finished."""
    events = attempts(faults_dir)
    started = {key for event, key, pid in events if event == "start" and pid in killed and key.startswith(prefix)}
    finished_there = {key for event, key, pid in events if event == "end" and pid in killed}
    finished_elsewhere = {key for event, key, pid in events if event == "end" and pid not in killed}
    return sorted((started - finished_there) & finished_elsewhere)


def test_worker_nodes_killed_mid_rules_and_mid_dedup_reduce(cluster, sample_run, tmp_path):
    reference, _, _ = sample_run
    config, work = _cluster_config(tmp_path, cluster)
    faults, log = tmp_path / "faults", tmp_path / "driver.log"
    driver = _start_driver(config, faults, log)
    first_node, second_node = (name for name in cluster.nodes if name != "head")

    first, _ = _kill_mid_step(cluster, first_node, faults, "rules/", work / "03_rules" / "_receipts",
                                     "*.json", driver, log)
    assert not (work / "03_rules" / "_manifest.json").exists(), "killed too late: rules had finished"
    cluster.add_worker()  # a replacement joins, as a cluster manager would start one
    second, reduced = _kill_mid_step(cluster, second_node, faults, "link_partition/",
                                     work / "05_dedup" / "_scratch" / "candidates", "*.parquet", driver, log)
    assert reduced < PARTITIONS, "killed too late: the reduce step had finished"
    cluster.add_worker()
    _finish(driver, log)

    # the tasks the dead nodes were running were run again elsewhere, and every node did work
    assert _lost_and_redone(faults, first, "rules/"), "no rules task was interrupted by the first kill"
    assert _lost_and_redone(faults, second, "link_partition/"), "no reduce task was interrupted by the second kill"
    ran_on = {pid for event, _, pid in attempts(faults) if event == "end"}
    assert ran_on & first and ran_on & second and ran_on - first - second
    assert_same_contents(work, reference)
    assert_conserved(work)


def test_driver_killed_mid_stage_and_restarted(cluster, sample_run, tmp_path):
    reference, _, _ = sample_run
    config, work = _cluster_config(tmp_path, cluster)
    faults, logs = tmp_path / "faults", [tmp_path / f"driver-{n}.log" for n in (1, 2, 3)]

    driver = _start_driver(config, faults, logs[0])
    receipts = work / "03_rules" / "_receipts"
    _wait(lambda: _count(receipts, "*.json") >= 2, driver, logs[0], "rules receipts")
    driver.kill()
    driver.wait()
    assert not (work / "03_rules" / "_manifest.json").exists(), "killed too late: rules had finished"

    driver = _start_driver(config, faults, logs[1])  # resumes rules, then is killed in dedup's reduce
    candidates = work / "05_dedup" / "_scratch" / "candidates"
    _wait(lambda: _count(candidates, "*.parquet") >= 2, driver, logs[1], "reduce outputs")
    driver.kill()
    driver.wait()
    assert _count(candidates, "*.parquet") < PARTITIONS, "killed too late: the reduce step had finished"
    rules = re.search(r"\[03 rules\] (\d+) units, (\d+) reused", logs[1].read_text())
    assert rules and 0 < int(rules[2]) < int(rules[1]), "the second driver did not resume rules"

    driver = _start_driver(config, faults, logs[2])
    _finish(driver, logs[2])
    assert re.search(r"\[05 dedup\] candidates: \d+ items \(\d+ already done\)", logs[2].read_text())
    assert_same_contents(work, reference)
    assert_conserved(work)


def test_auto_joins_the_cluster_of_this_machine_and_null_starts_a_ray_of_its_own(cluster, tmp_path):
    """``ray.address: auto`` finds the cluster that ``ray start`` runs on this machine; ``null`` (the
    sample config's) starts Ray locally even then, instead of joining it (and failing on num_cpus)."""
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": f"document {i}"}) + "\n" for i in range(5)))
    env = cluster_env(RAY_TMPDIR=cluster.system_temp)  # as if `ray start --head` had run here
    for address, workers in (("auto", 2), (None, 1)):
        config = tmp_path / f"{address}.yaml"
        config.write_text(yaml.safe_dump({
            "work_dir": str(tmp_path / f"work-{address}"), "ray": {"address": address, "num_cpus": 1},
            "inputs": [{"name": "t", "path": str(source), "category": "web"}]}))
        run = subprocess.run([sys.executable, "-m", "pipeline", "run", str(config)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert f"{workers} workers" in run.stdout  # the cluster's two worker CPUs, or the local Ray's one
