"""Export the sentencepiece BPE model as a Hugging Face ``tokenizer.json`` with the same ids.

sentencepiece's BPE encoder merges any two adjacent symbols whose concatenation is a piece, best
score first. A `tokenizers` BPE model does the same when its merge list holds every split of every
piece into two pieces, ranked by the merged piece's score (what transformers' LLaMA converter
does). The rest maps one to one: spaces become ``▁`` (the normalizer), characters outside the
vocabulary become ``<0xXX>`` byte tokens (byte_fallback), newline symbols and special tokens are
added tokens, and the decoder undoes all three.

One difference in behaviour remains: `tokenizers` turns a special token written literally in the
text (``</s>``) into its id, sentencepiece never does. Set ``tokenizer.encode_special_tokens = True``
(tokenizers) or keep ``split_special_tokens: true`` (transformers, written in tokenizer_config.json)
to get sentencepiece's behaviour; the flag cannot be stored in tokenizer.json.
"""
from __future__ import annotations

from typing import Any

from sentencepiece import sentencepiece_model_pb2

from tokenizer.config import TokenizerConfig

Piece = sentencepiece_model_pb2.ModelProto.SentencePiece


def export_hf(model_proto: bytes) -> str:
    """The ``tokenizer.json`` text for a sentencepiece BPE model trained by this package."""
    tokenizers = _import_tokenizers()
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(model_proto)
    _check_supported(model)
    pieces = list(model.pieces)
    vocab = {piece.piece: index for index, piece in enumerate(pieces)}
    unk = next(piece.piece for piece in pieces if piece.type == Piece.UNKNOWN)

    bpe = tokenizers.models.BPE(
        vocab=vocab, merges=merges(pieces), unk_token=unk, fuse_unk=True, byte_fallback=True
    )
    tokenizer = tokenizers.Tokenizer(bpe)
    tokenizer.normalizer = tokenizers.normalizers.Replace(" ", "▁")
    tokenizer.decoder = tokenizers.decoders.Sequence(
        [
            tokenizers.decoders.Replace("▁", " "),
            tokenizers.decoders.ByteFallback(),
            tokenizers.decoders.Fuse(),
        ]
    )
    tokenizer.add_tokens(
        [
            tokenizers.AddedToken(piece.piece, special=False, normalized=False)
            for piece in pieces
            if piece.type == Piece.USER_DEFINED
        ]
    )
    tokenizer.add_special_tokens(
        [
            tokenizers.AddedToken(piece.piece, special=True, normalized=False)
            for piece in pieces
            if piece.type in (Piece.CONTROL, Piece.UNKNOWN)
        ]
    )
    return tokenizer.to_str()


def merges(pieces: list) -> list[tuple[str, str]]:
    """Every split of every normal piece into two normal pieces, best merged-piece score first."""
    normal = {piece.piece: index for index, piece in enumerate(pieces) if piece.type == Piece.NORMAL}
    ranked = []
    for text, index in normal.items():
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in normal and right in normal:
                ranked.append((-pieces[index].score, index, normal[left], normal[right], left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def transformers_config(config: TokenizerConfig) -> dict[str, Any]:
    """``tokenizer_config.json``: lets ``AutoTokenizer.from_pretrained(output_dir)`` load it offline."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": config.unk_token,
        "bos_token": config.bos_token,
        "eos_token": config.eos_token,
        "pad_token": config.pad_token,
        "additional_special_tokens": list(config.special_tokens),
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "split_special_tokens": True,
    }


def _check_supported(model) -> None:
    # The mapping above is exact only for the settings train.py uses.
    spec = model.normalizer_spec
    if model.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.BPE:
        raise ValueError("export_hf: only BPE models can be exported")
    if spec.name != "identity" or spec.add_dummy_prefix or spec.remove_extra_whitespaces:
        raise ValueError(
            "export_hf: the model normalizes text (identity, no dummy prefix, no whitespace "
            "squeezing expected)"
        )
    if not model.trainer_spec.byte_fallback:
        raise ValueError("export_hf: the model was trained without byte fallback")


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "exporting tokenizer.json needs the `tokenizers` package (pip install tokenizers), "
            "or set tokenizer.export_hf: false"
        ) from None
    return tokenizers
