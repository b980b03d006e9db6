"""The quality model as files and as a scorer: text preparation, the classifier, the gold n-gram
language model and the per-language statistics that put every signal on one scale.

Files, all written by ``train-quality`` (``stages/quality_train.py``) and deterministic byte for byte:

- ``<model_path>``: fastText classifier, gold (curated text) vs the web text the stage will judge;
- ``<model_path>.lm.npz``: the gold n-gram language models, one per language (``quality_lm``);
- ``<model_path>.report.json``: the training data, held-out metrics, and ``calibration``: per
  language, the mean and spread of every signal on held-out training rows, so that a signal enters
  the score as "how many spreads above the usual" whatever the language or the user's corpus.

The classifier is written last: its presence means the model is complete.

``prepare_texts(texts, config)`` turns documents into the token lines the classifier and the language
model read, identically for training and scoring: leading and trailing whitespace dropped,
the first ``max_chars`` characters (``cjk_max_chars`` for Chinese and Japanese), NFKC, lower case, digits as ``0``, punctuation split
off, and Chinese/Japanese characters split into one token each (``chars``) or into jieba words.

``QualityModel(model_path, text_config).signals(texts, langs)`` gives every signal per document;
``standardise`` puts them on the common scale the stage's weights apply to.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import re
import tempfile
from typing import Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline import storage
from pipeline.stage import StageConfig
from stages import quality_signals
from stages.fasttext_predict import Classifier
from stages.quality_lm import NgramModel, Tokens, char_classes, split_text
from stages.unicode_fold import nfkc_lower

GOLD, JUNK = "gold", "junk"
LABEL_PREFIX = "__label__"
REPORT_SUFFIX = ".report.json"
LM_SUFFIX = ".lm.npz"
# Every signal the score can weigh, in column order: the classifier's logit, the language model's
# log-likelihood per token (minus log perplexity), then the document signals.
FEATURES = ("classifier", "perplexity", *quality_signals.SIGNALS)
# A standardised signal is clipped to this many spreads: no single odd signal (a 5 MB line, a page of
# nothing but "the") may outvote the others.
Z_CLIP = 4.0
# Fewer word tokens than this known to the language model: nothing to judge, the score is 0.
MIN_KNOWN_WORDS = 3
_LOGIT_CLIP = 10.0
# Documents scored together. Scoring is a few dozen numpy passes over a batch's bytes and tokens,
# which stay in the CPU cache for a couple of thousand windows (about 3 MB of text): the whole of
# corpus-dev as one batch of 17,619 scored 1.5x slower than in pieces of 1,000 or 2,000.
SCORING_CHUNK = 2000


class TextConfig(StageConfig):
    """How a document becomes model input. The trained model records it; scoring must match."""

    max_chars: int = Field(
        1500, gt=0,
        description="characters scored from the start of a document (after leading whitespace): bounds "
        "the cost per document. On the human labels 1,500 and 2,000 measured alike (cross-validated AUC "
        "0.880 and 0.883), 1,000 lower (0.865); 1,500 is 7% faster than 2,000",
    )
    cjk_max_chars: int = Field(
        750, gt=0,
        description="characters scored from a Chinese or Japanese document (lang zh/ja): a character "
        "carries about what an English word does, so this still holds twice an English window's words, "
        "at half the cost",
    )
    segmenter: Literal["chars", "jieba"] = Field(
        "chars", description="Chinese/Japanese tokens: one per character, or jieba words (needs jieba)"
    )


# ---------------------------------------------------------------------------------------------
# Text preparation
# ---------------------------------------------------------------------------------------------

# Scripts written without spaces between words (kana, CJK ideographs incl. extension A and
# compatibility ideographs): fastText splits on whitespace only, so it would see whole sentences as
# one "word". Hangul is left out on purpose: Korean puts spaces between words. The patterns are RE2,
# evaluated once per code point into the table the text is split by (``quality_lm.char_classes``).
_CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF))
_CJK_CHAR_OR_PUNCT = "[" + "".join(f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in _CJK_RANGES) + r"\pP\pS]"
_PUNCT = r"[\pP\pS]"
_DIGIT = r"\p{Nd}"
_CJK_RUN = re.compile("[" + "".join(f"{chr(a)}-{chr(b)}" for a, b in _CJK_RANGES) + "]+")  # Python re, for jieba


def as_text_array(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> pa.Array:
    """Texts as one Arrow string array, nulls as "". Python strings that are not valid Unicode
    (lone surrogates) have the bad code points replaced rather than failing the batch."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not isinstance(texts, pa.Array):
        try:
            texts = pa.array(texts, type=pa.string())
        except (UnicodeEncodeError, pa.ArrowException):
            texts = pa.array([t.encode("utf-8", "replace").decode("utf-8") if isinstance(t, str) else t
                              for t in texts], type=pa.string())
    return pc.fill_null(texts, "")


CJK_LANGS = ("zh", "ja")


def scored_windows(texts: pa.Array, config: TextConfig, langs: Sequence[str] | None = None) -> tuple[pa.Array, np.ndarray]:
    """The scored part of each text (a null-free string array) and the UTF-8 bytes of the whole text,
    both without the text's leading and trailing whitespace (what ``pc.utf8_trim_whitespace`` trims):
    a page that starts with 3,000 blanks is judged on its words, and blanks do not count as length.
    The part is the first ``max_chars`` characters, or ``cjk_max_chars`` for a Chinese or Japanese
    document (``langs``; none: every text is not). One compiled pass copies the parts and nothing
    else (``quality_signals.trimmed_windows``)."""
    limits = np.full(len(texts), config.max_chars, dtype=np.int64)
    if langs is not None:
        limits[np.isin(np.asarray(langs, dtype=object), CJK_LANGS)] = min(config.max_chars, config.cjk_max_chars)
    return quality_signals.trimmed_windows(texts, limits)


def prepare_texts(texts: pa.Array | pa.ChunkedArray | Sequence[str], config: TextConfig,
                  langs: Sequence[str] | None = None) -> list[str]:
    """The line the models see for each text: tokens separated by spaces, no newline. ``langs``: the
    texts' languages, for the shorter Chinese/Japanese window."""
    return prepare_windows(scored_windows(as_text_array(texts), config, langs)[0], config)


def prepare_windows(windows: pa.Array, config: TextConfig) -> list[str]:
    """``prepare_texts`` for texts already cut to their ``window``."""
    return prepared_array(windows, config).to_pylist()


def prepared_array(windows: pa.Array, config: TextConfig) -> pa.Array:
    """``prepare_windows`` as an Arrow array."""
    return prepare_batch(windows, config)[0]


def prepare_batch(windows: pa.Array, config: TextConfig) -> tuple[pa.Array, Tokens]:
    """The prepared lines of ``windows`` and their tokens (what the language model and the signals
    read), from one pass over the text."""
    array = nfkc_lower(windows)
    if config.segmenter == "jieba":
        # Before digits become 0: the same, since jieba sees runs of CJK characters only.
        array = pa.array([_CJK_RUN.sub(_jieba_words, text) for text in array.to_pylist()], type=pa.string())
        classes = char_classes(marked=_PUNCT, digits=_DIGIT)
    else:
        classes = char_classes(marked=_CJK_CHAR_OR_PUNCT, digits=_DIGIT)
    # Exact numbers carry no quality signal, but how numeric a text is does. A newline would end
    # the example (in training) or be refused (in predict); other runs of whitespace need no
    # collapsing, fastText skips them.
    return split_text(array, classes)


def _jieba_words(match: re.Match) -> str:
    import jieba  # optional: only the jieba segmenter needs it

    return " " + " ".join(jieba.cut(match.group(0))) + " "


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


class QualityModel:
    """The classifier, the language models and the calibration of one trained model."""

    def __init__(self, model_path: str, text_config: TextConfig, calibration: dict | None = None):
        self.text_config = text_config
        # The compiled predict reads the file on its first use, not here: a downloaded copy lives as long
        # as this object does.
        self._download, local = _local_copy(model_path)
        # Its predict compiled (stages/fasttext_predict.py); fastText's own model is ``classifier.model``.
        self.classifier = Classifier(local)
        labels = set(self.classifier.labels)
        if labels != {LABEL_PREFIX + GOLD, LABEL_PREFIX + JUNK}:
            raise ValueError(f"{model_path}: expected labels gold and junk, found {sorted(labels)}")
        self._gold = self.classifier.labels.index(LABEL_PREFIX + GOLD)
        fs, path = storage.resolve(model_path + LM_SUFFIX)
        if "://" in model_path:
            with fs.open_input_stream(path) as stream:
                self.lm = NgramModel.from_bytes(stream.read())
        else:  # with its scoring tables, from this machine's copy of them when there is one
            self.lm = NgramModel.load(path)
        if calibration is None:
            calibration = (read_report(model_path) or {}).get("calibration")
        self.calibration = calibration

    def signals(self, texts: pa.Array | pa.ChunkedArray | Sequence[str], langs: Sequence[str]) -> dict[str, np.ndarray]:
        """Every signal of ``FEATURES`` per document (raw values: P(gold) for the classifier,
        perplexity for the language model), plus ``known_words``, float64 arrays."""
        texts = as_text_array(texts)
        langs = list(langs)
        # Every signal is the document's own: scoring in pieces changes no value.
        parts = [self._signals(texts.slice(start, SCORING_CHUNK), langs[start:start + SCORING_CHUNK])
                 for start in range(0, len(langs), SCORING_CHUNK)] or [self._signals(texts, langs)]
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _signals(self, texts: pa.Array, langs: list[str]) -> dict[str, np.ndarray]:
        """``signals`` of null-free texts, all at once."""
        windows, text_bytes = scored_windows(texts, self.text_config, langs)
        prepared, tokens = prepare_batch(windows, self.text_config)
        best, top = self.classifier.top(prepared)
        gold = best == self._gold
        # Two classes under softmax: P(gold) = 1 - P(junk). fastText adds 1e-5 before its log, so the
        # top probability (float32) can read a hair above 1.
        top = np.minimum(top, np.float32(1.0))
        p_gold = np.where(gold, top, np.float32(1.0) - top).astype(np.float64)
        perplexity, known = self.lm.perplexity(tokens, langs)
        result = {"classifier": p_gold, "perplexity": perplexity}
        result.update(quality_signals.compute(text_bytes, windows, tokens, langs, quality_signals.STOP_WORDS))
        result["known_words"] = known
        return result

    def standardise(self, signals: dict[str, np.ndarray], langs: Sequence[str]) -> dict[str, np.ndarray]:
        """Each feature as spreads from its usual value in the document's language (``*``: all
        training languages), clipped to ``Z_CLIP``; 0 where the signal is missing."""
        if not self.calibration:
            raise ValueError("quality: the model has no calibration; retrain it with `train-quality --force`")
        raw = features(signals)
        langs_array = np.array(list(langs), dtype=object)
        result = {}
        for name, values in raw.items():
            mean = np.full(values.size, self.calibration["*"][name][0])
            spread = np.full(values.size, self.calibration["*"][name][1])
            for lang, stats in self.calibration.items():
                if lang != "*":
                    rows = langs_array == lang
                    mean[rows], spread[rows] = stats[name]
            z = (values - mean) / np.maximum(spread, 1e-9)
            result[name] = np.clip(np.nan_to_num(z, nan=0.0), -Z_CLIP, Z_CLIP)
        return result


def features(signals: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Signals as the linear features the score weighs: the classifier's logit and the log-likelihood
    per token (-log perplexity) instead of a probability and a perplexity."""
    p = np.clip(signals["classifier"], 1e-12, 1 - 1e-12)
    result = {"classifier": np.clip(np.log(p / (1 - p)), -_LOGIT_CLIP, _LOGIT_CLIP)}
    with np.errstate(divide="ignore", invalid="ignore"):
        result["perplexity"] = -np.log(signals["perplexity"])
    for name in quality_signals.SIGNALS:
        result[name] = signals[name]
    return result


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------


def _local_copy(path: str) -> tuple[tempfile.TemporaryDirectory | None, str]:
    """A local path for ``path``, and what keeps it: on local disk, None and ``path`` itself; else a
    download into a temporary directory, removed when the directory object returned is."""
    fs, resolved = storage.resolve(path)
    if "://" not in path:
        return None, resolved
    directory = tempfile.TemporaryDirectory(prefix="quality-model-")
    local = os.path.join(directory.name, posixpath.basename(resolved))
    with open(local, "wb") as sink, fs.open_input_stream(resolved) as source:
        sink.write(source.read())
    return directory, local


def report_path(model_path: str) -> str:
    return model_path + REPORT_SUFFIX


def model_files(model_path: str) -> list[str]:
    """The model's files, the classifier (the commit point) last."""
    return [report_path(model_path), model_path + LM_SUFFIX, model_path]


def model_exists(model_path: str) -> bool:
    return not missing_files(model_path)


def missing_files(model_path: str) -> list[str]:
    """The model's files that are not there."""
    return [path for path in model_files(model_path) if not storage.exists(*storage.resolve(path))]


def no_model(model_path: str) -> str:
    """Why there is no model at ``model_path``, for a message: nothing there, or some files missing."""
    missing = missing_files(model_path)
    if len(missing) == len(model_files(model_path)):
        return f"no model at {model_path}"
    return f"{model_path} is not a whole model ({', '.join(missing)} missing)"


def model_fingerprint(model_path: str) -> str:
    """sha256 over the model's files, or "missing" when one is absent."""
    if not model_exists(model_path):
        return "missing"
    digests = [storage.sha256(*storage.resolve(path)) for path in model_files(model_path)]
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def read_report(model_path: str) -> dict | None:
    return storage.read_json_if_exists(*storage.resolve(report_path(model_path)))
