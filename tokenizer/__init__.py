"""The BPE tokenizer: a 65,536-entry sentencepiece model trained on the cleaned corpus.

Contract (what the runner, the CLI and the mixture builder use)::

    from tokenizer import TokenizerConfig, train_tokenizer, evaluate_tokenizer, load_tokenizer

    config = TokenizerConfig(**raw["tokenizer"])      # the run config's `tokenizer:` section
    report = train_tokenizer(config, shard_paths, f"{work_dir}/tokenizer", log=print, executor=None)
    tokenizer = load_tokenizer(f"{work_dir}/tokenizer")
    tokenizer.encode(texts)  # -> list[list[int]]; no bos/eos added
    tokenizer.encode_flat(array)  # the same ids as one array and offsets, each distinct word encoded
                             # once (tokenizer.segments), by a compiled BPE loop (tokenizer.bpe)
    tokenizer.eod_id         # the end-of-document separator for packing

``shard_paths`` are the kept/ Parquet shards of ``config.input_stage`` (columns id, text, category
and, when langid ran, lang). Training draws a deterministic sample weighted by category and language
and capped in bytes (tokenizer.sample), trains sentencepiece BPE with byte fallback
(tokenizer.train), exports a Hugging Face tokenizer.json with the same ids (tokenizer.export_hf) and
measures compression, unknown tokens, round trips and export agreement on held-out documents
(tokenizer.evaluate). With an ``executor`` (``pipeline.executor``) the sample is drawn by its tasks
and the rest runs in one task on a whole node; with None, all of it runs in this process. Output
files: tokenizer.model, tokenizer.json, tokenizer_config.json, report.json (written last).
"""
from tokenizer.config import TokenizerConfig
from tokenizer.evaluate import evaluate_tokenizer
from tokenizer.load import Tokenizer, load_tokenizer
from tokenizer.reader import Batch, TrainingShards
from tokenizer.train import train_tokenizer

__all__ = ["Batch", "TokenizerConfig", "Tokenizer", "TrainingShards", "evaluate_tokenizer", "load_tokenizer",
           "train_tokenizer"]
