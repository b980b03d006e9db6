"""Word tokenizers handed to datatrove so that it counts the same words as the pipeline does.

Imports datatrove (the ``bench`` extra): import this module only where datatrove runs. The classes
live at module level so datatrove's multiprocess pool can pickle the steps that hold them.
"""
from __future__ import annotations

import re

import pyarrow as pa
from datatrove.utils.word_tokenizers import WordTokenizer

from stages.dedup import minhash


class SplitTokenizer(WordTokenizer):
    """Whitespace words and a terminal-punctuation sentence regex: datatrove's filters without
    spaCy, counting words as the rules stage does (``str.split``)."""

    sentence = re.compile(r"[^.!?]*[.!?]+[\"'”’)]*|[^.!?]+$")

    def word_tokenize(self, text: str) -> list[str]:
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [s.strip() for s in self.sentence.findall(text) if s.strip()]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self.sentence.finditer(text) if m.group().strip()]


class ScriptTokenizer(WordTokenizer):
    """Tokens for datatrove's MinHash matching the dedup stage's shingles: characters for text
    written without spaces (Han, kana, Hangul, Thai), whitespace-separated words otherwise."""

    def word_tokenize(self, text: str) -> list[str]:
        if minhash.char_shingled(pa.array([text]), None, ()).item():
            return [c for c in text if not c.isspace()]
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return [text]

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return [(0, len(text))]
