"""The clusters step when no task may hold every edge: after ``stages.dedup.star`` found each clustered
document's root, the keepers are chosen per partition of the roots and each shard's rows gathered.

    step              task per    reads                                         writes
    cluster members   shard       its rows of every components/nodes/ and       cluster-members/  part (of root), root,
                                  labels/ (star.roots), docs/, earlier rounds'                    doc, id, later_copy,
                                  too-short-keepers/ and short-successors/                        barred, short, score
    cluster keepers   partition   its rows of every cluster-members/            cluster-keepers/  rows of clusters/
    giant keepers     (one)       the giant clusters' slices' candidates in     cluster-keepers/giants.json
                                  the footers of cluster-keepers/
    giant rows        partition   its giant rows of every cluster-members/,     cluster-keepers/giant-<partition>
                                  giants.json                                                     rows of clusters/
    cluster rows      shard       its rows of every cluster-keepers/ and        clusters/<shard>.parquet
                                  giant-<partition>
    cluster summary   (one)       the counts in components/nodes/ and           clusters/_SUCCESS.json
                                  cluster-keepers/

Each "its rows of every" above is an exchange (``stages.dedup.exchange``): above
``shuffle.gather_above_reads`` (P x S reads for the roots, twice, S x P for the members, P x S for the
keepers and again for the giant rows) a gather step runs before the step that reads, and its tasks
read one gathered file each (``giant rows`` reads the members' files gathered for ``cluster
keepers``; ``cluster members`` one of the nodes and one of the labels, gathered by ``star``'s last
steps). The driver and ``giant keepers`` read the counts in the footers of the steps' own files
(``components/nodes/`` and ``labels/`` too), which are there either way.

All members of a cluster share its root, so ``clusters.fates`` sees each cluster whole, with the same
attributes as in the single task: the rows and the summary are the same. A task holds one shard's
clustered documents or one partition's clusters, except the giant ones: a cluster whose root
``star.label_documents`` found more members of than ``star.split_limit`` in one partition is split
as star splits a node, its members going to ``split_slices`` partitions by document. Its fates then
take two passes over its slices, since choosing a keeper needs the whole cluster only through one
member: the first in rank order (``components.ranked``) that is neither barred nor short (``fates``
keeps it, bars the short members ranked before it, and keeps nothing when there is none). Each
slice finds its own first such member and its first short one (``cluster keepers``), one task
takes the first of each over the slices (``giant keepers``), and each slice then writes its rows as
``fates`` would (``giant rows``).

These steps belong to a keeper round (``steps.round_steps``); the roots do not (nor their gathered
files), so a later round reuses them.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline import storage
from stages.dedup import clusters, components, exchange, star
from stages.dedup.documents import BARRED, CLUSTERS, DOCS, REASON_EXACT, REASON_NEAR
from stages.dedup.exchange import Exchange
from stages.dedup.paragraphs import SHORT_SUCCESSORS
from stages.dedup.shuffle import Job, Step, node_partition, read_counts, shard_range, write_scratch

MEMBERS = "cluster-members"  # <shard>.parquet: sorted by the partition of the document's root
KEEPERS = "cluster-keepers"  # <partition>.parquet: clusters/ rows sorted by doc; counts: the summary's
GIANTS = "giants"  # KEEPERS/giants.json: each giant cluster's keeper, and its summary counts

MEMBER_SCHEMA = pa.schema([
    ("part", pa.int32()), ("root", pa.int64()), ("doc", pa.int64()), ("id", pa.string()),
    ("later_copy", pa.bool_()), ("barred", pa.bool_()), ("short", pa.bool_()), ("score", pa.float64()),
])


def member_exchange(job: Job) -> Exchange:
    """The members, from each shard to the partitions of their roots (of their slices)."""
    return Exchange.between(job, "cluster members", MEMBERS, len(job.shards), job.config.partitions, to_shards=False)


def keeper_exchange(job: Job) -> Exchange:
    """The ``clusters/`` rows of the clusters not split, from each partition to their shards."""
    return Exchange.between(job, "cluster keepers", KEEPERS, job.config.partitions, len(job.shards), to_shards=True)


def giant_exchange(job: Job) -> Exchange:
    """The giant clusters' ``clusters/`` rows, from each partition to their shards."""
    return Exchange.between(job, "giant rows", KEEPERS, job.config.partitions, len(job.shards), to_shards=True,
                            prefix="giant-")


def steps(job: Job, suffix: str) -> list[Step]:
    """The steps that replace the single ``clusters`` task; ``suffix`` names the keeper round."""
    giants = components.distinct(np.concatenate(
        [np.zeros(0, np.int64)] + [np.array(read_counts(job, path)["giant"], np.int64)
                                   for path in job.paths(star.LABELS, job.config.partitions)]))
    shards = tuple(range(len(job.shards)))
    parts = tuple((part, giants) for part in range(job.config.partitions))
    return [
        Step("cluster members" + suffix, cluster_members, tuple((shard, giants) for shard in shards),
             lambda item: job.path(MEMBERS, item[0])),
        *exchange.steps(job, member_exchange(job), suffix),
        Step("cluster keepers" + suffix, cluster_keepers, parts, lambda item: job.path(KEEPERS, item[0])),
        Step("giant keepers" + suffix, giant_keepers, (0,), lambda _: job.path(KEEPERS, GIANTS, "json")),
        Step("giant rows" + suffix, giant_rows, parts, lambda item: _giant_path(job, item[0])),
        *exchange.steps(job, keeper_exchange(job), suffix),
        *exchange.steps(job, giant_exchange(job), suffix),
        Step("cluster rows" + suffix, cluster_rows, shards, lambda i: job.path(CLUSTERS, i)),
        Step("cluster summary" + suffix, write_summary, (0,), lambda _: clusters.summary_path(job)),
    ]


def cluster_members(task: tuple[Job, tuple[int, np.ndarray]]) -> None:
    """Per shard: its clustered documents with what choosing a keeper needs, routed to their root
    (to a slice of it, for the ``giants``' roots)."""
    job, (shard, giants) = task
    low, _ = shard_range(shard)
    found = star.roots(job, shard)
    doc, root = found["doc"].to_numpy(), found["root"].to_numpy()
    attributes = storage.read_parquet(job.filesystem, job.path(DOCS, shard))  # one row per document, in order
    if len(doc) and doc[-1] - low >= attributes.num_rows:
        raise RuntimeError("dedup scratch is inconsistent: clustered documents missing from docs/")
    attributes = attributes.take(pa.array(doc - low))
    part = node_partition(root, job)
    giant = np.isin(root, giants)
    part[giant] = star.sliced_partition(part[giant], doc[giant], job)
    table = pa.table({
        "part": part, "root": root, "doc": doc, "id": attributes["id"],
        "later_copy": found["later_copy"],
        "barred": components.among(doc, clusters.earlier_findings(job, BARRED, [shard])),
        "short": components.among(doc, clusters.earlier_findings(job, SHORT_SUCCESSORS, [shard])),
        "score": clusters.keep_scores(job, attributes),
    }, schema=MEMBER_SCHEMA)
    exchange.write(job, member_exchange(job), shard, table)


def cluster_keepers(task: tuple[Job, tuple[int, np.ndarray]]) -> None:
    """Per partition of the roots: the fate of every member of its clusters, and their counts; for
    the slices of ``giants`` it holds, each one's candidates (``_slice_candidates``)."""
    job, (part, giants) = task
    members = exchange.read(job, member_exchange(job), part).sort_by([("doc", "ascending")])
    giant = np.isin(members["root"].to_numpy(), giants)
    candidates = _slice_candidates(members.filter(pa.array(giant)))
    members = members.filter(pa.array(~giant))
    found = components.Clusters(members["doc"].to_numpy(), components.positions(members["root"].to_numpy())[1])
    table, summary = clusters.fates(found, members["id"].combine_chunks(),
                                    members["later_copy"].to_numpy(zero_copy_only=False),
                                    members["score"].to_numpy(),
                                    members["barred"].to_numpy(zero_copy_only=False),
                                    members["short"].to_numpy(zero_copy_only=False))
    exchange.write(job, keeper_exchange(job), part, table, counts={"summary": summary, "giants": candidates})


def giant_keepers(task: tuple[Job, int]) -> None:
    """One task: each giant cluster's keeper, the first of its slices' candidates in rank order;
    whether it has a barred member once the short ones ranked before the keeper are barred; the
    id of its first document; and the summary counts of the giant clusters as whole clusters."""
    job, _ = task
    slices: dict[str, list[dict]] = {}
    for path in job.paths(KEEPERS, job.config.partitions):
        for root, candidates in read_counts(job, path)["giants"].items():
            slices.setdefault(root, []).append(candidates)
    giants = {}
    for root, found in slices.items():
        keeper = _first([c["keeper"] for c in found])
        short = _first([c["short"] for c in found])
        giants[root] = {
            "keeper": keeper, "root_id": next(c["root_id"] for c in found if c["root_id"] is not None),
            "with_barred": any(c["barred"] for c in found) or (
                short is not None and (keeper is None or _first([keeper, short]) is short)),
        }
    sizes = [sum(c["size"] for c in found) for found in slices.values()]
    # the counts of whole clusters of these sizes, by the function that counts them for fates (the
    # same size buckets); their members' fates are counted by giant rows
    whole = components.Clusters(np.arange(sum(sizes)), np.repeat(np.arange(len(sizes)), sizes))
    nothing = np.zeros(len(whole.doc), bool)
    storage.write_json(job.filesystem, job.path(KEEPERS, GIANTS, "json"),
                       {"giants": giants, "summary": clusters.cluster_counts(whole, nothing, nothing, nothing)})


def giant_rows(task: tuple[Job, tuple[int, np.ndarray]]) -> None:
    """Per partition: the ``clusters/`` rows of the slices of ``giants`` it holds, as ``fates``
    writes them given each cluster's keeper; the members removed and barred, counted."""
    job, (part, giants) = task
    members, found = MEMBER_SCHEMA.empty_table(), {}
    if len(giants):
        members = exchange.read(job, member_exchange(job), part)
        members = members.filter(pa.array(np.isin(members["root"].to_numpy(), giants)))
        found = storage.read_json(job.filesystem, job.path(KEEPERS, GIANTS, "json"))["giants"]
    roots, cluster = np.unique(members["root"].to_numpy(), return_inverse=True)
    giant = [found[str(root)] for root in roots.tolist()]
    keeper = [g["keeper"] or [2, np.nan, -1, None] for g in giant]  # none: ranked after every member
    doc, later_copy = members["doc"].to_numpy(), members["later_copy"].to_numpy(zero_copy_only=False)
    barred = members["barred"].to_numpy(zero_copy_only=False)
    short = members["short"].to_numpy(zero_copy_only=False) & ~barred
    # fates bars the short members ranked before the keeper; all of them where there is none
    barred = barred | short & _ranked_before(later_copy, -members["score"].to_numpy(), doc,
                                     *(np.array([k[i] for k in keeper])[cluster] for i in range(3)))
    is_keeper = doc == np.array([k[2] for k in keeper], np.int64)[cluster]
    removed = ~is_keeper & ~barred
    table = pa.table({
        "doc": pa.array(doc, pa.int64()), "id": members["id"],
        "cluster": pa.array([g["root_id"] for g in giant], pa.string()).take(pa.array(cluster, pa.int64())),
        "kept_id": pa.array([k[3] for k in keeper], pa.string()).take(pa.array(cluster, pa.int64(), mask=~removed)),
        "reason": pa.array([REASON_EXACT, REASON_NEAR], pa.string()).take(
            pa.array(np.where(later_copy, 0, 1), pa.int64(), mask=~removed)),
        "keeper": pa.array(is_keeper),
        "successor": pa.array(removed & np.array([g["with_barred"] for g in giant], bool)[cluster]),
    }, schema=clusters.ROW_SCHEMA)
    exchange.write(job, giant_exchange(job), part, table, counts={
        "removed": {REASON_EXACT: int((removed & later_copy).sum()), REASON_NEAR: int((removed & ~later_copy).sum())},
        "keepers_replaced": int(barred.sum())})


def cluster_rows(task: tuple[Job, int]) -> None:
    """Per shard: its rows of ``clusters/``, as the single task writes them."""
    job, shard = task
    rows = pa.concat_tables([exchange.read(job, keeper_exchange(job), shard),
                             exchange.read(job, giant_exchange(job), shard)])
    write_scratch(job, job.path(CLUSTERS, shard),
                  rows.sort_by([("doc", "ascending")]).combine_chunks())


def write_summary(task: tuple[Job, int]) -> None:
    """The corpus-wide counts, added up from the partitions' (the single task's ``summary.json``)."""
    job, _ = task
    parts = range(job.config.partitions)
    kept = [read_counts(job, job.path(KEEPERS, part))["summary"] for part in parts]
    kept.append(storage.read_json(job.filesystem, job.path(KEEPERS, GIANTS, "json"))["summary"])
    kept += [read_counts(job, _giant_path(job, part)) for part in parts]
    summary = {**_added(kept), "largest_cluster": max(counts.get("largest_cluster", 0) for counts in kept),
               "edges": _added([read_counts(job, job.path(star.NODES, part)) for part in parts]),
               "keeper_round": job.round}
    storage.write_json(job.filesystem, clusters.summary_path(job), summary)


def _added(counts: list[dict]) -> dict:
    """Several partitions' counts added up, key by key (nested too), those of the first: a count
    another lacks is 0 there."""
    return {key: _added([c.get(key, {}) for c in counts]) if isinstance(value, dict)
            else sum(c.get(key, 0) for c in counts) for key, value in counts[0].items()}


def _giant_path(job: Job, part: int) -> str:
    return giant_exchange(job).path(job, part)


def _slice_candidates(members: pa.Table) -> dict:
    """Per root of the giant slices ``members``: its members here, whether one is barred, the id of
    the root if it is here, and the first member in rank order that is neither barred nor short
    (``keeper``) and the first that is short (``short``), each as ``[later_copy, -score, doc, id]``
    (the rank key, ``components.ranked``, and the id), or None."""
    root, doc = members["root"].to_numpy(), members["doc"].to_numpy()
    if not len(doc):
        return {}
    later_copy = members["later_copy"].to_numpy(zero_copy_only=False)
    barred = members["barred"].to_numpy(zero_copy_only=False)
    short = members["short"].to_numpy(zero_copy_only=False) & ~barred
    score, ids = members["score"].to_numpy(), members["id"]
    order = np.lexsort((doc, -score, later_copy, root))  # by root, then in rank order
    starts = np.flatnonzero(np.append(True, root[order][1:] != root[order][:-1]))

    def first(which: np.ndarray) -> list:
        at = np.minimum.reduceat(np.where(which[order], np.arange(len(order)), len(order)), starts)
        return [None if a == len(order) else [int(later_copy[order[a]]), float(-score[order[a]]),
                                             int(doc[order[a]]), ids[int(order[a])].as_py()] for a in at.tolist()]

    is_root = np.flatnonzero(doc == root)
    root_ids = dict(zip(doc[is_root].tolist(), ids.take(pa.array(is_root)).to_pylist()))
    return {str(r): {"size": n, "barred": b, "keeper": k, "short": s, "root_id": root_ids.get(r)}
            for r, n, b, k, s in zip(root[order][starts].tolist(), np.diff(np.append(starts, len(order))).tolist(),
                                     np.logical_or.reduceat(barred[order], starts).tolist(),
                                     first(~barred & ~short), first(short))}


def _first(candidates: list[list | None]) -> list | None:
    """The first of ``candidates`` (``[later_copy, -score, doc, id]`` or None) in rank order, sorted
    as ``components.ranked`` sorts (a NaN score last)."""
    found = [c for c in candidates if c is not None]
    if not found:
        return None
    later_copy, negated, doc = (np.array([c[i] for c in found]) for i in range(3))
    return found[np.lexsort((doc, negated.astype(np.float64), later_copy))[0]]


def _ranked_before(later_copy: np.ndarray, negated: np.ndarray, doc: np.ndarray, other_copy: np.ndarray,
                   other_negated: np.ndarray, other_doc: np.ndarray) -> np.ndarray:
    """Whether each (later_copy, -score, doc) sorts before the other's as ``components.ranked``
    sorts them (numpy sorts a NaN last)."""
    nan, other_nan = np.isnan(negated), np.isnan(other_negated)
    less = (negated < other_negated) | (~nan & other_nan)
    same = (negated == other_negated) | (nan & other_nan)
    return (later_copy < other_copy) | ((later_copy == other_copy) & (less | (same & (doc < other_doc))))
