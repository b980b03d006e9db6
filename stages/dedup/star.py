"""Connected components of the duplicate edges with no task holding them all: alternating large-star
and small-star rounds (Kiveris et al. 2014, "Connected Components in MapReduce and Beyond") over
hash partitions of the documents, through files.

Contract: once every step of ``steps(job)`` has run, ``roots(job, low, high)`` lists each document
numbered in ``[low, high)`` that has an edge, with its root, the smallest document of its component
(so the first in corpus order, whose id the cluster takes), and whether it is the second document of
an exact edge (a later copy). The roots depend on the edges only: not on ``partitions``, the number of
workers or the order tasks finish in. A self-loop alone makes a component of one, as scipy's does.

    step             task per         reads                          writes
    edges            edge file        edges/ (or candidates/)        components/edges/    part, u, v, exact
    unique edges     node partition   its rows of components/edges/  components/nodes/    doc, root, later_copy
                                                                     components/arcs-0/   part, node, nbr
    large star r     node partition   its rows of components/arcs-k/ components/arcs-k+1/ (k = 2r - 2)
    small star r     node partition   its rows of components/arcs-k/ components/arcs-k+1/ (k = 2r - 1)
    labels           node partition   its rows of the last arcs      components/labels/   doc, root, later_copy

An arc ``(node, nbr)`` sits in the partition of ``node`` (``shuffle.node_partition``), so a task holds
the neighbourhoods of its nodes only: a task's memory is its partition's share of the arcs, about
2 x edges / partitions, except that a document with very many duplicates brings all of them.

One round (``k`` counts steps): large star at each node u, with m the smallest of u and its
neighbours, replaces each edge to a larger neighbour v by the edge (v, m); small star at u, with m the
smallest of u and its smaller neighbours, links u and those neighbours to m instead. Each keeps
connectivity, and their alternation ends, in O(log^2 n) rounds (a few on dedup's star-shaped clusters,
about log2 of the length on a chain), with every component a star around its smallest document. A
large star that finds every node settled (no smaller neighbour, or exactly one and no larger one) has
seen exactly that and changed nothing, so the steps stop there and its output gives the labels.

Every task writes its output atomically and is skipped when it exists (``steps.run_step``); rounds
are deterministic, so a run killed at any point resumes with its first unfinished task, whatever round.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline import storage
from stages.dedup.documents import edge_files, unique_pairs
from stages.dedup.shuffle import Job, Step, gather, node_partition, read_counts, write_sorted

ROUTED = "components/edges"  # <edge file>.parquet: part (of u), u, v, exact
NODES = "components/nodes"  # <partition>.parquet: doc, root, later_copy; counts: exact and near edges
LABELS = "components/labels"  # <partition>.parquet: doc, root, later_copy (false)

ARC_SCHEMA = pa.schema([("part", pa.int32()), ("node", pa.int64()), ("nbr", pa.int64())])
NODE_SCHEMA = pa.schema([("doc", pa.int64()), ("root", pa.int64()), ("later_copy", pa.bool_())])


def arcs(step: int) -> str:
    """The directory of the arcs entering step ``step`` (even: a large star, odd: a small star)."""
    return f"components/arcs-{step}"


def steps(job: Job) -> Iterator[Step]:
    """The steps, in order. The caller runs each before asking for the next: whether another round
    follows a large star depends on what it found."""
    parts = tuple(range(job.config.partitions))
    yield Step("components: edges", route_edges, tuple(range(len(edge_files(job)))), lambda i: job.path(ROUTED, i))
    yield Step("components: unique edges", unique_edges, parts, lambda part: job.path(arcs(0), part))
    step = 0
    while True:
        yield Step(f"components: large star {step // 2 + 1}", large_star, tuple((step, part) for part in parts),
                   lambda item: job.path(arcs(item[0] + 1), item[1]))
        if not sum(read_counts(job, job.path(arcs(step + 1), part))["unsettled"] for part in parts):
            break
        yield Step(f"components: small star {step // 2 + 1}", small_star, tuple((step + 1, part) for part in parts),
                   lambda item: job.path(arcs(item[0] + 1), item[1]))
        step += 2
    yield Step("components: labels", label_documents, tuple((step + 1, part) for part in parts),
               lambda item: job.path(LABELS, item[1]))


def roots(job: Job, low: int, high: int) -> pa.Table:
    """doc, root, later_copy of every document in ``[low, high)`` that has an edge, sorted by doc."""
    rows = gather(job, job.paths(NODES, job.config.partitions) + job.paths(LABELS, job.config.partitions), low, high)
    # a document's rows: its label, or (a self-loop) itself, and itself again per exact edge it ends
    found = rows.group_by("doc").aggregate([("root", "min"), ("later_copy", "any")])
    return pa.table({"doc": found["doc"], "root": found["root_min"], "later_copy": found["later_copy_any"]},
                    schema=NODE_SCHEMA).sort_by([("doc", "ascending")])


def route_edges(task: tuple[Job, int]) -> None:
    """Per edge file: its edges, sorted by the partition of their first document."""
    job, index = task
    edges = storage.read_parquet(job.filesystem, edge_files(job)[index], columns=["u", "v", "exact"])
    part = node_partition(edges["u"].to_numpy(), job)
    write_sorted(job, job.path(ROUTED, index), edges.add_column(0, "part", pa.array(part, pa.int32())),
                 job.config.partitions)


def unique_edges(task: tuple[Job, int]) -> None:
    """Per partition: its edges, each once (one pair found by several files is one edge, as in
    ``clusters.cluster_corpus``); their counts; both arcs of each; node rows for ``roots``."""
    job, part = task
    edges = unique_pairs(gather(job, job.paths(ROUTED, len(edge_files(job))), part, part + 1)
                         .select(["u", "v", "exact"]))
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    exact = edges["exact"].to_numpy(zero_copy_only=False)
    loop = u == v
    # Rows whose root is the document itself: a self-loop's (no arc keeps it, and it is a component
    # if it has no other edge) and each later copy's; ``roots`` keeps the smallest root a document has.
    doc = np.concatenate([u[loop], v[exact]])
    later_copy = np.concatenate([np.zeros(int(loop.sum()), bool), np.ones(int(exact.sum()), bool)])
    write_sorted(job, job.path(NODES, part), pa.table({"doc": doc, "root": doc, "later_copy": later_copy},
                                                      schema=NODE_SCHEMA),
                 len(job.shards), counts={"exact": int(exact.sum()), "near": int((~exact).sum())})
    _write_arcs(job, job.path(arcs(0), part), np.concatenate([u[~loop], v[~loop]]),
                np.concatenate([v[~loop], u[~loop]]))


def large_star(task: tuple[Job, tuple[int, int]]) -> None:
    """Per partition: each node's larger neighbours are linked to the smallest of its neighbourhood
    and itself instead; counts the nodes not settled, which decides whether another round runs."""
    job, (step, part) = task
    node, nbr, starts = _neighbourhoods(job, step, part)
    group = _groups(node, starts)
    lowest = np.minimum(node[starts], nbr[starts])  # neighbours are sorted: the first is the smallest
    smaller = np.add.reduceat((nbr < node).astype(np.int64), starts)
    ends = np.append(starts[1:], len(node))[:len(starts)] - 1
    unsettled = (smaller > 0) & ((smaller > 1) | (nbr[ends] > node[ends]))
    larger = nbr > node
    # keyed by the larger end, v: small star looks at each node's smaller neighbours only
    _write_arcs(job, job.path(arcs(step + 1), part), nbr[larger], lowest[group][larger],
                counts={"unsettled": int(unsettled.sum())})


def small_star(task: tuple[Job, tuple[int, int]]) -> None:
    """Per partition: each node and its smaller neighbours (all its arcs lead to smaller nodes) are
    linked to the smallest of them instead."""
    job, (step, part) = task
    node, nbr, starts = _neighbourhoods(job, step, part)
    lowest = nbr[starts]
    to = lowest[_groups(node, starts)]
    moved = nbr != to
    a, b = np.concatenate([nbr[moved], node[starts]]), np.concatenate([to[moved], lowest])
    _write_arcs(job, job.path(arcs(step + 1), part), np.concatenate([a, b]), np.concatenate([b, a]))


def label_documents(task: tuple[Job, tuple[int, int]]) -> None:
    """Per partition, after the large star that settled every node: each node has one arc, to its
    root; the roots label themselves. Sorted by document, for ``roots`` to read a range."""
    job, (step, part) = task
    node, root, _ = _neighbourhoods(job, step, part)
    centres = np.unique(root)
    doc = np.concatenate([node, centres])
    table = pa.table({"doc": doc, "root": np.concatenate([root, centres]), "later_copy": np.zeros(len(doc), bool)},
                     schema=NODE_SCHEMA)
    write_sorted(job, job.path(LABELS, part), table, len(job.shards))


def _neighbourhoods(job: Job, step: int, part: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arcs entering ``step`` from the nodes of ``part``, each once, sorted by node and then
    neighbour; and where each node's run of arcs starts."""
    rows = gather(job, job.paths(arcs(step), job.config.partitions), part, part + 1)
    node, nbr = rows["node"].to_numpy(), rows["nbr"].to_numpy()
    order = np.lexsort((nbr, node))
    node, nbr = node[order], nbr[order]
    first = np.ones(len(node), bool)
    first[1:] = (node[1:] != node[:-1]) | (nbr[1:] != nbr[:-1])
    node, nbr = node[first], nbr[first]
    starts = np.flatnonzero(np.append(True, node[1:] != node[:-1])) if len(node) else np.zeros(0, np.intp)
    return node, nbr, starts


def _groups(node: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each arc, the index of its node's run."""
    return np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(node))))


def _write_arcs(job: Job, path: str, node: np.ndarray, nbr: np.ndarray, counts: dict | None = None) -> None:
    table = pa.table({"part": node_partition(node, job), "node": node, "nbr": nbr}, schema=ARC_SCHEMA)
    write_sorted(job, path, table, job.config.partitions, counts)
