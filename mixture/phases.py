"""Step 2, in the driver: decide which documents each phase takes, from histograms alone.

Every document hashes to a sampling bin (``mixture.hashing``); ``sum_histograms`` gives, per
``category/lang`` group, the packed tokens in each bin. A group is read as a tape of bins that repeats
once per epoch, and each group keeps a cursor on it. A phase wanting T tokens of a group takes the bins
from the cursor up to the bin boundary whose cumulative tokens come nearest to T, and moves the cursor
there. So:

- phases are disjoint: a later phase starts where the earlier one stopped, and reaches bins already
  taken only by passing the end of the tape, i.e. in a further epoch, which ``max_epochs`` allows;
- realised token counts are exact (sums of whole bins), known here before any document is read;
- when a group's tape (times ``max_epochs``) is used up, the phase takes what is left, and the plan
  says so: ``ran_out`` and ``shortfall_tokens`` per category, and a warning line.

A phase's category target is ``budget * weight``. A category the phase splits by language (its
``languages`` shares) is drawn per language; any other is drawn from one tape summing its languages, so
its language mix follows the corpus's and it misses its target by at most one bin, not one per language.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from mixture.config import MixtureConfig, PhaseConfig


class Tape:
    """One group's histogram read as an endless tape: position k is bin ``k % bins`` of epoch ``k // bins``."""

    def __init__(self, histogram: np.ndarray):
        self.bins = len(histogram)
        self.cumulative = np.concatenate([[0], np.cumsum(histogram, dtype=np.int64)])
        self.total = int(self.cumulative[-1])

    def tokens_before(self, position: int) -> int:
        """Packed tokens in every bin before ``position``, over all epochs."""
        epoch, offset = divmod(position, self.bins)
        return epoch * self.total + int(self.cumulative[offset])

    def advance(self, start: int, target: float, limit: int) -> int:
        """The bin boundary in [start, limit] whose token count from ``start`` is nearest to ``target``
        (ties go to the nearer boundary, the one taking less)."""
        goal = self.tokens_before(start) + target
        if self.total == 0 or target <= 0:
            return start
        if goal >= self.tokens_before(limit):
            return limit
        epoch, rest = divmod(goal, self.total)
        epoch = int(epoch)
        above = int(np.searchsorted(self.cumulative, rest, side="left"))
        best = epoch * self.bins + above
        if above > 0:
            below_value = self.cumulative[above - 1]
            if rest - below_value <= self.cumulative[above] - rest:
                # The first boundary with that count: trailing empty bins are left for later.
                best = epoch * self.bins + int(np.searchsorted(self.cumulative, below_value, side="left"))
        return min(max(best, start), limit)

    def segments(self, start: int, end: int) -> list[list[int]]:
        """[epoch, first bin, end bin) runs covering tape positions [start, end)."""
        runs = []
        for epoch in range(start // self.bins, -(-end // self.bins)):
            low = max(start, epoch * self.bins) - epoch * self.bins
            high = min(end, (epoch + 1) * self.bins) - epoch * self.bins
            if high > low:
                runs.append([epoch, low, high])
        return runs


def plan_phases(config: MixtureConfig, histograms: dict[str, np.ndarray],
                warn: Callable[[str], None] = print) -> list[dict]:
    """The phases of ``config`` drawn from ``histograms`` (``category/lang`` -> packed tokens per bin).

    Returns, per phase, JSON-able: the budget; per draw (a category, or one language of it: ``lang``
    null means all its languages) the bin ``segments`` to take with target and realised tokens; per
    category target vs realised tokens and weights, epochs and shortfalls. ``warn`` receives one line
    per category that ran out.
    """
    tapes = Tapes(histograms)
    consumed = {category: 0 for category in tapes.category_totals}
    plans = []
    for phase in config.phases:
        draws = tapes.draws(phase)
        limits = {category: math.floor(config.epochs_allowed(category) * tapes.bins)
                  for category, _ in draws}
        available = {(category, lang): tapes.available(category, lang, limits[category])
                     for category, lang in draws}
        budget = phase.tokens if phase.tokens is not None else largest_budget(draws, available)
        groups = []
        for (category, lang), share in draws.items():
            target = budget * share
            tape, start = tapes.tape(category, lang), tapes.cursor(category, lang)
            end = tape.advance(start, target, limits[category]) if tape else start
            groups.append({"category": category, "lang": lang, "target_tokens": round(target),
                           "tokens": tape.tokens_before(end) - tape.tokens_before(start) if tape else 0,
                           "available_tokens": available[(category, lang)],
                           "segments": tape.segments(start, end) if tape else []})
            tapes.move(category, lang, end)
        categories = summarise(phase, budget, groups, tapes.category_totals, consumed, config)
        for category, row in categories.items():
            if row["ran_out"]:
                wanted = (f"{row['target_tokens']:,} tokens wanted, {row['tokens']:,} left" if row["shortfall_tokens"]
                          else "nothing left")
                warn(f"mixture: phase {phase.name}: {category} ran out: {wanted} (max_epochs "
                     f"{config.epochs_allowed(category):g}); its weight is {row['weight']:.2%} against a target "
                     f"of {row['target_weight']:.2%}")
        if not any(group["tokens"] for group in groups):
            warn(f"mixture: phase {phase.name} is empty: none of its categories has anything left")
        plans.append({"name": phase.name, "budget": round(budget),
                      "budget_from": "config" if phase.tokens is not None else "largest the weights allow",
                      "tokens": sum(g["tokens"] for g in groups), "categories": categories, "groups": groups})
    return plans


class Tapes:
    """Every ``category/lang`` tape and its cursor. A category is drawn as one tape (its languages
    together, so their mix stays the corpus's) while its languages' cursors agree, which they do
    unless an earlier phase split that category by language."""

    def __init__(self, histograms: dict[str, np.ndarray]):
        self.histograms = {tuple(group.split("/", 1)): histogram for group, histogram in sorted(histograms.items())}
        self.bins = len(next(iter(histograms.values()))) if histograms else 1
        self.cursors = {key: 0 for key in self.histograms}
        self.category_totals: dict[str, int] = {}
        for (category, _), histogram in self.histograms.items():
            self.category_totals[category] = self.category_totals.get(category, 0) + int(histogram.sum())

    def languages(self, category: str) -> list[str]:
        """The languages ``category`` has in the corpus."""
        return [lang for group_category, lang in self.histograms if group_category == category]

    def tape(self, category: str, lang: str | None) -> Tape | None:
        """The tape of one language of ``category``, or of all of them (``lang`` None); None if empty."""
        if lang is not None:
            histogram = self.histograms.get((category, lang))
        else:
            members = [self.histograms[(category, member)] for member in self.languages(category)]
            histogram = np.sum(members, axis=0) if members else None
        return Tape(histogram) if histogram is not None and histogram.sum() > 0 else None

    def cursor(self, category: str, lang: str | None) -> int:
        """Where the next draw of this language (or of the whole category) starts."""
        members = [lang] if lang is not None else self.languages(category)
        return self.cursors.get((category, members[0]), 0) if members else 0

    def move(self, category: str, lang: str | None, position: int) -> None:
        """Record a draw that ended at ``position``."""
        for member in [lang] if lang is not None else self.languages(category):
            if (category, member) in self.cursors:
                self.cursors[(category, member)] = position

    def available(self, category: str, lang: str | None, limit: int) -> int:
        """Packed tokens left to draw before the epoch limit."""
        tape = self.tape(category, lang)
        return tape.tokens_before(limit) - tape.tokens_before(self.cursor(category, lang)) if tape else 0

    def draws(self, phase: PhaseConfig) -> dict[tuple[str, str | None], float]:
        """Share of the phase budget per (category, lang or None for all its languages), summing to 1."""
        shares = {}
        for category, weight in phase.category_shares().items():
            split = phase.languages.get(category)
            members = self.languages(category)
            if split:
                total = sum(split.values())
                shares.update({(category, lang): weight * value / total
                               for lang, value in sorted(split.items()) if value > 0})
            elif len({self.cursors[(category, lang)] for lang in members}) <= 1:
                shares[(category, None)] = weight
            else:  # an earlier phase split it by language: each language in the corpus's proportion
                total = self.category_totals[category]
                shares.update({(category, lang): weight * self.histograms[(category, lang)].sum() / total
                               for lang in members})
        return shares


def largest_budget(draws: dict[tuple[str, str | None], float], available: dict) -> float:
    """The largest budget no draw runs out at. Draws with nothing left at all are left out of the
    bound (and reported as ran out): otherwise one missing category would empty the phase."""
    bounds = [available[key] / share for key, share in draws.items() if available[key] > 0]
    return min(bounds) if bounds else 0.0


def summarise(phase: PhaseConfig, budget: float, groups: list[dict], category_totals: dict[str, int],
              consumed: dict[str, int], config: MixtureConfig) -> dict[str, dict]:
    """Per category: target and realised tokens and weights, epochs, and whether it ran out.

    ``epochs`` is this phase's tokens over the category's tokens in the corpus; ``cumulative_epochs``
    counts every phase so far. ``consumed`` is updated in place.
    """
    realised_total = sum(group["tokens"] for group in groups)
    rows = {}
    for category, weight in phase.category_shares().items():
        members = [group for group in groups if group["category"] == category]
        target = budget * weight
        tokens = sum(group["tokens"] for group in members)
        corpus = category_totals.get(category, 0)
        consumed[category] = consumed.get(category, 0) + tokens
        # A draw runs out when it had less left than it was asked for (whole tokens), or nothing at all.
        short = sum(max(0, group["target_tokens"] - group["available_tokens"]) for group in members)
        empty = all(group["available_tokens"] == 0 for group in members)
        rows[category] = {
            "target_weight": weight,
            "weight": tokens / realised_total if realised_total else 0.0,
            "target_tokens": round(target),
            "tokens": tokens,
            "epochs": tokens / corpus if corpus else 0.0,
            "cumulative_epochs": consumed[category] / corpus if corpus else 0.0,
            "max_epochs": config.epochs_allowed(category),
            "reuses_documents": any(seg[0] > 0 for group in members for seg in group["segments"]),
            "ran_out": short > 0 or empty,
            "shortfall_tokens": short,
        }
    return rows
