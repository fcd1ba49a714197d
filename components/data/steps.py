"""The data stage's block steps: pure functions over frames, shared by both engines.

Row checks, integration, row keys and the decisions made from them, and the transform's
fit. A step judges each block of rows alike whichever engine runs it, so the pandas
engine (one block) and the Ray engine (many) agree row for row.

Row accounting is the contract: ``input == clean + quarantined``, with a reason per
quarantined row, so nothing disappears between a source and the model.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from components.common.errors import UserError
from components.common.settings import DataSettings, Source
from components.data.numbers import read_numbers
from components.data.sources import SourceTable, read_source

if TYPE_CHECKING:
    from components.data.features import FeatureSchema

# The feature and contract modules (sklearn, pandera: ~65 MB and 0.8 s a process) are
# imported by the steps that fit or check them, not here: the Ray engine's workers
# import this module for their block steps and need neither.

MIN_ROWS_PER_CLASS = 5
"""A class needs a few rows to reach train, validation and test."""
SOURCE_COL = "_source"
REASON_COL = "_reason"
EXACT, NEAR, SPLIT = "_exact", "_near", "_split"



def read_sources(sources: list[Source]) -> list[SourceTable]:
    return [read_source(s) for s in sources]


def quarantined(frame: pd.DataFrame, reason: str, source: str) -> pd.DataFrame:
    out = frame.drop(columns=[c for c in (EXACT, NEAR) if c in frame.columns])
    out = out.astype("string")
    out[SOURCE_COL] = source
    out[REASON_COL] = reason
    return out


def malformed_rows(table: SourceTable) -> pd.DataFrame:
    return pd.DataFrame({"_raw": table.malformed, SOURCE_COL: table.name,
                         REASON_COL: "malformed: wrong number of fields"})


@dataclass
class Join:
    """A source left-joined onto the modeled rows (held in memory: a dimension table)."""

    name: str
    right: pd.DataFrame
    on: list[str]

    @functools.cached_property
    def keys(self) -> pd.Index:
        """The right rows' keys, with their hash table, built once per process and
        reused by every batch joined in it (the Ray engine joins one batch at a time)."""
        on = self.right[self.on]
        return pd.Index(on[self.on[0]]) if len(self.on) == 1 else pd.MultiIndex.from_frame(on)

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "keys"}  # rebuilt on use


def plan_integration(tables: list[SourceTable], sources: list[Source], columns: list[str]
                     ) -> tuple[list[str], list[Join], list[pd.DataFrame]]:
    """The first source is the modeled table; same-schema sources are appended to it,
    the rest are left-joined on ``on`` or their shared columns. Returns the appended
    sources' names, the joins, and the rows quarantined for a duplicate join key."""
    appended = [sources[0].name]
    joins: list[Join] = []
    rejected: list[pd.DataFrame] = []
    for table, source in zip(tables, sources, strict=True):
        if source.name == appended[0]:
            continue
        right = table.frame
        if set(right.columns) == set(columns):
            appended.append(table.name)
            continue
        keys = source.on or [c for c in right.columns if c in columns]
        if not keys:
            raise UserError(
                f"source {table.name!r} shares no column with {appended[0]!r}; set on: [key]"
            )
        missing = [k for k in keys if k not in right.columns or k not in columns]
        if missing:
            raise UserError(f"source {table.name!r}: join key(s) {missing} not in both tables")
        dup = right.duplicated(subset=keys, keep="last")
        if dup.any():
            rejected.append(quarantined(right[dup], f"duplicate join key in {table.name}",
                                        table.name))
            right = right[~dup]
        joins.append(Join(table.name, right, keys))
    return appended, joins, rejected


def join_rows(frame: pd.DataFrame, joins: list[Join]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Left-join the dimension tables onto rows; counts the rows each join left empty.

    A lookup of each row's key in the (unique) right keys, then one take per right
    column: a merge would copy every left column too, for each join."""
    orphans = {}
    frame = frame.copy(deep=False)
    for join in joins:
        keys = frame[join.on[0]] if len(join.on) == 1 else pd.MultiIndex.from_frame(
            frame[join.on])
        for key in join.on:
            if pd.api.types.is_numeric_dtype(frame[key]) != \
                    pd.api.types.is_numeric_dtype(join.right[key]):
                raise UserError(f"source {join.name!r}: join key {key!r} is a number on one "
                                "side and text on the other; make them one type")
        at = join.keys.get_indexer(keys)
        orphans[join.name] = int((at < 0).sum())
        for col in join.right.columns.drop(join.on):  # missing where no key matched
            name = f"{col}_{join.name}" if col in frame.columns else col
            frame[name] = pd.api.extensions.take(join.right[col].to_numpy(), at,
                                                 allow_fill=True)
    return frame, orphans


def integrate(tables: list[SourceTable], sources: list[Source]
              ) -> tuple[pd.DataFrame, list[pd.DataFrame], dict[str, Any]]:
    """All sources in memory, integrated into the modeled rows."""
    appended, joins, rejected = plan_integration(tables, sources,
                                                 list(tables[0].frame.columns))
    frame = pd.concat([t.frame[tables[0].frame.columns] for t in tables if t.name in appended],
                      ignore_index=True)
    frame, orphans = join_rows(frame, joins)
    report = {"appended": appended,
              "joins": [{"source": j.name, "on": j.on, "orphan_rows": orphans[j.name]}
                        for j in joins]}
    return frame, [malformed_rows(t) for t in tables] + rejected, report


def _class_labels(target: pd.Series) -> pd.Series:
    """Labels as strings; numbers that are whole (``1.0``) read as ``"1"``. Decided per
    value, so every block of rows labels alike."""
    if pd.api.types.is_float_dtype(target):
        values = target.to_numpy(dtype=float)
        whole = np.isfinite(values) & (values == np.round(values))
        out = pd.Series(target.astype("string"), index=target.index)
        out[whole] = pd.Series(values[whole].astype(np.int64), index=target.index[whole]) \
            .astype("string")
        return out
    return target.astype("string").str.strip()


def check_task(target: pd.Series, settings: DataSettings) -> None:
    non_null = target.dropna()
    distinct = non_null.nunique()
    # Whole numbers are class ids up to the class limit; past it, a measurement (a score,
    # a price in cents) stored without decimals.
    numeric = pd.api.types.is_numeric_dtype(target) and not pd.api.types.is_bool_dtype(target)
    continuous = numeric and distinct > 20 and (
        distinct > 200 or (pd.api.types.is_float_dtype(target)
                           and not (non_null == non_null.round()).all()))
    if settings.task == "auto" and continuous:
        raise UserError(
            f"target {settings.target!r} looks continuous ({distinct} distinct values); "
            "mlcycle trains classifiers: bin it"
            + (", or set data.task: classification" if distinct <= 200 else "")
        )
    if distinct > 200:
        raise UserError(
            f"target {settings.target!r} has {distinct} classes; at most 200 are "
            "supported"
        )


@dataclass(frozen=True)
class RowPlan:
    """Column decisions made once, from the first rows or from counts over all of them,
    so every block of rows is judged alike whichever engine runs it."""

    target: str
    numeric: tuple[str, ...]
    """Text columns of numbers with bad cells: converted, and the bad cells quarantined."""
    ids: tuple[str, ...]
    """Identifier columns, left out when rows are compared for near duplicates."""
    markers: tuple[str, ...] = ()
    """Cell values that mean missing in a column of numbers (``?``, ``NA``, ...)."""
    text_markers: tuple[str, ...] = ()
    """Those that mean missing in a column of text: not the words that are values there too
    (``NA``: North America, Namibia; ``None``: an answer)."""
    dedupe: bool = True
    """Whether identical rows are re-sent records (dropped) or distinct ones (kept)."""
    dedupe_why: str = ""
    contract: str | None = None
    """The declared pandera contract, as JSON (it travels to Ray workers as text)."""


MISSING_MARKERS = ("", "?", "-", "--", "NA", "N/A", "n/a", "NaN", "nan", "null", "NULL",
                   "None", "#N/A", "<NA>")
"""What exports write for a missing value; ``data.missing_values`` adds more."""
WORD_VALUES = ("NA", "None")
"""Markers that are also real values in a column of text, kept there."""


def plan_rows(head: pd.DataFrame, settings: DataSettings) -> RowPlan:
    target = settings.target
    markers = tuple(dict.fromkeys([*MISSING_MARKERS, *settings.missing_values]))
    text_markers = tuple(m for m in markers
                         if m not in WORD_VALUES or m in settings.missing_values)
    numeric = tuple(_mostly_numbers(
        blank_markers(head, RowPlan(target, (), (), markers, markers))[0], target))
    head, _ = blank_markers(head, RowPlan(target, numeric, (), markers, text_markers))
    text = [c for c in head.columns if c != target and c not in numeric
            and head[c].dtype == object]
    free = [c for c in text if _free_text(head[c])]
    # A re-sent ticket keeps its text under a new id; rows with no free text that differ
    # only in their ids (orders, say) are different rows.
    ids = tuple(c for c in text if _looks_like_id(head[c])) if free else ()
    dedupe, why = _duplicates_policy(head, settings, free)
    contract = None
    if settings.contract:
        from components.data.contract import load_contract

        contract = load_contract(settings.contract).to_json()
    return RowPlan(target, numeric, ids, markers, text_markers, dedupe, why, contract)


def _duplicates_policy(head: pd.DataFrame, settings: DataSettings, free: list[str]
                       ) -> tuple[bool, str]:
    """Identical rows are the same record sent twice when a row says who it is (an id, a
    timestamp, free text); in a table of a few low-cardinality columns they are different
    people or days that happen to match (a census: 10% of its rows)."""
    if settings.duplicates != "auto":
        return settings.duplicates == "drop", f"data.duplicates: {settings.duplicates}"
    others = [c for c in head.columns if c != settings.target]
    unique = [c for c in others if _looks_like_id(head[c])]
    stamps = [c for c in others if c not in unique and _has_times(head[c])]
    signs = [f"{kind} ({', '.join(cols[:3])})" for kind, cols in
             (("an id", unique), ("a timestamp", stamps), ("free text", free)) if cols]
    if signs:
        return True, "rows carry " + " and ".join(signs) + ": identical rows are re-sent"
    return False, ("no id, timestamp or free text: identical rows are distinct records "
                   "(set data.duplicates: drop to drop them)")


def _has_times(values: pd.Series) -> bool:
    """Datetimes with a time of day: two records at the same second are one record."""
    if pd.api.types.is_datetime64_any_dtype(values):
        stamps = values.dropna()
    elif values.dtype == object:
        text = values.dropna().astype(str).head(200)
        if text.empty or not text.str.contains(r"\d{1,2}:\d{2}").all():
            return False
        stamps = pd.to_datetime(text, errors="coerce", format="mixed", utc=True).dropna()
    else:
        return False
    return len(stamps) > 0 and bool((stamps.dt.hour + stamps.dt.minute > 0).any())


def blank_markers(frame: pd.DataFrame, plan: RowPlan) -> tuple[pd.DataFrame, dict[str, int]]:
    """Text cells that are a missing-value marker (stray spaces aside) become missing:
    every marker in a column of numbers, the unambiguous ones elsewhere. Returns how many
    per column."""
    import pyarrow as pa
    import pyarrow.compute as pc

    counts: dict[str, int] = {}
    sets = {kind: pa.array(list(m), type=pa.large_string())
            for kind, m in (("numbers", plan.markers), ("text", plan.text_markers))}
    out = frame
    for col in frame.columns:
        if frame[col].dtype != object:
            continue
        wanted = sets["numbers" if col in plan.numeric else "text"]
        if not len(wanted):
            continue
        values = frame[col].to_numpy()
        try:
            text = pa.array(values, type=pa.large_string(), from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers among the text
            text = pa.array(pd.Series(values).astype("string"), type=pa.large_string())
        hit = pc.fill_null(pc.is_in(pc.utf8_trim_whitespace(text), value_set=wanted), False)
        mask = np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)
        if mask.any():
            if out is frame:
                out = frame.copy(deep=False)
            cleaned = values.copy()
            cleaned[mask] = None
            out[col] = cleaned
            counts[str(col)] = int(mask.sum())
    return out, counts


def _free_text(values: pd.Series) -> bool:
    present = values.dropna().astype(str)
    return len(present) > 0 and float(present.str.split().str.len().mean()) >= 3


def _looks_like_id(values: pd.Series) -> bool:
    """Distinct on (nearly: copies of a row repeat it) every row, and without spaces: a
    key, not free text (which a near duplicate re-types but keeps)."""
    present = values.dropna().astype(str)
    return len(present) > 1 and present.nunique() >= ID_SHARE * len(present) \
        and not present.str.contains(r"\s").any()


def check_values(frame: pd.DataFrame, plan: RowPlan, source: str
                 ) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Quarantine rows that cannot be learned from, judged each on its own: missing
    target, broken encoding, wrong type, a broken contract (a row is quarantined once,
    under the first that applies). Quarantined rows keep their values as read."""
    target = plan.target
    base = frame.copy(deep=False)
    base[target] = _class_labels(base[target])
    for col in base.columns:  # a column of whole numbers is float where a block has a gap
        if pd.api.types.is_integer_dtype(base[col]):
            base[col] = base[col].astype(np.float64)
    why = np.full(len(base), None, dtype=object)
    taken = np.zeros(len(base), dtype=bool)

    def flag(mask: np.ndarray, reason: str) -> None:
        new = mask & ~taken
        why[new] = reason
        taken[new] = True

    labels = base[target]
    flag((labels.isna() | (labels == "")).to_numpy(dtype=bool), "missing target")
    broken = np.zeros(len(base), dtype=bool)
    for col in base.columns:
        if base[col].dtype == object:
            broken |= _contains(base[col].to_numpy(), REPLACEMENT_CHAR)
    flag(broken, "broken encoding")
    converted = base.copy(deep=False)
    for col in plan.numeric:
        if col not in base.columns:
            continue
        numbers = read_numbers(base[col])
        present = base[col].notna().to_numpy() & \
            (base[col].astype(str).str.strip() != "").to_numpy()
        flag(present & numbers.isna().to_numpy(), f"wrong type in {col}: expected a number")
        converted[col] = numbers.astype(np.float64)
    if plan.contract:
        from components.data.contract import contract_from_json, row_failures

        failed = row_failures(converted, contract_from_json(plan.contract)) \
            .fillna("").to_numpy(dtype=object)
        for reason in pd.unique(failed[failed != ""]):
            flag(failed == reason, str(reason))
    if not taken.any():
        return converted, []
    out = [quarantined(base[why == reason], str(reason), source)
           for reason in pd.unique(why[taken])]
    return converted[~taken], out


def _contains(values: np.ndarray, needle: str) -> np.ndarray:
    """Which values hold ``needle``, vectorized in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        text = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers among the text
        text = pa.array(pd.Series(values).astype("string"), type=pa.large_string())
    found = pc.fill_null(pc.match_substring(text, needle), False)
    return np.asarray(found.to_numpy(zero_copy_only=False), dtype=bool)


def negative_counts(frame: pd.DataFrame, target: str) -> dict[str, list[int]]:
    """Per numeric column, [negatives, rows]: summed over blocks, they say which columns
    have rare negatives."""
    return {c: [int((frame[c] < 0).sum()), len(frame)] for c in frame.columns
            if c != target and pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])}


def rare_negatives(counts: dict[str, list[int]]) -> dict[str, int]:
    """Columns whose negatives are rare: flagged in the report, not quarantined. A sign
    inferred from the data is no rule (a winter day's temperature is rare and real);
    only a declared contract (``data.contract``) quarantines values."""
    return {c: neg for c, (neg, n) in counts.items() if n and 0 < neg / n <= RARE_NEGATIVE_SHARE}


def add_keys(frame: pd.DataFrame, plan: RowPlan) -> pd.DataFrame:
    """Content hashes of each row as it is (``_exact``) and as a person compares it
    (``_near``: case and spacing ignored, identifier columns left out)."""
    exact, near = [], []
    for col in frame.columns:
        values = frame[col].to_numpy()
        text = values.dtype == object
        hashed = _hash_column(values)
        exact.append(hashed)
        if col not in plan.ids:
            near.append(_near_hash(values) if text else hashed)
    frame = frame.copy(deep=False)
    frame[EXACT] = _combine(exact)
    frame[NEAR] = _combine(near)
    return frame


def _hash_column(values: np.ndarray) -> np.ndarray:
    """Per-value hashes; None and NaN are one missing value in any engine. Either way of
    hashing gives the same values once no value is missing; few distinct values hash
    faster categorized."""
    if values.dtype != object:
        return pd.util.hash_array(values, categorize=False)
    missing = pd.isna(values)
    if missing.any():
        values = values.copy()
        values[missing] = "\x00"
    return pd.util.hash_array(values, categorize=_few_distinct(values))


def _few_distinct(values: np.ndarray) -> bool:
    head = values[:2000]
    return len(set(head)) <= len(head) // 4


def _near_hash(values: np.ndarray) -> np.ndarray:
    """Hashes of normalized text; a column of few distinct values normalizes each once."""
    if not _few_distinct(values):  # mostly distinct: factorizing would cost more
        return _hash_column(_normalized_text(values))
    codes, uniques = pd.factorize(values)
    missing = _hash_column(np.array([None], dtype=object))[0]
    if not len(uniques):  # a column with no value at all
        return np.full(len(values), missing, dtype=np.uint64)
    hashed = _hash_column(_normalized_text(np.asarray(uniques, dtype=object)))
    return np.where(codes >= 0, hashed[np.maximum(codes, 0)], missing).astype(np.uint64)


def _combine(columns: list[np.ndarray]) -> np.ndarray:
    out = np.full(len(columns[0]) if columns else 0, 0x345678, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, hashed in enumerate(columns):
            out = (out ^ hashed) * np.uint64(1_000_003 + 2 * i)
    return out


def _normalized_text(values: np.ndarray) -> np.ndarray:
    """Text as a person compares it: case and runs of spaces ignored (vectorized in
    Arrow: Python string ops cost seconds)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    try:
        text = pa.array(values, type=pa.large_string(), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # numbers among the text
        text = pa.array(pd.Series(values).astype("string"), type=pa.large_string())
    text = pc.utf8_trim_whitespace(pc.replace_substring_regex(
        pc.utf8_lower(text), pattern=r"\s+", replacement=" "))
    return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object)


@dataclass
class Decisions:
    """What the row keys decide, made once over all rows: which copy of a row is kept,
    rare classes, the split, and the rows the transform is fitted on."""

    winners: np.ndarray
    """The kept row of each near-duplicate group (its ``_exact``)."""
    repeated: np.ndarray
    """``_exact`` values that occur more than once."""
    rare: list[str]
    cuts: dict[str, tuple[float, float]]
    """Per class: rows with u <= the first cut are test, <= the second are validation."""
    fit_keys: np.ndarray
    """The training rows the transform is fitted on (their ``_exact``)."""
    splits: dict[str, int]
    class_balance: dict[str, int]
    fingerprint: str
    dedupe: bool = True
    """False: identical rows are distinct records, every copy kept (in one split)."""


def decide(keys: pd.DataFrame, settings: DataSettings, columns: list[str], dedupe: bool = True
           ) -> Decisions:
    """Decisions from every row's keys and label, in numpy arrays of a few bytes a row:
    the Ray engine's driver makes them over every row of the data (a pandas value_counts,
    drop_duplicates and groupby took ~240 bytes a row at 10M rows)."""
    target = settings.target
    exact = keys[EXACT].to_numpy()
    codes, classes = pd.factorize(keys[target], use_na_sentinel=True)
    codes = codes.astype(np.int32, copy=False)
    # Each array is let go as soon as it is used: at 10M rows every one is 40-80 MB, and
    # the driver's peak here was the Ray engine's peak.
    if dedupe:
        # one row per distinct key (copies share their content, the label included)
        order = np.argsort(exact, kind="stable")
        ranked = exact[order]
        first = np.ones(len(ranked), dtype=bool)
        first[1:] = ranked[1:] != ranked[:-1]
        distinct = ranked[first]
        del ranked
        rows = order[first].astype(np.int32 if len(order) < 2**31 else np.int64)
        del order
        starts = np.flatnonzero(first)
        del first
        repeated = distinct[np.diff(starts, append=len(exact)) > 1]
        del starts
        labels = codes[rows]
        near = keys[NEAR].to_numpy()[rows]
        del rows, codes
        # of each group of near duplicates, the row with the smallest key wins
        by = np.lexsort((distinct, near))
        near = near[by]
        lead = np.ones(len(by), dtype=bool)
        lead[1:] = near[1:] != near[:-1]
        del near
        winners = np.sort(distinct[by[lead]])
        del by, lead
        kept = in_sorted(distinct, winners)
        survivors, labels = distinct[kept], labels[kept]
        del distinct, kept
    else:  # every row stays; a row's copies share its key, so they share a split too
        repeated = np.zeros(0, dtype=np.uint64)
        winners = np.unique(exact)
        survivors, labels = exact, codes
    sizes = np.bincount(labels, minlength=len(classes))
    rare_codes = np.flatnonzero((sizes > 0) & (sizes < MIN_ROWS_PER_CLASS))
    rare = sorted(str(classes[i]) for i in rare_codes)
    if len(rare_codes):
        clean = ~np.isin(labels, rare_codes)
        survivors, labels = survivors[clean], labels[clean]
        del clean
    present = np.flatnonzero(np.bincount(labels, minlength=len(classes)))
    if len(present) < 2:
        raise UserError(
            f"target {target!r} has fewer than 2 classes with {MIN_ROWS_PER_CLASS}+ rows; "
            "nothing to learn"
        )
    u = uniform(survivors, settings.seed)
    cuts = {}
    table = np.zeros((len(classes), 2))
    for code in present:
        ranked = np.sort(u[labels == code])
        n_test = max(1, round(len(ranked) * settings.test_size))
        n_val = max(1, round(len(ranked) * settings.val_size))
        table[code] = ranked[n_test - 1], ranked[n_test + n_val - 1]
        cuts[str(classes[code])] = (float(table[code, 0]), float(table[code, 1]))
        del ranked
    split = np.zeros(len(u), dtype=np.int8)  # 0 train, 1 validation, 2 test
    split[u <= table[labels, 1]] = 1
    split[u <= table[labels, 0]] = 2
    del u
    train = survivors[split == 0]
    # All training rows up to FIT_ROWS, else a seeded sample of that many.
    pool = np.unique(train)
    fit_keys = np.sort(pool[np.argsort(uniform(pool, settings.seed + 1))[:FIT_ROWS]])
    del pool
    digest = hashlib.sha256("|".join(columns).encode() + np.sort(train).tobytes())
    balance = np.bincount(labels, minlength=len(classes))
    ranked_classes = sorted(present, key=lambda c: (-balance[c], str(classes[c])))
    return Decisions(
        winners=winners, repeated=repeated, rare=rare, cuts=cuts, fit_keys=fit_keys,
        splits={s: int((split == i).sum()) for i, s in enumerate(("train", "val", "test"))},
        class_balance={str(classes[c]): int(balance[c]) for c in ranked_classes},
        fingerprint=digest.hexdigest()[:16], dedupe=dedupe,
    )


def in_sorted(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which values are among the sorted ``keys``, by binary search. ``np.isin`` hashes
    or sorts ``keys`` on every call, which for all of a large source's keys took most of
    the Ray engine's last pass, called once a batch."""
    if not len(keys):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(keys, values), len(keys) - 1)
    return np.asarray(keys[at] == values)


def uniform(keys: np.ndarray, seed: int) -> np.ndarray:
    """A seeded uniform number per row key (splitmix64): the split and the fit sample
    follow row content, not row order, so engines and re-runs agree."""
    x = keys.astype(np.uint64)  # a copy, then worked in place: one array and a shift
    x ^= np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    x >>= np.uint64(11)
    return np.multiply(x, 2.0**-53, dtype=np.float64)


def assign_split(labels: np.ndarray, u: np.ndarray, cuts: dict[str, tuple[float, float]]
                 ) -> np.ndarray:
    codes, classes = pd.factorize(labels)  # each class's cuts looked up once, not per row
    table = np.array([cuts[str(c)] for c in classes], dtype=np.float64).reshape(-1, 2)
    test_cut, val_cut = table[codes, 0], table[codes, 1]
    return np.where(u <= test_cut, "test", np.where(u <= val_cut, "val", "train")).astype(object)


def finish_rows(frame: pd.DataFrame, dec: Decisions, settings: DataSettings, source: str
                ) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Deduplicate, drop rare classes and assign each kept row its split (``_split``).

    Where duplicates are dropped, every copy of a repeated row must be in ``frame``: the
    first is kept or quarantined as a near duplicate, the others are exact duplicates.
    """
    first = ~frame[EXACT].duplicated().to_numpy() if dec.dedupe \
        else np.ones(len(frame), dtype=bool)
    winner = in_sorted(frame[EXACT].to_numpy(), dec.winners)
    rare = frame[settings.target].isin(dec.rare).to_numpy()
    out = [quarantined(frame[~first], "exact duplicate", source),
           quarantined(frame[first & ~winner], "near duplicate", source),
           quarantined(frame[first & winner & rare],
                       f"target class with fewer than {MIN_ROWS_PER_CLASS} rows", source)]
    frame = frame[first & winner & ~rare].copy(deep=False)
    frame[SPLIT] = assign_split(frame[settings.target].to_numpy(),
                                uniform(frame[EXACT].to_numpy(), settings.seed), dec.cuts)
    return frame, out


def fit_sample(frame: pd.DataFrame, dec: Decisions) -> pd.DataFrame:
    """The rows the transform is fitted on, of those in ``frame``; one of each copy."""
    return frame[np.isin(frame[EXACT].to_numpy(), dec.fit_keys)].drop_duplicates(EXACT)


def fit_transform(sample: pd.DataFrame, settings: DataSettings, dec: Decisions
                  ) -> tuple[FeatureSchema, Any]:
    from components.data.features import build_transform, infer_schema

    sample = sample.sort_values(EXACT, kind="stable").reset_index(drop=True) \
        .drop(columns=[EXACT, NEAR, SPLIT], errors="ignore")
    try:
        schema = infer_schema(sample, settings, sorted(dec.class_balance))
    except ValueError as exc:
        raise UserError(f"data: {exc}") from exc
    transform = build_transform(schema, settings)
    transform.fit(sample[schema.inputs])
    return schema, transform


def missing_counts(frame: pd.DataFrame) -> dict[str, int]:
    return {str(c): int(v) for c, v in frame.isna().sum().items()
            if v and c not in (EXACT, NEAR, SPLIT)}


REPLACEMENT_CHAR = "\ufffd"
NUMERIC_SHARE = 0.95
"""A text column whose values are this often numbers is a numeric column with bad cells."""
RARE_NEGATIVE_SHARE = 0.01
"""Negatives this rare, in a column otherwise never negative, are worth a look."""
ID_SHARE = 0.95
FIT_ROWS = 50_000
"""Enough rows to estimate medians, fences, vocabularies and category sets; fitting on
more costs time and memory and changes little."""


def _mostly_numbers(frame: pd.DataFrame, target: str) -> list[str]:
    """Text columns whose values are nearly all numbers: numeric columns with bad cells."""
    out = []
    for col in frame.columns:
        if col == target or frame[col].dtype != object:
            continue
        present = frame[col].dropna().astype(str).str.strip()
        present = present[present != ""]
        if len(present) and read_numbers(present).notna().mean() >= NUMERIC_SHARE:
            out.append(col)
    return out


def source_report(tables: list[SourceTable], schema: FeatureSchema, transform: Any
                  ) -> tuple[dict[str, int], dict[str, int]]:
    """Outliers and category spellings, counted in each source's own rows (a customer's
    row, not each ticket joined to it)."""
    from components.data.features import category_variants, outlier_counts

    outliers, variants = {}, {}
    for t in tables:
        outliers.update({f"{t.name}.{c}": n
                         for c, n in outlier_counts(transform, schema, t.frame).items()})
        variants.update({f"{t.name}.{c}": n for c, n in category_variants(
            spelling_counts(t.frame, schema)).items()})
    return outliers, variants


def spelling_counts(frame: pd.DataFrame, schema: FeatureSchema) -> dict[str, pd.Series]:
    return {c: frame[c].dropna().astype(str).value_counts() for c in schema.categorical
            if c in frame.columns}



def check_target(frame: pd.DataFrame, settings: DataSettings) -> None:
    if settings.target not in frame.columns:
        cols = ", ".join(map(str, frame.columns[:20]))
        raise UserError(f"target column {settings.target!r} not in source "
                        f"{settings.sources[0].name!r} (columns: {cols})")

