"""The `tokenizer:` section of a run config: every knob of sampling, training and evaluation."""
from __future__ import annotations

from pydantic import Field, model_validator

from pipeline.config import Category  # the one category list: pipeline.stage.CATEGORIES
from pipeline.steps import StepConfig

# Fixed ids, as in LLaMA and InternLM: unk=0, bos=1, eos=2, pad=3.
RESERVED_IDS = ("unk_token", "bos_token", "eos_token", "pad_token")


class TokenizerConfig(StepConfig):
    """A sentencepiece BPE tokenizer trained on a deterministic, weighted sample of one stage's output.

    Sampling weights are relative inclusion rates: while the byte cap binds, a document of weight 2
    is about twice as likely to be drawn as one of weight 1 (weight = category weight x language
    weight; 0 excludes). The report shows the resulting byte shares next to the corpus's.
    """

    input_stage: str = Field(
        "dedup", description="stage whose kept/ shards are the training corpus (the last document stage)"
    )
    vocab_size: int = Field(
        65_536, ge=512, description="entries in the vocabulary, special and 256 byte tokens included"
    )
    sample_bytes: int = Field(
        100_000_000, gt=0,
        description="UTF-8 text bytes in the training sample; the last document drawn may cross it",
    )
    category_weights: dict[Category, float] = Field(
        default_factory=lambda: {
            "web": 1.0, "encyclopedia": 1.0, "books": 1.0, "papers": 1.0, "code": 2.0, "others": 0.5,
        },
        description="relative inclusion rate per category; unlisted categories weigh 1",
    )
    language_weights: dict[str, float] = Field(
        default_factory=lambda: {"en": 1.0, "zh": 2.0},
        description="relative inclusion rate per `lang` value; unlisted languages weigh "
        "default_language_weight",
    )
    default_language_weight: float = Field(1.0, ge=0, description="weight of unlisted languages")
    seed: int = Field(0, description="salt of the per-document hashes that draw sample and held-out set")
    holdout_fraction: float = Field(
        0.01, ge=0, lt=1, description="share of documents reserved for evaluation, never trained on"
    )
    eval_bytes: int = Field(
        5_000_000, ge=0, description="cap on the held-out text bytes that evaluation encodes"
    )
    max_sentence_length: int = Field(
        16_384, ge=256,
        description="longest training line in bytes; longer lines are split (and counted), never skipped",
    )
    character_coverage: float = Field(
        0.9995, gt=0, le=1,
        description="share of sample characters that get their own piece; the rarest fall back to "
        "bytes (0.9995 is sentencepiece's advice for CJK)",
    )
    split_digits: bool = Field(True, description="every digit is its own token")
    max_piece_length: int = Field(16, ge=1, description="longest piece in characters")
    unk_token: str = Field("<unk>", description="id 0; never produced, thanks to byte fallback")
    bos_token: str = Field("<s>", description="id 1")
    eos_token: str = Field("</s>", description="id 2")
    pad_token: str = Field("<pad>", description="id 3")
    eod_token: str = Field(
        "</s>", description="end-of-document separator the packer puts between documents; must be "
        "one of the special tokens"
    )
    special_tokens: list[str] = Field(
        default_factory=list,
        description="extra control tokens (ids after pad), e.g. chat markers; inserted by id, "
        "never produced from text",
    )
    user_defined_symbols: list[str] = Field(
        default_factory=lambda: ["\n", "\n\n"],
        description="strings always encoded as one token (newline runs, so lines never merge)",
    )
    num_threads: int | None = Field(
        None, gt=0, description="trainer threads, and CPUs its task reserves (at most a node's); default: "
        "every CPU of the largest node. It does not change the model (nor its bytes)",
    )
    export_hf: bool = Field(
        True, description="also write a Hugging Face tokenizer.json (needs the `tokenizers` package)"
    )

    @model_validator(mode="after")
    def _check_tokens(self) -> "TokenizerConfig":
        specials = self.control_tokens()
        if len(set(specials)) != len(specials):
            raise ValueError(f"special tokens must be distinct: {specials}")
        if self.eod_token not in specials[1:]:
            raise ValueError(f"eod_token {self.eod_token!r} is not one of the special tokens {specials[1:]}")
        if set(self.user_defined_symbols) & set(specials):
            raise ValueError("user_defined_symbols and special tokens overlap")
        if any(weight < 0 for weight in [*self.category_weights.values(), *self.language_weights.values()]):
            raise ValueError("sampling weights must be >= 0")
        return self

    def control_tokens(self) -> list[str]:
        """Every special token, in id order: unk, bos, eos, pad, then ``special_tokens``."""
        return [getattr(self, name) for name in RESERVED_IDS] + list(self.special_tokens)

    def weight(self, category: str, lang: str) -> float:
        """A document's sampling weight."""
        language = self.language_weights.get(lang, self.default_language_weight)
        return self.category_weights.get(category, 1.0) * language
