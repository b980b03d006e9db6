"""Parquet rows prepared a column at a time (``Records.add_rows``) give exactly what the record-by-record
path gives: the same ids, meta JSON, quarantine reasons, shard cuts and ``--limit`` stops, whatever
the other columns' types."""
from __future__ import annotations

import datetime
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from stages import ingest
from stages.ingest import list_input_files, read_files
from stages.readers import parquet
from stages.readers.parquet import _rows

TEXTS = ["a fine document", "", None, " \u3000\n", "y" * 900, "quote \" and \\ and \n newline",
         "文本 " * 40, "\x00 nul \x00", "emoji \U0001F600 end", "last one"]


NON_FINITE = [float("nan"), float("inf"), float("-inf")]  # as pandas leaves them in float columns


def _strict_json(text: str):
    """``text`` parsed as strict JSON: Python's NaN and Infinity refused."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))


def _table(rows: int) -> pa.Table:
    ids = [None if i % 17 == 5 else "" if i % 19 == 7 else f"d{i % 180}" for i in range(rows)]  # repeats: duplicate ids
    return pa.table({
        "text": pa.array([TEXTS[i % len(TEXTS)] for i in range(rows)], pa.string()),
        "id": pa.array(ids, pa.string()),
        "category": pa.array([[None, "", "web", "books", "poetry"][i % 5] for i in range(rows)], pa.string()),
        "score": pa.array([None if i % 7 == 0 else NON_FINITE[i % 3] if i % 11 == 3 else i / 3 for i in range(rows)], pa.float64()),
        "flag": pa.array([i % 3 == 0 for i in range(rows)], pa.bool_()),
        "count": pa.array(range(rows), pa.int32()),
        "tags": pa.array([[f"t{i}", "ü\"x"] if i % 2 else None for i in range(rows)], pa.list_(pa.string())),
        "info": pa.array([{"b": i, "a": "名"} for i in range(rows)], pa.struct([("b", pa.int64()), ("a", pa.string())])),
        "when": pa.array([datetime.datetime(2020, 1, 1 + i % 28) for i in range(rows)], pa.timestamp("us")),
        "blob": pa.array([bytes([i % 256]) for i in range(rows)], pa.binary()),
        "nothing": pa.array([None] * rows, pa.null()),
        "_ingest": pa.array(["overwritten"] * rows),
        "Upper": pa.array(["sorted before _ingest"] * rows),
    })


def _read(items, config, limit, monkeypatch, columnar: bool) -> list:
    if not columnar:  # the record-by-record path: what ingest did before rows were prepared by column
        monkeypatch.setattr(parquet, "_prepared", lambda *args: None)
    else:
        monkeypatch.undo()
    out = []
    for table, removed, records in read_files(items, config.ingest, limit=limit):
        out.append(("kept", table.to_pylist()))
        if removed.num_rows or records is not None:  # a file's end, or shard_bytes of removed text
            out.append(("removed", removed.to_pylist(), None if records is None else records.records))
    return out


@pytest.mark.parametrize("source", [
    {"id_field": "id", "category_field": "category"},
    {"id_field": "id"},
    {},  # ids from the file and row
    {"id_field": "missing"},  # every row lacks an id
])
def test_columns_give_what_records_give(tmp_path, monkeypatch, source):
    table = _table(600)
    for part in range(3):  # a directory: small files share a unit, kept rows carried across them
        pq.write_table(table.slice(part * 200, 200), tmp_path / f"part-{part}.parquet", row_group_size=64)
    config = parse_config({"work_dir": str(tmp_path / "work"), "ingest": {"shard_bytes": 1000, "max_doc_bytes": 800},
                           "inputs": [{"name": "src", "path": str(tmp_path), "category": "web", **source}]})
    items = tuple(list_input_files(config.inputs[0]))
    assert len(items) == 3
    for limit in (None, 1, 37, 64, 250, 599):
        columnar = _read(items, config, limit, monkeypatch, columnar=True)
        assert columnar == _read(items, config, limit, monkeypatch, columnar=False), limit
    whole = _read(items, config, None, monkeypatch, columnar=True)
    kept = [row for side, rows, *_ in whole if side == "kept" for row in rows]
    removed = [row for side, rows, *_ in whole if side == "removed" for row in rows]
    assert len(kept) + len(removed) == 600
    metas = [_strict_json(row["meta"]) for row in kept + removed]
    assert sum(1 for meta in metas if "score" in meta and meta["score"] is None) > 600 // 7  # null, NaN and inf alike
    if source.get("id_field") == "missing":
        assert not kept and {row["reason"] for row in removed} == {"missing_id"}
        return
    assert len(kept) > 200 and len({row["reason"] for row in removed}) >= 3
    assert len([rows for side, rows, *_ in whole if side == "kept" and rows]) > 10  # shards cut inside batches
    meta = json.loads(kept[0]["meta"])
    assert meta["_ingest"] == {"file": kept[0]["id"].split("/", 1)[1].split("#")[0].split(":")[0], "row": meta["_ingest"]["row"]}
    assert list(meta) == sorted(meta) and meta["info"] == {"a": "名", "b": meta["count"]}


def test_a_row_quarantined_in_fail_mode_names_the_category(tmp_path):
    pq.write_table(pa.table({"text": ["fine", "also fine"], "kind": ["web", "poetry"]}), tmp_path / "p.parquet")
    config = parse_config({"work_dir": str(tmp_path / "work"), "ingest": {"on_bad_input": "fail"},
                           "inputs": [{"name": "p", "path": str(tmp_path / "p.parquet"), "category": "web",
                                       "category_field": "kind"}]})
    with pytest.raises(ingest.InputError, match=r"p.parquet:row 2: .*\(bad_category\); field 'kind' is 'poetry'"):
        list(read_files(tuple(list_input_files(config.inputs[0])), config.ingest))


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_a_binary_text_column_is_read_as_utf8_text(tmp_path, kind):
    # Some writers leave text as Parquet byte arrays without the UTF-8 annotation: such a column is
    # text, and a row that is not UTF-8 is that row's problem (invalid_utf8), not the column's.
    texts = list(TEXTS)
    good = pa.table({"text": pa.array(texts, pa.string()), "id": [f"d{i}" for i in range(len(texts))]})
    for name in ("a-string", "b-binary", "c-mixed"):  # one file name: it is in each row's meta
        (tmp_path / name).mkdir()
    pq.write_table(good, tmp_path / "a-string" / "p.parquet")
    pq.write_table(good.set_column(0, "text", good.column("text").cast(kind)), tmp_path / "b-binary" / "p.parquet")
    raw = [text.encode() if text is not None else None for text in texts]
    raw[0] = b"bad \xff byte"
    pq.write_table(pa.table({"text": pa.array(raw, kind), "id": [f"d{i}" for i in range(len(texts))]}), tmp_path / "c-mixed" / "p.parquet")
    out = {}
    for name in ("a-string", "b-binary", "c-mixed"):
        config = parse_config({"work_dir": str(tmp_path / "work"), "inputs": [
            {"name": "src", "path": str(tmp_path / name / "p.parquet"), "category": "web", "id_field": "id"}]})
        sides = list(read_files(tuple(list_input_files(config.inputs[0])), config.ingest))
        out[name] = ([row for kept, _, _ in sides for row in kept.to_pylist()],
                     [row for _, removed, _ in sides for row in removed.to_pylist()])
    assert out["b-binary"] == out["a-string"] and len(out["a-string"][0]) == 7
    kept, removed = out["c-mixed"]
    assert kept == out["a-string"][0][1:]  # the rows read one by one keep what the column gave
    assert removed[0]["id"] == "src/d0" and removed[0]["reason"] == "invalid_utf8" and removed[0]["text"] == "bad \ufffd byte"
    assert removed[1:] == out["a-string"][1]


def test_wide_rows_are_read_in_smaller_batches_with_the_same_output(tmp_path, monkeypatch):
    """Rows whose other columns are wide (a page's HTML beside its text) are read fewer than 1,000
    to a batch (``BATCH_BYTES``), and the shards and removed rows are the same as with batches of 1,000."""
    table = _table(300).append_column("html", pa.array([f"<p>{i}</p>" + "h" * 3_000 for i in range(300)]))
    pq.write_table(table, tmp_path / "wide.parquet", row_group_size=120)
    config = parse_config({"work_dir": str(tmp_path / "work"), "ingest": {"shard_bytes": 20_000, "max_doc_bytes": 800},
                           "inputs": [{"name": "w", "path": str(tmp_path / "wide.parquet"), "category": "web", "id_field": "id"}]})
    items = tuple(list_input_files(config.inputs[0]))
    metadata = pq.read_metadata(tmp_path / "wide.parquet")

    def read() -> list:
        return [(kept.to_pylist(), removed.to_pylist()) for kept, removed, _ in read_files(items, config.ingest)]

    assert parquet._batch_rows(metadata, range(3)) == 1000
    whole = read()
    monkeypatch.setattr(parquet, "BATCH_BYTES", 50_000)
    assert 5 <= parquet._batch_rows(metadata, range(3)) <= 20
    batches = []
    monkeypatch.setattr(parquet, "_rows", lambda rows, *args: (batches.append(b.num_rows) or b for b in _rows(rows, *args)))
    assert read() == whole and max(batches) <= 20 and len(whole) > 3
