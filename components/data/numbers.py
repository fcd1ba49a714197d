"""Numbers as people and exports write them. One reader for ``prepare_data`` and the
endpoint, so a client may send a value as the source had it."""

from __future__ import annotations

import numpy as np
import pandas as pd

_MONEY = "$€£¥₹"


def read_numbers(values: pd.Series) -> pd.Series:
    """Numbers, also as exports write them for people: ``€1,234.50``, ``12 %``, ``$ -3``
    (thousands commas only in their proper groups). Anything else is NaN."""
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=np.float64)
    written = np.isnan(numbers) & values.notna().to_numpy()
    if written.any():
        text = values[written].astype(str).str.strip() \
            .str.replace(rf"^([-+]?)\s*[{_MONEY}]\s*", r"\1", regex=True) \
            .str.replace(rf"\s*(%|[{_MONEY}])$", "", regex=True)
        grouped = text.str.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?")
        text = text.where(~grouped, text.str.replace(",", "", regex=False))
        numbers[written] = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    return pd.Series(numbers, index=values.index, name=values.name)
