"""The driver's stats tally: receipts' stats merged in arrival order give what merging them in unit
order gives, so ``_stats.json`` does not depend on which task finished first, and the receipts the
driver keeps hold no stats."""
from __future__ import annotations

import json
import random

from pipeline.planning import kept_unit_name
from pipeline.stats import EXAMPLES_PER_KEY, Stats
from pipeline.tally import Keys, Tally


def random_stats(rng: random.Random, unit: int) -> dict:
    """A receipt's stats: counters and example lists under a few shared keys, some lists empty, some
    longer than the cap (a stage may record more than ``Stats.example`` keeps), some keys absent."""
    stats: dict = {}
    for family in rng.sample(["rules", "runner", "langid"], rng.randint(1, 3)):
        node = stats.setdefault(family, {})
        for reason in rng.sample(["short", "dup", "spam", "lang"], rng.randint(0, 4)):
            node[reason] = {"docs": rng.randint(0, 50), "chars": rng.randint(0, 10**6),
                            "by_lang": {lang: rng.randint(1, 9) for lang in rng.sample(["en", "zh", "de"], 2)}}
        if rng.random() < 0.8:
            node["examples"] = {reason: [f"u{unit}-d{i}" for i in range(rng.choice([0, 1, 2, 3, 7]))]
                                for reason in rng.sample(["short", "dup", "spam"], rng.randint(1, 3))}
        if rng.random() < 0.3:
            node["empty"] = {}
    return stats


def test_tally_in_any_order_is_the_merge_in_unit_order():
    for seed in range(200):
        rng = random.Random(seed)
        receipts = [random_stats(rng, unit) for unit in range(rng.randint(1, 40))]
        in_order = Stats()
        for stats in receipts:
            in_order.merge(stats)
        arrival = list(enumerate(receipts))
        rng.shuffle(arrival)
        tally = Tally()
        for position, stats in arrival:
            tally.add((position,), stats)
        assert json.dumps(tally.result(), sort_keys=True) == json.dumps(in_order, sort_keys=True), seed


def test_tally_keeps_only_the_entries_that_fill_each_list():
    tally = Tally()
    for position in reversed(range(1000)):  # the worst arrival order: the first unit last
        tally.add((position,), {"examples": {"dup": [f"d{position}-{i}" for i in range(2)]}})
    assert all(len(entries) <= EXAMPLES_PER_KEY for entries in tally._lists.values())
    assert tally.result()["examples"]["dup"] == ["d0-0", "d0-1", "d1-0", "d1-1", "d2-0"]


def test_fused_keys_order_units_as_the_next_stage_lists_them():
    """In a fused group a later stage's units are the kept files of the stage before, listed unit by
    unit and file by file (``planning.kept_units``); their keys, made as receipts arrive in any
    order, sort the same way, even where a later file's name sorts before an earlier one's."""
    rng = random.Random(7)
    first = [f"in-{i:03d}" for i in range(12)]
    keys = Keys(["langid", "rules", "quality"], first)
    written: dict[str, list[dict]] = {}
    for unit in first:
        written[unit] = [{"path": f"kept/{rng.choice('zyx')}{unit}-{j}.parquet"} for j in range(rng.randint(0, 3))]
    arrival = list(first)
    rng.shuffle(arrival)
    for unit in arrival:
        keys.key_of("langid", {"unit": unit, "kept_files": written[unit]})
    listed = [kept_unit_name(kept) for unit in first for kept in written[unit]]
    assert sorted(listed, key=lambda name: keys.keys["rules"][name]) == listed
    for name in reversed(listed):
        keys.key_of("rules", {"unit": name, "kept_files": [{"path": f"kept/{name}-a.parquet"}, {"path": f"kept/{name}-b.parquet"}]})
    third = [f"{name}-{side}" for name in listed for side in "ab"]
    assert sorted(third, key=lambda name: keys.keys["quality"][name]) == third


def test_examples_of_a_batch_are_what_one_example_per_row_keeps():
    """``Stats.examples`` (a batch's keys at once, only the kept rows' items converted) records what
    ``Stats.example`` called for every row with a key records, and asks only for those rows."""
    rng = random.Random(3)
    for _ in range(200):
        keys = [rng.choice([None, "short", "dup", "spam", 7]) for _ in range(rng.randint(0, 60))]
        one_by_one = Stats()
        for row, key in enumerate(keys):
            if key is not None:
                one_by_one.example("examples", key, f"doc{row}")
        asked: list[int] = []
        batch = Stats()
        batch.examples("examples", keys, lambda rows: asked.extend(rows) or [f"doc{row}" for row in rows])
        assert json.dumps(batch, sort_keys=True) == json.dumps(one_by_one, sort_keys=True)
        assert len(asked) == sum(min(keys.count(key), EXAMPLES_PER_KEY) for key in set(keys) - {None})
