"""The Article Extraction Benchmark's accuracy measure, as its evaluate.py defines it.

Per page: the texts are split into ``\\w+`` tokens, then into 4-token shingles (a text of fewer than
4 tokens is one shingle of them all); true positives are the shingles both sides have (with
multiplicity), false positives those only the prediction has, false negatives those only the
ground truth has; the three are divided by their sum, so every page weighs the same. Over pages:
precision is the mean of the per-page precisions (pages with tp + fp > 0), recall the mean of the
per-page recalls (pages with tp + fn > 0), F1 their harmonic mean. A page where both sides are
empty has precision and recall 1. ``accuracy`` is the share of pages whose token lists are equal.
"""
from __future__ import annotations

import re
import statistics
from collections import Counter

_TOKEN = re.compile(r"\w+")


def tokens(text: str | None) -> list[str]:
    return _TOKEN.findall(text or "")


def shingles(text: str | None, n: int = 4) -> Counter:
    words = tokens(text)
    return Counter(tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1)) if words[i:i + n])


def page_tp_fp_fn(truth: str | None, prediction: str | None) -> tuple[float, float, float]:
    a, b = shingles(truth), shingles(prediction)
    tp = sum((a & b).values())
    fp = sum((b - a).values())
    fn = sum((a - b).values())
    total = tp + fp + fn
    return (tp / total, fp / total, fn / total) if total else (0.0, 0.0, 0.0)


def _precision(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fp == 0 else tp / (tp + fp)


def _recall(tp: float, fp: float, fn: float) -> float:
    if fp == fn == 0:
        return 1.0
    return 0.0 if tp == fn == 0 else tp / (tp + fn)


def aeb_scores(truth: dict[str, str], predictions: dict[str, str | None]) -> tuple[float, float, float]:
    """(F1, precision, recall) over the pages of ``truth`` (id -> article body)."""
    triples = [page_tp_fp_fn(truth[k], predictions.get(k)) for k in truth]
    precision = statistics.mean(_precision(*t) for t in triples if t[0] + t[1] > 0)
    recall = statistics.mean(_recall(*t) for t in triples if t[0] + t[2] > 0)
    return 2 * precision * recall / (precision + recall), precision, recall


def aeb_accuracy(truth: dict[str, str], predictions: dict[str, str | None]) -> float:
    return statistics.mean(float(tokens(truth[k]) == tokens(predictions.get(k))) for k in truth)
