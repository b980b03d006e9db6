"""Giant clusters in dedup's distributed components: a node one task writes too many arcs of is
split over slices (``stages.dedup.star``), and a giant cluster's keeper is chosen over slices of its
members (``stages.dedup.partitioned``). The roots stay scipy's and the rows ``clusters.fates``',
for stars around their smallest, largest or a middle document, trees, chains and several giants at
once, for any number of partitions; and the largest partition holds a slice of a giant, not all of it."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline import storage
from pipeline.executor import InProcessExecutor
from stages.dedup import DedupConfig, clusters, components, partitioned, star
from stages.dedup.shuffle import node_partition, write_sorted
from stages.dedup.steps import make_job
from test_components import assert_as_scipy, labels, ray_executor, star_roots, write_edges  # noqa: F401 (a fixture)

GIANT = 3000
SPLIT = {"split_above_arcs": 40, "split_slices": 16}


def giant_graph(rng: np.random.Generator, shape: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(u, v, exact): one or more giant clusters of ``shape`` and 1,500 random edges among 3,000
    other documents (many small clusters)."""
    ids = labels(rng, 3 * GIANT)
    giant, rest = ids[:GIANT], ids[GIANT:]
    order = np.sort(giant)
    child = np.arange(1, GIANT)
    if shape == "star, hub first":
        u, v = np.full(GIANT - 1, order[0]), order[1:]
    elif shape == "star, hub last":
        u, v = np.full(GIANT - 1, order[-1]), order[:-1]
    elif shape == "star, hub in the middle":
        u, v = np.full(GIANT - 1, order[GIANT // 2]), np.delete(order, GIANT // 2)
    elif shape == "tree":
        u, v = giant[(rng.random(GIANT - 1) * child).astype(np.int64)], giant[child]
    elif shape == "chain":
        u, v = giant[:-1], giant[1:]
    else:  # several giants: a star around a middle document, a tree and a chain
        star_, tree, chain = np.array_split(giant, 3)
        middle = np.sort(star_)[len(star_) // 2]
        branch = np.arange(1, len(tree))
        u = np.concatenate([np.full(len(star_), middle), tree[(rng.random(len(branch)) * branch).astype(np.int64)],
                            chain[:-1]])
        v = np.concatenate([star_, tree[branch], chain[1:]])  # the hub's self-loop too
    small_u, small_v = rest[rng.integers(len(rest), size=1500)], rest[rng.integers(len(rest), size=1500)]
    u, v = np.concatenate([u, small_u]), np.concatenate([v, small_v])
    return u, v, rng.random(len(u)) < 0.3


def largest_partition(job) -> int:
    """The most arcs any one partition held, over every step."""
    most = 0
    for step in range(1000):
        paths = job.paths(star.arcs(step), job.config.partitions)
        if not storage.exists(job.filesystem, paths[0]):
            return most
        counts = sum(np.bincount(pq.read_table(path, columns=["part"])["part"].to_numpy(),
                                 minlength=job.config.partitions) for path in paths)
        most = max(most, int(counts.max()))
    raise AssertionError("no end of steps")


@pytest.mark.parametrize("shape, partitions", [
    ("star, hub first", 4), ("star, hub last", 7), ("star, hub in the middle", 4), ("tree", 4), ("tree", 7),
    ("chain", 4), ("several", 1), ("several", 7),
])
def test_giant_clusters_as_scipy_with_a_slice_per_partition(tmp_path, shape, partitions):
    rng = np.random.default_rng(len(shape) + partitions)
    u, v, exact = giant_graph(rng, shape)
    held = {}
    for name, settings in (("whole", {"split_above_arcs": 10 ** 9}), ("split", SPLIT)):
        job = write_edges(tmp_path / name, u, v, exact, 3, partitions, settings)
        roots, _ = star_roots(job, InProcessExecutor())
        assert_as_scipy(roots, u, v, exact)
        held[name] = largest_partition(job)
    if partitions > 1 and shape != "several":  # (three giants of 1,000 are about a partition's share)
        # whole: the giant's root holds every arc of it; split: its partition's share and a slice
        assert held["whole"] >= GIANT and held["split"] < 0.6 * held["whole"], held


def test_several_giants_on_ray_with_fewer_slices_than_partitions(tmp_path, ray_executor):
    u, v, exact = giant_graph(np.random.default_rng(11), "several")
    roots, _ = star_roots(write_edges(tmp_path, u, v, exact, 4, 5, {"split_above_arcs": 25, "split_slices": 3}),
                          ray_executor)
    assert_as_scipy(roots, u, v, exact)


@pytest.mark.parametrize("nodes, edges, partitions", [(3000, 1500, 4), (3000, 2900, 7), (500, 4000, 3)])
def test_every_node_split_as_scipy(tmp_path, nodes, edges, partitions):
    """split_above_arcs 0: every node is split from the first arcs on, into slices that hash
    collisions and the wrap at the last partition put together again."""
    rng = np.random.default_rng(nodes + edges)
    ids = labels(rng, nodes)
    u, v = ids[rng.integers(nodes, size=edges)], ids[rng.integers(nodes, size=edges)]
    exact = rng.random(edges) < 0.3
    roots, _ = star_roots(write_edges(tmp_path, u, v, exact, 3, partitions,
                                      {"split_above_arcs": 0, "split_slices": 3}), InProcessExecutor())
    assert_as_scipy(roots, u, v, exact)


@pytest.mark.parametrize("seed", [0, 1])
def test_giant_keepers_write_the_rows_and_summary_of_fates(tmp_path, seed):
    """Half the clusters giant, split over the partitions: later copies, barred and short members
    (successors barred with the members ranked before a keeper, clusters keeping nothing), tied,
    infinite and NaN scores. The cluster rows and the summary are those of ``fates`` on everything."""
    rng = np.random.default_rng(seed)
    shards, partitions, n = 2, 5, 4000
    job = make_job(DedupConfig(partitions=partitions, components={"split_above_arcs": 0, "split_slices": 3}),
                   {f"shard-{i}": "unread" for i in range(shards)}, str(tmp_path), pafs.LocalFileSystem())
    doc = np.sort(np.concatenate([(shard << 32) + rng.choice(1 << 20, n // shards, replace=False)
                                  for shard in range(shards)]))
    label = np.sort(rng.integers(0, 60, n))[rng.permutation(n)]  # clusters of about 70, members in any order
    label = np.unique(label, return_inverse=True)[1].astype(np.int64)
    found = components.Clusters(doc, label)
    root = doc[components.firsts(found)]
    ids = pa.array([f"d{d}" for d in doc.tolist()])
    later_copy, barred, short = rng.random(n) < 0.3, rng.random(n) < 0.15, rng.random(n) < 0.3
    barred[label == 0] = True  # keeps nothing
    short[label == 1], barred[label == 1] = True, False  # short and nothing else: keeps nothing either
    score = rng.integers(0, 3, n).astype(np.float64)  # ties: the first in corpus order wins
    score[rng.random(n) < 0.05], score[rng.random(n) < 0.05] = -np.inf, np.nan
    expected, summary = clusters.fates(found, ids, later_copy, score, barred, short)

    giants = components.distinct(root[label % 2 == 0])
    part = node_partition(root, job)
    giant = np.isin(root, giants)
    part[giant] = star.sliced_partition(part[giant], doc[giant], job)
    members = pa.table({"part": part, "root": root, "doc": doc, "id": ids, "later_copy": later_copy,
                        "barred": barred, "short": short, "score": score}, schema=partitioned.MEMBER_SCHEMA)
    for shard, rows in enumerate(np.array_split(np.arange(n), shards)):
        write_sorted(job, job.path(partitioned.MEMBERS, shard), members.take(pa.array(rows)), partitions)
    for p in range(partitions):
        write_sorted(job, job.path(star.NODES, p), star.NODE_SCHEMA.empty_table(), shards,
                     counts={"exact": 0, "near": 0})
        # the giant roots as star's labels publish them
        write_sorted(job, job.path(star.LABELS, p), star.NODE_SCHEMA.empty_table(), shards,
                     counts={"giant": giants[p::partitions].tolist()})
    steps = partitioned.steps(job, "")
    assert [step.name for step in steps] == ["cluster members", "cluster keepers", "giant keepers", "giant rows",
                                             "cluster rows", "cluster summary"]
    for step in steps[1:]:  # the members are written above
        for item in step.items:
            step.fn((job, item))
    rows = pa.concat_tables([pq.read_table(job.path("clusters", shard)) for shard in range(shards)])
    assert rows.equals(expected)
    assert storage.read_json(job.filesystem, clusters.summary_path(job)) == {
        **summary, "edges": {"exact": 0, "near": 0}, "keeper_round": 0}
