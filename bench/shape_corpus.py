"""corpus-dev's text cut into documents of another shape, for ``bench_pipeline.py --corpus``:

    python bench/shape_corpus.py short bench/results/corpus-short   # every line of 20+ characters a document
    python bench/shape_corpus.py long bench/results/corpus-long     # documents joined to ~250,000 characters

``short``: each line of a document that holds at least 20 characters becomes a document of its
own, with the document's category and language (514,733 documents of 82 characters on average:
posts, captions, question-answer pairs). ``long``: a category and language's documents, in
corpus order, joined with blank lines until they hold 250,000 characters (510 documents of 90,000
on average: books, dumps); their order is then shuffled (seeded) so every file mixes categories.
Both are written as 12 zstd Parquet files of the corpus's columns (id, text, source, category,
lang). The text is corpus-dev's, so neither is text the pipeline has not seen, only cut otherwise.
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from common import corpus_shards

MIN_LINE_CHARS = 20
LONG_CHARS = 250_000
FILES = 12


def short(rows: dict[str, list]) -> dict[str, list]:
    out: dict[str, list] = {name: [] for name in rows}
    for i, text in enumerate(rows["text"]):
        lines = [line for line in text.split("\n") if len(line.strip()) >= MIN_LINE_CHARS]
        for j, line in enumerate(lines):
            for name in rows:
                out[name].append(f"{rows['id'][i]}#{j}" if name == "id" else line if name == "text" else rows[name][i])
    return out


def long(rows: dict[str, list]) -> dict[str, list]:
    groups: dict[tuple[str, str], list[int]] = {}
    for i, key in enumerate(zip(rows["category"], rows["lang"])):
        groups.setdefault(key, []).append(i)
    out: dict[str, list] = {name: [] for name in rows}

    def emit(category: str, lang: str, members: list[int]) -> None:
        out["id"].append(f"long-{category}-{lang}-{len(out['id'])}")
        out["text"].append("\n\n".join(rows["text"][i] for i in members))
        out["source"].append(rows["source"][members[-1]])
        out["category"].append(category)
        out["lang"].append(lang)

    for (category, lang), members in sorted(groups.items()):
        start, size = 0, 0
        for k, i in enumerate(members):
            size += len(rows["text"][i])
            if size >= LONG_CHARS:
                emit(category, lang, members[start:k + 1])
                start, size = k + 1, 0
        if start < len(members):
            emit(category, lang, members[start:])
    order = list(range(len(out["id"])))
    random.Random(0).shuffle(order)
    return {name: [values[i] for i in order] for name, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=("short", "long"))
    parser.add_argument("out", type=Path, help="directory for the Parquet files (made if missing)")
    args = parser.parse_args()
    table = pa.concat_tables([pq.read_table(path, columns=["id", "text", "source", "category", "lang"])
                              for path in corpus_shards()])
    shaped = pa.table((short if args.shape == "short" else long)(table.to_pydict()))
    args.out.mkdir(parents=True, exist_ok=True)
    step = -(-shaped.num_rows // FILES)
    for k in range(FILES):
        pq.write_table(shaped.slice(k * step, step), args.out / f"part-{k:05d}.parquet",
                       row_group_size=1000 if args.shape == "short" else 50, compression="zstd")
    chars = sum(len(text) for text in shaped["text"].to_pylist())
    print(f"{args.out}: {shaped.num_rows:,} documents, {chars / shaped.num_rows:,.0f} characters on average")


if __name__ == "__main__":
    main()
