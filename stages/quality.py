"""Quality filtering: score every document with the gold-vs-junk fastText model, drop low scores.

Adds ``quality_score`` (float32, P(high quality) from ``stages.quality_model``) to every row, and
removes rows whose score is below the threshold for their category and language with reason
``low_quality``. Thresholds are looked up most specific first, by keys ``<category>/<lang>``,
``<category>``, ``*/<lang>``, ``*``; a value of ``null`` keeps the documents unfiltered, and so does
no matching key.

Default: ``*/en`` and ``*/zh`` at 0.3, and encyclopedia, books, papers and code not filtered. Only
English and Chinese, because those are the languages the model is trained on: its score means
nothing for others. Curated categories pass because they are what "gold" is made of (filtering them
only loses documents to model error) and code is not prose. 0.3 rather than 0.5 because the model
is confident on its training domains and harsh on prose it has not seen (bench/bench_quality.py
keep-rates: at 0.3 it still drops 98-100% of corpus-dev e-mail, but keeps 75% rather than 54% of
Chinese news pages and 19% rather than 12% of paper abstracts; held-out F1 moves under 0.5 point).

``lang`` comes from the langid stage when it ran (else ``und``). The model is loaded once per worker
on first use. ``ensure_assets`` trains it in the driver when ``model_path`` does not exist yet (as
``python -m pipeline train-quality CONFIG`` does), and the model file's sha256 is part of the stage's
config hash, so retraining the model reruns this stage and the ones after it.

Stats: ``score_histogram.<category>.<lang>.<bucket>`` (buckets of 0.05, labelled by lower edge),
``near_threshold.{dropped,kept}.<category>/<lang>`` (a few ``{id, score}`` within
``example_margin`` of the threshold), ``unfiltered.<category>.<lang>`` (documents no threshold
applied to).
"""
from __future__ import annotations

from collections import defaultdict

import pyarrow as pa
from pydantic import Field, field_validator

from pipeline.stage import CATEGORIES, Stage, StageConfig, StageOutput, split
from pipeline.stats import Stats, histogram
from stages.quality_model import (
    QualityScorer,
    TextConfig,
    TrainingConfig,
    model_exists,
    model_fingerprint,
    read_report,
    train_quality_model,
)

REASON = "low_quality"
UNKNOWN_LANG = "und"
HISTOGRAM_EDGES = [i / 20 for i in range(20)]


def _default_thresholds() -> dict[str, float | None]:
    return {"*/en": 0.3, "*/zh": 0.3, "encyclopedia": None, "books": None, "papers": None, "code": None}


class QualityConfig(StageConfig):
    """The ``stages.quality`` section: the model, the thresholds, and how to train the model."""

    model_path: str = Field(
        "models/quality.bin", description="fastText model; trained before the run (or by `train-quality`) when missing"
    )
    thresholds: dict[str, float | None] = Field(
        default_factory=_default_thresholds,
        description="minimum quality_score to keep, by '<category>/<lang>', '<category>', "
        "'*/<lang>' or '*' (most specific wins); null or no matching key: not filtered",
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

    def __init__(self, config: QualityConfig):
        super().__init__(config)
        self._scorer: QualityScorer | None = None
        self._thresholds: dict[tuple[str, str], float | None] = {}

    @classmethod
    def ensure_assets(cls, config: QualityConfig, log) -> None:
        """Train the model when it does not exist yet; warn when it was trained differently."""
        if not model_exists(config.model_path):
            log(f"quality: no model at {config.model_path}; training one")
            train_quality_model(config, log=log)
            return
        report = read_report(config.model_path)
        if report and report.get("train") != config.train.model_dump(mode="json"):
            log(f"quality: {config.model_path} was trained with another `train` section; "
                "using it as is (`python -m pipeline train-quality CONFIG --force` retrains it)")

    @classmethod
    def fingerprint(cls, config: QualityConfig) -> str:
        return model_fingerprint(config.model_path)

    @property
    def scorer(self) -> QualityScorer:
        """The model, loaded on first use (once per worker process)."""
        if self._scorer is None:
            self._check_text_config()
            self._scorer = QualityScorer(self.config.model_path, self.config.text)
        return self._scorer

    def _check_text_config(self) -> None:
        report = read_report(self.config.model_path)
        if report and report.get("text") != self.config.text.model_dump(mode="json"):
            raise ValueError(
                f"quality: {self.config.model_path} was trained with text settings {report['text']}, "
                f"the config says {self.config.text.model_dump(mode='json')}; retrain or fix the config"
            )

    def process(self, batch: pa.Table) -> StageOutput:
        """Score every row; drop those under their threshold as ``low_quality``."""
        ids = batch.column("id").to_pylist()
        categories = batch.column("category").to_pylist()
        langs = (
            [lang or UNKNOWN_LANG for lang in batch.column("lang").to_pylist()]
            if "lang" in batch.column_names
            else [UNKNOWN_LANG] * batch.num_rows
        )
        scores = self.scorer.score(batch.column("text")) if batch.num_rows else []

        stats = Stats()
        reasons: list[str | None] = []
        by_group: dict[tuple[str, str], list[float]] = defaultdict(list)
        for doc_id, category, lang, score in zip(ids, categories, langs, scores):
            score = float(score)
            by_group[(category, lang)].append(score)
            threshold = self._threshold(category, lang)
            if threshold is None:
                stats.add("unfiltered", category, lang, 1)
                reasons.append(None)
                continue
            dropped = score < threshold
            reasons.append(REASON if dropped else None)
            if abs(score - threshold) <= self.config.example_margin:
                side = "dropped" if dropped else "kept"
                stats.example("near_threshold", side, f"{category}/{lang}", {"id": doc_id, "score": round(score, 4)})
        for (category, lang), group_scores in by_group.items():
            for bucket, count in histogram(group_scores, HISTOGRAM_EDGES).items():
                stats.add("score_histogram", category, lang, bucket, count)
        return split(batch, reasons, stats, quality_score=pa.array(scores, type=pa.float32()))

    def _threshold(self, category: str, lang: str) -> float | None:
        """``config.threshold``, memoised: a corpus has few (category, language) pairs."""
        key = (category, lang)
        if key not in self._thresholds:
            self._thresholds[key] = self.config.threshold(category, lang)
        return self._thresholds[key]
