"""The report's sections after the stages: dedup clusters, tokenizer, mixture, timings, provenance.

Each function takes the data of ``pipeline.report_data.collect`` and returns one ``<section>``.
"""
from __future__ import annotations

from pipeline import report_svg as svg
from pipeline.html_util import cell, esc, mb, missing, num, section, table

LABELS = {"web": "Web", "encyclopedia": "Encyclopedia", "books": "Books", "papers": "Academic papers",
          "code": "Code", "others": "Others"}


def dedup(data: dict | None) -> str:
    """Cluster-size distribution and the largest clusters."""
    if not data:
        return section("dedup", "Duplicate clusters", missing("The dedup stage has not finished (or is not configured)."))
    summary = data["summary"]
    body = ""
    if summary:
        edges = summary.get("edges", {})
        body += (f'<p>{num(summary.get("clusters"))} clusters holding {num(summary.get("clustered_docs"))} documents; '
                 f'largest {num(summary.get("largest_cluster"))}; edges: {num(edges.get("exact"))} exact, '
                 f'{num(edges.get("near"))} near; removed: '
                 + ", ".join(f"{esc(k)} {num(v)}" for k, v in summary.get("removed", {}).items()) + "</p>")
        # JSON sorts the buckets as strings ("10-99" before "2"): order them by their lower bound
        sizes = sorted(summary.get("cluster_sizes", {}).items(), key=lambda kv: int(kv[0].split("-")[0].rstrip("+")))
        body += svg.hbars([(f"size {label}", [count]) for label, count in sizes], ["clusters"],
                          title="clusters by size")
    rows = [[esc(c["cluster"]), num(c["size"]), esc(", ".join(c["kept"])) or "-",
             esc(", ".join(f"{d} ({r})" for d, r in c["removed"])) or "-"] for c in data["largest"]]
    capped = (f", its first {num(data['rows_read'])} rows only (clusters reaching beyond them are undercounted)"
              if data["capped"] else "")
    body += (f"<h3>Largest clusters</h3><p class=\"note\">from the {esc(data['source'])}{capped}</p>"
             + table(["cluster (first document)", "documents", "kept", "removed (reason)"], rows, text_columns=(2, 3)))
    return section("dedup", "Duplicate clusters", body)


def tokenizer(report: dict | None, composition: dict | None) -> str:
    """Bytes per token per category and language: exact over the corpus (the mixture's counts)
    and on the tokenizer's held-out documents."""
    if not report and not composition:
        return section("tokenizer", "Tokenizer compression", missing("No tokenizer has been trained."))
    body = ""
    if report:
        t, overall = report["tokenizer"], report["evaluation"]["overall"]
        body += (f"<p>{num(t.get('vocab_size'))} entries; on {num(report['evaluation'].get('documents'))} held-out "
                 f"documents {overall['bytes_per_token']:.3f} bytes/token, {overall['chars_per_token']:.3f} "
                 f"characters/token; round-trip failures {num(report['evaluation']['round_trip']['failures'])}.</p>")
    if composition and composition.get("by_category_lang"):
        cats = [row["category"] for row in composition["by_category"] if row["tokens"]]
        langs = [row["lang"] for row in composition["by_lang"]]
        grid = {(r["category"], r["lang"]): r for r in composition["by_category_lang"]}
        rows = []
        for category in cats:
            line = [esc(LABELS.get(category, category))]
            for lang in langs:
                r = grid.get((category, lang))
                line.append(f"{r['bytes_per_token']:.2f}" if r and r["bytes_per_token"] else "")
            total = next(row for row in composition["by_category"] if row["category"] == category)
            line.append(f"<b>{total['bytes_per_token']:.2f}</b>")
            rows.append(line)
        body += ("<h3>Bytes per token over the whole corpus, by category and language</h3>"
                 + table(["category"] + langs + ["all"], rows))
        body += svg.hbars([(LABELS.get(r["category"], r["category"]), [r["bytes_per_token"] or 0])
                           for r in composition["by_category"] if r["tokens"]], ["bytes/token"],
                          value_label=lambda v: f"{v[0]:.2f} bytes/token")
    if report:
        evaluation = report["evaluation"]
        for key, label in (("by_category", "category"), ("by_lang", "language")):
            rows = [[esc(k), num(v["docs"]), num(v["tokens"]), f"{v['bytes_per_token']:.3f}",
                     f"{v['chars_per_token']:.3f}"] for k, v in sorted(evaluation.get(key, {}).items())]
            body += (f"<h3>Held-out evaluation by {label}</h3>"
                     + table([label, "documents", "tokens", "bytes/token", "chars/token"], rows))
    return section("tokenizer", "Tokenizer compression", body)


def mixture(mix: dict) -> str:
    """Table 1 (tokens, share, documents, bytes per category and language) and, per phase, target vs
    realised weight with shortfalls in red."""
    composition, phases = mix.get("composition"), mix.get("phases")
    if not composition:
        return section("mixture", "Mixture", missing("The mixture step has not run (or is not configured)."))

    def line(label: str, row: dict, cls: str = "") -> list:
        ratio = f"{row['bytes_per_token']:.2f}" if row.get("bytes_per_token") else "-"
        return [label, num(row["tokens"]), f"{row['share']:.1%}", num(row["documents"]), mb(row["bytes"]), ratio]

    total = composition["total"]
    total_row = {**total, "share": 1.0 if total["tokens"] else 0.0,
                 "bytes_per_token": total["bytes"] / total["tokens"] if total["tokens"] else None}
    rows = [line(esc(r["label"]), r) for r in composition["by_category"]] + [line("<b>Total</b>", total_row)]
    headers = ["tokens", "share", "documents", "bytes", "bytes/token"]
    body = ("<h3>Table 1: corpus composition by category</h3>" + table(["category"] + headers, rows)
            + svg.hbars([(r["label"], [r["share"] * 100]) for r in composition["by_category"]], ["share"],
                        value_label=lambda v: f"{v[0]:.1f}%")
            + "<h3>By language</h3>" + table(["language"] + headers, [line(esc(r["lang"]), r)
                                                                     for r in composition["by_lang"]]))
    for phase in phases or []:
        body += _phase(phase)
    return section("mixture", "Mixture", body, "Tokens counted with the trained tokenizer, exactly, over the "
                   "final corpus. Phase weights are of packed tokens (each document plus its separator).")


def _phase(phase: dict) -> str:
    rows, bars = [], []
    order = [c for c in LABELS if c in phase["categories"]] + sorted(set(phase["categories"]) - set(LABELS))
    for category in order:
        r = phase["categories"][category]
        # A category that ran out, or (newer phase plans) ended further than weight_tolerance from
        # its target, is what the reader must not miss: red.
        short = bool(r.get("ran_out") or r.get("shortfall_tokens", 0) > 0 or r.get("off_target"))
        note = ""
        if r.get("ran_out") or r.get("shortfall_tokens", 0) > 0:
            gap = f"{num(r['shortfall_tokens'])} tokens short" if r.get("shortfall_tokens") else "nothing left"
            note = f"ran out: {gap} (max_epochs {r.get('max_epochs', 1):g})"
        elif r.get("off_target"):
            note = f"off target by {r['weight'] - r['target_weight']:+.1%}: {r.get('off_target_because') or ''}"
        elif r.get("reuses_documents"):
            note = "repeats documents (a further epoch)"
        klass = "n short" if short else "n"
        rows.append([cell(esc(LABELS.get(category, category)), "short" if short else ""),
                     f"{r['target_weight']:.1%}", cell(f"{r['weight']:.1%}", klass), num(r["target_tokens"]),
                     cell(num(r["tokens"]), klass), num(r["documents"]), f"{r['epochs']:.3f}",
                     f"{r['cumulative_epochs']:.3f}", cell(esc(note), "short" if short else "")])
        bars.append((LABELS.get(category, category), [r["target_weight"] * 100, r["weight"] * 100]))
    chart = svg.hbars(bars, ["target", "realised"], stacked=False, colors=["#9aa5b5", svg.KEPT],
                      value_label=lambda v: f"{v[0]:.1f}% → {v[1]:.1f}%")
    return (f"<h3>Phase {esc(phase['name'])}: {num(phase['tokens'])} tokens in {num(phase['sequences'])} "
            f"sequences (budget {num(phase['budget'])}: {esc(phase.get('budget_from', ''))})</h3>"
            + table(["category", "target weight", "weight", "target tokens", "tokens", "documents", "epochs",
                     "cumulative epochs", "note"], rows, text_columns=(8,)) + chart)


def timing(stages: list[dict], report: dict | None) -> str:
    """Per stage: units, task seconds (all workers) and wall seconds; the tokenizer's own steps."""
    rows, bars = [], []
    for s in stages:
        t = s.get("totals")
        if t is None:
            continue
        speed = f"{t['input_bytes'] / 1e6 / t['task_seconds']:.2f}" if t.get("task_seconds") else "-"
        wall = s.get("wall_seconds")
        rows.append([f"{s['index']:02d} {esc(s['stage'])}", num(s["units"]), f"{t['task_seconds']:.2f}",
                     "-" if wall is None else f"{wall:.2f}", mb(t["input_bytes"]), speed])
        bars.append((f"{s['index']:02d} {s['stage']}", [wall or 0.0]))
    if not rows:
        return section("timing", "Run time", missing("No stage has finished yet."))
    body = table(["stage", "units", "task seconds", "wall seconds", "input", "MB/s per task"], rows)
    body += svg.hbars(bars, ["wall seconds"], value_label=lambda v: f"{v[0]:.2f} s", title="wall seconds per stage")
    if report and report.get("timings"):
        body += "<h3>Tokenizer</h3>" + table(["step", "seconds"], [[esc(k.removesuffix("_s")), f"{v:.2f}"]
                                                                   for k, v in report["timings"].items()])
    return section("timing", "Run time", body, "Task seconds add up every unit's time on its worker; wall "
                   "seconds run from the stage's first write to its manifest in its last pass (a resumed "
                   "stage counts only that pass).")


def provenance(data: dict) -> str:
    """Config hashes (planned from the config vs recorded with the outputs) and package versions."""
    rows = []
    for s in data["stages"]:
        stale = s["recorded"] is not None and s["recorded"] != s["planned"]
        state = "outputs from another config" if stale else ("match" if s["recorded"] else "not run")
        rows.append([esc(s["stage"]), f"<code>{esc(s['planned'])}</code>", f"<code>{esc(s['recorded'] or '-')}</code>",
                     cell(esc(state), "stale" if stale else "")])
    body = (f"<p>Run hash (the last stage's chained hash, which covers every stage's config and the "
            f"quality model): <code>{esc(data['run_hash'])}</code></p>"
            + table(["stage", "hash of this config", "hash of the outputs", ""], rows, numeric_from=9))
    extra = [("tokenizer step hash", data.get("tokenizer_hash")), ("tokenizer sha256", data.get("tokenizer_sha256")),
             ("mixture plan hash", data.get("mixture_plan_hash")), ("platform", data.get("platform"))]
    body += table(None, [[esc(k), f"<code>{esc(v or '-')}</code>"] for k, v in extra], numeric_from=9)
    body += "<h3>Versions</h3>" + table(["package", "version"], [[esc(k), esc(v)] for k, v in data["versions"].items()],
                                         numeric_from=9)
    return section("provenance", "Config hashes and versions", body)
