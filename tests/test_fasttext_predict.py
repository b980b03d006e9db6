"""The compiled fastText predict (stages/fasttext_predict.py) against fastText itself, bit for bit:
the packaged lid.176 (quantised, pruned, hierarchical softmax, character n-grams), models trained
here for real with each option the module follows (softmax, word n-grams, character n-grams,
quantisation with norms and a quantised output), and the models it must leave to fastText.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from stages.fasttext_predict import Classifier, Predictor
from stages.langid import resolve_model_path
from stages.quality_train import trainer_environment

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "sample_data" / "quality"

# What a line can hold that fastText's reading treats specially.
EDGE_LINES = [
    "", " ", "\t\v\f\r", "word", "  leading and trailing  ", "tabs\tand\x0bvertical\x0cfeeds\rhere",
    "nul\x00inside", "an end </s> in the middle, then more words", "__label__en is not a word here",
    "__label__", "__label", "x" * 300, "Straße naïve café 東京都 😀 emoji 𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "ünïcödé " * 40,
    "a b c d e f g h i j k l m n o p", "繁體中文與简体中文混合", "한국어 문장입니다", "русский текст",
    "two\nlines: the second is never read", "\nstarts with a newline",
]


def fasttext_top(model, lines: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """fastText's own answer, through the call its Python ``predict`` makes (which refuses newlines,
    so it is called with the line and the newline it would add)."""
    labels, probabilities = model.f.multilinePredict([line.encode() + b"\n" for line in lines], 1, 0.0, "strict")
    index = {label: i for i, label in enumerate(model.get_labels())}
    return (np.array([index[label[0]] for label in labels]),
            np.array([p[0] for p in probabilities], dtype=np.float32))


def assert_same_as_fasttext(path: str, lines: list[str]) -> None:
    classifier = Classifier(path)
    assert classifier.compiled is not None, f"{path} should be scored by the compiled loop"
    best, top = classifier.top(pa.array(lines, pa.string()))
    want_best, want_top = fasttext_top(classifier.model, lines)
    differ = np.flatnonzero((best != want_best) | (top.view(np.uint32) != want_top.view(np.uint32)))
    assert differ.size == 0, [(lines[i][:60], classifier.labels[best[i]], top[i], classifier.labels[want_best[i]],
                               want_top[i]) for i in differ[:5]]
    # Python strings give the same as Arrow strings.
    same_best, same_top = classifier.top(lines)
    assert same_best.tolist() == best.tolist() and same_top.tolist() == top.tolist()


def sample_texts() -> list[dict]:
    if not (SAMPLE / "gold.jsonl").is_file():
        pytest.skip("sample_data/quality/ not present")
    return [json.loads(line) for name in ("gold", "junk") for line in (SAMPLE / f"{name}.jsonl").open(encoding="utf-8")]


def sample_lines() -> list[str]:
    return [line for row in sample_texts() for line in row["text"].split("\n") if line.strip()] + EDGE_LINES


@pytest.fixture(scope="module")
def training_file(tmp_path_factory) -> Path:
    """The sample texts, one line each, labelled by source (gold, junk) and length class, so the label
    tree of a hierarchical softmax has more than two leaves."""
    path = tmp_path_factory.mktemp("fasttext") / "train.txt"
    rows = sample_texts()
    lines = [f"__label__{row['id'].split('-')[0]}{len(row['text']) // 300 % 4} " + " ".join(row["text"].split())
             for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def many_labels_file(tmp_path_factory) -> Path:
    """The sample texts' lines under 260 labels: fastText quantises an output matrix (``qout``) only
    when it has at least 256 rows."""
    path = tmp_path_factory.mktemp("fasttext") / "train-260.txt"
    lines = [line for line in sample_lines() if line.strip() and "\n" not in line]
    path.write_text("".join(f"__label__l{i % 260} {' '.join(line.split())}\n" for i, line in enumerate(lines * 2)),
                    encoding="utf-8")
    return path


def train(training_file: Path, directory: Path, name: str, quantize: dict | None = None, **options) -> str:
    """A model trained (and quantised) by fastText in a child process of its own, with the allocator
    settings the quality stage trains with (``quality_train.trainer_environment``: fastText starts
    most of its matrix from memory it never wrote)."""
    path = str(directory / name)
    script = (
        "import json, sys, fasttext\n"
        "options, quantize = json.loads(sys.argv[3]), json.loads(sys.argv[4])\n"
        "model = fasttext.train_supervised(input=sys.argv[1], dim=16, epoch=5, minCount=1, thread=1, seed=0, "
        "verbose=0, **options)\n"
        "if quantize is not None:\n"
        "    model.quantize(input=sys.argv[1], retrain=False, thread=1, verbose=0, **quantize)\n"
        "model.save_model(sys.argv[2])\n"
    )
    subprocess.run([sys.executable, "-c", script, str(training_file), path, json.dumps(options), json.dumps(quantize)],
                   check=True, env=trainer_environment(os.environ))
    return path


def test_lid176_on_sample_text_and_edge_cases():
    assert_same_as_fasttext(resolve_model_path(None), sample_lines())


def test_lid176_on_all_of_langid_dev(shared_data):
    with gzip.open(shared_data / "langid-dev.tsv.gz", "rt", encoding="utf-8") as handle:
        next(handle)
        lines = [line.rstrip("\n").split("\t")[1] for line in handle]
    assert len(lines) > 100_000
    assert_same_as_fasttext(resolve_model_path(None), lines)


@pytest.mark.parametrize("name, options", [
    ("softmax-bigrams", {"loss": "softmax", "wordNgrams": 2, "bucket": 50_000}),
    ("softmax-trigrams-subwords", {"loss": "softmax", "wordNgrams": 3, "minn": 2, "maxn": 5, "bucket": 20_000}),
    ("hs-subwords", {"loss": "hs", "minn": 3, "maxn": 6, "bucket": 30_000}),
    ("hs-words-only", {"loss": "hs", "wordNgrams": 1}),
])
def test_trained_models(training_file, tmp_path, name, options):
    assert_same_as_fasttext(train(training_file, tmp_path, name + ".bin", **options), sample_lines())


@pytest.mark.parametrize("quantize, loss", [
    ({"qnorm": True, "cutoff": 2000}, "hs"),  # norms, pruned words and n-grams
    ({"qnorm": False, "dsub": 3}, "softmax"),  # a last sub-quantiser narrower than the others
])
def test_quantised_models(training_file, tmp_path, quantize, loss):
    path = train(training_file, tmp_path, "quantised.ftz", quantize=quantize, loss=loss, wordNgrams=2,
                 minn=2, maxn=4, bucket=20_000)
    assert_same_as_fasttext(path, sample_lines())


def test_quantised_output(many_labels_file, tmp_path):
    path = train(many_labels_file, tmp_path, "qout.ftz", quantize={"qnorm": True, "qout": True}, loss="softmax",
                 wordNgrams=2, bucket=20_000)
    assert_same_as_fasttext(path, sample_lines())


def test_models_it_does_not_follow_are_left_to_fasttext(training_file, tmp_path):
    path = train(training_file, tmp_path, "ova.bin", loss="ova")
    assert Predictor.load(path) is None
    classifier = Classifier(path)
    assert classifier.compiled is None
    lines = sample_lines()
    best, top = classifier.top(lines)
    want_best, want_top = fasttext_top(classifier.model, lines)
    assert best.tolist() == want_best.tolist() and top.tolist() == want_top.tolist()
    # Not a fastText file at all: None, not a crash deep in the reader.
    other = tmp_path / "not-a-model.bin"
    other.write_bytes(b"\0" * 64)
    assert Predictor.load(str(other)) is None


def test_pruned_buckets_are_found_where_the_compiled_lookup_probes():
    """``_prune_table``: every kept bucket is found by probing from its home slot (as ``_bucket_row``
    does), a bucket saved twice keeps its last row (fastText's map), others are not found. With
    3,000 buckets in 8,192 slots, many share a home slot."""
    from stages.fasttext_predict import _prune_table

    rng = np.random.default_rng(0)
    buckets = rng.choice(1 << 20, 3000, replace=False)
    pairs = np.stack([buckets, np.arange(buckets.size)], axis=1)
    pairs = np.concatenate([pairs, [[buckets[0], 99_999]]])  # bucket 0 again, a later row
    slots = _prune_table(pairs)
    mask = slots.size - 1

    def row(bucket: int) -> int:
        slot = (bucket * 0x9E3779B1) & mask
        while slots[slot] != -1:
            if slots[slot] >> 32 == bucket:
                return int(slots[slot] & 0xFFFFFFFF)
            slot = (slot + 1) & mask
        return -1

    assert row(int(buckets[0])) == 99_999
    assert [row(int(b)) for b in buckets[1:]] == list(range(1, buckets.size))
    assert all(row(int(b)) == -1 for b in rng.integers(1 << 20, 1 << 21, 500))
    assert (slots != -1).sum() == buckets.size
