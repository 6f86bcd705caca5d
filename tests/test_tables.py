"""The one CSV writer (core.tables): formula cells neutralised, rows kept whole, read back by pandas and csv."""
from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tables import FORMULA_PREFIXES, iter_csv, to_csv, write_csv
from train.cli import main

#: Characters that attack a CSV: formula starters, separators, quotes and line breaks.
HOSTILE = "=+-@\t\r\n,;\"' |"
hostile_text = st.text(alphabet=st.sampled_from(HOSTILE) | st.characters(codec="utf-8"), max_size=30)


def _expected(cell: str) -> str:
    return "'" + cell if cell.startswith(FORMULA_PREFIXES) else cell


@settings(max_examples=200, deadline=None)
@given(cells=st.lists(hostile_text, min_size=1, max_size=8), numbers=st.lists(st.floats(allow_nan=False), min_size=1,
                                                                                max_size=8))
def test_hostile_strings_stay_one_safe_cell(cells, numbers):
    n = min(len(cells), len(numbers))
    df = pd.DataFrame({"galaxy_id": cells[:n], "note": cells[::-1][:n], "anomaly_score": numbers[:n]})
    text = to_csv(df)

    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == n + 1, "a cell's line break split a row"
    assert rows[0] == ["galaxy_id", "note", "anomaly_score"]
    for row, gid, note in zip(rows[1:], df["galaxy_id"], df["note"]):
        assert row[:2] == [_expected(gid), _expected(note)]
        assert not row[0].startswith(FORMULA_PREFIXES) and not row[1].startswith(FORMULA_PREFIXES)

    back = pd.read_csv(io.StringIO(text), dtype={"galaxy_id": str, "note": str}, keep_default_na=False)
    assert len(back) == n
    assert back["galaxy_id"].tolist() == [_expected(c) for c in df["galaxy_id"]]
    assert np.array_equal(back["anomaly_score"].to_numpy(float), df["anomaly_score"].to_numpy(float)), \
        "numbers stay numbers"


def test_formula_cells_and_names_are_neutralised_and_the_input_kept():
    df = pd.DataFrame({"name": ["=HYPERLINK(\"x\")", "+1", "-2", "@SUM(A1)", "\tx", "ok", None],
                       "value": [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0], "flag": [True] * 7,
                       "=evil": ["a"] * 7})
    rows = pd.read_csv(io.StringIO(to_csv(df)), keep_default_na=False)
    assert rows["name"].tolist() == ["'=HYPERLINK(\"x\")", "'+1", "'-2", "'@SUM(A1)", "'\tx", "ok", ""]
    assert rows["value"].tolist() == [-1.5, 2.0, -3.0, 4.0, 5.0, 6.0, 7.0], "numbers stay numbers"
    assert "'=evil" in rows.columns
    assert df["name"].iat[0] == "=HYPERLINK(\"x\")", "the input is not modified"


def test_a_carriage_return_inside_a_cell_keeps_its_row():
    df = pd.DataFrame({"source": ["a.fits\r=cmd|' /C calc'!A0", "b.fits"], "z": [0.1, 0.2]})
    text = to_csv(df)
    assert text.count("\r\n") == 3, "one CRLF per row, the cell's CR is quoted"
    assert [r[0] for r in csv.reader(io.StringIO(text, newline=""))][1:] == ["a.fits\r=cmd|' /C calc'!A0", "b.fits"]


def test_chunks_join_to_the_whole():
    df = pd.DataFrame({"a": np.arange(1234), "b": [f"g{i}" for i in range(1234)]})
    chunks = list(iter_csv(df, chunk_rows=100))
    assert len(chunks) == 1 + 13
    assert "".join(chunks) == df.to_csv(index=False, lineterminator="\r\n")


def test_write_csv_is_atomic_and_utf8(tmp_path):
    out = tmp_path / "t.csv"
    write_csv(out, pd.DataFrame({"galaxy_id": ["=1+1", "Hα-6564"]}))
    assert out.read_bytes() == "galaxy_id\r\n'=1+1\r\nHα-6564\r\n".encode()
    assert [p.name for p in tmp_path.iterdir()] == ["t.csv"], "no temporary file left"


def test_train_score_writes_through_the_safe_writer(tmp_path, monkeypatch):
    # score_files is stubbed: the point is what `train score` does with hostile ids.
    table = pd.DataFrame({"galaxy_id": ["=HYPERLINK(\"http://x\")", "7815-3702"], "source": ["a\rb", "c"],
                          "anomaly_score": [1.0, 2.0], "flagged": [False, True]})
    monkeypatch.setattr("core.score.score_files", lambda *a, **k: (table, []))
    out = tmp_path / "scores.csv"
    assert main(["score", "--run", str(tmp_path), str(tmp_path), "--out", str(out), "--quiet"]) == 0
    back = pd.read_csv(out, keep_default_na=False)
    assert back["galaxy_id"].tolist() == ["'=HYPERLINK(\"http://x\")", "7815-3702"]
    assert back["source"].tolist() == ["a\rb", "c"]
