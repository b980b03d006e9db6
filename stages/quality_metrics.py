"""Ranking and classification metrics of the quality model, and the small logistic regression that
weighs its signals.

Gold (or "high quality") is the positive class throughout. Used by the trainer's report, by
``bench/bench_quality.py`` and by the tests; numpy only.
"""
from __future__ import annotations

import numpy as np

# Decision thresholds at which the report tabulates precision and recall, to choose the stage's.
REPORT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def binary_metrics(gold: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict:
    """Precision, recall and F1 of ``score >= threshold`` as gold, ROC AUC, and a threshold table."""
    metrics = {"n": int(len(gold)), "n_gold": int(gold.sum()), **_prf(gold, scores >= threshold)}
    auc = roc_auc(gold, scores)
    metrics["roc_auc"] = None if auc is None else round(auc, 4)
    metrics["at_threshold"] = {
        f"{t:.1f}": _prf(gold, scores >= t) for t in REPORT_THRESHOLDS
    }
    return metrics


def _prf(gold: np.ndarray, predicted: np.ndarray) -> dict:
    true_positive = int((gold & predicted).sum())
    precision = true_positive / max(int(predicted.sum()), 1)
    recall = true_positive / max(int(gold.sum()), 1)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def roc_auc(gold: np.ndarray, scores: np.ndarray) -> float | None:
    """Mann-Whitney U form of the ROC AUC, with ties counted half. None without both classes."""
    n_pos, n_neg = int(gold.sum()), int((~gold).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over runs of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [len(scores)]))
    for start, end in zip(starts, ends):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[gold].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))




def fit_logistic(features: np.ndarray, labels: np.ndarray, l2: float = 1.0, iterations: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method: weights, then the bias (unpenalised).

    A handful of weights fitted on a few hundred labelled documents: Newton converges in a few
    steps and needs no learning rate; the penalty keeps correlated signals from trading huge
    opposite weights.
    """
    x = np.hstack([features, np.ones((len(features), 1))])
    weights = np.zeros(x.shape[1])
    penalty = l2 * np.diag(np.r_[np.ones(x.shape[1] - 1), 0.0])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-x @ weights))
        gradient = x.T @ (p - labels) + penalty @ weights
        hessian = (x * (p * (1 - p))[:, None]).T @ x + penalty
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-10:
            break
    return weights


def cross_validated_scores(features: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0,
                           l2: float = 1.0) -> np.ndarray:
    """Out-of-fold logits of ``fit_logistic``: every document scored by a model that never saw it."""
    order = np.random.default_rng(seed).permutation(len(labels))
    scores = np.zeros(len(labels))
    for held in np.array_split(order, folds):
        train = np.setdiff1d(order, held)
        weights = fit_logistic(features[train], labels[train].astype(float), l2)
        scores[held] = features[held] @ weights[:-1] + weights[-1]
    return scores
