"""A large plain JSON-lines file cut by byte range: every line read once, numbered as in the whole file,
ids unique across pieces, and the same documents as the file read whole."""
from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipeline.config import parse_config
from pipeline.readers import InputFile
from pipeline.runner import run_pipeline
from stages.ingest import Ingest
from stages.ingest_pieces import prepare_pieces
from stages.readers import jsonl


def _records(count: int) -> list[bytes]:
    """Lines of every kind, in a fixed random order: documents of 40-4,000 bytes, ids repeated near
    and far (a later piece repeats an earlier one's), and bad lines of each kind a reader meets."""
    rng = random.Random(7)
    lines = []
    for i in range(count):
        doc_id = f"d{rng.randrange(count)}" if i % 17 == 0 else f"d{i}"
        text = f"document {i} " + "words and more words " * rng.randrange(2, 200)
        lines.append(json.dumps({"id": doc_id, "text": text, "n": i}, ensure_ascii=False).encode())
        if i % 29 == 5:
            lines.append(b"")  # blank: numbered, skipped
        if i % 31 == 7:
            lines.append(b'{"id": "broken", "text": ')  # malformed
        if i % 37 == 11:
            lines.append(b'{"id": "bad-bytes", "text": "\xff\xfe"}')  # not UTF-8
        if i % 41 == 13:
            lines.append(b'["not", "an", "object"]')
        if i % 43 == 17:
            lines.append(json.dumps({"id": f"crlf{i}", "text": "carriage return"}).encode() + b"\r")
        if i % 47 == 19:
            lines.append(json.dumps({"text": "no id here"}).encode())  # missing_id with an id_field
        if i % 53 == 23:
            lines.append(json.dumps({"id": f"\u4e2d\u6587{i}", "text": "\u4e2d\u6587\u7684\u6587\u672c " * 30},
                                    ensure_ascii=False).encode())
    return lines


def _run(directory: Path, path: Path, shard_bytes: int, id_field: str | None, use_ray: bool) -> tuple:
    source = {"name": "big", "path": str(path), "category": "web"} | ({"id_field": id_field} if id_field else {})
    config = parse_config({"work_dir": str(directory / "work"), "inputs": [source],
                           "ingest": {"shard_bytes": shard_bytes}})
    run_pipeline(config, use_ray=use_ray, log=lambda _: None)
    stage = directory / "work" / "01_ingest"
    units = json.loads((stage / "_manifest.json").read_text())["units"]
    def rows(side: str) -> list[tuple]:
        return [(r["id"], r["text"], r["meta"], r.get("reason")) for f in sorted((stage / side).glob("*.parquet"))
                for r in pq.read_table(f).to_pylist()]
    return len(units), rows("kept"), sorted(rows("removed"))


@pytest.mark.parametrize("id_field", ["id", None])
def test_a_large_jsonl_file_cut_into_pieces_reads_as_it_does_whole(tmp_path, ray_cluster, id_field):
    """The pieces (on Ray, each indexed first) give the documents of the file read whole, in order,
    with their line numbers in the whole file, the same quarantined lines and the same duplicates:
    a record repeating the id of one in an earlier piece is a ``duplicate_id`` there too."""
    path = tmp_path / "big.jsonl"
    records = _records(600)
    joined = b"\n".join(records[:300]) + b"\n\xef\xbb\xbf" + b"\n".join(records[300:])  # as `cat` joins two files
    path.write_bytes(b"\xef\xbb\xbf" + joined)  # byte order marks; no newline after the last line
    pieces = _run(tmp_path / "pieces", path, 20_000, id_field, use_ray=True)
    whole = _run(tmp_path / "whole", path, 100_000_000, id_field, use_ray=False)
    assert pieces[0] >= 10 and whole[0] == 1
    assert pieces[1:] == whole[1:]
    kept, removed = whole[1], whole[2]
    lines = path.read_bytes().split(b"\n")
    assert len(kept) + len(removed) == sum(1 for line in lines if line.strip())
    assert json.loads(kept[-1][2])["_ingest"]["line"] == len(lines)  # the last line, numbered as in the file
    reasons = {reason for *_, reason in removed}
    expected = {"malformed_json", "invalid_utf8", "not_an_object"}
    assert reasons == (expected | {"duplicate_id", "missing_id"} if id_field else expected)
    assert not [text for _, text, _, _ in removed if text.startswith("\ufeff")]  # no line removed for its mark
    if id_field:  # many duplicates repeat an id that only an earlier piece holds
        cut = 20_000 * 1.0 * len(lines) / len(path.read_bytes())  # about the lines of a piece
        line_of = {doc_id: json.loads(meta)["_ingest"]["line"] for doc_id, _, meta, _ in kept}
        far = [doc_id for doc_id, _, meta, reason in removed if reason == "duplicate_id"
               and json.loads(meta)["_ingest"]["line"] - line_of[doc_id] > 2 * cut]
        assert len(far) >= 10


def test_every_line_belongs_to_exactly_one_piece_wherever_the_cuts_fall(tmp_path):
    """Whatever the target (cuts inside a line, on its newline, at a line's first byte), the pieces'
    lines, in order, are the file's lines, and each piece's index counts its own."""
    rng = random.Random(3)
    lines = [b"x" * rng.choice([0, 1, 2, 5, 40, 300]) for _ in range(400)]
    for ending in (b"", b"\n"):
        path = tmp_path / f"lines{len(ending)}.jsonl"
        path.write_bytes(b"\n".join(lines) + ending)
        config = parse_config({"work_dir": str(tmp_path), "inputs": [{"name": "f", "path": str(path),
                                                                      "category": "web"}]})
        source = config.inputs[0]
        item = InputFile(source, str(path), path.name, size=path.stat().st_size, mtime_ns=1)
        for target in [7, 8, 9, 301, 302, 1000, 4096, 9999]:
            pieces = jsonl._split(item, target)
            assert len(pieces) == max(1, round(item.size / target))
            if len(pieces) == 1:
                continue
            read = [b"".join(jsonl._piece_chunks(piece)) for piece in pieces]
            assert b"".join(read) == path.read_bytes()
            counts = [jsonl._index(piece, config.ingest).records for piece in pieces]
            assert sum(counts) == len(lines)
            assert counts == [len(chunk.split(b"\n")) - (chunk.endswith(b"\n") or not chunk) for chunk in read]


def test_the_index_of_a_file_is_kept_for_a_rerun_and_redone_when_the_file_changes(tmp_path):
    """``prepare_pieces`` indexes a file's pieces once; a rerun that finds their stamps asks for no
    task, and a file that changed is indexed again."""
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(_records(200)) + b"\n")
    config = parse_config({"work_dir": str(tmp_path / "work"), "ingest": {"shard_bytes": 20_000},
                           "inputs": [{"name": "big", "path": str(path), "category": "web", "id_field": "id"}]})
    tasks = []

    def counting_map(fn, items):
        tasks.append(len(items))
        return [fn(item) for item in items]

    def prepare() -> None:
        inputs = {name: items for name, items, _ in Ingest.units(config)}
        prepare_pieces(inputs, config.ingest, str(tmp_path / "scratch"), pafs.LocalFileSystem(), counting_map,
                       lambda _: None)

    prepare()
    prepare()
    assert len(tasks) == 1 and tasks[0] > 5
    path.write_bytes(path.read_bytes() + json.dumps({"id": "new", "text": "one more"}).encode() + b"\n")
    prepare()
    assert len(tasks) == 2


def test_a_large_file_read_whole_is_pointed_out_and_a_cut_one_is_not(tmp_path, ray_cluster):
    """On Ray with two workers, a run says after ingest which large input it read in one task (a
    compressed file cannot be cut) and what would let it be read in parallel; the same file plain
    is cut, and nothing is said."""
    lines = b"\n".join(_records(200)) + b"\n"
    (tmp_path / "plain.jsonl").write_bytes(lines)
    (tmp_path / "packed.jsonl.gz").write_bytes(gzip.compress(lines))
    shard_bytes = len(gzip.compress(lines)) // 3  # the compressed file is three targets on disk
    said = {}
    for name in ("plain.jsonl", "packed.jsonl.gz"):
        config = parse_config({"work_dir": str(tmp_path / f"out-{name}"), "ingest": {"shard_bytes": shard_bytes},
                               "inputs": [{"name": "dump", "path": str(tmp_path / name), "category": "web"}]})
        log: list[str] = []
        run_pipeline(config, use_ray=True, only="ingest", log=log.append)
        said[name] = [line for message in log for line in message.splitlines() if "whole, in one task" in line]
    assert not said["plain.jsonl"]
    (note,) = said["packed.jsonl.gz"]
    assert note.startswith("note: ingest read 1 large input file whole") and "dump/packed.jsonl.gz" in note
    assert f"`ingest.shard_bytes` ({shard_bytes})" in note and "2 workers" in note
