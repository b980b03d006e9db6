"""Connected components of the duplicate edges with no task holding them all: alternating large-star
and small-star rounds (Kiveris et al. 2014, "Connected Components in MapReduce and Beyond") over
hash partitions of the documents, through files.

Contract: once every step of ``steps(job)`` has run, ``roots(job, shard)`` lists each document of
the shard that has an edge, with its root, the smallest document of its component (so the first in
corpus order, whose id the cluster takes), and whether it is the second document of an exact edge (a
later copy); ``by_document`` makes the same of the nodes' and labels' rows of any range of documents.
The roots depend on the edges only: not on ``partitions``, the number of workers or the order tasks
finish in. A self-loop alone makes a component of one, as ``components.labels`` does.

    step             task per         reads                          writes
    edges            edge file        edges/ (or candidates/)        components/edges/    part (of u, v), u, v, exact
    unique edges     node partition   its rows of components/edges/  components/nodes/    doc, root, later_copy
                                                                     components/arcs-0/   part, node, nbr
    large star r     node partition   its rows of components/arcs-k/ components/arcs-k+1/ (k = 2r - 2)
    small star r     node partition   its rows of components/arcs-k/ components/arcs-k+1/ (k = 2r - 1)
    labels           node partition   its rows of the last arcs      components/labels/   doc, root, later_copy

Each "its rows of" is an exchange (``stages.dedup.exchange``): above ``shuffle.gather_above_reads``
(P x P reads per step, E x P for unique edges) a gather step runs before the step that reads, and its
tasks read one gathered file each. The driver reads its counts from the footers of the step's own
files (``components/arcs-k/``, ``nodes/``, ``labels/``), which are there either way. The nodes and
the labels are exchanges too, from the partitions to the shards whose roots ``roots`` reads (S x 2P
reads directly): their gather steps come last, after ``labels``, so that the roots are gathered once
and every keeper round's ``partitioned.cluster_members`` reads the same gathered files.

An edge sits in the partition of its pair, an arc ``(node, nbr)`` in the partition of ``node``
(``shuffle.node_partition``), so a task holds the neighbourhoods of its nodes only: a task's memory is
its partition's share of the arcs, about 2 x edges / partitions, except for split nodes (below).

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
(a second sort, ``components.labels``), so the early rounds stay plain.
With every node settled, both forms write each node's one arc to its centre, so the stop is the same.

Split nodes. In the last rounds every arc of a component leads to its root, so one task would hold a
giant cluster whole. So a task that writes more than ``split_above_arcs / partitions`` arcs of one
node (``components`` settings) splits it: from then on every task writes that node's arcs to one of
``split_slices`` partitions after its own, chosen by the neighbour (``_write_arcs``), and publishes
in its footer the smallest neighbour it wrote for each split node. The driver gathers these (``Split``)
and hands them to the next step's tasks, which link the slice of a split node they hold to that
smallest neighbour, which is what the whole node's operation links every neighbour to: with every
task splitting the node alike, the rounds write the arcs they would unsplit (the arc from the node
to that neighbour once per slice), wherever they sit. A large star reports a split node's smaller
and larger neighbours per slice, and the driver adds them up to tell whether it is settled.
Only in the step where a node first gets split can the tasks that wrote fewer of its arcs than the
limit have kept them unsplit, so their smallest neighbour is missing from the published one. That
step still keeps connectivity: any neighbour of a node may stand in for the smallest (an induction
over the nodes in increasing order shows each is connected, after a large star, to what it links its
neighbours to), and the driver's sums over slices then only overcount smaller neighbours, which can
cost a round but never end the rounds early.

Every task writes its output atomically and is skipped when it exists (``steps.run_step``); rounds
are deterministic, so a run killed at any point resumes with its first unfinished task, whatever round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import storage
from stages.dedup import components, exchange
from stages.dedup.components import distinct
from stages.dedup.documents import edge_files
from stages.dedup.exchange import Exchange
from stages.dedup.shuffle import Job, Step, node_partition, read_counts

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
# A second odd multiplier (``node_partition`` uses the golden ratio's): the slice of a split node an
# arc goes to is independent of the neighbour's own partition.
SLICE_HASH = np.uint64(0xC2B2AE3D27D4EB4F)
# Bits of the hash buckets that find the nodes a task writes many arcs of without sorting every arc.
HEAVY_BITS = 16


@dataclass(frozen=True)
class Split:
    """The split nodes (sorted; a node stays split, so that every task slices its arcs alike), and
    for each the smallest neighbour the tasks that wrote a step's arcs published, or the node itself
    where none wrote any."""

    node: np.ndarray
    least: np.ndarray


NO_SPLIT = Split(np.zeros(0, np.int64), np.zeros(0, np.int64))


def arcs(step: int) -> str:
    """The directory of the arcs entering step ``step`` (even: a large star, odd: a small star)."""
    return f"components/arcs-{step}"


def edge_exchange(job: Job) -> Exchange:
    """The routed edges, from each edge file to the partitions of their pairs."""
    return Exchange.between(job, "components edges", ROUTED, len(edge_files(job)), job.config.partitions,
                            to_shards=False)


def arc_exchange(job: Job, step: int) -> Exchange:
    """The arcs entering step ``step``, from each partition's task of the step before to their node's."""
    return Exchange.between(job, f"components arcs-{step}", arcs(step), job.config.partitions,
                            job.config.partitions, to_shards=False)


def node_exchange(job: Job) -> Exchange:
    """The node rows (self-loops, later copies), from each partition to the shards of their documents."""
    return Exchange.between(job, "components nodes", NODES, job.config.partitions, len(job.shards), to_shards=True)


def label_exchange(job: Job) -> Exchange:
    """The labels, from each partition to the shards of their documents."""
    return Exchange.between(job, "components labels", LABELS, job.config.partitions, len(job.shards),
                            to_shards=True)


def steps(job: Job) -> Iterator[Step]:
    """The steps, in order. The caller runs each before asking for the next: whether another round
    follows a large star depends on what it found."""
    parts = tuple(range(job.config.partitions))
    yield Step("components: edges", route_edges, tuple(range(len(edge_files(job)))), lambda i: job.path(ROUTED, i))
    yield from exchange.steps(job, edge_exchange(job))
    yield Step("components: unique edges", unique_edges, parts, lambda part: job.path(arcs(0), part))
    split = _split(_footers(job, 0), NO_SPLIT)
    step, local, before = 0, False, None
    while True:
        yield from exchange.steps(job, arc_exchange(job, step))
        yield Step(f"components: large star {step // 2 + 1}" + LOCAL_NAME * local, large_star,
                   tuple((step, part, local, split) for part in parts),
                   lambda item: job.path(arcs(item[0] + 1), item[1]))
        footers = _footers(job, step + 1)  # read once: both the stop and the split nodes come from them
        unsettled = _unsettled(footers)
        if not unsettled:
            break
        split = _split(footers, split)
        local = local or (before is not None and unsettled * SLOW > before
                          and unsettled * TAIL <= _rows(job, job.paths(arcs(step), job.config.partitions)))
        before = unsettled
        yield from exchange.steps(job, arc_exchange(job, step + 1))
        yield Step(f"components: small star {step // 2 + 1}" + LOCAL_NAME * local, small_star,
                   tuple((step + 1, part, local, split) for part in parts),
                   lambda item: job.path(arcs(item[0] + 1), item[1]))
        split = _split(_footers(job, step + 2), split)
        step += 2
    yield from exchange.steps(job, arc_exchange(job, step + 1))
    yield Step("components: labels", label_documents, tuple((step + 1, part) for part in parts),
               lambda item: job.path(LABELS, item[1]))
    yield from exchange.steps(job, node_exchange(job))
    yield from exchange.steps(job, label_exchange(job))


def roots(job: Job, shard: int) -> pa.Table:
    """doc, root, later_copy of every document of ``shard`` that has an edge, sorted by doc."""
    return by_document(pa.concat_tables([exchange.read(job, node_exchange(job), shard),
                                         exchange.read(job, label_exchange(job), shard)]))


def by_document(rows: pa.Table) -> pa.Table:
    """The roots of the nodes' and labels' ``rows``: doc, root, later_copy per document, sorted by doc."""
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
    """Per edge file: its edges, sorted by the partition of the pair (of their first document, a
    document with many duplicates would bring them all to one task)."""
    job, index = task
    edges = storage.read_parquet(job.filesystem, edge_files(job)[index], columns=["u", "v", "exact"])
    u, v = edges["u"].to_numpy().astype(np.uint64), edges["v"].to_numpy().astype(np.uint64)
    part = node_partition((u * SLICE_HASH) ^ v, job)
    exchange.write(job, edge_exchange(job), index, edges.add_column(0, "part", pa.array(part, pa.int32())))


def unique_edges(task: tuple[Job, int]) -> None:
    """Per partition: its edges, each once (one pair found by several files is one edge, as in
    ``clusters.cluster_corpus``); their counts; both arcs of each; node rows for ``roots``."""
    job, part = task
    edges = exchange.read(job, edge_exchange(job), part)
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
    exchange.write(job, node_exchange(job), part, pa.table({"doc": doc, "root": doc, "later_copy": later_copy},
                                                           schema=NODE_SCHEMA),
                   counts={"exact": len(later), "near": len(u) - len(later)})
    _write_arcs(job, 0, part, np.concatenate([u[~loop], v[~loop]]),
                np.concatenate([v[~loop], u[~loop]]), NO_SPLIT)


def large_star(task: tuple[Job, tuple[int, int, bool, Split]]) -> None:
    """Per partition: each node's larger neighbours are linked to the smallest of its neighbourhood
    and itself instead, or (``local``) every document of its arcs to the smallest of its component
    among them (``_local_stars``); counts the nodes not settled, which decides whether another
    round runs (a split node's neighbours per slice, for the driver to add up)."""
    job, (step, part, local, split) = task
    node, nbr, starts = _neighbourhoods(job, step, part)
    smaller = np.add.reduceat((nbr < node).astype(np.int64), starts) if len(node) else np.zeros(0, np.int64)
    ends = np.append(starts[1:], len(node))[:len(starts)] - 1
    unsettled = (smaller > 0) & ((smaller > 1) | (nbr[ends] > node[ends]))
    heads = node[starts]
    is_split, least = _least(split, heads)
    counts = {"unsettled": int(unsettled[~is_split].sum()), "held": heads[is_split].tolist(),
              "smaller": smaller[is_split].tolist(),
              "larger": (np.diff(np.append(starts, len(node)))[is_split] - smaller[is_split]).tolist()}
    if local:
        larger, lowest = _local_stars(*_with_least(node, nbr, heads, least))
    else:
        # neighbours are sorted: the first is the smallest
        lowest = np.minimum(np.minimum(heads, nbr[starts]), least)[_groups(node, starts)]
        larger = nbr > node
        larger, lowest = nbr[larger], lowest[larger]
    # keyed by the larger end: small star looks at each node's smaller neighbours only
    _write_arcs(job, step + 1, part, larger, lowest, split, counts)


def small_star(task: tuple[Job, tuple[int, int, bool, Split]]) -> None:
    """Per partition: each node and its smaller neighbours (all its arcs lead to smaller nodes) are
    linked to the smallest of them instead, or (``local``) every document of its arcs to the
    smallest of its component among them; both ways."""
    job, (step, part, local, split) = task
    node, nbr, starts = _neighbourhoods(job, step, part)
    heads = node[starts]
    _, least = _least(split, heads)
    if local:
        a, b = _local_stars(*_with_least(node, nbr, heads, least))
    else:
        lowest = np.minimum(nbr[starts], least)
        to = lowest[_groups(node, starts)]
        moved = nbr != to
        a, b = np.concatenate([nbr[moved], heads]), np.concatenate([to[moved], lowest])
    _write_arcs(job, step + 1, part, np.concatenate([a, b]), np.concatenate([b, a]), split)


def label_documents(task: tuple[Job, tuple[int, int]]) -> None:
    """Per partition, after the large star that settled every node: each node has one arc, to its
    root; the roots label themselves. Sorted by document, for ``roots`` to read a shard's. The footer
    lists the roots with more members here than ``split_limit``: ``partitioned`` splits their clusters."""
    job, (step, part) = task
    node, root, _ = _neighbourhoods(job, step, part)
    centres = distinct(root)
    doc = np.concatenate([node, centres])
    table = pa.table({"doc": doc, "root": np.concatenate([root, centres]), "later_copy": np.zeros(len(doc), bool)},
                     schema=NODE_SCHEMA)
    exchange.write(job, label_exchange(job), part, table,
                   counts={"giant": heavy_nodes(root, split_limit(job)).tolist()})


def _neighbourhoods(job: Job, step: int, part: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The arcs entering ``step`` from the nodes of ``part``, each once, sorted by node and then
    neighbour; and where each node's run of arcs starts."""
    rows = exchange.read(job, arc_exchange(job, step), part)
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


def _least(split: Split, heads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``heads`` (sorted, distinct) are split, and the smallest neighbour published for each
    (the node itself where it is not split)."""
    is_split = np.zeros(len(heads), bool)
    least = heads.copy()
    if len(split.node) and len(heads):
        at = np.minimum(np.searchsorted(split.node, heads), len(split.node) - 1)
        is_split = split.node[at] == heads
        least[is_split] = np.minimum(heads[is_split], split.least[at[is_split]])
    return is_split, least


def _with_least(node: np.ndarray, nbr: np.ndarray, heads: np.ndarray,
                least: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The arcs, and an arc from each split node to the smallest neighbour published for it: an
    edge of the graph, which puts that neighbour into the node's local component here."""
    extra = least < heads
    return np.concatenate([node, heads[extra]]), np.concatenate([nbr, least[extra]])


def heavy_nodes(node: np.ndarray, limit: int) -> np.ndarray:
    """The nodes that occur more than ``limit`` times in ``node``, sorted. Only the arcs of hash
    buckets holding more than ``limit`` are sorted, few once ``limit`` is large."""
    if len(node) <= limit:
        return np.zeros(0, np.int64)
    bucket = ((node.astype(np.uint64) * SLICE_HASH) >> np.uint64(64 - HEAVY_BITS)).astype(np.int64)
    candidates = np.sort(node[(np.bincount(bucket, minlength=1 << HEAVY_BITS) > limit)[bucket]])
    if not len(candidates):
        return candidates
    starts = np.flatnonzero(np.append(True, candidates[1:] != candidates[:-1]))
    return candidates[starts][np.diff(np.append(starts, len(candidates))) > limit]


def split_limit(job: Job) -> int:
    """A task that writes more arcs (or cluster members) of one node than this splits it."""
    return job.config.components.split_above_arcs // job.config.partitions


def sliced_partition(part: np.ndarray, by: np.ndarray, job: Job) -> np.ndarray:
    """The partitions of a split node's rows, ``part`` its own: one of the ``split_slices`` from it
    on, chosen by ``by`` (the neighbour, the member)."""
    slices = ((by.astype(np.uint64) * SLICE_HASH) >> np.uint64(32)) % np.uint64(job.config.components.split_slices)
    return ((part + slices.astype(np.int32)) % job.config.partitions).astype(np.int32)


def _write_arcs(job: Job, step: int, source: int, node: np.ndarray, nbr: np.ndarray, split: Split,
                counts: dict | None = None) -> None:
    """Write partition ``source``'s file of the arcs entering ``step``, keyed by ``node``, a split
    node's (``split``, or one this task writes more arcs of than its share of ``split_above_arcs``)
    to the partition of its slice; the footer gets ``counts``, the nodes split here and the smallest
    neighbour each got."""
    part = node_partition(node, job)
    heavy = np.union1d(split.node, heavy_nodes(node, split_limit(job)))
    published, least = np.zeros(0, np.int64), np.zeros(0, np.int64)
    if len(heavy) and len(node):
        at = np.minimum(np.searchsorted(heavy, node), len(heavy) - 1)
        sliced = heavy[at] == node
        at = at[sliced]
        part[sliced] = sliced_partition(part[sliced], nbr[sliced], job)
        least = np.full(len(heavy), np.iinfo(np.int64).max)
        np.minimum.at(least, at, nbr[sliced])
        written = least < np.iinfo(np.int64).max
        published, least = heavy[written], least[written]
    table = pa.table({"part": part, "node": node, "nbr": nbr}, schema=ARC_SCHEMA)
    exchange.write(job, arc_exchange(job, step), source, table,
                   {**(counts or {}), "split": published.tolist(), "least": least.tolist()})


def _footers(job: Job, step: int) -> list[dict]:
    """The counts in the footers of the arcs entering ``step``, one per partition's task."""
    return [read_counts(job, path) for path in job.paths(arcs(step), job.config.partitions)]


def _split(footers: list[dict], before: Split) -> Split:
    """``before``'s split nodes and those the tasks that wrote ``footers`` split, with the smallest
    neighbour any of them published (the node itself where none did)."""
    node = np.concatenate([before.node] + [np.array(f["split"], np.int64) for f in footers])
    least = np.concatenate([before.node] + [np.array(f["least"], np.int64) for f in footers])
    node, at = np.unique(node, return_inverse=True)
    smallest = node.copy()
    np.minimum.at(smallest, at, least)
    return Split(node, smallest)


def _unsettled(footers: list[dict]) -> int:
    """The nodes the large star whose tasks wrote ``footers`` found not settled: those its tasks
    counted, and the split nodes whose neighbours, added up over their slices, make them so."""
    held = np.concatenate([np.zeros(0, np.int64)] + [np.array(f["held"], np.int64) for f in footers])
    node, at = np.unique(held, return_inverse=True)
    smaller = np.bincount(at, [s for f in footers for s in f["smaller"]], len(node))
    larger = np.bincount(at, [n for f in footers for n in f["larger"]], len(node))
    return sum(f["unsettled"] for f in footers) + int(((smaller > 0) & ((smaller > 1) | (larger > 0))).sum())
