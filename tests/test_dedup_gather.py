"""Dedup's two-level shuffle (``stages.dedup.exchange``): the stage's output and the scratch files later
steps read are byte-identical with and without the gather level, in process and on Ray, keeper rounds
and the distributed components (``star``, ``partitioned``; giant clusters split or not) included; a
rerun redoes only the gather blocks whose files are missing, and a run killed mid-step resumes; the
benchmark's counts of file reads are the ones ``exchange.reads`` predicts."""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from conftest import REPO
from pipeline.config import parse_config
from pipeline.stage import PrepareContext
from stages.dedup import Dedup, DedupConfig, documents, exchange, paragraphs, partitioned, star
from stages.dedup.steps import make_job
from test_components import digests
from test_dedup import in_process, write_shards
from test_keeper_rounds import FAMILIES, families

sys.path.insert(0, str(REPO / "bench"))
import bench_dedup_shuffle  # noqa: E402

DIRECT = {"gather": "never"}
DISTRIBUTED = {"method": "distributed"}
SPLIT = {"method": "distributed", "split_above_arcs": 0, "split_slices": 2}  # every node and cluster split


def gathered(block: int) -> dict:
    return {"gather": "always", "gather_block": block}


def prepare(inputs: dict[str, str], scratch: Path, map_fn=in_process, **config) -> list[str]:
    log = []
    Dedup(DedupConfig(**config)).prepare(PrepareContext(inputs=inputs, scratch=str(scratch),
                                                        filesystem=pafs.LocalFileSystem(), map=map_fn, log=log.append))
    return log


def map_files(scratch: Path, config: dict) -> set[str]:
    """The directories (every round's and step's) whose files the gather level lays out otherwise:
    the map sides of the exchanges; their rows are the same either way."""
    names = {documents.BANDS, documents.HEADS, paragraphs.PARAGRAPHS, paragraphs.REMOVALS,
             paragraphs.SUCCESSOR_REMOVALS, star.ROUTED, star.NODES, star.LABELS, partitioned.MEMBERS,
             partitioned.KEEPERS}
    if config.get("verify", True) and config.get("near_duplicates", True):
        names.add(documents.CANDIDATES)  # without verify, the candidates are the edges: compared
    directories = {str(path.parent.relative_to(scratch)) for path in scratch.rglob("*.parquet")}
    return {d for d in directories if d.split("-round")[0] in names or d.startswith(star.arcs(0)[:-1])}


def scratch_digests(scratch: Path, skip: set[str]) -> dict[str, str]:
    return {str(path.relative_to(scratch)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(scratch.rglob("*")) if path.is_file()
            and path.relative_to(scratch).parts[0] != "gathered" and str(path.parent.relative_to(scratch)) not in skip}


# ----------------------------------------------------------------------------- when it is chosen

def test_the_gather_level_is_chosen_by_reads_and_keeps_enough_gather_tasks(tmp_path):
    def between(shards: int, sources: int, targets: int, **settings) -> exchange.Exchange:
        inputs = {f"part-{i:05d}": "unread" for i in range(shards)}
        job = make_job(DedupConfig(shuffle=settings), inputs, str(tmp_path / str(shards)), pafs.LocalFileSystem())
        return exchange.Exchange.between(job, "x", "x", sources, targets, to_shards=True)

    assert between(100, 100, 100).block is None  # 10,000 reads: at the default threshold, direct
    assert between(101, 101, 101).block == 12  # 10,201: gathered, in blocks of 101 // 8 shards
    assert between(400, 400, 400).block == 32
    assert exchange.reads(400, 400, 32) == 400 * 13 + 400
    assert between(40_000, 40_000, 15).block is None  # at least 8 gather tasks: blocks of 1, no fewer reads
    assert between(40_000, 40_000, 16).block == 2  # 16 partitions (auto from 64 shards): 8 gather tasks of 2
    assert between(40_000, 40_000, 128).block == 16  # blocks of 16, not 32
    assert between(10, 10, 10, gather="always", gather_block=3).block == 3
    assert between(10_000, 10_000, 10_000, gather="never").block is None
    assert between(20, 20, 20, gather_above_reads=0).block == 2
    with pytest.raises(ValueError, match="gather_block"):
        DedupConfig(shuffle={"gather_block": 0})
    with pytest.raises(ValueError, match="gather"):
        DedupConfig(shuffle={"gather": "sometimes"})
    with pytest.raises(ValueError, match="not permitted"):
        DedupConfig(shuffle={"gather_above": 10})


# ----------------------------------------------------------------------------- the same bytes

@pytest.mark.parametrize("settings, config", [
    (gathered(2), {"partitions": 5, **FAMILIES}),  # keeper rounds: round-scoped exchanges
    (gathered(3), {"partitions": 7, **FAMILIES, "keep": "quality"}),
    (gathered(4), {"partitions": 4, "verify": False}),  # the candidates are the edges
    (gathered(2), {"partitions": 3, "near_duplicates": False}),
    ({"gather": "auto", "gather_above_reads": 0, "gather_block": 8}, {"partitions": 16, **FAMILIES}),
    (gathered(2), {"partitions": 4, **FAMILIES, "components": DISTRIBUTED}),  # star rounds, partitioned
    (gathered(3), {"partitions": 5, **FAMILIES, "components": SPLIT}),  # giant clusters' steps too
])
def test_prepare_writes_the_same_files_with_the_gather_level(tmp_path, settings, config):
    inputs = write_shards(tmp_path / "in", families(3) + families(4), 9)
    direct_log = prepare(inputs, tmp_path / "direct", shuffle=DIRECT, **config)
    log = prepare(inputs, tmp_path / "two", shuffle=settings, **config)

    assert not any(line.startswith("gather") for line in direct_log)
    assert any(line.startswith("gather") for line in log) and (tmp_path / "two" / "gathered").is_dir()
    if "components" in config:
        gathers = {line.split(":")[0] for line in log if line.startswith("gather")}
        assert {"gather components edges", "gather components arcs-3", "gather components nodes",
                "gather components labels", "gather cluster members", "gather cluster keepers",
                "gather giant rows (keeper round 1)"} <= gathers
        # the roots' map files: laid out by gather block, with the same rows and footer counts
        for directory in (star.NODES, star.LABELS):
            files = sorted((tmp_path / "direct" / directory).glob("*.parquet"))
            assert len(files) == config["partitions"]
            for path in files:
                other = tmp_path / "two" / directory / path.name
                assert pq.read_table(path).equals(pq.read_table(other), check_metadata=True)
    skip = map_files(tmp_path / "direct", config)
    direct = scratch_digests(tmp_path / "direct", skip)
    assert direct == scratch_digests(tmp_path / "two", skip)
    assert any(name.startswith("decisions/") for name in direct) and "summary.json" in direct
    if "threshold" in config:
        assert any(name.startswith("clusters-round1/") for name in direct), "a keeper round should run"


def run_dedup(work: Path, source: Path, shuffle: dict, use_ray: bool, components: dict | None = None) -> Path:
    from pipeline.runner import run_pipeline

    config = parse_config({
        "work_dir": str(work), "ingest": {"shard_bytes": 12_000},
        "inputs": [{"name": "t", "path": str(source), "category": "web"}],
        "stages": {"dedup": {"partitions": 5, **FAMILIES, "shuffle": shuffle, "components": components or {}}},
    })
    run_pipeline(config, use_ray=use_ray, log=lambda _: None)
    return work / "02_dedup"


def test_stage_output_is_byte_identical_on_ray_and_in_process(tmp_path, ray_cluster):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in families(5) + families(6)))
    direct = run_dedup(tmp_path / "direct", source, DIRECT, use_ray=True)
    on_ray = run_dedup(tmp_path / "ray", source, gathered(2), use_ray=True)
    in_process_ = run_dedup(tmp_path / "local", source, gathered(3), use_ray=False)
    # the distributed components, every node and cluster split, each of their exchanges gathered
    split = run_dedup(tmp_path / "split", source, gathered(2), use_ray=True, components=SPLIT)

    shards = len(list((direct / "kept").glob("*.parquet")))
    assert shards >= 6, "the corpus should make several shards"
    assert (on_ray / "_scratch" / "gathered").is_dir() and not (direct / "_scratch" / "gathered").exists()
    assert (split / "_scratch" / "gathered" / star.arcs(1) / "block-2").is_dir()
    assert (split / "_scratch" / "gathered" / star.LABELS / "block-2").is_dir()
    assert (split / "_scratch" / "gathered" / f"{partitioned.KEEPERS}-round1" / "giant-block-2").is_dir()
    outputs = digests(direct, "*/*.parquet")  # kept/, removed/
    assert len(outputs) >= 2 * shards
    for other in (on_ray, in_process_, split):
        assert digests(other, "*/*.parquet") == outputs
        for pattern in ("_scratch/decisions/*", "_scratch/clusters*/*", "_scratch/edges/*", "_scratch/summary.json",
                        "_scratch/too-short-keepers*/*", "_scratch/short-successors*/*"):
            assert digests(other, pattern) == digests(direct, pattern), pattern
    assert digests(direct, "_scratch/clusters-round1/*"), "the corpus should need a second keeper round"


# ----------------------------------------------------------------------------- resume

def test_a_rerun_redoes_only_the_gather_blocks_whose_files_are_missing(tmp_path):
    inputs = write_shards(tmp_path / "in", families(3), 8)
    scratch = tmp_path / "scratch"
    config = {"partitions": 4, **FAMILIES, "shuffle": gathered(3)}
    prepare(inputs, scratch, **config)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in scratch.rglob("*.parquet")}
    heads = scratch / "gathered" / documents.HEADS / "block-3"
    removals = scratch / "gathered" / paragraphs.REMOVALS / "block-3"
    # Blocks of 3 shards: 0-2, 3-5, 6-7. A killed block renamed its first files, not its last; another
    # never started.
    deleted = [heads / "00005.parquet", removals / "00006.parquet", removals / "00007.parquet"]
    for path in deleted:
        path.unlink()

    log = prepare(inputs, scratch, **config)
    todo = {found.group(1): int(found.group(2)) for found in map(re.compile(r"(.+): (\d+) items").match, log) if found}
    assert {step: tasks for step, tasks in todo.items() if tasks} == {
        "gather candidate signatures": 1, "gather paragraph removals": 1}
    redone = {p for p, (mtime, _) in before.items() if p.stat().st_mtime_ns != mtime}
    assert redone == {heads / f"{i:05d}.parquet" for i in (3, 4, 5)} | {removals / f"{i:05d}.parquet" for i in (6, 7)}
    assert all(p.read_bytes() == data for p, (_, data) in before.items())


def test_lost_gathered_files_of_the_components_are_written_again_and_their_readers_rerun(tmp_path):
    inputs = write_shards(tmp_path / "in", families(3), 8)
    scratch = tmp_path / "scratch"
    config = {"partitions": 4, **FAMILIES, "components": SPLIT, "shuffle": gathered(2)}
    prepare(inputs, scratch, **config)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in scratch.rglob("*.parquet")}
    gathered_ = scratch / "gathered"
    # Blocks of 2 partitions or shards. The last gathered file of a block is its commit point: lost,
    # the block is gathered again; a star task's output lost with it (a step's map file, whose footer
    # the driver reads) is written again from it. A lost first file stays lost: its block counts as
    # done and its reader's output exists. The roots' labels, gathered once by star's last steps, are
    # gathered again before any keeper round reads them: here round 1's members of shard 5, lost too.
    arcs, members = gathered_ / star.arcs(1) / "block-2", gathered_ / partitioned.MEMBERS / "block-2"
    labels, members_1 = gathered_ / star.LABELS / "block-2", scratch / f"{partitioned.MEMBERS}-round1"
    lost = [arcs / "00001.parquet", scratch / star.arcs(2) / "00001.parquet", members / "00003.parquet",
            labels / "00005.parquet", members_1 / "00005.parquet",
            gathered_ / partitioned.KEEPERS / "giant-block-2" / "00004.parquet"]
    for path in lost:
        path.unlink()

    log = prepare(inputs, scratch, **config)
    todo = {found.group(1): int(found.group(2)) for found in map(re.compile(r"(.+): (\d+) items").match, log) if found}
    assert {step: tasks for step, tasks in todo.items() if tasks} == {
        "gather components arcs-1": 1, "components: small star 1": 1, "gather components labels": 1,
        "gather cluster members": 1, "cluster members (keeper round 1)": 1}
    redone = {p for p, (mtime, _) in before.items() if p.exists() and p.stat().st_mtime_ns != mtime}
    assert redone == {arcs / "00000.parquet", arcs / "00001.parquet", scratch / star.arcs(2) / "00001.parquet",
                      labels / "00004.parquet", labels / "00005.parquet", members_1 / "00005.parquet",
                      members / "00002.parquet", members / "00003.parquet"}
    assert all(p.read_bytes() == data for p, (_, data) in before.items() if p.exists())
    assert not lost[-1].exists()


KILLED_RUN = textwrap.dedent("""
    import sys
    import pyarrow.fs as pafs
    from pipeline.stage import PrepareContext
    from stage_fixtures import dying_map
    from stages.dedup import Dedup, DedupConfig

    inputs, scratch, survive = eval(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    config = DedupConfig(partitions=4, shuffle={"gather": "always", "gather_block": 3})
    Dedup(config).prepare(PrepareContext(inputs=inputs, scratch=scratch, filesystem=pafs.LocalFileSystem(),
                                         map=dying_map(survive), log=lambda _: None))
""")


# 6 shards, 4 partitions, blocks of 3 (2 blocks), a task per three items at most (``steps.MIN_GROUP_ITEMS``):
# tasks 0-5 signatures, 6 gather bands, 7-8 candidates, 9 gather candidates, 10-11 attach, 12 gather
# candidate signatures, 13-14 verify, 15 clusters, 16-17 paragraphs, 18 gather paragraphs, 19-20 paragraph
# removals, 21-22 gather removals and successor removals, 23-24 short keepers, then keeper round 1 (25-34).
@pytest.mark.parametrize("survive", [7, 12, 22, 32])
def test_resumes_after_sigkill_with_the_gather_level(tmp_path, survive):
    from test_dedup import run

    inputs = write_shards(tmp_path / "in", families(7), 6)
    scratch = tmp_path / "scratch"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, repr(inputs), str(scratch), str(survive)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    assert killed.returncode == -signal.SIGKILL
    finished_before = {p: p.stat().st_mtime_ns for p in scratch.rglob("*.parquet")}
    assert any("gathered" in p.parts for p in finished_before) == (survive > 6)

    settings = {"partitions": 4, "shuffle": gathered(3)}
    assert run(inputs, scratch, **settings) == run(inputs, tmp_path / "fresh", partitions=4, shuffle=DIRECT)
    redone = [p for p, mtime in finished_before.items() if p.stat().st_mtime_ns != mtime]
    assert not redone, f"finished tasks were redone: {redone}"


# ----------------------------------------------------------------------------- what the benchmark counts

def test_the_benchmark_counts_the_reads_the_exchanges_predict(tmp_path):
    shards, partitions, block = 16, 16, 8
    inputs = bench_dedup_shuffle.write_corpus(tmp_path / "in", shards, 20)
    counted = {}
    for path, settings in bench_dedup_shuffle.PATHS.items():
        config = {"partitions": partitions, "shuffle": {**settings, "gather_block": block}}
        counted[path] = bench_dedup_shuffle.prepare_counted(inputs, str(tmp_path / path.replace(" ", "-")), config)
    assert counted["direct"]["digests"] == counted["two level"]["digests"]
    direct = {step["step"]: step for step in counted["direct"]["steps"]}
    two = {step["step"]: step for step in counted["two level"]["steps"]}

    # Direct, each reduce task opens every map file; verify also its own signatures, attach its shard's
    # signatures. Two levels: blocks of min(8, 16 // 8) = 2 partitions or shards.
    assert direct["candidates"]["opens"] == shards * partitions
    assert direct["verify"]["opens"] == shards * shards + shards and direct["verify"]["max_opens"] == shards + 1
    assert two["gather bands"]["opens"] == exchange.reads(shards, partitions, 2) - partitions
    assert two["candidates"]["opens"] == partitions
    assert two["gather candidate signatures"]["opens"] == exchange.reads(shards, shards, 2) - shards
    assert two["verify"]["opens"] == 2 * shards and two["verify"]["max_opens"] == 2
    assert sum(s["opens"] for s in two.values()) < sum(s["opens"] for s in direct.values())


def test_a_gather_task_carries_the_same_few_bytes_whatever_the_number_of_shards(tmp_path):
    import pickle

    sizes = {}
    for shards in (10, 10_000):
        inputs = {f"part-{i:05d}": f"/run/04_quality/kept/part-{i:05d}.parquet" for i in range(shards)}
        job = make_job(DedupConfig(shuffle=gathered(4)), inputs, str(tmp_path / str(shards)), pafs.LocalFileSystem())
        step = exchange.gather_step(job, documents.head_exchange(job))
        sizes[shards] = len(pickle.dumps((job, step.items[-1])))
    assert sizes[10_000] - sizes[10] < 16 and sizes[10_000] < 2_000, sizes
