"""Build the sample corpus in sample_data/ from its hand-written sources, deterministically.

    python sample_data/build.py            # write every generated file, then check them
    python sample_data/build.py --check    # only read the generated files back and check them

Inputs are plain text that can be reviewed in a diff: ``authored/*.txt`` (records separated by
``%%% key: value | key: value`` header lines) and ``books/*.txt`` (one document per file, used as
they are). Everything else is generated here, with a fixed seed, byte-identical on every run:

    web/pages.jsonl.zst            authored web pages; some get a shared paragraph (expect: para);
                                   a few near-duplicates syndicated under another URL (expect: dup)
    web/mirror.jsonl               derived copies only: exact and near duplicates of web pages,
                                   encyclopedia articles, an abstract and a forum post (expect: dup)
    encyclopedia/articles.jsonl.gz code/files.jsonl (the sources, converted)
    papers/abstracts.parquet       the abstracts, plus two revised versions (`<id>v2`, expect: dup)
    others/forum.jsonl             posts, exact reposts of two web pages, an edited repost of a post
                                   (expect: dup), and five bad input lines (expect: ingest)
    web/crawl.warc.gz              a crawl file of the hand-written pages of stages/web/fixtures.py
                                   (corpus_pages): articles (en, zh; one GBK page in three charset
                                   declarations, expect: dup), a page of menus, a 404, a PDF, a page
                                   on a blocked domain, request/metadata/warcinfo/revisit records
    web/blocked_domains.txt        the block list of the crawl input in configs/sample.yaml
    quality/gold.jsonl             the authored gold paragraphs
    quality/junk.jsonl             junk texts generated from authored/junk_templates.txt
    manifest.jsonl                 one line per corpus record: file, key, category, lang, expect
    README.md                      the counts table between the ``counts`` markers

Every derived record names its original in ``dup_of`` and what was changed in ``derivation``.
"""
from __future__ import annotations

import argparse
import base64
import collections
import gzip
import io
import json
import random
import re
import statistics
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))  # the crawl file's pages and reader are the project's (stages.web)
AUTHORED = ROOT / "authored"
SEED = 20230601
EXPECT = ("keep", "lang", "rules", "quality", "dup", "para", "ingest")

HEADER = re.compile(r"^%%% ([a-z_]+: .*)$")
CJK = re.compile(r"[\u3400-\u9fff]")

# How many authored `keep` web pages of each language take each role. Roles never overlap, so a
# page is the original of at most one derivation and the `expect` of every original stays honest.
WEB_ROLES = {
    "en": [("para", 12), ("exact_mirror", 6), ("exact_forum", 1), ("near_mirror", 5), ("near_syndicated", 2)],
    "zh": [("para", 8), ("exact_mirror", 3), ("exact_forum", 1), ("near_mirror", 3), ("near_syndicated", 1)],
}
PARAGRAPH_NAMES = {"en": ["newsletter-en", "disclaimer-en"], "zh": ["follow-zh", "disclaimer-zh"]}

# Edits a copy-editor or a republishing site makes; near duplicates get one or two of them.
SYNONYMS = {
    "en": {"said": "stated", "large": "big", "small": "little", "often": "frequently",
           "usually": "generally", "quickly": "rapidly", "almost": "nearly", "nearly": "almost",
           "because": "since", "very": "really", "important": "significant", "difficult": "hard",
           "several": "a few", "around": "about", "begin": "start", "also": "additionally",
           "but": "yet", "whole": "entire"},
    "zh": {"非常": "十分", "但是": "不过", "因为": "由于", "所以": "因此", "可以": "能够",
           "比较": "较为", "许多": "不少", "很多": "不少", "马上": "立刻", "大概": "大约",
           "已经": "早已", "认为": "觉得", "现在": "如今"},
}
# Sentences a republisher or a revising author adds, per register.
ADDED_SENTENCES = {
    "news": {
        "en": ["This article was updated after publication to correct a date.",
               "Additional reporting by the regional news desk.",
               "A spokesperson declined to comment further when contacted on Wednesday.",
               "Readers are welcome to send their own experiences to the editor."],
        "zh": ["（本文发布后已更新，修正了部分数据。）",
               "如需转载，请与原作者联系获得授权。",
               "更多相关内容，请关注后续报道。",
               "本报记者将继续关注此事的进展。"],
    },
    "paper": {
        "en": ["This revised version adds a comparison with two recent baselines and corrects Table 2."],
        "zh": ["本文为修订版，补充了部分实验结果，并修正了表二中的笔误。"],
    },
    "forum": {
        "en": ["Edit: fixed a typo and added a link to the original thread."],
        "zh": ["（已编辑：修改了错别字。）"],
    },
}
# Shortest line counted as a shared paragraph (the dedup stage's default paragraph_min_chars).
MIN_SHARED_LINE = 30
SENTENCE_END = {"en": re.compile(r"(?<=[.!?])\s+"), "zh": re.compile(r"(?<=[。！？])")}


# --------------------------------------------------------------------------- reading sources

def read_records(path: Path) -> list[dict]:
    """Records of an authored file: header fields plus `text` (lines up to the next header)."""
    records: list[dict] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = HEADER.match(line)
        if match:
            fields = dict(part.split(": ", 1) for part in match.group(1).split(" | "))
            records.append({**fields, "lines": []})
        elif records:  # lines before the first header are comments about the file
            records[-1]["lines"].append(line)
    for record in records:
        record["text"] = "\n".join(record.pop("lines")).strip("\n")
    return records


def load_chrome() -> dict[tuple[str, str], list[str]]:
    return {(r["site"], r["part"]): r["text"].split("\n") for r in read_records(AUTHORED / "web_chrome.txt")}


def wrap(article: str, head: str | None, foot: str | None, chrome) -> str:
    """The page as a WET file shows it: a site's header lines, the article, a site's footer lines.
    Head and foot name sites separately because a republishing site swaps only the header."""
    head_lines = chrome[(head, "head")] if head else []
    foot_lines = chrome[(foot, "foot")] if foot else []
    return "\n".join([*head_lines, article, *foot_lines])


def text_lang(text: str) -> str:
    return "zh" if CJK.search(text) else "en"


# --------------------------------------------------------------------------- near-duplicate edits

def swap_words(text: str, lang: str, rng: random.Random, count: int = 3) -> str | None:
    """Replace `count` seeded occurrences of common words by synonyms; None if too few occur."""
    table = SYNONYMS[lang]
    keys = sorted(table, key=len, reverse=True)
    pattern = r"\b(" + "|".join(keys) + r")\b" if lang == "en" else "(" + "|".join(keys) + ")"
    matches = list(re.finditer(pattern, text, flags=re.IGNORECASE if lang == "en" else 0))
    if len(matches) < count:
        return None
    chosen = sorted(rng.sample(range(len(matches)), count), reverse=True)
    for index in chosen:
        match = matches[index]
        word = match.group(0)
        new = table[word.lower()] if lang == "en" else table[word]
        if word[0].isupper():
            new = new[0].upper() + new[1:]
        text = text[: match.start()] + new + text[match.end():]
    return text


def add_sentence(text: str, lang: str, rng: random.Random, register: str = "news") -> str:
    """Append a seeded stock sentence to one body paragraph (never the title line)."""
    lines = text.split("\n")
    body = [i for i, line in enumerate(lines) if i > 0 and len(line) > 40] or [len(lines) - 1]
    index = rng.choice(body)
    glue = " " if lang == "en" else ""
    lines[index] = lines[index] + glue + rng.choice(ADDED_SENTENCES[register][lang])
    return "\n".join(lines)


def drop_sentence(text: str, lang: str, rng: random.Random) -> str | None:
    """Remove one middle sentence of a paragraph that has at least three; None if none has."""
    lines = text.split("\n")
    candidates = [i for i, line in enumerate(lines) if i > 0 and len(SENTENCE_END[lang].split(line)) >= 3]
    if not candidates:
        return None
    index = rng.choice(candidates)
    sentences = [s for s in SENTENCE_END[lang].split(lines[index]) if s]
    del sentences[rng.randrange(1, len(sentences) - 1)]
    lines[index] = (" " if lang == "en" else "").join(sentences)
    return "\n".join(lines)


def edit(article: str, lang: str, ops: list[str], rng: random.Random, register: str = "news") -> tuple[str, list[str]]:
    """Apply the requested text edits; an edit that finds nothing to change falls back to adding
    a sentence, so that every near duplicate really differs from its original."""
    done = []
    for op in ops:
        if op == "swap_words":
            result = swap_words(article, lang, rng)
        elif op == "drop_sentence":
            result = drop_sentence(article, lang, rng)
        else:
            result = add_sentence(article, lang, rng, register)
        if result is None:
            op, result = "add_sentence", add_sentence(article, lang, rng, register)
        article = result
        done.append(op)
    return article, done


# --------------------------------------------------------------------------- web pages

def load_web(chrome) -> list[dict]:
    pages = []
    for name, lang in (("web_en.txt", "en"), ("web_zh.txt", "zh"), ("web_noise.txt", None)):
        for r in read_records(AUTHORED / name):
            pages.append({"id": r["id"], "url": r["url"], "article": r["text"], "site": r.get("site"),
                          "expect": r["expect"], "lang": lang or r["lang"]})
    for page in pages:
        page["text"] = wrap(page["article"], page["site"], page["site"], chrome)
    return pages


def assign_roles(pages: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    roles: dict[str, list[dict]] = collections.defaultdict(list)
    for lang, plan in WEB_ROLES.items():
        pool = sorted((p for p in pages if p["lang"] == lang and p["expect"] == "keep"), key=lambda p: p["id"])
        rng.shuffle(pool)
        for role, count in plan:
            roles[role] += pool[:count]
            pool = pool[count:]
    return roles


def insert_paragraph(page: dict, name: str, paragraph: str, rng: random.Random, chrome) -> None:
    """Paste the shared paragraph into the article, after its title, at a seeded position."""
    lines = page["article"].split("\n")
    position = rng.randrange(2, len(lines) + 1)
    lines.insert(position, paragraph)
    page["article"] = "\n".join(lines)
    page["text"] = wrap(page["article"], page["site"], page["site"], chrome)
    page["expect"] = "para"
    page["repeated_paragraph"] = name


def copy_record(source: dict, record_id: str, url: str | None, text: str, derivation: str, site=None) -> dict:
    record = {"id": record_id}
    if url is not None:
        record["url"] = url
    record.update(text=text, expect="dup", dup_of=source["id"], derivation=derivation)
    if site:
        record["site"] = site
    return record


def slug(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".html")


def derive_web(pages, roles, paragraphs, rng, chrome):
    """Mutates pages (para), returns (syndicated pages, mirror records, forum reposts)."""
    for lang in ("en", "zh"):
        names = PARAGRAPH_NAMES[lang]
        chosen = [p for p in roles["para"] if p["lang"] == lang]
        for i, page in enumerate(sorted(chosen, key=lambda p: p["id"])):
            name = names[i % len(names)]
            insert_paragraph(page, name, paragraphs[name], rng, chrome)

    mirror, syndicated, reposts = [], [], []
    for page in sorted(roles["exact_mirror"], key=lambda p: p["id"]):
        url = (f"https://www.copypaste-news.net/{slug(page['url'])}" if page["lang"] == "en"
               else f"https://www.caiji-zhan.cn/article/{slug(page['url'])}.html")
        mirror.append(copy_record(page, f"mirror-{len(mirror) + 1:03d}", url, page["text"], "exact", page["site"]))
    for page in sorted(roles["near_mirror"], key=lambda p: p["id"]):
        site = "mirror-en" if page["lang"] == "en" else "mirror-zh"
        ops = rng.choice([[], ["swap_words"], ["add_sentence"]])
        article, done = edit(page["article"], page["lang"], ops, rng)
        url = (f"https://www.newsnow-dailyhub.com/story/{slug(page['url'])}" if page["lang"] == "en"
               else f"https://www.zixun-kuaibao.cn/a/{slug(page['url'])}.html")
        mirror.append(copy_record(page, f"mirror-{len(mirror) + 1:03d}", url, wrap(article, site, page["site"], chrome),
                                  "+".join(["rewrap", *done]), site))
    for page in sorted(roles["near_syndicated"], key=lambda p: p["id"]):
        ops = [rng.choice(["drop_sentence", "add_sentence", "swap_words"])]
        article, done = edit(page["article"], page["lang"], ops, rng)
        url = f"https://www.regional-syndicate.com/feeds/{slug(page['url'])}"
        syndicated.append(copy_record(page, f"{page['id']}-syn", url, wrap(article, page["site"], page["site"], chrome),
                                      "+".join(done), page["site"]))
    for page in sorted(roles["exact_forum"], key=lambda p: p["id"]):
        reposts.append(copy_record(page, f"forum-repost-{len(reposts) + 1:03d}", None, page["text"], "exact"))
    # A page in its site's chrome shares the long banner and footer lines with the site's other
    # pages, so paragraph dedup trims it like a page with a pasted paragraph: label it alike.
    for page in pages:
        if page["site"] and page["expect"] == "keep":
            page["expect"] = "para"
    return syndicated, mirror, reposts


# --------------------------------------------------------------------------- other collections

def load_encyclopedia() -> list[dict]:
    records = []
    for name in ("encyclopedia_en.txt", "encyclopedia_zh.txt", "encyclopedia_other.txt"):
        for r in read_records(AUTHORED / name):
            records.append({"id": r["id"], "title": r["title"], "text": r["text"],
                            "lang_hint": r["lang_hint"], "expect": r["expect"]})
    return records


def load_papers() -> list[dict]:
    return [{"paper_id": r["paper_id"], "title": r["title"], "abstract": r["text"], "expect": r["expect"]}
            for r in read_records(AUTHORED / "papers.txt")]


def load_forum() -> list[dict]:
    return [{"id": r["id"], "text": r["text"], "expect": r["expect"]} for r in read_records(AUTHORED / "forum.txt")]


def fill_blob(content: str, path: str) -> str:
    """Replace an `@@hex-blob N@@` / `@@base64-blob N@@` line by N seeded random bytes."""
    rng = random.Random(f"{SEED}:{path}")

    def render(match: re.Match) -> str:
        data = rng.randbytes(int(match.group(2)))
        if match.group(1) == "hex":
            rows = [data[i:i + 16] for i in range(0, len(data), 16)]
            return "\n".join(",".join(f"0x{b:02x}" for b in row) + "," for row in rows)
        encoded = base64.b64encode(data).decode()
        return "\n".join(f'    "{encoded[i:i + 76]}"' for i in range(0, len(encoded), 76))

    return re.sub(r"^@@(hex|base64)-blob (\d+)@@$", render, content, flags=re.M)


def load_code() -> list[dict]:
    records = []
    for name in ("code_cpython.txt", "code.txt"):
        for r in read_records(AUTHORED / name):
            content = fill_blob(r["text"], r["path"]) + "\n"
            records.append({"path": r["path"], "language": r["language"], "content": content,
                            "expect": r["expect"], "license": r["license"]})
    return records


BAD_FORUM_LINES = [
    # malformed JSON: the closing brace is missing
    b'{"id": "forum-bad-001", "text": "Has anyone tried the new timetable? The link is broken", "expect": "ingest"',
    # invalid UTF-8: a Latin-1 byte for e-acute, as an old export would write it
    b'{"id": "forum-bad-002", "text": "Recipe for caf\xe9 au lait cake, as promised.", "expect": "ingest"}',
    # no `text` field at all
    b'{"id": "forum-bad-003", "body": "Sorry, I posted this in the wrong box.", "expect": "ingest"}',
    # `text` is not a string
    b'{"id": "forum-bad-004", "text": 42, "expect": "ingest"}',
    # `text` is empty
    b'{"id": "forum-bad-005", "text": "", "expect": "ingest"}',
]


def forum_lines(posts: list[dict]) -> list[bytes]:
    """Posts as JSONL, with the bad lines spread through the file rather than piled at the end."""
    lines = [json_line(post) for post in posts]
    step = max(1, len(lines) // (len(BAD_FORUM_LINES) + 1))
    for k, bad in reversed(list(enumerate(BAD_FORUM_LINES, start=1))):
        lines.insert(k * step, bad)
    return lines


def derive_other(encyclopedia, papers, forum, rng, chrome):
    """Duplicates of encyclopedia articles, abstracts and forum posts (mirror, papers, forum)."""
    mirror, paper_versions, forum_edits = [], [], []
    kept = [r for r in encyclopedia if r["expect"] == "keep"]
    enc_en = sorted(r["id"] for r in kept if r["lang_hint"] == "en")
    enc_zh = sorted(r["id"] for r in kept if r["lang_hint"].startswith("zh"))
    by_id = {r["id"]: r for r in encyclopedia}
    exact_en, near_en = rng.sample(enc_en, 2)
    for article_id in (exact_en, rng.choice(enc_zh)):
        article = by_id[article_id]
        url = f"https://www.freewiki-mirror.org/wiki/{article['title'].replace(' ', '_')}"
        mirror.append(copy_record(article, f"mirror-enc-{len(mirror) + 1:03d}", url, article["text"], "exact"))
    article = by_id[near_en]
    text, done = edit(article["text"], "en", ["swap_words", "add_sentence"], rng)
    url = f"https://www.knowledge-hub-online.com/topics/{article['title'].lower().replace(' ', '-')}"
    mirror.append(copy_record(article, f"mirror-enc-{len(mirror) + 1:03d}", url, wrap(text, "mirror-en", None, chrome),
                              "+".join(["rewrap", *done]), "mirror-en"))

    good_papers = sorted((p for p in papers if p["expect"] == "keep"), key=lambda p: p["paper_id"])
    copied, *versioned = rng.sample(good_papers, 3)
    mirror.append({"id": "mirror-paper-001", "url": f"https://news.riverbend-univ.ac.uk/research/{copied['paper_id']}",
                   "text": copied["abstract"], "expect": "dup", "dup_of": copied["paper_id"], "derivation": "exact"})
    for paper in sorted(versioned, key=lambda p: p["paper_id"]):
        lang = text_lang(paper["abstract"])
        text, done = edit(paper["abstract"], lang, [rng.choice(["swap_words", "add_sentence"])], rng, "paper")
        # Parquet columns are fixed (paper_id, title, abstract, expect): the v2 suffix names the original.
        paper_versions.append({"paper_id": f"{paper['paper_id']}v2", "title": paper["title"], "abstract": text,
                               "expect": "dup", "_dup_of": paper["paper_id"], "_derivation": "+".join(done)})

    long_posts = sorted((p for p in forum if p["expect"] == "keep" and len(p["text"]) > 600), key=lambda p: p["id"])
    exact_post, near_post = rng.sample(long_posts, 2)
    url = f"https://www.forum-archive-mirror.net/t/{exact_post['id']}"
    mirror.append(copy_record(exact_post, "mirror-forum-001", url, exact_post["text"], "exact"))
    lang = text_lang(near_post["text"])
    text, done = edit(near_post["text"], lang, ["add_sentence"], rng, "forum")
    forum_edits.append(copy_record(near_post, "forum-repost-edit-001", None, text, "+".join(done)))
    return mirror, paper_versions, forum_edits


# --------------------------------------------------------------------------- quality training set

def load_gold() -> list[dict]:
    records = []
    for name in ("gold_en.txt", "gold_zh.txt"):
        records += [{"id": r["id"], "text": r["text"], "lang": r["lang"]} for r in read_records(AUTHORED / name)]
    return records


def make_junk(rng: random.Random) -> list[dict]:
    """Junk texts: sentences of one template kind, slots filled, until a seeded target length."""
    records = read_records(AUTHORED / "junk_templates.txt")
    slots = {(r["slot"], r["lang"]): r["text"].split("\n") for r in records if "slot" in r}
    junk = []
    for kind in (r for r in records if "kind" in r):
        lang, templates = kind["lang"], kind["text"].split("\n")
        for _ in range(int(kind["count"])):
            target = rng.randint(200, 700) if lang == "en" else rng.randint(200, 360)
            parts: list[str] = []
            pool: list[str] = []
            while sum(map(len, parts)) < target:
                if not pool:  # draw without replacement, refilling a fresh shuffle when it runs out
                    pool = rng.sample(templates, len(templates))
                parts.append(re.sub(r"\{(\w+)\}", lambda m: rng.choice(slots[(m.group(1), lang)]), pool.pop()))
            glue = "\n" if kind["join"] == "line" else (" " if lang == "en" else "")
            junk.append({"id": f"junk-{lang}-{len(junk) + 1:03d}", "text": glue.join(parts), "lang": lang,
                         "kind": kind["kind"]})
    return junk


# --------------------------------------------------------------------------- writing

def json_line(record: dict) -> bytes:
    public = {k: v for k, v in record.items() if not k.startswith("_") and v is not None}
    return json.dumps(public, ensure_ascii=False).encode("utf-8")


def jsonl(records) -> bytes:
    return b"".join(json_line(r) + b"\n" for r in records)


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def parquet_bytes(records: list[dict]) -> bytes:
    columns = ("paper_id", "title", "abstract", "expect")
    table = pa.table({c: pa.array([r[c] for r in records], type=pa.string()) for c in columns})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


CRAWL = "web/crawl.warc.gz"
BLOCK_LIST = "web/blocked_domains.txt"


def write_crawl(path: Path) -> None:
    """The crawl file: the fixture's hand-written pages as a WARC, byte-identical on every run."""
    from stages.web.fixtures import corpus_pages, write_sample_warc

    path.parent.mkdir(parents=True, exist_ok=True)
    write_sample_warc(path, pages=corpus_pages())


def block_list() -> bytes:
    from stages.web.fixtures import BLOCKED_DOMAIN

    return (b"# Domains the crawl input of configs/sample.yaml blocks (UT1 `domains` format: one a line;\n"
            b"# a domain blocks its subdomains too). Written by sample_data/build.py.\n"
            + BLOCKED_DOMAIN.encode() + b"\n")


def crawl_rows() -> list[dict]:
    """One manifest row per WARC record, as the ingest reads them with the block list: a page's text
    is `keep` (or `dup` of the first page with the same text), any other record `ingest`."""
    from stages.web import UrlFilter, WebDocument, iter_warc_records
    from stages.web.fixtures import corpus_pages

    langs = {page.url: page.lang for page in corpus_pages()}
    reader = iter_warc_records(ROOT / CRAWL, url_filter=UrlFilter.from_files(ROOT / BLOCK_LIST))
    rows, first = [], {}
    for item in reader:
        key = item.meta["record_id"].strip("<>")
        lang, expect, dup_of = "unknown", "ingest", None
        if isinstance(item, WebDocument):
            lang, dup_of = langs[item.meta["url"]], first.setdefault(item.text, key)
            expect, dup_of = ("keep", None) if dup_of == key else ("dup", dup_of)
        rows.append({"file": CRAWL, "key": key, "category": "web", "lang": lang, "expect": expect, "dup_of": dup_of})
    return rows


def manifest_rows(pages, syndicated, mirror, encyclopedia, papers, code, forum_records, lang_of):
    """One row per corpus record: where it is, its key, category, language and expectation."""
    rows = []

    def add(file, key, category, lang, record):
        rows.append({"file": file, "key": key, "category": category, "lang": lang, "expect": record["expect"],
                     "dup_of": record.get("dup_of") or record.get("_dup_of")})

    for p in [*pages, *syndicated]:
        add("web/pages.jsonl.zst", p["id"], "web", lang_of[p.get("dup_of", p["id"])], p)
    for m in mirror:
        add("web/mirror.jsonl", m["id"], "web", lang_of[m["dup_of"]], m)
    for e in encyclopedia:
        add("encyclopedia/articles.jsonl.gz", e["id"], "encyclopedia", e["lang_hint"], e)
    for p in papers:
        add("papers/abstracts.parquet", p["paper_id"], "papers", text_lang(p["abstract"]), p)
    for c in code:
        add("code/files.jsonl", c["path"], "code", c["language"], c)
    for book in sorted((ROOT / "books").glob("*.txt")):
        add(f"books/{book.name}", book.name, "books", text_lang(book.read_text(encoding="utf-8")), {"expect": "keep"})
    for line_number, record in forum_records:
        add("others/forum.jsonl", record["id"] if "id" in record else f"line {line_number}", "others",
            lang_of.get(record.get("dup_of") or record.get("id"), "unknown"), record)
    return rows + crawl_rows()


def build() -> None:
    rng = random.Random(SEED)
    chrome = load_chrome()
    paragraphs = read_paragraphs()
    pages = load_web(chrome)
    encyclopedia, papers, forum, code = load_encyclopedia(), load_papers(), load_forum(), load_code()

    roles = assign_roles(pages, rng)
    syndicated, web_mirror, reposts = derive_web(pages, roles, paragraphs, rng, chrome)
    other_mirror, paper_versions, forum_edits = derive_other(encyclopedia, papers, forum, rng, chrome)
    mirror = web_mirror + other_mirror
    posts = forum + reposts + forum_edits
    papers_out = papers + paper_versions

    page_fields = ("id", "url", "text", "expect", "site", "repeated_paragraph", "dup_of", "derivation")
    pages_out = [{k: p.get(k) for k in page_fields} for p in pages] + syndicated
    write(ROOT / "web/pages.jsonl.zst", zstandard.ZstdCompressor(level=19).compress(jsonl(pages_out)))
    write(ROOT / "web/mirror.jsonl", jsonl(mirror))
    write(ROOT / "encyclopedia/articles.jsonl.gz", gzip.compress(jsonl(encyclopedia), compresslevel=9, mtime=0))
    write(ROOT / "papers/abstracts.parquet", parquet_bytes(papers_out))
    write(ROOT / "code/files.jsonl", jsonl(code))
    forum_bytes = forum_lines(posts)
    write(ROOT / "others/forum.jsonl", b"".join(line + b"\n" for line in forum_bytes))
    write(ROOT / "quality/gold.jsonl", jsonl(load_gold()))
    write(ROOT / "quality/junk.jsonl", jsonl(make_junk(random.Random(f"{SEED}:junk"))))
    write(ROOT / BLOCK_LIST, block_list())
    write_crawl(ROOT / CRAWL)

    lang_of = {p["id"]: p["lang"] for p in pages}
    lang_of.update({e["id"]: e["lang_hint"] for e in encyclopedia})
    lang_of.update({p["paper_id"]: text_lang(p["abstract"]) for p in papers})
    lang_of.update({f["id"]: text_lang(f["text"]) for f in forum})
    forum_records = [(n, parse_forum_line(line) or {"expect": "ingest"}) for n, line in enumerate(forum_bytes, 1)]
    rows = manifest_rows(pages, syndicated, mirror, encyclopedia, papers_out, code, forum_records, lang_of)
    write(ROOT / "manifest.jsonl", jsonl(rows))
    update_readme(rows)


def parse_forum_line(line: bytes) -> dict | None:
    try:
        record = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


# --------------------------------------------------------------------------- README counts

def counts_table(rows: list[dict]) -> str:
    by_category = collections.Counter(r["category"] for r in rows)
    lines = ["| category | records | by language | by expect |", "|---|---|---|---|"]
    for category in ("web", "encyclopedia", "books", "papers", "code", "others"):
        subset = [r for r in rows if r["category"] == category]
        langs = collections.Counter(r["lang"] for r in subset)
        expects = collections.Counter(r["expect"] for r in subset)
        lines.append(f"| {category} | {by_category[category]} | {fmt(langs)} | {fmt(expects)} |")
    total = collections.Counter(r["expect"] for r in rows)
    lines.append(f"| **all** | **{len(rows)}** | | {fmt(total)} |")
    return "\n".join(lines)


def fmt(counter: collections.Counter) -> str:
    return ", ".join(f"{key} {n}" for key, n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def update_readme(rows: list[dict]) -> None:
    readme = ROOT / "README.md"
    start, end = "<!-- counts:start (written by build.py) -->", "<!-- counts:end -->"
    text = readme.read_text(encoding="utf-8")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{start}\n{counts_table(rows)}\n{end}{tail}", encoding="utf-8")


# --------------------------------------------------------------------------- checking

def read_jsonl(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def shingles(text: str, n: int = 5) -> set:
    """Word 5-grams for space-separated text, character 5-grams for Chinese."""
    if text_lang(text) == "zh":
        compact = re.sub(r"\s+", "", text)
        return {compact[i:i + n] for i in range(max(1, len(compact) - n + 1))}
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def check() -> dict:
    """Read every generated file back; raise AssertionError on any inconsistency; return a report."""
    pages = read_jsonl(zstandard.ZstdDecompressor().decompress((ROOT / "web/pages.jsonl.zst").read_bytes()))
    mirror = read_jsonl((ROOT / "web/mirror.jsonl").read_bytes())
    encyclopedia = read_jsonl(gzip.decompress((ROOT / "encyclopedia/articles.jsonl.gz").read_bytes()))
    papers = pq.read_table(ROOT / "papers/abstracts.parquet").to_pylist()
    code = read_jsonl((ROOT / "code/files.jsonl").read_bytes())
    raw_forum = (ROOT / "others/forum.jsonl").read_bytes().split(b"\n")[:-1]
    parsed = [parse_forum_line(line) for line in raw_forum]
    forum = [r for r in parsed if r and isinstance(r.get("text"), str) and r["text"]]
    bad = len(raw_forum) - len(forum)
    gold = read_jsonl((ROOT / "quality/gold.jsonl").read_bytes())
    junk = read_jsonl((ROOT / "quality/junk.jsonl").read_bytes())
    books = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "books").glob("*.txt"))}
    manifest = read_jsonl((ROOT / "manifest.jsonl").read_bytes())
    crawl = crawl_rows()

    assert bad == len(BAD_FORUM_LINES), f"forum.jsonl has {bad} bad lines"
    with tempfile.TemporaryDirectory() as scratch:  # the crawl file is the fixture's, byte for byte
        write_crawl(Path(scratch) / CRAWL)
        assert (Path(scratch) / CRAWL).read_bytes() == (ROOT / CRAWL).read_bytes(), f"{CRAWL} is not the fixture's"
    assert (ROOT / BLOCK_LIST).read_bytes() == block_list(), f"{BLOCK_LIST} differs from what build.py writes"
    assert [json_line(r) for r in manifest if r["file"] == CRAWL] == [json_line(r) for r in crawl], \
        f"the manifest's {CRAWL} rows are stale"
    corpus = {r["id"]: r["text"] for r in [*pages, *mirror, *encyclopedia, *forum]}
    corpus.update({p["paper_id"]: p["abstract"] for p in papers})
    corpus.update({c["path"]: c["content"] for c in code})
    corpus.update(books)
    ids = [r["id"] for r in [*pages, *mirror, *encyclopedia, *forum]] + [p["paper_id"] for p in papers]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert all(r["expect"] in EXPECT for r in [*pages, *mirror, *encyclopedia, *forum, *papers, *code])
    assert len(manifest) == len(corpus) + bad + len(crawl), (len(manifest), len(corpus), bad, len(crawl))
    assert all(3000 <= len(t.encode()) <= 8000 for t in books.values()), "books must be 3-8 KB"
    assert all(600 <= len(r["text"]) <= 3000 for r in encyclopedia), "articles must be 600-3000 chars"
    assert all(200 <= len(r["text"]) <= 1500 for r in gold), "gold must be 200-1500 chars"
    corpus_texts = set(corpus.values())
    corpus_lines = {line for t in corpus.values() for line in t.split("\n") if len(line) >= 40}
    assert len({r["text"] for r in [*gold, *junk]}) == len(gold) + len(junk), "repeated quality texts"
    for record in [*gold, *junk]:
        assert record["text"] not in corpus_texts, f"{record['id']} is also a corpus document"
        shared = [line for line in record["text"].split("\n") if line in corpus_lines]
        assert not shared, f"{record['id']} shares a line with the corpus: {shared[0][:60]}"

    originals = corpus
    dups = [(r["id"], r.get("dup_of"), r["text"], r.get("derivation")) for r in [*pages, *mirror, *forum]
            if r["expect"] == "dup"]
    dups += [(p["paper_id"], p["paper_id"].removesuffix("v2"), p["abstract"], "v2") for p in papers
             if p["expect"] == "dup"]
    exact = [d for d in dups if d[3] == "exact"]
    assert all(originals[d[1]] == d[2] for d in exact), "an exact duplicate differs from its original"
    near = {d[0]: round(jaccard(originals[d[1]], d[2]), 3) for d in dups if d[3] != "exact"}
    assert all(originals[d[1]] != d[2] for d in dups if d[3] != "exact"), "a near duplicate is exact"

    check_shared_lines([*pages, *mirror, *encyclopedia, *forum], papers, books)
    para = [r for r in pages if r["expect"] == "para"]
    pasted = [r for r in para if "repeated_paragraph" in r]
    for name in {r["repeated_paragraph"] for r in pasted}:
        holders = [r for r in pasted if r["repeated_paragraph"] == name]
        paragraph = read_paragraphs()[name]
        assert len(holders) >= 4 and all(paragraph in r["text"].split("\n") for r in holders)

    sizes = {str(p.relative_to(ROOT)): p.stat().st_size for p in sorted(ROOT.rglob("*")) if p.is_file()}
    shipped = sum(size for name, size in sizes.items() if not name.startswith("authored/"))
    assert sum(sizes.values()) < 2_000_000, "sample_data/ must stay under 2 MB"
    return {
        "records": collections.Counter(r["category"] for r in manifest),
        "expect": collections.Counter(r["expect"] for r in manifest),
        "lang": collections.Counter(r["lang"] for r in manifest),
        "exact_dups": len(exact), "near_dups": len(near),
        "para_docs": len(para), "para_docs_with_pasted_paragraph": len(pasted),
        "near_dup_jaccard_min_median_max": [min(near.values()), statistics.median(near.values()), max(near.values())],
        "near_dup_jaccard": near,
        "gold": collections.Counter(r["lang"] for r in gold), "junk": collections.Counter(r["lang"] for r in junk),
        "bad_forum_lines": bad, "crawl_records": collections.Counter(r["expect"] for r in crawl),
        "bytes_total": sum(sizes.values()), "bytes_generated_and_books": shipped,
        "bytes_per_file": sizes,
    }


def check_shared_lines(records: list[dict], papers: list[dict], books: dict[str, str]) -> None:
    """Among records that should survive, a `keep` record shares no line of MIN_SHARED_LINE or more
    characters with another one; only `para` records do (what paragraph dedup acts on)."""
    survivors = [(r["id"], r["expect"], r["text"]) for r in records if r["expect"] in ("keep", "para")]
    survivors += [(p["paper_id"], p["expect"], p["abstract"]) for p in papers if p["expect"] == "keep"]
    survivors += [(name, "keep", text) for name, text in books.items()]
    holders = collections.defaultdict(set)
    for key, _, text in survivors:
        for line in text.split("\n"):
            normalised = " ".join(line.lower().split())
            if len(normalised) >= MIN_SHARED_LINE:
                holders[normalised].add(key)
    expect = {key: value for key, value, _ in survivors}
    for line, keys in holders.items():
        wrong = sorted(k for k in keys if expect[k] == "keep") if len(keys) > 1 else []
        assert not wrong, f"kept records {wrong} share the line {line[:60]!r}"


def read_paragraphs() -> dict[str, str]:
    return {r["name"]: r["text"] for r in read_records(AUTHORED / "repeated_paragraphs.txt")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check the generated files")
    args = parser.parse_args(argv)
    if not args.check:
        build()
    report = check()
    json.dump(report, sys.stdout, ensure_ascii=False, indent=1, default=dict)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
