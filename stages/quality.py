"""Quality filtering: score every document by how much it reads like curated text; drop low scores.

Contract: adds ``quality_score`` (float32, a probability that a person would call the document high
quality) and one column per signal behind it, and removes rows whose score is below the threshold
for their category and language (reason ``low_quality``) or, where ``perplexity_cutoffs`` is set,
whose perplexity is above that percentile of the training web text (reason ``high_perplexity``).

=====================  =========================================================================
column                 what it is (``stages/quality_model.py``, ``quality_lm.py``, ``quality_signals.py``)
=====================  =========================================================================
quality_classifier     P(curated) from the fastText classifier trained on gold vs the run's web text
quality_perplexity     per-token perplexity under the gold n-gram language model of the language
                       (null where the language has none; likewise stopwords without a stop list)
quality_words          log(1 + words); quality_stopwords: share of function words
quality_punct_lines    share of lines ending in terminal punctuation
quality_line_length    log(1 + mean line length); quality_repetition: share of repeated-line text
=====================  =========================================================================

``quality_score = sigmoid(bias + sum(weights[s] * z[s]))`` where ``z[s]`` is the signal in spreads
from its usual value in the document's language (calibrated at training, clipped to +-4). The
default weights were fitted on 249 human-labelled web pages (``bench/bench_quality.py human``
reports them cross-validated); a document with fewer than three words the language model knows
scores 0 (nothing to call good).

Thresholds are looked up most specific first, by keys ``<category>/<lang>``, ``<category>``,
``*/<lang>``, ``*``; ``null`` or no matching key keeps the documents unfiltered. Default: 0.3 for web
and others in English and Chinese (it keeps 94% of the pages people rated high and 45% of those they
rated low: README "Quality" has the table for other values); encyclopedia, books, papers and code pass, because they are what
gold is made of (filtering them only loses documents to model error) and code is not prose.

``ensure_assets`` trains the model in the driver when it is missing or was trained with other text
settings (``python -m pipeline
train-quality CONFIG`` does the same, and then uses the run's own web documents when the stage
before quality has finished); the model files' sha256 is part of the stage's config hash, so a
retrained model reruns this stage and the ones after it.

Stats: ``score_histogram.<category>.<lang>.<bucket>`` (buckets of 0.05, labelled by lower edge),
``near_threshold.{dropped,kept}.<category>/<lang>`` (a few ``{id, score}`` within
``example_margin`` of the threshold), ``unfiltered.<category>.<lang>`` (documents no threshold
applied to).
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from pipeline.stage import CATEGORIES, Stage, StageConfig, StageOutput, split
from pipeline.stats import Stats, histogram
from stages.quality_model import (
    FEATURES, MIN_KNOWN_WORDS, QualityModel, TextConfig, model_exists, model_fingerprint, no_model, read_report,
)
from stages.quality_train import TrainingConfig, train_quality_model

REASON = "low_quality"
PERPLEXITY_REASON = "high_perplexity"
UNKNOWN_LANG = "und"
HISTOGRAM_EDGES = [i / 20 for i in range(20)]
SIGNAL_COLUMNS = {name: f"quality_{name}" for name in FEATURES}


def _default_thresholds() -> dict[str, float | None]:
    return {"*/en": 0.3, "*/zh": 0.3, "encyclopedia": None, "books": None, "papers": None, "code": None}


def _default_weights() -> dict[str, float]:
    return dict(DEFAULT_WEIGHTS)


# Fitted on quality-dev/human (249 English web pages with human labels, L2 penalty 1.0) by
# `python bench/bench_quality.py human --fit`, which also reports them 5-fold cross-validated. Given the
# classifier, the length and the stop words, a lower perplexity under the gold model counts slightly
# *against* a page (negative weight): on these pages it marks encyclopedic lists and stubs.
DEFAULT_WEIGHTS = {
    "bias": 1.451, "classifier": 1.122, "perplexity": -0.563, "words": 1.246, "stopwords": 1.497,
    "punct_lines": 0.684, "line_length": 0.889, "repetition": -0.607,
}


class QualityConfig(StageConfig):
    """The ``stages.quality`` section: the model, how signals combine, thresholds, training."""

    model_path: str = Field(
        "models/quality.bin", description="fastText classifier; the language model and report sit beside "
        "it; trained before the run (or by `train-quality`) when missing"
    )
    thresholds: dict[str, float | None] = Field(
        default_factory=_default_thresholds,
        description="minimum quality_score to keep, by '<category>/<lang>', '<category>', "
        "'*/<lang>' or '*' (most specific wins); null or no matching key: not filtered",
    )
    weights: dict[str, float] = Field(
        default_factory=_default_weights,
        description="logistic weights of the standardised signals (classifier, perplexity, words, "
        "stopwords, punct_lines, line_length, repetition) and 'bias'; keys not given keep their "
        "defaults (fitted on human labels), 0 ignores a signal",
    )
    perplexity_cutoffs: dict[str, float] = Field(
        default_factory=dict,
        description="per language, drop documents whose perplexity is above this percentile (0-100) of "
        "the training web text's (CCNet's head/middle/tail split); default: none, perplexity is a signal only",
    )
    example_margin: float = Field(
        0.05, ge=0, description="documents this close to their threshold are recorded as examples"
    )
    text: TextConfig = TextConfig()
    train: TrainingConfig = TrainingConfig()

    @field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, thresholds: dict[str, float | None]) -> dict[str, float | None]:
        for key, value in thresholds.items():
            category = key.split("/", 1)[0]
            if category != "*" and category not in CATEGORIES:
                raise ValueError(f"{key!r}: category must be '*' or one of {', '.join(CATEGORIES)}")
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{key!r}: threshold must be between 0 and 1, got {value}")
        return thresholds

    @field_validator("weights")
    @classmethod
    def _check_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(weights) - {"bias", *FEATURES})
        if unknown:
            raise ValueError(f"unknown signal {unknown[0]!r}; signals are bias, {', '.join(FEATURES)}")
        return {**DEFAULT_WEIGHTS, **weights}

    @field_validator("perplexity_cutoffs")
    @classmethod
    def _check_cutoffs(cls, cutoffs: dict[str, float]) -> dict[str, float]:
        for lang, value in cutoffs.items():
            if not 0.0 < value <= 100.0:
                raise ValueError(f"{lang!r}: percentile must be in (0, 100], got {value}")
        return cutoffs

    def threshold(self, category: str, lang: str) -> float | None:
        """The threshold for one category and language, or None when they are not filtered."""
        for key in (f"{category}/{lang}", category, f"*/{lang}", "*"):
            if key in self.thresholds:
                return self.thresholds[key]
        return None


class Quality(Stage):
    """Scores documents with the quality model and drops those under their threshold."""

    name = "quality"
    Config = QualityConfig
    whole_shard = False  # each document is judged alone: the worker streams the shard in batches

    def __init__(self, config: QualityConfig):
        super().__init__(config)
        self._model: QualityModel | None = None
        self._thresholds: dict[tuple[str, str], float | None] = {}
        self._cutoffs: dict[str, float] | None = None

    @classmethod
    def ensure_assets(cls, config: QualityConfig, log) -> None:
        """Train the model when it does not exist yet, or when it was trained with other text
        settings (it could not score this config's text); warn when only its training differs."""
        why = _why_train(config)
        if why:
            log(why)
            train_quality_model(config, log=log)
            return
        report = read_report(config.model_path) or {}
        if report.get("train") != config.train.model_dump(mode="json"):
            log(f"quality: {config.model_path} was trained with another `train` section; "
                "using it as is (`python -m pipeline train-quality CONFIG --force` retrains it)")

    @classmethod
    def assets_missing(cls, config: QualityConfig) -> bool:
        return _why_train(config) is not None

    @classmethod
    def fingerprint(cls, config: QualityConfig) -> str:
        return model_fingerprint(config.model_path)

    @property
    def model(self) -> QualityModel:
        """The model, loaded on first use (once per worker process)."""
        if self._model is None:
            report = read_report(self.config.model_path) or {}
            if report.get("text") != self.config.text.model_dump(mode="json"):
                raise ValueError(
                    f"quality: {self.config.model_path} was trained with text settings {report.get('text')}, "
                    f"the config says {self.config.text.model_dump(mode='json')}; retrain or fix the config"
                )
            self._model = QualityModel(self.config.model_path, self.config.text, report.get("calibration"))
            self._cutoffs = {
                lang: float(np.interp(pct, np.arange(101), report.get("perplexity_percentiles", {}).get(lang, [np.inf] * 101)))
                for lang, pct in self.config.perplexity_cutoffs.items()
            }
        return self._model

    def score(self, texts, langs: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(quality_score, raw signals) for each text: the stage's scoring without thresholds."""
        signals = self.model.signals(texts, langs)
        z = self.model.standardise(signals, langs)
        weights = self.config.weights
        logit = np.full(len(langs), weights.get("bias", 0.0))
        for name in FEATURES:
            logit += weights.get(name, 0.0) * z[name]
        score = 1.0 / (1.0 + np.exp(-logit))
        score[signals["known_words"] < MIN_KNOWN_WORDS] = 0.0
        return score, signals

    def process(self, batch: pa.Table) -> StageOutput:
        """Score every row; drop those under their threshold as ``low_quality``."""
        categories = batch.column("category").to_pylist()
        langs = (
            [lang or UNKNOWN_LANG for lang in batch.column("lang").to_pylist()]
            if "lang" in batch.column_names
            else [UNKNOWN_LANG] * batch.num_rows
        )
        if batch.num_rows:
            scores, signals = self.score(batch.column("text"), langs)
        else:
            scores, signals = np.zeros(0), {name: np.zeros(0) for name in FEATURES}

        # Decided per (category, language) group, numbered in order of first appearance: a corpus
        # has few, and a Python step per document would cost more than the rest of this method.
        group_of: dict[tuple[str, str], int] = {}
        group = np.fromiter((group_of.setdefault(key, len(group_of)) for key in zip(categories, langs)),
                            dtype=np.int64, count=len(langs))
        groups = list(group_of)
        cutoffs = self._cutoffs or {}
        limits = [self._threshold(*key) for key in groups]
        group_threshold = np.array([np.nan if limit is None else limit for limit in limits])
        group_cutoff = np.array([cutoffs.get(lang, np.nan) for _, lang in groups])
        threshold, cutoff = group_threshold[group], group_cutoff[group]
        filtered = ~np.isnan(threshold)
        dropped = scores < threshold  # False where unfiltered (NaN)
        too_perplex = filtered & ~dropped & (signals["perplexity"] > cutoff)
        reasons = np.full(len(langs), None, dtype=object)
        reasons[dropped] = REASON
        reasons[too_perplex] = PERPLEXITY_REASON

        stats = Stats()
        sizes = np.bincount(group, minlength=len(groups))
        for key, size, limit in zip(groups, sizes, limits):
            if limit is None:
                stats.add("unfiltered", *key, int(size))
        near = np.flatnonzero(filtered & (np.abs(scores - threshold) <= self.config.example_margin))
        for i, doc_id in zip(near, batch.column("id").take(near).to_pylist()):
            side = "dropped" if dropped[i] else "kept"
            stats.example("near_threshold", side, f"{categories[i]}/{langs[i]}",
                          {"id": doc_id, "score": round(float(scores[i]), 4)})
        rows_by_group = np.split(np.argsort(group, kind="stable"), np.cumsum(sizes)[:-1])
        for key, rows in zip(groups, rows_by_group):
            for bucket, count in histogram(scores[rows], HISTOGRAM_EDGES).items():
                stats.add("score_histogram", *key, bucket, count)
        columns = {"quality_score": pa.array(scores, type=pa.float32())}
        for name, column in SIGNAL_COLUMNS.items():
            # No signal (no language model or stop list for the language) is null, not NaN.
            values = signals[name]
            columns[column] = pa.array(values, type=pa.float32(), mask=np.isnan(values))
        return split(batch, reasons.tolist(), stats, **columns)

    def _threshold(self, category: str, lang: str) -> float | None:
        """``config.threshold``, memoised: a corpus has few (category, language) pairs."""
        key = (category, lang)
        if key not in self._thresholds:
            self._thresholds[key] = self.config.threshold(category, lang)
        return self._thresholds[key]


def _why_train(config: QualityConfig) -> str | None:
    """Why ``ensure_assets`` trains the model (what it logs), or None when the model can be used."""
    if not model_exists(config.model_path):
        return f"quality: {no_model(config.model_path)}; training one"
    report = read_report(config.model_path) or {}
    if report.get("text") != config.text.model_dump(mode="json"):
        return (f"quality: {config.model_path} was trained with text settings {report.get('text')}, the config "
                f"says {config.text.model_dump(mode='json')}; retraining it")
    return None
