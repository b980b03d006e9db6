"""The compiled BPE word encoder (tokenizer.bpe) next to sentencepiece's own: same ids? how fast?

    python bench/bench_bpe.py --tokenizer WORK_DIR/tokenizer [--tokenizer ...] [--repeats 5]

A tokenizer directory is what the pipeline's tokenizer step writes (``<work_dir>/tokenizer``), e.g.
after ``python -m pipeline run configs/dev.yaml``. For each one:

- identity: every distinct word (``tokenizer.segments``) of every text under ../shared/data
  (corpus-dev, the JSONL sets, langid-dev's sentences, 400 pages of web-html-dev read as text), plus
  20,000 random strings of letters that merge into each other and runs of one character up to 300
  long (where only the leftmost-first order decides), encoded by ``WordEncoder`` and by
  ``processor.encode``: the ids must be identical; the first mismatches are printed if not;
- speed: ``Tokenizer.encode_flat``'s work on corpus-dev in the mixture's 2 MB batches
  (``segments.encode_segments``) with the words encoded by ``WordEncoder`` and by sentencepiece,
  interleaved, medians of ``--repeats``, on one thread, in MB of text per second.

Results go to bench/results/<--out>.json.
"""
from __future__ import annotations

import argparse
import glob
import gzip
import json
import random
import statistics
import sys
import time
from itertools import chain
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH.parent), str(BENCH)]

from common import SHARED, save_results  # noqa: E402

from mixture.count import ENCODE_BYTES  # noqa: E402
from pipeline.utf8 import utf8_buffers  # noqa: E402
from tokenizer import load_tokenizer  # noqa: E402
from tokenizer.bpe import WordEncoder  # noqa: E402
from tokenizer.segments import encode_segments, encode_words_with, segment_starts  # noqa: E402


def shared_texts() -> list[str]:
    texts = []
    for path in sorted((SHARED / "corpus-dev").glob("*.parquet")):
        texts += pq.read_table(path, columns=["text"]).column("text").to_pylist()
    for path in sorted(glob.glob(str(SHARED / "**" / "*.jsonl.gz"), recursive=True)):
        with gzip.open(path, "rt", errors="replace") as lines:
            for line in lines:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                texts += [value for value in row.values() if isinstance(value, str)]
    with gzip.open(SHARED / "langid-dev.tsv.gz", "rt", errors="replace") as lines:
        texts += [line.split("\t", 1)[-1] for line in lines]
    for path in sorted((SHARED / "web-html-dev").glob("*"))[:400]:
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    return [text for text in texts if text]


def distinct_words(texts: list[str]) -> list[str]:
    words: set[str] = set()
    for start in range(0, len(texts), 20_000):
        array = pa.array(texts[start:start + 20_000], pa.large_string())
        offsets, data = utf8_buffers(array)
        starts = segment_starts(data, offsets)
        segments = pa.Array.from_buffers(pa.large_string(), starts.size, [
            None, pa.py_buffer(np.append(starts, data.size).astype(np.int64)), pa.py_buffer(data)])
        words.update(pc.unique(segments).to_pylist())
    rng = random.Random(0)
    letters = list("aaabbe ▁中文的了。！😀é\u0301xyz0123")
    words.update("".join(rng.choice(letters) for _ in range(rng.randint(1, 40))) for _ in range(20_000))
    words.update(character * k for character in "ae中的0 " for k in range(1, 300))
    return sorted(words)


def identity(tokenizer, words: list[str]) -> dict:
    processor = tokenizer.processor
    encoder = WordEncoder.of(processor)
    if encoder is None:
        return {"handled": False}
    started = time.perf_counter()
    ids, lengths = encoder.encode(pa.array(words))
    ours = time.perf_counter() - started
    started = time.perf_counter()
    want = processor.encode(words, num_threads=1)
    theirs = time.perf_counter() - started
    want_lengths = np.fromiter(map(len, want), np.int64, len(want))
    want_ids = np.fromiter(chain.from_iterable(want), np.int64, int(want_lengths.sum()))
    wrong = np.flatnonzero(want_lengths != lengths)
    same = not wrong.size and bool((want_ids == ids).all())
    for index in wrong[:5]:
        print(f"  differs: {words[index]!r}: sentencepiece {want[index]}")
    return {"handled": True, "words": len(words), "characters": sum(map(len, words)), "identical": same,
            "ours_s": round(ours, 3), "sentencepiece_s": round(theirs, 3)}


def speed(tokenizer, repeats: int) -> dict:
    texts = pa.concat_arrays([pq.read_table(path, columns=["text"]).column("text").combine_chunks()
                              for path in sorted((SHARED / "corpus-dev").glob("*.parquet"))])
    sizes = pc.binary_length(texts).to_numpy().astype(np.int64)
    before = np.concatenate(([0], np.cumsum(sizes)))
    batches, start = [], 0
    while start < len(sizes):
        stop = max(int(np.searchsorted(before, before[start] + ENCODE_BYTES, "right")) - 1, start + 1)
        batches.append(texts.slice(start, stop - start))
        start = stop
    encoder = WordEncoder.of(tokenizer.processor)
    contenders = {"compiled": encoder.encode, "sentencepiece": encode_words_with(tokenizer.processor)}
    encode_segments(encoder.encode, batches[0])  # compiles or loads the loop first
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, words in contenders.items():
            started = time.process_time()
            for batch in batches:
                encode_segments(words, batch)
            seconds[name].append(time.process_time() - started)
    megabytes = int(before[-1]) / 1e6
    result = {"megabytes": round(megabytes, 1), "batches": len(batches)}
    for name, values in seconds.items():
        result[name] = {"cpu_s": round(statistics.median(values), 3),
                        "mb_per_s": round(megabytes / statistics.median(values), 2)}
    result["ratio"] = round(result["sentencepiece"]["cpu_s"] / result["compiled"]["cpu_s"], 2)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", action="append", required=True, help="a tokenizer step's directory")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="bpe")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is not present")
    words = distinct_words(shared_texts())
    print(f"{len(words):,} distinct words")
    results = {}
    for directory in args.tokenizer:
        tokenizer = load_tokenizer(directory)
        results[directory] = {"vocab_size": tokenizer.vocab_size, "identity": identity(tokenizer, words),
                              "encode_flat": speed(tokenizer, args.repeats)}
        print(json.dumps({directory: results[directory]}, indent=2))
    print(f"saved {save_results(args.out, results)}")


if __name__ == "__main__":
    main()
