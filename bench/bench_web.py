"""Web extraction benchmark: accuracy on the Article Extraction Benchmark and speed per core.

    python bench/bench_web.py [--repeats 3] [--no-datatrove]

1. AEB (../shared/data/web-html-dev/scrapinghub_aeb.tar.zst, 181 pages): F1/precision/recall/accuracy
   with the benchmark's own token-shingle method (stages/web/evaluate.py) and pages/s per core
   (CPU seconds of this process, median of interleaved repeats), for each extractor of
   stages.web.html.METHODS: ``auto`` (ours), plain ``trafilatura.extract``, ``trafilatura_fast``,
   ``resiliparse``. Pages go in as bytes, so charset work is timed too.
2. Dev WARC files (../shared/data/warc-dev): records/s and response pages/s of
   ``iter_warc_records`` (auto extraction), and, in the same run, datatrove's ``WarcReader`` +
   ``Trafilatura`` extractor (when datatrove is installed: ``pip install -e .[bench]``).
3. GNE Chinese pages (gne_tests.tar.zst, no ground truth): how many give a main text of plausible
   length (>= 200 characters, >= 30% Han characters), and a sample to read.

Writes bench/results/web.json and prints the tables docs/web.md quotes.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import statistics
import sys
import tarfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results"


def read_tar_zst(path: Path) -> dict[str, bytes]:
    import zstandard

    files = {}
    with open(path, "rb") as raw, zstandard.ZstdDecompressor().stream_reader(raw) as stream, \
            tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.isfile():
                files[member.name] = tar.extractfile(member).read()
    return files


def cpu_rate(fn, items, repeats: int) -> tuple[float, float]:
    """(items per CPU second, items per wall second), medians over repeats."""
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for item in items:
            fn(item)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return len(items) / statistics.median(cpu), len(items) / statistics.median(wall)


def bench_aeb(repeats: int) -> dict:
    from stages.web.evaluate import aeb_accuracy, aeb_scores
    from stages.web.html import METHODS, extract

    files = read_tar_zst(SHARED / "web-html-dev" / "scrapinghub_aeb.tar.zst")
    truth_raw = json.loads(next(v for k, v in files.items() if k.endswith("ground-truth.json")))
    pages = {Path(k).name.split(".")[0]: gzip.decompress(v) for k, v in files.items() if k.endswith(".html.gz")}
    truth = {k: truth_raw[k]["articleBody"] for k in pages}
    keys = sorted(pages)
    rows = {}
    for method in METHODS:  # warm up imports and caches
        extract(pages[keys[0]], method=method)
    rates: dict[str, list] = {m: [] for m in METHODS}
    for _ in range(repeats):  # interleaved, so machine noise hits every method alike
        for method in METHODS:
            rates[method].append(cpu_rate(lambda k: extract(pages[k], method=method), keys, 1))
    for method in METHODS:
        results = {k: extract(pages[k], method=method) for k in keys}
        predictions = {k: r.text for k, r in results.items()}
        f1, precision, recall = aeb_scores(truth, predictions)
        used = {}
        for r in results.values():
            used[r.method] = used.get(r.method, 0) + 1
        rows[method] = {"f1": f1, "precision": precision, "recall": recall,
                        "accuracy": aeb_accuracy(truth, predictions),
                        "pages_per_cpu_s": statistics.median(r[0] for r in rates[method]),
                        "pages_per_wall_s": statistics.median(r[1] for r in rates[method]),
                        "paths": used}
    base = rows["trafilatura"]["pages_per_cpu_s"]
    for row in rows.values():
        row["speedup_vs_trafilatura"] = row["pages_per_cpu_s"] / base
    return {"pages": len(keys), "extractors": rows}


def bench_warc(repeats: int, datatrove: bool) -> dict:
    from stages.web import iter_warc_records

    paths = sorted(p for p in (SHARED / "warc-dev").glob("*.warc.gz"))
    data = {p.name: p.read_bytes() for p in paths}
    out: dict = {"files": sorted(data)}

    def ours(name):
        reader = iter_warc_records(io.BytesIO(data[name]))
        for _ in reader:
            pass
        return reader.stats

    stats = [ours(n) for n in data]
    responses = sum(s.by_type.get("response", 0) for s in stats)
    records = sum(s.records for s in stats)
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.process_time(), time.perf_counter()
        for n in data:
            ours(n)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    out["ours"] = {"records": records, "responses": responses, "documents": sum(s.documents for s in stats),
                   "responses_per_cpu_s": responses / statistics.median(cpu),
                   "records_per_cpu_s": records / statistics.median(cpu)}
    if datatrove:
        out["datatrove"] = bench_datatrove(paths, repeats)
    return out


def bench_datatrove(paths: list[Path], repeats: int) -> dict:
    try:
        from datatrove.pipeline.extractors import Trafilatura
        from datatrove.pipeline.readers import WarcReader
    except Exception as err:  # noqa: BLE001
        return {"error": f"datatrove not importable: {err}"}
    try:
        def run():
            n = 0
            reader = WarcReader(str(paths[0].parent), glob_pattern="*.warc.gz")
            # timeout=None: run in this process (datatrove's default forks a process per document)
            extractor = Trafilatura(favour_precision=True, timeout=None)
            for doc in extractor.run(reader.run()):
                n += 1
            return n
        docs = run()
        cpu = []
        for _ in range(repeats):
            c0 = time.process_time()
            run()
            cpu.append(time.process_time() - c0)
        return {"documents": docs, "documents_per_cpu_s": docs / statistics.median(cpu)}
    except Exception as err:  # noqa: BLE001 - report, do not hide, why it could not run
        return {"error": repr(err)}


def bench_gne() -> dict:
    from stages.web.html import extract

    files = read_tar_zst(SHARED / "web-html-dev" / "gne_tests.tar.zst")
    pages = {k: v for k, v in sorted(files.items()) if k.endswith(".html")}
    rows = []
    for name, data in pages.items():
        result = extract(data)
        han = sum("\u4e00" <= ch <= "\u9fff" for ch in result.text)
        rows.append({"page": name, "chars": len(result.text), "han_share": han / max(1, len(result.text)),
                     "charset": result.charset, "method": result.method, "reason": result.reason,
                     "head": result.text[:160]})
    plausible = [r for r in rows if r["chars"] >= 200 and r["han_share"] >= 0.3]
    return {"pages": len(rows), "non_empty": sum(1 for r in rows if r["chars"] > 0),
            "plausible": len(plausible), "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-datatrove", action="store_true")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is not here")
    result = {"aeb": bench_aeb(args.repeats), "warc": bench_warc(args.repeats, not args.no_datatrove),
              "gne": bench_gne()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "web.json").write_text(json.dumps(result, indent=1, ensure_ascii=False))
    print("| extractor | F1 | precision | recall | accuracy | pages/s per core | vs trafilatura | paths |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in result["aeb"]["extractors"].items():
        print(f"| {name} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['accuracy']:.3f} | "
              f"{r['pages_per_cpu_s']:.1f} | {r['speedup_vs_trafilatura']:.2f}x | {r['paths']} |")
    print(json.dumps(result["warc"], indent=1))
    gne = result["gne"]
    print(f"GNE: {gne['pages']} pages, {gne['non_empty']} non-empty, {gne['plausible']} plausible")
    for r in gne["rows"]:
        print(f"  {r['page'][-40:]:40} {r['chars']:6} {r['han_share']:.2f} {r['charset']} {r['method']} "
              f"{r['head'][:60]!r}")


if __name__ == "__main__":
    main()
