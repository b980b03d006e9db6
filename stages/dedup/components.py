"""Clusters from duplicate edges, and which document of each cluster stays.

Documents are numbered ``shard_index << 32 | row`` (corpus order). In the single-task way
(``clusters.cluster_corpus``) the edges (one per duplicate pair found by a reducer) are the only
input held in memory: their endpoints are relabelled to 0..n-1 and handed to scipy's connected
components, which is linear in edges and nodes. ``keepers`` and ``firsts`` serve both ways: the
distributed one (``stages.dedup.star``) calls them per partition of whole clusters.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


@dataclass
class Clusters:
    """Every document that has at least one duplicate, sorted by document number."""

    doc: np.ndarray  # int64
    label: np.ndarray  # int64: cluster number, 0..clusters-1


def cluster(u: np.ndarray, v: np.ndarray) -> Clusters:
    """Connected components of the undirected graph with edges (u[i], v[i])."""
    nodes, endpoints = np.unique(np.concatenate([u, v]), return_inverse=True)
    if len(nodes) == 0:
        return Clusters(np.zeros(0, np.int64), np.zeros(0, np.int64))
    edges = len(u)
    graph = coo_matrix((np.ones(edges, np.int8), (endpoints[:edges], endpoints[edges:])),
                       shape=(len(nodes), len(nodes))).tocsr()
    _, labels = connected_components(graph, directed=False)
    return Clusters(nodes, labels.astype(np.int64))


def keepers(clusters: Clusters, later_copy: np.ndarray, score: np.ndarray,
            barred: np.ndarray | None = None) -> np.ndarray:
    """The position (in ``clusters.doc``) of the document each document's cluster keeps.

    Candidates are the documents that are not ``barred`` (an earlier keeper round found them too
    short after paragraph dedup) and not ``later_copy`` (an exact copy of an earlier document);
    among them the highest ``score`` wins, then the first in corpus order. A later copy is chosen
    only when no other candidate is left, and a barred document only when every member is barred:
    callers treat such a cluster as keeping nothing.
    """
    if barred is None:
        barred = np.zeros(len(clusters.doc), dtype=bool)
    order = np.lexsort((clusters.doc, -score, later_copy, barred, clusters.label))
    first_of_label = np.ones(len(order), dtype=bool)
    first_of_label[1:] = clusters.label[order][1:] != clusters.label[order][:-1]
    keeper_of_label = np.empty(clusters.label.max() + 1 if len(order) else 0, dtype=np.int64)
    keeper_of_label[clusters.label[order][first_of_label]] = order[first_of_label]
    return keeper_of_label[clusters.label]


def firsts(clusters: Clusters) -> np.ndarray:
    """The position of each document's cluster's first document (its cluster id)."""
    first_of_label = np.full(clusters.label.max() + 1 if len(clusters.doc) else 0, len(clusters.doc))
    np.minimum.at(first_of_label, clusters.label, np.arange(len(clusters.doc)))
    return first_of_label[clusters.label]
