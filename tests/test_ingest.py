"""Ingest: every input format, stable ids, bounded shards, and every kind of bad input."""
from __future__ import annotations

import gzip
import json
import math
import posixpath
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from pipeline.config import ConfigError, load_config, parse_config
from pipeline.executor import TaskFailed
from pipeline.runner import run_pipeline


def _config(tmp_path: Path, inputs: list[dict], **ingest) -> dict:
    return {"work_dir": str(tmp_path / "work"), "inputs": inputs, "ingest": ingest}


def _read(tmp_path: Path, side: str) -> list[dict]:
    files = sorted((tmp_path / "work" / "01_ingest" / side).glob("*.parquet"))
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def _lines(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode()) + b"\n" for r in records)


def test_reads_every_format_with_stable_ids(tmp_path):
    docs = [{"id": f"d{i}", "text": f"document number {i} 文本", "url": f"https://example.org/{i}"} for i in range(6)]
    (tmp_path / "plain.jsonl").write_bytes(_lines(*docs[:2]))
    (tmp_path / "packed.jsonl.gz").write_bytes(gzip.compress(_lines(*docs[2:4])))
    (tmp_path / "packed.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_lines(*docs[4:])))
    pq.write_table(pa.table({"paper_id": ["p1", "p2"], "abstract": ["first abstract", "second abstract"]}),
                   tmp_path / "papers.parquet")
    (tmp_path / "books" / "shelf").mkdir(parents=True)
    (tmp_path / "books" / "a.txt").write_text("Chapter one.", encoding="utf-8")
    (tmp_path / "books" / "shelf" / "b.txt").write_text("第二章。", encoding="utf-8")
    config = parse_config(_config(tmp_path, [
        {"name": "web", "path": str(tmp_path / "*.json*"), "category": "web", "id_field": "id"},
        {"name": "papers", "path": str(tmp_path / "papers.parquet"), "category": "papers", "text_field": "abstract"},
        {"name": "books", "path": str(tmp_path / "books"), "category": "books"},
    ]))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    kept = _read(tmp_path, "kept")
    # `web` is a glob (it may hold many files), so its id_field ids carry the file: unique by construction
    web_ids = ["web/plain.jsonl#d0", "web/plain.jsonl#d1", "web/packed.jsonl.gz#d2", "web/packed.jsonl.gz#d3",
               "web/packed.jsonl.zst#d4", "web/packed.jsonl.zst#d5"]
    assert sorted(row["id"] for row in kept) == sorted(
        web_ids + ["papers/papers.parquet:row 1", "papers/papers.parquet:row 2", "books/a.txt", "books/shelf/b.txt"])
    by_id = {row["id"]: row for row in kept}
    assert by_id["web/packed.jsonl.gz#d3"]["text"] == "document number 3 文本"
    assert json.loads(by_id["web/packed.jsonl.gz#d3"]["meta"])["url"] == "https://example.org/3"
    assert json.loads(by_id["papers/papers.parquet:row 2"]["meta"])["paper_id"] == "p2"
    assert by_id["books/shelf/b.txt"]["category"] == "books"
    assert _read(tmp_path, "removed") == []


def test_shards_are_bounded_by_text_bytes(tmp_path):
    """One unit (a compressed file is read whole) cut into shards of ``shard_bytes`` of text."""
    docs = [{"text": "x" * 100} for _ in range(50)]
    (tmp_path / "big.jsonl.gz").write_bytes(gzip.compress(_lines(*docs)))
    config = parse_config(_config(tmp_path, [{"name": "s", "path": str(tmp_path / "big.jsonl.gz"),
                                              "category": "others"}], shard_bytes=1000))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    shards = sorted((tmp_path / "work" / "01_ingest" / "kept").glob("*.parquet"))
    assert len(shards) == 5
    assert all(pq.read_metadata(s).num_rows == 10 for s in shards)
    ids = [row["id"] for row in _read(tmp_path, "kept")]
    assert ids == [f"s/big.jsonl.gz:{i}" for i in range(1, 51)]


BAD_LINES = [
    ({"id": "good", "text": "a fine document"}, None),
    (b'{"id": "broken", "text": "no closing brace"', "malformed_json"),
    (b'{"id": "latin1", "text": "caf\xe9"}', "invalid_utf8"),
    ({"id": "notext", "title": "no text field"}, "missing_text"),
    ({"id": "number", "text": 42}, "non_string_text"),
    ({"id": "blank", "text": "   \n "}, "empty_text"),
    ({"id": "nuls", "text": " \x00 \x00\n"}, "empty_text"),
    ({"id": "nul and a word", "text": "\x00 word \x00"}, None),
    (b'{"id": "surrogate", "text": "\\ud800 lone half"}', "invalid_utf8"),
    (b'["a", "list"]', "not_an_object"),
    ({"id": "huge", "text": "y" * 5000}, "too_large"),
    ({"id": "good", "text": "same id again"}, "duplicate_id"),
    ({"text": "no id although id_field is set"}, "missing_id"),
    # Python's JSON decoder recurses per level: a RecursionError, once a crash of the task
    (b'{"id": "deep", "x": ' + b"[" * 3_000 + b"]" * 3_000 + b', "text": "deep"}', "malformed_json"),
    (b'{"id": "\\udc00 half", "text": "an id that cannot be written"}', "invalid_id"),  # once a crash too
    # decodable, but past the fixed limit: where the decoder's own limit falls depends on the stack
    (b'{"id": "nested", "x": ' + b"[" * 250 + b"]" * 250 + b', "text": "deep"}', "malformed_json"),
    # more than 8 x max_doc_bytes (1,000 here): not read, so that a 3 GB line costs neither memory nor a crash
    ({"id": "enormous", "text": "z" * 9_000}, "record_too_large"),
]


def test_bad_input_is_quarantined_with_reason_and_location(tmp_path):
    # a byte order mark before the first line is not part of it
    (tmp_path / "bad.jsonl").write_bytes(b"\xef\xbb\xbf" + _lines(*(line for line, _ in BAD_LINES)) + b"\n")
    config = parse_config(_config(tmp_path, [{"name": "b", "path": str(tmp_path / "bad.jsonl"),
                                              "category": "web", "id_field": "id"}], max_doc_bytes=1000))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    kept, removed = _read(tmp_path, "kept"), _read(tmp_path, "removed")
    assert [row["id"] for row in kept] == ["b/good", "b/nul and a word"]
    assert len(kept) + len(removed) == len(BAD_LINES)
    expected = [(number, reason) for number, (_, reason) in enumerate(BAD_LINES, start=1) if reason]
    got = [(json.loads(row["meta"])["_ingest"]["line"], row["reason"]) for row in removed]
    assert got == expected
    latin1 = next(row for row in removed if row["reason"] == "invalid_utf8")
    assert "caf\ufffd" in latin1["text"]
    deep, lone, nested, enormous = removed[-4:]
    assert json.loads(deep["meta"])["error"] == "nested more than 200 levels deep" and deep["id"] == "b/bad.jsonl:14"
    assert lone["id"] == "b/bad.jsonl:15"  # filed where it is: its own id cannot be written
    assert json.loads(nested["meta"])["error"] == json.loads(deep["meta"])["error"]
    assert enormous["id"] == "b/bad.jsonl:17" and enormous["text"] == json.dumps({"id": "enormous", "text": "z" * 9_000})
    assert json.loads(enormous["meta"])["error"].startswith("9,030 bytes, more than 8 x ingest.max_doc_bytes: not read")
    manifest = json.loads((tmp_path / "work" / "01_ingest" / "_manifest.json").read_text())
    assert manifest["totals"]["input_rows"] == len(BAD_LINES)


@pytest.mark.parametrize("line, message", [
    (b'{"text": "ok"}\n{"text": oops}', "bad.jsonl:2: the line is not valid JSON"),
    (b'{"text": 7}', "bad.jsonl:1: the text field is not a string (non_string_text); expected a non-empty string in field 'text'"),
    (b'{"text": "caf\xe9"}', "bad.jsonl:1: the bytes are not valid UTF-8"),
])
def test_fail_mode_names_file_and_line(tmp_path, line, message):
    (tmp_path / "bad.jsonl").write_bytes(line + b"\n")
    config = parse_config(_config(tmp_path, [{"name": "b", "path": str(tmp_path / "bad.jsonl"), "category": "web"}],
                                  on_bad_input="fail"))
    with pytest.raises(TaskFailed, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_pipeline(config, use_ray=False, log=lambda _: None)


def test_parquet_without_the_text_column_is_a_clear_error(tmp_path):
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "p.parquet")
    config = parse_config(_config(tmp_path, [{"name": "p", "path": str(tmp_path / "p.parquet"), "category": "web"}]))
    with pytest.raises(TaskFailed, match=r"p.parquet: no column 'text'.*columns are \['body'\]"):
        run_pipeline(config, use_ray=False, log=lambda _: None)


@pytest.mark.parametrize("yaml_text, message", [
    ("work_dir: w\ninputs: [{name: a, path: x, category: web}]\ningest: {shard_byte: 5}\n", "ingest.shard_byte: unknown key"),
    ("work_dir: w\ninputs: [{name: a, path: x, category: blogs}]\n", "inputs.0.category: Input should be"),
    ("work_dir: w\ninputs: [{name: a, path: x, category: web}]\ningest: {shard_bytes: many}\n", "ingest.shard_bytes: Input should be a valid integer"),
    ("work_dir: w\ninputs: [{name: a, path: x, category: web}]\nstages: {spellcheck: {}}\n", "stages.spellcheck: unknown stage 'spellcheck'"),
    ("work_dir: w\n", "inputs: Field required"),
    ("work_dir: [unclosed\n", "not valid YAML"),
])
def test_config_errors_name_the_file_and_key(tmp_path, yaml_text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")) as error:
        load_config(path)
    assert str(path) in str(error.value)


def test_missing_input_path_is_a_clear_error(tmp_path):
    from pipeline.runner import PipelineError

    config = parse_config(_config(tmp_path, [{"name": "nope", "path": str(tmp_path / "absent.jsonl"), "category": "web"}]))
    with pytest.raises(PipelineError, match="input 'nope'.*absent.jsonl does not exist"):
        run_pipeline(config, use_ray=False, log=lambda _: None)


def test_a_config_written_out_whole_loads_again_with_the_same_stage_hashes(tmp_path):
    """``model_dump()`` writes every default; a key given its default (``category_field: null`` on a
    text input) reads as not given, so the dump loads again and plans the same stages."""
    from conftest import SAMPLE_CONFIG
    from pipeline.planning import plan_stages

    config = load_config(str(SAMPLE_CONFIG))
    again = parse_config(config.model_dump())
    assert [s.hash for s in plan_stages(again, fingerprints=False)] == [s.hash for s in plan_stages(config, fingerprints=False)]
    parse_config(_config(tmp_path, [{"name": "t", "path": str(tmp_path), "format": "txt", "category": "web",
                                     "category_field": None, "extractor": "auto"}]))


def test_config_hash_is_the_same_in_every_process():
    """Hashes decide what a rerun redoes, so they must not depend on PYTHONHASHSEED (set order)."""
    import subprocess
    import sys

    from conftest import REPO, SAMPLE_CONFIG

    script = ("from pipeline.config import load_config; from pipeline.runner import plan_stages; "
              f"print([s.hash for s in plan_stages(load_config({str(SAMPLE_CONFIG)!r}))])")
    outputs = {subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                              env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout
               for seed in (1, 2, 3)}
    assert len(outputs) == 1 and "[" in outputs.pop()


def _manifest_units(tmp_path: Path) -> list[dict]:
    return json.loads((tmp_path / "work" / "01_ingest" / "_manifest.json").read_text())["units"]


def test_small_files_share_a_unit_and_a_large_parquet_file_is_cut_at_row_groups(tmp_path):
    """Units of about ``shard_bytes`` whatever the layout: 40 tiny files are 4 units of at most
    ``max_files_per_unit`` (not 40 tasks and 40 shards), a Parquet file of 10 row groups over the
    target is several units, and ids, rows, order and conservation are those of one file per unit."""
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for i in range(40):
        (tiny / f"doc-{i:03d}.jsonl").write_bytes(_lines({"id": f"t{i}", "text": f"tiny document {i}"}))
    rows = [f"row {i} " + "x" * 2000 for i in range(100)]
    pq.write_table(pa.table({"text": rows}), tmp_path / "big.parquet", row_group_size=10)
    inputs = [{"name": "tiny", "path": str(tiny), "category": "web", "id_field": "id"},
              {"name": "big", "path": str(tmp_path / "big.parquet"), "category": "books"}]

    run_pipeline(parse_config(_config(tmp_path, inputs, shard_bytes=50_000, max_files_per_unit=10)),
                 use_ray=False, log=lambda _: None)
    units = _manifest_units(tmp_path)
    tiny_units = [u for u in units if u["unit"].startswith("000-")]
    big_units = [u for u in units if u["unit"].startswith("001-")]
    assert [u["input_rows"] for u in tiny_units] == [10, 10, 10, 10]
    assert len(big_units) > 1 and sum(u["input_rows"] for u in big_units) == 100
    kept = _read(tmp_path, "kept")
    assert len(list((tmp_path / "work" / "01_ingest" / "kept").glob("part-000-*"))) == 4
    assert [r["id"] for r in kept if r["source"] == "tiny"] == [f"tiny/doc-{i:03d}.jsonl#t{i}" for i in range(40)]
    assert [r["id"] for r in kept if r["source"] == "big"] == [f"big/big.parquet:row {i + 1}" for i in range(100)]
    assert [r["text"] for r in kept if r["source"] == "big"] == rows
    assert not (tmp_path / "work" / "01_ingest" / "_scratch" / "pieces").exists()  # no id_field: no pass before the pieces
    grouped = {r["id"]: r for r in kept}

    # the same documents, byte for byte, with one file per unit and the Parquet file read whole
    other = tmp_path / "whole"
    other.mkdir()
    run_pipeline(parse_config(_config(other, inputs, shard_bytes=10_000_000, max_files_per_unit=1)),
                 use_ray=False, log=lambda _: None)
    assert len(_manifest_units(other)) == 41
    assert {r["id"]: r for r in _read(other, "kept")} == grouped


def test_listed_files_are_named_relative_to_their_input_as_relpath_names_them(tmp_path):
    """``list_input_files`` names each file under its root by slicing (relpath costs about 10 us a
    file, and planning lists the inputs more than once): the same names, nested or not, for a
    directory (with or without a trailing slash), a glob, and a single file."""
    from stages.ingest import list_input_files

    for relative in ("a.jsonl", "sub/b.jsonl", "sub/deeper/c.jsonl.gz", "x.y/d.jsonl"):
        (tmp_path / "in" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / relative).write_bytes(_lines({"id": "1", "text": "some text"}))
    config = parse_config(_config(tmp_path, [{"name": "n", "path": str(tmp_path / "in"), "category": "web"}]))
    for path in (f"{tmp_path}/in", f"{tmp_path}/in/", f"{tmp_path}/in/**/*.jsonl*", f"{tmp_path}/in/sub/b.jsonl"):
        source = config.inputs[0].model_copy(update={"path": path})
        items = list_input_files(source)
        root = path.split("*")[0].rstrip("/") if "*" in path else path
        root = posixpath.dirname(root) if root.endswith(".jsonl") else root
        assert items and all(item.relative == posixpath.relpath(item.path, root) for item in items), path


def test_a_run_lists_its_input_files_once_and_the_next_run_lists_them_anew(tmp_path, monkeypatch):
    """Planning asks for the source stage's units three times (which stages may run, which run
    together, the stage itself); the files are listed once per run, and a later run sees a new file."""
    from stages.ingest import Ingest

    listed = []
    units = Ingest.units
    monkeypatch.setattr(Ingest, "units", staticmethod(lambda config: listed.append(1) or units(config)))
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.jsonl").write_bytes(_lines({"id": "a", "text": "first text"}))
    config = parse_config({**_config(tmp_path, [{"name": "n", "path": str(inputs), "category": "web"}]),
                           "stages": {"langid": {}}})
    run_pipeline(config, use_ray=False, only="ingest", log=lambda _: None)
    assert len(listed) == 1 and [r["text"] for r in _read(tmp_path, "kept")] == ["first text"]
    (inputs / "b.jsonl").write_bytes(_lines({"id": "b", "text": "second text"}))
    run_pipeline(config, use_ray=False, only="ingest", log=lambda _: None)
    assert len(listed) == 2 and sorted(r["text"] for r in _read(tmp_path, "kept")) == ["first text", "second text"]


def _shard_rows(directory: Path) -> list[int]:
    return [pq.read_metadata(s).num_rows for s in sorted((directory / "work" / "01_ingest" / "kept").glob("*.parquet"))]


def test_parquet_units_are_cut_into_even_shards_without_a_small_last_one(tmp_path):
    """Where the footer tells how much text a unit holds, its shards are the nearest whole number
    of ``shard_bytes`` and equal: 90 documents of 10 KB at a 500 KB target are about 45 + 45 (compressed
    JSON lines, whose text is unknown before reading, are still 50 + 40), and 56 are one shard, not 50
    + 6. A dictionary-encoded column stores a repeated text once, so its footer counts less text
    than it holds: a few repeats still go into the last shard, and a column of nothing but repeats
    is cut as if there were no estimate. The same documents in the same order in every case."""
    def texts(count: int, distinct: int) -> list[str]:
        return [f"{i % distinct:04d} " + "x" * 9995 for i in range(count)]

    cases = {"even": texts(90, 90), "one": texts(56, 56), "few repeats": texts(56, 50), "repeats": texts(90, 5)}
    rows = {}
    for number, (name, docs) in enumerate(cases.items()):
        (tmp_path / f"in-{number}").mkdir()
        pq.write_table(pa.table({"text": docs}), tmp_path / f"in-{number}" / "in.parquet")
        (tmp_path / f"in-{number}" / "in.jsonl.gz").write_bytes(gzip.compress(_lines(*({"text": text} for text in docs))))
        for form in ("parquet", "jsonl.gz"):
            directory = tmp_path / f"out-{number}-{form}"
            run_pipeline(parse_config(_config(directory, [
                {"name": "s", "path": str(tmp_path / f"in-{number}" / f"in.{form}"), "category": "others"}],
                shard_bytes=500_000)), use_ray=False, log=lambda _: None)
            rows[name, form] = _shard_rows(directory)
            assert [r["text"] for r in _read(directory, "kept")] == docs
    (first, second), jsonl = rows["even", "parquet"], rows["even", "jsonl.gz"]
    assert abs(first - second) <= 2 and first + second == 90 and jsonl == [50, 40]  # a footer's headers count too
    assert rows["one", "parquet"] == [56] and rows["one", "jsonl.gz"] == [50, 6]
    assert rows["few repeats", "parquet"] == [56] and rows["few repeats", "jsonl.gz"] == [50, 6]
    assert rows["repeats", "parquet"] == rows["repeats", "jsonl.gz"] == [50, 40]


def test_a_large_parquet_file_is_cut_into_pieces_of_even_text(tmp_path):
    """Pieces hold the nearest whole number of targets of text, by the text column alone: 10 row
    groups of 100 KB at a 250 KB target are 4 pieces of 2-3 groups, not 3 + 3 + 3 + 1, and a wider
    other column does not make them smaller."""
    rows = [f"row {i:03d} " + "x" * 9992 for i in range(100)]
    pq.write_table(pa.table({"text": rows, "other": [f"{i} " + "y" * 20_000 for i in range(100)]}),
                   tmp_path / "big.parquet", row_group_size=10, compression="none")
    run_pipeline(parse_config(_config(tmp_path, [{"name": "big", "path": str(tmp_path / "big.parquet"),
                                                  "category": "books"}], shard_bytes=250_000)),
                 use_ray=False, log=lambda _: None)
    assert [u["input_rows"] for u in _manifest_units(tmp_path)] == [30, 20, 30, 20]
    assert _shard_rows(tmp_path) == [30, 20, 30, 20]
    assert [r["text"] for r in _read(tmp_path, "kept")] == rows


@pytest.mark.parametrize("row_group_size", [10, 100])
def test_ids_stay_unique_in_a_parquet_file_cut_into_pieces(tmp_path, row_group_size):
    """A large Parquet file is read as several units, cut at row groups or, where it is one group,
    inside it by row count; an id repeated in a later piece is a ``duplicate_id`` as it is when the
    file is read whole (each piece reads its earlier pieces' ids)."""
    ids = [f"d{i % 60}" for i in range(100)]  # rows 60-99 repeat the ids of rows 0-39
    rows = [f"row {i} " + "x" * 2000 for i in range(100)]
    pq.write_table(pa.table({"id": ids, "text": rows}), tmp_path / "big.parquet", row_group_size=row_group_size,
                   compression="none")  # a file is cut when its size on disk is over the target
    inputs = [{"name": "big", "path": str(tmp_path / "big.parquet"), "category": "books", "id_field": "id"}]
    results = {}
    for name, shard_bytes in (("pieces", 50_000), ("whole", 10_000_000)):
        directory = tmp_path / name
        directory.mkdir()
        run_pipeline(parse_config(_config(directory, inputs, shard_bytes=shard_bytes)), use_ray=False, log=lambda _: None)
        results[name] = ([u["input_rows"] for u in _manifest_units(directory)], [r["id"] for r in _read(directory, "kept")],
                         sorted((r["id"], r["reason"], r["text"]) for r in _read(directory, "removed")))
    assert len(results["pieces"][0]) >= 4 and results["whole"][0] == [100]  # 200 KB of text at 50 KB
    if row_group_size == 100:  # one group: cut by rows into parts of equal text
        assert results["pieces"][0] == [25, 25, 25, 25]
    assert results["pieces"][1:] == results["whole"][1:]
    assert results["pieces"][1] == [f"big/d{i}" for i in range(60)]
    # the pieces' ids were read once, in the pass before them; a piece holds only the earlier ids it repeats
    befores = sorted((tmp_path / "pieces" / "work" / "01_ingest" / "_scratch" / "pieces").glob("*.before.json"))
    seen = [json.loads(path.read_text())["seen"] for path in befores]
    assert len(befores) == len(results["pieces"][0]) and seen[0] == []
    assert sorted(doc_id for ids in seen for doc_id in ids) == sorted(f"big/d{i}" for i in range(40))
    assert [(doc_id, reason) for doc_id, reason, _ in results["pieces"][2]] == sorted(
        (f"big/d{i}", "duplicate_id") for i in range(40))


def test_a_grouped_unit_cuts_shards_across_files_and_keeps_every_files_bad_records(tmp_path):
    # compressed, so both files are far smaller on disk than the 1,000 text bytes of a shard
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jsonl.gz").write_bytes(gzip.compress(_lines({"text": "a" * 600}, b"{not json")))
    (tmp_path / "in" / "b.jsonl.gz").write_bytes(
        gzip.compress(_lines({"text": ""}, {"text": "b" * 600}, {"text": "c" * 600})))
    run_pipeline(parse_config(_config(tmp_path, [{"name": "in", "path": str(tmp_path / "in"), "category": "web"}],
                                      shard_bytes=1000)), use_ray=False, log=lambda _: None)
    (unit,) = _manifest_units(tmp_path)
    assert unit["input_rows"] == 5 and unit["kept_rows"] == 3 and unit["removed_rows"] == 2
    shards = sorted((tmp_path / "work" / "01_ingest" / "kept").glob("*.parquet"))
    # the first shard holds a's document and b's first: it filled up in the second file
    assert [pq.read_table(s).column("text").to_pylist() for s in shards] == [["a" * 600, "b" * 600], ["c" * 600]]
    removed = {r["id"]: r["reason"] for r in _read(tmp_path, "removed")}
    assert removed == {"in/a.jsonl.gz:2": "malformed_json", "in/b.jsonl.gz:1": "empty_text"}


def test_category_field_gives_each_record_its_category_and_quarantines_an_unknown_one(tmp_path):
    records = [{"text": "an article", "kind": "encyclopedia"}, {"text": "a post", "kind": "web"},
               {"text": "no kind"}, {"text": "a recipe", "kind": "recipes"}, {"text": "a novel", "kind": " Books "},
               {"text": "blank kind", "kind": "  "}, {"text": "a number", "kind": 3}]
    (tmp_path / "mixed.jsonl").write_bytes(_lines(*records))
    path = str(tmp_path / "mixed.jsonl")
    run_pipeline(parse_config(_config(tmp_path, [{"name": "mixed", "path": path, "category_field": "kind",
                                                  "category": "others"}])), use_ray=False, log=lambda _: None)
    assert [(r["text"], r["category"]) for r in _read(tmp_path, "kept")] == [
        ("an article", "encyclopedia"), ("a post", "web"), ("no kind", "others"), ("a novel", "books"),
        ("blank kind", "others")]
    assert [(r["id"], r["reason"]) for r in _read(tmp_path, "removed")] == [
        ("mixed/mixed.jsonl:4", "bad_category"), ("mixed/mixed.jsonl:7", "bad_category")]

    with pytest.raises(ConfigError, match=r"inputs\.0.*category.*category_field"):
        parse_config(_config(tmp_path, [{"name": "mixed", "path": path}]))
    with pytest.raises(ConfigError, match="category_field: not read by the txt reader"):
        parse_config(_config(tmp_path, [{"name": "t", "path": path, "format": "txt", "category_field": "kind"}]))
    strict = _config(tmp_path / "strict", [{"name": "mixed", "path": path, "category_field": "kind"}],
                     on_bad_input="fail")
    with pytest.raises(Exception, match=r"mixed.jsonl:3: .*bad_category.*'kind' is None, expected one of web"):
        run_pipeline(parse_config(strict), use_ray=False, log=lambda _: None)


def test_lang_field_declares_each_records_language_and_quarantines_a_value_that_is_not_a_code(tmp_path):
    records = [{"text": "an article", "language": "EN"}, {"text": "一篇文章", "language": "zh_Hant"},
               {"text": "undeclared", "language": ""}, {"text": "a number", "language": 7},
               {"text": "a sentence", "language": "english!"}, {"text": "undetermined", "language": "UND"}]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_lines(*records))
    run_pipeline(parse_config(_config(tmp_path, [{"name": "mixed", "path": str(path), "category": "web",
                                                  "lang_field": "language"}])), use_ray=False, log=lambda _: None)
    kept = [(r["text"], json.loads(r["meta"]).get("_lang")) for r in _read(tmp_path, "kept")]
    # ISO 639's und (and mul, mis, zxx) declare no language: langid classifies such a record
    assert kept == [("an article", "en"), ("一篇文章", "zh-Hant"), ("undeclared", None), ("undetermined", None)]
    assert [(r["id"], r["reason"]) for r in _read(tmp_path, "removed")] == [
        ("mixed/mixed.jsonl:4", "bad_lang"), ("mixed/mixed.jsonl:5", "bad_lang")]

    strict = _config(tmp_path / "strict", [{"name": "mixed", "path": str(path), "category": "web",
                                            "lang_field": "language"}], on_bad_input="fail")
    with pytest.raises(Exception, match=r"mixed.jsonl:4: .*bad_lang.*'language' is 7, expected a language code"):
        run_pipeline(parse_config(strict), use_ray=False, log=lambda _: None)
    with pytest.raises(ConfigError, match="lang_field: not read by the txt reader"):
        parse_config(_config(tmp_path, [{"name": "t", "path": str(path), "format": "txt", "category": "web",
                                         "lang_field": "language"}]))


def test_langid_takes_a_declared_language_instead_of_classifying(tmp_path):
    records = [{"text": "This is plainly an English sentence about the weather.", "language": "de"},
               {"text": "這是一個關於天氣的句子，寫得很清楚。", "language": "zh-Hant"},
               {"text": "Ceci est une phrase française sur le temps qu'il fait.", "language": ""},
               {"text": "Dies ist ein deutscher Satz über das Wetter von heute.", "language": "ru"}]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(_lines(*records))
    config = _config(tmp_path, [{"name": "mixed", "path": str(path), "category": "web", "lang_field": "language"}])
    config["stages"] = {"langid": {"languages": ["de", "zh", "fr"]}}
    run_pipeline(parse_config(config), use_ray=False, log=lambda _: None)

    def rows(side: str) -> list[tuple]:
        files = sorted((tmp_path / "work" / "02_langid" / side).glob("*.parquet"))
        return [(r["text"][:4], r["lang"], r["lang_score"], r["script"], r.get("reason"))
                for f in files for r in pq.read_table(f).to_pylist()]

    kept = rows("kept")
    # declared: taken as given (even where the model would disagree), no score; undeclared: classified
    assert [row[:2] for row in kept] == [("This", "de"), ("這是一個", "zh"), ("Ceci", "fr")]
    assert kept[0][2] is None and kept[1][2:4] == (None, "Hant") and kept[2][2] > 0.5
    assert rows("removed") == [("Dies", "ru", None, None, "lang_not_kept")]
    stats = json.loads((tmp_path / "work" / "02_langid" / "_stats.json").read_text())
    assert json.dumps(stats).count('"declared"') >= 1

    config["stages"]["langid"]["declared_lang"] = "ignore"
    config["work_dir"] = str(tmp_path / "ignored")
    run_pipeline(parse_config(config), use_ray=False, log=lambda _: None)
    langs = [r["lang"] for f in sorted((tmp_path / "ignored" / "02_langid" / "kept").glob("*.parquet"))
             for r in pq.read_table(f).to_pylist()]
    assert langs == ["zh", "fr", "de"]  # the English sentence classified as en, not kept


PARQUET_ROWS = [  # (id, text, category): every check ingest makes of a record, on a Parquet row
    ("good", "a fine document", "web"),
    ("nul", "\x00 word \x00", "web"),
    ("blank", " \u3000\x00\n\x85", "web"),
    ("empty", "", "web"),
    ("null", None, "web"),
    ("huge", "y" * 5000, "web"),
    ("good", "same id again", "web"),
    (None, "no id", "web"),
    ("", "empty id", "web"),
    ("cat", "not a category", "poetry"),
    ("cat", "the id of a removed row may be used again", "books"),
    ("wide", "文本 " * 100, None),  # no category in the row: the input's
]


@pytest.mark.parametrize("text_type", [pa.string(), pa.large_string()])
def test_parquet_texts_kept_as_arrow_are_checked_and_cut_as_python_strings_are(tmp_path, text_type):
    """A plain text column stays Arrow data from file to shard (``stages.ingest.TextRef``); with a
    URL list (any, here one that blocks nothing) every record goes through Python. Both must keep,
    remove and cut the same rows into the same shards."""
    ids, texts, categories = zip(*[(f"{doc_id}-{copy}" if doc_id else doc_id, text, category)
                                   for copy in range(200) for doc_id, text, category in PARQUET_ROWS])
    table = pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, text_type),
                      "category": pa.array(categories, pa.string()), "n": list(range(len(ids)))})
    pq.write_table(table, tmp_path / "rows.parquet", row_group_size=100)
    (tmp_path / "domains").write_text("blocked.example\n", encoding="utf-8")
    common = {"path": str(tmp_path / "rows.parquet"), "category": "web", "id_field": "id",
              "category_field": "category"}
    config = parse_config(_config(tmp_path, [
        {"name": "arrow", **common},
        {"name": "python", **common, "url_filter": {"block_domains": [str(tmp_path / "domains")]}},
    ], max_doc_bytes=1000, shard_bytes=100_000))
    run_pipeline(config, use_ray=False, log=lambda _: None)

    def by_input(side: str) -> dict[str, list[tuple]]:
        rows: dict[str, list[tuple]] = {"arrow": [], "python": []}
        for shard in sorted((tmp_path / "work" / "01_ingest" / side).glob("*.parquet")):
            for row in pq.read_table(shard).to_pylist():
                name, _, rest = row["id"].partition("/")
                rows[name].append((shard.name.split("-", 2)[2], rest, row["text"], row["category"], row["meta"],
                                   row.get("reason")))
        return rows

    kept, removed = by_input("kept"), by_input("removed")
    assert kept["arrow"] == kept["python"] and removed["arrow"] == removed["python"]
    # shard names hold the unit (one per input here); within each, the same rows in the same shards
    assert len({shard for shard, *_ in kept["arrow"]}) > 1
    assert (tmp_path / "rows.parquet").stat().st_size < 100_000  # one unit per input: shards cut by ingest
    reasons = [row[-1] for row in removed["arrow"][:11]]
    assert reasons == ["empty_text", "empty_text", "missing_text", "too_large", "duplicate_id", "missing_id",
                       "missing_id", "bad_category", "empty_text", "empty_text", "missing_text"]
    assert len(kept["arrow"]) + len(removed["arrow"]) == len(ids)
    assert [text for _, _, text, *_ in kept["arrow"][:4]] == ["a fine document", "\x00 word \x00",
                                                             "the id of a removed row may be used again", "文本 " * 100]


def test_lines_are_the_same_whatever_the_chunks_they_arrive_in():
    """``Lines`` gives ``bytes.split(b"\\n")``'s lines (without a last empty one) however the bytes
    are cut into chunks, a line longer than many chunks included, and its ``offset`` and ``count``
    say where it is when the chunks stop early (a damaged file)."""
    from stages.readers.common import Lines

    data = b"first\n\n" + b"x" * 10_000 + b"\nshort\r\nlast without a newline"
    expected = data.split(b"\n")
    for size in (1, 3, 7, 64, 4096, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        assert list(Lines(iter(chunks))) == expected
        assert list(Lines(iter(chunks + [b"\n"]))) == expected  # a final newline adds no empty line
        head = data[:7 + 5_000]  # the chunks stop inside the long line
        partial = Lines(iter([head[i:i + size] for i in range(0, len(head), size)]))
        for _ in zip(range(2), partial):
            pass
        assert (partial.offset, partial.count) == (7, 2)
        assert list(partial) == [b"x" * 5_000] and partial.count == 3


def test_a_line_past_the_limit_is_handed_out_as_its_head_with_its_length():
    """``Lines(limit=...)``: a line longer than the limit comes out as its first ``HEAD`` bytes and
    ``cut`` says its length, whatever the chunks; the lines around it are whole, with ``cut`` 0."""
    from stages.readers.common import HEAD, Lines

    long = bytes(range(256)).replace(b"\n", b"") * 400  # 102,000 bytes, no newline
    data = b"before\n" + long + b"\nafter"
    for size in (1_000, 4_096, 65_536, len(data)):
        chunks = [data[i:i + size] for i in range(0, len(data), size)]
        lines = Lines(iter(chunks), limit=100_000)
        assert [(line, lines.cut) for line in lines] == [(b"before", 0), (long[:HEAD], len(long)), (b"after", 0)]
        assert (lines.offset, lines.count) == (len(data), 3)
        assert [(line, 0) for line in Lines(iter(chunks), limit=len(long))] == [(b"before", 0), (long, 0), (b"after", 0)]


def test_a_text_or_html_file_past_eight_times_max_doc_bytes_is_removed_unread(tmp_path):
    """A file that is one document and holds more than 8 x ``max_doc_bytes`` is ``record_too_large``
    with its first bytes, read no further; one under that is judged by its text as before."""
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "huge.txt").write_text("w " * 5_000)  # 10,000 bytes
    (tmp_path / "txt" / "big.txt").write_text("w " * 2_000)  # 4,000 bytes: read, and too_large
    (tmp_path / "html").mkdir()
    (tmp_path / "html" / "huge.html").write_text("<html><body><p>" + "w " * 5_000 + "</p></body></html>")
    inputs = [{"name": "t", "path": str(tmp_path / "txt"), "category": "books", "format": "txt"},
              {"name": "h", "path": str(tmp_path / "html"), "category": "web", "format": "html"}]
    run_pipeline(parse_config(_config(tmp_path, inputs, max_doc_bytes=1_000)), use_ray=False, log=lambda _: None)
    removed = {row["id"]: row for row in _read(tmp_path, "removed")}
    assert {doc_id: row["reason"] for doc_id, row in removed.items()} == {
        "t/huge.txt": "record_too_large", "t/big.txt": "too_large", "h/huge.html": "record_too_large"}
    assert removed["t/huge.txt"]["text"] == "w " * 5_000  # its head: the whole of so small a file
    assert "more than 8 x ingest.max_doc_bytes: not read" in json.loads(removed["h/huge.html"]["meta"])["error"]


def test_removed_rows_are_written_a_part_at_a_time_not_held_for_a_whole_file(tmp_path):
    """A file whose records are all removed (here: a wrong ``text_field``) is written to removed/ in
    parts of about ``shard_bytes`` of raw text, in order (``part-<unit>``, then ``_0001``...), so a
    task holds a part, not the file; a file with few removed rows keeps its one removed file."""
    records = [{"id": f"r{i}", "body": f"record {i} " + "x" * 500} for i in range(200)]  # 104 kB
    (tmp_path / "all.jsonl.gz").write_bytes(gzip.compress(_lines(*records)))
    config = parse_config(_config(tmp_path, [{"name": "a", "path": str(tmp_path / "all.jsonl.gz"),
                                              "category": "web", "id_field": "id"}], shard_bytes=20_000))
    (result,) = run_pipeline(config, use_ray=False, only="ingest", log=lambda _: None)
    (receipt,) = result.receipts
    names = [f["path"] for f in receipt["removed_files"]]
    assert len(names) == 6 and names[0] == "removed/part-000-00000.parquet"
    assert names[1:] == [f"removed/part-000-00000_{k:04d}.parquet" for k in range(1, 6)] == sorted(names[1:])
    rows = [row for name in names for row in pq.read_table(tmp_path / "work" / "01_ingest" / name).to_pylist()]
    assert [row["id"] for row in rows] == [f"a/r{i}" for i in range(200)]
    assert {row["reason"] for row in rows} == {"missing_text"} and receipt["kept_rows"] == 0
    assert all(sum(len(r["text"]) for r in pq.read_table(tmp_path / "work" / "01_ingest" / name).to_pylist())
               < 2 * 20_000 for name in names)


def test_json_values_that_are_not_objects_are_not_an_object_whatever_they_are(tmp_path):
    """``null`` included: it decodes to None, which once read as a line too deep to decode."""
    (tmp_path / "values.jsonl").write_bytes(b"null\n[1, 2]\n3\n\"text\"\ntrue\n")
    config = parse_config(_config(tmp_path, [{"name": "v", "path": str(tmp_path / "values.jsonl"), "category": "web"}]))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    removed = _read(tmp_path, "removed")
    assert [row["reason"] for row in removed] == ["not_an_object"] * 5
    assert not any("error" in json.loads(row["meta"]) for row in removed)


def test_meta_is_strict_json_with_nan_and_infinite_numbers_written_null(tmp_path):
    """Python's decoder takes NaN, Infinity and 1e400 (an infinite float); its encoder would write
    them back as NaN and Infinity, which strict JSON readers (orjson, DuckDB, JavaScript) refuse."""
    (tmp_path / "n.jsonl").write_bytes(b'{"text": "a document", "score": NaN, "big": 1e400, "deep": [{"low": -Infinity}, 2.5]}\n'
                                       b'{"text": "", "score": NaN}\n')
    config = parse_config(_config(tmp_path, [{"name": "n", "path": str(tmp_path / "n.jsonl"), "category": "web"}]))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    (kept,), (removed,) = _read(tmp_path, "kept"), _read(tmp_path, "removed")
    strict = {"parse_constant": lambda name: pytest.fail(f"{name} written in meta")}
    meta = json.loads(kept["meta"], **strict)
    assert (meta["score"], meta["big"], meta["deep"]) == (None, None, [{"low": None}, 2.5])
    assert removed["reason"] == "empty_text" and json.loads(removed["meta"], **strict)["score"] is None


def test_integers_beyond_64_bits_stay_exact_as_pythons_decoder_reads_them(tmp_path):
    """Lines are decoded by orjson first, which reads an integer literal beyond 64 bits as a float;
    such records are Python's decoder's, so ids and meta keep every digit (a piece's pass too)."""
    lines = [b'{"id": 18446744073709551616, "text": "an id past 2**64", "n": -9223372036854775809, "f": 1e19}',
             b'{"id": 9223372036854775808, "text": "an id between 2**63 and 2**64", "deep": {"m": [123456789012345678901234567890]}}',
             b'{"id": "plain", "text": "nothing big", "f": 2.5}']
    (tmp_path / "big.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    config = parse_config(_config(tmp_path, [{"name": "b", "path": str(tmp_path / "big.jsonl"), "category": "web",
                                              "id_field": "id"}]))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    kept = _read(tmp_path, "kept")
    assert [row["id"] for row in kept] == ["b/18446744073709551616", "b/9223372036854775808", "b/plain"]
    metas = [json.loads(row["meta"]) for row in kept]
    assert (metas[0]["n"], metas[0]["f"]) == (-9223372036854775809, 1e19)
    assert '"n": -9223372036854775809' in kept[0]["meta"]
    assert metas[1]["deep"] == {"m": [123456789012345678901234567890]} and metas[2]["f"] == 2.5


def test_a_line_decodes_to_what_pythons_decoder_makes_of_it():
    """The reader decodes with orjson first; over generated lines (numbers of every size and form,
    escapes, lone surrogates, nesting, NaN, invalid UTF-8, malformed JSON) its record or reason is
    the one Python's decoder alone gives."""
    from stages.readers.jsonl import MAX_DEPTH, _parse_line, _too_deep

    def python_alone(raw: bytes):
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return None
        return record if isinstance(record, dict) and not _too_deep(record) else None

    rng = random.Random(7)
    atoms = ["1", "-0", "-0.0", "1e400", "NaN", "-Infinity", "18446744073709551616", "-9223372036854775809",
             "9223372036854775808", "123456789012345678901234567890", "1.5e19", "2.5", "1E-400", "0.1",
             '"\\ud800"', '"\\ud83d\\ude00"', '"caf\u00e9"', '"\\u0000"', "true", "null", '"\\/"', "01", "1."]

    def value(depth: int) -> str:
        roll = rng.random()
        if depth < MAX_DEPTH + 5 and roll < 0.15:
            return "[" + ", ".join(value(depth + 1) for _ in range(rng.randint(0, 2))) + "]"
        if depth < MAX_DEPTH + 5 and roll < 0.3:
            return "{" + ", ".join(f'"k{i}": {value(depth + 1)}' for i in range(rng.randint(0, 2))) + "}"
        if roll < 0.4:
            return repr(rng.uniform(-1e20, 1e20) * 10 ** rng.randint(-300, 290))
        return rng.choice(atoms)

    lines = [("{" + ", ".join(f'"f{i}": {value(2)}' for i in range(rng.randint(1, 4))) + "}").encode() for _ in range(3000)]
    lines += [b'{"x": ' + b"[" * depth + b"]" * depth + b"}" for depth in (MAX_DEPTH - 2, MAX_DEPTH, MAX_DEPTH + 1, 1100)]
    lines += [b'{"x": "caf\xe9"}', b'{"x": 1', b'["a"]', b'{"x": 1}\x0c', b'{"x": 1} ']
    # an embedding: a list of floats looked at whole, one of them an integer literal past 64 bits
    lines += [b'{"e": [' + b", ".join(repr(rng.uniform(-1, 1)).encode() for _ in range(1536)) + b"]}",
              b'{"e": [1, 0.5, -1.5, 18446744073709551616], "f": [{"g": [2.5, -18446744073709551617]}]}']
    for raw in lines:
        record, reason, _, _ = _parse_line(raw)
        expected = python_alone(raw)
        assert (record is None) == (expected is None), raw
        if record is not None:
            # NaN is never equal to itself: compare the JSON Python writes of both
            assert json.dumps(record) == json.dumps(expected), raw
            assert all(type(a) is type(b) for a, b in zip(record.values(), expected.values())), raw
    assert math.isinf(_parse_line(b'{"x": 1e400}')[0]["x"])


def test_a_pieces_rows_are_its_range_of_the_file_wherever_batches_end():
    """``_rows`` (a part of a row group: skip some rows, take some) gives exactly that range of the
    rows, for ranges that start and end inside a batch, on its edges, or past the last row."""
    from stages.readers.parquet import _rows

    values = list(range(57))
    for size in (1, 5, 10, 57, 100):
        batches = [pa.record_batch({"v": values[start:start + size]}) for start in range(0, len(values), size)]
        for skip in (0, 1, 4, 5, 10, 56, 57, 60):
            for take in (None, 0, 1, 5, 9, 10, 47, 100):
                got = [v for batch in _rows(iter(batches), skip, take) for v in batch.column(0).to_pylist()]
                assert got == values[skip:None if take is None else skip + take], (size, skip, take)
                assert all(batch.num_rows for batch in _rows(iter(batches), skip, take))


def test_an_id_that_is_not_a_string_is_written_as_json_would_write_it(tmp_path):
    """Numbers as they are; a boolean, an object or an array as compact JSON with sorted keys, not
    Python's repr; the same in JSON lines and Parquet."""
    values = [7, 1.5, True, {"b": 2, "a": "ü"}, [1, "x"]]
    expected = ["7", "1.5", "true", '{"a":"ü","b":2}', '[1,"x"]']
    (tmp_path / "ids.jsonl").write_bytes(_lines(*({"id": value, "text": f"text {i}"} for i, value in enumerate(values))))
    pq.write_table(pa.table({"id": [{"b": 2, "a": "ü"}], "text": ["text"]}), tmp_path / "ids.parquet")
    config = parse_config(_config(tmp_path, [{"name": "j", "path": str(tmp_path / "ids.jsonl"), "category": "web", "id_field": "id"},
                                             {"name": "p", "path": str(tmp_path / "ids.parquet"), "category": "web", "id_field": "id"}]))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    assert [row["id"] for row in _read(tmp_path, "kept")] == [f"j/{value}" for value in expected] + ['p/{"a":"ü","b":2}']


def test_a_text_file_loses_its_byte_order_mark_and_utf16_with_its_mark_is_read(tmp_path):
    """A mark before the text is no part of it; Notepad's "Unicode" (UTF-16 with its mark) is text
    too; other bytes that are not UTF-8 (Latin-1 here) make the file ``invalid_utf8``."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a-marked.txt").write_bytes(b"\xef\xbb\xbfA marked text.")
    (tmp_path / "in" / "b-utf16le.txt").write_bytes("Caf\u00e9 \u6587\u672c".encode("utf-16"))
    (tmp_path / "in" / "c-utf16be.txt").write_bytes(b"\xfe\xff" + "big end".encode("utf-16-be"))
    (tmp_path / "in" / "d-latin1.txt").write_bytes("Caf\u00e9".encode("latin-1"))
    (tmp_path / "in" / "e-odd.txt").write_bytes(b"\xff\xfeA\x00B")  # UTF-16 cut in the middle of a character
    config = parse_config(_config(tmp_path, [{"name": "t", "path": str(tmp_path / "in"), "category": "books"}]))
    run_pipeline(config, use_ray=False, log=lambda _: None)
    assert [(row["id"], row["text"]) for row in _read(tmp_path, "kept")] == [
        ("t/a-marked.txt", "A marked text."), ("t/b-utf16le.txt", "Caf\u00e9 \u6587\u672c"), ("t/c-utf16be.txt", "big end")]
    removed = _read(tmp_path, "removed")
    assert [(row["id"], row["reason"]) for row in removed] == [("t/d-latin1.txt", "invalid_utf8"), ("t/e-odd.txt", "invalid_utf8")]
    assert json.loads(removed[1]["meta"])["error"].startswith("invalid UTF-16")


def test_records_whose_other_fields_dwarf_their_text_are_cut_into_shards_by_meta_too(tmp_path):
    """A shard is cut at ``shard_bytes`` of text or four times that of meta: 40 records of 100 bytes
    of text beside 9 kB of HTML are not one shard of 360 kB of meta at a 50 kB target; removed rows
    (here with no text) are cut the same way."""
    html = "<p>" + "h" * 9_000 + "</p>"
    records = [{"id": f"k{i}", "text": f"kept text {i} " + "t" * 88, "html": html} for i in range(40)]
    records += [{"id": f"r{i}", "html": html} for i in range(40)]  # missing_text: removed
    (tmp_path / "pages.jsonl.gz").write_bytes(gzip.compress(_lines(*records)))  # compressed: one unit
    config = parse_config(_config(tmp_path, [{"name": "p", "path": str(tmp_path / "pages.jsonl.gz"),
                                              "category": "web", "id_field": "id"}], shard_bytes=50_000))
    (result,) = run_pipeline(config, use_ray=False, only="ingest", log=lambda _: None)
    (receipt,) = result.receipts
    stage = tmp_path / "work" / "01_ingest"
    for side, expected in (("kept_files", [f"p/k{i}" for i in range(40)]), ("removed_files", [f"p/r{i}" for i in range(40)])):
        tables = [pq.read_table(stage / f["path"]) for f in receipt[side]]
        assert len(tables) >= 2 and [i for t in tables for i in t.column("id").to_pylist()] == expected
        assert all(sum(map(len, t.column("meta").to_pylist())) < 4 * 50_000 + 10_000 for t in tables)
