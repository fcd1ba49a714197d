"""A CSV read in blocks (the Ray engine's parse) types and keeps rows as one read does."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from components.common.errors import UserError
from components.common.settings import Source
from components.data.sources import csv_blocks, read_source

TEXT = (
    'id,price,qty,flag,note,empty,maybe\n'
    '1,1.50,3,True,"a, quoted\nnote",,True\n'
    '2,x,4,False,plain,,\n'
    '3,2.25,,True,,,False\n'
    '4,3,5,False,"say ""hi""",,True\n'
    '5,1,2,3,4,5,6,7\n'
    '6,4,6,True,last,,x\n'
)


@pytest.mark.parametrize("rows", [1, 2, 3, 100])
def test_blocks_type_and_keep_rows_as_one_read_does(tmp_path: Path, rows: int) -> None:
    path = tmp_path / "t.csv"
    path.write_text(TEXT)
    source = Source(name="t", uri=str(path))
    whole = read_source(source)
    blocks = list(csv_blocks(source, rows))
    joined = pd.concat([b.frame for b in blocks], ignore_index=True)
    pd.testing.assert_frame_equal(joined, whole.frame)
    assert [m for b in blocks for m in b.malformed] == whole.malformed == ["5,1,2,3,4,5,6,7"]
    assert joined["price"].tolist()[:2] == ["1.50", "x"]  # text as written, in every block


def test_many_undecodable_lines_are_one_line_to_fix(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_bytes(b"a,b\n" + b"caf\xe9,1\n" * 20)
    with pytest.raises(UserError, match=r"set options\.encoding"):
        list(csv_blocks(Source(name="t", uri=str(path)), 5))
