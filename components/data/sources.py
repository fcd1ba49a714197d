"""Connectors: local paths, http(s)://, s3:// (fsspec) and SQLAlchemy URLs.

CSV rows that don't parse are returned, not dropped, so they can be quarantined.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import os
import re
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa

from components.common.errors import UserError
from components.common.settings import ENV_REF, Source

if TYPE_CHECKING:
    from sqlalchemy import FromClause, Select

_BAD_LINE = re.compile(r"Skipping line (\d+)")
_SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "oracle", "duckdb")


@dataclass
class SourceTable:
    """A read source: the rows that parsed and the raw lines that did not."""

    name: str
    frame: pd.DataFrame
    malformed: list[str] = field(default_factory=list)


def source_format(source: Source) -> str:
    if source.format:
        return source.format
    scheme = source.uri.split(":", 1)[0].split("+", 1)[0].lower()
    if "://" in source.uri and scheme in _SQL_SCHEMES:
        return "sql"
    path = source.uri.split("?", 1)[0].lower().removesuffix(".gz")
    for suffix, fmt in ((".csv", "csv"), (".tsv", "csv"), (".parquet", "parquet"),
                        (".pq", "parquet"), (".jsonl", "jsonl"), (".ndjson", "jsonl"),
                        (".json", "jsonl")):
        if path.endswith(suffix):
            return fmt
    raise UserError(
        f"source {source.name!r}: cannot tell the format of {source.uri!r}; "
        "set format: csv|parquet|jsonl|sql"
    )


def expanded(text: str, where: str) -> str:
    """``text`` with each ``${VAR}`` read from the environment, where a Secret puts a
    password on a cluster; the settings (and every message) keep the reference."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise UserError(f"{where}: environment variable {name} is not set "
                            f"(it names ${{{name}}})")
        return os.environ[name]

    return ENV_REF.sub(value, text)


def expanded_uri(source: Source) -> str:
    return expanded(source.uri, f"source {source.name!r}")


@contextlib.contextmanager
def _opened(source: Source) -> Iterator[Any]:
    """The source's bytes as a stream; a store's error is one line naming the source."""
    uri = expanded_uri(source)
    if "://" not in uri and not Path(uri).is_file():
        raise UserError(f"source {source.name!r}: file not found: {uri}")
    try:
        with fsspec.open(uri, "rb", compression="infer",
                         **source.options.get("storage", {})) as fh:
            yield fh
    except FileNotFoundError as exc:
        raise UserError(f"source {source.name!r}: not found: {source.uri}") from exc
    except _store_errors() as exc:  # unreachable, denied, no backend for the scheme
        raise UserError(
            f"source {source.name!r}: cannot read {source.uri}: {_one_line(exc)}") from exc


def _open_bytes(source: Source) -> bytes:
    with _opened(source) as fh:
        data: bytes = fh.read()
    if not data.strip():
        raise UserError(f"source {source.name!r}: {source.uri} is empty")
    return data


def _store_errors() -> tuple[type[BaseException], ...]:
    """What reading a URI raises for a cause the user can fix: missing, denied,
    unreachable, or a scheme whose fsspec backend is not installed."""
    import importlib

    errors: list[type[BaseException]] = [OSError, ValueError, ImportError]
    for module, names in (("aiohttp", ("ClientError",)),
                          ("botocore.exceptions", ("BotoCoreError", "ClientError"))):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        errors += [getattr(found, name) for name in names]
    return tuple(errors)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


BROKEN_LINE_LIMIT = 0.1
"""More lines than this with undecodable bytes means the file has another encoding."""


def _decode(source: Source, data: bytes) -> str:
    """Decode; a few undecodable lines become U+FFFD (validation quarantines them), many
    mean a wrong encoding, which is an error to fix in the config."""
    encoding = source.options.get("encoding", "utf-8-sig")  # utf-8, minus a spreadsheet's BOM
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        text = data.decode(encoding, errors="replace")
        lines = text.splitlines() or [""]
        broken = sum("\ufffd" in line for line in lines)
        if broken / len(lines) > BROKEN_LINE_LIMIT:
            raise UserError(
                f"source {source.name!r}: not valid {encoding.removesuffix('-sig')} "
                f"({broken} of {len(lines)} lines, first at byte {exc.start}); "
                "set options.encoding (e.g. latin-1)"
            ) from exc
        return text


_SLICE = 1 << 24


def _csv_encoding(source: Source, data: bytes) -> str:
    """The encoding to parse with, checked a slice at a time: a decoded copy of the whole
    file can take four times its size (one non-Latin-1 character widens every other)."""
    encoding = str(source.options.get("encoding", "utf-8-sig"))
    decoder = codecs.getincrementaldecoder(encoding)()
    view = memoryview(data)
    try:
        for i in range(0, len(view), _SLICE):
            decoder.decode(view[i:i + _SLICE], final=i + _SLICE >= len(view))
    except UnicodeDecodeError:
        _decode(source, data)  # few broken lines pass (as U+FFFD), many raise
    return encoding


def _csv_sep(source: Source) -> str:
    sep = source.options.get("sep")
    if sep is None:
        sep = "\t" if source.uri.lower().split("?")[0].endswith((".tsv", ".tsv.gz")) else ","
    return str(sep)


def _parse_csv(source: Source, data: bytes, encoding: str, nrows: int | None = None,
               dtype: dict[str, Any] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Rows, and the raw text of the records that did not parse."""
    # The C parser is ~10x faster than the python one, which alone takes a callable for
    # bad lines; the C parser's warnings name them, and the raw lines are kept from those.
    # pyarrow.csv (with invalid_row_handler) was measured and not adopted: it gives other
    # results and was not faster here; see docs/decisions/101-csv-reader.md.
    data, leading = _leading_long_records(source, data, encoding)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            # Only an empty cell is missing here: pandas' own list would read a region
            # "NA" (North America) as missing; the data stage decides per column.
            frame = pd.read_csv(io.BytesIO(data), sep=_csv_sep(source), on_bad_lines="warn",
                                nrows=nrows, quoting=csv.QUOTE_MINIMAL, encoding=encoding,
                                encoding_errors="replace", keep_default_na=False,
                                na_values=[""], dtype=dtype)
    except pd.errors.EmptyDataError as exc:
        raise UserError(f"source {source.name!r}: {source.uri} has no header row") from exc
    except pd.errors.ParserError as exc:
        raise UserError(f"source {source.name!r}: not parseable as CSV: {_one_line(exc)}") from exc
    numbers = {int(n) for w in caught for n in _BAD_LINE.findall(str(w.message))}
    return frame, leading + _lines(data, numbers, encoding)


def _leading_long_records(source: Source, data: bytes, encoding: str
                          ) -> tuple[bytes, list[str]]:
    """The records right after the header that have more fields than it, taken out: pandas
    would make a first record with one field too many the index and shift every column
    of every row, where it skips such a record anywhere else."""
    sep = _csv_sep(source)
    if len(sep) != 1:
        return data, []
    records = _records(io.BytesIO(data))
    header = next(records, b"")
    width = len(next(csv.reader(io.StringIO(header.decode(encoding, "replace"))), []))
    taken: list[str] = []
    size = 0
    for record in records:
        text = record.decode(encoding, errors="replace")
        if len(next(csv.reader(io.StringIO(text), delimiter=sep), [])) <= width:
            break
        taken.append(text.removesuffix("\n").rstrip("\r"))
        size += len(record)
    if not taken:
        return data, []
    return header + data[len(header) + size:], taken


def _check_columns(source: Source, frame: pd.DataFrame, header: str) -> None:
    sep = _csv_sep(source)
    if frame.shape[1] == 1 and sep not in header:
        guess = next((c for c in (";", "\t", "|", ",") if c in header), None)
        hint = f"; it looks like {guess!r}: set options.sep" if guess else ""
        raise UserError(
            f"source {source.name!r}: one column only with delimiter {sep!r}{hint}"
        )


def _read_csv(source: Source, nrows: int | None) -> SourceTable:
    data = _open_bytes(source)
    encoding = _csv_encoding(source, data)
    end = data.find(b"\n")
    header = data[:end if end >= 0 else len(data)].decode(encoding, errors="replace")
    frame, malformed = _parse_csv(source, data, encoding, nrows)
    _check_columns(source, frame, header)
    return SourceTable(source.name, frame, malformed)


def csv_blocks(source: Source, rows: int) -> Iterator[SourceTable]:
    """A CSV source in blocks of about ``rows`` records, streamed from its store, with the
    columns typed as one read of the whole file types them (a column that is text in one
    block is text in every block, as written; whole numbers with a gap anywhere are
    floats), so no process holds the whole source. Two passes: one to type, one to yield."""
    encoding = str(source.options.get("encoding", "utf-8-sig"))
    kinds: dict[str, set[str]] = {}
    first = True
    lines = broken = 0
    for block, header in _record_blocks(source, rows):
        text = block.decode(encoding, errors="replace")
        lines += text.count("\n") or 1
        broken += sum("\ufffd" in line for line in text.splitlines()) if "\ufffd" in text else 0
        frame, _ = _parse_csv(source, block, encoding)
        if first:
            _check_columns(source, frame, header)
            first = False
        for col in frame.columns:
            kinds.setdefault(str(col), set())
            if len(frame):  # a block of malformed lines only says nothing of types
                kinds[str(col)].add(_kind(frame[col]))
    if broken / max(lines, 1) > BROKEN_LINE_LIMIT:
        raise UserError(f"source {source.name!r}: not valid {encoding.removesuffix('-sig')} "
                        f"({broken} of {lines} lines); set options.encoding (e.g. latin-1)")
    final = {col: _final_kind(k) for col, k in kinds.items()}
    forced: dict[str, Any] = {col: object for col, kind in final.items() if kind == "text"}
    for block, _ in _record_blocks(source, rows):
        frame, malformed = _parse_csv(source, block, encoding, dtype=forced or None)
        cast = {col: frame[col].astype(_DTYPES[kind]) for col, kind in final.items()
                if frame[col].dtype != _DTYPES[kind]}
        yield SourceTable(source.name, frame.assign(**cast) if cast else frame, malformed)


_DTYPES: dict[str, Any] = {"int": np.int64, "float": np.float64, "bool": np.bool_,
                           "bools": object, "text": object}


def _kind(values: pd.Series) -> str:
    if values.isna().all():
        return "empty"
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if pd.api.types.is_float_dtype(values):
        return "float"
    present = values.dropna()
    if all(isinstance(v, bool | np.bool_) for v in present):
        return "bools"  # True/False with gaps
    return "text"


def _final_kind(kinds: set[str]) -> str:
    """The type one read of the whole column would give, from each block's."""
    gap = "empty" in kinds
    kinds = kinds - {"empty"}
    if not kinds:
        return "float"
    if "text" in kinds or (kinds & {"bool", "bools"} and kinds & {"int", "float"}):
        return "text"
    if kinds & {"bool", "bools"}:
        return "bools" if "bools" in kinds or gap else "bool"
    return "int" if kinds == {"int"} and not gap else "float"


def _record_blocks(source: Source, rows: int) -> Iterator[tuple[bytes, str]]:
    """The header plus about ``rows`` whole records at a time (a quoted field may span
    lines), read from the store as a stream; and the header as text."""
    with _opened(source) as fh:
        records = _records(fh)
        header = next(records, b"")
        block: list[bytes] = []
        for record in records:
            block.append(record)
            if len(block) >= rows:
                yield header + b"".join(block), _text(header)
                block = []
        if block or not header.strip():
            yield header + b"".join(block), _text(header)


def _records(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Physical lines joined into records: until their quotes balance."""
    parts: list[bytes] = []
    quotes = 0
    for line in lines:
        parts.append(line)
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            yield b"".join(parts)
            parts, quotes = [], 0
    if parts:
        yield b"".join(parts)


def _text(header: bytes) -> str:
    return header.decode("utf-8", errors="replace").removeprefix("\ufeff").rstrip("\r\n")


def _lines(data: bytes, numbers: set[int], encoding: str) -> list[str]:
    """The raw text of the records pandas numbers so (1-based, the header first), without
    splitting the whole file (a list of every line costs more memory than the parsed
    frame). pandas counts a record whose quoted field spans lines as one line, so
    physical lines are joined until their quotes balance."""
    out: list[str] = []
    if not numbers:
        return out
    record, parts, quotes = 0, [], 0
    for line in io.BytesIO(data):
        parts.append(line)
        quotes += line.count(b'"')
        if quotes % 2:  # inside a quoted field: the record goes on
            continue
        record += 1
        if record in numbers:
            out.append(b"".join(parts).decode(encoding, errors="replace").removesuffix("\n")
                       .rstrip("\r"))
            if len(out) == len(numbers):
                break
        parts, quotes = [], 0
    return out


def _read_sql(source: Source, nrows: int | None) -> SourceTable:
    import sqlalchemy as sa

    uri = expanded_uri(source)
    if uri.startswith("sqlite:///"):
        db_path = uri.removeprefix("sqlite:///").split("?", 1)[0]
        if db_path and not Path(db_path).is_file():
            raise UserError(f"source {source.name!r}: SQLite database not found: {db_path}")
    try:
        engine = sa.create_engine(uri)
    except (sa.exc.ArgumentError, ImportError) as exc:  # a malformed URL, a missing driver
        raise UserError(f"source {source.name!r}: SQL read failed: {_one_line(exc)}") from exc
    try:
        with engine.connect() as conn:
            # The table's columns stay untyped (sa.table, not reflection): values come back
            # as the driver gives them, not converted by reflected types (SQLite's DATETIME
            # text would become datetimes). A user's query runs as written unless limited.
            stmt: sa.Executable
            if source.query is None:
                table = source.table
                if table is None:
                    tables = sa.inspect(conn).get_table_names()
                    if len(tables) != 1:
                        raise UserError(
                            f"source {source.name!r}: database has tables {tables}; set table:"
                        )
                    table = tables[0]
                stmt = _select_all(sa.table(table), nrows)  # quoted as the dialect needs
            elif nrows is None:
                stmt = sa.text(source.query)
            else:
                stmt = _select_all(sa.text(source.query).columns().subquery("q"), nrows)
            frame = pd.read_sql_query(stmt, conn)
    except sa.exc.SQLAlchemyError as exc:  # unreachable, denied, no such table or column
        raise UserError(f"source {source.name!r}: SQL read failed: {_one_line(exc)}") from exc
    finally:
        engine.dispose()
    return SourceTable(source.name, frame)


def _select_all(origin: FromClause, nrows: int | None) -> Select[Any]:
    import sqlalchemy as sa

    stmt: Select[Any] = sa.select(sa.literal_column("*")).select_from(origin)
    # LIMIT, TOP or FETCH FIRST, as the dialect spells it
    return stmt if nrows is None else stmt.limit(int(nrows))


def plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """A typed export's columns as the CSV reader would give them, so every source is
    judged, split, served and signed alike: pandas categoricals as their values, nullable
    integers and floats and decimals as float64 (NaN where missing), nullable booleans
    and Arrow strings as objects (None where missing), zoned datetimes in UTC."""
    import decimal

    out = {}
    for col in frame.columns:
        values = frame[col]
        if isinstance(values.dtype, pd.CategoricalDtype):
            values = values.astype(values.cat.categories.dtype)
            if isinstance(values.dtype, pd.CategoricalDtype):  # categories of mixed types
                values = values.astype(object)
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        elif values.dtype == object and isinstance(_first_value(values), decimal.Decimal):
            values = pd.to_numeric(values, errors="coerce").astype("float64")
        elif isinstance(values.dtype, pd.ArrowDtype | pd.StringDtype | pd.BooleanDtype):
            if pd.api.types.is_numeric_dtype(values.dtype) and \
                    not pd.api.types.is_bool_dtype(values.dtype):
                values = values.astype("float64")
            else:
                values = values.astype(object).where(values.notna(), None)
        elif pd.api.types.is_extension_array_dtype(values.dtype) and \
                pd.api.types.is_numeric_dtype(values.dtype):  # Int64, Float64
            values = values.astype("float64")
        if values is not frame[col]:
            out[col] = values
    return frame.assign(**out) if out else frame


def _first_value(values: pd.Series) -> Any:
    at = values.first_valid_index()
    return None if at is None else values.loc[at]


def read_source(source: Source, nrows: int | None = None) -> SourceTable:
    """Read one source in full (or its first ``nrows`` rows, for a quick check)."""
    fmt = source_format(source)
    if fmt == "csv":
        table = _read_csv(source, nrows)
    elif fmt == "sql":
        table = _read_sql(source, nrows)
    else:
        data = _open_bytes(source)
        try:
            if fmt == "parquet":
                frame = pd.read_parquet(io.BytesIO(data))
            else:
                frame = pd.read_json(io.StringIO(_decode(source, data)), lines=True)
        except (ValueError, OSError, pa.ArrowException) as exc:  # not what it says it is
            raise UserError(
                f"source {source.name!r}: not readable as {fmt}: {_one_line(exc)}"
            ) from exc
        if nrows is not None:
            frame = frame.head(nrows)
        table = SourceTable(source.name, frame)
    if table.frame.empty and not table.malformed:
        raise UserError(f"source {source.name!r}: {source.uri} has no rows")
    table.frame = plain_dtypes(table.frame)
    return table
