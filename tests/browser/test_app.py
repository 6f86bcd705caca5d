"""The served dashboard in headless Chromium: paint, box and lasso select, table, tap, export, links.

Expected selections are computed here, independently of the app's code, from the fake
run's catalogue and the pixel -> data mapping of the plot as Bokeh reports it (frame box
and axis ranges), so the test checks the whole chain from a mouse gesture to the rows.
"""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

N_FIGURES = 3  # latent map, histogram, inspector (maps, error bars, BPT map); the other views wait in their tabs
#: Each detail tab but the inspector's, and the named figures it draws when first opened.
TAB_FIGURES = {"Why it is odd": ["why"], "BPT diagrams": ["bpt-nii", "bpt-sii", "bpt-oi"], "Neighbours": ["neighbours"],
               "Compare selections": []}
PAINT_TIMEOUT_MS = 90_000
WAIT_MS = 60_000  # for the server's answer to a gesture (generous: CI machines may be loaded)
TABLE_IDS = ".tabulator-row .tabulator-cell[tabulator-field='galaxy_id']"
INSPECTED = "h3.bb-galaxy-id"

#: Geometry of a named Bokeh figure, scrolled into view: its frame in viewport pixels and its axis ranges.
GEOMETRY_JS = """(name) => {
  const v = Bokeh.index.query_one(v => v.model && v.model.name === name && v.frame !== undefined);
  if (v === null || !v.has_finished()) return null;
  v.el.scrollIntoView({block: "nearest"});
  const r = v.el.getBoundingClientRect(), f = v.frame.bbox;
  return {left: r.left + f.left, top: r.top + f.top, width: f.width, height: f.height,
          x0: v.model.x_range.start, x1: v.model.x_range.end, y0: v.model.y_range.start, y1: v.model.y_range.end};
}"""
#: Names of the figures that have painted.
PAINTED_JS = """() => [...Bokeh.index.query(v => v.model && v.model.constructor && v.model.constructor.__name__ === 'Figure')]
  .filter(v => v.has_finished()).map(v => v.model.name)"""
FINISHED_JS = f"""(n) => window.Bokeh !== undefined && Bokeh.index !== undefined && ({PAINTED_JS})().length >= n"""


@pytest.fixture(scope="module")
def catalogue(fake_run) -> pd.DataFrame:
    return pd.read_parquet(fake_run / "catalogue.parquet")


def by_score(catalogue: pd.DataFrame, mask: np.ndarray) -> list[str]:
    """galaxy_ids where mask, most anomalous first (ties in catalogue order), as the app orders them."""
    order = np.argsort(-catalogue["anomaly_score"].to_numpy(), kind="stable")
    return catalogue["galaxy_id"].to_numpy()[order[mask[order]]].tolist()


def open_app(page, server, query: str = "") -> dict:
    """Open the app and wait until every view has painted (so the server is idle for the gestures)."""
    page.goto(f"{server}/dashboard{query}")
    page.wait_for_function(FINISHED_JS, arg=N_FIGURES, timeout=PAINT_TIMEOUT_MS)
    geometry = page.evaluate(GEOMETRY_JS, "latent-map")
    assert geometry is not None
    return geometry


def open_tab(page, title: str) -> None:
    """Open the detail tab ``title`` and wait until its figures have painted."""
    page.locator(".bk-tab", has_text=title).first.click()
    names = TAB_FIGURES.get(title, [])
    page.wait_for_function(f"() => {json.dumps(names)}.every(n => ({PAINTED_JS})().includes(n))", timeout=WAIT_MS)


def selected_count(page) -> int:
    text = page.locator("text=/^[\\d,]+ selected/").first.inner_text()
    return int(re.match(r"([\d,]+) selected", text).group(1).replace(",", ""))


def wait_count(page, n: int) -> None:
    page.locator(f"text=/^{n:,} selected/").first.wait_for(timeout=WAIT_MS)


def table_ids(page) -> list[str]:
    return page.locator(TABLE_IDS).all_inner_texts()


def inspected_id(page) -> str:
    return page.locator(INSPECTED).first.inner_text().strip()


def use_tool(page, title: str) -> None:
    """Switch the latent map's toolbar to ``title`` (clicking an active tool would turn it off)."""
    button = page.locator(f"div.bk-OnOffButton[title='{title}']").first
    if "bk-active" not in (button.get_attribute("class") or ""):
        button.click()


def to_data(g: dict, px: float, py: float) -> tuple[float, float]:
    return (g["x0"] + (px - g["left"]) / g["width"] * (g["x1"] - g["x0"]),
            g["y1"] - (py - g["top"]) / g["height"] * (g["y1"] - g["y0"]))


def to_screen(g: dict, x: float, y: float) -> tuple[float, float]:
    return (g["left"] + (x - g["x0"]) / (g["x1"] - g["x0"]) * g["width"],
            g["top"] + (g["y1"] - y) / (g["y1"] - g["y0"]) * g["height"])


def inside_polygon(x, y, px, py) -> np.ndarray:
    """Even-odd rule, vectorised over the points (an implementation independent of the app's)."""
    inside = np.zeros(len(x), dtype=bool)
    for k in range(len(px)):
        j = k - 1
        crosses = (py[k] > y) != (py[j] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = (px[j] - px[k]) * (y - py[k]) / (py[j] - py[k]) + px[k]
        inside ^= crosses & (x < xi)
    return inside


def test_page_paints_with_title_header_and_every_view(page, server, catalogue, artifacts):
    open_app(page, server)
    assert page.title() == "Blueberry"
    header = page.locator(".bb-header").first.inner_text()
    assert "fake-run" in header and "300" in header and "vae" in header and "ROC-AUC" in header
    assert selected_count(page) == 0
    page.screenshot(path=str(artifacts / "dashboard-overview.png"))


def test_every_resource_comes_from_the_server_itself(browser, server):
    """Offline, a stylesheet from a CDN is a widget without its styles: every request the page makes,
    the views drawn after the first paint included, must go to the server that served it."""
    context = browser.new_context(viewport={"width": 1700, "height": 2300})
    page = context.new_page()
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        open_app(page, server)
    finally:
        context.close()
    elsewhere = sorted({u for u in requested if not u.startswith((server, "data:", "blob:"))})
    assert requested and not elsewhere, f"the page fetched from elsewhere: {elsewhere}"


def test_box_select_table_row_click_and_export(page, server, catalogue, artifacts):
    g = open_app(page, server)
    use_tool(page, "Box Select")
    # A box over the left half of the map, from 10% to 55% across and 20% to 80% down.
    ax, ay = g["left"] + 0.10 * g["width"], g["top"] + 0.20 * g["height"]
    bx, by = g["left"] + 0.55 * g["width"], g["top"] + 0.80 * g["height"]
    page.mouse.move(ax, ay)
    page.mouse.down()
    page.mouse.move(bx, by, steps=8)
    page.mouse.up()
    (x0, y1), (x1, y0) = to_data(g, ax, ay), to_data(g, bx, by)
    x, y = catalogue["umap_x"].to_numpy(float), catalogue["umap_y"].to_numpy(float)
    expected = by_score(catalogue, (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1))
    assert len(expected) > 10
    wait_count(page, len(expected))
    expect(page.locator(TABLE_IDS).first).to_have_text(expected[0], timeout=WAIT_MS)
    assert table_ids(page) == expected[:len(table_ids(page))]
    page.screenshot(path=str(artifacts / "dashboard-box-select.png"))

    # Clicking the third row inspects that galaxy.
    page.locator(".tabulator-row").nth(2).locator(".tabulator-cell[tabulator-field='galaxy_id']").click()
    expect(page.locator(INSPECTED).first).to_have_text(expected[2], timeout=WAIT_MS)

    # The export holds exactly the selected rows, every catalogue column, spreadsheet-safe.
    with page.expect_download() as info:
        page.get_by_role("button", name="Export CSV").click()
    download = info.value
    assert re.fullmatch(r"fake-run_\d{8}-\d{6}\.csv", download.suggested_filename)
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert [r["galaxy_id"] for r in rows] == expected
    assert set(rows[0]) == set(catalogue.columns)


def test_lasso_select_matches_the_drawn_polygon(page, server, catalogue):
    g = open_app(page, server)
    use_tool(page, "Lasso Select")
    fractions = [(0.55, 0.15), (0.95, 0.25), (0.90, 0.75), (0.60, 0.85), (0.70, 0.50)]
    points = [(g["left"] + fx * g["width"], g["top"] + fy * g["height"]) for fx, fy in fractions]
    page.mouse.move(*points[0])
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*p, steps=6)
    page.mouse.up()
    poly = np.array([to_data(g, *p) for p in points])
    x, y = catalogue["umap_x"].to_numpy(float), catalogue["umap_y"].to_numpy(float)
    expected = by_score(catalogue, inside_polygon(x, y, poly[:, 0], poly[:, 1]))
    assert len(expected) > 10
    wait_count(page, len(expected))
    expect(page.locator(TABLE_IDS).first).to_have_text(expected[0], timeout=WAIT_MS)
    assert table_ids(page) == expected[:len(table_ids(page))]


def test_tap_picks_the_nearest_galaxy_within_a_few_pixels(page, server, catalogue):
    g = open_app(page, server)
    x, y = catalogue["umap_x"].to_numpy(float), catalogue["umap_y"].to_numpy(float)
    sx, sy = np.array([to_screen(g, a, b) for a, b in zip(x, y)]).T
    # An isolated galaxy, so "nearest within a few pixels" has one answer; tap 3 px off it.
    d = np.hypot(sx[:, None] - sx[None], sy[:, None] - sy[None]) + np.eye(len(x)) * 1e9
    inside = (sx > g["left"] + 20) & (sx < g["left"] + g["width"] - 20) & (sy > g["top"] + 20) & \
             (sy < g["top"] + g["height"] - 20)
    row = int(np.argmax(np.where(inside, d.min(axis=1), -1)))
    assert d[row].min() > 15
    use_tool(page, "Tap")
    page.mouse.click(sx[row] + 3, sy[row] - 2)
    galaxy = catalogue["galaxy_id"].iat[row]
    expect(page.locator(INSPECTED).first).to_have_text(galaxy, timeout=WAIT_MS)
    wait_count(page, 1)
    assert table_ids(page) == [galaxy]
    page.wait_for_url(re.compile(rf"[?&]galaxy={re.escape(galaxy)}"), timeout=10_000)

    # Far from every galaxy, a tap picks nothing and changes nothing.
    assert np.hypot(sx - (g["left"] + 2), sy - (g["top"] + 2)).min() > 20
    page.mouse.click(g["left"] + 2, g["top"] + 2)
    page.wait_for_timeout(500)
    assert inspected_id(page) == galaxy


def test_galaxy_link_opens_the_app_on_that_galaxy(page, server, catalogue, fake_run):
    galaxy = catalogue["galaxy_id"].iat[17]
    open_app(page, server, f"?galaxy={galaxy}")
    expect(page.locator(INSPECTED).first).to_have_text(galaxy, timeout=60_000)
    assert f"galaxy={galaxy}" in page.url
    # Inspecting another galaxy (a click on a neighbour's thumbnail) moves the URL along.
    neighbour = catalogue["galaxy_id"].iat[int(np.load(fake_run / "neighbours.npy")[17, 0])]
    open_tab(page, "Neighbours")
    g = page.evaluate(GEOMETRY_JS, "neighbours")
    # The first thumbnail fills the left quarter of the top row, under its label strip.
    page.mouse.click(g["left"] + 0.12 * g["width"], g["top"] + 0.28 * g["height"])
    expect(page.locator(INSPECTED).first).to_have_text(neighbour, timeout=WAIT_MS)
    page.wait_for_url(re.compile(rf"[?&]galaxy={re.escape(neighbour)}"), timeout=10_000)


def test_each_detail_tab_draws_its_views_when_first_opened(page, server, catalogue):
    """The detail views wait in tabs: none is drawn with the page, and each is drawn when its tab is first
    opened, on the session as it is then (here a galaxy found before any tab was opened)."""
    open_app(page, server)
    painted = page.evaluate(PAINTED_JS)
    assert sorted(painted) == ["inspector", "latent-map", "score-histogram"]
    galaxy = catalogue["galaxy_id"].iat[int(np.argmax(catalogue["anomaly_score"].to_numpy()))]
    search = page.locator("input[placeholder^='plate-IFU']").first
    search.fill(galaxy)
    search.press("Enter")
    expect(page.locator(INSPECTED).first).to_have_text(galaxy, timeout=WAIT_MS)
    for title, names in TAB_FIGURES.items():
        open_tab(page, title)
        assert set(names) <= set(page.evaluate(PAINTED_JS)), title
    # The comparison view has no figure until asked: its controls are what the tab shows.
    expect(page.get_by_role("button", name="Compare", exact=True)).to_be_visible(timeout=WAIT_MS)
    # Back on the inspector, the galaxy found is still the one shown.
    open_tab(page, "Galaxy inspector")
    assert inspected_id(page) == galaxy
    # Every figure is drawn at its own frame size, never stretched by its tab or panel: the
    # inspector's colour bars and every tap on a mosaic are placed in screen pixels.
    frames = page.evaluate("""() => [...Bokeh.index.query(v => v.model && v.model.constructor &&
      v.model.constructor.__name__ === 'Figure' && v.model.frame_width !== null)]
      .map(v => [v.model.name, v.frame.bbox.width, v.model.frame_width, v.frame.bbox.height, v.model.frame_height])""")
    assert len(frames) >= 3 + sum(map(len, TAB_FIGURES.values()))
    assert all((w, h) == (fw, fh) for _, w, fw, h, fh in frames), frames
