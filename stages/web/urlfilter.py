"""URL and domain block/allow lists, as the UT1 blacklists and FineWeb's URL filter use them.

Lists are plain text, one rule a line; blank lines and ``#`` comments are ignored:

- block domains (UT1's ``domains`` files): ``example.com`` blocks ``example.com`` and every
  subdomain (``a.b.example.com``), matched by walking the host's parent domains (a set lookup per
  label, whatever the list's size); a leading ``www.`` or ``*.`` in a rule is ignored;
- block URL substrings (UT1's ``urls`` files): ``example.org/casino`` blocks every URL that
  contains it (scheme-less, case-insensitive), matched with one compiled alternation;
- allow domains: an allowed domain (or subdomain of one) is kept whatever the block lists say.

``decide(url)`` returns a ``UrlDecision(allowed, rule, list)``; ``rule`` is the matched line and
``list`` the name of the list it came from (``allow``, ``block_domain``, ``block_url``), or None
when no rule matched (allowed).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import urlsplit


@dataclass(frozen=True)
class UrlDecision:
    allowed: bool
    rule: str | None = None
    list: str | None = None


def read_list(path: str | os.PathLike) -> list[str]:
    """The rules of one list file (UTF-8, one a line, ``#`` comments and blank lines skipped)."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        return parse_rules(handle)


def parse_rules(lines: Iterable[str]) -> list[str]:
    rules = []
    for line in lines:
        line = line.split("#", 1)[0].strip() if not line.lstrip().startswith("http") else line.strip()
        if line:
            rules.append(line)
    return rules


def _norm_domain(rule: str) -> str:
    rule = rule.strip().lower().rstrip(".")
    if "://" in rule:
        rule = urlsplit(rule).hostname or ""
    for prefix in ("*.", "www."):
        if rule.startswith(prefix):
            rule = rule[len(prefix):]
    return rule


def _norm_url(url: str) -> str:
    url = url.strip().lower()
    if "://" in url:
        url = url.split("://", 1)[1]
    return url[4:] if url.startswith("www.") else url


def host_of(url: str) -> str | None:
    try:
        host = urlsplit(url if "://" in url else "http://" + url).hostname
    except ValueError:
        return None
    return host.rstrip(".") if host else None


class UrlFilter:
    """Block lists (domains, URL substrings) and an allow list of domains."""

    def __init__(self, block_domains: Iterable[str] = (), block_urls: Iterable[str] = (),
                 allow_domains: Iterable[str] = ()):
        self.block_domains = {_norm_domain(d): d.strip() for d in block_domains if _norm_domain(d)}
        self.allow_domains = {_norm_domain(d): d.strip() for d in allow_domains if _norm_domain(d)}
        subs = {_norm_url(u): u.strip() for u in block_urls if _norm_url(u)}
        self.block_urls = subs
        # longest first, so the reported rule is the most specific one that matched
        self._url_re = (re.compile("|".join(re.escape(s) for s in sorted(subs, key=len, reverse=True)))
                        if subs else None)

    @classmethod
    def from_files(cls, block_domains: str | os.PathLike | None = None, block_urls: str | os.PathLike | None = None,
                   allow_domains: str | os.PathLike | None = None) -> "UrlFilter":
        return cls(read_list(block_domains) if block_domains else (),
                   read_list(block_urls) if block_urls else (),
                   read_list(allow_domains) if allow_domains else ())

    @staticmethod
    def _match_domain(host: str, table: dict[str, str]) -> str | None:
        labels = host.split(".")
        for i in range(len(labels)):
            rule = table.get(".".join(labels[i:]))
            if rule is not None:
                return rule
        return None

    def decide(self, url: str) -> UrlDecision:
        host = host_of(url)
        if host and self.allow_domains:
            rule = self._match_domain(host, self.allow_domains)
            if rule is not None:
                return UrlDecision(True, rule, "allow")
        if host and self.block_domains:
            rule = self._match_domain(host, self.block_domains)
            if rule is not None:
                return UrlDecision(False, rule, "block_domain")
        if self._url_re is not None:
            match = self._url_re.search(_norm_url(url))
            if match:
                return UrlDecision(False, self.block_urls[match.group(0)], "block_url")
        return UrlDecision(True)
