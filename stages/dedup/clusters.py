"""Which document of each cluster stays: the rows of ``clusters/`` and the cluster summary.

Two ways lead here, and both end in ``fates`` on whole clusters with the same attributes, so they
write the same rows (``tests/test_components.py`` checks the stage output is byte-identical):

- ``cluster_corpus``, one task: every edge in memory, components by a compiled union-find
  (``components.labels``);
- ``stages.dedup.partitioned``, for more edges than one task should hold: components by
  ``stages.dedup.star``, then ``fates`` per partition of the clusters.

Which one runs is ``components.method`` in the config (``steps.run_prepare`` decides).

In keeper round r > 0, the keepers that earlier rounds found too short after paragraph dedup
(``barred``) are not chosen again: each such cluster keeps its next best member. The components do
not change from round to round, only what is barred, so ``cluster_corpus`` hands its components on
to the next round (``carried_path``: the clustered documents with their labels, attributes and what
was barred so far); round r + 1 reads that file and round r's findings, not every edge, every
shard's attributes and the findings of every round before. A barred document
gets no reason here (paragraph dedup removes it as too short, its own reason) and no ``kept_id``; a
cluster whose members are all barred keeps nothing and points nowhere.

The removed members of a cluster with a barred member are its ``successor``s: paragraph dedup checks
each against the round's paragraphs (``stages.dedup.paragraphs``), and those too short even so are
``short`` in later rounds. A short successor is barred as soon as every member ranked before it is
barred or short, without being chosen first: a run of them goes in one round, not one per round
(``steps`` says why the result is the same).
"""
from __future__ import annotations

import json
from dataclasses import replace
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage
from stages.dedup import components
from stages.dedup.documents import (
    BARRED, CLUSTER_SCHEMA, CLUSTERS, DOCS, DOCS_SCHEMA, REASON_EXACT, REASON_NEAR, edge_files,
)
from stages.dedup.paragraphs import SHORT_SUCCESSORS
from stages.dedup.shuffle import Job, read_table, shard_range, write_scratch

# clusters/ rows: documents' CLUSTER_SCHEMA and whether paragraph dedup checks the member as a successor
ROW_SCHEMA = CLUSTER_SCHEMA.append(pa.field("successor", pa.bool_()))

CARRIED = "cluster-components"  # components.parquet (``shuffle.ROUND_SCOPED``)
# The clustered documents, sorted, as ``cluster_corpus`` found them, and what round r barred
# (``barred``, ``short``: the findings of the rounds before r).
CARRIED_SCHEMA = pa.schema([("doc", pa.int64()), ("label", pa.int64()), ("later_copy", pa.bool_()),
                            ("id", pa.string()), ("score", pa.float64()), ("barred", pa.bool_()),
                            ("short", pa.bool_())])
EDGES_KEY = b"dedup_edges"


def summary_path(job: Job) -> str:
    """The clusters step's last output: the corpus-wide counts, written once every shard's rows are."""
    return job.path(CLUSTERS, "_SUCCESS", "json")


def carried_path(job: Job) -> str:
    """What round ``job.round``'s clusters step hands on to the next round (``CARRIED_SCHEMA`` rows,
    the edge counts in the footer); written before ``summary_path``, its receipt."""
    return job.path(CARRIED, "components")


def cluster_corpus(task: tuple[Job, int]) -> None:
    """Connected components of all edges in one task (or the round before's, ``carried_path``);
    per shard, the fate of each clustered document."""
    job, _ = task
    shards = range(len(job.shards))
    carried = _carried(job) or _components(job)
    found = components.Clusters(carried["doc"].to_numpy(), carried["label"].to_numpy())
    ids, score = carried["id"].combine_chunks(), carried["score"].to_numpy()
    later_copy = carried["later_copy"].to_numpy(zero_copy_only=False)
    barred = carried["barred"].to_numpy(zero_copy_only=False)
    short = carried["short"].to_numpy(zero_copy_only=False)
    table, summary = fates(found, ids, later_copy, score, barred, short)
    bounds = np.searchsorted(found.doc, [shard_range(shard)[0] for shard in shards] + [shard_range(len(shards))[0]])
    for shard in shards:
        write_scratch(job, job.path(CLUSTERS, shard),
                      table.slice(bounds[shard], bounds[shard + 1] - bounds[shard]))
    write_scratch(job, carried_path(job), carried)
    summary["edges"] = json.loads(carried.schema.metadata[EDGES_KEY])
    summary["keeper_round"] = job.round
    storage.write_json(job.filesystem, summary_path(job), summary)


def _components(job: Job) -> pa.Table:
    """``CARRIED_SCHEMA`` rows from every edge, every shard's attributes and the findings of every
    round before ``job.round``: round 0's way (and a later round's, when the round before handed on
    nothing: a scratch directory written before ``carried_path`` existed)."""
    edges = pa.concat_tables([storage.read_parquet(job.filesystem, path, columns=["u", "v", "exact"])
                              for path in edge_files(job)])
    u, v = edges["u"].to_numpy(), edges["v"].to_numpy()
    exact = edges["exact"].to_numpy(zero_copy_only=False)
    del edges
    doc, u_at, v_at = components.relabelled(u, v)
    del u, v
    label = components.labels(len(doc), u_at, v_at)
    pairs = components.pair_keys(u_at, v_at, len(doc))
    # a pair found by several files is one edge, exact if any of its rows is (as ``unique_pairs``)
    exact_pairs = len(components.pair_keys(u_at[exact], v_at[exact], len(doc)))
    later_copy = np.zeros(len(doc), bool)
    later_copy[v_at[exact]] = True
    del u_at, v_at, exact
    ids, score = _clustered_attributes(job, doc)
    shards = range(len(job.shards))
    counts = {"exact": exact_pairs, "near": len(pairs) - exact_pairs}
    return pa.table([doc, label, later_copy, ids, score,
                     components.among(doc, earlier_findings(job, BARRED, shards)),
                     components.among(doc, earlier_findings(job, SHORT_SUCCESSORS, shards))],
                    schema=CARRIED_SCHEMA.with_metadata({EDGES_KEY: json.dumps(counts)}))


def _carried(job: Job) -> pa.Table | None:
    """The round before's components with its own findings added, or None in round 0 (or when
    the round before handed on nothing)."""
    if not job.round:
        return None
    before = replace(job, round=job.round - 1)
    if not storage.exists(job.filesystem, carried_path(before)):
        return None
    carried = read_table(job.filesystem, carried_path(before))
    doc = carried["doc"].to_numpy()
    shards = range(len(job.shards))
    for column, directory in (("barred", BARRED), ("short", SHORT_SUCCESSORS)):
        found = components.among(doc, findings(before, directory, shards))
        found |= carried[column].to_numpy(zero_copy_only=False)
        carried = carried.set_column(CARRIED_SCHEMA.get_field_index(column), column, pa.array(found))
    return carried


def fates(found: components.Clusters, ids: pa.Array, later_copy: np.ndarray, score: np.ndarray,
          barred: np.ndarray, short: np.ndarray) -> tuple[pa.Table, dict]:
    """The ``clusters/`` rows of whole clusters (sorted by document, as ``found``), and their counts.

    ``ids``, ``later_copy`` (second document of an exact edge), ``score`` (``keep_scores``),
    ``barred`` and ``short`` (successors too short) are per document of ``found``; the cluster id is
    the id of its first document.
    """
    order = components.ranked(found, later_copy, score)
    barred = _barred_with_short_successors(found, order, barred, short)
    keeper = components.keepers(found, later_copy, score, barred, order)
    is_keeper = (keeper == np.arange(len(found.doc))) & ~barred
    removed = ~is_keeper & ~barred
    with_barred = np.zeros(found.label.max() + 1 if len(found.doc) else 0, bool)
    with_barred[found.label[barred]] = True
    table = pa.table({
        "doc": pa.array(found.doc, pa.int64()),
        "id": ids,
        "cluster": ids.take(pa.array(components.firsts(found), pa.int64())),
        "kept_id": ids.take(pa.array(keeper, pa.int64(), mask=~removed)),
        "reason": pa.array([REASON_EXACT, REASON_NEAR], pa.string()).take(
            pa.array(np.where(later_copy, 0, 1), pa.int64(), mask=~removed)),
        "keeper": pa.array(is_keeper),
        "successor": pa.array(removed & with_barred[found.label]),
    }, schema=ROW_SCHEMA)
    return table, cluster_counts(found, removed & later_copy, removed & ~later_copy, barred)


def _barred_with_short_successors(found: components.Clusters, order: np.ndarray, barred: np.ndarray,
                                  short: np.ndarray) -> np.ndarray:
    """``barred``, and every ``short`` member all of whose cluster's members ranked before it (in
    ``order``, ``components.ranked``: as keepers are chosen, barred or not) are barred or short themselves."""
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
    found = [findings(replace(job, round=r), directory, shards) for r in range(job.round)]
    return components.distinct(np.concatenate(found)) if found else np.zeros(0, np.int64)


def findings(job: Job, directory: str, shards: Iterable[int]) -> np.ndarray:
    """The documents of ``shards`` that round ``job.round`` wrote to ``directory``, in no order."""
    found = [read_table(job.filesystem, job.path(directory, shard), columns=["doc"])["doc"].to_numpy()
             for shard in shards]
    return np.concatenate(found) if found else np.zeros(0, np.int64)


def keep_scores(job: Job, attributes: pa.Table) -> np.ndarray:
    """What ``keep`` ranks the members of a cluster by (``DOCS`` rows), higher first; ties go to the first."""
    if job.config.keep == "longest":
        return attributes["chars"].to_numpy().astype(np.float64)
    if job.config.keep == "quality":
        return pc.fill_null(attributes["quality_score"], float("-inf")).to_numpy().astype(np.float64)
    return np.zeros(attributes.num_rows)


def _clustered_attributes(job: Job, doc: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    """Ids and keep-scores of the clustered documents (``doc`` is sorted), read shard by shard
    (``docs/`` holds one row per document, in order)."""
    parts = []
    for shard in range(len(job.shards)):
        low, high = shard_range(shard)
        rows = doc[np.searchsorted(doc, low):np.searchsorted(doc, high)] - low
        if not len(rows):
            continue
        attributes = storage.read_parquet(job.filesystem, job.path(DOCS, shard),
                                          columns=["id", "chars", "quality_score"])
        if rows[-1] >= attributes.num_rows:
            raise RuntimeError("dedup scratch is inconsistent: clustered documents missing from docs/")
        parts.append(attributes.take(pa.array(rows)))
    attributes = pa.concat_tables(parts) if parts else DOCS_SCHEMA.empty_table()
    if attributes.num_rows != len(doc):
        raise RuntimeError("dedup scratch is inconsistent: clustered documents outside every shard")
    return attributes["id"].combine_chunks(), keep_scores(job, attributes)


def cluster_counts(found: components.Clusters, removed_exact: np.ndarray, removed_near: np.ndarray,
                   barred: np.ndarray) -> dict:
    """Counts of whole clusters; those of several partitions add up (``largest_cluster``: the maximum)."""
    sizes = np.bincount(found.label) if len(found.doc) else np.zeros(0, np.int64)
    buckets = {"2": sizes == 2, "3-9": (sizes >= 3) & (sizes < 10), "10-99": (sizes >= 10) & (sizes < 100),
               "100+": sizes >= 100}
    return {
        "clusters": int(len(sizes)),
        "clustered_docs": int(len(found.doc)),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0,
        "cluster_sizes": {label: int(mask.sum()) for label, mask in buckets.items()},
        "removed": {REASON_EXACT: int(removed_exact.sum()), REASON_NEAR: int(removed_near.sum())},
        "keepers_replaced": int(barred.sum()),
    }
