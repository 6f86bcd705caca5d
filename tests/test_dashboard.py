"""The dashboard without a server: state, selections, export, header, error page, imports.

Everything a gesture does is a method of ``DashboardState``, so the selection logic is
tested here by calling those methods with the geometry a plot would send, and comparing
with selections computed independently from the catalogue.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import socket
import subprocess
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import panel as pn
import pytest

from core.io import read_json, write_json
from dashboard import export
from dashboard import selection as sel
from dashboard.app import build_app, create_app, error_page
from dashboard.args import DEFAULT_RUN, parse_app_args
from dashboard.data import TABLE_COLUMNS, describe_model, evaluation_figures, open_app_data, run_summary
from dashboard.state import TAP_TOLERANCE_PX, DashboardState
from tests.fakerun import make_fake_run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_path(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("dash") / "fake-run", n=300)


@pytest.fixture(scope="module")
def data(run_path):
    return open_app_data(run_path)


@pytest.fixture
def state(data) -> DashboardState:
    return DashboardState(data)


def expected_rows(data, mask) -> list[int]:
    """Rows where mask, most anomalous first, ties in catalogue order (computed without the app)."""
    df = data.catalogue.assign(row=np.arange(data.n))[mask]
    return df.sort_values("anomaly_score", ascending=False, kind="stable")["row"].tolist()


def even_odd(x, y, px, py) -> np.ndarray:
    """Point in polygon by ray casting, one point at a time (slow and obvious on purpose)."""
    out = np.zeros(len(x), dtype=bool)
    for i, (xi, yi) in enumerate(zip(x, y)):
        inside = False
        for k in range(len(px)):
            j = k - 1
            if (py[k] > yi) != (py[j] > yi) and xi < (px[j] - px[k]) * (yi - py[k]) / (py[j] - py[k]) + px[k]:
                inside = not inside
        out[i] = inside
    return out


# ------------------------------------------------------------------ the fake run


def test_fake_run_has_the_run_directory_format(run_path, data):
    from core.run import open_run

    run = open_run(run_path)
    cat = run.catalogue
    for col in ("galaxy_id", "ra", "dec", "z", "anomaly_score", "anomaly_pct", "flagged", "top_line", "umap_x",
                "umap_y", "log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha", "bpt_nii", "bpt_sii", "bpt_oi",
                "bpt_class", "split", "truth_class", "truth_anomaly"):
        assert col in cat.columns, col
    assert all(f"err_{line}" in cat.columns for line in run.lines)
    assert cat["galaxy_id"].is_unique
    assert run.manifest.format == "blueberry-run/1"
    assert run.recon.shape == run.dataset.flux.shape == (300, 19, 32, 32)
    assert run.neighbours.shape == (300, 8) and (run.neighbours != np.arange(300)[:, None]).all()
    # Masked corners: the footprint leaves spaxels uncovered, and they are NaN in the flux.
    assert run.dataset.mask[:, :, 0, 0].all() and np.isnan(run.dataset.flux[:, :, 0, 0]).all()
    assert cat["flagged"].sum() == pytest.approx(30, abs=2)
    assert cat["truth_anomaly"].any()


def test_fake_run_scales_in_chunks(tmp_path):
    from core.run import open_run

    run = open_run(make_fake_run(tmp_path / "big", n=5000, n_lines=7, size=4, with_truth=False))
    assert run.recon.shape == (5000, 7, 4, 4)
    assert "Ha-6564" in run.lines and "truth_class" not in run.catalogue.columns
    assert run.manifest.evaluation is None


# ------------------------------------------------------------------ selections


def test_box_select_on_the_latent_map(state, data):
    x, y = data.catalogue["umap_x"].to_numpy(float), data.catalogue["umap_y"].to_numpy(float)
    state.select_box(9.0, 3.0, 3.0, -3.0)  # corners in any order; around the cluster at (6, 0)
    mask = (x >= 3) & (x <= 9) & (y >= -3) & (y <= 3)
    assert mask.sum() > 20
    assert state.selection.tolist() == expected_rows(data, mask)
    assert state.selection_source == "latent"
    assert state.count_text == f"{mask.sum()} selected · latent map"


def test_box_select_on_a_bpt_diagram_skips_missing_ratios(state, data):
    cat = data.catalogue
    state.select_box(-3, 3, -3, 3, "bpt_oi")
    ok = cat["log_oi_ha"].notna() & cat["log_oiii_hb"].notna()
    assert state.selection.tolist() == expected_rows(data, ok.to_numpy())
    assert (~ok).sum() > 0
    state.select_box(-3, 3, -3, 3, "bpt_nii")
    assert len(state.selection) == (cat["log_nii_ha"].notna() & cat["log_oiii_hb"].notna()).sum()
    with pytest.raises(ValueError, match="unknown selection space"):
        state.select_box(0, 1, 0, 1, "bpt_xyz")


def test_lasso_select_matches_an_independent_point_in_polygon(state, data):
    x, y = data.catalogue["umap_x"].to_numpy(float), data.catalogue["umap_y"].to_numpy(float)
    # A concave "U": its notch must stay unselected.
    px = [-8, 8, 8, 4, 4, -4, -4, -8]
    py = [-8, -8, 8, 8, -2, -2, 8, 8]
    state.select_lasso(px, py)
    assert state.selection.tolist() == expected_rows(data, even_odd(x, y, px, py))
    assert 0 < len(state.selection) < data.n
    notch = (x > -4) & (x < 4) & (y > -2)
    assert not np.isin(np.flatnonzero(notch), state.selection).any()


def test_lasso_on_a_bpt_diagram_and_degenerate_polygons(state, data):
    bx, by = data.bpt["nii"]
    state.select_lasso([-2, 0.5, 0.5, -2], [-2, -2, 2, 2], "bpt_nii")
    assert sorted(state.selection) == sorted(np.flatnonzero((bx > -2) & (bx < 0.5) & (by > -2) & (by < 2)))
    assert state.selection_source == "bpt_nii"
    assert not sel.in_polygon(bx, by, [0, 1], [0, 1]).any()
    with pytest.raises(ValueError, match="polygon vertices"):
        sel.in_polygon(bx, by, [0, 1, 2], [0, 1])


def test_tap_picks_the_nearest_galaxy_within_the_pixel_tolerance(state, data):
    x, y = data.x, data.y
    # Screen of 500 x 400 px over a 20 x 20 data window: 25 px per unit in x, 20 in y.
    xr, yr, frame = (-10.0, 10.0), (-10.0, 10.0), (500, 400)
    d = np.hypot((x[:, None] - x[None]) * 25, (y[:, None] - y[None]) * 20) + np.eye(data.n) * 1e9
    inside = (np.abs(x) < 9) & (np.abs(y) < 9)
    row = int(np.argmax(np.where(inside, d.min(axis=1), -1)))  # the most isolated galaxy on screen
    assert d[row].min() > 3 * TAP_TOLERANCE_PX
    # 4 px to the right of it: picked, selected and inspected.
    assert state.tap(x[row] + 4 / 25, y[row], xr, yr, frame) == row
    assert state.selection.tolist() == [row] and state.row == row and state.selection_source == "tap"
    # 8 px away: nothing within 6 px, so nothing changes.
    state.inspect(0)
    assert state.tap(x[row] + 8 / 25, y[row], xr, yr, frame) is None
    assert state.row == 0 and state.selection.tolist() == [row]
    # The tolerance is in screen pixels whatever the zoom. Zoomed out 2x, that same data
    # offset is 4 px: picked. Zoomed in 10x, 8 px (a tenth of the data offset) is still too far.
    assert state.tap(x[row] + 8 / 25, y[row], (-20.0, 20.0), (-20.0, 20.0), frame) == row
    state.inspect(0)
    zx, zy = (x[row] - 1, x[row] + 1), (y[row] - 1, y[row] + 1)
    assert state.tap(x[row] + 8 / 250, y[row], zx, zy, frame) is None
    assert state.tap(x[row] + 4 / 250, y[row], zx, zy, frame) == row


def test_tap_prefers_the_nearer_of_two_galaxies():
    x, y = np.array([0.0, 0.3]), np.array([0.0, 0.0])
    args = ((-10.0, 10.0), (-10.0, 10.0), (400, 400))  # 20 px per unit
    assert sel.nearest(x, y, (0.2, 0.0), *args) == 1
    assert sel.nearest(x, y, (0.1, 0.0), *args) == 0
    assert sel.nearest(x, y, (0.15, 0.5), *args) is None  # 10 px up


def test_histogram_range_selects_by_score(state, data):
    state.select_score_range(data.p90, data.median)
    s = data.catalogue["anomaly_score"].to_numpy()
    assert state.selection.tolist() == expected_rows(data, (s >= data.median) & (s <= data.p90))
    assert state.count_text.endswith("score histogram")


def test_neighbours_of_the_inspected_galaxy(state, data, run_path):
    state.inspect(42)
    nb = np.load(run_path / "neighbours.npy")[42]
    assert state.neighbours.tolist() == nb.tolist()
    state.select_neighbours()
    assert sorted(state.selection) == sorted(nb) and state.selection_source == "neighbours"
    state.clear_selection()
    assert state.count_text == "0 selected"


def test_inspected_galaxy_by_id(data):
    st = DashboardState(data)
    top = int(np.argmax(data.catalogue["anomaly_score"]))
    assert st.row == top, "opens on the most anomalous galaxy"
    galaxy = data.catalogue["galaxy_id"].iat[7]
    st = DashboardState(data, galaxy=galaxy)
    assert st.row == 7
    st.galaxy = "0000-0000"
    assert st.row is None and len(st.neighbours) == 0


def test_table_and_export_rows(state, data):
    state.select_box(-20, 20, -20, 20)
    table = state.table_frame()
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table["anomaly_score"].is_monotonic_decreasing and len(table) == data.n
    assert table.index.tolist() == state.selection.tolist()
    frame = state.export_frame()
    assert list(frame.columns) == list(data.catalogue.columns)
    assert frame["galaxy_id"].tolist() == data.catalogue["galaxy_id"].to_numpy()[state.selection].tolist()


# ------------------------------------------------------------------ export


def test_export_filename_names_the_run_and_time():
    when = datetime(2026, 3, 4, 5, 6, 7)
    assert export.export_filename("demo", when) == "demo_20260304-050607.csv"
    assert export.export_filename("my run/../x", when) == "my_run_.._x_20260304-050607.csv"


class _BigSelection:
    """A stand-in session with 120,000 selected rows: what the route must stream."""

    class data:
        name = "big"

    def export_frame(self):
        n = 120_000
        return pd.DataFrame({"galaxy_id": [f"{i}-1901" for i in range(n)], "anomaly_score": np.arange(n, dtype=float),
                             "note": ["=1+1"] * n})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_export_route_streams_large_selections_over_http():
    from tornado.httpclient import AsyncHTTPClient, HTTPClientError
    from tornado.web import Application

    session = _BigSelection()
    token = export.register(session)
    chunks = []

    async def fetch():
        port = _free_port()
        server = Application(export.routes()).listen(port, address="127.0.0.1")
        client = AsyncHTTPClient()
        try:
            response = await client.fetch(f"http://127.0.0.1:{port}{export.export_url(token)}",
                                          streaming_callback=chunks.append)
            with pytest.raises(HTTPClientError) as missing:
                await client.fetch(f"http://127.0.0.1:{port}/{export.ROUTE_PREFIX}/not-a-token")
            export._exporting.add(token)  # as while this session's first download is streaming
            try:
                with pytest.raises(HTTPClientError) as second:
                    await client.fetch(f"http://127.0.0.1:{port}{export.export_url(token)}")
            finally:
                export._exporting.discard(token)
            return response, missing.value.code, second.value.code
        finally:
            server.stop()

    try:
        # A thread of its own: an earlier test (Playwright's sync API) may leave a loop running here.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            response, missing_code, second_code = pool.submit(asyncio.run, fetch()).result()
    finally:
        export.unregister(token)
    assert missing_code == 404
    assert second_code == 429, "one export per session at a time"
    assert not export._exporting, "a finished export frees its session"
    assert response.headers["Content-Type"].startswith("text/csv")
    assert response.headers["Transfer-Encoding"] == "chunked", "streamed, not one message"
    assert 'filename="big_' in response.headers["Content-Disposition"]
    assert len(chunks) > 1
    rows = pd.read_csv(io.BytesIO(b"".join(chunks)))
    assert len(rows) == 120_000 and (rows["note"] == "'=1+1").all()
    assert export.lookup(token) is None


def test_export_registry_forgets_closed_sessions(state):
    token = export.register(state)
    assert export.lookup(token) is state
    export.unregister(token)
    assert export.lookup(token) is None
    assert export.export_url("abc", "/prefix/") == "/prefix/blueberry/export/abc"


def test_export_button_links_to_the_route_or_falls_back_below_the_limit(state, monkeypatch):
    from dashboard.views import ExportButton

    monkeypatch.setattr(export, "_route_served", True)
    button = ExportButton(state=state)
    assert isinstance(button._widget, pn.widgets.Button) and button._widget.label == "Export CSV"
    assert button._widget.disabled, "nothing to export yet"
    state.select_box(-20, 20, -20, 20)
    assert not button._widget.disabled

    monkeypatch.setattr(export, "_route_served", False)
    fallback = ExportButton(state=state)
    assert isinstance(fallback._widget, pn.widgets.FileDownload) and fallback._widget.label == "Export CSV"
    csv_text = fallback._csv_for_websocket().getvalue()
    assert csv_text.count("\n") == 1 + state.data.n
    assert fallback._widget.filename.startswith("fake-run_")
    many = np.arange(export.WEBSOCKET_MAX_ROWS)
    big = state.data.order[many % state.data.n]  # a selection of 100,000 rows, by count
    state.param.update(selection=big)
    assert fallback._widget.disabled and "--plugins dashboard.export" in fallback._note.object


# ------------------------------------------------------------------ header, maps, run path


def test_header_values(data):
    summary = run_summary(data)
    score = data.catalogue["anomaly_score"]
    assert summary["Run"] == "fake-run" and summary["Galaxies"] == "300"
    assert summary["Model"] == "vae, latent 16, 51,234 parameters, config demo"
    # a run whose fit did not record its parameter count
    older = replace(data.run.manifest, model="ae", model_args={"kind": "ae", "latent_dim": 128}, parameters=None)
    assert describe_model(older) == "ae, latent 128, config demo"
    assert summary["Lines"] == "19 (Heta-3836 … SII-6732)"
    assert summary["Normalisation"] == "none"
    assert summary["Median score"] == f"{np.median(score):,.0f}"
    assert summary["90th percentile"] == f"{np.percentile(score, 90):,.0f}"
    ev = evaluation_figures(data.run.evaluation)
    assert ev == {"task": "anomaly", "model": "ROC-AUC 0.912, AP 0.587", "pca": "ROC-AUC 0.781, AP 0.301",
                  "iforest": "ROC-AUC 0.744, AP 0.215"}


def test_galaxy_maps_keep_masked_spaxels_masked(data):
    maps = data.galaxy_maps(5)
    mask = np.asarray(data.run.dataset.mask[5])
    for kind in ("data", "model", "residual"):
        assert np.isnan(maps[kind][mask]).all(), kind
        assert np.isfinite(maps[kind][~mask]).all(), kind
    np.testing.assert_allclose(maps["residual"], maps["data"] - maps["model"], atol=1e-5)
    assert (maps["scale"] > 0).all() and maps["bpt_map"].shape == (32, 32)


def test_colour_options(data):
    opts = data.colour_options
    assert opts[:3] == ("anomaly_score", "bpt_class", "truth_class")
    assert "z" in opts and "err_Ha-6564" in opts and "galaxy_id" not in opts
    assert data.colour_frame("bpt_class")["v"].dtype == "category"
    assert data.colour_frame("z")["v"].dtype == np.float64
    with pytest.raises(KeyError):
        data.colour_frame("galaxy_id")


def test_app_arguments_from_args_env_or_default():
    assert parse_app_args(["--run", "runs/x"], {}).run == Path("runs/x")
    assert parse_app_args([], {"BLUEBERRY_RUN": "/data/run"}).run == Path("/data/run")
    assert parse_app_args(["--run", "a"], {"BLUEBERRY_RUN": "b"}).run == Path("a")
    assert parse_app_args([], {}).run == Path(DEFAULT_RUN)
    args = parse_app_args(["--links", "l.json", "--run", "r", "--user", "Ada L", "--unknown"], {})
    assert (args.run, args.links, args.user) == (Path("r"), "l.json", "Ada L")
    assert parse_app_args([], {"BLUEBERRY_LINKS": "env.json"}).links == "env.json"
    assert parse_app_args([], {}) == parse_app_args(None, {}) and parse_app_args([], {}).links is None


def test_mosaic_geometry_round_trips():
    from dashboard.views.glyphs import Mosaic

    m = Mosaic(19, 32, 5)
    assert (m.nrows, m.ncols) == (4, 5)
    for i in (0, 4, 5, 18):
        col, row = m.origin(i)
        assert m.panel_at(col + 16, m.height - row - 16) == i
    col, row = m.origin(0)
    assert m.panel_at(col + 32 + 0.5 * m.gap, m.height - row - 16) is None, "a gap"
    assert m.panel_at(col + 16, m.height - row + 0.5) is None, "a label strip"
    assert m.panel_at(*(lambda c, r: (c + 16, m.height - r - 16))(*m.origin(19))) is None, "the empty slot"


# ------------------------------------------------------------------ pages


def test_missing_run_gives_a_page_naming_the_command(tmp_path):
    page = create_app(tmp_path / "nowhere")
    text = str(page.objects[1].object)
    assert "No run to show" in text and "python -m train demo" in text and "BLUEBERRY_RUN" in text


def test_incomplete_run_gives_a_page_naming_the_command(run_path, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    manifest = read_json(run_path / "manifest.json")
    manifest["dataset"] = str(run_path / "dataset")
    write_json(broken / "manifest.json", manifest)
    page = create_app(broken)
    text = str(page.objects[1].object)
    assert "incomplete" in text and "python -m train embed" in text
    assert "&lt;" not in error_page("x", ValueError("<b>")).objects[1].object.replace("&lt;b&gt;", "")


def test_a_catalogue_without_the_embed_columns_gives_a_page_naming_them(run_path, tmp_path):
    import shutil

    from core.io import stamp_files
    from core.run import STAGE_OUTPUTS, mark_stage

    run = tmp_path / "run"
    shutil.copytree(run_path, run)
    manifest = read_json(run / "manifest.json")
    manifest["dataset"] = str(run_path / "dataset")
    write_json(run / "manifest.json", manifest)
    pd.read_parquet(run / "catalogue.parquet").drop(columns=["umap_x"]).to_parquet(run / "catalogue.parquet")
    mark_stage(run, "embed", True, files=stamp_files(run, STAGE_OUTPUTS["embed"]))  # stamped, as a buggy stage might
    text = str(create_app(run).objects[1].object)
    assert "umap_x" in text and "python -m train embed" in text


def test_an_unforeseen_failure_gives_a_page_not_a_blank(monkeypatch, tmp_path):
    import dashboard.app

    def broken(path):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(dashboard.app, "prepared", broken)
    text = str(create_app(tmp_path).objects[1].object)
    assert "No run to show" in text and "ZeroDivisionError" in text


def test_the_whole_page_renders_and_views_follow_the_state(data):
    from bokeh.document import Document

    state, page = build_app(data)
    page.server_doc(Document())  # without a server every tab is drawn at once
    tables = page.select(pn.widgets.Tabulator)
    assert len(tables) == 1 and len(tables[0].value) == 0
    table = tables[0]
    state.select_box(-20, 20, -20, 20)
    assert len(table.value) == data.n
    assert table.value["anomaly_score"].is_monotonic_decreasing
    state.colour_by = "bpt_class"  # rebuilds the map with a categorical colouring
    state.colour_by = "z"


def test_the_inspector_draws_the_inspected_galaxys_maps_error_shares_and_class_map(state, data):
    from dashboard.views import Inspector
    from dashboard.views.glyphs import FLAGGED

    view = Inspector(state=state)
    n, err = len(data.lines), [f"err_{line}" for line in data.lines]
    for row in (3, 17):
        state.inspect(row)
        maps = data.galaxy_maps(row)
        flux, residual = view._flux_source.data["image"], view._residual_source.data["image"]
        for i in range(n):
            np.testing.assert_array_equal(flux[i], maps["data"][i])
            np.testing.assert_array_equal(flux[view._mosaic.n + i], maps["model"][i])
            np.testing.assert_array_equal(residual[i], maps["residual"][i])
        shares = data.catalogue[err].iloc[row].to_numpy(float)
        np.testing.assert_allclose(view._bar_source.data["share"], shares)
        colours = view._bar_source.data["colour"]
        assert colours[int(np.argmax(shares))] == FLAGGED and colours.count(FLAGGED) == 1
        np.testing.assert_array_equal(view._class_source.data["image"][0], maps["bpt_map"])
        texts = view._text_source.data["text"]
        assert texts[-1] == f"{shares.max() * 1.1:.2g}", "the share axis ends 10% above the largest bar"
        assert all(texts.count(line) == 4 for line in data.lines), "each line named over its 3 maps and its bar"


def test_a_session_takes_the_views_built_ahead_unless_labels_changed_since(tmp_path):
    from bokeh.document import Document

    from dashboard import spare
    from dashboard.views import Inspector, LatentMap

    data = open_app_data(make_fake_run(tmp_path / "run", n=60))
    spare.build(data)
    built = spare._spares[id(data)][2]
    state, views = spare.take(data)
    assert state is built and views[LatentMap].state is state and views[Inspector].state is state
    _, page = build_app(data, state, views)
    doc = Document()
    page.server_doc(doc)
    assert views[LatentMap]._fig.document is doc, "the page shows the views built ahead, not new ones"
    again, views = spare.take(data)  # none left: built now
    assert again is not state and views[Inspector].state is again

    spare.build(data)
    built = spare._spares[id(data)][2]
    again.discovery.label(4, galaxy=str(data.catalogue["galaxy_id"].iat[0]))  # another session labels
    fresh, _ = spare.take(data)
    assert fresh is not built, "a spare built before a label is stale"
    assert id(data) not in spare._spares


def test_table_shows_the_top_rows_of_a_big_selection(state, monkeypatch):
    from dashboard.views import SelectionTable, table

    monkeypatch.setattr("dashboard.state.TABLE_ROWS", 50)
    monkeypatch.setattr(table, "TABLE_ROWS", 50)
    view = SelectionTable(state=state)
    state.select_box(-20, 20, -20, 20)
    assert len(state.selection) > 50
    assert view._table.value.index.tolist() == state.selection[:50].tolist()
    assert view._count.object.startswith(f"{len(state.selection):,} selected")
    assert "top 50" in view._count.object
    assert len(state.export_frame()) == len(state.selection)


def test_table_row_click_inspects_that_galaxy(state):
    from dashboard.views import SelectionTable

    view = SelectionTable(state=state)
    state.select_box(-20, 20, -20, 20)
    event = type("Click", (), {"row": 3})()
    view._clicked(event)
    assert state.row == int(view._table.value.index[3])
    assert state.row == int(state.selection[3])


# ------------------------------------------------------------------ imports


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_dashboard_loads_neither_torch_umap_nor_numba():
    loaded = _run("import json, sys\n"
                  "import dashboard.app, dashboard.data, dashboard.export, dashboard.selection, dashboard.state, "
                  "dashboard.views, dashboard.app_hooks\n"
                  "print(json.dumps({m: m in sys.modules for m in ('torch', 'umap', 'numba', 'datashader')}))")
    assert loaded == {"torch": False, "umap": False, "numba": False, "datashader": False}


def test_numba_arrives_only_when_a_plot_renders(run_path):
    loaded = _run("import json, sys\n"
                  "from bokeh.document import Document\n"
                  "import panel as pn\n"
                  "from dashboard.data import open_app_data\n"
                  "from dashboard.state import DashboardState\n"
                  "from dashboard.views import LatentMap\n"
                  f"state = DashboardState(open_app_data({str(run_path)!r}))\n"
                  "before = 'numba' in sys.modules\n"
                  "pn.panel(LatentMap(state=state)).get_root(Document())\n"
                  "print(json.dumps({'before': before, 'after': 'numba' in sys.modules, 'torch': 'torch' in sys.modules,"
                  " 'umap': 'umap' in sys.modules}))")
    assert loaded == {"before": False, "after": True, "torch": False, "umap": False}


def test_a_score_beyond_float32_keeps_the_latent_maps_colours_finite():
    """The census can put a galaxy a hundred robust sigma out (anomaly_score ~1e51 on the demo): its cell must stay
    the brightest colour, not become inf, which would blank the whole colour scale in the browser."""
    from dashboard.views.base import datashade, datashader

    ds, _ = datashader()
    frame = pd.DataFrame({"x": [0.1, 0.5, 0.9], "y": [0.1, 0.5, 0.9], "v": [1.0, 3.0, 1.5e51]})
    image = datashade(frame, ds.mean("v"), (20, 20), ((0.0, 1.0), (0.0, 1.0)), 0)
    values = image[np.isfinite(image)]
    assert len(values) == 3 and values.max() == np.finfo(np.float32).max and sorted(values)[:2] == [1.0, 3.0]
    assert np.isnan(image).sum() == image.size - 3
