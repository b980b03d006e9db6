"""The architecture holds: outputs unchanged by refactoring, no import cycles, small modules, and
the plug-in points work (a reader, a RowFilter stage, a step, each registered at run time)."""
from __future__ import annotations

import ast
import hashlib
import json
from pathlib import Path

from conftest import REPO, read_stage

PACKAGES = ("pipeline", "stages", "tokenizer", "mixture")
CHECKSUMS = REPO / "tests" / "data" / "sample_checksums.json"


def test_sample_outputs_are_byte_identical_to_the_recorded_checksums(sample_run):
    """kept/ and removed/ of every stage of the sample run, as recorded before the refactoring."""
    work_dir, _, _ = sample_run
    got = {str(path.relative_to(work_dir)): hashlib.sha256(path.read_bytes()).hexdigest()
           for path in sorted(work_dir.glob("[0-9][0-9]_*/*/*.parquet")) if path.parent.name in ("kept", "removed")}
    assert got == json.loads(CHECKSUMS.read_text())


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``name`` imports, at any depth of the file (inside functions too)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(inner) for node in ast.walk(tree) if isinstance(node, ast.If)
                   and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                   for inner in ast.walk(node)}  # annotations only: never imported at run time
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        targets = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            # `from package import module` imports the module (the package is its parent, loaded
            # first anyway); `from module import name` imports the module
            submodules = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known]
            targets = submodules if len(submodules) == len(node.names) else [base, *submodules]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles():
    """Static, over every import in pipeline/, stages/, tokenizer/, mixture/ (also those inside
    functions, which is how cycles used to be hidden)."""
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_pipeline_imports_no_plugin():
    """The core names its plug-ins only as strings in pipeline.registry, never by import."""
    offenders = sorted(f"{name} -> {target}" for name, targets in _graph().items() if name.startswith("pipeline")
                       for target in targets if not target.startswith("pipeline"))
    assert offenders == []


def test_no_module_of_the_core_is_over_300_lines():
    long = {path.name: n for path in (REPO / "pipeline").glob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 300}
    assert long == {}


# --- the plug-in points ---------------------------------------------------------------------------

from pipeline import registry, storage  # noqa: E402
from pipeline.readers import Reader, record_id, record_meta  # noqa: E402
from pipeline.stage import RowFilter, StageConfig  # noqa: E402
from pipeline.steps import Step, StepConfig, finished_stage, step_dir  # noqa: E402


def read_tsv(item, records):
    fs, _ = storage.resolve(item.source.path)
    with fs.open_input_stream(item.path) as stream:
        for number, line in enumerate(stream.read().decode().splitlines(), start=1):
            key, text = line.split("\t", 1)
            record = {"key": key, "text": text}
            where = str(number)
            records.add(record_id(item, record, where), text, record_meta(item, record, "line", number), where, line)
            yield


class ShortConfig(StageConfig):
    min_chars: int = 10


class ShortDocs(RowFilter):
    name = "short_docs"
    Config = ShortConfig

    def reason(self, row):
        return "too_short" if len(row["text"]) < self.config.min_chars else None


class CountConfig(StepConfig):
    input_stage: str = "short_docs"


def run_count(config, settings, executor, force, log):
    stage = finished_stage(config, settings.input_stage)
    fs, directory = storage.resolve(step_dir(config, "count"))
    storage.write_json(fs, storage.join(directory, "count.json"), {"shards": len(stage.shards)})


def test_a_reader_a_row_filter_and_a_step_plug_in(tmp_path, monkeypatch):
    from pipeline.runner import run_pipeline

    monkeypatch.setitem(registry.READERS, "tsv", Reader(name="tsv", patterns=(".tsv",), read=read_tsv))
    monkeypatch.setitem(registry.STAGES, "short_docs", ShortDocs)
    monkeypatch.setitem(registry.STEPS, "count", Step(name="count", Config=CountConfig, run=run_count))
    (tmp_path / "in.tsv").write_text("a\tshort\nb\ta document long enough\n")
    from pipeline.config import parse_config

    config = parse_config({"work_dir": str(tmp_path / "work"), "stages": {"short_docs": {}}, "count": {},
                           "inputs": [{"name": "t", "path": str(tmp_path / "in.tsv"), "category": "web",
                                       "id_field": "key"}]})
    run_pipeline(config, use_ray=False, log=lambda _: None)
    work = tmp_path / "work"
    assert [row["id"] for row in read_stage(work, "02_short_docs", "kept")] == ["t/b"]
    assert [row["reason"] for row in read_stage(work, "02_short_docs", "removed")] == ["too_short"]
    stats = json.loads((work / "02_short_docs" / "_stats.json").read_text())
    assert stats["runner"]["by_reason"]["too_short"]["removed_docs"] == 1
    assert json.loads((work / "count" / "count.json").read_text()) == {"shards": 1}


class WholeShortDocs(ShortDocs):
    name = "whole_short_docs"
    whole_shard = True


def test_a_streaming_stage_writes_the_same_files_as_a_whole_shard_one(tmp_path, monkeypatch):
    """A RowFilter streams its shard in batches of `batch_rows` rows; its kept/ and removed/ files,
    receipts' counts and stats are the same as when it reads the whole shard."""
    from pipeline.config import parse_config
    from pipeline.runner import run_pipeline

    monkeypatch.setitem(registry.STAGES, "short_docs", ShortDocs)
    monkeypatch.setitem(registry.STAGES, "whole_short_docs", WholeShortDocs)
    lines = [json.dumps({"text": "x" * (i * 7 % 23), "n": i}) for i in range(5000)]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    results = {}
    for name in ("short_docs", "whole_short_docs"):
        config = parse_config({"work_dir": str(tmp_path / name), "stages": {name: {}}, "batch_rows": 333,
                               "inputs": [{"name": "t", "path": str(tmp_path / "in.jsonl"), "category": "web"}]})
        run_pipeline(config, use_ray=False, log=lambda _: None)
        directory = tmp_path / name / f"02_{name}"
        manifest = json.loads((directory / "_manifest.json").read_text())
        stats = json.loads((directory / "_stats.json").read_text())
        results[name] = ([(f["path"], f["sha256"], f["rows"]) for unit in manifest["units"]
                          for f in unit["kept_files"] + unit["removed_files"]], manifest["totals"]["kept_rows"],
                         stats["runner"])
    assert results["short_docs"][0] and results["short_docs"][:2] == results["whole_short_docs"][:2]
    assert results["short_docs"][2] == results["whole_short_docs"][2]
