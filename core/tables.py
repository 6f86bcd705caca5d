"""CSV files that are safe to open in a spreadsheet: the one CSV writer of the project.

Every CSV that Blueberry writes for people (the app's export, ``train score``) goes through
here, because a galaxy id, a file name or a note can come from anyone:

- A text cell that a spreadsheet would read as a formula (OWASP "CSV injection": it starts
  with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is prefixed with a single
  quote; so is such a column name. Numeric and boolean columns are written as numbers,
  which spreadsheets never evaluate.
- Rows end in CRLF (RFC 4180), so a cell holding a line feed or a carriage return is
  quoted and a row stays one row for pandas, Python's csv module and spreadsheets alike
  (with a bare LF terminator, a lone CR inside a cell is written unquoted and splits the row).
"""
from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from core.io import atomic_path

#: Leading characters that make a spreadsheet cell a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: RFC 4180's row terminator.
ROW_END = "\r\n"
#: Rows per chunk when a table is written piece by piece.
CHUNK_ROWS = 50_000


def _is_text(column: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column))


def safe_text(values: pd.Series) -> pd.Series:
    """A text column with every formula-like cell prefixed by ``'`` (other cells untouched)."""
    risky = values.map(lambda v: isinstance(v, str) and v.startswith(FORMULA_PREFIXES)).to_numpy(dtype=bool)
    if not risky.any():
        return values
    out = values.astype("object")  # a copy: the caller's frame is never modified
    out[risky] = "'" + out[risky].astype(str)
    return out


def spreadsheet_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its text cells and column names made safe to open in a spreadsheet."""
    out = df.copy(deep=False)
    for col in df.columns:
        if _is_text(df[col]):
            out[col] = safe_text(df[col])
    out.columns = [c if not str(c).startswith(FORMULA_PREFIXES) else "'" + str(c) for c in out.columns]
    return out


def iter_csv(df: pd.DataFrame, chunk_rows: int = CHUNK_ROWS) -> Iterator[str]:
    """The safe CSV of ``df``, header first, then ``chunk_rows`` rows at a time.

    Only one chunk is made safe at a time, so a large table is never held twice.
    """
    yield spreadsheet_safe(df.iloc[:0]).to_csv(index=False, lineterminator=ROW_END)
    for lo in range(0, len(df), chunk_rows):
        yield spreadsheet_safe(df.iloc[lo:lo + chunk_rows]).to_csv(index=False, header=False, lineterminator=ROW_END)


def to_csv(df: pd.DataFrame) -> str:
    """The whole safe CSV of ``df`` as one string."""
    return "".join(iter_csv(df))


def write_csv(path, df: pd.DataFrame) -> None:
    """Write the safe CSV of ``df`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        for chunk in iter_csv(df):
            fh.write(chunk)
