"""What the fault tests check about a run's work_dir, whatever happened to the run."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from conftest import read_stage

STAGE_DIRS = ["01_ingest", "02_langid", "03_rules", "04_quality", "05_dedup"]


def stage_contents(work_dir: Path) -> dict:
    """The kept and removed rows of every stage, in manifest order."""
    return {(stage, side): read_stage(work_dir, stage, side) for stage in STAGE_DIRS for side in ("kept", "removed")}


def assert_same_contents(work_dir: Path, reference: Path) -> None:
    """``stage_contents`` equal, or a failure that names the first stage, side, row and columns that
    differ (a dict of every row would bury the one difference in thousands of lines)."""
    ours, theirs = stage_contents(work_dir), stage_contents(reference)
    for key in theirs:
        a, b = ours[key], theirs[key]
        if a == b:
            continue
        ids_a, ids_b = [r["id"] for r in a], [r["id"] for r in b]
        if ids_a != ids_b:
            only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
            raise AssertionError(f"{key}: different rows ({len(a)} vs {len(b)}); only in the run: {only_a[:10]}, "
                                 f"only in the reference: {only_b[:10]}, same set: {not only_a and not only_b}")
        diffs = [(row_a["id"], {c: (row_a[c], row_b.get(c)) for c in row_a if row_a[c] != row_b.get(c)})
                 for row_a, row_b in zip(a, b) if row_a != row_b]
        raise AssertionError(f"{key}: {len(diffs)} rows differ (run, reference); first: {diffs[:3]}")


def assert_conserved(work_dir: Path) -> None:
    """Every stage finished, every unit and stage kept + removed what it read, and each stage
    read exactly what the one before it kept."""
    previous_kept = None
    for stage in STAGE_DIRS:
        manifest = json.loads((work_dir / stage / "_manifest.json").read_text())
        assert manifest["complete"] is True, stage
        for unit in manifest["units"]:
            assert unit["input_rows"] == unit["kept_rows"] + unit["removed_rows"], (stage, unit["unit"])
        totals = manifest["totals"]
        assert totals["input_rows"] == totals["kept_rows"] + totals["removed_rows"], stage
        assert previous_kept is None or totals["input_rows"] == previous_kept, stage
        previous_kept = totals["kept_rows"]


def assert_only_complete_units_committed(work_dir: Path) -> None:
    """A receipt (a unit marked done) only for units whose files are all there, byte for byte; a
    manifest (a stage marked done) only with a receipt for each of its units; and no half-written
    file under a final name."""
    for stage_dir in sorted(p for p in work_dir.iterdir() if p.is_dir() and p.name[:2].isdigit()):
        receipts = {}
        for path in sorted((stage_dir / "_receipts").glob("*.json")):
            receipt = json.loads(path.read_text())
            receipts[receipt["unit"]] = receipt
            for file in receipt["kept_files"] + receipt["removed_files"]:
                data = (stage_dir / file["path"]).read_bytes()
                assert hashlib.sha256(data).hexdigest() == file["sha256"], (stage_dir.name, file["path"])
                assert pq.read_metadata(stage_dir / file["path"]).num_rows == file["rows"]
        manifest = stage_dir / "_manifest.json"
        if manifest.exists():
            units = json.loads(manifest.read_text())["units"]
            assert all(unit["unit"] in receipts for unit in units), f"{stage_dir.name}: manifest without receipts"
        for path in stage_dir.rglob("*.parquet"):
            if not path.name.startswith(".tmp-"):
                pq.read_metadata(path)  # raises on a truncated file
