"""Object storage for real: the sample run with its inputs and work_dir on an S3-compatible server.

The server is moto's (``moto[server]``, a dev dependency), started on localhost once for this
module; the pipeline talks to it through pyarrow's S3 filesystem exactly as it would to AWS or
MinIO: ``s3://KEY:SECRET@bucket/run?endpoint_override=127.0.0.1:PORT&scheme=http&...``. Checked:
the stages' outputs equal the local reference run's, a driver killed with SIGKILL mid-stage resumes
to the same outputs, and a write that fails leaves no object under a final name.
"""
from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import REPO, SAMPLE_CONFIG
from run_checks import STAGE_DIRS, stage_contents

pytest.importorskip("moto", reason="moto[server] (a dev dependency) runs the S3 server of these tests")

OPTIONS = "scheme=http&region=us-east-1&allow_bucket_creation=true"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """moto's S3 server on a free localhost port; yields a function making an ``s3://`` URI."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(tmp_path_factory.mktemp("moto") / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-c", "from moto.server import main; main()", "-p", str(port)],
                              stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert server.poll() is None and time.monotonic() < deadline, "moto's S3 server did not start"
            time.sleep(0.2)
    yield lambda path: f"s3://testing:testing@{path}?endpoint_override=127.0.0.1:{port}&{OPTIONS}"
    server.terminate()
    server.wait(timeout=30)
    log.close()


def _upload(uri: str, local: Path) -> None:
    """Copy a local directory tree to an S3 URI."""
    fs, root = pafs.FileSystem.from_uri(uri)
    fs.create_dir(root)
    pafs.copy_files(str(local), root, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)


def _s3_config(s3, tmp_path: Path, run: str) -> Path:
    """configs/sample.yaml with every input and the work_dir on S3 (the quality model stays local:
    the one sample_run trained) and no steps after the stages."""
    raw = yaml.safe_load(SAMPLE_CONFIG.read_text(encoding="utf-8"))
    for source in raw["inputs"]:
        source["path"] = s3(f"inputs/{source['path']}")
        if source.get("url_filter"):
            source["url_filter"] = {key: [str(REPO / path) for path in paths]
                                    for key, paths in source["url_filter"].items()}
    quality = raw["stages"]["quality"]
    quality["model_path"] = str(REPO / quality["model_path"])
    quality["train"]["sources"] = [dict(s, path=str(REPO / s["path"])) for s in quality["train"]["sources"]]
    raw.update(work_dir=s3(f"runs/{run}"), tokenizer=None, mixture=None)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
    return path


def _s3_contents(s3, run: str) -> dict:
    """``run_checks.stage_contents`` of a work_dir on S3."""
    fs, root = pafs.FileSystem.from_uri(s3(f"runs/{run}"))
    contents = {}
    for stage in STAGE_DIRS:
        manifest = json.loads(fs.open_input_file(f"{root}/{stage}/_manifest.json").read())
        assert manifest["complete"] is True
        for side in ("kept", "removed"):
            rows = []
            for unit in manifest["units"]:
                assert unit["input_rows"] == unit["kept_rows"] + unit["removed_rows"], (stage, unit["unit"])
                for file in unit[f"{side}_files"]:
                    with fs.open_input_file(f"{root}/{stage}/{file['path']}") as handle:
                        rows.extend(pq.read_table(handle).to_pylist())
            contents[(stage, side)] = rows
    return contents


def _objects(s3, run: str) -> list[str]:
    fs, root = pafs.FileSystem.from_uri(s3(f"runs/{run}"))
    return [info.path for info in fs.get_file_info(pafs.FileSelector(root, recursive=True))
            if info.type == pafs.FileType.File]


def _pipeline(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline", "run", str(config), "--no-ray", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})


@pytest.fixture(scope="module")
def s3_inputs(s3_server):
    _upload(s3_server("inputs/sample_data"), REPO / "sample_data")
    return s3_server


@pytest.mark.slow
def test_the_sample_on_s3_through_ray_gives_the_local_outputs(s3_inputs, sample_run, tmp_path):
    from pipeline.config import load_config
    from pipeline.runner import run_pipeline

    reference, _, _ = sample_run
    config = load_config(_s3_config(s3_inputs, tmp_path, "ray"))
    run_pipeline(config, use_ray=True, log=lambda _: None)
    assert _s3_contents(s3_inputs, "ray") == stage_contents(reference)
    assert not [path for path in _objects(s3_inputs, "ray") if "/.tmp-" in path]
    fs, root = pafs.FileSystem.from_uri(s3_inputs("runs/ray"))
    page = fs.open_input_file(f"{root}/report.html").read().decode()
    assert "runs/ray" in page and "testing:testing" not in page  # the credentials stay out of the report


@pytest.mark.slow
def test_a_driver_killed_mid_stage_on_s3_resumes_to_the_same_outputs(s3_inputs, sample_run, tmp_path):
    reference, _, _ = sample_run
    config = _s3_config(s3_inputs, tmp_path, "killed")
    fs, root = pafs.FileSystem.from_uri(s3_inputs("runs/killed"))
    driver = _pipeline(config)
    receipts = f"{root}/03_rules/_receipts"
    deadline = time.monotonic() + 300
    while not (fs.get_file_info(receipts).type == pafs.FileType.Directory
               and len(fs.get_file_info(pafs.FileSelector(receipts))) >= 2):
        assert driver.poll() is None, f"the run ended before rules had two receipts:\n{driver.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    assert fs.get_file_info(f"{root}/03_rules/_manifest.json").type == pafs.FileType.NotFound, "killed too late"

    rerun = _pipeline(config)
    output = rerun.communicate(timeout=600)[0]
    assert rerun.returncode == 0, output[-3000:]
    assert "testing:testing" not in output  # nor in the log
    assert re.search(r"\[03 rules\] \d+ units, [1-9]\d* reused", output), output[-3000:]  # resumed, not redone
    assert _s3_contents(s3_inputs, "killed") == stage_contents(reference)
    assert not [path for path in _objects(s3_inputs, "killed") if "/.tmp-" in path]


def test_a_write_that_fails_leaves_no_object_under_its_final_name(s3_server):
    from pipeline import storage

    fs, root = pafs.FileSystem.from_uri(s3_server("runs/failed-write"))
    fs.create_dir(root)
    target = f"{root}/kept/part-000.parquet"
    with pytest.raises(RuntimeError, match="the worker died"):
        with storage.atomic_output(fs, target) as stream:
            stream.write(b"PAR1" + b"x" * 100_000)
            raise RuntimeError("the worker died")
    assert fs.get_file_info(target).type == pafs.FileType.NotFound
    assert not [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
                if i.type == pafs.FileType.File], "a failed write left an object behind"

    storage.write_bytes(fs, target, b"complete")  # and a write that succeeds is one object, listed at once
    assert fs.open_input_file(target).read() == b"complete"
    assert [i.path for i in fs.get_file_info(pafs.FileSelector(root, recursive=True))
            if i.type == pafs.FileType.File] == [target]
