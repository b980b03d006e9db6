"""Counters that merge: what stages report and the runner aggregates across shards.

A ``Stats`` is a nested dict. Numbers add when merged, dicts merge key by key, and lists
(examples) concatenate up to ``EXAMPLES_PER_KEY`` items, so shards can be merged in any grouping
and, merged in shard order, always give the same result.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

EXAMPLES_PER_KEY = 5


class Stats(dict):
    """Nested counters: ``stats.add("dropped", reason, n)``, ``stats.example(reason, doc_id)``."""

    def add(self, *path_and_value: Any) -> None:
        """Add a number at a nested key path: ``add("by_lang", "en", "docs", 1)``."""
        *path, value = path_and_value
        node = self
        for key in path[:-1]:
            node = node.setdefault(str(key), {})
        node[str(path[-1])] = node.get(str(path[-1]), 0) + value

    def example(self, *path_and_item: Any) -> None:
        """Record an example (e.g. a document id) under a key path, capped per key."""
        *path, item = path_and_item
        node = self
        for key in path[:-1]:
            node = node.setdefault(str(key), {})
        items = node.setdefault(str(path[-1]), [])
        if len(items) < EXAMPLES_PER_KEY:
            items.append(item)

    def examples(self, heading: str, keys: list, items: Callable[[list[int]], list]) -> None:
        """``example(heading, key, item)`` for the rows of each ``keys`` value (None: no row) that
        ``example`` would keep, the first ``EXAMPLES_PER_KEY`` of each key; ``items(rows)`` gives
        those rows' items. A batch that removes 100,000 rows looks at each key once per row, not
        ``example`` once per row, and converts only the items it keeps."""
        rows: dict[Any, list[int]] = {}
        for row, key in enumerate(keys):
            if key is not None:
                taken = rows.setdefault(key, [])
                if len(taken) < EXAMPLES_PER_KEY:
                    taken.append(row)
        picked = [row for taken in rows.values() for row in taken]
        for row, item in zip(picked, items(picked) if picked else []):
            self.example(heading, keys[row], item)

    def merge(self, other: dict) -> "Stats":
        _merge_into(self, other)
        return self


def _merge_into(target: dict, other: dict) -> None:
    for key, value in other.items():
        if key not in target:
            target[key] = _copy(value)
        elif isinstance(value, dict):
            _merge_into(target[key], value)
        elif isinstance(value, list):
            room = EXAMPLES_PER_KEY - len(target[key])
            target[key].extend(value[: max(room, 0)])
        else:
            target[key] += value


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return list(value)
    return value


def histogram(values, edges: list[float]) -> dict[str, int]:
    """Count values into buckets labelled by their lower edge (``"0.50"``: 0.50 <= v < next edge);
    values under the first edge count in the first bucket."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return {}
    index = np.maximum(np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1, 0)
    counts = np.bincount(index, minlength=len(edges))
    return {f"{edges[i]:.2f}": int(count) for i, count in enumerate(counts) if count}
