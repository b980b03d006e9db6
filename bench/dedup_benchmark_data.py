"""A seeded near-duplicate benchmark built from real corpus-dev documents (English and Chinese).

Picks ``--originals`` documents per language (encyclopedia, abstracts, handbook pages of 600-20,000
characters) and makes ``--variants`` edited copies of each, cycling through the edit kinds below;
``--negatives`` other documents per language come along unedited as unrelated material. Tokens are
words for English and characters for Chinese. Every choice comes from one ``random.Random(seed)``,
so the same seed and data give byte-identical files.

Edit kinds: ``token_edit`` at rates 1, 3, 5, 10, 20 and 30% (each token independently substituted
by another token of the document, deleted, or preceded by an inserted one), ``reorder`` (sentences
shuffled), ``boilerplate`` (a header and footer of web chrome, 5-25% of the length, added),
``truncate`` (the first 90, 75 or 50% of tokens kept).

Writes, under ``--out`` (default ``bench/results/dedup-benchmark``; never commit it, it is derived
from the shared data): ``shards/part-0000{0..3}.parquet`` in the document schema plus ``lang``, and
``truth.parquet`` (id, lang, family: the original's id, or null for a negative; kind; rate).

    python bench/dedup_benchmark_data.py --seed 0
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.common import CATEGORY_NAMES, corpus_shards  # noqa: E402

SOURCES = {
    "en": ("enwiki_wikiextractor", "scitldr_abstracts", "debian_handbook"),
    "zh": ("zhwiki_wikiextractor", "csl_zh_abstracts"),
}
MIN_CHARS, MAX_CHARS = 600, 20_000
TOKEN_RATES = (0.01, 0.03, 0.05, 0.10, 0.20, 0.30)
TRUNCATIONS = (0.9, 0.75, 0.5)
BOILERPLATE_SHARES = (0.05, 0.15, 0.25)
SHARDS = 4

BOILERPLATE = {
    "en": ["Home", "News", "Sport", "Business", "Subscribe to our newsletter",
           "We use cookies to improve your experience. By continuing you accept our cookie policy.",
           "Share this article on Facebook", "Share on Twitter", "Copy link", "Related articles",
           "Most read", "Advertisement", "Terms of use", "Privacy policy", "Contact us",
           "All rights reserved.", "Sign in", "Register for free to keep reading"],
    "zh": ["首页", "新闻", "体育", "财经", "订阅我们的新闻简报", "本网站使用cookie以改善您的体验，继续浏览即表示您同意。",
           "分享到微信", "分享到微博", "复制链接", "相关文章", "热门阅读", "广告", "使用条款", "隐私政策",
           "联系我们", "版权所有，未经授权不得转载。", "登录", "免费注册以继续阅读"],
}
SENTENCE_END = {"en": re.compile(r"(?<=[.!?])\s+"), "zh": re.compile(r"(?<=[。！？])")}


def load_candidates() -> dict[str, list[dict]]:
    """Eligible documents per language, in a stable order (by id)."""
    found: dict[str, list[dict]] = {lang: [] for lang in SOURCES}
    for shard in corpus_shards():
        table = pq.read_table(shard, columns=["id", "source", "category", "lang", "text"])
        for row in table.to_pylist():
            lang = row["lang"]
            if lang in SOURCES and row["source"] in SOURCES[lang] and MIN_CHARS <= len(row["text"]) <= MAX_CHARS:
                found[lang].append(row)
    return {lang: sorted(rows, key=lambda r: r["id"]) for lang, rows in found.items()}


def split_tokens(text: str, lang: str) -> list[str]:
    """Tokens that join back into text: words with their trailing space (en), characters (zh)."""
    return re.findall(r"\S+\s*", text) if lang == "en" else list(text)


def token_edit(text: str, lang: str, rate: float, rng: random.Random) -> str:
    tokens = split_tokens(text, lang)
    out = []
    for token in tokens:
        if rng.random() >= rate:
            out.append(token)
            continue
        action = rng.choice(("substitute", "delete", "insert"))
        if action == "substitute":
            out.append(rng.choice(tokens))
        elif action == "insert":
            out.extend([rng.choice(tokens), token])
    return "".join(out)


def reorder(text: str, lang: str, rng: random.Random) -> str:
    sentences = [s for s in SENTENCE_END[lang].split(text) if s]
    rng.shuffle(sentences)
    return ("" if lang == "zh" else " ").join(s.strip() if lang == "en" else s for s in sentences)


def boilerplate(text: str, lang: str, share: float, rng: random.Random) -> str:
    lines = BOILERPLATE[lang]
    header, footer = [], []
    while sum(len(line) + 1 for line in header + footer) < share * len(text):
        (header if rng.random() < 0.5 else footer).append(rng.choice(lines))
    return "\n".join(header + [text] + footer)


def truncate(text: str, lang: str, keep: float) -> str:
    tokens = split_tokens(text, lang)
    return "".join(tokens[: max(1, int(len(tokens) * keep))])


def edit_plan() -> list[tuple[str, float]]:
    """Every (kind, rate) the variants cycle through."""
    return ([("token_edit", r) for r in TOKEN_RATES] + [("reorder", 1.0)]
            + [("boilerplate", s) for s in BOILERPLATE_SHARES] + [("truncate", k) for k in TRUNCATIONS])


def make_variant(text: str, lang: str, kind: str, rate: float, rng: random.Random) -> str:
    if kind == "token_edit":
        return token_edit(text, lang, rate, rng)
    if kind == "reorder":
        return reorder(text, lang, rng)
    if kind == "boilerplate":
        return boilerplate(text, lang, rate, rng)
    return truncate(text, lang, rate)


def build(seed: int, originals: int, variants: int, negatives: int) -> tuple[list[dict], list[dict]]:
    """Documents (document schema plus lang) and their truth rows, shuffled."""
    rng = random.Random(seed)
    candidates = load_candidates()
    plan = edit_plan()
    docs, truth = [], []
    for lang in sorted(candidates):
        needed = originals + negatives
        if len(candidates[lang]) < needed:
            raise SystemExit(f"only {len(candidates[lang])} eligible {lang} documents, need {needed}")
        chosen = rng.sample(candidates[lang], needed)
        for number, row in enumerate(chosen):
            family = row["id"] if number < originals else None
            docs.append(_document(row["id"], row, row["text"]))
            truth.append({"id": row["id"], "lang": lang, "family": family, "kind": "original", "rate": 0.0})
            if family is None:
                continue
            for v in range(variants):
                kind, rate = plan[(number * variants + v) % len(plan)]
                variant_id = f"{row['id']}#v{v}"
                docs.append(_document(variant_id, row, make_variant(row["text"], lang, kind, rate, rng)))
                truth.append({"id": variant_id, "lang": lang, "family": family, "kind": kind, "rate": rate})
    order = list(range(len(docs)))
    rng.shuffle(order)
    return [docs[i] for i in order], [truth[i] for i in order]


def _document(doc_id: str, row: dict, text: str) -> dict:
    return {"id": doc_id, "text": text, "source": row["source"],
            "category": CATEGORY_NAMES.get(row["category"], row["category"]),
            "meta": json.dumps({"benchmark": "near-duplicates"}), "lang": row["lang"]}


def write(out: Path, docs: list[dict], truth: list[dict]) -> list[Path]:
    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for stale in shards.glob("*.parquet"):
        stale.unlink()
    paths = []
    per_shard = -(-len(docs) // SHARDS)
    for index in range(SHARDS):
        path = shards / f"part-{index:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(docs[index * per_shard:(index + 1) * per_shard]), path,
                       compression="zstd")
        paths.append(path)
    pq.write_table(pa.Table.from_pylist(truth), out / "truth.parquet")
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--originals", type=int, default=300, help="per language")
    parser.add_argument("--variants", type=int, default=3, help="edited copies per original")
    parser.add_argument("--negatives", type=int, default=600, help="unrelated documents per language")
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "dedup-benchmark")
    args = parser.parse_args(argv)
    docs, truth = build(args.seed, args.originals, args.variants, args.negatives)
    write(args.out, docs, truth)
    print(f"{len(docs)} documents ({sum(t['family'] is not None for t in truth)} in "
          f"{len({t['family'] for t in truth if t['family']})} families) in {SHARDS} shards under {args.out}")


if __name__ == "__main__":
    main()
