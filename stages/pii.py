"""PII redaction: e-mail addresses, IP addresses, phone numbers, Chinese ID numbers, card numbers.

Contract: every document is kept (unless ``remove_over`` is set) with each item found replaced by
the placeholder of its kind (``placeholders``), and gets ``pii_spans`` (string, null when nothing
was found): a JSON list of ``[kind, start, end]``, character offsets into the text as it came in.
With ``remove_over: N`` a document with more than N items is removed instead (reason
``pii_dense``: contact lists, leaked dumps), its text untouched.

=============  ==============================================================================
kind           what counts (and what does not, by default)
=============  ==============================================================================
email          local@domain.tld; not addresses at example.com/.org/.net, *.example, *.test,
               *.invalid, localhost (documentation), unless ``keep_example_emails: false``
ip_address     IPv4 and IPv6 that ``ipaddress`` calls global; private, loopback, link-local and
               documentation ranges (192.168.x.x, 10.x, 192.0.2.x, 2001:db8::...) are kept unless
               ``redact_private_ips``; a dotted quad right after ``v``/``version``/``==`` is a
               version string, four numbers under 32 a section number unless after "IP",
               "host", "server", "from"...; IPv6 only in global unicast 2000::/3
phone          ``+<country> ...`` (8-15 digits, E.164), Chinese mobile (1[3-9] + 9 digits, with
               optional +86/86 and spaces or dashes), Chinese landline (0 + 2-3 digit area code,
               dash or brackets, 7-8 digits), North American ``(415) 555-2671`` / ``415-555-2671``
cn_id          Chinese resident ID: 17 digits + check character, region 1-8, a real birth date,
               ISO 7064 MOD 11-2 checksum
credit_card    13-19 digits (groups of digits separated by one space or dash), a card network's
               prefix and length, Luhn checksum
=============  ==============================================================================

Look-alikes left alone: dates, times, version strings, ISBNs (978/979 prefixes are no card's),
git hashes and UUIDs (hex with letters; no pattern matches inside a longer alphanumeric run),
numbers inside longer digit runs, checksums that fail. Where spans of two kinds overlap, the
first of email, cn_id, credit_card, ip_address, phone wins.

Stats: ``found.<kind>`` (items), ``docs_with.<kind>``, ``docs_with_pii``.
"""
from __future__ import annotations

import datetime
import ipaddress
import json
import re
from typing import Literal

import pyarrow as pa
from pydantic import Field

from pipeline.stage import Stage, StageConfig, StageOutput, split
from pipeline.stats import Stats

Kind = Literal["email", "ip_address", "phone", "cn_id", "credit_card"]
KINDS: tuple[str, ...] = ("email", "cn_id", "credit_card", "ip_address", "phone")  # overlap priority
REASON = "pii_dense"


def _default_placeholders() -> dict[str, str]:
    return {"email": "<EMAIL>", "ip_address": "<IP>", "phone": "<PHONE>", "cn_id": "<ID_NUMBER>",
            "credit_card": "<CARD_NUMBER>"}


class PIIConfig(StageConfig):
    """The ``stages.pii`` section."""

    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS), description="what to redact")
    placeholders: dict[Kind, str] = Field(
        default_factory=_default_placeholders, description="replacement per kind; kinds not given keep their default")
    redact_private_ips: bool = Field(False, description="also private, loopback and documentation addresses")
    keep_example_emails: bool = Field(True, description="leave example.com / .test / .invalid addresses alone")
    remove_over: int | None = Field(None, ge=0, description="remove documents with more items than this; null: never")

    def placeholder(self, kind: str) -> str:
        return {**_default_placeholders(), **self.placeholders}[kind]


# ------------------------------------------------------------------------------------ patterns
# Each pattern is anchored on what its kind must start with, so `re` skips ahead in C: e-mail on
# the "@" (the local part is found backwards from it), the others on a digit, "+", or "(".

_EMAIL_DOMAIN = re.compile(r"@((?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24})(?![A-Za-z0-9-])")
_EMAIL_LOCAL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}\Z")
_EXAMPLE_DOMAIN = re.compile(r"(?:^|\.)(?:example\.(?:com|org|net)|[^.]+\.(?:example|test|invalid|localhost)|localhost)$",
                             re.IGNORECASE)
_W = "A-Za-z0-9_"  # ASCII word characters: Python's \w would also count 中文 as letters
_IPV4 = re.compile(rf"(?<![{_W}.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){{3}}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![{_W}]|\.\d)")
_VERSION_BEFORE = re.compile(r"(?:\b(?:[vV]|[Vv]ersion|VERSION|[Vv]er\.?|[Rr]ev(?:ision)?\.?|[Rr]elease)|==|>=|<=|~=|[A-Za-z]-|/)\s*\Z")
# A dotted quad of small numbers is far more often a section number ("11.1.7.1. Integrating") than
# an address; it counts as one only after words that say so. (The public ones among them are few,
# 32^4 of 2^32, and mostly well-known resolvers such as 8.8.8.8 and 1.1.1.1, not anyone's data.)
_IP_CONTEXT = re.compile(r"(?i)(?:\bip|addr|address|host|server|from|to|dns|ping|ssh|@|//|地址|服务器|主机)[\s:=：\"'(\[]*\Z")
_IPV6 = re.compile(rf"(?<![{_W}:.])(?=[0-9A-Fa-f]{{0,4}}:[0-9A-Fa-f]{{0,4}}:)[0-9A-Fa-f:]{{2,39}}(?:(?<=:)(?:\d{{1,3}}\.){{3}}\d{{1,3}})?(?![{_W}:])")
_ID = re.compile(r"(?<![\dA-Za-z])[1-8]\d{16}[\dXx](?![\dA-Za-z])")
_CARD = re.compile(rf"(?<![{_W}-])\d(?:[ -]?\d){{12,18}}(?![{_W}]|-\d)")
_PHONE = re.compile(
    rf"(?<![{_W}+])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"          # international
    r"|(?:86[ -]?)?1[3-9]\d(?:[ -]?\d{4}){2}"                                     # Chinese mobile
    r"|(?:\(0\d{2,3}\)|（0\d{2,3}）|0\d{2,3}-)[ ]?\d{7,8}"                          # Chinese landline
    r"|\(\d{3}\)[ ]?\d{3}-\d{4}|\d{3}-\d{3}-\d{4}"                                # North American
    rf")(?![{_W}]|-\d)")
_ANY_DIGIT = re.compile(r"\d")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
# Card networks: (prefixes, lengths). Without them one random 16-digit number in ten passes Luhn.
_CARD_NETWORKS = (
    (("4",), (13, 16, 19)),                                                                # Visa
    (tuple(str(p) for p in range(51, 56)) + tuple(str(p) for p in range(2221, 2721)), (16,)),  # Mastercard
    (("34", "37"), (15,)),                                                                 # Amex
    (("6011", "65") + tuple(str(p) for p in range(644, 650)), (16, 17, 18, 19)),          # Discover
    (tuple(str(p) for p in range(3528, 3590)), (16, 17, 18, 19)),                         # JCB
    (("62",), (16, 17, 18, 19)),                                                           # UnionPay
    (("36", "38", "39") + tuple(str(p) for p in range(300, 306)), (14,)),                  # Diners
)


def luhn(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def valid_cn_id(number: str) -> bool:
    """18 characters: region, birth date YYYYMMDD (1900 to today), sequence, MOD 11-2 check."""
    try:
        born = datetime.date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return False
    if not datetime.date(1900, 1, 1) <= born <= datetime.date.today():
        return False
    check = _ID_CHECK[sum(int(d) * w for d, w in zip(number[:17], _ID_WEIGHTS)) % 11]
    return number[17].upper() == check


def valid_card(text: str) -> bool:
    digits = re.sub(r"[ -]", "", text)
    separators = set(re.findall(r"[ -]", text))
    if len(separators) > 1:  # "4111 1111-1111 1111" is not how a card number is written
        return False
    if sum(digits[i + 3:i + 4] == "0" for i in range(0, 16, 4)) >= 3:  # "5100 1800 5100 1350": coordinates,
        return False  # round numbers in groups (a real card has 3 of 4 groups ending in 0 once in 270)
    return any(digits.startswith(prefixes) and len(digits) in lengths for prefixes, lengths in _CARD_NETWORKS) \
        and luhn(digits)


def _digits(text: str) -> int:
    return sum(c.isdigit() for c in text)


class PII(Stage):
    """Redacts personal data with placeholders (module docstring)."""

    name = "pii"
    Config = PIIConfig
    whole_shard = False  # each document is judged alone: the worker streams the shard in batches

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """Every PII item of ``text`` as (kind, start, end), non-overlapping, in text order."""
        found: list[tuple[str, int, int]] = []
        kinds = set(self.config.kinds)
        if "email" in kinds and "@" in text:
            found += self._emails(text)
        if _ANY_DIGIT.search(text):
            if "cn_id" in kinds:
                found += [("cn_id", m.start(), m.end()) for m in _ID.finditer(text) if valid_cn_id(m.group())]
            if "credit_card" in kinds:
                found += [("credit_card", m.start(), m.end()) for m in _CARD.finditer(text) if valid_card(m.group())]
            if "ip_address" in kinds:
                found += self._ips(text)
            if "phone" in kinds:
                found += [("phone", m.start(), m.end()) for m in _PHONE.finditer(text) if self._phone(m.group())]
        elif "ip_address" in kinds and "::" in text:
            found += self._ips(text)
        return _resolve(found)

    def _emails(self, text: str) -> list[tuple[str, int, int]]:
        out = []
        for m in _EMAIL_DOMAIN.finditer(text):
            local = _EMAIL_LOCAL.search(text, max(0, m.start() - 64), m.start())
            if local is None or local.group().startswith(".") or local.group().endswith("."):
                continue
            if self.config.keep_example_emails and _EXAMPLE_DOMAIN.search(m.group(1)):
                continue
            out.append(("email", local.start(), m.end()))
        return out

    def _ips(self, text: str) -> list[tuple[str, int, int]]:
        out = []
        for m in _IPV4.finditer(text):
            if _VERSION_BEFORE.search(text, max(0, m.start() - 12), m.start()):
                continue
            if max(map(int, m.group().split("."))) < 32 and not _IP_CONTEXT.search(text, max(0, m.start() - 16), m.start()):
                continue
            if self._public_or_wanted(m.group()):
                out.append(("ip_address", m.start(), m.end()))
        if ":" in text:
            for m in _IPV6.finditer(text):
                # global unicast is 2000::/3: "b::" (C++, regexes) and "::1:123" (netstat) are not addresses
                if (m.group()[:1] in "23" or self.config.redact_private_ips) and self._public_or_wanted(m.group()):
                    out.append(("ip_address", m.start(), m.end()))
        return out

    def _public_or_wanted(self, candidate: str) -> bool:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            return False
        return address.is_global or self.config.redact_private_ips

    @staticmethod
    def _phone(candidate: str) -> bool:
        digits = _digits(candidate)
        if candidate.startswith("+"):  # "+33554432" in a formula is a number; a bare +E.164 is long
            return 8 <= digits <= 15 and (digits >= 10 or not candidate[1:].isdigit())
        return 10 <= digits <= 13

    def process(self, batch: pa.Table) -> StageOutput:
        """Redact every document; record spans; optionally remove the densest."""
        stats = Stats()
        texts = batch.column("text").to_pylist()
        out_texts, spans_column, reasons = [], [], []
        limit = self.config.remove_over
        for text in texts:
            text = text or ""
            found = self.find(text)
            if not found:
                out_texts.append(text)
                spans_column.append(None)
                reasons.append(None)
                continue
            stats.add("docs_with_pii", 1)
            for kind in sorted({k for k, _, _ in found}):
                stats.add("docs_with", kind, 1)
            for kind, _, _ in found:
                stats.add("found", kind, 1)
            spans_column.append(json.dumps([list(item) for item in found]))
            if limit is not None and len(found) > limit:
                reasons.append(REASON)
                out_texts.append(text)
                continue
            reasons.append(None)
            out_texts.append(self.redact(text, found))
        return split(batch, reasons, stats, text=pa.array(out_texts, pa.string()),
                     pii_spans=pa.array(spans_column, pa.string()))

    def redact(self, text: str, found: list[tuple[str, int, int]]) -> str:
        pieces, position = [], 0
        for kind, start, end in found:
            pieces += [text[position:start], self.config.placeholder(kind)]
            position = end
        pieces.append(text[position:])
        return "".join(pieces)


def _resolve(found: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """Non-overlapping items: higher-priority kinds first (``KINDS`` order), then earlier spans."""
    if len(found) < 2:
        return found
    taken: list[tuple[str, int, int]] = []
    for item in sorted(found, key=lambda f: (KINDS.index(f[0]), f[1])):
        if all(item[2] <= s or item[1] >= e for _, s, e in taken):
            taken.append(item)
    return sorted(taken, key=lambda f: f[1])
