"""How good is the tokenizer: measured on held-out documents it was never trained on.

- compression: UTF-8 bytes and characters per token, overall, per language and per category
- unknown tokens (0 by construction with byte fallback; counted, not assumed) and byte-token rate
- round trip: decode(encode(text)) == text for every held-out document, failures listed by id
- the exported tokenizer.json gives the same ids as sentencepiece on every held-out document
- the vocabulary's make-up: share of CJK pieces, byte, whitespace and special pieces
"""
from __future__ import annotations

import re
from typing import Any, Iterable

import numpy as np

from pipeline import storage
from pipeline.stats import EXAMPLES_PER_KEY
from tokenizer.config import TokenizerConfig
from tokenizer.load import HF_FILE, load_tokenizer, Tokenizer
from tokenizer.sample import heldout_documents

EVALUATION_FILE = "evaluation.json"
ENCODE_BATCH_DOCS = 256
# Han (with extensions and compatibility ideographs), kana, hangul, bopomofo; not CJK punctuation.
CJK = re.compile(
    "[\u1100-\u11ff\u2e80-\u2fdf\u3040-\u30ff\u3100-\u318f\u31a0-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7ff\uf900-\ufaff\U00020000-\U0003134f]"
)


def evaluate_tokenizer(
    config: TokenizerConfig, shard_paths: list[str], output_dir: str, log=print
) -> dict[str, Any]:
    """Evaluate the tokenizer in ``output_dir`` on the held-out documents of ``shard_paths``.

    The held-out set is drawn exactly as during training (same seed, fraction and cap), so these
    documents were not trained on. Writes ``evaluation.json`` beside the model and returns it.
    """
    filesystem, directory = storage.resolve(output_dir)
    tokenizer = load_tokenizer(output_dir)
    hf_path = storage.join(directory, HF_FILE)
    hf_json = None
    if storage.exists(filesystem, hf_path):
        with filesystem.open_input_stream(hf_path) as source:
            hf_json = source.read().decode()
    documents = heldout_documents(config, shard_paths)
    log(f"tokenizer: evaluating on {len(documents):,} held-out documents")
    evaluation = measure(tokenizer, documents, hf_json)
    storage.write_json(filesystem, storage.join(directory, EVALUATION_FILE), evaluation)
    return evaluation


def measure(
    tokenizer: Tokenizer, documents: list[dict[str, str]], hf_json: str | None = None
) -> dict[str, Any]:
    """All the measurements above on ``documents`` (dicts with id, text, category, lang)."""
    tally = _Tally(tokenizer, _hf_tokenizer(hf_json))
    for batch in _chunks(documents, ENCODE_BATCH_DOCS):
        tally.add(batch)
    return {**tally.as_dict(), "vocabulary": vocabulary_profile(tokenizer)}


class _Tally:
    """Running counts over batches of documents: compression groups, token kinds, failures."""

    def __init__(self, tokenizer: Tokenizer, hf) -> None:
        self.tokenizer = tokenizer
        self.hf = hf
        processor = tokenizer.processor
        self.unk_id = processor.unk_id()
        self.byte_ids = np.array([i for i in range(tokenizer.vocab_size) if processor.is_byte(i)])
        self.groups: dict[tuple[str, str], _Counts] = {}
        self.documents = self.unknown = self.byte_tokens = 0
        self.round_trip_failures: list[str] = []
        self.hf_mismatches: list[str] = []

    def add(self, batch: list[dict[str, str]]) -> None:
        texts = [document["text"] or "" for document in batch]
        encoded = self.tokenizer.encode(texts)
        decoded = self.tokenizer.processor.decode(encoded)
        hf_encoded = (
            [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)] if self.hf else encoded
        )
        for document, text, ids, back, hf_ids in zip(batch, texts, encoded, decoded, hf_encoded):
            self.documents += 1
            counts = (len(text.encode()), len(text), len(ids))
            for group in (("overall", ""), ("by_lang", document["lang"]), ("by_category", document["category"])):
                self.groups.setdefault((group[0], str(group[1])), _Counts()).add(*counts)
            array = np.asarray(ids, dtype=np.int64)
            self.unknown += int(np.count_nonzero(array == self.unk_id))
            self.byte_tokens += int(np.isin(array, self.byte_ids).sum())
            if back != text:
                self.round_trip_failures.append(document["id"])
            if hf_ids != ids:
                self.hf_mismatches.append(document["id"])

    def as_dict(self) -> dict[str, Any]:
        tokens = max(self.groups.get(("overall", ""), _Counts()).tokens, 1)
        grouped = {
            kind: {key: counts.as_dict() for (k, key), counts in sorted(self.groups.items()) if k == kind}
            for kind in ("by_lang", "by_category")
        }
        return {
            "documents": self.documents,
            "overall": self.groups.get(("overall", ""), _Counts()).as_dict(),
            **grouped,
            "unknown_tokens": self.unknown,
            "unknown_rate": self.unknown / tokens,
            "byte_fallback_tokens": self.byte_tokens,
            "byte_fallback_rate": self.byte_tokens / tokens,
            "round_trip": _failures(self.documents, self.round_trip_failures),
            "hf_export": (
                _failures(self.documents, self.hf_mismatches) if self.hf
                else {"skipped": "no tokenizer.json"}
            ),
        }


def vocabulary_profile(tokenizer: Tokenizer) -> dict[str, Any]:
    """What the vocabulary is made of: CJK pieces, byte pieces, whitespace-only pieces, specials."""
    processor = tokenizer.processor
    size = tokenizer.vocab_size
    pieces = [processor.id_to_piece(i) for i in range(size)]
    learned = [
        piece for i, piece in enumerate(pieces)
        if not (processor.is_byte(i) or processor.is_control(i) or processor.is_unknown(i))
    ]
    cjk = [piece for piece in learned if CJK.search(piece)]
    return {
        "size": size,
        "cjk_pieces": len(cjk),
        "cjk_share": len(cjk) / size,
        "cjk_multi_char_pieces": sum(1 for piece in cjk if len(CJK.findall(piece)) > 1),
        "byte_pieces": sum(1 for i in range(size) if processor.is_byte(i)),
        "special_pieces": len(tokenizer.special_ids()),
        "whitespace_only_pieces": sum(1 for piece in learned if piece and not piece.strip("▁ \t\n")),
        "longest_piece_chars": max((len(piece) for piece in learned), default=0),
    }


class _Counts:
    def __init__(self) -> None:
        self.docs = self.bytes = self.chars = self.tokens = 0

    def add(self, n_bytes: int, n_chars: int, n_tokens: int) -> None:
        self.docs += 1
        self.bytes += n_bytes
        self.chars += n_chars
        self.tokens += n_tokens

    def as_dict(self) -> dict[str, Any]:
        # None, not 0, when nothing was encoded: no held-out documents is not bad compression.
        return {
            "docs": self.docs,
            "bytes": self.bytes,
            "chars": self.chars,
            "tokens": self.tokens,
            "bytes_per_token": round(self.bytes / self.tokens, 4) if self.tokens else None,
            "chars_per_token": round(self.chars / self.tokens, 4) if self.tokens else None,
        }


def _failures(documents: int, failed_ids: list[str]) -> dict[str, Any]:
    return {"documents": documents, "failures": len(failed_ids), "examples": failed_ids[:EXAMPLES_PER_KEY]}


def _hf_tokenizer(hf_json: str | None):
    if hf_json is None:
        return None
    from tokenizers import Tokenizer as HFTokenizer

    tokenizer = HFTokenizer.from_str(hf_json)
    # sentencepiece never turns literal "</s>" in text into the special id; make tokenizers agree.
    tokenizer.encode_special_tokens = True
    return tokenizer


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
