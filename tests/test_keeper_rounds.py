"""Dedup's keeper rounds (``stages.dedup.steps``): a run of too-short keepers down one cluster goes in
one round instead of one round each; ``max_keeper_rounds`` bounds the rounds, keeping the keepers still
too short whole; rounds after the first read no text; and the decisions are exactly those of the code
before these changes, which barred one keeper per round (digests recorded from it, commit 576fce9)."""
from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import replace
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.executor import run_group
from pipeline.stage import PrepareContext
from stages.dedup import Dedup, DedupConfig, clusters, steps
from test_dedup import (
    WORDS, assert_clusters_keep_a_kept_document, doc, edit_each_line, in_process, prose, run, write_shards,
)

SHORT = "too_short_after_paragraph_dedup"
FAMILIES = {"min_chars_after_paragraph_dedup": 250, "threshold": 0.5}  # many keepers too short


def chain(members: int = 8) -> list[dict]:
    """A source page, then ``members`` near-identical pages made of its last lines and a short line of
    their own, each too short as a keeper once those lines go, but the last, whose own paragraph is
    long enough to stay. Barring one keeper per round took ``members - 1`` rounds."""
    shared = "\n".join(prose(70 + i, 40) for i in range(8))
    docs = [doc("source", "\n".join(prose(80 + i, 40) for i in range(10)) + "\n" + shared)]
    docs += [doc(f"m{i}", f"{shared}\nMember {i} says hello.") for i in range(members - 1)]
    docs += [doc(f"m{members - 1}", f"{shared}\n{prose(500, 60)}"), doc("after", prose(900, 100))]
    return docs


def families(seed: int) -> list[dict]:
    """Families of near-identical pages built from a pool of lines that many families share, in random
    order, with random quality scores and a few code pages: keepers left too short down clusters and
    across them, one keeper's paragraphs shortening another cluster's."""
    rng = random.Random(seed)
    pool = [prose(1000 * seed + i, rng.randint(6, 14)) for i in range(60)]
    docs = []
    for family in range(25):
        base = [rng.choice(pool) for _ in range(rng.randint(4, 9))]
        base.append(prose(10**6 + 100 * seed + family, rng.randint(5, 12)))
        for member in range(rng.choice([1, 1, 2, 3, 5, 8])):
            lines = list(base)
            for _ in range(rng.randint(0, 2)):  # a word changed here and there
                at = rng.randrange(len(lines))
                words = lines[at].split(" ")
                words[rng.randrange(len(words))] = rng.choice(WORDS)
                lines[at] = " ".join(words)
            if rng.random() < 0.3:
                lines.append(prose(rng.randrange(10**7), rng.randint(3, 10)))
            category = "code" if rng.random() < 0.05 else "web"
            docs.append(doc(f"f{family}m{member}", "\n".join(lines), category, quality_score=rng.random()))
    rng.shuffle(docs)
    return docs


def keeper_replaced() -> list[dict]:
    """tests/test_dedup.py's corpus whose keeper is too short, and whose other cluster keeps nothing."""
    shared = "\n".join(prose(70 + i, 80) for i in range(5))
    other = "\n".join(prose(90 + i, 80) for i in range(5))
    return [
        doc("source", "\n".join(prose(80 + i, 80) for i in range(12)) + f"\n{shared}\n{other}"),
        doc("keeper", f"{shared}\nA short line of its own."), doc("edited", edit_each_line(shared, 1)),
        doc("copy", f"{shared}\nAnother short line."),
        doc("alone-1", f"{other}\nShort one."), doc("alone-2", f"{other}\nShort two."),
    ]


def summary(scratch: Path) -> dict:
    return json.loads((scratch / "summary.json").read_text())


def assert_conserved(docs: list[dict], out: dict[str, dict]) -> None:
    """Every input row comes out, kept or removed with a reason, and duplicates point at kept rows."""
    assert sorted(out) == sorted(d["id"] for d in docs)
    assert_clusters_keep_a_kept_document(out)


def test_a_run_of_short_keepers_down_a_cluster_is_barred_in_one_round(tmp_path):
    docs = chain(8)
    out = run(write_shards(tmp_path / "in", docs, shards=3), tmp_path / "scratch", partitions=3)
    assert_conserved(docs, out)
    assert {f"m{i}": out[f"m{i}"]["reason"] for i in range(7)} == {f"m{i}": SHORT for i in range(7)}
    assert out["m7"]["reason"] is None and out["m7"]["text"] == prose(500, 60)  # the shared lines went
    assert {out[f"m{i}"]["dup_cluster"] for i in range(8)} == {"m0"}
    assert out["source"]["reason"] is None and out["after"]["reason"] is None
    counts = summary(tmp_path / "scratch")
    # Round 0 bars m0; round 1 finds its keeper m1 too short, and m2..m6 too short even as keepers;
    # round 2 bars them all and keeps m7. One keeper per round took 7 rounds.
    assert (counts["keeper_round"], counts["keepers_replaced"], counts["short_keepers_kept"]) == (2, 7, 0)


@pytest.mark.parametrize("cap", [0, 1])
def test_keepers_still_too_short_after_the_last_round_are_kept_whole(tmp_path, cap):
    docs = chain(8)
    texts = {d["id"]: d["text"] for d in docs}
    out = run(write_shards(tmp_path / "in", docs, shards=2), tmp_path / "scratch", max_keeper_rounds=cap)
    assert_conserved(docs, out)
    kept = f"m{cap}"
    assert out[kept]["reason"] is None and out[kept]["text"] == texts[kept]  # no line dropped
    assert all(out[f"m{i}"]["reason"] == SHORT for i in range(cap))
    assert {out[f"m{i}"]["dup_kept_id"] for i in range(cap + 1, 8)} == {kept}
    counts = summary(tmp_path / "scratch")
    assert (counts["keeper_round"], counts["short_keepers_kept"]) == (cap, 1)
    assert not (tmp_path / "scratch" / f"clusters-round{cap + 1}").exists()


def test_the_bound_holds_where_keepers_shorten_other_clusters(tmp_path):
    docs = families(7)  # needs 6 rounds: new keepers leave other clusters' keepers too short
    out = run(write_shards(tmp_path / "in", docs, shards=2), tmp_path / "scratch", keep="longest", **FAMILIES)
    assert_conserved(docs, out)
    counts = summary(tmp_path / "scratch")
    assert counts["keeper_round"] == DedupConfig().max_keeper_rounds and counts["short_keepers_kept"] > 0


def test_rounds_after_the_first_read_no_text(tmp_path):
    docs = chain(8)
    inputs = write_shards(tmp_path / "in", docs, shards=2)
    expected = run(inputs, tmp_path / "reference")
    away = tmp_path / "away"
    away.mkdir()
    ran = []

    def map_fn(fn, items):
        ran.append(items[0].fn.__name__ if fn is run_group else fn.__name__)
        results = in_process(fn, items)
        if fn is steps.read_shard:  # the only step that reads the text
            for path in inputs.values():
                os.rename(path, away / Path(path).name)
        return results

    scratch = tmp_path / "scratch"
    Dedup(DedupConfig()).prepare(PrepareContext(inputs=inputs, scratch=str(scratch), map=map_fn,
                                                filesystem=pafs.LocalFileSystem(), log=lambda _: None))
    assert ran.count("select_paragraphs") == 3 and (scratch / "clusters-round2").is_dir()
    assert not any(Path(path).exists() for path in inputs.values())
    for path in inputs.values():
        os.rename(away / Path(path).name, path)
    worker, out = Dedup(DedupConfig()), {}
    for shard, path in inputs.items():
        worker.begin_shard(shard, str(scratch), pafs.LocalFileSystem())
        output = worker.process(pq.read_table(path))
        for side in (output.kept, output.removed):
            out.update({row["id"]: {k: row.get(k) for k in ("text", "reason", "dup_cluster", "dup_kept_id")}
                        for row in side.to_pylist()})
    assert out == expected


# name: (corpus, shards, config, keeper rounds taken before, and now, sha256 of the outcome before)
BEFORE = {
    "keeper replaced": (keeper_replaced, 2, {"partitions": 3}, 2, 2,
                        "c1e17e5e9ae01b4ea33a2ae18547be2cebea964fbbb024affe684170cb031be6"),
    "chain": (chain, 3, {"partitions": 2}, 7, 2, "5ad821f182caf42303d0a2d3d0077af9b4a4d90a1551b3638835e4b0aa0d27b3"),
    "families, first": (lambda: families(7), 3, FAMILIES, 8, 2,
                        "f65a077b82383a480dc77a80f8269a631cd99914ab88cdfe78ed29425dd7a403"),
    "families, longest": (lambda: families(3), 2, {**FAMILIES, "keep": "longest"}, 5, 2,
                          "34ae0340e3b1cfb02a3ce814d788ca8ce3dacc75a70896461a8a0465bd1d3a9d"),
    # chains across clusters: each cluster a new keeper shortens takes its own rounds
    "families, longest, across clusters": (lambda: families(7), 2, {**FAMILIES, "keep": "longest"},
                                           13, 6, "40b9891f840c30df2dce0ceda442080f3fe263f02ba6254d9f5109a0a5528766"),
    "families, quality": (lambda: families(6), 1, {**FAMILIES, "keep": "quality", "partitions": 3}, 5, 2,
                          "1a858f04d20b33bb283a8959ff03a2f9f46a4c969cfa7df0f55209ee002bb184"),
    "families, distributed": (lambda: families(1), 2, {**FAMILIES, "components": {"method": "distributed"}},
                              8, 2, "f82520d8030c486d0f7f4dc8488c5e25b0cb03471c94195cad396da06ac2f8fb"),
}


def outcome_digest(out: dict[str, dict]) -> str:
    return hashlib.sha256(json.dumps(out, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_decisions_are_those_of_one_keeper_per_round(tmp_path, name):
    make, shards, config, rounds_before, rounds_now, digest = BEFORE[name]
    docs = make()
    out = run(write_shards(tmp_path / "in", docs, shards), tmp_path / "scratch",
              max_keeper_rounds=rounds_before, **config)
    assert_conserved(docs, out)
    counts = summary(tmp_path / "scratch")
    assert (counts["keeper_round"], counts["short_keepers_kept"]) == (rounds_now, 0)
    assert outcome_digest(out) == digest


def test_later_rounds_take_their_components_from_the_round_before(tmp_path):
    """Round r > 0 reads round r - 1's ``cluster-components/``, not the edges (gone here once round
    0 has read them); where the round before left none (a scratch directory from before the file
    existed), it finds them from the edges again; both ways, the outcome and every round's clusters
    are the single way's."""
    docs = families(7)  # six keeper rounds
    inputs = write_shards(tmp_path / "in", docs, shards=2)
    config = {**FAMILIES, "keep": "longest", "max_keeper_rounds": 13}
    expected = run(inputs, tmp_path / "reference", **config)

    def edges_gone_after_round_0(fn, items):
        results = in_process(fn, items)
        if fn is clusters.cluster_corpus and items[0][0].round == 0:
            os.rename(tmp_path / "carried" / "edges", tmp_path / "edges-away")
        return results

    def nothing_carried(fn, items):
        if fn is clusters.cluster_corpus and items[0][0].round:
            os.remove(clusters.carried_path(replace(items[0][0], round=items[0][0].round - 1)))
        return in_process(fn, items)

    reference = tmp_path / "reference"
    assert summary(reference)["keeper_round"] == 6
    for name, map_fn in (("carried", edges_gone_after_round_0), ("found again", nothing_carried)):
        assert run(inputs, tmp_path / name, map_fn, **config) == expected
        assert summary(tmp_path / name) == summary(reference)
        for path in sorted(reference.glob("clusters*/*.parquet")):
            assert pq.read_table(tmp_path / name / path.relative_to(reference)).equals(pq.read_table(path)), path
