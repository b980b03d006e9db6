"""``stages.dedup.components.labels``: the clusters of a duplicate graph, numbered as scipy's
``connected_components`` numbers them (scipy is in the dev extras as this reference; the pipeline
itself no longer imports it)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from stages.dedup import components


def scipy_labels(nodes: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    keys = np.unique(u * max(nodes, 1) + v)  # scipy sums a repeated pair's weights
    u, v = np.divmod(keys, max(nodes, 1))
    graph = csr_matrix((np.ones(len(u), np.int8), (u, v)), shape=(nodes, nodes))
    return connected_components(graph, directed=False)[1]


@pytest.mark.parametrize("nodes, edges", [(1, 0), (2, 1), (10, 30), (1000, 300), (1000, 1500), (50_000, 40_000)])
def test_labels_equal_scipys(nodes, edges):
    rng = np.random.default_rng(nodes + edges)
    u, v = rng.integers(0, nodes, edges), rng.integers(0, nodes, edges)  # repeats and self-loops included
    assert np.array_equal(components.labels(nodes, u, v), scipy_labels(nodes, u, v))


def test_a_long_chain_in_both_orders_is_one_cluster():
    """Each edge joins the chain so far to a new end, from the top down and from the bottom up: the
    worst orders for a union-find without ranks, which path halving keeps short."""
    n = 200_000
    down = np.arange(n - 1, 0, -1)
    for u, v in [(down, down - 1), (down - 1, down)]:
        assert (components.labels(n, u, v) == 0).all()
    assert components.labels(0, np.zeros(0, np.int64), np.zeros(0, np.int64)).size == 0


def test_clusters_of_document_numbers():
    u = np.array([5 << 32 | 1, 7, 7, 2 << 32], dtype=np.int64)
    v = np.array([7, 9, 5 << 32 | 1, 2 << 32 | 3], dtype=np.int64)
    found = components.cluster(u, v)
    assert found.doc.tolist() == [7, 9, 2 << 32, 2 << 32 | 3, 5 << 32 | 1]
    assert found.label.tolist() == [0, 0, 1, 1, 0]
