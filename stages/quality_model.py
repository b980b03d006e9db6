"""The quality model: the text fastText sees, training on gold vs junk text, held-out evaluation.

- ``prepare_texts(texts, config)`` turns documents into the lines fastText reads, identically for
  training and scoring: the first ``max_chars`` characters, NFKC, lower case, digits as ``0``,
  punctuation split off, and Chinese/Japanese characters split into one token each (``chars``; with
  ``word_ngrams: 2`` fastText then also sees character bigrams) or into jieba words (``jieba``).
- ``train_quality_model(config, log)`` reads the configured JSONL(.gz) sources, each labelled gold or
  junk; keeps the languages that have both labels; samples the same number of gold and junk rows
  per language, spread evenly over the sources of each label; holds out a fraction of every
  (language, label, source) group; trains a fastText supervised classifier; writes the model to
  ``model_path`` and its report (precision, recall, F1, ROC AUC per language and per source) to
  ``<model_path>.report.json``. Same data + config -> the same model file, byte for byte: every
  choice is ordered by a seeded hash and fastText trains with one thread (see ``threads``).
- ``QualityScorer(model_path, text_config).score(texts)`` is P(gold) per text, float32.

Paths are local paths (relative to the working directory) or pyarrow filesystem URIs.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import posixpath
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline import storage
from pipeline.stage import StageConfig

if TYPE_CHECKING:
    from stages.quality import QualityConfig

GOLD, JUNK = "gold", "junk"
LABEL_PREFIX = "__label__"
REPORT_SUFFIX = ".report.json"
# Decision thresholds at which the report tabulates precision and recall, to choose the stage's.
REPORT_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class TextConfig(StageConfig):
    """How a document becomes fastText input. The trained model records it; scoring must match."""

    max_chars: int = Field(
        3000, gt=0,
        description="characters scored from the start of a document; training rows are 200-3000 "
        "characters, so longer documents are judged on a window of the length the model learnt from",
    )
    segmenter: Literal["chars", "jieba"] = Field(
        "chars", description="Chinese/Japanese tokens: one per character, or jieba words (needs jieba)"
    )


class TrainingSource(StageConfig):
    """One JSONL(.gz) file of training text, all rows with the same label."""

    path: str
    label: Literal["gold", "junk"]
    text_field: str = "text"
    lang_field: str = Field("lang", description="language of the row; rows without one are 'und'")
    source_field: str = Field(
        "source", description="row field naming its origin, balanced over; default: the file name"
    )


class TrainingConfig(StageConfig):
    """Data, sampling and fastText hyper-parameters of ``train-quality``."""

    sources: list[TrainingSource] = Field(default_factory=list)
    languages: list[str] | None = Field(
        None, description="languages to train on; default: every language with gold and junk rows"
    )
    max_per_label_per_lang: int | None = Field(
        None, gt=0, description="cap on rows per label and language (before the held-out split)"
    )
    held_out_fraction: float = Field(0.2, gt=0, lt=1)
    seed: int = Field(1, description="seeds the sampling order and fastText's initialisation")
    epoch: int = Field(25, gt=0)
    lr: float = Field(0.5, gt=0)
    dim: int = Field(16, gt=0, description="embedding size; model bytes ~ 4 * dim * (bucket + words)")
    word_ngrams: int = Field(
        2, ge=1, description="word (and, for CJK, character) n-grams; 1 has diverged to NaN on tiny sets"
    )
    bucket: int = Field(200_000, ge=0, description="hash buckets for word n-grams")
    min_count: int = Field(2, ge=1, description="words seen fewer times are dropped from the vocabulary")
    quantize: bool = Field(False, description="product-quantise the model (.ftz-style, much smaller)")
    threads: int = Field(
        1, ge=1,
        description="fastText threads; 1 is deterministic, more are faster but Hogwild updates make "
        "the model differ run to run",
    )


# ---------------------------------------------------------------------------------------------
# Text preparation
# ---------------------------------------------------------------------------------------------

# Scripts written without spaces between words (kana, CJK ideographs incl. extension A and
# compatibility ideographs): fastText splits on whitespace only, so it would see whole sentences as
# one "word". Hangul is left out on purpose: Korean puts spaces between words. The patterns are RE2
# (pyarrow.compute runs them over a whole batch in C++, ~5x faster than Python's re here).
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_CJK_CHAR_OR_PUNCT = "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _CJK_RANGES) + r"\pP\pS]"
_PUNCT = r"[\pP\pS]"
_DIGIT = r"\p{Nd}"
_CJK_RUN = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK_RANGES) + "]+")  # Python re, for jieba


def prepare_texts(texts: pa.Array | pa.ChunkedArray | Sequence[str], config: TextConfig) -> list[str]:
    """The line fastText sees for each text: tokens separated by spaces, no newline."""
    array = texts if isinstance(texts, (pa.Array, pa.ChunkedArray)) else pa.array(texts, type=pa.string())
    array = pc.fill_null(array, "")
    array = pc.utf8_slice_codeunits(array, 0, config.max_chars)
    array = pc.utf8_lower(pc.utf8_normalize(array, form="NFKC"))
    # Exact numbers carry no quality signal, but how numeric a text is does.
    array = pc.replace_substring_regex(array, pattern=_DIGIT, replacement="0")
    if config.segmenter == "jieba":
        array = pa.array([_CJK_RUN.sub(_jieba_words, text) for text in array.to_pylist()], type=pa.string())
        array = pc.replace_substring_regex(array, pattern=_PUNCT, replacement=r" \0 ")
    else:
        array = pc.replace_substring_regex(array, pattern=_CJK_CHAR_OR_PUNCT, replacement=r" \0 ")
    # A newline would end the example (in training) or be refused (in predict); other runs of
    # whitespace need no collapsing, fastText skips them.
    return pc.replace_substring(array, pattern="\n", replacement=" ").to_pylist()


def _jieba_words(match: re.Match) -> str:
    import jieba  # optional: only the jieba segmenter needs it

    return " " + " ".join(jieba.cut(match.group(0))) + " "


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


class QualityScorer:
    """A trained model and the text preparation it was trained with; ``score`` gives P(gold)."""

    def __init__(self, model_path: str, text_config: TextConfig):
        import fasttext

        self.text_config = text_config
        with _local_copy(model_path) as local:
            self.model = fasttext.load_model(local)
        labels = set(self.model.get_labels())
        if labels != {LABEL_PREFIX + GOLD, LABEL_PREFIX + JUNK}:
            raise ValueError(f"{model_path}: expected labels gold and junk, found {sorted(labels)}")

    def score(self, texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
        """P(gold) for each text, float32. Texts with no tokens score 0: nothing to call good.

        (fastText would still score them, from the end-of-line token alone.)
        """
        lines = prepare_texts(texts, self.text_config)
        labels, probs = self.model.predict(lines, k=1)
        scores = np.zeros(len(lines), dtype=np.float32)
        for i, (line, label, prob) in enumerate(zip(lines, labels, probs)):
            if line.strip():
                # Two classes under softmax: P(gold) = 1 - P(junk). fastText adds 1e-5 before its
                # log, so the top probability can read a hair above 1.
                p = min(float(prob[0]), 1.0)
                scores[i] = p if label[0] == LABEL_PREFIX + GOLD else 1.0 - p
        return scores


@contextlib.contextmanager
def _local_copy(path: str) -> Iterator[str]:
    """A local path for ``path``: itself when on local disk, else a temporary download."""
    fs, resolved = storage.resolve(path)
    if "://" not in path:
        yield resolved
        return
    with tempfile.TemporaryDirectory(prefix="quality-model-") as directory:
        local = os.path.join(directory, posixpath.basename(resolved))
        with open(local, "wb") as sink, fs.open_input_stream(resolved) as source:
            sink.write(source.read())
        yield local


def report_path(model_path: str) -> str:
    return model_path + REPORT_SUFFIX


def model_exists(model_path: str) -> bool:
    fs, path = storage.resolve(model_path)
    return storage.exists(fs, path)


def model_fingerprint(model_path: str) -> str:
    """sha256 of the model file, or "missing" when there is none."""
    fs, path = storage.resolve(model_path)
    return storage.sha256(fs, path) if storage.exists(fs, path) else "missing"


def read_report(model_path: str) -> dict | None:
    return storage.read_json_if_exists(*storage.resolve(report_path(model_path)))


# ---------------------------------------------------------------------------------------------
# Training data: reading, balancing, held-out split
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    lang: str
    source: str
    label: str


def read_examples(source: TrainingSource) -> list[Example]:
    """Every row of one training file. Rows without text are skipped (they teach nothing)."""
    fs, path = storage.resolve(source.path)
    fallback_source = posixpath.basename(path).split(".")[0]
    # pyarrow decompresses by file extension (.gz, .zst, .bz2).
    with fs.open_input_stream(path) as raw:
        data = raw.read()
    examples = []
    for line_number, line in enumerate(io.StringIO(data.decode("utf-8")), start=1):
        if not line.strip():
            continue
        record = json.loads(line)
        text = record.get(source.text_field)
        if not isinstance(text, str) or not text.strip():
            continue
        examples.append(
            Example(
                id=str(record.get("id", f"{path}:{line_number}")),
                text=text,
                lang=normalise_lang(record.get(source.lang_field)),
                source=str(record.get(source.source_field) or fallback_source),
                label=source.label,
            )
        )
    return examples


def normalise_lang(lang: object) -> str:
    """Primary language subtag, as lid.176 labels languages: ``zh-Hans`` -> ``zh``; none -> ``und``."""
    if not isinstance(lang, str) or not lang:
        return "und"
    return lang.replace("_", "-").split("-")[0].lower()


def _order_key(seed: int, *parts: str) -> bytes:
    """A seeded pseudo-random order that depends on the rows, not on file or listing order."""
    return hashlib.sha1("\x1f".join((str(seed), *parts)).encode()).digest()


def balance(examples: Iterable[Example], config: TrainingConfig) -> tuple[list[Example], list[Example], dict]:
    """Equal gold and junk per language, each label spread evenly over its sources.

    Returns (train, held_out, summary). The summary counts the rows available, trained on and held
    out per language, label and source, and says why any language was skipped.
    """
    pools = _pools(examples, config.seed)
    summary: dict = {"available": {}, "train": {}, "held_out": {}, "skipped_languages": {}}
    for lang, by_label in pools.items():
        summary["available"][lang] = {label: _counts(by_source) for label, by_source in by_label.items()}
    train: list[Example] = []
    held_out: list[Example] = []
    for lang, by_label in pools.items():
        skipped = _why_skipped(lang, by_label, config)
        if skipped:
            summary["skipped_languages"][lang] = skipped
            continue
        n = min(sum(map(len, by_source.values())) for by_source in by_label.values())
        n = min(n, config.max_per_label_per_lang or n)
        for label, by_source in by_label.items():
            for source, quota in even_quotas(_counts(by_source), n).items():
                chosen = by_source[source][:quota]
                cut = math.ceil(len(chosen) * config.held_out_fraction)
                held_out.extend(chosen[:cut])
                train.extend(chosen[cut:])
                summary["held_out"].setdefault(lang, {}).setdefault(label, {})[source] = cut
                summary["train"].setdefault(lang, {}).setdefault(label, {})[source] = len(chosen) - cut
    return train, held_out, summary


def _pools(examples: Iterable[Example], seed: int) -> dict[str, dict[str, dict[str, list[Example]]]]:
    """lang -> label -> source -> rows in seeded random order (sorted keys at every level)."""
    pools: dict = {}
    for example in examples:
        by_label = pools.setdefault(example.lang, {GOLD: {}, JUNK: {}})
        by_label[example.label].setdefault(example.source, []).append(example)
    for by_label in pools.values():
        for by_source in by_label.values():
            for rows in by_source.values():
                rows.sort(key=lambda e: _order_key(seed, e.label, e.source, e.id, e.text))
    return {
        lang: {label: dict(sorted(by_source.items())) for label, by_source in by_label.items()}
        for lang, by_label in sorted(pools.items())
    }


def _counts(by_source: dict[str, list[Example]]) -> dict[str, int]:
    return {source: len(rows) for source, rows in by_source.items()}


def _why_skipped(lang: str, by_label: dict[str, dict[str, list[Example]]], config: TrainingConfig) -> str | None:
    if config.languages is not None and lang not in config.languages:
        return "not in train.languages"
    missing = [label for label, by_source in by_label.items() if not by_source]
    return f"no {missing[0]} rows" if missing else None


def even_quotas(available: dict[str, int], total: int) -> dict[str, int]:
    """Split ``total`` over sources as evenly as their sizes allow (water-filling).

    Sources are served smallest first, each taking its fair share of what is left or all it has,
    so a small source gives everything and the others share the rest; shares differ by at most one,
    the extra ones going to sources in name order.
    """
    remaining = min(total, sum(available.values()))
    quotas: dict[str, int] = {}
    by_size = sorted(available, key=lambda source: (available[source], source))
    for i, source in enumerate(by_size):
        quotas[source] = min(available[source], remaining // (len(by_size) - i))
        remaining -= quotas[source]
    while remaining:
        for source in sorted(available):
            if remaining and quotas[source] < available[source]:
                quotas[source] += 1
                remaining -= 1
    return {source: quotas[source] for source in sorted(available)}


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------


def train_quality_model(config: "QualityConfig", log: Callable[[str], None] = print) -> dict:
    """Train the gold-vs-junk classifier described by ``config``; write the model and its report.

    Returns the report (also written to ``<model_path>.report.json``).
    """
    training = config.train
    if not training.sources:
        raise ValueError(f"quality: no training sources configured and no model at {config.model_path}")
    started = time.perf_counter()
    examples = [example for source in training.sources for example in read_examples(source)]
    log(f"quality: read {len(examples)} training rows from {len(training.sources)} files")
    train, held_out, summary = balance(examples, training)
    if not train or not held_out:
        raise ValueError("quality: no language has both gold and junk training rows")
    log(f"quality: training on {len(train)} rows, holding out {len(held_out)}")

    with tempfile.TemporaryDirectory(prefix="quality-train-") as workdir:
        train_file = os.path.join(workdir, "train.txt")
        local_model = os.path.join(workdir, "model.bin")
        write_fasttext_file(train, train_file, config.text, training.seed)
        fit_seconds = fit_in_subprocess(train_file, local_model, training)
        scores = QualityScorer(local_model, config.text).score([example.text for example in held_out])
        report = {
            "model_path": config.model_path,
            "model_bytes": os.path.getsize(local_model),
            "text": config.text.model_dump(mode="json"),
            "train": training.model_dump(mode="json"),
            "data": summary,
            "held_out": evaluate(held_out, scores),
            "timing": {"total_seconds": round(time.perf_counter() - started, 2), "fit_seconds": round(fit_seconds, 2)},
        }
        _publish(local_model, report, config.model_path)
    overall = report["held_out"]["overall"]
    log(
        f"quality: held-out F1 {overall['f1']:.4f}, ROC AUC {overall['roc_auc']:.4f} "
        f"({overall['n']} rows); model {report['model_bytes'] / 1e6:.1f} MB -> {config.model_path}"
    )
    return report


def _publish(local_model: str, report: dict, model_path: str) -> None:
    """Write the report, then the model: the model's existence means training finished."""
    fs, path = storage.resolve(report_path(model_path))
    storage.write_json(fs, path, report)
    fs, path = storage.resolve(model_path)
    with open(local_model, "rb") as model_file:
        storage.write_bytes(fs, path, model_file.read())


def write_fasttext_file(examples: Sequence[Example], path: str, text_config: TextConfig, seed: int) -> None:
    """One ``__label__<label> <prepared text>`` line per example, gold and junk interleaved.

    SGD sees the file in order, so rows are shuffled (by a seeded hash, not by input order).
    """
    ordered = sorted(examples, key=lambda e: _order_key(seed, "shuffle", e.id, e.text))
    lines = prepare_texts([example.text for example in ordered], text_config)
    with open(path, "w", encoding="utf-8") as sink:
        for example, line in zip(ordered, lines):
            sink.write(f"{LABEL_PREFIX}{example.label} {line}\n")


def fit_in_subprocess(train_file: str, model_file: str, training: TrainingConfig) -> float:
    """``fit`` in a fresh Python process; return its training seconds.

    fastText's Python binding (fasttext-numpy2 0.10.4) trains reliably only once per process: a
    second train_supervised in the same process usually fails with "Encountered NaN", whatever the
    data and learning rate. A child process per training also keeps the trainer's memory out of
    long-lived drivers.
    """
    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "stages.quality_model", train_file, model_file, training.model_dump_json()]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"quality: fastText training failed:\n{done.stderr[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def fit(train_file: str, model_file: str, training: TrainingConfig) -> float:
    """Train on ``train_file``, save to ``model_file``; return the training seconds."""
    import fasttext

    started = time.perf_counter()
    model = fasttext.train_supervised(
        input=train_file,
        epoch=training.epoch,
        lr=training.lr,
        dim=training.dim,
        wordNgrams=training.word_ngrams,
        bucket=training.bucket,
        minCount=training.min_count,
        loss="softmax",
        thread=training.threads,
        seed=training.seed,
        verbose=0,
    )
    if training.quantize:
        # Without retraining, quantisation uses no data; qnorm keeps the norms accurate.
        model.quantize(qnorm=True, retrain=False)
    model.save_model(model_file)
    return time.perf_counter() - started


def evaluate(examples: Sequence[Example], scores: np.ndarray) -> dict:
    """Gold is the positive class. Overall, per language, and per ``lang/label/source`` group."""
    gold = np.array([example.label == GOLD for example in examples])
    langs = [example.lang for example in examples]
    groups = [f"{example.lang}/{example.label}/{example.source}" for example in examples]
    result: dict = {"overall": binary_metrics(gold, scores), "by_lang": {}, "by_source": {}}
    for lang in sorted(set(langs)):
        mask = np.array([value == lang for value in langs])
        result["by_lang"][lang] = binary_metrics(gold[mask], scores[mask])
    for group in sorted(set(groups)):
        mask = np.array([value == group for value in groups])
        result["by_source"][group] = {
            "n": int(mask.sum()),
            "mean_score": round(float(scores[mask].mean()), 4),
            "scored_gold_at_0.5": round(float((scores[mask] >= 0.5).mean()), 4),
        }
    return result


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


if __name__ == "__main__":
    # The child side of fit_in_subprocess: TRAIN_FILE MODEL_FILE TRAINING_CONFIG_JSON.
    print(fit(sys.argv[1], sys.argv[2], TrainingConfig.model_validate_json(sys.argv[3])))
