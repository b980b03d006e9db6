"""Train the sentencepiece BPE model on the drawn sample and write everything a trainer needs.

``train_tokenizer`` draws the sample (tokenizer.sample; its passes are tasks over groups of shards),
then trains, exports the Hugging Face tokenizer.json, evaluates on the held-out documents and writes
in one task (``train_and_write``) that reserves ``num_threads`` CPUs of one node (default: all of
the largest node's), so the trainer's memory (about 10x the sample) is never the driver's. It
writes, atomically, under ``output_dir``:

- ``tokenizer.model``: the sentencepiece model (the reference; ids are defined by it)
- ``tokenizer.json``, ``tokenizer_config.json``: the same tokenizer for `tokenizers`/`transformers`
- ``report.json``: sample composition, trainer settings, timings, the process that trained
  (``trained_in``: host, pid, threads) and its peak memory, evaluation (written last, so its
  presence means the directory is complete)

The sample's part files live in ``output_dir``/_sample while the task runs (so that a task on any
node reads them) and are deleted after it.

The trainer settings are those of a multilingual LLM tokenizer: byte fallback (no unknown token
on any input), identity normalization and no dummy prefix (decode(encode(x)) == x), digits split,
runs of spaces kept as pieces for code indentation, newline runs as atomic symbols. sentencepiece
writes its options into the model, ``num_threads`` included; the pieces do not depend on the thread
count, so that option is cleared from the written model (``_without_threads``), whose bytes are then
the same on a node of any size.
"""
from __future__ import annotations

import io
import json
import os
import resource
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import sentencepiece as spm

from pipeline import storage
from pipeline.executor import InProcessExecutor
from tokenizer.config import TokenizerConfig
from tokenizer.evaluate import measure
from tokenizer.export_hf import export_hf, transformers_config
from tokenizer.load import MODEL_FILE, HF_FILE, HF_CONFIG_FILE, REPORT_FILE, Tokenizer
from tokenizer.sample import draw_sample, read_sample

SAMPLE_DIR = "_sample"


@dataclass(frozen=True)
class TrainTask:
    """The training task: the drawn sample (part files, stats, held-out documents) and where to write."""

    config: TokenizerConfig = field(repr=False)
    output_dir: str
    threads: int
    shards: int
    sample_seconds: float
    stats: dict = field(repr=False)
    parts: list = field(repr=False)
    heldout: list = field(repr=False)


def train_tokenizer(
    config: TokenizerConfig, shard_paths: list[str], output_dir: str, log=print, executor=None
) -> dict[str, Any]:
    """Train on ``shard_paths`` (Parquet, document schema); write the tokenizer and its report.

    ``executor`` (``pipeline.executor``) runs the sampling tasks and the training task; None runs
    everything in this process."""
    if not shard_paths:
        raise ValueError("train_tokenizer: no input shards")
    executor = executor or InProcessExecutor()
    filesystem, directory = storage.resolve(output_dir)
    report_path = storage.join(directory, REPORT_FILE)
    if storage.exists(filesystem, report_path):  # a stale report must not vouch for new files
        filesystem.delete_file(report_path)
    sample_dir, local_sample_dir = storage.join(output_dir, SAMPLE_DIR), storage.join(directory, SAMPLE_DIR)
    _remove_sample(filesystem, local_sample_dir)
    threads = config.num_threads or executor.node_cpus  # asked first: a lazy Ray starts outside the timings
    try:
        started = time.perf_counter()
        sample = draw_sample(config, shard_paths, sample_dir, log, executor)
        if sample.stats["sample"]["lines"] == 0:
            raise ValueError("train_tokenizer: the sample is empty (no input text, or every weight is 0)")
        log(f"tokenizer: training {config.vocab_size:,} BPE entries with sentencepiece, {threads} threads")
        task = TrainTask(config, output_dir, threads, len(shard_paths), time.perf_counter() - started,
                         sample.stats, sample.parts, sample.heldout)
        # A task cannot reserve more CPUs than a node has; the trainer still gets `threads` threads.
        cpus = min(threads, executor.node_cpus)
        report = executor.map(train_and_write, [task], "tokenizer train", cpus=cpus, own_process=True)[0]
    finally:
        _remove_sample(filesystem, local_sample_dir)
    evaluation = report["evaluation"]
    log(
        f"tokenizer: {report['tokenizer']['vocab_size']:,} entries in {output_dir}; on "
        f"{evaluation['documents']:,} held-out documents: "
        f"{evaluation['overall']['bytes_per_token']} bytes/token, "
        f"{evaluation['round_trip']['failures']} round-trip failures, "
        f"{evaluation['unknown_tokens']} unknown tokens"
    )
    return report


def train_and_write(task: TrainTask) -> dict[str, Any]:
    """Train, export, evaluate and write the tokenizer's files, then its report (a task)."""
    config = task.config
    filesystem, directory = storage.resolve(task.output_dir)
    timings: dict[str, float] = {"sample_s": task.sample_seconds}
    started = time.perf_counter()
    model = train_sentencepiece(config, task.parts, task.stats["sample"]["bytes"], task.threads)
    timings["train_s"] = time.perf_counter() - started

    started = time.perf_counter()
    files = output_files(config, model)
    for name, payload in files.items():
        storage.write_bytes(filesystem, storage.join(directory, name), payload)
    timings["export_s"] = time.perf_counter() - started

    tokenizer = Tokenizer(model, config.eod_token)
    started = time.perf_counter()
    hf_json = files[HF_FILE].decode() if HF_FILE in files else None
    evaluation = measure(tokenizer, task.heldout, hf_json)
    timings["evaluate_s"] = time.perf_counter() - started
    report = {
        "config": config.model_dump(mode="json"),
        "inputs": {"shards": task.shards},
        "sample": task.stats,
        "tokenizer": {
            "vocab_size": tokenizer.vocab_size,
            "eod_token": config.eod_token,
            "eod_id": tokenizer.eod_id,
            "special_ids": tokenizer.special_ids(),
            "files": sorted(files),
        },
        "timings": {key: round(value, 3) for key, value in timings.items()},
        "trained_in": {"host": socket.gethostname(), "pid": os.getpid(), "threads": task.threads},
        "peak_rss_bytes": _peak_rss_bytes(),
        "evaluation": evaluation,
    }
    storage.write_json(filesystem, storage.join(directory, REPORT_FILE), report)
    return report


def output_files(config: TokenizerConfig, model: bytes) -> dict[str, bytes]:
    """File name -> content: the model, and the Hugging Face files when ``export_hf``."""
    files = {MODEL_FILE: model}
    if config.export_hf:
        files[HF_FILE] = export_hf(model).encode()
        files[HF_CONFIG_FILE] = json.dumps(
            transformers_config(config), indent=2, ensure_ascii=False
        ).encode()
    return files


def train_sentencepiece(config: TokenizerConfig, parts: list[str], sample_bytes: int = 0, threads: int = 1) -> bytes:
    """Train on the sample's part files (one training line per line); return the serialized model."""
    writer = io.BytesIO()
    try:
        # An iterator, not `input=`: the model would otherwise record the sample files' paths.
        spm.SentencePieceTrainer.train(
            sentence_iterator=read_sample(parts), model_writer=writer, **trainer_options(config, threads)
        )
    except RuntimeError as error:
        raise ValueError(
            f"sentencepiece could not train {config.vocab_size:,} entries on a {sample_bytes:,}-byte "
            f"sample (a larger sample, a smaller vocab_size or a lower character_coverage helps): {error}"
        ) from error
    return _without_threads(writer.getvalue())


def _without_threads(model: bytes) -> bytes:
    """The serialized model without the trainer's thread count: a run option, not part of the model."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    proto.trainer_spec.ClearField("num_threads")
    return proto.SerializeToString(deterministic=True)


def trainer_options(config: TokenizerConfig, threads: int = 1) -> dict[str, Any]:
    """The sentencepiece trainer arguments this config stands for, on ``threads`` threads."""
    return {
        "model_type": "bpe",
        "vocab_size": config.vocab_size,
        "character_coverage": config.character_coverage,
        "byte_fallback": True,
        "normalization_rule_name": "identity",
        "add_dummy_prefix": False,
        "remove_extra_whitespaces": False,
        "allow_whitespace_only_pieces": True,
        "split_digits": config.split_digits,
        "split_by_unicode_script": True,
        "split_by_whitespace": True,
        "max_sentencepiece_length": config.max_piece_length,
        "max_sentence_length": config.max_sentence_length,
        # We sample ourselves: the trainer must take every line, in order.
        "input_sentence_size": 0,
        "shuffle_input_sentence": False,
        "unk_piece": config.unk_token,
        "bos_piece": config.bos_token,
        "eos_piece": config.eos_token,
        "pad_piece": config.pad_token,
        "unk_id": 0,
        "bos_id": 1,
        "eos_id": 2,
        "pad_id": 3,
        "control_symbols": list(config.special_tokens),
        "user_defined_symbols": list(config.user_defined_symbols),
        "num_threads": threads,
        "minloglevel": 2,
    }


def _remove_sample(filesystem, directory: str) -> None:
    if storage.exists(filesystem, directory):
        filesystem.delete_dir(directory)


def _peak_rss_bytes() -> int:
    # ru_maxrss is in KiB on Linux: the whole process's peak, sentencepiece's trainer included.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
