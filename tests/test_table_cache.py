"""pipeline.table_cache: a per-code-point table, or a model's tables, built once per machine, read back by
later processes as they were built, rebuilt when what defines them changes or their copy is unreadable."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

from conftest import REPO
from pipeline import table_cache


def _counting_build(calls: list):
    def build() -> np.ndarray:
        calls.append(1)
        return np.arange(1000, dtype=np.uint16)
    return build


def test_a_table_is_built_once_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv(table_cache.ENV, str(tmp_path))
    calls: list = []
    first = table_cache.cached_table("t", _counting_build(calls), json)
    second = table_cache.cached_table("t", _counting_build(calls), json)
    assert len(calls) == 1 and np.array_equal(first, second) and second.dtype == np.uint16
    assert [path.name.startswith("t-") for path in tmp_path.iterdir()] == [True]


def test_changed_defining_code_builds_anew_and_the_older_file_goes(tmp_path, monkeypatch):
    monkeypatch.setenv(table_cache.ENV, str(tmp_path))
    calls: list = []
    table_cache.cached_table("t", _counting_build(calls), json)
    older = {path.name for path in tmp_path.iterdir()}
    table_cache.cached_table("t", _counting_build(calls), csv)  # another module's source: another key
    assert len(calls) == 2
    assert len(list(tmp_path.iterdir())) == 1 and not older & {path.name for path in tmp_path.iterdir()}


def test_an_unreadable_file_is_rebuilt_and_an_unwritable_directory_only_costs_the_build(tmp_path, monkeypatch):
    monkeypatch.setenv(table_cache.ENV, str(tmp_path))
    calls: list = []
    table_cache.cached_table("t", _counting_build(calls), json)
    (path,) = tmp_path.iterdir()
    path.write_bytes(b"not a table")
    assert np.array_equal(table_cache.cached_table("t", _counting_build(calls), json), np.arange(1000))
    assert len(calls) == 2 and np.array_equal(np.load(path), np.arange(1000))
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv(table_cache.ENV, str(blocked / "cache"))  # under a file: cannot be created
    assert np.array_equal(table_cache.cached_table("t", _counting_build(calls), json), np.arange(1000))
    assert len(calls) == 3


def test_the_stages_tables_read_back_equal_their_definitions(tmp_path):
    # In fresh processes, as workers are: the first builds and writes, the second reads.
    code = ("import numpy as np; from stages.rules import document; from stages import langid; "
            "print(np.array_equal(document.char_classes(), document._build_char_classes()), "
            "np.array_equal(langid._classes(), langid._build_classes()))")
    env = {"PIPELINE_CACHE_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                cwd=REPO, env=env)
        assert result.stdout.split() == ["True", "True"]
    assert sorted(path.name.split("-")[0] for path in tmp_path.iterdir()) == ["langid", "rules"]


def _arrays_build(calls: list):
    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        frozen = np.arange(5, dtype=np.uint8)
        frozen.setflags(write=False)
        return {"big": np.arange(100_000, dtype=np.float64), "frozen": frozen, "number": np.asarray(np.uint64(7)),
                "words": np.array(["gold", "junk"])}
    return build


def test_arrays_come_back_as_built_and_a_changed_key_or_broken_copy_builds_anew(tmp_path, monkeypatch):
    monkeypatch.setenv(table_cache.ENV, str(tmp_path))
    calls: list = []
    built = table_cache.cached_arrays("m", "stamp 1", _arrays_build(calls), json)
    for mapped in (None, lambda field: field == "big"):
        read = table_cache.cached_arrays("m", "stamp 1", _arrays_build(calls), json, mapped=mapped)
        assert len(calls) == 1 and read.keys() == built.keys()
        for field, array in built.items():
            # dtype, shape and read-only or not decide which compiled loop takes an array: all as built
            assert read[field].dtype == array.dtype and read[field].shape == array.shape, field
            assert read[field].flags.writeable == array.flags.writeable and np.array_equal(read[field], array), field
        assert type(read["big"]) is np.ndarray and read["number"][()] == np.uint64(7)
    read["big"][0] = -1  # a mapped array is copy on write: the copy on disk keeps its value
    assert table_cache.cached_arrays("m", "stamp 1", _arrays_build(calls), json, mapped=bool)["big"][0] == 0

    # Two processes that built at once: the copy that got there first is kept.
    table_cache.write_arrays("m", "stamp 1", {**built, "big": built["big"] + 1}, json)
    assert table_cache.read_arrays("m", "stamp 1", json)["big"][1] == 1
    (first,) = tmp_path.iterdir()
    table_cache.cached_arrays("m", "stamp 2", _arrays_build(calls), json)  # the model file changed
    (second,) = tmp_path.iterdir()
    assert len(calls) == 2 and second != first
    (second / "index.json").write_text("[")  # broken: rebuilt, and the copy replaced
    assert np.array_equal(table_cache.cached_arrays("m", "stamp 2", _arrays_build(calls), json)["big"], built["big"])
    assert len(calls) == 3 and table_cache.read_arrays("m", "stamp 2", json) is not None
    assert [path.name for path in tmp_path.iterdir()] == [second.name]



def _model_copy(tmp_path, name: str, megabytes: float = 0.0) -> tuple[str, str, str]:
    """A model file at ``tmp_path/name`` and its copy of ``megabytes`` written: (file, copy name, key)."""
    model = tmp_path / "models" / name
    model.parent.mkdir(exist_ok=True)
    model.write_bytes(name.encode())
    entry, key = table_cache.file_entry("model", str(model))
    table_cache.write_arrays(entry, key, {"table": np.zeros(int(megabytes * 1e6), dtype=np.uint8)}, json)
    return str(model), entry, key


def test_copies_of_model_files_that_are_gone_or_changed_go_at_the_next_write(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(table_cache.ENV, str(cache))
    gone, gone_entry, _ = _model_copy(tmp_path, "a.bin")
    changed, changed_entry, changed_key = _model_copy(tmp_path, "b.bin")
    _, kept_entry, kept_key = _model_copy(tmp_path, "c.bin")
    table_cache.cached_table("t", _counting_build([]), json)  # not a model's: never stale
    os.remove(gone)
    with open(changed, "ab") as handle:
        handle.write(b"retrained")
    assert table_cache.read_arrays(changed_entry, changed_key, json) is not None  # stale only to a new key
    _model_copy(tmp_path, "d.bin")
    names = sorted(path.name.rsplit("-", 1)[0] for path in cache.iterdir())
    assert names == sorted([kept_entry, f"model-{_path_hash(tmp_path / 'models' / 'd.bin')}", "t"])
    assert table_cache.read_arrays(kept_entry, kept_key, json) is not None


def _path_hash(path) -> str:
    return table_cache.file_entry("model", str(path))[0].split("-", 1)[1]


def test_past_the_size_limit_the_least_recently_read_copies_go_and_abandoned_temporaries_too(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv(table_cache.ENV, str(cache))
    monkeypatch.setenv(table_cache.MAX_MB_ENV, "2.5")
    copies = [_model_copy(tmp_path, f"{i}.bin", megabytes=1.0) for i in range(2)]
    # writers' temporaries as write_arrays names them: one abandoned, one still being written
    abandoned = cache / f"model-{'a' * 12}-{'0' * 24}.{table_cache.storage.TMP_PREFIX}{'1' * 12}"
    fresh = cache / f"model-{'b' * 12}-{'0' * 24}.{table_cache.storage.TMP_PREFIX}{'2' * 12}"
    for temporary in (abandoned, fresh):
        temporary.mkdir()
    os.utime(abandoned, (time.time() - table_cache.ABANDONED_S - 60,) * 2)
    for i, (_, entry, key) in enumerate(copies):  # the first copy read last: the second is least recent
        index = next(cache.glob(f"{entry}-*")) / "index.json"
        os.utime(index, (time.time() - 100 + 10 * i,) * 2)
    table_cache.read_arrays(copies[0][1], copies[0][2], json)
    _, newest, _ = _model_copy(tmp_path, "2.bin", megabytes=1.0)  # 3 MB in all: over 2.5
    left = sorted(path.name.rsplit("-", 1)[0] for path in cache.iterdir() if path != fresh)
    assert left == sorted([copies[0][1], newest]) and fresh.exists() and not abandoned.exists()
    # A directory shared with other files (PIPELINE_CACHE_DIR=~/.cache, say): only copies are pruned.
    foreign = [cache / "notes.txt", cache / "other-tool", cache / f".tmp-{'0' * 12}-someone-else.bin"]
    foreign[0].write_bytes(b"x" * 3_000_000)
    foreign[1].mkdir()
    foreign[2].write_bytes(b"")
    for path in foreign:
        os.utime(path, (time.time() - table_cache.ABANDONED_S - 60,) * 2)
    monkeypatch.setenv(table_cache.MAX_MB_ENV, "0.5")  # under the newest copy alone: that one stays
    _model_copy(tmp_path, "3.bin", megabytes=1.0)
    assert sorted(path.name.rsplit("-", 1)[0] for path in cache.iterdir() if path not in (fresh, *foreign)) == [
        table_cache.file_entry("model", str(tmp_path / "models" / "3.bin"))[0]]
    assert all(path.exists() for path in foreign)
