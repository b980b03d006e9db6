"""A worker process's kept scratch reads (``stages.dedup.kept_reads``): a repeat read returns what a
fresh read returns; a new prepare run never sees an earlier run's bytes of the same path; the bound
holds, a step's own files evicting only other directories' files, and a file that does not fit is
read as before and not kept."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from stages.dedup import kept_reads, shuffle
from test_dedup import scratch_job


def write(job, path, keys) -> None:
    table = pa.table({"key": pa.array(keys, pa.int64()), "value": pa.array(np.arange(len(keys)), pa.int64())})
    shuffle.write_sorted(job, path, table, 1)


def test_a_new_run_reads_a_rewritten_file_afresh(tmp_path):
    fs = pafs.LocalFileSystem()
    path = str(tmp_path / "bands" / "00000.parquet")
    write(scratch_job(fs), path, [1, 2, 2, 3])
    first = scratch_job(fs, run="run-1")
    assert shuffle.read_range(first, path, 2, 3)["value"].to_pylist() == [1, 2]
    assert path in kept_reads._KEPT.files

    write(scratch_job(fs), path, [2, 5])  # a rerun over the same scratch directory writes it again
    assert shuffle.read_range(scratch_job(fs, run="run-2"), path, 2, 3)["value"].to_pylist() == [0]
    assert kept_reads._KEPT.run == "run-2" and list(kept_reads._KEPT.files) == [path]


def test_the_bound_holds_and_a_step_evicts_only_older_directories(tmp_path):
    fs = pafs.LocalFileSystem()
    keys = np.repeat(np.arange(50), 200)  # 10,000 rows: about 160 kB decoded, 40-80 kB on disk
    paths = {d: [str(tmp_path / d / f"{i:05d}.parquet") for i in range(3)] for d in ("bands", "candidates")}
    for directory in paths.values():
        for path in directory:
            write(scratch_job(fs), path, keys)
    kept = kept_reads._KEPT.files  # filled below
    job = scratch_job(fs, run="bounded", read_cache_mb=1)

    for path in paths["bands"]:
        assert len(shuffle.read_range(job, path, 7, 9)) == 400
    sizes = {path: entry.nbytes for path, entry in kept.items()}
    assert list(kept) == paths["bands"] and kept_reads._KEPT.nbytes == sum(sizes.values()) <= 1 << 20

    # the next step's files push the older step's out, oldest first, and stay under the bound
    for path in paths["candidates"]:
        assert len(shuffle.read_range(job, path, 49, 60)) == 200
        assert kept_reads._KEPT.nbytes <= 1 << 20 and path in kept
    assert paths["bands"][0] not in kept and set(paths["candidates"]) <= set(kept)

    # with a bound below one file, every read is a fresh one and nothing is kept
    tiny = scratch_job(fs, run="tiny", read_cache_mb=0)
    assert len(shuffle.read_range(tiny, paths["bands"][0], 0, 1)) == 200
    assert kept_reads._KEPT.run == "bounded"  # a job that keeps nothing leaves the kept files alone


def test_a_file_larger_than_what_is_left_is_read_but_not_kept(tmp_path):
    fs = pafs.LocalFileSystem()
    small, large = str(tmp_path / "verify" / "00000.parquet"), str(tmp_path / "verify" / "00001.parquet")
    write(scratch_job(fs), small, np.repeat(np.arange(40), 20))
    write(scratch_job(fs), large, np.repeat(np.arange(40), 2000))  # 0.3 MB on disk, 1.6 MB decoded
    job = scratch_job(fs, run="full", read_cache_mb=1)
    assert len(shuffle.read_range(job, small, 3, 4)) == 20
    for _ in range(2):
        assert len(shuffle.read_range(job, large, 3, 4)) == 2000
        assert list(kept_reads._KEPT.files) == [small]  # the same step's file is not evicted for it


def test_prepare_writes_the_same_files_with_and_without_kept_reads(tmp_path):
    from test_dedup import write_shards
    from test_dedup_gather import prepare, scratch_digests
    from test_keeper_rounds import FAMILIES, families

    inputs = write_shards(tmp_path / "in", families(3) + families(4), 9)
    prepare(inputs, tmp_path / "kept", partitions=4, **FAMILIES)
    assert kept_reads._KEPT.files, "the prepare run should have kept the files it read"
    prepare(inputs, tmp_path / "fresh", partitions=4, shuffle={"read_cache_mb": 0}, **FAMILIES)
    kept = scratch_digests(tmp_path / "kept", set())
    assert kept == scratch_digests(tmp_path / "fresh", set())
    assert "clusters-round1/00000.parquet" in kept and "summary.json" in kept  # keeper rounds ran
