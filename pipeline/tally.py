"""A stage's statistics merged as its receipts arrive, so that the driver never holds them all.

A receipt's ``stats`` take tens of kB in the driver's memory (about 40 kB for a rules unit), and a
stage at the 5 TB plan's size has about 39,000 units: held until the stage ended, they were
gigabytes. ``Tally`` merges each receipt's stats the moment it arrives, in whatever order the tasks
finish, into exactly what ``Stats.merge`` gives over the receipts in unit order, which is what
``_stats.json`` has always held: the counters are integers, so their sums do not depend on the
order, and each list of examples keeps only the entries of the units that come first, enough of
them to fill it. The receipt itself is kept without its stats (about 2.5 kB).

Units are ordered by keys, tuples compared element by element: a stage's own units by their
position; in a fused group (``pipeline.fusion``), the units of every stage after the first are the
kept files of the stage before, which ``planning.kept_units`` lists unit by unit, file by file, so
such a unit's key is the key of the unit that wrote the file plus the file's position among its
kept files (``Keys``).
"""
from __future__ import annotations

import bisect
from typing import Callable

from pipeline.planning import kept_unit_name
from pipeline.stats import EXAMPLES_PER_KEY, Stats

Key = tuple[int, ...]


class Tally:
    """Stats of receipts added in any order; ``result()`` is their merge in key order."""

    def __init__(self) -> None:
        self._counters: dict = {}
        self._lists: dict[tuple[str, ...], list[tuple[Key, list]]] = {}

    def add(self, key: Key, stats: dict) -> None:
        self._merge(key, self._counters, stats, ())

    def _merge(self, key: Key, target: dict, node: dict, path: tuple[str, ...]) -> None:
        for name, value in node.items():
            if isinstance(value, dict):
                self._merge(key, target.setdefault(name, {}), value, (*path, name))
            elif isinstance(value, list):
                self._keep(key, (*path, name), value)
            else:
                target[name] = target[name] + value if name in target else value

    def _keep(self, key: Key, path: tuple[str, ...], items: list) -> None:
        """Insert ``items`` at ``key`` and drop the entries after those that fill the list: the
        first entry counts in full, as ``Stats.merge`` copies the first list it meets."""
        entries = self._lists.setdefault(path, [])
        bisect.insort(entries, (key, list(items)), key=lambda entry: entry[0])
        count = 0
        for index, (_, kept) in enumerate(entries):
            count += len(kept)
            if count >= EXAMPLES_PER_KEY:
                del entries[index + 1:]
                break

    def result(self) -> Stats:
        merged = Stats()
        merged.merge(self._counters)
        for path, entries in self._lists.items():
            node = merged
            for name in path[:-1]:
                node = node[name]
            items = list(entries[0][1])
            for _, more in entries[1:]:
                items.extend(more[:max(EXAMPLES_PER_KEY - len(items), 0)])
            node[path[-1]] = items
        return merged

    def taker(self, key_of: Callable[[dict], Key]) -> Callable[[dict], dict]:
        """A function that adds a receipt's stats at ``key_of(receipt)`` and returns the receipt
        without them."""
        def take(receipt: dict) -> dict:
            self.add(key_of(receipt), receipt["stats"])
            return {name: value for name, value in receipt.items() if name != "stats"}
        return take


class Keys:
    """The keys of one fused group's units, per stage: the first stage's by position, each later
    stage's from the receipts of the stage before (``child_keys`` of each, as they are taken)."""

    def __init__(self, stages: list[str], first_units: list[str]):
        self.stages = stages
        self.keys: dict[str, dict[str, Key]] = {name: {} for name in stages}
        self.keys[stages[0]] = {unit: (position,) for position, unit in enumerate(first_units)}

    def key_of(self, stage: str, receipt: dict) -> Key:
        key = self.keys[stage][receipt["unit"]]
        following = self.stages.index(stage) + 1
        if following < len(self.stages):
            children = self.keys[self.stages[following]]
            for position, kept in enumerate(receipt["kept_files"]):
                children[kept_unit_name(kept)] = (*key, position)
        return key

