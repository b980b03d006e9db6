"""Language identification: label every document with its primary language, keep the wanted ones.

Adds three columns, then drops what the config does not want:

- ``lang`` (string): the top label of a fastText LID model, lid.176 by default (ISO 639-1 where one
  exists, else the model's code: ``yue``, ``ceb``), renamed through ``label_map``. ``und`` when the text
  carries no language signal (below). ``code`` for categories in ``bypass_categories`` (default: code):
  never classified nor dropped here, since a source file's comment language says nothing about it.
  A document whose input declared its language (``lang_field``: ``meta._lang``) takes that one
  instead of the model's, unless ``declared_lang: ignore`` (its base code: ``zh`` for ``zh-Hant``);
  ``und``, ``mul``, ``mis`` and ``zxx`` declare none (``stages.ingest.NO_LANGUAGE``).
- ``lang_score`` (float32): the model's probability for ``lang``, clipped to [0, 1]; null for
  bypassed and declared documents, 0.0 for ``und``.
- ``script`` (string): ``Hans`` or ``Hant`` when ``lang`` is ``zh`` and the text has Han characters
  (a declared ``zh`` document: its ``Hans``/``Hant`` subtag, else null), else null. Characters only the mainland standard (GB 2312) encodes vote Hans, characters only Big5
  encodes vote Hant; shared ones (的, 是, 中) do not vote, ties go to Hans.

Removed rows get a ``reason``, tested in this order:

- ``no_language_signal``: nothing in the text can name a language: no letter at all (emoji,
  zero-width characters, ASCII digits, punctuation, markup only), or one letter repeated (``aaaa``) outside
  the scripts where a single character is a word (Han, kana, Hangul). The model would still answer
  (lid.176 gives its prior, ``en`` 0.1245), so this is decided before it is asked, whatever
  ``min_score``;
- ``lang_low_score`` when ``lang_score < min_score`` (or its per-language override): the label itself
  is unreliable, so this test comes before the next;
- ``lang_not_kept`` when ``languages`` is a list without ``lang``. Only the top label counts.

What the model reads: lid.176 was trained on single lines of ordinary text, punctuation and digits
included, so the text is changed as little as that allows. Each document becomes a one-line view with
HTML/XML tags and entities, URLs and e-mail addresses blanked, ASCII punctuation blanked only where it
touches Han or kana, and newlines turned into spaces. A document longer than ``max_chars`` is read
through ``windows`` evenly spaced windows (first and last included), not its prefix, so a licence
header cannot label a book. lid.176 calls short kana-free Chinese ``ja``; as Japanese prose always has kana,
``ja`` on Han text without kana is replaced by the model's best other label, with the probability the
model gave that label (never raised: a short phrase stays unsure and ``min_score`` decides).

Documented behaviour, measured in bench/bench_langid.py accuracy: a mixed-language document gets the
language of most of its view, with a score that falls as the others' share grows. Short text is
labelled unreliably (top-1 on single words 52%, on sentences 89% over 67 languages) and nothing here
corrects that beyond the two rules above; the rules stage's length limits do. Against bare lid.176
``predict`` on the raw text, top-1 is at least as high on each langid-dev unit (sentence 89.19% vs
89.16%, word pair 67.08% vs 66.66%, single word 51.65% vs 51.52%) and on every corpus-dev source but
two: debian_handbook (a page's label is the book's, its text often the English original) and one
e-mail source, 2 of 683 messages lower, both below ``min_score`` either way; right-and-kept at 0.5 is
higher there and overall (98.7% vs 97.8% of corpus-dev, handbook aside). The default ``min_score``
0.5 keeps 99.1% of the correctly labelled corpus-dev documents with 0.15% wrong labels among the kept;
0.65 (datatrove) loses 2.2% of the correct ones to remove a further 0.04% of wrong ones.

Stats (the runner already counts documents and bytes per language and reason): ``score_hist[lang]
[bucket]``, ``by_category[category][lang] = {docs, bytes}``, ``script[Hans|Hant]``,
``bypassed[category]``, ``declared[tag]`` (documents that took their input's language),
``sampled_windows`` (documents read through windows), ``examples[reason]``.
"""
from __future__ import annotations

import json
import os
import re
import sys
import unicodedata
from collections import Counter
from functools import lru_cache
from typing import Annotated, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from pipeline import table_cache
from pipeline.config import Category
from pipeline.stage import Stage, StageConfig, StageOutput, split
from pipeline.stats import Stats, histogram
from pipeline.utf8 import utf8_buffers
from stages import langid_kernels
from stages.fasttext_predict import Classifier

UNDETERMINED = "und"
BYPASSED = "code"
NO_SIGNAL = "no_language_signal"
SCORE_EDGES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
# lid.176.ftz (fastText, CC BY-SA 3.0) ships inside this package: see assets/NOTICE.md.
DEFAULT_MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "lid.176.ftz")

# (cheap substring guard, pattern), each match blanked in this order. Tags and entities go first: a URL
# pattern run first would eat the `">` closing an <a href="..."> and the word after it, and leave the
# rest of the tag in the view. Addresses are matched as ASCII only, so the Chinese or Japanese text that
# often touches them without a space survives; and no pattern may start a match inside a run of CJK
# characters, because those runs are long and a per-position retry would be quadratic.
# The address patterns are built from their parts, which ``_blank_urls`` and ``_blank_emails`` use too.
_SCHEMES = ("https", "http", "ftp")
_URL_TAIL = re.compile(r"://[!-~]+")
_EMAIL_LOCAL_CLASS = "A-Za-z0-9._%+-"
_EMAIL_TAIL = re.compile(r"@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
_URL = re.compile(f"(?:{'|'.join(_SCHEMES)}){_URL_TAIL.pattern}")
_EMAIL = re.compile(f"(?<![{_EMAIL_LOCAL_CLASS}])[{_EMAIL_LOCAL_CLASS}]+{_EMAIL_TAIL.pattern}")
_NOISE = [
    ("<", re.compile(r"<[^<>]{0,300}>")),
    ("&", re.compile(r"&#?\w{1,10};")),
    ("://", _URL),
    ("www.", re.compile(r"www\.[!-~]+")),
    ("@", _EMAIL),
]
# Han ideographs (with the radicals, 々 and 〇) and kana, as character-class bodies.
_HAN = (
    "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3038-\u303b\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
    "\U00020000-\U0003ffff"
)
_KANA_CHARS = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HAN_RE = re.compile(f"[{_HAN}]")
_KANA = re.compile(f"[{_KANA_CHARS}]")
# Runs of ASCII punctuation; blanked only where one touches Han or kana (``langid_kernels.blank_punctuation``).
# lid.176 learned Chinese and Japanese from text written with full-width punctuation and no spaces, so
# an ASCII comma glued to a Han run makes character n-grams it never saw: on corpus-dev that pulled
# Chinese abstracts toward cs/eo/ja. Everywhere else ASCII punctuation is what the model was trained
# with ("It's" is a word; "It s" reads as French), so it stays.
_PUNCT_RUN = re.compile(r"[!-/:-@\[-`{-~]+")
# Scripts where one character can be a whole word (水, み, 물), so one repeated character is still a signal.
_ONE_CHARACTER_WORDS = re.compile(f"[{_HAN}{_KANA_CHARS}\uac00-\ud7a3]")


class LangIDConfig(StageConfig):
    model_path: str | None = Field(
        None,
        description="fastText LID model file (lid.176.bin/.ftz, GlotLID, ...); null: the lid.176.ftz "
        "shipped with this package (stages/assets)",
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
    declared_lang: Literal["use", "ignore"] = Field(
        "use",
        description="a document whose input declared its language (an input's lang_field, meta._lang): "
        "use: that language is its lang (base code; script from a Hans/Hant subtag), lang_score null, "
        "kept or dropped by `languages` alone, no model call; ignore: classified like any other",
    )


class LangID(Stage):
    """Labels ``lang``/``lang_score``/``script`` with a fastText LID model; drops unwanted languages."""

    name = "langid"
    Config = LangIDConfig
    whole_shard = False  # each document is judged alone: the worker streams the shard in batches

    def __init__(self, config: LangIDConfig):
        super().__init__(config)
        # lid.176's predict, compiled (stages/fasttext_predict.py); ``classifier.model`` is fastText's own.
        self.classifier = Classifier(resolve_model_path(config.model_path))
        self.keep = None if config.languages == "all" else frozenset(config.languages)

    @property
    def model(self):
        """fastText's own lid.176 (loaded on first use: the compiled predict needs none of it)."""
        return self.classifier.model

    def process(self, batch: pa.Table) -> StageOutput:
        texts = batch.column("text").to_pylist()
        categories = batch.column("category").to_pylist()
        bypass = set(self.config.bypass_categories)
        declared = self._declared(batch, categories, bypass)
        to_classify = [i for i, category in enumerate(categories) if category not in bypass and i not in declared]
        views = prediction_views([texts[i] for i in to_classify], self.config.max_chars, self.config.windows)

        langs: list[str] = [BYPASSED] * batch.num_rows
        scores: list[float | None] = [None] * batch.num_rows
        scripts: list[str | None] = [None] * batch.num_rows
        reasons: list[str | None] = [None] * batch.num_rows
        signal = [has_language_signal(view) for view in views]
        chinese = []
        for k, (i, has_signal, (lang, score)) in enumerate(zip(to_classify, signal, self._predict(views, signal))):
            langs[i], scores[i] = lang, score
            if lang == "zh":
                chinese.append(k)
            reasons[i] = self._reason(lang, score) if has_signal else NO_SIGNAL
        for k, script in zip(chinese, chinese_scripts([views[k] for k in chinese])):
            scripts[to_classify[k]] = script
        for i, tag in declared.items():
            langs[i], _, subtags = tag.partition("-")
            scripts[i] = next((s for s in ("Hans", "Hant") if s in subtags.split("-")), None) if langs[i] == "zh" else None
            reasons[i] = "lang_not_kept" if self.keep is not None and langs[i] not in self.keep else None

        stats = self._stats(batch, categories, langs, scores, scripts, reasons)
        for tag, count in Counter(declared.values()).items():
            stats.add("declared", tag, count)
        stats.add("sampled_windows", sum(len(texts[i]) > self.config.max_chars for i in to_classify))
        return split(
            batch,
            reasons,
            stats,
            lang=pa.array(langs, type=pa.string()),
            lang_score=pa.array(scores, type=pa.float32()),
            script=pa.array(scripts, type=pa.string()),
        )

    def _declared(self, batch: pa.Table, categories: list, bypass: set) -> dict[int, str]:
        """Row -> declared language tag, for the rows whose ``meta`` has ``_lang`` (set by ingest from an
        input's ``lang_field``) outside ``bypass``; empty with ``declared_lang: ignore``."""
        if self.config.declared_lang == "ignore" or "meta" not in batch.column_names:
            return {}
        # A vectorised substring test first: most batches declare nothing, and parsing (or even
        # converting) every document's meta would cost more than the model.
        rows = pc.indices_nonzero(pc.fill_null(pc.match_substring(batch.column("meta"), '"_lang"'), False))
        if len(rows) == 0:
            return {}
        found = {}
        for i, meta in zip(rows.to_pylist(), batch.column("meta").take(rows).to_pylist()):
            tag = json.loads(meta).get("_lang")
            if categories[i] not in bypass and isinstance(tag, str) and tag:
                found[i] = tag
        return found

    def predict(self, views: list[str]) -> list[tuple[str, float]]:
        """(label, probability) for each ``prediction_view``, in one batched fastText call; ``und``
        with 0.0 for a view without language signal, which the model is not asked about."""
        return self._predict(views, [has_language_signal(view) for view in views])

    def _predict(self, views: list[str], signal: list[bool]) -> list[tuple[str, float]]:
        """``predict``, given ``has_language_signal`` of each view (``process`` needs it too)."""
        results = [(UNDETERMINED, 0.0)] * len(views)
        index = [i for i, has_signal in enumerate(signal) if has_signal]
        if not index:
            return results
        best, probabilities = self.classifier.top([views[i] for i in index])
        for i, label_index, probability in zip(index, best.tolist(), probabilities.tolist()):
            label = self._rename(self.classifier.labels[label_index])
            if label == "ja" and is_han_text(views[i]):
                label, probability = self._best_except_japanese(views[i])
            # fastText's softmax can exceed 1 by a rounding error (1.00003).
            results[i] = (label, min(float(probability), 1.0))
        return results

    def _best_except_japanese(self, view: str) -> tuple[str, float]:
        """Japanese prose always has kana; lid.176 still calls short kana-free Chinese ``ja`` (3% of
        the zh sentences of langid-dev, 29% of its zh word pairs). The model's runner-up is taken with
        the probability the model gave it, not renormalised without ``ja``: that would turn a 0.36 into
        a 0.999 and keep as confident Chinese what the model was unsure of (本当？, ja 0.64 / zh 0.36)."""
        labels, probabilities = self.model.predict(view, k=2, on_unicode_error="replace")
        for label, probability in zip(labels, probabilities):
            label = self._rename(label)
            if label != "ja":
                return label, float(probability)
        return UNDETERMINED, 0.0

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
        stats.examples("examples", reasons, lambda rows: batch.column("id").take(rows).to_pylist())
        return stats


def resolve_model_path(model_path: str | None) -> str:
    """The configured model file, or the lid.176.ftz this package ships (stages/assets), so that the
    one ``pip install`` of the project is enough to run this stage, with no download at run time."""
    if model_path is not None:
        path = os.path.expanduser(model_path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"stages.langid.model_path: no model file at {model_path!r}")
        return path
    if not os.path.isfile(DEFAULT_MODEL):
        raise FileNotFoundError(
            f"stages.langid.model_path is not set and the bundled lid.176.ftz is missing at {DEFAULT_MODEL}: "
            "reinstall the project (the model is package data of `stages`), or set stages.langid.model_path "
            "to a fastText LID model"
        )
    return DEFAULT_MODEL


def prediction_views(texts: list[str], max_chars: int, windows: int) -> list[str]:
    """The one-line, markup-free texts the model classifies (see the module docstring), one per text."""
    views = [_denoised(text, max_chars, windows) for text in texts]
    # isascii() reads a flag: English costs no scan, and has no Han or kana to blank punctuation by
    wide = [k for k, view in enumerate(views) if not view.isascii()]
    if wide:
        offsets, data = utf8_buffers(pa.array([views[k] for k in wide], pa.large_string()))
        blanked, new_offsets, changed = langid_kernels.blank_punctuation(data, offsets, _classes())
        rows = np.flatnonzero(changed)
        blanked_views = pa.Array.from_buffers(pa.large_string(), len(wide), [
            None, pa.py_buffer(new_offsets), pa.py_buffer(blanked)]).take(pa.array(rows)).to_pylist()
        for k, view in zip(rows.tolist(), blanked_views):
            views[wide[k]] = view
    # fastText splits words at every ASCII whitespace character itself, so only a newline, which
    # would end the line, needs replacing: folding runs of whitespace changed no label or probability
    # of 240,415 texts (corpus-dev, langid-dev) and cost a third of building the views.
    return [view.replace("\n", " ") for view in views]


def prediction_view(text: str, max_chars: int, windows: int) -> str:
    """The ``prediction_views`` of one text."""
    return prediction_views([text], max_chars, windows)[0]


def _denoised(text: str, max_chars: int, windows: int) -> str:
    """The text's ``_windows`` with the ``_NOISE`` blanked."""
    text = _windows(text, max_chars, windows)
    for guard, pattern in _NOISE:
        if guard in text:
            text = _BLANK.get(pattern, pattern.sub)(" ", text)
    return text


def _windows(text: str, max_chars: int, windows: int) -> str:
    """The text, or if it is longer than ``max_chars``, its ``windows`` evenly spaced windows joined
    by spaces (first and last included)."""
    if len(text) <= max_chars:
        return text
    width = max(max_chars // windows, 1)
    step = (len(text) - width) / max(windows - 1, 1)
    return " ".join(text[int(k * step) : int(k * step) + width] for k in range(windows))


# ``_URL`` and ``_EMAIL`` as ``re`` cannot run them fast: it tries them at every position of the text
# (half of the time ``_denoised`` took on corpus-dev). Each match holds a literal, "://" or "@", which
# ``re`` does find fast; the functions below find the literal and work out the match around it.
_EMAIL_LOCAL = frozenset(c for c in map(chr, range(128)) if re.fullmatch(f"[{_EMAIL_LOCAL_CLASS}]", c))


def _blank_urls(blank: str, text: str) -> str:
    """``_URL.sub(blank, text)``: a match is a scheme right before a "://", the "://" and what follows."""
    pieces, last, position = [], 0, 0
    while (tail := _URL_TAIL.search(text, position)) is not None:
        colon = tail.start()
        start = next((colon - len(scheme) for scheme in _SCHEMES
                      if colon - len(scheme) >= last and text.startswith(scheme, colon - len(scheme))), None)
        if start is None:  # no scheme here; a later "://" inside this tail may have one
            position = colon + 1
            continue
        pieces += (text[last:start], blank)
        last = position = tail.end()
    return "".join(pieces) + text[last:] if pieces else text


def _blank_emails(blank: str, text: str) -> str:
    """``_EMAIL.sub(blank, text)``: a match is the whole run of local-part characters before an "@"
    (the lookbehind), when that run starts after the previous match and is not empty, the "@" and
    the domain after it."""
    pieces, last, position = [], 0, 0
    while (tail := _EMAIL_TAIL.search(text, position)) is not None:
        at = start = tail.start()
        while start > 0 and text[start - 1] in _EMAIL_LOCAL:
            start -= 1
        if not last <= start < at:
            position = at + 1
            continue
        pieces += (text[last:start], blank)
        last = position = tail.end()
    return "".join(pieces) + text[last:] if pieces else text


_BLANK = {_URL: _blank_urls, _EMAIL: _blank_emails}


def has_language_signal(view: str) -> bool:
    """Whether the view holds anything a language could be read from: two different letters (combining
    marks and non-ASCII digits count: मम्मी and ૧૯૪૦ are words), or one character of a script
    where one character makes a word. Stops at the second distinct letter, so it reads a few
    characters of ordinary text."""
    first = None
    for char in view:
        letter = char.isalpha() or (
            not char.isascii() and (char.isdecimal() or unicodedata.category(char).startswith("M"))
        )
        if letter:
            if first is None:
                first = char
            elif char != first:
                return True
    return first is not None and _ONE_CHARACTER_WORDS.match(first) is not None


def is_han_text(text: str) -> bool:
    """Han characters and no kana: Chinese, or Japanese too short to show its kana."""
    return _HAN_RE.search(text) is not None and _KANA.search(text) is None


def chinese_scripts(texts: list[str]) -> list[str | None]:
    """Per text: ``Hant`` if more of its characters are traditional-only than simplified-only, ``Hans``
    if not, None when it has no Han character (pinyin, or a mislabelled text): no script to name."""
    if not texts:
        return []
    offsets, data = utf8_buffers(pa.array(texts, pa.large_string()))
    votes = langid_kernels.script_votes(data, offsets, _classes())
    return [None if han == 0 else "Hant" if traditional > simplified else "Hans"
            for han, simplified, traditional in votes.tolist()]


def chinese_script(text: str) -> str | None:
    """The ``chinese_scripts`` of one text."""
    return chinese_scripts([text])[0]


@lru_cache(maxsize=1)
def _classes() -> np.ndarray:
    """``_build_classes``, built once per machine and Python version (``pipeline.table_cache``) and
    read from disk by later processes."""
    return table_cache.cached_table("langid-classes", _build_classes, sys.modules[__name__], langid_kernels)


def _build_classes() -> np.ndarray:
    """``langid_kernels``' bits of each code point below U+40000, from this module's own patterns:
    Han and kana (``_HAN_RE``, ``_KANA``), the ASCII punctuation of ``_PUNCT_RUN``, and the CJK Unified
    Ideographs that only GB 2312 (simplified) or only Big5 (traditional) can encode, Python's codecs
    serving as the two national character tables."""
    classes = np.zeros(0x40000, dtype=np.uint8)
    every = "".join(map(chr, range(0xD800))) + "".join(map(chr, range(0xE000, classes.size)))
    for bit, pattern in ((langid_kernels.HAN, _HAN_RE), (langid_kernels.KANA, _KANA),
                         (langid_kernels.PUNCTUATION, _PUNCT_RUN)):
        found = "".join(pattern.findall(every))
        classes[np.frombuffer(found.encode("utf-32-le"), dtype=np.uint32)] |= bit
    for codepoint in range(0x4E00, 0xA000):
        char = chr(codepoint)
        in_gb, in_big5 = _encodes(char, "gb2312"), _encodes(char, "big5")
        if in_gb and not in_big5:
            classes[codepoint] |= langid_kernels.SIMPLIFIED
        elif in_big5 and not in_gb:
            classes[codepoint] |= langid_kernels.TRADITIONAL
    return classes


def _encodes(char: str, codec: str) -> bool:
    try:
        char.encode(codec)
    except UnicodeEncodeError:
        return False
    return True
