"""Counters that merge: what stages report and the runner aggregates across shards.

A ``Stats`` is a nested dict. Numbers add when merged, dicts merge key by key, and lists
(examples) concatenate up to ``EXAMPLES_PER_KEY`` items, so shards can be merged in any grouping
and, merged in shard order, always give the same result.
"""
from __future__ import annotations

from typing import Any

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
    """Count values into buckets labelled by their lower edge (``"0.50"``: 0.50 <= v < next edge)."""
    counts: dict[str, int] = {}
    for value in values:
        label = f"{edges[0]:.2f}"
        for edge in edges:
            if value >= edge:
                label = f"{edge:.2f}"
            else:
                break
        counts[label] = counts.get(label, 0) + 1
    return counts
