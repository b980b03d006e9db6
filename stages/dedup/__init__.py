"""Deduplication: exact documents, exact repeated paragraphs, MinHash near-duplicates, on Ray.

Which documents are duplicates is a property of the whole corpus, so ``prepare`` decides it once,
before any shard is processed, as a chain of map and reduce tasks over files in the stage's scratch
directory (``stages.dedup.steps`` lists them; each is skipped on rerun when its outputs exist). A
reduce task reads its slice of every map task's file; where that makes many reads (``shuffle``
settings), a gather level in between reads each map file once per block of reduce tasks and writes
each reduce task one file (``stages.dedup.exchange``), with the same result:

1. map, per shard: a 64-bit hash of each document's normalised text, its MinHash signature
   (datasketch's, ``stages.dedup.minhash``: word n-grams, character n-grams for zh/ja/ko/th) and
   its LSH band keys, written partitioned by key;
2. reduce, per partition: documents sharing a key become candidate pairs; with ``verify`` each
   near-duplicate pair is then checked against its estimated Jaccard similarity (a two-hop join
   that moves signatures only with candidate pairs);
3. connected components of the pairs: one document per cluster is kept (``keep``: first in corpus
   order, longest, or highest quality_score). One task holds every pair (a compiled
   union-find, ``stages.dedup.components``) or, above ``components.distributed_above_edges`` pairs, large-star /
   small-star rounds over partitions of the pairs find them with no task holding all of them
   (``stages.dedup.star``, ``stages.dedup.partitioned``); both give the same clusters and output;
4. map + reduce over the paragraphs (lines) of the documents still kept, hashed once from the text:
   a paragraph stays where it first occurs in corpus order and is removed from every later document;
   a cluster keeper that this leaves too short is replaced by its cluster's next best member, and 3-4
   run again (a keeper round, ``stages.dedup.steps``; a run of members too short goes in one), so
   removed duplicates always point at a document that is kept; after ``max_keeper_rounds`` rounds, a
   keeper still too short is kept whole instead;
5. map, per shard: one decision file (document id -> reason, kept id, cluster, lines to drop).

Corpus order is (shard order as the runner lists them, row within shard), so the results do not
depend on the number of workers, on scheduling, or on how the corpus was split into shards.

``begin_shard`` loads the shard's decision file; ``process`` applies it to the rows, by ``id``:

- removes documents with reason ``exact_duplicate`` (normalised text seen earlier),
  ``near_duplicate`` (in a MinHash cluster kept elsewhere), or ``too_short_after_paragraph_dedup``;
  ``dup_kept_id`` of a removed duplicate always names a document this stage keeps, and a cluster keeps
  exactly one document unless every member is removed as too short (then it keeps none);
- removes repeated paragraphs from ``text`` of the documents it keeps (not from a keeper kept whole);
- adds ``dup_cluster`` (string: id of the cluster's first document, null if not in a cluster) and
  ``dup_kept_id`` (string: id of the document kept in its cluster, on removed duplicates) to every row.

Stats: ``paragraphs_removed``, ``paragraph_chars_removed``, ``docs_with_paragraphs_removed``,
``clustered_docs`` (rows of this shard in a cluster). Corpus-wide cluster statistics go to
``summary.json`` in the scratch directory and to the log.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipeline import storage
from pipeline.stage import PrepareContext, Stage, StageOutput, split
from pipeline.stats import Stats
from stages.dedup.config import DedupConfig
from stages.dedup.shuffle import read_table
from stages.dedup.steps import decisions_path, run_prepare
from stages.dedup.text import drop_lines

__all__ = ["Dedup", "DedupConfig"]


class Dedup(Stage):
    """Removes exact and near-duplicate documents and repeated paragraphs (see module docstring)."""

    name = "dedup"
    Config = DedupConfig

    def __init__(self, config: DedupConfig):
        super().__init__(config)
        self.scratch: str | None = None
        self.filesystem = None
        self._decisions: dict[str, tuple] = {}

    def prepare(self, context: PrepareContext) -> None:
        storage.remove_temporaries(context.filesystem, context.scratch)
        run_prepare(self.config, context.inputs, context.scratch, context.filesystem, context.map, context.log,
                    context.workers)

    def begin_shard(self, shard: str, scratch: str, filesystem) -> None:
        self.scratch, self.filesystem = scratch, filesystem
        path = decisions_path(self.scratch, shard)
        if not storage.exists(self.filesystem, path):
            raise RuntimeError(f"dedup: no decisions for shard {shard!r} at {path}; prepare did not finish")
        table = read_table(self.filesystem, path)
        self._decisions = {
            doc_id: (reason, kept_id, cluster, drop)
            for doc_id, reason, kept_id, cluster, drop in zip(
                *(table[c].to_pylist() for c in ("id", "reason", "kept_id", "cluster", "drop")))
        }

    def process(self, batch: pa.Table) -> StageOutput:
        stats = Stats()
        reasons, clusters, kept_ids, drops = [], [], [], {}
        for row, doc_id in enumerate(batch["id"].to_pylist()):
            reason, kept_id, cluster, drop = self._decisions.get(doc_id, (None, None, None, None))
            reasons.append(reason)
            clusters.append(cluster)
            kept_ids.append(kept_id)
            if drop and reason is None:
                drops[row] = drop
        stats.add("clustered_docs", sum(cluster is not None for cluster in clusters))
        columns = {
            "dup_cluster": pa.array(clusters, pa.string()),
            "dup_kept_id": pa.array(kept_ids, pa.string()),
        }
        if drops:
            columns["text"] = self._drop_paragraphs(batch["text"], drops, stats)
        return split(batch, reasons, stats, **columns)

    @staticmethod
    def _drop_paragraphs(texts: pa.ChunkedArray, drops: dict[int, list[int]], stats: Stats) -> pa.Array:
        """``texts`` less the lines ``drops`` names."""
        texts = texts.combine_chunks().cast(pa.string())
        edited, removed_chars = drop_lines(texts, drops)
        stats.add("paragraphs_removed", sum(map(len, drops.values())))
        stats.add("paragraph_chars_removed", removed_chars)
        stats.add("docs_with_paragraphs_removed", len(drops))
        order = np.arange(len(texts))
        order[list(drops)] = len(texts) + np.arange(len(drops))
        return pa.concat_arrays([texts, edited]).take(order)
