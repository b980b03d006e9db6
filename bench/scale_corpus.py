"""How bench_scale's corpora are made; bench_scale's docstring says what they are and why.

``copies``: the corpus's copies are made whole, kept between sizes, and a size's corpus is
concatenated in memory, then written.

``fresh``: a corpus of ~140 x corpus-dev (8 GB of text) must be neither held in memory nor made
token by token in Python. corpus-dev is tokenised once (``FreshText``) into one array of entry
numbers (an entry: a token of one language, or what stands between two of its tokens; every
language's tokens ranked and cut into bands), so the substitution of a copy is a permutation of
the entries (a sort of hashed keys within each band), a gather over that array and an Arrow join
per document; only the near-duplicate rows go through Python (``perturb``). Each of
``GENERATOR_PROCESSES`` processes makes a copy, writes it as Parquet files of its own, then takes
the next: only corpus-dev and one copy per process are in memory at a time, whatever the size.
The files are renamed into corpus order (copy 0's, copy 1's, ...) at the end.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
import shutil
import time
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import regex

from common import CATEGORY_NAMES, corpus_shards

COLUMNS = ["id", "text", "source", "category", "lang"]
WHITESPACE = re.compile(r"(\s+)")
MIN_WORDS = 50  # fewer whitespace-separated words: edit characters (Chinese, Japanese, short texts)
# Languages written without spaces between words (dedup's char_ngram_langs, matched on the base
# code): a run of their letters can be a whole clause, so they are substituted by characters, the
# unit dedup shingles them by.
CHAR_LANGS = ("zh", "ja", "ko", "th")
# What a fresh copy substitutes: runs of letters, marks and digits (single characters in CHAR_LANGS;
# regex, of the bench extra, as re's \w would cut a word at its combining marks). Punctuation stays
# where it is, or the rules would see no sentence end (C4 drops a line without one) and brackets
# where the text had none.
WORD = regex.compile(r"([\p{L}\p{M}\p{N}]+)")
GENERATOR_PROCESSES = 2  # the fresh copies of a size, made in parallel (the machine has two cores)


def load_corpus(directory: Path, seed: int) -> pa.Table:
    """corpus-dev in one table with the pipeline's category names, rows in a seeded random order:
    a prefix (a size below 1x) then has the whole corpus's mix of categories and languages."""
    table = pa.concat_tables(pq.read_table(p, columns=COLUMNS) for p in corpus_shards(directory)).combine_chunks()
    categories = [CATEGORY_NAMES.get(c, c) for c in pc.cast(table["category"], pa.string()).to_pylist()]
    table = table.set_column(COLUMNS.index("category"), "category", pa.array(categories, pa.string()))
    return table.take(np.random.default_rng(seed).permutation(table.num_rows))


def perturb(text: str, rng: random.Random, edits: int) -> str:
    """``text`` with ``edits`` random edits, each a swap of two adjacent words or a dropped word;
    of characters when the text has too few words to edit without rewriting most of its shingles.
    Whitespace is kept (a dropped word leaves its neighbours' separators), so lines stay lines."""
    parts = WHITESPACE.split(text)  # words at even positions, separators at odd ones
    words = [i for i in range(0, len(parts), 2) if parts[i]]
    if len(words) >= MIN_WORDS:
        units, positions = parts, words
    else:
        units = list(text)
        positions = [i for i, char in enumerate(units) if not char.isspace()]
    if len(positions) < 2:
        return text
    for _ in range(edits):
        at = rng.randrange(len(positions) - 1)
        if rng.random() < 0.5:
            first, second = positions[at], positions[at + 1]
            units[first], units[second] = units[second], units[first]
        else:
            units[positions[at]] = ""
    return "".join(units)


def corpus_copy(base: pa.Table, copy: int, seed: int, edits: int) -> pa.Table:
    """Copy 0 is the corpus; copy k its documents perturbed (deterministic per seed, k and id), ids
    suffixed ``~c<k>``."""
    if copy == 0:
        return base
    ids = base["id"].to_pylist()
    texts = [perturb(text, random.Random(f"{seed}/{copy}/{doc_id}"), edits)
             for doc_id, text in zip(ids, base["text"].to_pylist())]
    table = base.set_column(COLUMNS.index("id"), "id", pa.array([f"{i}~c{copy}" for i in ids], pa.string()))
    return table.set_column(COLUMNS.index("text"), "text", pa.array(texts, pa.string()))


def text_bytes(table: pa.Table):
    return pc.binary_length(table["text"].cast(pa.binary())).to_numpy(zero_copy_only=False)


def take_bytes(table: pa.Table, megabytes: float) -> pa.Table:
    """The first rows of ``table`` holding about ``megabytes`` MB of text (at least one row)."""
    rows = int((text_bytes(table).cumsum() <= megabytes * 1e6).sum())
    return table.slice(0, max(rows, 1))


def write_files(table: pa.Table, dest: Path, file_mb: float, row_group_rows: int = 1000) -> list[Path]:
    """``table`` as Parquet files of about ``file_mb`` MB of text each, zstd, row groups of
    ``row_group_rows`` rows (ingest cuts a larger file at row-group boundaries into units of about a
    shard, so a shard holds at least one row group)."""
    dest.mkdir(parents=True, exist_ok=True)
    cumulative = text_bytes(table).cumsum()
    parts = max(1, round(float(cumulative[-1]) / 1e6 / file_mb))
    bounds = [0, *[int((cumulative < cumulative[-1] * i / parts).sum()) for i in range(1, parts)], table.num_rows]
    paths = []
    for index, (low, high) in enumerate(zip(bounds, bounds[1:])):
        path = dest / f"part-{index:05d}.parquet"
        pq.write_table(table.slice(low, high - low), path, compression="zstd", row_group_size=row_group_rows)
        paths.append(path)
    return paths


def build_corpus(base: pa.Table, factor: float, dest: Path, cache: dict, args) -> dict:
    """The corpus of ``factor`` x the base's text (see bench_scale's docstring) made by the
    ``args.growth`` generator, written under ``dest``; ``cache`` keeps what the sizes of one run
    share (the perturbed copies, or the tokenised corpus)."""
    started = time.perf_counter()
    # Other benchmarks (bench_dedup_shuffle) pass only seed, edits and file_mb: copies.
    if getattr(args, "growth", "copies") == "fresh":
        info = build_fresh(base, factor, dest, cache, args)
    else:
        info = build_copies(base, factor, dest, cache, args)
    return {**info, "build_s": round(time.perf_counter() - started, 2)}


def row_group_rows(args) -> int:
    """Rows per input row group: ``--row-group-rows``, 1,000 for benchmarks that do not set it."""
    return getattr(args, "row_group_rows", 1000)


def build_copies(base: pa.Table, factor: float, dest: Path, copies: dict[int, pa.Table], args) -> dict:
    """The ``copies`` corpus, built in memory; ``copies`` caches the perturbed copies between sizes."""
    base_mb = float(text_bytes(base).sum()) / 1e6
    left, parts, injected, unchanged = factor * base_mb, [], 0, 0
    for copy in range(math.ceil(factor)):
        if copy not in copies:
            copies[copy] = corpus_copy(base, copy, args.seed, args.edits)
        part = take_bytes(copies[copy], left)
        parts.append(part)
        left -= float(text_bytes(part).sum()) / 1e6
        if copy:
            injected += part.num_rows
            # an edit can only be a no-op on a document of one word or character
            unchanged += sum(a == b for a, b in zip(part["text"].to_pylist(), base["text"].to_pylist()))
    table = pa.concat_tables(parts)
    files = write_files(table, dest, args.file_mb, row_group_rows(args))
    return {"factor": factor, "generator": "copies", "docs": table.num_rows,
            "text_mb": round(float(text_bytes(table).sum()) / 1e6, 2), "files": len(files),
            "near_duplicate_copies": injected, "unchanged_copies": unchanged}


# ----------------------------------------------------------------------------------- fresh copies

def splitmix64(values: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each value (SplitMix64's finaliser; uint64 arithmetic wraps)."""
    z = values + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def digest(text: str, size: int = 8) -> bytes:
    """A hash of ``text`` that every process agrees on (``hash`` is salted per process)."""
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


def ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The concatenated ranges ``starts[i] .. starts[i] + lengths[i] - 1``."""
    ends = np.cumsum(lengths)
    return np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lengths - starts, lengths)


class FreshText:
    """corpus-dev tokenised once for its fresh copies (see bench_scale's docstring).

    Every ``lang`` has a vocabulary of entries: the runs of letters, marks and digits of its texts
    (its tokens; single such characters in ``CHAR_LANGS``) and the runs of everything else between
    them (whitespace, punctuation). The tokens are ranked by count, ties in a seeded random order
    (so that a band of rare tokens mixes documents rather than holding one document's words, which
    would keep that document's vocabulary), and cut into bands of ``band`` consecutive ranks; every
    other entry is a band of its own, so it maps to itself. ``entries`` holds every vocabulary's
    entries, band after band; ``pieces`` is the corpus as entry numbers, document after document
    (``offsets``)."""

    def __init__(self, base: pa.Table, seed: int, band: int, dup_share: float, edits: int):
        self.base, self.seed, self.dup_share, self.edits = base, seed, dup_share, edits
        self.ids = base["id"].to_pylist()
        vocabularies: dict[str, dict[str, int]] = {}
        documents: list[tuple[str, np.ndarray]] = []  # per document: its lang, its entry numbers there
        for lang, text in zip(base["lang"].to_pylist(), base["text"].to_pylist()):
            lang = lang or ""
            numbers = vocabularies.setdefault(lang, {})
            pieces = text if lang.split("-")[0] in CHAR_LANGS else [part for part in WORD.split(text) if part]
            documents.append((lang, np.array([numbers.setdefault(p, len(numbers)) for p in pieces], np.int32)))
        by_vocabulary: dict[str, list[np.ndarray]] = {}
        for lang, numbers in documents:
            by_vocabulary.setdefault(lang, []).append(numbers)
        rng = np.random.default_rng(seed)
        entries: list[str] = []
        bands: list[np.ndarray] = []
        renumber: dict[str, np.ndarray] = {}
        first_band = 0
        for lang in sorted(vocabularies):
            names = list(vocabularies[lang])
            counts = np.bincount(np.concatenate(by_vocabulary[lang]), minlength=len(names))
            token = np.fromiter((WORD.fullmatch(name) is not None for name in names), bool, len(names))
            tokens = np.flatnonzero(token)
            tokens = tokens[np.lexsort((rng.random(len(tokens)), -counts[tokens]))]
            order = np.concatenate([tokens, np.flatnonzero(~token)])
            renumber[lang] = np.empty(len(names), np.int32)
            renumber[lang][order] = np.arange(len(entries), len(entries) + len(names), dtype=np.int32)
            entries.extend(names[i] for i in order)
            token_bands = -(-len(tokens) // band)
            bands.append(first_band + np.concatenate([np.arange(len(tokens)) // band,
                                                      token_bands + np.arange(len(order) - len(tokens))]))
            first_band += token_bands + len(order) - len(tokens)
        self.entries = pa.array(entries, pa.string())
        self.band_of = np.concatenate(bands)
        self.band_start = np.searchsorted(self.band_of, np.arange(first_band + 1))
        self.pieces = np.concatenate([renumber[lang][numbers] for lang, numbers in documents])
        self.offsets = np.concatenate([[0], np.cumsum([len(numbers) for _, numbers in documents])])
        self.vocabularies = len(vocabularies)

    def images(self, copy: int, members: np.ndarray) -> np.ndarray:
        """The image in ``copy`` of every entry of ``members`` (whole bands, ascending): in each
        band, the entry of the i-th rank maps to the entry with the i-th smallest key, a hash of
        (seed, copy, entry), so a band's permutation depends on the seed, the copy and the band."""
        offset = np.uint64(int.from_bytes(digest(f"{self.seed}/fresh/{copy}"), "little"))
        keys = splitmix64(members.astype(np.uint64) + offset)
        return members[np.lexsort((keys, self.band_of[members]))]

    def substituted(self, copy: int, rows: np.ndarray | None = None) -> pa.Array:
        """The texts of ``rows`` (all, when None) with every token replaced by its image in
        ``copy``; only the bands their tokens are in are permuted."""
        if rows is None:
            pieces, offsets = self.pieces, self.offsets
            members = np.arange(len(self.band_of))
        else:
            lengths = self.offsets[rows + 1] - self.offsets[rows]
            pieces, offsets = self.pieces[ranges(self.offsets[rows], lengths)], np.concatenate([[0], np.cumsum(lengths)])
            bands = np.unique(self.band_of[pieces])
            members = ranges(self.band_start[bands], self.band_start[bands + 1] - self.band_start[bands])
        image = np.arange(len(self.band_of), dtype=np.int32)
        image[members] = self.images(copy, members)
        words = self.entries.take(image[pieces])
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), words), "")

    def sources(self, copy: int, rows: np.ndarray) -> np.ndarray:
        """Per row of ``copy`` (>= 1): the earlier copy whose text it near-duplicates, or -1 for a
        fresh row; a hash of (seed, copy, id) makes it one with probability ``dup_share`` and picks
        the earlier copy uniformly."""
        found = np.full(len(rows), -1)
        for at, row in enumerate(rows.tolist()):
            hashed = digest(f"{self.seed}/{copy}/{self.ids[row]}", 16)
            if int.from_bytes(hashed[:8], "little") < self.dup_share * 2 ** 64:
                found[at] = int.from_bytes(hashed[8:], "little") % copy
        return found

    def texts(self, copy: int, rows: np.ndarray | None = None) -> pa.Array:
        """The texts ``rows`` (all, when None) have in ``copy``: corpus-dev's in copy 0; later, a
        fresh row's substituted, a near-duplicate row's text in its source copy (made the same way,
        so a near-duplicate of a near-duplicate is one too) with ``edits`` edits."""
        every = rows is None
        rows = np.arange(self.base.num_rows) if every else rows
        if copy == 0:
            return self.base["text"].take(rows)
        texts = self.substituted(copy, None if every else rows)  # near-duplicate rows replaced below
        sources = self.sources(copy, rows)
        near = np.flatnonzero(sources >= 0)
        if not len(near):
            return texts
        edited = [None] * len(near)
        for source in np.unique(sources[near]).tolist():
            at = np.flatnonzero(sources[near] == source)
            for i, text in zip(at.tolist(), self.texts(source, rows[near[at]]).to_pylist()):
                doc_id = self.ids[rows[near[i]]]
                edited[i] = perturb(text, random.Random(f"{self.seed}/{copy}/{doc_id}"), self.edits)
        mask = np.zeros(len(rows), bool)
        mask[near] = True
        return pc.replace_with_mask(texts, pa.array(mask), pa.array(edited, pa.string()))

    def copy(self, copy: int) -> tuple[pa.Table, np.ndarray]:
        """Copy ``copy`` of the corpus (ids suffixed ``~f<k>``, ``~f<k>d`` on near-duplicate rows)
        and which of its rows are near-duplicates."""
        if copy == 0:
            return self.base, np.zeros(self.base.num_rows, bool)
        near = self.sources(copy, np.arange(self.base.num_rows)) >= 0
        ids = [f"{doc_id}~f{copy}{'d' if dup else ''}" for doc_id, dup in zip(self.ids, near.tolist())]
        table = self.base.set_column(COLUMNS.index("id"), "id", pa.array(ids, pa.string()))
        return table.set_column(COLUMNS.index("text"), "text", self.texts(copy)), near


_FRESH: FreshText | None = None  # a generator process's tokenised corpus (``use_fresh``)


def use_fresh(fresh: FreshText) -> None:
    global _FRESH
    _FRESH = fresh


def write_fresh_copy(job: tuple[int, float, Path, float, int]) -> dict:
    """Copy ``copy`` of the fresh corpus (its first rows holding ``share`` of its text, when
    ``share`` < 1), written as ``write_files`` writes it in a folder of its own under ``dest``; its
    counts and files."""
    copy, share, dest, file_mb, group_rows = job
    started = time.perf_counter()
    table, near = _FRESH.copy(copy)
    if share < 1:
        table = take_bytes(table, share * float(text_bytes(table).sum()) / 1e6)
        near = near[:table.num_rows]
    files = write_files(table, dest / f"copy-{copy:05d}", file_mb, group_rows)
    return {"copy": copy, "docs": table.num_rows, "near": int(near.sum()), "bytes": int(text_bytes(table).sum()),
            "files": files, "seconds": round(time.perf_counter() - started, 3)}


def build_fresh(base: pa.Table, factor: float, dest: Path, cache: dict, args) -> dict:
    """The ``fresh`` corpus, copy by copy: whole copies 0 .. floor(factor) - 1, then the prefix of
    the next one holding the rest of ``factor``'s share of its own text. ``cache`` keeps the
    tokenised corpus between sizes."""
    started = time.perf_counter()
    if "fresh" not in cache:
        cache["fresh"] = FreshText(base, args.seed, args.band, args.dup_share, args.edits)
    fresh = cache["fresh"]
    tokenise_s = time.perf_counter() - started
    whole = math.floor(factor)
    jobs = [(copy, 1.0, dest, args.file_mb, row_group_rows(args)) for copy in range(whole)]
    if factor > whole:
        jobs.append((whole, factor - whole, dest, args.file_mb, row_group_rows(args)))
    if len(jobs) > 1:
        with get_context("spawn").Pool(min(GENERATOR_PROCESSES, len(jobs)), use_fresh, (fresh,)) as pool:
            made = pool.map(write_fresh_copy, jobs, chunksize=1)
    else:
        use_fresh(fresh)
        made = [write_fresh_copy(jobs[0])]
    files = [path for result in made for path in result["files"]]
    for index, path in enumerate(files):  # corpus order: copy 0's files, copy 1's, ...
        path.rename(dest / f"part-{index:05d}.parquet")
    for result in made:
        shutil.rmtree(dest / f"copy-{result['copy']:05d}")
    later = [result for result in made if result["copy"]]
    return {"factor": factor, "generator": "fresh", "dup_share": args.dup_share, "band": args.band,
            "docs": sum(result["docs"] for result in made),
            "text_mb": round(sum(result["bytes"] for result in made) / 1e6, 2), "files": len(files),
            "fresh_docs": sum(result["docs"] - result["near"] for result in later),
            "near_duplicate_copies": sum(result["near"] for result in later),
            "vocabularies": fresh.vocabularies, "tokenise_s": round(tokenise_s, 2),
            "copy_s": [result["seconds"] for result in made]}
