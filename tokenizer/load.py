"""Load a trained tokenizer: what the mixture builder and packer need (batch encoding, special ids)."""
from __future__ import annotations

import os
from itertools import chain
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import sentencepiece as spm

from pipeline import storage
from tokenizer import bpe, segments

MODEL_FILE = "tokenizer.model"
HF_FILE = "tokenizer.json"
HF_CONFIG_FILE = "tokenizer_config.json"
REPORT_FILE = "report.json"


class Tokenizer:
    """A sentencepiece model plus its end-of-document id. Encoding never adds bos/eos by itself."""

    def __init__(self, model_proto: bytes, eod_token: str):
        self.processor = spm.SentencePieceProcessor(model_proto=model_proto)
        self.eod_id = self.processor.piece_to_id(eod_token)
        self._encode_words = None  # encode_flat's way with words, chosen on its first use (False: none)
        if not self.processor.is_control(self.eod_id):
            raise ValueError(f"end-of-document token {eod_token!r} is not a special token of this model")

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, texts: Sequence[str], num_threads: int | None = None) -> list[list[int]]:
        """Token ids of every text, encoded in parallel by sentencepiece's own threads."""
        threads = num_threads or os.cpu_count() or 1
        return self.processor.encode(list(texts), num_threads=threads)

    def encode_flat(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of a string array's texts, on this thread: (ids of every text one after another,
        each text's offset into them, one entry more). The same ids as ``encode``, found by encoding each
        distinct word once (``tokenizer.segments``), by a compiled BPE loop (``tokenizer.bpe``), when
        the model allows each."""
        if self._encode_words is None:
            self._encode_words = False
            if segments.independent_segments(self.processor):
                words = bpe.WordEncoder.of(self.processor)
                self._encode_words = words.encode if words else segments.encode_words_with(self.processor)
        if self._encode_words:
            return segments.encode_segments(self._encode_words, texts)
        encoded = self.processor.encode(pc.fill_null(texts, "").to_pylist(), num_threads=1)
        offsets = np.concatenate(([0], np.cumsum([len(ids) for ids in encoded], dtype=np.int64)))
        return np.fromiter(chain.from_iterable(encoded), dtype=np.int64, count=int(offsets[-1])), offsets

    def decode(self, ids: Sequence[int]) -> str:
        return self.processor.decode(list(ids))

    def special_ids(self) -> dict[str, int]:
        """Every special token (unknown and control pieces) and its id."""
        processor = self.processor
        return {
            processor.id_to_piece(i): i
            for i in range(self.vocab_size)
            if processor.is_control(i) or processor.is_unknown(i)
        }


def load_tokenizer(output_dir: str) -> Tokenizer:
    """The tokenizer that ``train_tokenizer`` wrote to ``output_dir`` (local path or URI)."""
    filesystem, directory = storage.resolve(output_dir)
    report = storage.read_json(filesystem, storage.join(directory, REPORT_FILE))
    with filesystem.open_input_stream(storage.join(directory, MODEL_FILE)) as source:
        model = source.read()
    return Tokenizer(model, report["tokenizer"]["eod_token"])
