"""Step 2, in the driver: decide which documents each phase takes, from histograms alone.

Every piece of a document hashes to a sampling bin (``mixture.hashing``: a document's pieces lie in
consecutive bins); ``sum_histograms`` gives, per ``category/lang`` group, the packed tokens in each bin.
A group is read as a tape of bins that repeats once per epoch, and each group keeps a cursor on it. A
phase wanting T tokens of a group takes the bins from the cursor up to the bin boundary whose
cumulative tokens come nearest to T, and moves the cursor there. So:

- phases are disjoint: a later phase starts where the earlier one stopped, and reaches bins already
  taken only by passing the end of the tape, i.e. in a further epoch, which ``max_epochs`` allows;
- a phase takes a range of consecutive bins per epoch, so it takes every document whose bins lie in
  that range whole (the packer joins its pieces back together), and takes part of a document only
  where the range begins or ends inside the document's bins. No document of at most ``sampling_bins``
  pieces crosses the end of the tape, so the tape's start and epoch boundaries cut none. Per draw,
  ``cut_documents`` counts the documents its range's ends cut (a document cut at both ends counts
  twice): an upper bound on those it takes in part, on a large corpus about (tokens of split
  documents) / (``max_piece_tokens`` x ``sampling_bins``) per range end, up to twice that;
- realised token counts are exact, known here before any document is read: sums of whole bins, plus
  one separator for each run of pieces a range end cuts short (``Tape.separators``);
- when a group's tape (times ``max_epochs``) is used up, the phase takes what is left, and the plan
  says so: ``ran_out`` and ``shortfall_tokens`` per category, and a warning line;
- a category whose realised weight ends up further than ``weight_tolerance`` from its target for any
  other reason (bins too coarse for the phase: a small budget, or ``max_piece_tokens`` set high) is
  reported too: ``off_target`` per category, and a warning line. Long documents are split into
  pieces (``mixture.count``) so that no bin is large, which keeps weights within the tolerance on any
  corpus whose phase budgets are large next to ``max_piece_tokens``.

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
    """One group's histogram read as an endless tape: position k is bin ``k % bins`` of epoch ``k // bins``.

    ``crossings[j]``: pieces in bin j - 1 (mod bins) whose document goes on in bin j. A draw whose
    range ends before bin j ends those documents' runs early, each with a separator the histogram
    does not hold (it counts one per document, on its last piece); ``separators`` counts them."""

    def __init__(self, histogram: np.ndarray, crossings: np.ndarray | None = None):
        self.bins = len(histogram)
        self.cumulative = np.concatenate([[0], np.cumsum(histogram, dtype=np.int64)])
        self.total = int(self.cumulative[-1])
        self.crossings = np.zeros(self.bins, np.int64) if crossings is None else np.asarray(crossings, np.int64)

    def taken(self, start: int, end: int) -> int:
        """Packed tokens the positions [start, end) give: their bins, plus a separator for each
        document they cut short at the end of a segment."""
        return self.tokens_before(end) - self.tokens_before(start) + self.separators(start, end)

    def separators(self, start: int, end: int) -> int:
        """Runs of pieces the positions [start, end) end before their document's last piece: per
        segment [lo, hi) of an epoch, the documents crossing from bin hi - 1 into bin hi (mod bins),
        unless the segment is the whole epoch."""
        return sum(int(self.crossings[high % self.bins]) for _, low, high in self.segments(start, end)
                   if not (low == 0 and high == self.bins))

    def cut(self, start: int, end: int) -> int:
        """Documents the positions [start, end) cut, counted once per segment end that cuts them
        (at most that many are taken in part)."""
        return self.separators(start, end) + sum(
            int(self.crossings[low]) for _, low, high in self.segments(start, end)
            if not (low == 0 and high == self.bins))

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
                warn: Callable[[str], None] = print, crossings: dict[str, np.ndarray] | None = None) -> list[dict]:
    """The phases of ``config`` drawn from ``histograms`` (``category/lang`` -> packed tokens per bin)
    and ``crossings`` (``category/lang`` -> documents going on from the bin before into each bin;
    none when omitted: every document is one piece).

    Returns, per phase, JSON-able: the budget; per draw (a category, or one language of it: ``lang``
    null means all its languages) the bin ``segments`` to take with target and realised tokens; per
    category target vs realised tokens and weights, epochs and shortfalls. ``warn`` receives one line
    per category that ran out.
    """
    tapes = Tapes(histograms, crossings or {})
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
                           "tokens": tape.taken(start, end) if tape else 0,
                           "available_tokens": available[(category, lang)],
                           "cut_documents": tape.cut(start, end) if tape else 0,
                           "segments": tape.segments(start, end) if tape else []})
            tapes.move(category, lang, end)
        categories = summarise(phase, budget, groups, tapes.category_totals, consumed, config)
        explain_off_target(categories)
        for category, row in categories.items():
            if row["ran_out"]:
                wanted = (f"{row['target_tokens']:,} tokens wanted, {row['tokens']:,} left" if row["shortfall_tokens"]
                          else "nothing left")
                warn(f"mixture: phase {phase.name}: {category} ran out: {wanted} (max_epochs "
                     f"{config.epochs_allowed(category):g}); its weight is {row['weight']:.2%} against a target "
                     f"of {row['target_weight']:.2%}")
            elif row["off_target"] and not any(other["ran_out"] for other in categories.values()):
                # Off because another category ran out: that one's warning says so; the note names it.
                warn(f"mixture: phase {phase.name}: {category}'s weight is {row['weight']:.2%} against a target "
                     f"of {row['target_weight']:.2%} ({row['tokens']:,} tokens for a target of "
                     f"{row['target_tokens']:,}), more than {config.weight_tolerance:.2%} off: "
                     f"{row['off_target_because']}")
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

    def __init__(self, histograms: dict[str, np.ndarray], crossings: dict[str, np.ndarray]):
        self.histograms = {tuple(group.split("/", 1)): histogram for group, histogram in sorted(histograms.items())}
        self.bins = len(next(iter(histograms.values()))) if histograms else 1
        self.crossings = {tuple(group.split("/", 1)): crossings.get(group, np.zeros(self.bins, np.int64))
                          for group in histograms}
        self.cursors = {key: 0 for key in self.histograms}
        self.category_totals: dict[str, int] = {}
        for (category, _), histogram in self.histograms.items():
            self.category_totals[category] = self.category_totals.get(category, 0) + int(histogram.sum())

    def languages(self, category: str) -> list[str]:
        """The languages ``category`` has in the corpus."""
        return [lang for group_category, lang in self.histograms if group_category == category]

    def tape(self, category: str, lang: str | None) -> Tape | None:
        """The tape of one language of ``category``, or of all of them (``lang`` None); None if empty."""
        keys = [(category, lang)] if lang is not None else [(category, member) for member in self.languages(category)]
        keys = [key for key in keys if key in self.histograms]
        if not keys:
            return None
        histogram = np.sum([self.histograms[key] for key in keys], axis=0)
        crossings = np.sum([self.crossings[key] for key in keys], axis=0)
        return Tape(histogram, crossings) if histogram.sum() > 0 else None

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


def explain_off_target(categories: dict[str, dict]) -> None:
    """Say why each category that did not run out is off its target weight (``off_target_because``):
    another category ran out (the phase is smaller, so the rest weigh more), or its bins are too coarse."""
    short = [category for category, row in categories.items() if row["ran_out"]]
    for category, row in categories.items():
        if not row["off_target"] or row["ran_out"]:
            row["off_target_because"] = None
        elif short:
            row["off_target_because"] = f"{', '.join(short)} ran out, so the rest of the phase weighs more"
        else:
            row["off_target_because"] = ("its sampling bins are too coarse for this budget (lower "
                                         "max_piece_tokens, raise sampling_bins or the budget)")


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
        weight_off = abs(rows[category]["weight"] - weight) > config.weight_tolerance
        rows[category]["off_target"] = bool(realised_total and weight_off)
    return rows
