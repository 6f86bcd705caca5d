"""Assembles the dashboard page for one session; ``dashboard/main.py`` serves it.

The run is opened and the numba kernels warmed once per server process
(:func:`prepared`, behind ``pn.cache``); every session then has its own
:class:`~dashboard.state.DashboardState` and thin views over the shared data, built ahead
for it while the server was idle (``dashboard/spare.py``).
"""
from __future__ import annotations

import contextlib
import html
import logging
from pathlib import Path

import panel as pn
from bokeh.core.validation import silence
from bokeh.core.validation.warnings import FIXED_SIZING_MODE

from core.errors import BlueberryError
from dashboard import spare
from dashboard.data import AppData, open_app_data
from dashboard.state import DashboardState

TITLE = "Blueberry"

# The figures are sized by frame_width / frame_height (the plotting area, so a tap's pixel
# tolerance is exact) and leave Bokeh's width / height unset, which Bokeh's validator
# reports as W-1005 at every server start although the layout is fully determined.
silence(FIXED_SIZING_MODE, True)


@pn.cache
def prepared(path: str) -> AppData:
    """The run at ``path``, opened and warmed up; cached for the life of the server process.

    A failure is not cached, so a page reload after building the run picks it up.
    """
    data = open_app_data(path)
    warm_up(data)
    spare.build(data)  # the first visitor's views
    return data


def warm_up(data: AppData) -> None:
    """Render every view once and replay each gesture, so numba has compiled all it needs.

    numba compiles on first call and per argument type (a read-only array is a different
    type); datashader compiles per frame schema. Rendering the real views on the run's real
    arrays into a throwaway document, and making a selection of each kind, runs exactly
    the aggregations, spreads and kernels the first visitor would otherwise wait for.
    Categorical colourings other than the first compile when first chosen (~1 s each).
    """
    from bokeh.document import Document

    from dashboard.data import DIAGRAMS
    from dashboard.views import (BPTDiagrams, Header, Inspector, LatentMap, ScoreHistogram, SelectionTable,
                                 SimilarGalaxies, WhyOdd)
    from dashboard.views.latent_map import MAP_FRAME, latent_extent

    state = DashboardState(data)
    for view in (Header, LatentMap, SelectionTable, ScoreHistogram, Inspector, WhyOdd, BPTDiagrams, SimilarGalaxies):
        doc = Document()
        doc.add_root(pn.panel(view(state=state)).get_root(doc))
        doc.validate()  # Bokeh's checks, here once per process rather than on every session (app_hooks.py)
    (x0, x1), (y0, y1) = latent_extent(data)
    state.select_lasso([x0, x1, x1], [y0, y0, y1], "latent")
    state.select_box(x0, (x0 + x1) / 2, y0, (y0 + y1) / 2, "latent")
    for key in DIAGRAMS:
        state.select_lasso([-1.0, 0.0, 0.0], [-1.0, -1.0, 1.0], f"bpt_{key}")
    state.select_score_range(data.median, data.p90)
    state.tap(float(data.x[0]), float(data.y[0]), (x0, x1), (y0, y1), MAP_FRAME)
    if data.categorical_colours:
        state.colour_by = data.categorical_colours[0]
    # The SAMP button looks for a hub as it is built: importing pyvo.samp (~1 s) belongs here, not in a first paint.
    from dashboard.samp import link

    link().hub_problem()


def error_page(path, error: Exception) -> pn.viewable.Viewable:
    """The page shown instead of the app when the run cannot be opened: what is wrong and what to run."""
    return pn.Column(
        pn.pane.HTML(f"<h1>{TITLE}</h1>"),
        pn.pane.Alert(
            f"<h3>No run to show at <code>{html.escape(str(path))}</code></h3>"
            f"<p>{html.escape(str(error))}</p>"
            "<p>Choose another run with <code>python -m train serve --run PATH</code> "
            "or the environment variable <code>BLUEBERRY_RUN</code>, then reload this page.</p>",
            alert_type="warning"),
        margin=20, width=900)


def in_served_session() -> bool:
    """Whether this code runs for a browser's session (not in tests, a notebook or the warm-up)."""
    doc = pn.state.curdoc
    return doc is not None and doc.session_context is not None


def build_app(data: AppData, state: DashboardState | None = None,
              views: dict | None = None) -> tuple[DashboardState, pn.viewable.Viewable]:
    """The state (``state``, or a new one) and the page of one session on ``data``.

    ``views`` (view class -> view, built on ``state``) are views built ahead
    (``dashboard/spare.py``); the others are built here. The page comes whole with the first
    document: the header, the latent map, the table, the histogram and the galaxy inspector.
    The other detail views sit in tabs beside the inspector and are drawn when their tab is
    first opened: the browser lays out and paints every figure and widget on the page
    (docs/ARCHITECTURE.md, "How the page is drawn").
    """
    from dashboard.views import (BPTDiagrams, CompareView, DiscoveryBar, Header, Inspector, LatentMap, SampButton,
                                 ScoreHistogram, SearchBox, SelectionTable, SimilarGalaxies, WhyOdd)

    state = state if state is not None else DashboardState(data)
    views = dict(views or {})

    def view(cls):
        return views.pop(cls) if cls in views else cls(state=state)

    # (tab title, view): the inspector's tab is open first.
    details = (("Galaxy inspector", Inspector), ("Why it is odd", WhyOdd), ("BPT diagrams", BPTDiagrams),
               ("Neighbours", SimilarGalaxies), ("Compare selections", CompareView))
    tabs = pn.Tabs(*((title, pn.Column(sizing_mode="stretch_width")) for title, _ in details),
                   min_height=600, sizing_mode="stretch_width")

    def draw_tab(index: int) -> None:
        if not tabs[index].objects:  # an empty placeholder: the tab has never been drawn
            tabs[index].objects = [view(details[index][1])]

    def opened(event) -> None:
        # Held: the view goes to the browser as one patch. Frozen: Bokeh walks the whole document
        # to recompute its model set once, not once per new model (benchmarks/README.md).
        doc = pn.state.curdoc
        with pn.io.hold(), (doc.models.freeze() if doc is not None else contextlib.nullcontext()):
            draw_tab(event.new)

    for index in range(1 if in_served_session() else len(details)):  # no browser to open a tab (tests, notebooks): all
        draw_tab(index)
    tabs.param.watch(opened, "active")
    # A plain column, not a Panel template: measured ~0.8 s faster to first paint, and no
    # web fonts fetched from a CDN (the app must work offline).
    page = pn.Column(
        Header(state=state),
        pn.Row(SearchBox(state=state), pn.layout.HSpacer(), SampButton(state=state), sizing_mode="stretch_width",
               margin=(0, 10)),
        pn.Row(view(LatentMap),
               pn.Column(view(DiscoveryBar), view(SelectionTable), view(ScoreHistogram), sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        tabs,
        sizing_mode="stretch_width", styles={"background": "#f4f5f8"})
    return state, page


def local_stylesheets() -> None:
    """Make the session's Panel stylesheets come from this server, not from cdn.holoviz.org.

    Panel points a component's stylesheets at its CDN unless the document says where the server
    keeps them, which it says only for a page it renders in the request itself. With
    ``--reuse-sessions`` the page comes from a cache and the session is built when the websocket
    connects, so every stylesheet pointed at the CDN: offline, the table lost its layout and the
    widgets their styles (the symptom of holoviz/panel#7073). Bokeh's ``_template_variables`` is
    where Panel looks for it.
    """
    if in_served_session():
        from panel.io.resources import get_dist_path

        pn.state.curdoc._template_variables.setdefault("dist_url", get_dist_path(cdn=False))


def create_app(path, user: str | None = None) -> pn.viewable.Viewable:
    """The page for the run at ``path``: the dashboard, or a clear error page when the run is missing.
    Labels are attributed to the logged-in user when the server authenticates, else to ``user``."""
    local_stylesheets()
    path = Path(path)
    try:
        data = prepared(str(path))
    except BlueberryError as error:
        return error_page(path, error)
    except Exception as error:  # a bug or a damage nobody foresaw: a page that says so, never a blank one
        logging.getLogger("blueberry.dashboard").exception("cannot open the run at %s", path)
        return error_page(path, f"the run could not be opened ({type(error).__name__}: {error}); "
                                "the server's log has the details")
    state, views = spare.take(data)
    state.discovery.user = pn.state.user or user or state.discovery.user
    _, page = build_app(data, state, views)
    if in_served_session():
        pn.state.onload(lambda: spare.build_later(data))  # the next visitor's views, once this page has painted
    if pn.state.location is not None:
        # ?galaxy=<id> opens the app on that galaxy, and inspecting another updates the URL;
        # ?selection=<name> opens that saved selection, and the URL follows the open one.
        pn.state.location.sync(state, {"galaxy": "galaxy"})
        pn.state.location.sync(state.discovery, {"selection_name": "selection"})
    return page
