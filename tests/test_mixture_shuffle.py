"""The two-level shuffle of the mixture's pack step (``mixture.gather``): training shards packed from
gather files are the bytes packed from the scatter files (any block size, in-process or on Ray), a
killed gather or pack step resumes with its unfinished tasks alone, switching the gather level on
mid-run deals again and packs the same bytes, so do scatter and gather files of an older layout, a
gather task's memory does not grow with its block's data, and task payloads do not grow with the
number of input shards.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import REPO, sample_config
from mixture import gather as gather_module
from mixture.gather import GatherTask, gather_block, gather_path
from mixture.pack import PackTask, pack_shard
from mixture.packing import scatter_files, scatter_path
from pipeline.executor import RayExecutor
from pipeline.listing import forget_listings
from test_mixture import build, corpus, task_memory_script  # noqa: F401  (corpus: the fixture, a copy of the sample run)

# Many training shards from the small sample corpus (about 25 per phase), and two phases.
SETTINGS = {"seq_len": 63, "sequences_per_shard": 20, "megatron": True, "phases": [
    {"name": "first", "tokens": 30_000, "weights": {"web": 0.5, "encyclopedia": 0.3, "code": 0.2}},
    {"name": "second", "tokens": 30_000, "weights": {"web": 0.4, "encyclopedia": 0.4, "papers": 0.2}}]}


def shard_files(work_dir: Path) -> dict[str, bytes]:
    """Every training shard file (Parquet, Megatron .bin and .idx) by path, and the manifest."""
    mixture = work_dir / "mixture"
    files = {str(path.relative_to(mixture)): path.read_bytes()
             for path in sorted((mixture / "shards").glob("*/part-*"))}
    return {**files, "manifest.json": (mixture / "manifest.json").read_bytes()}


@pytest.fixture(scope="module")
def one_level(corpus, tmp_path_factory):
    """The training shards packed straight from the scatter files, in-process."""
    work_dir = tmp_path_factory.mktemp("one-level") / "work"
    _, _, lines = build(corpus, work_dir, {**SETTINGS, "gather": "never"})
    assert any("first: " in line and "packed from the scatter files" in line for line in lines)
    return work_dir, shard_files(work_dir)


def test_gathered_shards_are_the_bytes_packed_from_the_scatter_files(ray_cluster, corpus, one_level, tmp_path):
    work_dir, expected = one_level
    assert sum(name.endswith(".parquet") for name in expected) > 40
    for block, executor in ((3, None), (2, RayExecutor(sample_config(corpus).ray))):
        directory = tmp_path / f"block-{block}"
        _, result, lines = build(corpus, directory, {**SETTINGS, "gather": "always", "gather_block": block},
                                 executor=executor)
        assert any(f"first: {len(result['manifest']['phases'][0]['shards'])} training shards" in line
                   and f"gathered in blocks of {block}" in line for line in lines), lines
        assert any("gathering blocks" in line and "(0 of" in line for line in lines)
        assert shard_files(directory) == expected
        # Both copies of the dealt tokens are gone once every shard is packed.
        assert not (directory / "mixture" / "scatter").exists() and not (directory / "mixture" / "gather").exists()
    # The gather options are left out of the plan: switching them on repacks nothing.
    _, _, lines = build(corpus, work_dir, {**SETTINGS, "gather": "always"})
    assert any("packing 0 training shards" in line for line in lines)
    assert shard_files(work_dir) == expected


class Killed(RuntimeError):
    """Stands for the driver or a task dying."""


def test_a_killed_gather_or_pack_step_resumes_with_its_unfinished_tasks(corpus, one_level, tmp_path, monkeypatch):
    from mixture import build as build_module

    settings = {**SETTINGS, "gather": "always", "gather_block": 4}
    directory = tmp_path / "work"
    gathered: list[tuple[str, int]] = []
    commit, dying = gather_module.Ledger.commit, [True]

    def die(*_):
        raise Killed()

    def gather_then_die(task: GatherTask) -> dict:
        """The first two blocks commit; the third writes its files and dies before its receipt."""
        gathered.append((task.phase, task.block))
        if dying[0] and len(gathered) == 3:
            monkeypatch.setattr(gather_module.Ledger, "commit", die)
        return gather_block(task)

    monkeypatch.setattr(build_module, "gather_block", gather_then_die)
    with pytest.raises(Killed):
        build(corpus, directory, settings)
    receipts = sorted((directory / "mixture" / "gather" / "first" / "_receipts").glob("*.json"))
    assert [path.name for path in receipts] == ["block-00000.json", "block-00001.json"]
    assert (directory / "mixture" / "gather" / "first" / "part-00008.parquet").exists()  # block 2, uncommitted

    monkeypatch.setattr(gather_module.Ledger, "commit", commit)
    dying[0] = False
    packed: list[int] = []

    def pack_then_die(task: PackTask) -> dict:
        if len(packed) == 5:
            die()
        packed.append(task.shard)
        return pack_shard(task)

    monkeypatch.setattr(build_module, "pack_shard", pack_then_die)
    gathered.clear()
    with pytest.raises(Killed):
        build(corpus, directory, settings)
    blocks = sum(-(-len(list((one_level[0] / "mixture" / "shards" / phase).glob("*.parquet"))) // 4)
                 for phase in ("first", "second"))
    assert len(gathered) == blocks - 2 and ("first", 2) in gathered and ("first", 0) not in gathered

    # The gather file of a shard not packed yet is lost: its block alone is gathered again.
    (directory / "mixture" / "gather" / "second" / "part-00005.parquet").unlink()
    monkeypatch.setattr(build_module, "pack_shard", pack_shard)
    gathered.clear()
    _, result, lines = build(corpus, directory, settings)
    assert gathered == [("second", 1)]
    # Shards 0-4 of the first phase are packed: block 0 is not wanted any more, and one other is missing.
    assert any(f"({blocks - 2} of {blocks - 1} blocks already gathered)" in line for line in lines), lines
    assert any(re.search(r"\((\d+) of \1 input shards already dealt\)", line) for line in lines)  # none dealt again
    shards = sum(len(phase["shards"]) for phase in result["manifest"]["phases"])
    assert any(f"packing {shards - 5} training shards" in line for line in lines)
    assert shard_files(directory) == one_level[1]


def test_switching_the_gather_level_on_mid_run_deals_again_and_packs_the_same_bytes(corpus, one_level, tmp_path,
                                                                                     monkeypatch):
    """Scatter files dealt to be packed from have a row group per training shard; a rerun that
    gathers wants one per block, so it deals them again."""
    from mixture import build as build_module

    def die(_):
        raise Killed()

    monkeypatch.setattr(build_module, "pack_shard", die)
    with pytest.raises(Killed):
        build(corpus, tmp_path / "work", {**SETTINGS, "gather": "never"})
    monkeypatch.setattr(build_module, "pack_shard", pack_shard)
    _, _, lines = build(corpus, tmp_path / "work", {**SETTINGS, "gather": "always", "gather_block": 5})
    assert any(re.search(r"\(0 of \d+ input shards already dealt\)", line) for line in lines), lines
    assert shard_files(tmp_path / "work") == one_level[1]


def test_scatter_and_gather_files_of_an_older_layout_are_made_again(corpus, one_level, tmp_path, monkeypatch):
    """Scatter and gather files a killed run left in an older layout (``SCATTER_VERSION``) are dealt
    and gathered again, not read; the training shards are the same bytes."""
    from mixture import build as build_module

    def die(_):
        raise Killed()

    settings = {**SETTINGS, "gather": "always", "gather_block": 5}
    version = build_module.SCATTER_VERSION
    monkeypatch.setattr(build_module, "SCATTER_VERSION", version - 1)
    monkeypatch.setattr(build_module, "pack_shard", die)
    with pytest.raises(Killed):
        build(corpus, tmp_path / "work", settings)
    monkeypatch.setattr(build_module, "SCATTER_VERSION", version)
    monkeypatch.setattr(build_module, "pack_shard", pack_shard)
    _, _, lines = build(corpus, tmp_path / "work", settings)
    assert any(re.search(r"\(0 of \d+ input shards already dealt\)", line) for line in lines), lines
    assert any("gathering blocks" in line and "(0 of" in line for line in lines), lines
    assert shard_files(tmp_path / "work") == one_level[1]


# --- gather tasks on synthetic scatter files ------------------------------------------------------------


def write_scatter(directory: Path, files: int, shards: int, runs: int, tokens: int, block: int = 1) -> list[str]:
    """Scatter files written by ``mixture.packing``'s writer (runs sorted by training shard, then key;
    one row group per ``block`` training shards), with random ids; every third file leaves shard 1
    empty, and no file has a run of the last shard."""
    from mixture.packing import _row_group_per_block, run_bytes

    rng = np.random.default_rng(0)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(files):
        shard = np.sort(rng.integers(0, shards - 1, runs)).astype(np.int32)
        if number % 3 == 0:
            shard[shard == 1] = 0
        keys = rng.integers(0, 2**63, runs, dtype=np.uint64)
        order = np.lexsort((keys, shard))
        lengths = rng.integers(1, 2 * tokens, runs)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        table = pa.table({
            "id": [f"doc-{number}-{run}" for run in range(runs)], "first_piece": pa.array(np.zeros(runs, np.int32)),
            "last_piece": pa.array(np.zeros(runs, np.int32)), "pieces": pa.array(np.ones(runs, np.int32)),
            "category": ["web"] * runs, "epoch": pa.array(np.zeros(runs, np.int32)), "key": pa.array(keys[order]),
            "n_tokens": pa.array(lengths, pa.int64()),
            "tokens": run_bytes(pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(
                rng.integers(4, 60_000, offsets[-1], dtype=np.uint16)))),
            "shard": pa.array(shard[order])})
        path = directory / f"unit-{number}.parquet"
        path.write_bytes(_row_group_per_block(table, block).to_pybytes())
        paths.append(str(path))
    return paths


def pack(sources, shard: int, directory: Path) -> dict[str, bytes]:
    pack_shard(PackTask(phase="p", shard=shard, sources=sources, path=str(directory / f"part-{shard:05d}.parquet"),
                        receipt=str(directory / "_receipts" / f"part-{shard:05d}.json"), step_hash="h", seq_len=255,
                        eod_id=2, pad_id=3, token_type="uint16", rows_per_row_group=64, megatron=True))
    return {path.name: path.read_bytes() for path in sorted(directory.glob(f"part-{shard:05d}.*"))}


def test_gather_files_pack_to_the_bytes_of_the_scatter_files(tmp_path, monkeypatch):
    """Scatter files in row groups per training shard or per gather block, batches spanning several
    training shards, row groups written mid-shard (a small GROUP_BYTES), scatter files without a
    shard's runs and a shard no file has: the same packed bytes."""
    monkeypatch.setattr(gather_module, "GROUP_BYTES", 20_000)
    shards, units = 7, [f"unit-{number}" for number in range(5)]
    write_scatter(tmp_path / "direct" / "p", files=5, shards=shards, runs=400, tokens=40)
    write_scatter(tmp_path / "blocks" / "p", files=5, shards=shards, runs=400, tokens=40, block=3)
    direct, blocks = (scatter_files(str(tmp_path / name), ["p"], units)["p"] for name in ("direct", "blocks"))
    assert list(direct) == [scatter_path(str(tmp_path / "direct"), "p", unit) for unit in units]
    # file 0 has no run of shard 1, and no file one of shard 6
    assert [pq.ParquetFile(path).metadata.num_row_groups for path in list(direct)[:2]] == [5, 6]
    assert [pq.ParquetFile(path).metadata.num_row_groups for path in list(blocks)[:2]] == [2, 2]
    for name, sources in (("direct", direct), ("blocks", blocks)):
        receipts = [gather_block(GatherTask(phase="p", block=block, first=first, stop=min(first + 3, shards),
                                            sources=sources, directory=str(tmp_path / f"gather-{name}"),
                                            step_hash="g"))
                    for block, first in enumerate(range(0, shards, 3))]
        assert sum(receipt["runs"] for receipt in receipts) == 5 * 400
    assert pq.ParquetFile(gather_path(str(tmp_path / "gather-blocks"), 0)).metadata.num_row_groups > 1
    assert pq.ParquetFile(gather_path(str(tmp_path / "gather-blocks"), shards - 1)).metadata.num_row_groups == 0
    for shard in range(shards):
        expected = pack(direct, shard, tmp_path / "packed-direct")
        assert len(expected) == 3
        for name in ("direct", "blocks"):
            gathered = [gather_path(str(tmp_path / f"gather-{name}"), shard)]
            assert pack(gathered, shard, tmp_path / f"packed-{name}") == expected
    with pytest.raises(ValueError, match="several training shards"):
        pack(blocks, 0, tmp_path / "refused")


GATHER_MEMORY = task_memory_script(
    "from mixture.gather import GatherTask, gather_block",
    '''gather_block(GatherTask(phase="p", block=0, first=0, stop=4, sources=sources, directory=directory,
                                  step_hash="g"))''',
    '"runs": receipt["runs"]')


def gather_task_memory(sources: list[str], directory: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", GATHER_MEMORY, json.dumps(sources), str(directory)],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_gather_task_holds_a_few_row_groups_not_its_block(tmp_path):
    """A gather task's peak memory (VmHWM of a fresh process) does not grow with its block's data:
    four times the scatter files (about 46 MB more token ids) add less than a tenth of that."""
    sources = write_scatter(tmp_path / "scatter", files=16, shards=5, runs=2000, tokens=1000)
    small = gather_task_memory(sources[:4], tmp_path / "small")
    large = gather_task_memory(sources, tmp_path / "large")
    extra_mb = sum(pq.read_table(path, columns=["n_tokens"]).column(0).to_numpy().sum()
                   for path in sources[4:]) * 2 / 2**20
    assert (small["runs"], large["runs"]) == (4 * 2000, 16 * 2000) and extra_mb > 40
    assert large["task_mb"] - small["task_mb"] < extra_mb / 10, (small, large, extra_mb)


def test_task_payloads_do_not_grow_with_the_input_shards(tmp_path):
    sizes = {}
    for inputs in (10, 10_000):
        sources = scatter_files(str(tmp_path / f"s{inputs:05d}"), ["p"], [f"unit-{n:05d}" for n in range(inputs)])["p"]
        gather = GatherTask(phase="p", block=0, first=0, stop=128, sources=sources, directory="gather", step_hash="g")
        pack_task = PackTask(phase="p", shard=0, sources=sources, path="part.parquet", receipt="r.json", step_hash="h",
                           seq_len=2047, eod_id=2, pad_id=3, token_type="uint16", rows_per_row_group=1024,
                           megatron=False)
        sizes[inputs] = (len(pickle.dumps(gather)), len(pickle.dumps(pack_task)))
        forget_listings()  # as in a worker process: the names are read from the file
        assert pickle.loads(pickle.dumps(pack_task)).sources[inputs - 1].endswith(f"unit-{inputs - 1:05d}.parquet")
    # the same but for the count's pickled width; a list of the 10,000 paths would be 400 kB
    assert all(0 <= large - small <= 2 for small, large in zip(sizes[10], sizes[10_000])), sizes
    assert max(sizes[10_000]) < 1_000, sizes
