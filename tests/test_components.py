"""Dedup's distributed connected components (stages.dedup.star) against scipy's, on real Ray: random
graphs, long chains, stars, singletons, duplicate and self edges; the same roots for any number of
partitions and workers; resume after a real SIGKILL mid-rounds; and the dedup stage's output
byte-identical whichever way its clusters are found."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from conftest import REPO
from pipeline import storage
from pipeline.config import RayConfig, config_hash, parse_config
from pipeline.executor import InProcessExecutor, RayExecutor
from stages.dedup import DedupConfig, components, documents, star
from stages.dedup.shuffle import gather
from stages.dedup.steps import make_job, run_step
from test_dedup import doc, edit_each_line, edit_words, prose

EVERY_DOCUMENT = (0, 1 << 62)


def write_edges(scratch: Path, u: np.ndarray, v: np.ndarray, exact: np.ndarray, files: int, partitions: int,
                settings: dict | None = None):
    """A dedup job whose verified edge files (``files`` of them, as verify writes one per shard) hold
    the edges; ``settings``: its ``components`` settings."""
    job = make_job(DedupConfig(partitions=partitions, components=settings or {}),
                   {f"shard-{i}": "unread" for i in range(files)}, str(scratch), pafs.LocalFileSystem())
    for index, rows in enumerate(np.array_split(np.arange(len(u)), files)):
        storage.write_parquet(job.filesystem, job.path(documents.EDGES, index),
                              pa.table({"u": u[rows], "v": v[rows], "exact": exact[rows]}))
    return job


def star_roots(job, executor) -> tuple[pa.Table, int]:
    """Every step of star on ``executor``; the roots of every document, and the rounds it took. The
    documents lie beyond the job's few shards, so the nodes and labels are read by key range
    (``shuffle.gather``, whatever their files' layout), not per shard as ``star.roots`` reads them."""
    log = []
    for step in star.steps(job):
        run_step(job, step, lambda fn, items: executor.map(fn, items, step.name), log.append)
    paths = job.paths(star.NODES, job.config.partitions) + job.paths(star.LABELS, job.config.partitions)
    return star.by_document(gather(job, paths, *EVERY_DOCUMENT)), sum("large star" in line for line in log)


def assert_as_scipy(roots: pa.Table, u: np.ndarray, v: np.ndarray, exact: np.ndarray) -> None:
    """The documents scipy clusters, each with its cluster's first document, and its later copies."""
    found = components.cluster(u, v)
    assert roots["doc"].to_numpy().tolist() == found.doc.tolist()
    assert np.array_equal(roots["root"].to_numpy(), found.doc[components.firsts(found)])
    assert np.array_equal(roots["later_copy"].to_numpy(zero_copy_only=False), np.isin(found.doc, v[exact]))


@pytest.fixture(scope="module")
def ray_executor(ray_cluster):
    return RayExecutor(RayConfig())


def labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct document numbers as dedup makes them (shard << 32 | row), in random order."""
    shard, row = rng.integers(0, 50, n * 2), rng.integers(0, 1 << 20, n * 2)
    return rng.permutation(np.unique((shard << 32) | row)[:n])


def compare(tmp_path: Path, executor, u, v, exact, files: int = 3, partitions: int = 4,
            settings: dict | None = None) -> int:
    roots, rounds = star_roots(write_edges(tmp_path, u, v, exact, files, partitions, settings), executor)
    assert_as_scipy(roots, u, v, exact)
    return rounds


# ----------------------------------------------------------------------------- graphs against scipy

@pytest.mark.parametrize("nodes, edges, partitions", [(3000, 1500, 4), (3000, 2900, 7), (500, 4000, 1)])
def test_random_graphs(tmp_path, ray_executor, nodes, edges, partitions):
    rng = np.random.default_rng(nodes + edges)
    ids = labels(rng, nodes)
    u, v = ids[rng.integers(nodes, size=edges)], ids[rng.integers(nodes, size=edges)]
    compare(tmp_path, ray_executor, u, v, rng.random(edges) < 0.3, partitions=partitions)


def test_long_chains_take_logarithmically_many_rounds(tmp_path, ray_executor):
    rng = np.random.default_rng(1)
    ids = labels(rng, 6000)
    shuffled, ascending, descending = ids[:3000], np.sort(ids[3000:5000]), np.sort(ids[5000:])[::-1]
    u = np.concatenate([chain[:-1] for chain in (shuffled, ascending, descending)])
    v = np.concatenate([chain[1:] for chain in (shuffled, ascending, descending)])
    rounds = compare(tmp_path, ray_executor, u, v, np.zeros(len(u), bool))
    # measured: 12 (about log2 of the longest chain; 13 without the local rounds in the tail)
    assert rounds <= 2 * np.log2(3000), rounds


def test_local_stars_link_each_document_to_its_components_smallest():
    """What the rounds in the tail do per partition: the components of its arcs, as scipy finds them."""
    rng = np.random.default_rng(7)
    ids = labels(rng, 3000)
    node, nbr = star.distinct_pairs(ids[rng.integers(3000, size=2500)], ids[rng.integers(3000, size=2500)])
    member, centre = star._local_stars(node, nbr)
    found = components.cluster(node, nbr)
    smallest = found.doc[components.firsts(found)]
    assert np.array_equal(member, found.doc[smallest != found.doc])
    assert np.array_equal(centre, smallest[smallest != found.doc])


def test_stars_around_the_largest_and_the_smallest_document(tmp_path, ray_executor):
    rng = np.random.default_rng(2)
    ids = np.sort(labels(rng, 8000))
    big_hub_last = (np.full(3000, ids[3000]), ids[:3000])  # hub larger than all its leaves
    big_hub_first = (np.full(3000, ids[3001]), ids[3002:6002])  # hub smaller than all its leaves
    small = (np.tile(ids[6002:6402:4], 3), np.concatenate([ids[6003:6402:4], ids[6004:6402:4], ids[6005:6402:4]]))
    u = np.concatenate([big_hub_last[0], big_hub_first[1], small[0]])  # the second star's edges point inwards
    v = np.concatenate([big_hub_last[1], big_hub_first[0], small[1]])
    assert compare(tmp_path, ray_executor, u, v, rng.random(len(u)) < 0.5) <= 2


def test_singletons_duplicate_and_self_edges(tmp_path, ray_executor):
    rng = np.random.default_rng(3)
    ids = labels(rng, 400)
    pairs = np.stack([ids[:100], ids[100:200]], axis=1)  # 100 components of two
    loops = np.stack([ids[200:300], ids[200:300]], axis=1)  # 100 documents whose only edge is to themselves
    looped_pairs = np.stack([ids[:50], ids[:50]], axis=1)  # self-loops on documents with other edges
    repeated = pairs[rng.integers(100, size=300)]  # the same pairs again, in other files
    reversed_ = pairs[:, ::-1]  # and the other way round
    edges = np.concatenate([pairs, loops, looped_pairs, repeated, reversed_])
    order = rng.permutation(len(edges))
    u, v = edges[order, 0].copy(), edges[order, 1].copy()
    exact = rng.random(len(u)) < 0.2  # a pair is exact when any of its copies is
    compare(tmp_path, ray_executor, u, v, exact, files=5, partitions=3)


def test_no_edges(tmp_path, ray_executor):
    empty = np.zeros(0, np.int64)
    roots, rounds = star_roots(write_edges(tmp_path, empty, empty, np.zeros(0, bool), 2, 3), ray_executor)
    assert roots.num_rows == 0 and rounds == 1


def test_same_roots_for_any_partitions_and_workers(tmp_path, ray_cluster):
    rng = np.random.default_rng(4)
    ids = labels(rng, 2000)
    u, v = ids[rng.integers(2000, size=1800)], ids[rng.integers(2000, size=1800)]
    exact = rng.random(1800) < 0.3
    runs = [(1, InProcessExecutor()), (5, RayExecutor(RayConfig(num_workers=1))),
            (8, RayExecutor(RayConfig(num_workers=2)))]
    results = [star_roots(write_edges(tmp_path / str(p), u, v, exact, 4, p), executor)[0]
               for p, executor in runs]
    assert results[0].equals(results[1]) and results[0].equals(results[2])


# ----------------------------------------------------------------------------- the pieces, against plain references

@pytest.mark.parametrize("shards, rows", [(50, 1 << 20), (3, 1 << 31), (1 << 20, 1 << 32)])
def test_distinct_pairs_sort_as_a_lexsort(shards, rows):
    """Squeezed into one 64-bit key where the documents' shards and rows fit, a lexsort where not."""
    rng = np.random.default_rng(shards)
    a, b = [(rng.integers(0, shards, 5000) << 32) | rng.integers(0, rows, 5000) for _ in range(2)]
    a, b = np.concatenate([a, a[:700], b[:50]]), np.concatenate([b, b[:700], a[:50]])
    order = np.lexsort((b, a))
    expected = sorted(set(zip(a[order].tolist(), b[order].tolist())))
    found = star.distinct_pairs(a, b)
    assert list(zip(found[0].tolist(), found[1].tolist())) == expected


def test_keepers_as_a_lexsort_over_every_key():
    """Ties in score, later copies and barred members, clusters all barred: the rank-order keeper is
    the one the five-key lexsort picks (cluster, barred, later copy, -score, document)."""
    rng = np.random.default_rng(6)
    n = 20_000
    found = components.Clusters(np.sort(rng.choice(1 << 40, n, replace=False)),
                                np.unique(rng.integers(0, 3000, n), return_inverse=True)[1].astype(np.int64))
    later_copy, barred = rng.random(n) < 0.4, rng.random(n) < 0.3
    barred[found.label < 50] = True  # clusters keeping nothing
    score = rng.integers(0, 4, n).astype(np.float64)  # many ties: the first in corpus order wins
    order = np.lexsort((found.doc, -score, later_copy, barred, found.label))
    first = np.ones(n, bool)
    first[1:] = found.label[order][1:] != found.label[order][:-1]
    expected = np.empty(found.label.max() + 1, np.int64)
    expected[found.label[order][first]] = order[first]
    assert np.array_equal(components.keepers(found, later_copy, score, barred), expected[found.label])
    ranked = components.ranked(found, later_copy, score)
    assert np.array_equal(components.keepers(found, later_copy, score, barred, ranked), expected[found.label])
    assert np.array_equal(components.among(found.doc, found.doc[barred][::-1]), barred)


# ----------------------------------------------------------------------------- resume

KILLED_RUN = textwrap.dedent("""
    import sys
    import pyarrow.fs as pafs
    from stage_fixtures import dying_map
    from stages.dedup import DedupConfig, star
    from stages.dedup.steps import make_job, run_step

    scratch, files, partitions, survive = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    job = make_job(DedupConfig(partitions=partitions), {f"shard-{i}": "unread" for i in range(files)},
                   scratch, pafs.LocalFileSystem())
    map_ = dying_map(survive)
    for step in star.steps(job):
        run_step(job, step, map_, lambda _: None)
""")


# 3 edge files, 4 partitions: tasks 0-2 route edges, 3-6 unique edges, then 4 per large or small star.
@pytest.mark.parametrize("survive", [5, 13, 26])
def test_resumes_mid_rounds_after_sigkill_redoing_only_unfinished_tasks(tmp_path, survive):
    rng = np.random.default_rng(5)
    ids = labels(rng, 1000)
    u, v, exact = ids[:-1], ids[1:], np.zeros(999, bool)  # a chain: many rounds
    job = write_edges(tmp_path / "scratch", u, v, exact, 3, 4)
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, job.scratch, "3", "4", str(survive)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    assert killed.returncode == -signal.SIGKILL
    finished = {p: p.stat().st_mtime_ns for p in Path(job.scratch, "components").rglob("*.parquet")}
    assert len(finished) >= survive

    roots, _ = star_roots(job, InProcessExecutor())
    assert_as_scipy(roots, u, v, exact)
    assert not [p for p, mtime in finished.items() if p.stat().st_mtime_ns != mtime], "finished tasks were redone"


# ----------------------------------------------------------------------------- the dedup stage, both ways

def corpus() -> list[dict]:
    """Exact copies, near copies, shared paragraphs, and a cluster whose keeper paragraph dedup leaves
    too short (a second keeper round), spread over several shards."""
    shared = "\n".join(prose(70 + i, 80) for i in range(5))
    docs = [doc("source", "\n".join(prose(80 + i, 80) for i in range(12)) + "\n" + shared),
            doc("keeper", f"{shared}\nA short line of its own."), doc("edited", edit_each_line(shared, 1)),
            doc("copy", f"{shared}\nAnother short line.")]
    for i in range(60):
        base = prose(200 + i, 150)
        docs.append(doc(f"doc-{i}", base))
        if i % 3 == 0:
            docs.append(doc(f"exact-{i}", base))
        if i % 4 == 0:
            docs.append(doc(f"near-{i}", edit_words(base, 0.02, i)))
        if i % 5 == 0:
            docs.append(doc(f"footer-{i}", prose(400 + i, 120) + "\nShared footer paragraph that many pages repeat."))
    return docs


def run_dedup(work: Path, source: Path, components_settings: dict) -> Path:
    from pipeline.runner import run_pipeline

    config = parse_config({
        "work_dir": str(work), "ingest": {"shard_bytes": 30_000},
        "inputs": [{"name": "t", "path": str(source), "category": "web"}],
        "stages": {"dedup": {"partitions": 3, "components": components_settings}},
    })
    run_pipeline(config, use_ray=True, log=lambda _: None)
    return work / "02_dedup"


def digests(directory: Path, pattern: str) -> dict[str, str]:
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.glob(pattern))}


def test_dedup_stage_output_is_byte_identical_with_distributed_components(tmp_path, ray_cluster):
    source = tmp_path / "corpus.jsonl"
    source.write_text("".join(json.dumps({"text": d["text"]}) + "\n" for d in corpus()))
    single = run_dedup(tmp_path / "single", source, {"method": "single_task"})
    # auto with a threshold of 0 edges: what a large corpus gets
    distributed = run_dedup(tmp_path / "distributed", source, {"method": "auto", "distributed_above_edges": 0})
    # every node and cluster split (stages.dedup.star, partitioned): the giant clusters' way, both keeper rounds
    split = run_dedup(tmp_path / "split", source, {"method": "distributed", "split_above_arcs": 0, "split_slices": 2})

    assert (distributed / "_scratch" / "components" / "labels").is_dir()
    assert not (single / "_scratch" / "components").exists()
    assert (single / "_scratch" / "clusters-round1").is_dir(), "the corpus should need a second keeper round"
    outputs = digests(single, "*/*.parquet")
    assert (split / "_scratch" / "cluster-keepers-round1" / "giants.json").is_file()
    clusters = digests(single, "_scratch/clusters*/*")
    assert len(outputs) > 4 and len(clusters) > 4
    summary = Path("_scratch", "summary.json")
    for other in (distributed, split):
        assert outputs == digests(other, "*/*.parquet")  # kept/, removed/
        assert clusters == digests(other, "_scratch/clusters*/*")
        assert digests(single, "_scratch/decisions/*") == digests(other, "_scratch/decisions/*")
        assert (single / summary).read_bytes() == (other / summary).read_bytes()


def test_components_settings_are_validated_and_left_out_of_the_config_hash():
    assert config_hash(DedupConfig()) == config_hash(DedupConfig(components={
        "method": "distributed", "split_above_arcs": 7, "split_slices": 3}))
    with pytest.raises(ValueError, match="method"):
        DedupConfig(components={"method": "scipy"})
    with pytest.raises(ValueError, match="distributed_above_edges"):
        DedupConfig(components={"distributed_above_edges": -1})
    with pytest.raises(ValueError, match="not permitted"):
        DedupConfig(components={"distributed_above": 10})
    with pytest.raises(ValueError, match="split_above_arcs"):
        DedupConfig(components={"split_above_arcs": -1})
    with pytest.raises(ValueError, match="split_slices"):
        DedupConfig(components={"split_slices": 0})
