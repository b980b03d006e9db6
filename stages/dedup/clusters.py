"""Which document of each cluster stays: the rows of ``clusters/`` and the cluster summary.

Two ways lead here, and both end in ``fates`` on whole clusters with the same attributes, so they
write the same rows (``tests/test_components.py`` checks the stage output is byte-identical):

- ``cluster_corpus``, one task: every edge in memory, components by scipy (``components.cluster``);
- ``stages.dedup.partitioned``, for more edges than one task should hold: components by
  ``stages.dedup.star``, then ``fates`` per partition of the clusters.

Which one runs is ``components.method`` in the config (``steps.run_prepare`` decides).

In keeper round r > 0, the keepers that earlier rounds found too short after paragraph dedup
(``barred``) are not chosen again: each such cluster keeps its next best member. A barred document
gets no reason here (paragraph dedup removes it as too short, its own reason) and no ``kept_id``; a
cluster whose members are all barred keeps nothing and points nowhere.

The removed members of a cluster with a barred member are its ``successor``s: paragraph dedup checks
each against the round's paragraphs (``stages.dedup.paragraphs``), and those too short even so are
``short`` in later rounds. A short successor is barred as soon as every member ranked before it is
barred or short, without being chosen first: a run of them goes in one round, not one per round
(``steps`` says why the result is the same).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from stages.dedup import components
from stages.dedup.documents import (
    BARRED, CLUSTER_SCHEMA, CLUSTERS, DOCS, REASON_EXACT, REASON_NEAR, edge_files, unique_pairs,
)
from stages.dedup.paragraphs import SHORT_SUCCESSORS
from stages.dedup.shuffle import Job, shard_range

# clusters/ rows: documents' CLUSTER_SCHEMA and whether paragraph dedup checks the member as a successor
ROW_SCHEMA = CLUSTER_SCHEMA.append(pa.field("successor", pa.bool_()))


def summary_path(job: Job) -> str:
    """The clusters step's last output: the corpus-wide counts, written once every shard's rows are."""
    return job.path(CLUSTERS, "_SUCCESS", "json")


def cluster_corpus(task: tuple[Job, int]) -> None:
    """Connected components of all edges in one task; per shard, the fate of each clustered document."""
    job, _ = task
    edges = unique_pairs(pa.concat_tables([storage.read_parquet(job.filesystem, path).select(["u", "v", "exact"])
                                           for path in edge_files(job)]))
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    exact = edges["exact"].to_numpy(zero_copy_only=False)
    found = components.cluster(u, v)
    ids, score = _clustered_attributes(job, found.doc)
    shards = range(len(job.shards))
    table, summary = fates(found, ids, np.isin(found.doc, v[exact]), score,
                           np.isin(found.doc, earlier_findings(job, BARRED, shards)),
                           np.isin(found.doc, earlier_findings(job, SHORT_SUCCESSORS, shards)))
    for shard in range(len(job.shards)):
        low, high = shard_range(shard)
        inside = pa.array((found.doc >= low) & (found.doc < high))
        storage.write_parquet(job.filesystem, job.path(CLUSTERS, shard), table.filter(inside))
    summary["edges"] = {"exact": int(exact.sum()), "near": int((~exact).sum())}
    summary["keeper_round"] = job.round
    storage.write_json(job.filesystem, summary_path(job), summary)


def fates(found: components.Clusters, ids: pa.Array, later_copy: np.ndarray, score: np.ndarray,
          barred: np.ndarray, short: np.ndarray) -> tuple[pa.Table, dict]:
    """The ``clusters/`` rows of whole clusters (sorted by document, as ``found``), and their counts.

    ``ids``, ``later_copy`` (second document of an exact edge), ``score`` (``keep_scores``),
    ``barred`` and ``short`` (successors too short) are per document of ``found``; the cluster id is
    the id of its first document.
    """
    barred = _barred_with_short_successors(found, later_copy, score, barred, short)
    keeper = components.keepers(found, later_copy, score, barred)
    is_keeper = (keeper == np.arange(len(found.doc))) & ~barred
    removed = ~is_keeper & ~barred
    reason = np.where(removed, np.where(later_copy, REASON_EXACT, REASON_NEAR), None)
    table = pa.table({
        "doc": pa.array(found.doc, pa.int64()),
        "id": ids,
        "cluster": ids.take(pa.array(components.firsts(found), pa.int64())),
        "kept_id": pc.if_else(pa.array(removed), ids.take(pa.array(keeper, pa.int64())),
                              pa.nulls(len(found.doc), pa.string())),
        "reason": pa.array(reason.tolist(), pa.string()),
        "keeper": pa.array(is_keeper),
        "successor": pa.array(removed & np.isin(found.label, found.label[barred])),
    }, schema=ROW_SCHEMA)
    return table, _summary(found, reason, barred)


def _barred_with_short_successors(found: components.Clusters, later_copy: np.ndarray, score: np.ndarray,
                                  barred: np.ndarray, short: np.ndarray) -> np.ndarray:
    """``barred``, and every ``short`` member all of whose cluster's members ranked before it (in the
    order ``components.keepers`` ranks them, barred or not) are barred or short themselves."""
    order = np.lexsort((found.doc, -score, later_copy, found.label))
    gone = (barred | short)[order]
    label = found.label[order]
    starts = np.ones(len(label), bool)
    starts[1:] = label[1:] != label[:-1]
    start = np.maximum.accumulate(np.where(starts, np.arange(len(label)), 0))  # of each one's cluster
    staying = np.cumsum(~gone)  # up to each member in this order, those neither barred nor short
    prefix = staying == staying[start] - ~gone[start]  # none of them in its own cluster
    closed = np.zeros(len(found.doc), bool)
    closed[order[prefix]] = True
    return barred | closed


def earlier_findings(job: Job, directory: str, shards: Iterable[int]) -> np.ndarray:
    """The documents of ``shards`` that the keeper rounds before ``job.round`` wrote to ``directory``
    (``BARRED``: keepers too short; ``SHORT_SUCCESSORS``), sorted."""
    found = [storage.read_parquet(job.filesystem, replace(job, round=r).path(directory, shard))["doc"].to_numpy()
             for r in range(job.round) for shard in shards]
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)


def keep_scores(job: Job, attributes: pa.Table) -> np.ndarray:
    """What ``keep`` ranks the members of a cluster by (``DOCS`` rows), higher first; ties go to the first."""
    if job.config.keep == "longest":
        return attributes["chars"].to_numpy().astype(np.float64)
    if job.config.keep == "quality":
        return pc.fill_null(attributes["quality_score"], float("-inf")).to_numpy().astype(np.float64)
    return np.zeros(attributes.num_rows)


def _clustered_attributes(job: Job, doc: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Ids and keep-scores of the clustered documents (``doc`` is sorted), read shard by shard."""
    parts = []
    for shard in range(len(job.shards)):
        attributes = storage.read_parquet(job.filesystem, job.path(DOCS, shard))
        parts.append(attributes.filter(pa.array(np.isin(attributes["doc"].to_numpy(), doc))))
    attributes = pa.concat_tables(parts).sort_by([("doc", "ascending")])
    if attributes.num_rows != len(doc):
        raise RuntimeError("dedup scratch is inconsistent: clustered documents missing from docs/")
    return attributes["id"].combine_chunks(), keep_scores(job, attributes)


def _summary(found: components.Clusters, reason: np.ndarray, barred: np.ndarray) -> dict:
    """Counts of whole clusters; those of several partitions add up (``largest_cluster``: the maximum)."""
    sizes = np.bincount(found.label) if len(found.doc) else np.zeros(0, np.int64)
    buckets = {"2": sizes == 2, "3-9": (sizes >= 3) & (sizes < 10), "10-99": (sizes >= 10) & (sizes < 100),
               "100+": sizes >= 100}
    return {
        "clusters": int(len(sizes)),
        "clustered_docs": int(len(found.doc)),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "cluster_sizes": {label: int(mask.sum()) for label, mask in buckets.items()},
        "removed": {REASON_EXACT: int((reason == REASON_EXACT).sum()),
                    REASON_NEAR: int((reason == REASON_NEAR).sum())},
        "keepers_replaced": int(barred.sum()),
    }
