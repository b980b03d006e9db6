"""Test-only code that breaks things on purpose, to show the pipeline copes: stages that break
the contract, faults injected into Ray tasks, and a filesystem whose writes fail."""
import errno
import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.executor import run_group
from pipeline.stage import Stage, StageConfig, StageOutput


class LeakyStage(Stage):
    """Drops the last row without reporting it as removed."""

    name = "leaky"
    Config = StageConfig

    def process(self, batch: pa.Table) -> StageOutput:
        kept = batch.slice(0, max(batch.num_rows - 1, 0))
        return StageOutput(kept=kept, removed=batch.slice(0, 0).append_column("reason", pa.array([], pa.string())))


class GarblingStage(Stage):
    """Keeps every row, its text replaced by the first two of an emoji's four bytes: not UTF-8,
    though Arrow builds the array from the buffers without a word."""

    name = "garbling"
    Config = StageConfig

    def process(self, batch: pa.Table) -> StageOutput:
        cut = "\U0001F600".encode()[:2]
        texts = pa.Array.from_buffers(pa.string(), batch.num_rows, [
            None, pa.py_buffer((np.arange(batch.num_rows + 1) * 2).astype(np.int32)), pa.py_buffer(cut * batch.num_rows)])
        kept = batch.set_column(batch.schema.get_field_index("text"), "text", texts)
        return StageOutput(kept=kept, removed=batch.slice(0, 0).append_column("reason", pa.array([], pa.string())))


class StreamingGarblingStage(GarblingStage):
    """The same, the shard streamed to it in batches."""

    whole_shard = False


# ----------------------------------------------------------- faults, for tests only: never imported by the pipeline

class InjectedFault(RuntimeError):
    """The exception a task raises when ``faulty`` chose it to fail."""


def task_key(fn, item) -> str:
    """A task's stable name: ``rules/part-000-00003-0000`` for a stage's unit, ``link_partition/7``
    for a task of a stage's ``prepare`` (function name and item), without whitespace (``attempts.log``
    splits its lines on it; the report's task item prints with spaces)."""
    last = item[-1] if isinstance(item, tuple) else item
    if hasattr(last, "unit"):
        return f"{item[0].name}/{last.unit}"
    return "".join(f"{fn.__name__}/{last}".split())


def chosen(key: str, percent: float) -> bool:
    """Whether the task named ``key`` is one of the ``percent`` % that fail: decided by a hash of
    the name, so the same tasks fail in every run and on every machine."""
    return int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10_000 < percent * 100


def faulty(fn, faults: dict):
    """``fn`` with faults added, for every task of a run (see ``with_faults``). ``faults`` holds:

    - ``dir``: where the faults are recorded; every attempt appends ``start KEY PID`` and, if it
      returns, ``end KEY PID`` to ``attempts.log``;
    - ``fail_percent``: the first attempt of that share of tasks raises ``InjectedFault`` (a file
      under ``dir/injected/`` records the attempt, so the retry, or a rerun, goes through);
    - ``slow``: {key prefix: seconds} to sleep before running, so a test can act mid-stage.
    """
    def task(item):
        key = task_key(fn, item)
        directory = faults["dir"]
        _append(os.path.join(directory, "attempts.log"), f"start {key} {os.getpid()}\n")
        for prefix, seconds in faults.get("slow", {}).items():
            if key.startswith(prefix):
                time.sleep(seconds)
        if chosen(key, faults.get("fail_percent", 0)):
            os.makedirs(os.path.join(directory, "injected"), exist_ok=True)
            mark = os.path.join(directory, "injected", key.replace("/", "__"))
            try:
                os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                raise InjectedFault(f"injected fault in task {key}")
        result = fn(item)
        _append(os.path.join(directory, "attempts.log"), f"end {key} {os.getpid()}\n")
        return result
    task.__name__ = task.__qualname__ = fn.__name__  # what Ray's logs and the executor's messages call it
    return task


def _append(path: str, line: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def attempts(directory) -> list[tuple[str, str, int]]:
    """(``start`` or ``end``, task key, worker pid) for every line of ``attempts.log``."""
    path = os.path.join(directory, "attempts.log")
    if not os.path.exists(path):
        return []
    with open(path) as log:
        return [(event, key, int(pid)) for event, key, pid in (line.split() for line in log if line.strip())]


def with_faults(map_method, faults: dict):
    """``RayExecutor.map`` with each task function wrapped by ``faulty``. Tasks pickle this module
    by value, so workers need not find it on their path."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    def map(self, fn, items, label="", *args, **kwargs):
        if fn is run_group:  # the faults hit the group's items, each under its own name
            return map_method(self, fn, [replace(group, fn=faulty(group.fn, faults)) for group in items], label,
                              *args, **kwargs)
        return map_method(self, faulty(fn, faults), items, label, *args, **kwargs)
    return map


def dying_map(survive: int):
    """A ``map`` that runs items in this process and SIGKILLs it before item ``survive`` (0-based):
    the prepare steps of a run killed mid-way, for the resume tests run as subprocesses."""
    done = []

    def map_(fn, items):
        for item in items:
            if len(done) == survive:
                os.kill(os.getpid(), signal.SIGKILL)
            fn(item)
            done.append(item)
    return map_


FAULTS_VARIABLE = "PIPELINE_TEST_FAULTS"


def main(argv: list[str]) -> int:
    """``python -m pipeline ARGS`` with the faults of ``$PIPELINE_TEST_FAULTS`` (JSON) in every Ray
    task: the driver process of the cluster tests, run as
    ``python -c 'import stage_fixtures, sys; sys.exit(stage_fixtures.main(sys.argv[1:]))' run CONFIG``."""
    from pipeline.cli import main as cli_main
    from pipeline.executor import RayExecutor

    RayExecutor.map = with_faults(RayExecutor.map, json.loads(os.environ[FAULTS_VARIABLE]))
    return cli_main(argv)


class FaultyFileSystem(pafs.FileSystemHandler):
    """The local disk as a pyarrow filesystem (``pafs.PyFileSystem(FaultyFileSystem(...))``) with
    the write errors of a full disk or of directories without write permission. Reads always work.

    ``space``: bytes that may still be written under ``space_under`` (as if that directory were a
    small disk of its own); the write that goes past it fails with ENOSPC, part-way through a file,
    as when a disk fills up. None: no limit. ``read_only``: paths under which creating, writing,
    renaming or deleting fails with EACCES, as after ``chmod -R a-w``. Both may be changed at any time.
    """

    def __init__(self, space: int | None = None, space_under: str = "/", read_only: tuple[str, ...] = ()):
        self.local = pafs.LocalFileSystem()
        self.space, self.space_under, self.read_only = space, space_under, read_only

    @staticmethod
    def _under(path: str, directory: str) -> bool:
        return path == directory or path.startswith(directory.rstrip("/") + "/")

    def _check_writable(self, *paths: str) -> None:
        for path in paths:
            if any(self._under(path, directory) for directory in self.read_only):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)

    def _consume(self, size: int, path: str) -> None:
        if self.space is not None and self._under(path, self.space_under):
            if size > self.space:
                self.space = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)
            self.space -= size

    def open_output_stream(self, path, metadata):
        self._check_writable(path)
        handler, sink = self, self.local.open_output_stream(path)

        class Sink:
            closed = False

            def write(self, data):
                handler._consume(len(data), path)
                return sink.write(data)

            def flush(self):
                sink.flush()

            def close(self):
                self.closed = True
                sink.close()
        return pa.PythonFile(Sink(), mode="w")

    def create_dir(self, path, recursive):
        if self.local.get_file_info(path).type != pafs.FileType.Directory:
            self._check_writable(path)
        self.local.create_dir(path, recursive=recursive)

    def move(self, src, dest):
        self._check_writable(src, dest)
        self.local.move(src, dest)

    def delete_file(self, path):
        self._check_writable(path)
        self.local.delete_file(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self._check_writable(path)
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def open_append_stream(self, path, metadata):
        raise NotImplementedError

    def copy_file(self, src, dest):
        raise NotImplementedError

    def delete_dir(self, path):
        self._check_writable(path)
        self.local.delete_dir(path)

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def get_type_name(self):
        return "faulty-local"

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)
