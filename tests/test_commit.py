"""The commit primitive every stage and step resumes by (``pipeline.commit``), on a real directory."""
from __future__ import annotations

import pyarrow.fs as pafs

from pipeline import commit, storage


def test_a_claimed_directory_is_cleared_only_when_another_hash_owned_it(tmp_path):
    fs, directory, logs = pafs.LocalFileSystem(), str(tmp_path / "stage"), []
    assert commit.claim(fs, directory, "a", key="config_hash", marker="_stage.json", log=logs.append) is False
    storage.write_bytes(fs, f"{directory}/kept/part-0.parquet", b"output of a")
    storage.write_bytes(fs, f"{directory}/.tmp-interrupted", b"half")
    assert commit.claim(fs, directory, "a", key="config_hash", marker="_stage.json", log=logs.append) is False
    assert storage.exists(fs, f"{directory}/kept/part-0.parquet"), "resuming the same hash keeps its outputs"
    assert not storage.exists(fs, f"{directory}/.tmp-interrupted"), "an interrupted write is always removed"
    assert logs == []
    assert commit.claim(fs, directory, "b", key="config_hash", marker="_stage.json", log=logs.append,
                        label="[stage] ", record={"stage": "x"}) is True
    assert not storage.exists(fs, f"{directory}/kept/part-0.parquet")
    assert storage.read_json(fs, f"{directory}/_stage.json") == {"config_hash": "b", "stage": "x"}
    assert logs == ["[stage] discarding earlier outputs: its config (or an earlier stage's) changed"]
    assert commit.claim(fs, directory, "b", key="config_hash", marker="_stage.json", force=True, log=logs.append)
    assert logs[-1].endswith("--force")


def test_a_unit_is_done_only_with_its_receipt_for_this_hash_and_input(tmp_path):
    fs = pafs.LocalFileSystem()
    ledger = commit.Ledger(fs, str(tmp_path / "_receipts"), key="step_hash")
    ledger.commit("u1", {"step_hash": "h", "input_fingerprint": "f1", "rows": 3})
    ledger.commit("u2", {"step_hash": "old", "input_fingerprint": "f2"})
    ledger.commit("u3", {"step_hash": "h", "input_fingerprint": "f3"})
    done = ledger.done({"u1": "f1", "u2": "f2", "u3": "changed", "u4": "f4"}, "h")
    assert list(done) == ["u1"] and done["u1"]["rows"] == 3
    assert list(ledger.done(["u1", "u3"], "h")) == ["u1", "u3"]  # no fingerprint to compare: the hash decides
    assert list(ledger.done(["u1", "u3"], "h", check=lambda unit, _: unit == "u3")) == ["u3"]
    ledger.forget("u1")
    assert ledger.read("u1") is None
    ledger.prune(["u3"])
    assert [p.name for p in (tmp_path / "_receipts").iterdir()] == ["u3.json"]
    assert commit.pending([1, 2, 3, 4], lambda item: item % 2 == 0) == [1, 3]
