import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from components.common.errors import UserError
from components.common.settings import Source
from components.data.sources import read_source, source_format


def src(uri: str, **kw: object) -> Source:
    return Source(name="s", uri=uri, **kw)


@pytest.mark.parametrize(("uri", "fmt"), [
    ("a.csv", "csv"), ("a.csv.gz", "csv"), ("x/a.parquet", "parquet"), ("a.jsonl", "jsonl"),
    ("sqlite:///a.db", "sql"), ("postgresql+psycopg://u@h/db", "sql"),
    ("https://host/a.csv?x=1", "csv"), ("s3://b/k.parquet", "parquet"),
])
def test_format_is_inferred(uri: str, fmt: str) -> None:
    assert source_format(src(uri)) == fmt


def test_unknown_format_asks_for_one() -> None:
    with pytest.raises(UserError, match="set format"):
        source_format(src("data.bin"))


def test_malformed_csv_rows_are_kept_not_dropped(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a,b,y\n1,2,x\n3,4,y\n5,6,7,8\n9,10,x\n")
    table = read_source(src(str(path)))
    assert len(table.frame) == 3
    assert table.malformed == ["5,6,7,8"]


def test_malformed_lines_keep_their_text_and_stray_bytes_read_as_replacement(
        tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    lines = [b"a,b,y", *[b"1,2,x"] * 20, b"3,\xff4,y", "5,6,7,caf\u00e9".encode()]
    path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    table = read_source(src(str(path)))
    assert table.malformed == ["5,6,7,caf\u00e9"]
    assert len(table.frame) == 21 and table.frame["b"].iloc[-1] == "\ufffd4"


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is empty"),
    (b"a;b;y\n1;2;x\n", "it looks like ';'"),
    (b"a,b\n\xff\xfe,1\n", "not valid utf-8"),
    (b"a,b,y\n", "has no rows"),
])
def test_bad_files_give_one_line_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        read_source(src(str(path)))
    assert "\n" not in str(info.value)


def test_missing_file_names_the_source(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="source 's': file not found"):
        read_source(src(str(tmp_path / "missing.csv")))


def test_sql_table_and_lone_table_and_query(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with sqlite3.connect(db) as conn:
        pd.DataFrame({"k": [1, 2, 3], "v": ["a", "b", "c"]}).to_sql("t", conn, index=False)
    uri = f"sqlite:///{db}"
    assert len(read_source(src(uri)).frame) == 3
    assert len(read_source(src(uri, table="t")).frame) == 3
    assert read_source(src(uri, query="SELECT * FROM t WHERE k > 1")).frame["k"].tolist() == [2, 3]
    assert len(read_source(src(uri), nrows=2).frame) == 2


def test_sql_source_that_is_down(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="SQLite database not found"):
        read_source(src(f"sqlite:///{tmp_path / 'gone.db'}"))
    with pytest.raises(UserError, match="source 's': SQL read failed"):
        read_source(src("postgresql://u:p@127.0.0.1:1/db", table="t"))


def test_a_uri_reads_a_variable_from_the_environment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """``${VAR}`` where a Secret puts a credential on a cluster; unset, one line names it."""
    with sqlite3.connect(tmp_path / "d.db") as conn:
        pd.DataFrame({"k": [1, 2]}).to_sql("t", conn, index=False)
    pd.DataFrame({"k": [3], "y": ["a"]}).to_csv(tmp_path / "d.csv", index=False)
    monkeypatch.setenv("MLCYCLE_TEST_DIR", str(tmp_path))
    assert read_source(src("sqlite:///${MLCYCLE_TEST_DIR}/d.db", table="t")).frame["k"].tolist() \
        == [1, 2]
    assert read_source(src("${MLCYCLE_TEST_DIR}/d.csv")).frame["k"].tolist() == [3]
    monkeypatch.delenv("MLCYCLE_TEST_DIR")
    with pytest.raises(UserError, match=r"environment variable MLCYCLE_TEST_DIR is not set"):
        read_source(src("${MLCYCLE_TEST_DIR}/d.csv"))


def test_a_byte_order_mark_does_not_rename_the_first_column(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffa,y\n1,x\n".encode())
    assert list(read_source(src(str(path))).frame.columns) == ["a", "y"]


def test_parquet_and_jsonl(tmp_path: Path) -> None:
    frame = pd.DataFrame({"a": [1, 2], "y": ["x", "z"]})
    frame.to_parquet(tmp_path / "a.parquet")
    frame.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    for name in ("a.parquet", "a.jsonl"):
        pd.testing.assert_frame_equal(read_source(src(str(tmp_path / name))).frame, frame)


def test_http_source_over_loopback(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    pd.DataFrame({"a": [1, 2, 3], "y": ["x", "y", "x"]}).to_csv(tmp_path / "d.csv", index=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert read_source(src(f"{base}/d.csv")).frame["a"].tolist() == [1, 2, 3]
        with pytest.raises(UserError, match=r"source 's': (not found|cannot read)"):
            read_source(src(f"{base}/missing.csv"))
    finally:
        server.shutdown()
        server.server_close()


def test_a_short_row_is_kept_with_gaps_and_a_long_one_is_malformed(tmp_path: Path) -> None:
    # pandas' behaviour, which the reader keeps (docs/decisions/101-csv-reader.md)
    path = tmp_path / "a.csv"
    path.write_text('a,b,y\n1,2,x\n3,4\n5,"6, 7",z,extra\n8,9,w\n')
    table = read_source(src(str(path)))
    assert table.frame["a"].tolist() == [1, 3, 8]
    assert pd.isna(table.frame["y"].iloc[1])
    assert table.malformed == ['5,"6, 7",z,extra']


def test_sql_names_are_quoted_and_a_query_is_limited(tmp_path: Path) -> None:
    db = tmp_path / "a.db"
    with sqlite3.connect(db) as conn:
        pd.DataFrame({"k": [1, 2, 3]}).to_sql("order lines", conn, index=False)
    uri = f"sqlite:///{db}"
    assert read_source(src(uri, table="order lines")).frame["k"].tolist() == [1, 2, 3]
    limited = read_source(src(uri, query='SELECT k FROM "order lines" ORDER BY k DESC'), nrows=2)
    assert limited.frame["k"].tolist() == [3, 2]
    with pytest.raises(UserError, match="source 's': SQL read failed") as info:
        read_source(src(uri, table="missing"))
    assert "\n" not in str(info.value)


def test_a_malformed_record_after_a_multiline_field_keeps_its_own_text(tmp_path: Path) -> None:
    """pandas numbers records, not physical lines: the text kept is the bad record's."""
    path = tmp_path / "t.csv"
    path.write_text('a,b,y\n1,"two\nlines",x\n\n5,6,z,extra\n7,"8",w\n')
    table = read_source(Source(name="t", uri=str(path)))
    assert table.malformed == ["5,6,z,extra"]
    assert table.frame["b"].tolist() == ["two\nlines", "8"]


def test_typed_parquet_columns_read_as_a_csv_export_would(tmp_path: Path) -> None:
    """A table that went through pandas' astype("category"), nullable integers and
    booleans, zoned datetimes and decimals: plain dtypes, so MLflow's signature enforcement
    (which crashed on ``category`` at register time) takes the rows a client sends."""
    import decimal

    from mlflow.models import infer_signature
    from mlflow.models.utils import _enforce_schema

    from components.common.settings import DataSettings
    from components.data.prepare import prepare
    from components.data.prepared import PreparedPaths
    from components.registry.register import input_example

    n = 200
    rng = np.random.default_rng(0)
    plan = pd.Series(rng.choice(["free", "pro", "team"], n)).astype("category")
    frame = pd.DataFrame({
        "plan": plan,
        "seats": pd.array(np.where(rng.random(n) < 0.1, None, rng.integers(1, 50, n)),
                          dtype="Int64"),
        "trial": pd.array(np.where(rng.random(n) < 0.1, None, rng.random(n) < 0.5),
                          dtype="boolean"),
        "signed_up": pd.date_range("2024-01-01 08:00", periods=n, freq="7h",
                                   tz="Europe/Berlin"),
        "spend": [decimal.Decimal(f"{v:.2f}") for v in rng.uniform(1, 99, n)],
        "churned": pd.Series(rng.choice(["yes", "no"], n)).astype("category"),
    })
    frame.to_parquet(tmp_path / "typed.parquet")
    table = read_source(Source(name="t", uri=str(tmp_path / "typed.parquet")))
    dtypes = {c: str(t) for c, t in table.frame.dtypes.items()}
    assert dtypes == {"plan": "object", "seats": "float64", "trial": "object",
                      "signed_up": "datetime64[ns]", "spend": "float64", "churned": "object"}
    assert table.frame["seats"].isna().sum() == int(frame["seats"].isna().sum())
    out = tmp_path / "o"
    report = prepare(DataSettings(sources=[{"name": "t", "uri": str(tmp_path / "typed.parquet")}],
                                  target="churned"),
                     PreparedPaths(out / "tr.pq", out / "va.pq", out / "te.pq", out / "q.pq",
                                   out / "transform", out / "report"))
    assert report["rows"]["clean"] == n
    schema = report["schema"]
    assert {"plan", "trial"} <= set(schema["categorical"])
    assert {"seats", "spend"} <= set(schema["numeric"]) and schema["datetime"] == ["signed_up"]
    test = pd.read_parquet(out / "te.pq")
    inputs = [*schema["numeric"], *schema["categorical"], *schema["text"], *schema["datetime"]]
    example = input_example(inputs, test)
    signature = infer_signature(example)
    enforced = _enforce_schema(input_example(inputs, test.tail(3)), signature.inputs)
    assert list(enforced.columns) == inputs


def test_a_first_record_with_a_field_too_many_is_malformed_not_an_index(
        tmp_path: Path) -> None:
    """pandas makes such a first record the index and shifts every column of every row."""
    path = tmp_path / "t.csv"
    path.write_text("a,b\n5,1,2\n1,2\n3,4\n")
    table = read_source(Source(name="t", uri=str(path)))
    assert table.frame.to_dict("list") == {"a": [1, 3], "b": [2, 4]}
    assert table.malformed == ["5,1,2"]
