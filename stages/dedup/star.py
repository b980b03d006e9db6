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
connectivity, and their alternation ends, in O(log^2 n) rounds, with every component a star around
its smallest document. A large star that finds every node settled (no smaller neighbour, or exactly
one and no larger one) has seen exactly that and changed nothing, so the steps stop there and its
output gives the labels.

Most nodes settle in the first rounds; then a few unsettled ones join big stars, and plain rounds
would halve their number per round while rereading every arc (a chain of 10^6 documents in random
order took 17 rounds, the last ten with under 1,000 unsettled nodes). So once a large star leaves
fewer than one node unsettled per ``TAIL`` arcs, and more than a ``SLOW``-th of those the round before
left (a chain-like tail: dedup's clusters shrink them faster and end in a round or two), the later
rounds take the components of the arcs each partition holds instead (``_local_stars``): every
document of such a component is linked to its smallest document. That does at least what the plain
operation does at each node (whose arcs lie in one such component) and keeps connectivity (a
component of some arcs lies inside one of the graph), and it joins in one go the stars that the
partition's unsettled nodes bridge: the chain takes 10 rounds. It costs about twice a plain round
(a second sort, scipy), so the early rounds stay plain.
With every node settled, both forms write each node's one arc to its centre, so the stop is the same.

Every task writes its output atomically and is skipped when it exists (``steps.run_step``); rounds
are deterministic, so a run killed at any point resumes with its first unfinished task, whatever round.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from stages.dedup import components
from stages.dedup.components import distinct
from stages.dedup.documents import edge_files
from stages.dedup.shuffle import Job, Step, gather, node_partition, read_counts, write_sorted

ROUTED = "components/edges"  # <edge file>.parquet: part (of u), u, v, exact
NODES = "components/nodes"  # <partition>.parquet: doc, root, later_copy; counts: exact and near edges
LABELS = "components/labels"  # <partition>.parquet: doc, root, later_copy (false)

# Rounds are plain until a large star leaves fewer than one node unsettled per TAIL arcs it read, and
# more than 1 / SLOW of those the round before left; from then on they take each partition's own
# components (the module docstring says why).
TAIL = 16
SLOW = 3
LOCAL_NAME = " (local components)"
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
    step, local, before = 0, False, None
    while True:
        yield Step(f"components: large star {step // 2 + 1}" + LOCAL_NAME * local, large_star,
                   tuple((step, part, local) for part in parts), lambda item: job.path(arcs(item[0] + 1), item[1]))
        unsettled = sum(read_counts(job, job.path(arcs(step + 1), part))["unsettled"] for part in parts)
        if not unsettled:
            break
        local = local or (before is not None and unsettled * SLOW > before
                          and unsettled * TAIL <= _rows(job, job.paths(arcs(step), job.config.partitions)))
        before = unsettled
        yield Step(f"components: small star {step // 2 + 1}" + LOCAL_NAME * local, small_star,
                   tuple((step + 1, part, local) for part in parts), lambda item: job.path(arcs(item[0] + 1), item[1]))
        step += 2
    yield Step("components: labels", label_documents, tuple((step + 1, part) for part in parts),
               lambda item: job.path(LABELS, item[1]))


def roots(job: Job, low: int, high: int) -> pa.Table:
    """doc, root, later_copy of every document in ``[low, high)`` that has an edge, sorted by doc."""
    rows = gather(job, job.paths(NODES, job.config.partitions) + job.paths(LABELS, job.config.partitions), low, high)
    # a document's rows: its label, or (a self-loop) itself, and itself again per exact edge it ends
    doc = rows["doc"].to_numpy()
    order = np.argsort(doc)
    doc = doc[order]
    starts = np.flatnonzero(np.append(True, doc[1:] != doc[:-1])) if len(doc) else np.zeros(0, np.intp)
    root = rows["root"].to_numpy()[order]
    later_copy = rows["later_copy"].to_numpy(zero_copy_only=False)[order]
    if len(doc):
        root, later_copy = np.minimum.reduceat(root, starts), np.logical_or.reduceat(later_copy, starts)
    return pa.table({"doc": doc[starts], "root": root, "later_copy": later_copy}, schema=NODE_SCHEMA)


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
    edges = gather(job, job.paths(ROUTED, len(edge_files(job))), part, part + 1)
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    exact = edges["exact"].to_numpy(zero_copy_only=False)
    del edges
    # a pair is exact if any of its rows is
    _, later = distinct_pairs(u[exact], v[exact])
    u, v = distinct_pairs(u, v)
    loop = u == v
    # Rows whose root is the document itself: a self-loop's (no arc keeps it, and it is a component
    # if it has no other edge) and each later copy's; ``roots`` keeps the smallest root a document has.
    doc = np.concatenate([u[loop], later])
    later_copy = np.concatenate([np.zeros(int(loop.sum()), bool), np.ones(len(later), bool)])
    write_sorted(job, job.path(NODES, part), pa.table({"doc": doc, "root": doc, "later_copy": later_copy},
                                                      schema=NODE_SCHEMA),
                 len(job.shards), counts={"exact": len(later), "near": len(u) - len(later)})
    _write_arcs(job, job.path(arcs(0), part), np.concatenate([u[~loop], v[~loop]]),
                np.concatenate([v[~loop], u[~loop]]))


def large_star(task: tuple[Job, tuple[int, int, bool]]) -> None:
    """Per partition: each node's larger neighbours are linked to the smallest of its neighbourhood
    and itself instead, or (``local``) every document of its arcs to the smallest of its component
    among them (``_local_stars``); counts the nodes not settled, which decides whether another
    round runs."""
    job, (step, part, local) = task
    node, nbr, starts = _neighbourhoods(job, step, part)
    smaller = np.add.reduceat((nbr < node).astype(np.int64), starts) if len(node) else np.zeros(0, np.int64)
    ends = np.append(starts[1:], len(node))[:len(starts)] - 1
    unsettled = (smaller > 0) & ((smaller > 1) | (nbr[ends] > node[ends]))
    if local:
        larger, lowest = _local_stars(node, nbr)
    else:
        # neighbours are sorted: the first is the smallest
        lowest = np.minimum(node[starts], nbr[starts])[_groups(node, starts)]
        larger = nbr > node
        larger, lowest = nbr[larger], lowest[larger]
    # keyed by the larger end: small star looks at each node's smaller neighbours only
    _write_arcs(job, job.path(arcs(step + 1), part), larger, lowest, counts={"unsettled": int(unsettled.sum())})


def small_star(task: tuple[Job, tuple[int, int, bool]]) -> None:
    """Per partition: each node and its smaller neighbours (all its arcs lead to smaller nodes) are
    linked to the smallest of them instead, or (``local``) every document of its arcs to the
    smallest of its component among them; both ways."""
    job, (step, part, local) = task
    node, nbr, starts = _neighbourhoods(job, step, part)
    if local:
        a, b = _local_stars(node, nbr)
    else:
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
    centres = distinct(root)
    doc = np.concatenate([node, centres])
    table = pa.table({"doc": doc, "root": np.concatenate([root, centres]), "later_copy": np.zeros(len(doc), bool)},
                     schema=NODE_SCHEMA)
    write_sorted(job, job.path(LABELS, part), table, len(job.shards))


def _neighbourhoods(job: Job, step: int, part: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arcs entering ``step`` from the nodes of ``part``, each once, sorted by node and then
    neighbour; and where each node's run of arcs starts."""
    rows = gather(job, job.paths(arcs(step), job.config.partitions), part, part + 1)
    node, nbr = distinct_pairs(rows["node"].to_numpy(), rows["nbr"].to_numpy())
    starts = np.flatnonzero(np.append(True, node[1:] != node[:-1])) if len(node) else np.zeros(0, np.intp)
    return node, nbr, starts


def distinct_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct pairs (a[i], b[i]), sorted by a and then b: where the documents squeeze into 32
    bits (``components.squeeze_bits``), a pair sorts as one 64-bit number, several times faster
    than a lexsort of two columns."""
    row_bits = components.squeeze_bits(a, b)
    if row_bits is None:
        order = np.lexsort((b, a))
        a, b = a[order], b[order]
        keep = np.append(True, (a[1:] != a[:-1]) | (b[1:] != b[:-1])) if len(a) else np.zeros(0, bool)
        return a[keep], b[keep]
    key = distinct((components.squeezed(a, row_bits) << np.uint64(32)) | components.squeezed(b, row_bits))
    return (components.unsqueezed(key >> np.uint64(32), row_bits),
            components.unsqueezed(key & np.uint64(0xFFFFFFFF), row_bits))


def _groups(node: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """For each arc, the index of its node's run."""
    return np.repeat(np.arange(len(starts)), np.diff(np.append(starts, len(node))))


def _rows(job: Job, paths: list[str]) -> int:
    """Rows of the Parquet files ``paths`` (their footers only are read)."""
    rows = 0
    for path in paths:
        with job.filesystem.open_input_file(path) as source:
            rows += pq.ParquetFile(source).metadata.num_rows
    return rows


def _local_stars(node: np.ndarray, nbr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The components of the arcs (node, nbr) (distinct) as stars: each document of them but the
    smallest of its component, and that smallest one."""
    doc, at = components.positions(np.concatenate([node, nbr]))
    label = components.labels(len(doc), at[:len(node)], at[len(node):])
    smallest = np.full(label.max() + 1 if len(doc) else 0, len(doc))
    np.minimum.at(smallest, label, np.arange(len(doc)))  # ``doc`` is sorted: the first is the smallest
    centre = doc[smallest[label]]
    moved = centre != doc
    return doc[moved], centre[moved]


def _write_arcs(job: Job, path: str, node: np.ndarray, nbr: np.ndarray, counts: dict | None = None) -> None:
    table = pa.table({"part": node_partition(node, job), "node": node, "nbr": nbr}, schema=ARC_SCHEMA)
    write_sorted(job, path, table, job.config.partitions, counts)
