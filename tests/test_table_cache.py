"""pipeline.table_cache: a per-code-point table built once per machine, read back by later
processes, rebuilt when what defines it changes or its file is unreadable."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

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
