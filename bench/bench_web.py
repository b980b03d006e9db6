"""Web extraction benchmark: accuracy on the Article Extraction Benchmark and speed per core.

    python bench/bench_web.py [--repeats 3] [--no-datatrove] [--only aeb|warc|gne]

1. AEB (../shared/data/web-html-dev/scrapinghub_aeb.tar.zst, 181 pages): F1/precision/recall/accuracy
   with the benchmark's own token-shingle method (stages/web/evaluate.py) and pages/s per core
   (CPU seconds of this process, median of interleaved repeats), for each extractor of
   stages.web.html.METHODS: ``auto`` (ours), plain ``trafilatura.extract``, ``trafilatura_fast``,
   ``resiliparse``. Pages go in as bytes, so charset work is timed too.
2. Dev WARC files (../shared/data/warc-dev): records/s and response pages/s of
   ``iter_warc_records`` (auto extraction), and, in the same run, datatrove's ``WarcReader`` +
   ``Trafilatura`` extractor on the same files (when datatrove is installed: ``pip install -e
   .[bench]``; its WarcReader also needs ``faust-cchardet`` and ``python-magic``): documents per CPU
   second, what each side keeps, and how the gb2312 pages come out.
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
    """Ours on the dev WARC files, and datatrove's WarcReader + Trafilatura on the same bytes."""
    from stages.web import WebDocument, iter_warc_records

    paths = sorted(p for p in (SHARED / "warc-dev").glob("*.warc.gz"))
    data = {p.name: p.read_bytes() for p in paths}
    out: dict = {"files": sorted(data)}

    def ours() -> tuple[list, dict]:
        stats, texts = [], {}
        for name in data:
            reader = iter_warc_records(io.BytesIO(data[name]))
            texts.update({item.meta["url"]: (item.text, item.meta["charset"]) for item in reader
                          if isinstance(item, WebDocument)})
            stats.append(reader.stats)
        return stats, texts

    stats, texts = ours()
    responses = sum(s.by_type.get("response", 0) for s in stats)
    records = sum(s.records for s in stats)
    cpu = cpu_seconds(ours, repeats)
    removed: dict = {}
    for s in stats:
        for reason, n in s.removed.items():
            removed[reason] = removed.get(reason, 0) + n
    out["ours"] = {"records": records, "responses": responses, "documents": sum(s.documents for s in stats),
                   "removed": removed,
                   "responses_per_cpu_s": responses / cpu, "records_per_cpu_s": records / cpu}
    if datatrove:
        out["datatrove"] = bench_datatrove(paths, repeats, texts)
    return out


def cpu_seconds(fn, repeats: int) -> float:
    """Median CPU seconds of this process over ``repeats`` calls of ``fn``."""
    cpu = []
    for _ in range(repeats):
        c0 = time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
    return statistics.median(cpu)


def bench_datatrove(paths: list[Path], repeats: int, ours: dict[str, tuple[str, str]]) -> dict:
    """datatrove 0.10.1's WarcReader (warcio; UTF-8, else cchardet's guess) + Trafilatura extractor
    (``favour_precision=True``, its default) on the same files. The extractor's ``extract`` is called
    in this process: in a datatrove pipeline the step runs it in a sandbox subprocess with a timeout
    (``timeout=None`` fails in 0.10.1: it adds the timeout to a float), whose IPC is not counted here.
    Also: what each side keeps (datatrove has no status filter and drops undecodable records without a
    count) and how the Chinese pages we decode as gb18030 come out in datatrove."""
    try:
        from datatrove.pipeline.extractors import Trafilatura
        from datatrove.pipeline.readers import WarcReader
        from loguru import logger
    except Exception as err:  # noqa: BLE001 - report, do not hide, why it could not run
        return {"error": f"datatrove not importable: {err}"}
    logger.disable("datatrove")  # a log line per file and per run
    try:
        reader = WarcReader(str(paths[0].parent), glob_pattern="*.warc.gz")
        extractor = Trafilatura(favour_precision=True)

        def run() -> tuple[int, int, dict]:
            read, documents, texts = 0, 0, {}
            for doc in reader.run():
                read += 1
                text = extractor.extract(doc.text)
                if text:
                    documents += 1
                    texts[doc.metadata["url"]] = text
            return read, documents, texts

        read, documents, texts = run()
        cpu = cpu_seconds(run, repeats)
    except Exception as err:  # noqa: BLE001
        return {"error": repr(err)}
    chinese = [url for url, (_, charset) in ours.items() if charset == "gb18030"]
    both = [url for url in chinese if url in texts]
    # keyed by URL (two URLs occur twice in these files): which pages each side keeps
    return {"records_read": read, "documents": documents, "documents_per_cpu_s": documents / cpu,
            "records_read_per_cpu_s": read / cpu,
            "only_datatrove": len(texts.keys() - ours.keys()), "only_ours": len(ours.keys() - texts.keys()),
            "gb18030_pages": {"ours": len(chinese), "datatrove": len(both),
                              "chars_ours_datatrove": {url: [len(ours[url][0]), len(texts[url])] for url in both},
                              "datatrove_replacement_chars": sum(texts[url].count("\ufffd") for url in both)}}


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
    parser.add_argument("--only", choices=("aeb", "warc", "gne"), help="run one part (the others keep their "
                        "results in bench/results/web.json)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is not here")
    parts = {"aeb": lambda: bench_aeb(args.repeats), "warc": lambda: bench_warc(args.repeats, not args.no_datatrove),
             "gne": bench_gne}
    path = RESULTS / "web.json"
    result = json.loads(path.read_text()) if args.only and path.exists() else {}
    result.update({name: run() for name, run in parts.items() if args.only in (None, name)})
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False))
    if "aeb" in result:
        print("| extractor | F1 | precision | recall | accuracy | pages/s per core | vs trafilatura | paths |")
        print("|---|---|---|---|---|---|---|---|")
        for name, r in result["aeb"]["extractors"].items():
            print(f"| {name} | {r['f1']:.3f} | {r['precision']:.3f} | {r['recall']:.3f} | {r['accuracy']:.3f} | "
                  f"{r['pages_per_cpu_s']:.1f} | {r['speedup_vs_trafilatura']:.2f}x | {r['paths']} |")
    if "warc" in result:
        print(json.dumps(result["warc"], indent=1))
    if "gne" in result:
        gne = result["gne"]
        print(f"GNE: {gne['pages']} pages, {gne['non_empty']} non-empty, {gne['plausible']} plausible")
        for r in gne["rows"]:
            print(f"  {r['page'][-40:]:40} {r['chars']:6} {r['han_share']:.2f} {r['charset']} {r['method']} "
                  f"{r['head'][:60]!r}")


if __name__ == "__main__":
    main()
