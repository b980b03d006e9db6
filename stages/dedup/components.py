"""Clusters from duplicate edges, and which document of each cluster stays.

Documents are numbered ``shard_index << 32 | row`` (corpus order). In the single-task way
(``clusters.cluster_corpus``) the edges (one per duplicate pair found by a reducer) are the only
input held in memory: their endpoints are relabelled to 0..n-1 (``relabelled``) and joined by a
compiled union-find (``labels``), nearly linear in edges and nodes. ``ranked``,
``keepers`` and ``firsts`` serve both ways: the distributed one (``stages.dedup.partitioned``) calls
them per partition of whole clusters, and ``stages.dedup.star`` finds the components of each
partition's arcs with ``positions`` and ``labels``.

Sorting is most of the work, so document numbers are sorted as squeezed 32-bit numbers where they fit
(``squeeze_bits``): a pair of them, or one with its index, then sorts as a single 64-bit number.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.jit import njit


@dataclass
class Clusters:
    """Every document that has at least one duplicate, sorted by document number."""

    doc: np.ndarray  # int64
    label: np.ndarray  # int64: cluster number, 0..clusters-1


def cluster(u: np.ndarray, v: np.ndarray) -> Clusters:
    """Connected components of the undirected graph with edges (u[i], v[i])."""
    doc, u_at, v_at = relabelled(u, v)
    return Clusters(doc, labels(len(doc), u_at, v_at))


def relabelled(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The documents of the edges (u[i], v[i]), sorted and distinct, and each end's position among them."""
    doc, at = positions(np.concatenate([u, v]))
    return doc, at[:len(u)], at[len(u):]


def positions(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(values, return_inverse=True)`` for document numbers: where they squeeze into 32
    bits (``squeeze_bits``), one sort of (squeezed number, index) pairs replaces numpy's argsort,
    which takes over twice as long."""
    row_bits = squeeze_bits(values)
    if row_bits is None or len(values) >= 1 << 32:
        return np.unique(values, return_inverse=True)
    key = np.sort((squeezed(values, row_bits) << np.uint64(32)) | np.arange(len(values), dtype=np.uint64))
    number = key >> np.uint64(32)
    new = np.append(True, number[1:] != number[:-1]) if len(key) else np.zeros(0, bool)
    at = np.empty(len(values), np.int64)
    at[(key & np.uint64(0xFFFFFFFF)).astype(np.int64)] = np.cumsum(new) - 1
    return unsqueezed(number[new], row_bits), at


def squeeze_bits(*docs: np.ndarray) -> int | None:
    """The row bits of ``shard << row_bits | row``, 32 bits that order document numbers
    (``shard << 32 | row``) as they are, when every one of ``docs`` fits; else None."""
    low = np.int64(0xFFFFFFFF)
    docs = [d for d in docs if len(d)]
    if not docs:
        return 0
    row_bits = max(int((d & low).max()) for d in docs).bit_length()
    shard_bits = (max(int(d.max()) for d in docs) >> 32).bit_length()
    return row_bits if shard_bits + row_bits <= 32 else None


def squeezed(doc: np.ndarray, row_bits: int) -> np.ndarray:
    doc = doc.astype(np.uint64)
    return ((doc >> np.uint64(32)) << np.uint64(row_bits)) | (doc & np.uint64(0xFFFFFFFF))


def unsqueezed(number: np.ndarray, row_bits: int) -> np.ndarray:
    rows = np.uint64((1 << row_bits) - 1)
    return (((number >> np.uint64(row_bits)) << np.uint64(32)) | (number & rows)).astype(np.int64)


def pair_keys(u_at: np.ndarray, v_at: np.ndarray, nodes: int) -> np.ndarray:
    """The distinct ordered pairs of positions, each as ``u_at * nodes + v_at``, sorted."""
    return distinct(u_at * np.int64(nodes) + v_at)


def labels(nodes: int, u_at: np.ndarray, v_at: np.ndarray) -> np.ndarray:
    """The cluster number of each of ``nodes`` positions, given the edges as pairs of positions:
    clusters numbered in the order of their first position, as scipy's ``connected_components``
    numbers them (``tests/test_dedup_components.py`` compares the two)."""
    return _union_find_labels(nodes, np.asarray(u_at, np.int64), np.asarray(v_at, np.int64))


# Compiled, not scipy's connected components: the computation is one pass over the edges either way,
# but importing scipy.sparse.csgraph costs the process that clusters 0.4 s (it imports scipy.linalg),
# more than clustering a corpus-dev's pairs takes.
@njit(cache=True, nogil=True)
def _union_find_labels(nodes, u, v):
    """Union-find with path halving, each root the smallest position of its set (so a position's
    parent is never above it), then one ascending pass that numbers the roots and writes each
    position's cluster number over its parent (the parent's slot already holds its number)."""
    parent = np.arange(nodes)
    for i in range(u.size):
        a, b = u[i], v[i]
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        while parent[b] != b:
            parent[b] = parent[parent[b]]
            b = parent[b]
        if a < b:
            parent[b] = a
        elif b < a:
            parent[a] = b
    count = 0
    for x in range(nodes):
        if parent[x] == x:
            parent[x] = count
            count += 1
        else:
            parent[x] = parent[parent[x]]  # the parent is below x: numbered already, in x's cluster
    return parent


def distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` for integers, by sorting: numpy 2's hash table, which ``np.unique``
    takes without ``return_inverse``, is many times slower on millions of distinct values."""
    values = np.sort(values)
    return values[np.append(True, values[1:] != values[:-1])] if len(values) else values


def among(doc: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Which of ``doc`` (sorted, distinct) occur in ``wanted`` (any order, repeats allowed)."""
    found = np.zeros(len(doc), bool)
    if len(doc):
        at = np.minimum(np.searchsorted(doc, wanted), len(doc) - 1)
        found[at[doc[at] == wanted]] = True
    return found


def ranked(clusters: Clusters, later_copy: np.ndarray, score: np.ndarray) -> np.ndarray:
    """Positions in ``clusters.doc`` by cluster, then in the order ``keepers`` prefers its members:
    not a later copy first, then the highest ``score``, then the first in corpus order (lexsort is
    stable and ``doc`` sorted, so that last key needs no column)."""
    return np.lexsort((-score, clusters.label * 2 + later_copy))  # two keys sort faster than three


def keepers(clusters: Clusters, later_copy: np.ndarray, score: np.ndarray,
            barred: np.ndarray | None = None, order: np.ndarray | None = None) -> np.ndarray:
    """The position (in ``clusters.doc``) of the document each document's cluster keeps.

    Candidates are the documents that are not ``barred`` (an earlier keeper round found them too
    short after paragraph dedup) and not ``later_copy`` (an exact copy of an earlier document);
    among them the highest ``score`` wins, then the first in corpus order. A later copy is chosen
    only when no other candidate is left, and a barred document only when every member is barred:
    callers treat such a cluster as keeping nothing. ``order`` is ``ranked(clusters, later_copy,
    score)`` when the caller has it already.
    """
    if order is None:
        order = ranked(clusters, later_copy, score)
    if not len(order):
        return np.zeros(0, np.int64)
    label = clusters.label[order]
    starts = np.flatnonzero(np.append(True, label[1:] != label[:-1]))
    first = starts
    if barred is not None:
        # the first member in rank order that is not barred; the first of all when every one is
        open_rank = np.where(barred[order], len(order), np.arange(len(order)))
        first = np.minimum.reduceat(open_rank, starts)
        first = np.where(first == len(order), starts, first)
    keeper_of_label = np.empty(clusters.label.max() + 1, dtype=np.int64)
    keeper_of_label[label[starts]] = order[first]
    return keeper_of_label[clusters.label]


def firsts(clusters: Clusters) -> np.ndarray:
    """The position of each document's cluster's first document (its cluster id)."""
    first_of_label = np.full(clusters.label.max() + 1 if len(clusters.doc) else 0, len(clusters.doc))
    np.minimum.at(first_of_label, clusters.label, np.arange(len(clusters.doc)))
    return first_of_label[clusters.label]
