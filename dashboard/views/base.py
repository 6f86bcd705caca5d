"""What every view shares: the state it draws, the panel frame, Bokeh updates, datashading, gesture wiring.

How the views draw, and why:

- The big scatter plots (latent map, BPT diagrams) are HoloViews plots of every galaxy,
  datashaded (rasterize + dynspread) so they stay fluid at a million galaxies and
  re-aggregate on zoom. datashader (and with it numba) is imported on first render, never
  at module import.
- Everything that follows the selection or the inspected galaxy (the highlight raster, the
  star marker, the histogram's selected bars, the inspector, the neighbour thumbnails) is a
  Bokeh data source that the view fills directly; the glyphs are added to HoloViews figures
  by ``hooks``, or drawn in plain Bokeh figures (the inspector, the gallery). A selection
  then costs a few array assignments instead of HoloViews redrawing overlays, which also
  makes Bokeh re-walk the whole document (~0.2-0.4 s each).
- Few figures: the browser lays out and paints each Bokeh figure on its own, so the
  inspector's maps, bars and class map are glyphs of one figure, and every figure is
  drawn on a 2-D canvas (WebGL only pays off for many glyphs, and where the browser has
  no GPU each WebGL figure is copied back to the page at great cost).
"""
from __future__ import annotations

import holoviews as hv
import panel as pn
import param
from panel.viewable import Viewer

from dashboard.state import DashboardState

hv.extension("bokeh", logo=False)
hv.renderer("bokeh").webgl = False

PANEL_CSS = """
:host { border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px 10px; background: white; }
"""


class StateView(Viewer):
    """A view of one session's :class:`~dashboard.state.DashboardState`; it draws the state and
    turns its gestures into calls of the state's methods, keeping no selection logic of its own."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def watch(self, callback, *names: str) -> None:
        """Call ``callback()`` whenever one of the state's parameters ``names`` changes."""
        self.state.param.watch(lambda *_: callback(), list(names))


def section_title(title: str, note: str = "", **params) -> pn.pane.HTML:
    """A view's bold title, with a grey note after it."""
    note = f" <span style='color:#666;font-size:12px'>{note}</span>" if note else ""
    return pn.pane.HTML(f"<b>{title}</b>{note}", **{"margin": (0, 10), **params})


def hv_pane(obj, **params) -> pn.pane.HoloViews:
    # Panel links the axes of every HoloViews plot sharing dimension names; here all plots
    # use x and y (see latent_map.LATENT_DIMS) yet show different spaces, so the linking must be off.
    return pn.pane.HoloViews(obj, linked_axes=False, **params)


def change(model, **props) -> None:
    """Set properties of a Bokeh model now, or in a served session on its document's next tick.

    HoloViews runs stream subscribers (a box select, a tap) without holding the Bokeh
    document lock, and Bokeh refuses model changes made then; a next-tick callback runs
    with the lock. Without a session (tests, warm-up) the change is immediate.
    """
    doc = model.document
    if doc is not None and doc.session_context is not None:
        doc.add_next_tick_callback(lambda: model.update(**props))
    else:
        model.update(**props)


def datashader():
    """datashader and HoloViews' operations on it; imported on first render (they bring in numba)."""
    import datashader as ds
    import holoviews.operation.datashader as hd

    return ds, hd


def rasterize(points, aggregator, frame_px: tuple[int, int], ranges, max_px: int):
    """Datashade ``points`` at the plot's fixed frame size over ``ranges``, re-aggregating on zoom and
    pan, with isolated points spread up to ``max_px`` pixels.

    HoloViews' default would also follow the plot's size and start from unknown ranges, so
    every plot would aggregate a second time right after it first paints, when the browser
    reports its size and ranges; here both are known up front.
    """
    _, hd = datashader()
    image = hd.rasterize(points, aggregator=aggregator, width=frame_px[0], height=frame_px[1],
                         streams=[hv.streams.RangeXY(x_range=ranges[0], y_range=ranges[1])])
    return hd.dynspread(image, max_px=max_px, threshold=0.5)


def on_gestures(element, *, zoom=None, box=None, lasso=None, tap=None, x_span=None) -> list:
    """Call each given callback when its gesture on ``element`` (a HoloViews element) completes.

    ``zoom(x_range, y_range)`` after a zoom or pan, ``box(x0, x1, y0, y1)``, ``lasso(xs, ys)``
    (three vertices or more), ``tap(x, y)`` and ``x_span(lo, hi)`` (an x-range box), all in
    data coordinates. The streams' empty values (when created or reset) are not passed on.
    Returns the streams, which the view must keep.
    """
    wiring = (
        (zoom, hv.streams.RangeXY, lambda f: lambda x_range, y_range: (
            x_range is not None and y_range is not None and f(x_range, y_range))),
        (box, hv.streams.BoundsXY, lambda f: lambda bounds: (
            bounds is not None and f(bounds[0], bounds[2], bounds[1], bounds[3]))),
        (lasso, hv.streams.Lasso, lambda f: lambda geometry: (
            geometry is not None and len(geometry) >= 3 and f(geometry[:, 0], geometry[:, 1]))),
        (tap, hv.streams.Tap, lambda f: lambda x, y: x is not None and y is not None and f(x, y)),
        (x_span, hv.streams.BoundsX, lambda f: lambda boundsx: boundsx is not None and f(*boundsx)),
    )
    streams = []
    for callback, kind, subscriber in wiring:
        if callback is not None:
            stream = kind(source=element)
            stream.add_subscriber(subscriber(callback))
            streams.append(stream)
    return streams
