"""Dedup: datasketch-identical signatures, exact / paragraph / near-duplicate removal as specified,
identical results across workers, shard splits and Ray, and resume after a real SIGKILL."""
from __future__ import annotations

import os
import pickle
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash, MinHashLSH
from datasketch import minhash as datasketch_minhash
from datasketch.hashfunc import sha1_hash32
from datasketch.lsh import _optimal_param

from conftest import REPO
from pipeline.stage import PrepareContext
from stages.dedup import Dedup, DedupConfig, kernels, minhash
from stages.dedup.config import lsh_params
from stages.unicode_fold import COMPOSES_WITH_PREVIOUS

WORDS = ("river mountain quietly seven library orange theory garden planet silver morning window "
         "history market engine forest number bridge letter summer winter station harbor music "
         "island report signal village").split()


def prose(seed: int, words: int = 120) -> str:
    """Deterministic English-like text, distinct per seed (random word order from a fixed list)."""
    rng = random.Random(seed)
    sentences, current = [], []
    for _ in range(words):
        current.append(rng.choice(WORDS))
        if len(current) >= rng.randint(8, 14):
            sentences.append(" ".join(current).capitalize() + ".")
            current = []
    return " ".join(sentences + ([" ".join(current) + "."] if current else []))


def edit_words(text: str, rate: float, seed: int) -> str:
    rng = random.Random(seed)
    words = text.split(" ")
    return " ".join(rng.choice(WORDS) if rng.random() < rate else w for w in words)


def doc(doc_id: str, text: str, category: str = "web", **extra) -> dict:
    return {"id": doc_id, "text": text, "source": "test", "category": category, "meta": "{}", **extra}


def write_shards(directory: Path, docs: list[dict], shards: int = 1) -> dict[str, str]:
    """Docs split into ``shards`` consecutive Parquet files; shard name -> path, in order."""
    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(docs), shards + 1).astype(int)
    inputs = {}
    for index in range(shards):
        path = directory / f"part-{index:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(docs[bounds[index]:bounds[index + 1]]), path, row_group_size=7)
        inputs[path.stem] = str(path)
    return inputs


def in_process(fn, items):
    return [fn(item) for item in items]


def run(inputs: dict[str, str], scratch: Path, map_fn=in_process, **config) -> dict[str, dict]:
    """Prepare, then process every shard (as the runner does); every row's outcome by id."""
    stage = Dedup(DedupConfig(**config))
    stage.prepare(PrepareContext(inputs=inputs, scratch=str(scratch), filesystem=pafs.LocalFileSystem(),
                                 map=map_fn, log=lambda _: None))
    worker = Dedup(DedupConfig(**config))  # a fresh instance, as in a worker process
    outcome = {}
    for shard, path in inputs.items():
        worker.begin_shard(shard, str(scratch), pafs.LocalFileSystem())
        table = pq.read_table(path)
        output = worker.process(table)
        assert output.kept.num_rows + output.removed.num_rows == table.num_rows
        for side in (output.kept, output.removed):
            for row in side.to_pylist():
                outcome[row["id"]] = {k: row.get(k) for k in ("text", "reason", "dup_cluster", "dup_kept_id")}
    return outcome


# ----------------------------------------------------------------------------- MinHash and LSH

@pytest.mark.parametrize("by_chars", [False, True])
def test_signatures_equal_datasketch(by_chars):
    texts = [prose(1), "Short one.", "", "!!! ...", "机器学习是人工智能的一个分支，它使计算机能够从数据中学习。",
             prose(2, words=400), "中文", "Ünïcödé façade, naïve café — déjà vu 2024."]
    simplified = minhash.simplify(pa.array(texts))
    token_hashes, counts = minhash.tokens(simplified, by_chars)
    values, per_doc = minhash.shingles(token_hashes, counts, 5)
    signatures = minhash.MinHasher(128, seed=7).signatures(values, per_doc)
    for row, simple in enumerate(simplified.to_pylist()):
        tokens = list(simple.replace(" ", "")) if by_chars else simple.split()
        expected = MinHash(num_perm=128, seed=7, hashfunc=minhash.shingle_hash)
        expected.update_batch([tuple(tokens[i:i + 5]) for i in range(max(len(tokens) - 4, 1))] if tokens else [])
        assert np.array_equal(signatures[row], expected.hashvalues), texts[row]


def test_permutations_equal_datasketch_with_its_default_hash():
    shingles = [[f"shingle {i} {j}".encode() for j in range(n)] for i, n in enumerate((1, 3, 50, 9000))]
    values = np.array([sha1_hash32(s) for group in shingles for s in group], dtype=np.uint32)
    signatures = minhash.MinHasher(256, seed=1).signatures(values, np.array([len(g) for g in shingles]))
    for row, group in enumerate(shingles):
        expected = MinHash(num_perm=256)
        expected.update_batch(group)
        assert np.array_equal(signatures[row], expected.hashvalues)


def test_lsh_shape_equals_datasketch():
    # Worked out without datasketch (stages/dedup/config.py): the choice of its _optimal_param.
    grid = [(threshold / 10, num_perm, weight) for threshold in range(1, 10) for num_perm in (16, 128, 256)
            for weight in (0.5, 0.9)]
    for threshold, num_perm, weight in grid + [(0.33, 7, 0.2), (0.7, 1024, 0.9)]:
        assert lsh_params(threshold, num_perm, weight) == _optimal_param(threshold, num_perm, 1 - weight, weight)
    for threshold, num_perm, weight in ((0.7, 128, 0.5), (0.7, 128, 0.9), (0.85, 64, 0.5)):
        lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=(1 - weight, weight))
        config = DedupConfig(threshold=threshold, num_perm=num_perm, false_negative_weight=weight)
        assert config.lsh_shape == (lsh.b, lsh.r)
        # It travels with the config to the workers, which never work it out again.
        assert pickle.loads(pickle.dumps(config.with_partitions(40))).lsh_shape == (lsh.b, lsh.r)
    assert DedupConfig(bands=4, rows=8).lsh_shape == (4, 8)


def test_finalizer_and_permutations_written_out_equal_datasketchs():
    rng = np.random.default_rng(3)
    values = rng.integers(0, 2**64 - 1, 1000, dtype=np.uint64, endpoint=True)
    assert np.array_equal(minhash.fmix64(values), datasketch_minhash._fmix(values, 64))
    assert kernels.FMIX_CONSTANTS == {width: tuple(int(c) for c in constants)
                                      for width, constants in datasketch_minhash._FMIX_CONSTANTS.items()}
    for num_perm, seed in ((128, 1), (7, 0), (256, 12345)):
        a, b = minhash.affine32_permutations(num_perm, seed)
        expected = MinHash(num_perm=num_perm, seed=seed).permutations
        assert a.dtype == b.dtype == expected.dtype and np.array_equal(np.array([a, b]), expected)


def test_reading_a_dedup_config_imports_neither_datasketch_nor_scipy():
    # The driver reads the config before Ray starts, a worker imports the stage's modules and gets it
    # pickled: datasketch and scipy.integrate would cost each 0.5 s.
    config = pickle.dumps(DedupConfig())
    code = ("import pickle, sys; import stages.dedup; from stages.dedup.config import DedupConfig; "
            f"c = pickle.loads({config!r}); assert c.lsh_shape == (20, 6) and DedupConfig(threshold=0.8).lsh_shape == (14, 9); "
            "print(sorted(m for m in sys.modules if m.startswith(('datasketch', 'scipy'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "[]"


def test_band_keys_collide_exactly_when_rows_agree():
    rng = np.random.default_rng(0)
    signatures = rng.integers(0, 2**32, size=(3, 12), dtype=np.uint64).astype(np.uint32)
    signatures[1, :4] = signatures[0, :4]  # doc 1 shares band 0 (rows 0-3) with doc 0
    keys = minhash.band_keys(signatures, bands=3, rows=4)
    assert keys[0, 0] == keys[1, 0]
    assert keys[0, 1] != keys[1, 1] and keys[0, 2] != keys[1, 2]
    assert len(set(keys.reshape(-1).tolist())) == keys.size - 1  # no other collision


CHINESE_WORDS = ("我们 今天 城市 历史 发展 经济 文化 学校 学生 老师 研究 方法 问题 社会 政府 公司 市场 技术 "
                 "科学 自然 环境 保护 河流 山区 农村 工业 交通 铁路 图书馆 博物馆 音乐 电影 报告 数据").split()


def chinese_prose(seed: int, words: int = 150) -> str:
    """Deterministic Chinese-like text without spaces, sentences ending in 。"""
    rng = random.Random(seed)
    sentences = ["".join(rng.choice(CHINESE_WORDS) for _ in range(rng.randint(6, 10))) + "。"
                 for _ in range(words // 8)]
    return "".join(sentences)


def respaced(text: str, width: int = 12, indent: int = 40) -> str:
    """``text`` laid out as a fixed-width page: short lines, each indented by ``indent`` spaces."""
    return "\n".join(" " * indent + text[i:i + width] for i in range(0, len(text), width))


def test_whitespace_does_not_count_in_the_script_share():
    original = chinese_prose(1)
    copy = respaced(original)
    # Most characters of the copy are spaces, but none of its visible ones.
    assert len(copy) > 3 * len(original)
    assert minhash.char_shingled(pa.array([original, copy, "  An   English\n\n sentence. "]), None, ()).tolist() == \
        [True, True, False]


def test_whitespace_edited_chinese_copy_is_a_near_duplicate_without_lang(tmp_path):
    original = chinese_prose(2)
    docs = [doc("zh-page", original), doc("zh-other", chinese_prose(3)), doc("zh-respaced", respaced(original))]
    out = run(write_shards(tmp_path / "in", docs), tmp_path / "scratch", paragraphs=False)
    assert out["zh-respaced"]["reason"] == "near_duplicate" and out["zh-respaced"]["dup_kept_id"] == "zh-page"
    assert out["zh-page"]["reason"] is None and out["zh-other"]["reason"] is None


def test_chinese_is_shingled_by_characters_with_or_without_lang():
    texts = pa.array(["这是一个中文句子，没有空格。", "An English sentence.", "日本語の文章です。"])
    assert minhash.char_shingled(texts, None, ()).tolist() == [True, False, True]
    langs = pa.array(["zh-Hant", "en", "fr"])
    assert minhash.char_shingled(texts, langs, ("zh", "ja")).tolist() == [True, False, False]


# ----------------------------------------------------------------------------- behaviour

def test_exact_duplicates_removed_with_first_kept(tmp_path):
    original = prose(10)
    docs = [doc("a", original), doc("b", prose(11)), doc("c", "  " + original.upper().replace(" ", "\n  ")),
            doc("d", original)]
    out = run(write_shards(tmp_path / "in", docs), tmp_path / "scratch", near_duplicates=False, paragraphs=False)
    assert out["a"]["reason"] is None and out["b"]["reason"] is None
    for copy in ("c", "d"):
        assert out[copy] | {"text": None} == {"text": None, "reason": "exact_duplicate", "dup_cluster": "a",
                                              "dup_kept_id": "a"}
    assert out["a"]["dup_cluster"] == "a" and out["a"]["dup_kept_id"] is None
    assert out["b"]["dup_cluster"] is None


def test_repeated_paragraphs_removed_from_later_documents(tmp_path):
    shared = "This paragraph is boilerplate that several documents repeat word for word."
    docs = [
        doc("first", f"{prose(20)}\n{shared}\nReferences\n{shared}"),
        doc("second", f"References\n{prose(21)}\n{shared}\n{prose(22, 30)}"),
        doc("third", f"{shared}\nShort remainder."),
        doc("code", f"def f():\n{shared}\n    return 1", category="code"),
    ]
    out = run(write_shards(tmp_path / "in", docs), tmp_path / "scratch")
    # first occurrence stays, repeats inside the first document too
    assert out["first"]["text"] == docs[0]["text"] and out["first"]["reason"] is None
    # later document loses it; "References" is shorter than paragraph_min_chars and stays
    assert out["second"]["text"] == f"References\n{prose(21)}\n{prose(22, 30)}"
    assert out["third"]["reason"] == "too_short_after_paragraph_dedup"
    assert out["third"]["text"] == docs[2]["text"]  # removed rows keep their text as it came in
    assert out["code"]["text"] == docs[3]["text"]  # paragraph_skip_categories


def test_paragraph_exemptions_and_minimum_length(tmp_path):
    notice = "Licensed under the Creative Commons Attribution-ShareAlike License."
    docs = [doc("x", f"{prose(30)}\n{notice}"), doc("y", f"{prose(31)}\n{notice}")]
    inputs = write_shards(tmp_path / "in", docs)
    assert run(inputs, tmp_path / "s1", paragraph_exempt=(notice.upper(),))["y"]["text"] == docs[1]["text"]
    assert run(inputs, tmp_path / "s2", paragraph_min_chars=len(notice) + 1)["y"]["text"] == docs[1]["text"]
    assert run(inputs, tmp_path / "s3")["y"]["text"] == prose(31)


def test_paragraph_of_a_removed_duplicate_does_not_count(tmp_path):
    body = prose(40, 200)
    docs = [doc("dup-1", body + "\nA paragraph only the duplicates have, long enough to count."),
            doc("dup-2", body + "\nA paragraph only the duplicates have, long enough to count."),
            doc("keeper", prose(41) + "\n" + body.split(". ")[0] + ".")]
    out = run(write_shards(tmp_path / "in", docs), tmp_path / "scratch")
    assert out["dup-2"]["reason"] == "exact_duplicate"
    assert out["keeper"]["text"] == docs[2]["text"]


def test_near_duplicates_clustered_and_keep_strategies(tmp_path):
    base = prose(50, 300)
    docs = [doc("orig", base, quality_score=0.2), doc("other", prose(51, 300), quality_score=0.9),
            doc("edit", edit_words(base, 0.01, 1), quality_score=0.8),
            doc("long", base + " " + prose(52, 20), quality_score=0.1),
            doc("far", edit_words(base, 0.5, 2), quality_score=0.99)]
    inputs = write_shards(tmp_path / "in", docs, shards=2)
    first = run(inputs, tmp_path / "first", paragraphs=False)
    assert {k for k, v in first.items() if v["reason"]} == {"edit", "long"}
    assert all(first[k]["reason"] == "near_duplicate" and first[k]["dup_kept_id"] == "orig" for k in ("edit", "long"))
    assert {first[k]["dup_cluster"] for k in ("orig", "edit", "long")} == {"orig"}
    assert first["far"]["reason"] is None and first["far"]["dup_cluster"] is None
    longest = run(inputs, tmp_path / "longest", paragraphs=False, keep="longest")
    assert longest["long"]["reason"] is None and longest["orig"]["dup_kept_id"] == "long"
    best = run(inputs, tmp_path / "quality", paragraphs=False, keep="quality")
    assert best["edit"]["reason"] is None and best["orig"]["dup_kept_id"] == "edit"
    assert best["orig"]["dup_cluster"] == "orig"  # the cluster id stays its first document


def edit_each_line(text: str, seed: int) -> str:
    """One word of every line replaced by another: a near-duplicate whose lines are all new."""
    rng = random.Random(seed)
    lines = []
    for line in text.split("\n"):
        words = line.split(" ")
        position = len(words) // 2
        words[position] = next(w for w in rng.sample(WORDS, 3) if w != words[position].lower().strip("."))
        lines.append(" ".join(words))
    return "\n".join(lines)


def assert_clusters_keep_a_kept_document(out: dict[str, dict]) -> None:
    """Removed rows point only at kept documents, and each cluster keeps exactly one document
    unless every member of it was removed for its own reason (too short)."""
    kept = {doc_id for doc_id, row in out.items() if row["reason"] is None}
    for doc_id, row in out.items():
        if row["dup_kept_id"] is not None:
            assert row["reason"] in ("exact_duplicate", "near_duplicate") and row["dup_kept_id"] in kept, doc_id
    clusters: dict[str, list[str]] = {}
    for doc_id, row in out.items():
        if row["dup_cluster"] is not None:
            clusters.setdefault(row["dup_cluster"], []).append(doc_id)
    for members in clusters.values():
        staying = [m for m in members if m in kept]
        own = all(out[m]["reason"] == "too_short_after_paragraph_dedup" for m in members)
        assert len(staying) == 1 or (not staying and own), {m: out[m]["reason"] for m in members}


def test_a_keeper_left_too_short_by_paragraph_dedup_is_replaced(tmp_path):
    shared = "\n".join(prose(70 + i, 80) for i in range(5))  # five long paragraphs
    unique = "\n".join(prose(80 + i, 80) for i in range(12))
    other = "\n".join(prose(90 + i, 80) for i in range(5))
    docs = [
        # Earlier and not similar to any other: its paragraphs stay here and leave the others.
        doc("source", f"{unique}\n{shared}\n{other}"),
        doc("keeper", f"{shared}\nA short line of its own."),  # first of its cluster; too short after
        doc("edited", edit_each_line(shared, 1)),  # a near duplicate whose paragraphs are all new
        doc("copy", f"{shared}\nAnother short line."),  # a near duplicate, too short too
        doc("alone-1", f"{other}\nShort one."), doc("alone-2", f"{other}\nShort two."),  # all too short
    ]
    inputs = write_shards(tmp_path / "in", docs, shards=2)
    out = run(inputs, tmp_path / "scratch", partitions=3)
    assert {k: out[k]["dup_cluster"] for k in ("keeper", "edited", "copy")} == dict.fromkeys(
        ("keeper", "edited", "copy"), "keeper")
    assert out["keeper"]["reason"] == "too_short_after_paragraph_dedup" and out["keeper"]["dup_kept_id"] is None
    assert out["edited"]["reason"] is None and out["edited"]["text"] == docs[2]["text"]
    assert out["copy"]["reason"] == "near_duplicate" and out["copy"]["dup_kept_id"] == "edited"
    # A cluster whose members are all too short keeps none, and none points at another.
    assert out["alone-1"]["dup_cluster"] == out["alone-2"]["dup_cluster"] == "alone-1"
    for name in ("alone-1", "alone-2"):
        assert out[name]["reason"] == "too_short_after_paragraph_dedup" and out[name]["dup_kept_id"] is None
    assert out["source"]["reason"] is None
    assert_clusters_keep_a_kept_document(out)
    assert out == run(inputs, tmp_path / "again")  # rounds are deterministic


def test_keep_quality_needs_the_column(tmp_path):
    inputs = write_shards(tmp_path / "in", [doc("a", prose(1))])
    with pytest.raises(ValueError, match="quality_score"):
        run(inputs, tmp_path / "scratch", keep="quality")


def test_verify_drops_candidates_below_threshold(tmp_path):
    base = prose(60, 400)
    docs = [doc("orig", base), doc("edit", edit_words(base, 0.12, 3))]  # Jaccard about 0.45
    inputs = write_shards(tmp_path / "in", docs)
    loose = dict(paragraphs=False, exact_documents=False, bands=64, rows=1, num_perm=64)
    assert run(inputs, tmp_path / "unverified", verify=False, **loose)["edit"]["reason"] == "near_duplicate"
    assert run(inputs, tmp_path / "verified", verify=True, **loose)["edit"]["reason"] is None


def test_process_accepts_an_empty_batch(tmp_path):
    inputs = write_shards(tmp_path / "in", [doc("a", prose(1))])
    stage = Dedup(DedupConfig())
    stage.prepare(PrepareContext(inputs=inputs, scratch=str(tmp_path / "scratch"),
                                 filesystem=pafs.LocalFileSystem(), map=in_process, log=lambda _: None))
    stage.begin_shard("part-00000", str(tmp_path / "scratch"), pafs.LocalFileSystem())
    output = stage.process(pq.read_table(inputs["part-00000"]).slice(0, 0))
    assert output.kept.num_rows == output.removed.num_rows == 0
    assert output.kept.schema.field("dup_cluster").type == pa.string()
    assert output.removed.schema.field("dup_kept_id").type == pa.string()


def test_config_rejects_half_given_bands():
    with pytest.raises(ValueError, match="both bands and rows"):
        DedupConfig(bands=10)
    with pytest.raises(ValueError, match="exceeds num_perm"):
        DedupConfig(bands=20, rows=10, num_perm=128)


# ----------------------------------------------------------------------------- determinism, Ray, resume

@pytest.fixture(scope="module")
def real_docs(shared_data) -> list[dict]:
    """Real corpus-dev documents with planted exact copies, edited copies and shared paragraphs."""
    table = pq.read_table(shared_data / "corpus-dev" / "part-00003.parquet").slice(0, 240)
    docs = [doc(r["id"], r["text"], r["category"], lang=r["lang"]) for r in table.to_pylist()]
    rng = random.Random(5)
    for i, source in enumerate(rng.sample(docs[:200], 30)):
        kind = i % 3
        text = source["text"] if kind == 0 else edit_words(source["text"], 0.02, i) if kind == 1 else \
            source["text"] + "\nShared footer paragraph that appears in many web pages of the same site."
        docs.insert(rng.randrange(len(docs) + 1), doc(f"copy-{i}", text, source["category"], lang=source["lang"]))
    return docs


def test_same_result_for_any_shard_split(real_docs, tmp_path):
    one = run(write_shards(tmp_path / "one", real_docs, 1), tmp_path / "s1")  # auto: 1 partition
    five = write_shards(tmp_path / "five", real_docs, 5)
    assert one == run(five, tmp_path / "s5", partitions=3) == run(five, tmp_path / "s5-16", partitions=16)
    reasons = {v["reason"] for v in one.values()}
    assert {"exact_duplicate", "near_duplicate"} <= reasons
    assert_clusters_keep_a_kept_document(one)
    texts = {d["id"]: d["text"] for d in real_docs}
    assert any(v["reason"] is None and v["text"] != texts[k] for k, v in one.items())  # paragraphs dropped


def test_ray_with_two_workers_equals_one_process(real_docs, ray_cluster, tmp_path):
    import ray

    def ray_map(fn, items):
        remote = ray.remote(num_cpus=1)(fn)
        return ray.get([remote.remote(item) for item in items])

    inputs = write_shards(tmp_path / "in", real_docs, 4)
    assert run(inputs, tmp_path / "ray", map_fn=ray_map, partitions=4) == run(inputs, tmp_path / "local")


KILLED_RUN = textwrap.dedent("""
    import sys
    import pyarrow.fs as pafs
    from pipeline.stage import PrepareContext
    from stage_fixtures import dying_map
    from stages.dedup import Dedup, DedupConfig

    inputs, scratch, survive = eval(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    Dedup(DedupConfig(partitions=4)).prepare(PrepareContext(inputs=inputs, scratch=scratch,
        filesystem=pafs.LocalFileSystem(), map=dying_map(survive), log=lambda _: None))
""")


# 4 shards, 4 partitions, one worker: a task per shard for signatures (0-3), then two tasks of two
# items per step (``steps.MIN_GROUP_ITEMS``): 4-5 candidates, 6-7 attach, 8-9 verify, 10 clusters,
# 11-12 paragraphs, 13-14 paragraph removals, 15-16 short keepers, 17-18 decisions.
@pytest.mark.parametrize("survive", [2, 9, 10, 13])
def test_resumes_after_sigkill(real_docs, tmp_path, survive):
    inputs = write_shards(tmp_path / "in", real_docs, 4)
    scratch = tmp_path / "scratch"
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, repr(inputs), str(scratch), str(survive)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"})
    assert killed.returncode == -signal.SIGKILL
    finished_before = {p: p.stat().st_mtime_ns for p in scratch.rglob("*.parquet")}
    assert len(finished_before) >= survive

    assert run(inputs, scratch, partitions=4) == run(inputs, tmp_path / "fresh")
    redone = [p for p, mtime in finished_before.items() if p.stat().st_mtime_ns != mtime]
    assert not redone, f"finished tasks were redone: {redone}"


def test_auto_partitions_follow_the_shard_count(tmp_path):
    """``partitions: auto`` is one partition per 4 shards, 1 to 16, fixed by the inputs (so a resumed
    run finds the partitions its scratch was written with); a number is kept as given."""
    import pyarrow.fs as pafs

    from stages.dedup.steps import make_job

    def partitions(shards: int, **config) -> int:
        inputs = {f"part-{i:05d}": f"/in/part-{i:05d}.parquet" for i in range(shards)}
        return make_job(DedupConfig(**config), inputs, str(tmp_path / f"{shards}-{config}"),
                        pafs.LocalFileSystem()).config.partitions

    assert [partitions(n) for n in (1, 4, 5, 17, 63, 64, 2_001)] == [1, 1, 2, 5, 16, 16, 16]
    assert partitions(2_001, partitions=3) == 3 and partitions(1, partitions=16) == 16
    with pytest.raises(ValueError, match="'auto' or at least 1"):
        DedupConfig(partitions=0)


def test_a_dedup_task_carries_the_same_few_bytes_whatever_the_number_of_shards(tmp_path):
    """The job pickled with every task names its shard lists by file (``pipeline.listing.Listing``): its size
    does not grow with the corpus, and a worker that never saw the lists reads them from scratch."""
    import pickle

    import pyarrow.fs as pafs

    from pipeline.listing import forget_listings
    from stages.dedup.steps import make_job

    sizes = {}
    for shards in (10, 10_000):
        inputs = {f"part-{i:05d}": f"/run/04_quality/kept/part-{i:05d}.parquet" for i in range(shards)}
        job = make_job(DedupConfig(), inputs, str(tmp_path / str(shards)), pafs.LocalFileSystem())
        payload = pickle.dumps((job, 3))
        sizes[shards] = len(payload)
        forget_listings()  # as in a fresh worker process
        received, _ = pickle.loads(payload)
        assert len(received.shards) == shards and received.shards[3] == "part-00003"
        assert received.inputs[shards - 1] == f"/run/04_quality/kept/part-{shards - 1:05d}.parquet"
    assert sizes[10_000] - sizes[10] < 16 and sizes[10_000] < 2_000, sizes


# ----------------------------------------------------------------------------- what CPU savings rely on

def test_nfc_tables_agree_with_unicodedata():
    """``text.nfc`` hands utf8proc only strings holding a character it may change: the characters it
    lets pass by their lead byte, and every character below U+0300, must be stable, and its list of
    class-0 characters that compose with the one before them must hold all unicodedata knows."""
    import unicodedata

    from stages.dedup import text

    seconds = set()
    for point in range(0x110000):
        mapping = unicodedata.decomposition(chr(point))
        if mapping and not mapping.startswith("<") and len(mapping.split()) == 2:
            second = int(mapping.split()[1], 16)
            if unicodedata.combining(chr(second)) == 0:
                seconds.add(second)
    seconds |= set(range(0x1161, 0x1176)) | set(range(0x11A8, 0x11C3))  # Hangul V and T jamo (algorithmic)
    assert seconds <= COMPOSES_WITH_PREVIOUS
    stable = list(range(0x300))
    for lead in np.flatnonzero(text._NFC_STABLE_LEAD).tolist():
        low = (lead & 0x1F) << 6 if lead < 0xE0 else (lead & 0x0F) << 12
        stable += range(low, low + (64 if lead < 0xE0 else 4096))
    assert not [hex(point) for point in stable if text._nfc_unstable(point)]
    assert all(text._nfc_unstable(point) for point in (0x0301, 0x0378, 0x0958, 0x09BE, 0x1161, 0x212B, 0x1D15E))


def test_nfc_equals_utf8proc():
    import pyarrow.compute as pc

    from stages.dedup import text

    # Bases that compose with a following character, then every code point after one of them, so
    # that each character is seen where composition or reordering could reach it.
    bases = ["a", "e\u0301", "\u1100", "\uac00", "\u0915", "\u09c7", "\u0b47", "\u0bc6", "\u0cc6", "\u0d46",
             "\u0dd9", "\u1025", "\u1b05", "\U00011131", "\U00011347", "\U000114b9", "\U000115b8", "\U00011935"]
    points = [p for p in range(0x110000) if not 0xD800 <= p <= 0xDFFF]
    strings = [bases[p % len(bases)] + chr(p) + "x" for p in points]
    # ... and random mixes of stable and unstable characters, in texts and lines of any length.
    pool = [chr(p) for p in (0x41, 0x61, 0x20, 0x0A, 0xE9, 0x0300, 0x0301, 0x0327, 0x0344, 0x0430, 0x0306, 0x0439,
                             0x1100, 0x1161, 0x11A8, 0xAC00, 0xAC01, 0x212B, 0x2126, 0x2019, 0x3001, 0x3099, 0x304B,
                             0x0958, 0x0915, 0x093C, 0x09C7, 0x09BE, 0x0E01, 0x0E48, 0x0F73, 0x4E2D, 0xFF0C,
                             0x0378, 0xE000, 0x1F600, 0x1D15E, 0x1D165, 0x10FFFD)]
    rng = random.Random(7)
    strings += ["".join(rng.choice(pool) for _ in range(rng.randint(0, 12))) for _ in range(20_000)]
    strings += ["plain ascii", "中文和한국어와 Кириллица", ""]
    array = pa.array(strings, pa.string())
    for part in (array, array.slice(1000, 50_000), array.slice(0, 3000).cast(pa.large_string()),
                 pa.array(["nothing to change", "中文"], pa.string())):
        assert text.nfc(part).equals(pc.utf8_normalize(part, "NFC"))


def test_sorted_scratch_files_have_row_groups_worth_reading_and_no_dictionaries(tmp_path):
    """A small map file is one row group (one per target made footers larger than the rows), a large
    one about one per target; its columns are LZ4 without dictionary pages (hashes and document
    numbers, which a dictionary cannot shorten); every target reads exactly its key range either way."""
    from stages.dedup import shuffle

    fs = pafs.LocalFileSystem()
    rng = np.random.default_rng(5)
    for rows, groups in ((300, 1), (200_000, 40)):  # 16 bytes a row: 4.8 kB, and 3.2 MB over 40 targets
        table = pa.table({"key": pa.array(rng.integers(0, 40, rows), pa.int64()),
                          "value": pa.array(rng.integers(0, 1 << 62, rows), pa.int64())})
        path = str(tmp_path / f"{rows}.parquet")
        shuffle.write_sorted(scratch_job(fs), path, table, 40)
        metadata = pq.ParquetFile(path).metadata
        assert metadata.num_row_groups == groups
        column = metadata.row_group(0).column(1)
        assert column.compression.startswith("LZ4") and not column.has_dictionary_page
        keys, values = table["key"].to_numpy(), table["value"].to_numpy()
        for job in (scratch_job(fs), scratch_job(fs, run=f"kept-{rows}")):  # read as before, and kept
            for target in range(40):
                got = shuffle.read_range(job, path, target, target + 1)
                assert sorted(got["value"].to_pylist()) == sorted(values[keys == target].tolist())


def scratch_job(fs: pafs.FileSystem, run: str = "", read_cache_mb: int = 128) -> SimpleNamespace:
    """What the scratch readers and writers use of a ``shuffle.Job``; with a ``run``, a process keeps
    the files it read (``stages.dedup.kept_reads``)."""
    return SimpleNamespace(filesystem=fs, run=run, config=DedupConfig(shuffle={"read_cache_mb": read_cache_mb}))


def test_scratch_reads_equal_the_storage_layer(tmp_path, monkeypatch):
    """``shuffle.read_table`` and ``read_range`` read what ``storage.read_parquet`` and a filter with
    Arrow's kernels read, cut into the same chunks, whether the file is read whole or not."""
    import pyarrow.compute as pc

    from pipeline import storage
    from stages.dedup import shuffle

    rng = np.random.default_rng(3)
    keys = np.sort(rng.integers(0, 40, 5000))
    table = pa.table({"key": pa.array(keys, pa.int64()), "value": rng.integers(0, 1 << 60, 5000).astype(np.uint64),
                      "name": pa.array([f"n{v}" for v in rng.integers(0, 99, 5000)])})
    path = str(tmp_path / "file.parquet")
    fs = pafs.LocalFileSystem()
    one_group, unsorted = str(tmp_path / "one-group.parquet"), str(tmp_path / "unsorted.parquet")
    shuffle.write_row_groups(scratch_job(fs), path, table, [700, 1400, 3000, 4999])
    shuffle.write_row_groups(scratch_job(fs), one_group, table, [])  # kept: read by binary search
    shuffle.write_row_groups(scratch_job(fs), unsorted, table.take(rng.permutation(5000)), [])
    for whole, run in ((shuffle.WHOLE_FILE_BYTES, ""), (0, ""), (0, "kept")):
        monkeypatch.setattr(shuffle, "WHOLE_FILE_BYTES", whole)
        assert shuffle.read_table(fs, path).equals(storage.read_parquet(fs, path))
        assert shuffle.read_table(fs, path, ["name"]).equals(storage.read_parquet(fs, path, ["name"]))
        for file in (path, one_group, unsorted):
            for low, high in ((0, 1), (5, 17), (12, 13), (39, 60), (41, 50), (5, 17)):  # the last one again
                expected = pq.ParquetFile(file).read_row_groups(shuffle.overlapping_row_groups(pq.ParquetFile(file), low, high))
                expected = expected.filter(pc.and_(pc.greater_equal(expected["key"], low), pc.less(expected["key"], high)))
                got = shuffle.read_range(scratch_job(fs, run), file, low, high)
                assert got.equals(expected, check_metadata=True)
                assert [len(chunk) for chunk in got["key"].chunks] == [len(chunk) for chunk in expected["key"].chunks]
        if run:  # kept: the sorted one-group file is read by binary search, the others filtered
            from stages.dedup.kept_reads import _KEPT
            assert [_KEPT.files[file].keys is not None for file in (path, one_group, unsorted)] == [False, True, False]
