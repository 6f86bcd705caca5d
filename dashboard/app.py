"""Assembles the dashboard page for one session; ``dashboard/main.py`` serves it.

The run is opened and the numba kernels warmed once per server process
(:func:`prepared`, behind ``pn.cache``); every session then builds its own
:class:`~dashboard.state.DashboardState` and thin views over the shared data.
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
from dashboard.data import AppData, open_app_data
from dashboard.state import DashboardState

TITLE = "Blueberry"
#: Milliseconds between drawing one batch of deferred views and the next (see build_app).
RENDER_PAUSE_MS = 30

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
        pn.panel(view(state=state)).get_root(Document())
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


def build_app(data: AppData, state: DashboardState | None = None) -> tuple[DashboardState, pn.viewable.Viewable]:
    """The state (``state``, or a new one) and the page of one session on ``data``.

    The header, the latent map and the table render with the page. The other views render
    after it has loaded, in two batches with a pause between them, so each batch is sent as
    soon as it is drawn and the first paint does not wait for all seven plots.
    """
    from dashboard.views import (BPTDiagrams, CompareView, DiscoveryBar, Header, Inspector, LatentMap, SampButton,
                                 ScoreHistogram, SearchBox, SelectionTable, SimilarGalaxies, WhyOdd)

    state = state if state is not None else DashboardState(data)
    # Empty placeholders of the views' sizes, so the page does not jump when they arrive. No
    # loading spinners: their animation restyles the page every frame until the last view
    # is in (measured ~1.5 s of the browser's main thread during a load).
    bar, hist, inspector, why, bpts, similar, compare = (pn.Column(min_height=h, **size) for h, size in (
        (95, {"sizing_mode": "stretch_width"}), (240, {"sizing_mode": "stretch_width"}),
        (560, {"sizing_mode": "stretch_width"}), (300, {"sizing_mode": "stretch_width"}),
        (340, {"width": 1110}), (340, {"width": 480}), (80, {"sizing_mode": "stretch_width"})))
    # Two batches: each patch makes BokehJS lay out and repaint the whole page, so fewer patches
    # paint sooner. The BPT diagrams last: they take the server longest to draw, while the
    # browser lays out the others.
    # The discovery controls come with the first batch: the first paint stays what it was without them.
    later_queue = [((bar, DiscoveryBar), (hist, ScoreHistogram), (inspector, Inspector), (why, WhyOdd)),
                   ((similar, SimilarGalaxies), (bpts, BPTDiagrams), (compare, CompareView))]

    def render_next():
        doc = pn.state.curdoc
        # Held: the batch's views go to the browser as one patch (full page at 10,000 galaxies
        # ~7.7 s -> ~6.8 s, alternated runs on a shared machine; benchmarks/README.md). Frozen:
        # Bokeh walks the whole document to recompute its model set once per batch, not once
        # per filled placeholder (that walk was half of the server's time per batch).
        with pn.io.hold(), (doc.models.freeze() if doc is not None else contextlib.nullcontext()):
            for slot, view in later_queue.pop(0):
                slot.objects = [view(state=state)]
        if later_queue and doc is not None and doc.session_context is not None:
            # A pause, not merely the next tick: the websocket writes this view's patch only
            # when the event loop is free, so the browser lays it out while the server draws
            # the next one (on the next tick, all patches left together after the last view).
            pn.state.add_periodic_callback(render_next, period=RENDER_PAUSE_MS, count=1)
        elif later_queue:
            render_next()

    pn.state.onload(render_next)
    # A plain column, not a Panel template: measured ~0.8 s faster to first paint, and no
    # web fonts fetched from a CDN (the app must work offline).
    page = pn.Column(
        Header(state=state),
        pn.Row(SearchBox(state=state), pn.layout.HSpacer(), SampButton(state=state), sizing_mode="stretch_width",
               margin=(0, 10)),
        pn.Row(LatentMap(state=state),
               pn.Column(bar, SelectionTable(state=state), hist, sizing_mode="stretch_width"),
               sizing_mode="stretch_width"),
        inspector,
        why,
        pn.FlexBox(bpts, similar, gap="10px", sizing_mode="stretch_width"),
        compare,
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
    doc = pn.state.curdoc
    if doc is not None and doc.session_context is not None:
        from panel.io.resources import get_dist_path

        doc._template_variables.setdefault("dist_url", get_dist_path(cdn=False))


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
    state = DashboardState(data)
    state.discovery.user = pn.state.user or user or state.discovery.user
    _, page = build_app(data, state)
    if pn.state.location is not None:
        # ?galaxy=<id> opens the app on that galaxy, and inspecting another updates the URL;
        # ?selection=<name> opens that saved selection, and the URL follows the open one.
        pn.state.location.sync(state, {"galaxy": "galaxy"})
        pn.state.location.sync(state.discovery, {"selection_name": "selection"})
    return page
