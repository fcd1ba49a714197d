"""PII detection and scrubbing, before any row reaches a model, MLflow, a report or a log.

Pattern recognizers (email, phone, credit card with a Luhn check, IP address) find PII in
text; a column whose values are mostly one kind of PII is a PII field. Person names need
NER, whose models cannot be downloaded here, so names are found only when they are known:
the values of a person-name field (``contact_name``, say) become a deny-list for
capitalized names in text, and a capitalized word after a known first name (Faker's
~16,000 first names across its locales, an offline gazetteer) is taken for a surname.
Names outside both are missed.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
import pkgutil
import re
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from components.common.errors import UserError
from components.common.settings import PrivacySettings
from components.data.sources import SourceTable

PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    # 4-4-4-4, Amex 4-6-5, or 13-19 digits in one run: a looser pattern would swallow
    # the digits that follow a card (an IP, say), fail Luhn, and miss the card.
    "credit_card": re.compile(r"\b(?:\d{4}[ -]?){3}\d{4}\b|\b\d{4}[ -]?\d{6}[ -]?\d{5}\b"
                              r"|\b\d{13,19}\b"),
    "ip_address": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}"
                             r"(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "phone": re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])"
                        r"\d{3,4}[ .-]?\d{3,4}\b"),
}
"""Order matters: a card number is claimed before the phone pattern can see its digits."""
FIELD_SHARE = 0.5
"""A column is a PII field when at least this share of its values are one kind of PII."""
_NAME = re.compile(r"^[A-Z][a-z'-]+(?: [A-Z][a-z'-]+)+$")
_CAPITALIZED_PAIR = re.compile(r"\b([A-Z][a-z'-]+) ([A-Z][a-z'-]+)\b")


@lru_cache(maxsize=1)
def first_names() -> frozenset[str]:
    """Given names from every Faker locale that writes them in ASCII."""
    import faker.providers.person as person

    names: set[str] = set()
    for module in pkgutil.iter_modules(person.__path__):
        try:
            provider = importlib.import_module(f"{person.__name__}.{module.name}").Provider
        except (ImportError, AttributeError):
            continue
        for attr in ("first_names", "first_names_male", "first_names_female"):
            values = provider.__dict__.get(attr)
            if isinstance(values, dict | tuple | list):
                names.update(n for n in values if isinstance(n, str) and n.isascii()
                             and n[:1].isupper() and n[1:].islower() and len(n) > 2)
    return frozenset(names)


def luhn_ok(digits: str) -> bool:
    numbers = [int(d) for d in digits if d.isdigit()]
    if not 13 <= len(numbers) <= 19:
        return False
    total = 0
    for i, d in enumerate(reversed(numbers)):
        d = d * 2 if i % 2 else d
        total += d - 9 if d > 9 else d
    return total % 10 == 0


_MAYBE_PII = re.compile("|".join(
    [p.pattern.removeprefix(r"(?<![\w.])") for p in PATTERNS.values()]
    + [r"[A-Z][a-z'-]+ [A-Z][a-z'-]+"]))
"""Every pattern at once, in syntax Arrow's RE2 also runs (no look-behind): a superset
of what the full scan finds, so values that fail it can skip that scan."""


class Scrubber:
    """Replaces PII with ``<KIND>`` masks or keyed ``<KIND:token>`` pseudonyms, counting it."""

    def __init__(self, settings: PrivacySettings, names: Iterable[str] = ()) -> None:
        self.mode = settings.mode
        self.counts: Counter[str] = Counter()
        self.key = b""
        if self.mode == "pseudonymize":
            key = os.environ.get(settings.key_env, "")
            if not key:
                raise UserError(f"data.privacy.mode is pseudonymize: set {settings.key_env} "
                                "to a secret key (it is never logged)")
            self.key = key.encode()
        self.known = {n.strip().lower() for n in names if n}

    def token(self, kind: str, value: str) -> str:
        if self.mode == "mask":
            return f"<{kind.upper()}>"
        digest = hmac.new(self.key, value.strip().lower().encode(), hashlib.sha256)
        return f"<{kind.upper()}:{digest.hexdigest()[:12]}>"

    def _scrub(self, value: str) -> tuple[str, Counter[str]]:
        found: Counter[str] = Counter()
        if not _MAYBE_PII.search(value):
            return value, found

        def replacer(kind: str) -> Callable[[re.Match[str]], str]:
            def replace(match: re.Match[str]) -> str:
                text = match.group(0)
                if kind == "credit_card" and not luhn_ok(text):
                    return text
                if kind == "person" and not (text.lower() in self.known
                                             or match.group(1) in first_names()):
                    return text
                found[kind] += 1
                return self.token(kind, text)

            return replace

        for kind, pattern in PATTERNS.items():
            value = pattern.sub(replacer(kind), value)
        return _CAPITALIZED_PAIR.sub(replacer("person"), value), found

    def text(self, value: str) -> str:
        out, found = self._scrub(value)
        self.counts.update(found)
        return out

    def column(self, values: pd.Series) -> pd.Series:
        """Only values the vectorized pre-test flags are scanned, each distinct one once;
        counts still follow every occurrence."""
        raw = values.to_numpy(dtype=object)
        flags = maybe_pii(raw)
        if not flags.any():
            return values
        codes, uniques = pd.factorize(raw[flags])
        times = np.bincount(codes, minlength=len(uniques))
        scrubbed = np.empty(len(uniques), dtype=object)
        for i, value in enumerate(uniques):
            scrubbed[i], found = self._scrub(str(value))
            for kind, n in found.items():
                self.counts[kind] += n * int(times[i])
        result = raw.copy()
        result[flags] = scrubbed[codes]
        return pd.Series(result, index=values.index, name=values.name)


def field_kind(values: pd.Series, name: str) -> str | None:
    """The PII kind of a whole column, when most of its values are one."""
    sample = values.dropna().head(2000).astype(str).str.strip()
    sample = sample[sample != ""].head(500)
    if sample.empty:
        return None
    for kind, pattern in PATTERNS.items():
        full = sample.map(lambda v, p=pattern: bool(p.fullmatch(v)))
        if kind == "credit_card":
            full &= sample.map(luhn_ok)
        if full.mean() >= FIELD_SHARE:
            return kind
    if "name" in name.lower() and sample.map(lambda v: bool(_NAME.match(v))).mean() >= 0.8:
        return "person"
    return None


PLAN_ROWS = 20_000
"""Column-level decisions (PII fields here, column roles in validation) read a table's
first rows, so every engine and every block of rows makes the same ones."""


def find_fields(heads: dict[str, pd.DataFrame]) -> dict[tuple[str, str], str]:
    """PII fields of each table, judged on its first rows."""
    return {(name, col): kind for name, frame in heads.items() for col in frame.columns
            if frame[col].dtype == object
            and (kind := field_kind(frame[col], col)) is not None}


def scrub_frame(frame: pd.DataFrame, table: str, fields: dict[tuple[str, str], str],
                scrubber: Scrubber) -> pd.DataFrame:
    """Scrub every text column of one table (or one block of its rows); PII fields are
    replaced whole."""
    frame = frame.copy()
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        kind = fields.get((table, col))
        if kind is None:
            frame[col] = scrubber.column(frame[col])
            continue
        present = frame[col].notna()
        scrubber.counts[kind] += int(present.sum())
        frame.loc[present, col] = [scrubber.token(kind, str(v)) for v in frame.loc[present, col]]
    return frame


def privacy_report(counts: Counter[str], fields: dict[tuple[str, str], str],
                   settings: PrivacySettings) -> dict[str, Any]:
    return {"found": dict(sorted(counts.items())), "mode": settings.mode,
            "fields": {f"{t}.{c}": k for (t, c), k in fields.items()},
            "names": "person-name fields and a first-name gazetteer; no NER model offline"}


def scrub_sources(tables: list[SourceTable], settings: PrivacySettings
                  ) -> tuple[list[SourceTable], dict[str, Any]]:
    """Scrub every text column (and every unparsed line) of every source held in memory.
    Returns the scrubbed tables and a report of what was found."""
    fields = find_fields({t.name: t.frame.head(PLAN_ROWS) for t in tables})
    scrubber = Scrubber(settings, person_names(tables, fields))
    out = [SourceTable(t.name, scrub_frame(t.frame, t.name, fields, scrubber),
                       [scrubber.text(x) for x in t.malformed]) for t in tables]
    return out, privacy_report(scrubber.counts, fields, settings)


def person_names(tables: list[SourceTable], fields: dict[tuple[str, str], str]) -> list[str]:
    """The values of person-name fields: a deny-list for names in free text."""
    return [str(v) for t in tables for col in t.frame.columns
            if fields.get((t.name, col)) == "person" for v in t.frame[col].dropna().unique()]


@lru_cache(maxsize=1)
def _masker() -> Scrubber:
    return Scrubber(PrivacySettings())


def maybe_pii(values: np.ndarray) -> np.ndarray:
    """The pre-test over many strings at once, vectorized in Arrow: only values it flags
    need the Python scan."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        text = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers among the text
        text = pa.array([v if isinstance(v, str) or v is None else str(v) for v in values],
                        type=pa.large_string(), from_pandas=True)
    flags = pc.fill_null(pc.match_substring_regex(text, pattern=_MAYBE_PII.pattern), False)
    return np.asarray(flags.to_numpy(zero_copy_only=False), dtype=bool)


def mask_texts(values: np.ndarray) -> np.ndarray:
    """Mask-mode scrubbing (no field names) of a text column: the model's text transform
    applies it, so serving sees request text the way training saw its own."""
    out = values.astype(object).copy()
    maybe = maybe_pii(out)
    out[maybe] = [_masker().text(v) for v in out[maybe]]
    return out
