"""Every threshold of the rules stage, grouped per rule family.

Defaults are datatrove 0.10.1's published defaults (GopherQualityFilter, GopherRepetitionFilter,
C4QualityFilter, FineWebQualityFilter) unless a field's description says why it differs; the code
family follows BigCode's StarCoder preprocessing. A threshold set to ``null`` switches that one rule
off; ``enabled: false`` switches a whole family off. ``categories`` says which document categories a
family applies to: prose families skip ``code``, the code family sees only ``code``.

"Gold" below is quality-dev/gold.jsonl.gz (Wikipedia and Gutenberg excerpts of 200-3000
characters); the shares it quotes are measured by ``bench/bench_rules.py quality``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from pipeline.config import Category
from pipeline.stage import StageConfig

PROSE: list[Category] = ["web", "encyclopedia", "books", "papers", "others"]

# Gopher's English list; the others are the most frequent function words of each language, chosen
# so that any running text has at least one of them while lists, tables and link farms do not.
STOP_WORDS = {
    "en": ["the", "be", "to", "of", "and", "that", "have", "with"],
    "de": ["der", "die", "und", "in", "den", "von", "zu", "das"],
    "fr": ["le", "la", "de", "et", "les", "des", "un", "une"],
    "es": ["el", "la", "de", "que", "y", "en", "los", "del"],
    "zh": ["的", "了", "是", "在", "和", "有", "不", "这", "這", "也", "之", "为", "為",
           "于", "於", "以", "其", "及", "与", "與", "而", "者", "等"],
    "ja": ["の", "に", "は", "を", "た", "が", "で", "て", "と", "し"],
    "ko": ["수", "있다", "있는", "및", "등", "그", "이", "것이", "하는", "또한", "그리고", "있습니다"],
}

POLICY_SUBSTRINGS = [
    "terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies",
    "隐私政策", "隱私政策", "隐私权政策", "使用条款", "服务条款", "服務條款",
]

CITATIONS = r"\[\d*\]|\[edit\]|\[citation needed\]|\[编辑\]|\[編輯\]|\[来源请求\]|\[來源請求\]"


class Family(StageConfig):
    """Switches shared by every rule family. No threshold may be negative: every one is a count, a
    length, a share or a ratio, so a minus sign is a typo that would switch a rule off unseen."""

    enabled: bool = True
    categories: list[Category] = Field(
        default_factory=lambda: list(PROSE), description="document categories this family applies to")

    @field_validator("*")
    @classmethod
    def _not_negative(cls, value):
        numbers = [*value, *value.values()] if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
        if any(isinstance(n, (int, float)) and not isinstance(n, bool) and n < 0 for n in numbers):
            raise ValueError(f"must not be negative (got {value})")
        return value


class GopherQualityConfig(Family):
    """Gopher quality (Rae et al. 2021, appendix A1). Words are whitespace tokens, except in CJK
    documents (see ``stages/rules/document.py``)."""

    min_doc_words: int | None = Field(
        25, description="fewer words (symbol-only tokens not counted): gopher_too_few_words. datatrove: 50, "
                        "which alone drops 12% of the English gold")
    max_doc_words: int | None = Field(100_000, description="more words: gopher_too_many_words")
    min_avg_word_length: float | None = Field(
        3, description="mean word length below: gopher_short_words (not for CJK)")
    max_avg_word_length: float | None = Field(
        10, description="mean word length above: gopher_long_words (not for CJK)")
    max_symbol_word_ratio: float | None = Field(
        0.1, description="'#' per word, and '...' or '…' per word, above: gopher_hash_ratio, "
                         "gopher_ellipsis_ratio")
    max_bullet_lines_ratio: float | None = Field(
        0.9, description="share of lines starting with a bullet above: gopher_bullet_lines")
    max_ellipsis_lines_ratio: float | None = Field(
        0.3, description="share of lines ending in an ellipsis above: gopher_ellipsis_lines")
    min_alpha_words_ratio: float | None = Field(
        0.8, description="share of words holding a letter below: gopher_alpha_words "
                         "(datatrove calls it max_non_alpha_words_ratio)")
    min_stop_words: int | None = Field(
        1, description="fewer distinct stop words of the document's language: gopher_stop_words; languages "
                       "without a list skip it. datatrove: 2, which alone drops 2% of the English gold")
    stop_words: dict[str, list[str]] = Field(
        default_factory=lambda: {lang: list(words) for lang, words in STOP_WORDS.items()},
        description="stop words per language: whole words, or anywhere in the text of CJK documents")
    bullets: list[str] = Field(
        default_factory=lambda: ["•", "-", "●", "·", "*", "▪"],
        description="line prefixes counted as bullets (datatrove: • and -)")


class GopherRepetitionConfig(Family):
    """Gopher repetition (Rae et al. 2021, table A1): duplicated lines, paragraphs and n-grams."""

    dup_line_frac: float | None = Field(
        0.3, description="share of lines that repeat an earlier line: gopher_dup_lines")
    dup_para_frac: float | None = Field(
        0.3, description="share of paragraphs that repeat an earlier one: gopher_dup_paras")
    dup_line_char_frac: float | None = Field(
        0.2, description="characters in repeated lines / all characters: gopher_dup_line_chars")
    dup_para_char_frac: float | None = Field(
        0.2, description="characters in repeated paragraphs / all characters: gopher_dup_para_chars")
    top_n_grams: dict[int, float] = Field(
        default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16},
        description="n -> max character share of the most frequent repeated n-gram: gopher_top_<n>gram")
    dup_n_grams: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="n -> max character share of words inside repeated n-grams: gopher_dup_<n>grams")
    cjk_n_scale: int = Field(
        2, ge=1, description="a Chinese word is about two characters, so CJK n-grams are n * cjk_n_scale "
                             "character-words long (with 1, gopher_dup_5grams alone drops 5.9% of the Chinese "
                             "gold; with 2, 0.7%)")


class C4Config(Family):
    """C4 line cleaning (Raffel et al. 2020): drops lines, edits ``text``; some hits drop the document."""

    remove_citations: bool = Field(True, description="delete Wikipedia citation marks such as [1], [edit]")
    citation_regex: str = Field(CITATIONS, description="what remove_citations deletes")
    resolve_wiki_conversion: bool = Field(
        True, description="replace the MediaWiki language-conversion markup wikiextractor leaves in Chinese "
                          "Wikipedia (-{zh-cn:甲;zh-tw:乙}-, -{甲}-) by its first variant, instead of letting its "
                          "'{' drop 3% of the Chinese gold")
    unwrap: bool = Field(
        True, description="rejoin hard-wrapped paragraphs (books, e-mail, plain-text files) before the line "
                          "rules, which would otherwise drop every line that ends mid-sentence (84% of the "
                          "corpus-dev Gutenberg text)")
    wrap_widths: tuple[int, int] = Field(
        (40, 100), description="a document is hard-wrapped if the 90th percentile of its line lengths (its "
                               "width) lies in this range ...")
    min_wrapped_share: float = Field(
        0.4, ge=0, le=1, description="... at least this share of its lines are 75-100% of that width, and at "
                                     "most 5% are more than 120%")
    filter_no_terminal_punct: bool = Field(
        True, description="drop lines not ending in terminal punctuation, or ending in an ellipsis")
    terminal_punctuation: str = Field(
        ".?!\"'”’", description="line ends that count as terminal: datatrove's, plus the typographic "
                                "closing quotes of books")
    cjk_terminal_punctuation: str = Field(
        "。！？．…”」』）.?!\"'", description="line ends that count as terminal in CJK documents")
    min_words_per_line: int | None = Field(3, description="drop lines with fewer words")
    max_word_length: int | None = Field(1000, description="drop lines with a longer word")
    filter_javascript: bool = Field(True, description="drop lines mentioning javascript")
    filter_policy: bool = Field(True, description="drop lines with cookie / terms-of-use boilerplate")
    policy_substrings: list[str] = Field(
        default_factory=lambda: list(POLICY_SUBSTRINGS),
        description="lowercase phrases filter_policy looks for (C4's English ones, plus Chinese)")
    filter_lorem_ipsum: bool = Field(
        True, description="a kept line with 'lorem ipsum' drops the document: c4_lorem_ipsum")
    filter_curly_bracket: bool = Field(
        True, description="a kept line with '{' drops the document: c4_curly_bracket")
    min_num_sentences: int | None = Field(
        1, description="fewer sentences left after cleaning: c4_too_few_sentences. datatrove: 5, which alone "
                       "drops 32% of the English gold; min_doc_words, judged after cleaning, checks length")


class FineWebConfig(Family):
    """FineWeb's own filters (Penedo et al. 2024)."""

    line_punct_thr: float | None = Field(
        0.12, description="share of lines ending in terminal punctuation below: fineweb_line_punct")
    line_punct_exclude_zero: bool = Field(
        False, description="do not apply line_punct_thr when no line ends in punctuation")
    stop_chars: str = Field(
        ".?!。！？．｡؟۔।॥։።၊။។៕‼‽⁇⁈⁉\"'”’」』",
        description="line ends counted by line_punct_thr: the common part of datatrove's "
                    "TERMINAL_PUNCTUATION, plus closing quotes (dialogue in books ends in them)")
    short_line_thr: float | None = Field(0.67, description="share of short lines above: fineweb_short_lines")
    short_line_length: int = Field(30, description="a line of at most this many characters is short")
    cjk_short_line_length: int = Field(
        15, description="short_line_length for CJK documents, whose characters carry about twice the content")
    char_duplicates_ratio: float | None = Field(
        0.01, description="characters in repeated lines / non-newline characters above: "
                          "fineweb_dup_line_chars")
    new_line_ratio: float | None = Field(
        0.3, description="line breaks between non-blank lines per word above: fineweb_list_ratio")


class CodeConfig(Family):
    """Rules for ``category: code`` (BigCode's The Stack / StarCoder preprocessing), not prose rules."""

    categories: list[Category] = Field(
        default_factory=lambda: ["code"], description="document categories this family applies to")
    max_line_length: int | None = Field(1000, description="a longer line: code_long_line")
    max_mean_line_length: float | None = Field(
        100, description="mean line length above: code_mean_line_length")
    min_alnum_share: float | None = Field(
        0.25, description="share of alphanumeric characters below: code_alnum_share")
    autogenerated_markers: list[str] = Field(
        default_factory=lambda: ["auto-generated", "autogenerated", "automatically generated",
                                 "code generated by", "do not edit"],
        description="lowercase phrases in the first autogenerated_lines lines: code_autogenerated")
    autogenerated_lines: int = Field(5, description="how many leading lines are searched for the markers")
    max_blob_chars: int | None = Field(
        1024, description="characters in base64 / hex / \\u-escape runs above: code_data_blob")
    max_blob_share: float | None = Field(
        0.5, description="share of characters in such runs above: code_data_blob")


class CJKConfig(StageConfig):
    """Which documents are treated as CJK (no spaces between words, CJK punctuation)."""

    langs: list[str] = Field(
        default_factory=lambda: ["zh", "ja", "yue", "wuu", "lzh", "gan"],
        description="`lang` values (before any '-' or '_' suffix) written without spaces between words; "
                    "Korean uses spaces and is not listed")
    min_char_share: float = Field(
        0.3, ge=0, le=1,
        description="without a `lang` value: CJK if this share of non-space characters is Han or kana")


FAMILIES = ("c4", "gopher_repetition", "gopher_quality", "fineweb", "code")
FamilyName = Literal["c4", "gopher_repetition", "gopher_quality", "fineweb", "code"]


class RulesConfig(StageConfig):
    """Configuration of the rules stage: one block per rule family, and the order they run in."""

    order: list[FamilyName] = Field(
        default_factory=lambda: list(FAMILIES),
        description="the order families run in, each once. C4 cleaning first, so the others judge the text "
                    "that is kept: on raw web text (menus repeated on every page) FineWeb's order "
                    "[gopher_repetition, gopher_quality, c4, fineweb] drops whole pages for their navigation")
    default_lang: str | None = Field(
        None, description="language assumed for non-CJK documents without a `lang` value (langid disabled); "
                          "null: unknown, so per-language rules (stop words) are skipped")
    cjk: CJKConfig = CJKConfig()
    gopher_repetition: GopherRepetitionConfig = GopherRepetitionConfig()
    gopher_quality: GopherQualityConfig = GopherQualityConfig()
    c4: C4Config = C4Config()
    fineweb: FineWebConfig = FineWebConfig()
    code: CodeConfig = CodeConfig()

    @field_validator("order")
    @classmethod
    def _each_family_once(cls, order: list[str]) -> list[str]:
        if sorted(order) != sorted(FAMILIES):
            raise ValueError(f"must list each of {', '.join(FAMILIES)} exactly once")
        return order
