"""FITS and VOTable exports (core.export, the app's route and buttons): read back by astropy.

Each file must give back the rows and columns it was given, the units of the positions,
the run's provenance, and text that survives whatever a catalogue holds.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import socket
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import panel as pn
import pytest
from astropy.io import fits
from astropy.io.votable import parse
from astropy.table import Table

from core.export import (FORMATS, UCDS, export_info, fits_text, save_selection, selection_table, write_selection,
                         xml_text)
from dashboard import export
from dashboard.data import open_app_data
from dashboard.state import DashboardState
from tests.fakerun import make_fake_run

#: Text a catalogue column might hold: formulas, markup, XML breakers, control and non-ASCII characters.
HOSTILE = ["=HYPERLINK(\"x\")", "<script>alert(1)</script>", "a & b ]]> \"'", "tab\there\nnew\rline", "nul\x00byte",
           "Hα λ6564 Å", "emoji 🫐", "", "x" * 300, "\x1b[31m", "plain"]
WHEN = datetime(2026, 11, 30, 18, 0, 5, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return open_app_data(make_fake_run(tmp_path_factory.mktemp("export") / "fake-run", n=120))


def hostile_frame(n: int = len(HOSTILE)) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    score = rng.normal(10, 3, n)
    score[1] = np.nan
    return pd.DataFrame({
        "galaxy_id": [f"7443-{1901 + i}" for i in range(n)], "note": (HOSTILE * n)[:n],
        "ra": rng.uniform(0, 360, n), "dec": rng.uniform(-10, 60, n), "anomaly_score": score,
        "n_clumps": pd.array([None, *range(1, n)], dtype="Int64"), "flagged": rng.random(n) < 0.5,
        "truth_re_arcsec": rng.uniform(1, 5, n), "maybe": [None, *(["yes"] * (n - 1))],
    })


def cell(table: Table, col: str, i: int) -> str:
    """A text cell as a str; astropy reads an empty FITS string (and a null) back as masked."""
    v = table[col][i]
    return "" if np.ma.is_masked(v) else str(v)


def read_back(fmt: str, df: pd.DataFrame, info) -> tuple[Table, bytes]:
    buf = io.BytesIO()
    write_selection(buf, df, info, fmt)
    raw = buf.getvalue()
    return Table.read(io.BytesIO(raw), format="fits" if fmt == "fits" else "votable"), raw


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_round_trip_keeps_rows_columns_units_and_nulls(data, fmt):
    df = hostile_frame()
    info = export_info(data.run.manifest, len(df), when=WHEN)
    t, _ = read_back(fmt, df, info)
    assert t.colnames == list(df.columns) and len(t) == len(df)
    assert list(t["galaxy_id"]) == list(df["galaxy_id"])
    np.testing.assert_array_equal(np.asarray(t["ra"], dtype=float), df["ra"].to_numpy())
    assert str(t["ra"].unit) == "deg" and str(t["dec"].unit) == "deg" and str(t["truth_re_arcsec"].unit) == "arcsec"
    assert t["anomaly_score"].unit is None
    score = np.ma.filled(np.ma.asarray(t["anomaly_score"], dtype=float), np.nan)
    assert np.isnan(score[1]) and np.allclose(score[2:], df["anomaly_score"].to_numpy()[2:])
    assert np.ma.is_masked(t["n_clumps"][0]) and list(t["n_clumps"][1:]) == list(range(1, len(df)))
    assert t["flagged"].dtype == bool and list(t["flagged"]) == df["flagged"].tolist()


def test_fits_header_records_the_run_date_model_and_score(data):
    df = hostile_frame()
    info = export_info(data.run.manifest, len(df), when=WHEN)
    _, raw = read_back("fits", df, info)
    with fits.open(io.BytesIO(raw)) as hdus:
        header = hdus["SELECTION"].header
        assert header["BBRUN"] == "fake-run" and header["DATE"] == "2026-11-30T18:00:05"
        assert header["BBMODEL"] == "vae, latent 16, 51,234 parameters, config demo"
        assert header["BBNROWS"] == len(df) and header["ORIGIN"] == "Blueberry"
        comments = " ".join(str(c) for c in header["COMMENT"])
        assert "latent_dim=16" in comments
        assert " ".join(data.run.manifest.score.definition.split()) in comments
        header.tostring()  # a valid, ASCII header


def test_votable_records_the_run_and_the_columns_meaning(data):
    df = hostile_frame()
    info = export_info(data.run.manifest, len(df), when=WHEN)
    _, raw = read_back("votable", df, info)
    vot = parse(io.BytesIO(raw))
    infos = {i.name: i.value for i in vot.resources[0].infos}
    assert infos["run"] == "fake-run" and infos["created"] == "2026-11-30T18:00:05Z"
    assert infos["model"].startswith("vae, latent 16") and infos["score_definition"] == data.run.manifest.score.definition
    table = vot.get_first_table()
    assert "fake-run" in table.description
    ucds = {f.name: f.ucd for f in table.fields}
    assert all(ucds[name] == ucd for name, ucd in UCDS.items() if name in ucds)
    assert ucds["ra"] == "pos.eq.ra;meta.main"


def test_hostile_strings_come_back_as_one_cell_each(data):
    df = hostile_frame()
    info = export_info(data.run.manifest, len(df))
    fits_t, _ = read_back("fits", df, info)
    vot_t, _ = read_back("votable", df, info)
    for i, text in enumerate(HOSTILE):
        assert cell(fits_t, "note", i) == fits_text(text), text
        assert cell(fits_t, "note", i).isascii()
        assert cell(vot_t, "note", i) == xml_text(text), text
    # Non-ASCII survives in the VOTable; in FITS it is escaped, readably.
    assert vot_t["note"][5] == "Hα λ6564 Å" and fits_t["note"][5] == "H\\u03b1 \\u03bb6564 \\xc5"
    assert vot_t["note"][4] == "nul\ufffdbyte" and fits_t["note"][4] == "nul\\x00byte"
    assert vot_t["note"][3] == "tab\there\nnew\rline"  # XML keeps tabs and line breaks
    assert len(vot_t["note"][8]) == 300
    assert cell(vot_t, "maybe", 0) == "" and cell(fits_t, "maybe", 0) == "" and cell(fits_t, "maybe", 1) == "yes"


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_empty_selection_writes_a_table_of_no_rows(data, fmt, tmp_path):
    df = data.catalogue.iloc[:0]
    path = tmp_path / f"empty.{FORMATS[fmt][0]}"
    save_selection(path, df, export_info(data.run.manifest, 0), fmt)
    t = Table.read(path, format="fits" if fmt == "fits" else "votable")
    assert len(t) == 0 and t.colnames == list(df.columns)


@pytest.mark.parametrize("fmt", ["fits", "votable"])
def test_the_whole_catalogue_round_trips(data, fmt):
    df = data.catalogue
    t, _ = read_back(fmt, df, export_info(data.run.manifest, len(df)))
    assert t.colnames == list(df.columns)
    assert list(t["galaxy_id"]) == df["galaxy_id"].tolist()
    np.testing.assert_allclose(np.asarray(t["anomaly_score"], float), df["anomaly_score"].to_numpy())


def test_unknown_format_and_clashing_names_are_refused(data):
    info = export_info(data.run.manifest, 1)
    with pytest.raises(ValueError, match="unknown export format"):
        selection_table(pd.DataFrame({"a": [1]}), info, "xlsx")
    with pytest.raises(ValueError, match="both written as"):
        selection_table(pd.DataFrame({"α": [1], "\\u03b1": [2]}), info, "fits")


# ------------------------------------------------------------------ the app's route and buttons


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fetch_all(token: str, queries: list[str]) -> list[tuple[int, dict, bytes]]:
    """GET the session's export URL with each query; (status, headers, body) each."""
    from tornado.httpclient import AsyncHTTPClient
    from tornado.web import Application

    async def fetch():
        port = _free_port()
        server = Application(export.routes()).listen(port, address="127.0.0.1")
        client = AsyncHTTPClient()
        out = []
        try:
            for q in queries:
                r = await client.fetch(f"http://127.0.0.1:{port}{export.export_url(token)}{q}", raise_error=False)
                out.append((r.code, dict(r.headers), r.body or b""))
            return out
        finally:
            server.stop()

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fetch()).result()


def test_route_serves_fits_and_votable_of_the_selection(data, monkeypatch):
    state = DashboardState(data)
    state.select_score_range(data.median, np.inf)
    token = export.register(state)
    assert export.register(state) == token, "one token, so one export at a time, per session"
    try:
        (fits_code, fits_headers, fits_body), (vot_code, vot_headers, vot_body), (bad_code, _, bad_body) = \
            _fetch_all(token, ["?format=fits", "?format=votable", "?format=xlsx"])
        monkeypatch.setattr(export, "VOTABLE_MAX_ROWS", 3)
        [(big_code, _, big_body)] = _fetch_all(token, ["?format=votable"])
    finally:
        export.unregister(token)
    expected = data.catalogue["galaxy_id"].to_numpy()[state.selection].tolist()
    assert fits_code == 200 and fits_headers["Content-Type"] == "application/fits"
    assert 'filename="fake-run_' in fits_headers["Content-Disposition"] and ".fits" in fits_headers["Content-Disposition"]
    assert list(Table.read(io.BytesIO(fits_body), format="fits")["galaxy_id"]) == expected
    assert vot_code == 200 and ".vot" in vot_headers["Content-Disposition"]
    assert list(Table.read(io.BytesIO(vot_body), format="votable")["galaxy_id"]) == expected
    assert bad_code == 400
    assert big_code == 413
    assert not export._exporting


def test_export_buttons_fits_and_votable_fall_back_to_the_websocket(data, monkeypatch):
    from dashboard.views import ExportButton

    state = DashboardState(data)
    monkeypatch.setattr(export, "_route_served", False)
    buttons = {fmt: ExportButton(state=state, fmt=fmt) for fmt in ("fits", "votable")}
    assert buttons["fits"]._widget.label == "FITS" and buttons["votable"]._widget.label == "VOTable"
    assert all(b._widget.disabled for b in buttons.values()), "nothing to export yet"
    state.select_neighbours()
    for fmt, button in buttons.items():
        assert not button._widget.disabled
        t = Table.read(button._file_for_websocket(), format="fits" if fmt == "fits" else "votable")
        assert list(t["galaxy_id"]) == data.catalogue["galaxy_id"].to_numpy()[state.selection].tolist()
        assert button._widget.filename.endswith("." + FORMATS[fmt][0])
    monkeypatch.setattr(export, "VOTABLE_MAX_ROWS", 3)
    state.select_score_range(-np.inf, np.inf)
    assert buttons["votable"]._widget.disabled and "FITS" in buttons["votable"]._note.object
    assert not buttons["fits"]._widget.disabled
    monkeypatch.setattr(export, "_route_served", True)
    button = ExportButton(state=state, fmt="fits")
    assert isinstance(button._widget, pn.widgets.Button)
