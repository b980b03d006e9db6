"""The clusters step when no task may hold every edge: after ``stages.dedup.star`` found each clustered
document's root, the keepers are chosen per partition of the roots and each shard's rows gathered.

    step              task per    reads                                         writes
    cluster members   shard       star.roots in it, docs/, earlier rounds'      cluster-members/  part (of root), root,
                                  too-short-keepers/ and short-successors/                        doc, id, later_copy,
                                                                                                  barred, short, score
    cluster keepers   partition   its rows of every cluster-members/            cluster-keepers/  rows of clusters/
    cluster rows      shard       its rows of every cluster-keepers/            clusters/<shard>.parquet
    cluster summary   (one)       the counts in components/nodes/ and           clusters/_SUCCESS.json
                                  cluster-keepers/

All members of a cluster share its root, so ``clusters.fates`` sees each cluster whole, with the same
attributes as in the single task: the rows and the summary are the same. A task holds one shard's
clustered documents or one partition's clusters. These steps belong to a keeper round
(``steps.round_steps``); the roots do not, so a later round reuses them.
"""
from __future__ import annotations

import pyarrow as pa

from pipeline import storage
from stages.dedup import clusters, components, star
from stages.dedup.documents import BARRED, CLUSTERS, DOCS
from stages.dedup.paragraphs import SHORT_SUCCESSORS
from stages.dedup.shuffle import Job, Step, gather, node_partition, read_counts, shard_range, write_sorted

MEMBERS = "cluster-members"  # <shard>.parquet: sorted by the partition of the document's root
KEEPERS = "cluster-keepers"  # <partition>.parquet: clusters/ rows sorted by doc; counts: the summary's

MEMBER_SCHEMA = pa.schema([
    ("part", pa.int32()), ("root", pa.int64()), ("doc", pa.int64()), ("id", pa.string()),
    ("later_copy", pa.bool_()), ("barred", pa.bool_()), ("short", pa.bool_()), ("score", pa.float64()),
])


def steps(job: Job, suffix: str) -> list[Step]:
    """The steps that replace the single ``clusters`` task; ``suffix`` names the keeper round."""
    shards = tuple(range(len(job.shards)))
    parts = tuple(range(job.config.partitions))
    return [
        Step("cluster members" + suffix, cluster_members, shards, lambda i: job.path(MEMBERS, i)),
        Step("cluster keepers" + suffix, cluster_keepers, parts, lambda part: job.path(KEEPERS, part)),
        Step("cluster rows" + suffix, cluster_rows, shards, lambda i: job.path(CLUSTERS, i)),
        Step("cluster summary" + suffix, write_summary, (0,), lambda _: clusters.summary_path(job)),
    ]


def cluster_members(task: tuple[Job, int]) -> None:
    """Per shard: its clustered documents with what choosing a keeper needs, routed to their root."""
    job, shard = task
    low, _ = shard_range(shard)
    found = star.roots(job, *shard_range(shard))
    doc, root = found["doc"].to_numpy(), found["root"].to_numpy()
    attributes = storage.read_parquet(job.filesystem, job.path(DOCS, shard))  # one row per document, in order
    if len(doc) and doc[-1] - low >= attributes.num_rows:
        raise RuntimeError("dedup scratch is inconsistent: clustered documents missing from docs/")
    attributes = attributes.take(pa.array(doc - low))
    table = pa.table({
        "part": node_partition(root, job), "root": root, "doc": doc, "id": attributes["id"],
        "later_copy": found["later_copy"],
        "barred": components.among(doc, clusters.earlier_findings(job, BARRED, [shard])),
        "short": components.among(doc, clusters.earlier_findings(job, SHORT_SUCCESSORS, [shard])),
        "score": clusters.keep_scores(job, attributes),
    }, schema=MEMBER_SCHEMA)
    write_sorted(job, job.path(MEMBERS, shard), table, job.config.partitions)


def cluster_keepers(task: tuple[Job, int]) -> None:
    """Per partition of the roots: the fate of every member of its clusters, and their counts."""
    job, part = task
    members = gather(job, job.paths(MEMBERS, len(job.shards)), part, part + 1).sort_by([("doc", "ascending")])
    found = components.Clusters(members["doc"].to_numpy(), components.positions(members["root"].to_numpy())[1])
    table, summary = clusters.fates(found, members["id"].combine_chunks(),
                                    members["later_copy"].to_numpy(zero_copy_only=False),
                                    members["score"].to_numpy(),
                                    members["barred"].to_numpy(zero_copy_only=False),
                                    members["short"].to_numpy(zero_copy_only=False))
    write_sorted(job, job.path(KEEPERS, part), table, len(job.shards), counts=summary)


def cluster_rows(task: tuple[Job, int]) -> None:
    """Per shard: its rows of ``clusters/``, as the single task writes them."""
    job, shard = task
    rows = gather(job, job.paths(KEEPERS, job.config.partitions), *shard_range(shard))
    storage.write_parquet(job.filesystem, job.path(CLUSTERS, shard),
                          rows.sort_by([("doc", "ascending")]).combine_chunks())


def write_summary(task: tuple[Job, int]) -> None:
    """The corpus-wide counts, added up from the partitions' (the single task's ``summary.json``)."""
    job, _ = task
    parts = range(job.config.partitions)
    kept = [read_counts(job, job.path(KEEPERS, part)) for part in parts]
    summary = {**_added(kept), "largest_cluster": max(counts["largest_cluster"] for counts in kept),
               "edges": _added([read_counts(job, job.path(star.NODES, part)) for part in parts]),
               "keeper_round": job.round}
    storage.write_json(job.filesystem, clusters.summary_path(job), summary)


def _added(counts: list[dict]) -> dict:
    """Several partitions' counts added up, key by key (nested too)."""
    return {key: _added([c[key] for c in counts]) if isinstance(value, dict) else sum(c[key] for c in counts)
            for key, value in counts[0].items()}
