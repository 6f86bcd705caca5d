"""What every view shares: the state it draws, the panel frame, Bokeh updates, datashading, gesture wiring.

How the views draw, and why:

- Every plot is a plain Bokeh figure that the view builds and then only refills: no
  HoloViews, whose plots each cost the server a render (and a second one when their
  streams first report) and the browser a re-layout of the document at every update.
- The big scatter plots (latent map, BPT diagrams) show every galaxy as one image,
  aggregated by datashader on the server at the frame's exact pixel size and aggregated
  again after each zoom or pan (:func:`aggregate`), so they stay fluid at a million
  galaxies. datashader (and with it numba) is imported on first render, never at module import.
- Everything that follows the selection or the inspected galaxy (the highlight raster, the
  star marker, the histogram's selected bars, the inspector, the neighbour thumbnails) is a
  Bokeh data source that the view fills directly: a selection costs a few array assignments.
- Few figures: the browser lays out and paints each Bokeh figure on its own, so the
  inspector's maps, bars and class map are glyphs of one figure, and every figure is
  drawn on a 2-D canvas (WebGL only pays off for many glyphs, and where the browser has
  no GPU each WebGL figure is copied back to the page at great cost).
"""
from __future__ import annotations

import numpy as np
import panel as pn
import param
from panel.viewable import Viewer

from dashboard.state import DashboardState

#: Font size of a figure's title.
TITLE_SIZE = "12pt"
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


def change(model, **props) -> None:
    """Set properties of a Bokeh model now, or in a served session on its document's next tick.

    Panel runs some widget callbacks (a table click, a parameter watcher) without holding
    the Bokeh document lock, and Bokeh refuses model changes made then; a next-tick
    callback runs with the lock. Without a session (tests, warm-up) the change is immediate.
    """
    doc = model.document
    if doc is not None and doc.session_context is not None:
        doc.add_next_tick_callback(lambda: model.update(**props))
    else:
        model.update(**props)


def datashader():
    """datashader and its transfer functions; imported on first render (they bring in numba)."""
    import datashader as ds
    import datashader.transfer_functions as tf

    return ds, tf


def datashade(frame, agg, frame_px: tuple[int, int], ranges, max_px: int, color_key=None) -> np.ndarray:
    """The points of ``frame`` (columns x, y, maybe v) aggregated by ``agg`` on a (width, height)
    = ``frame_px`` grid over ``ranges``, isolated points spread up to ``max_px`` pixels.

    Returns (height, width), row 0 at the bottom (Bokeh's image order): float32 with NaN
    where no galaxy falls, for a colour mapper in the browser; or, given ``color_key`` (a
    colour per category of a ``count_cat`` aggregate), the categories mixed into packed RGBA
    (uint32). The browser gets 4 bytes a pixel either way.
    """
    ds, tf = datashader()
    (x0, x1), (y0, y1) = ranges
    canvas = ds.Canvas(plot_width=frame_px[0], plot_height=frame_px[1], x_range=(x0, x1), y_range=(y0, y1))
    counts = canvas.points(frame, "x", "y", agg=agg)
    if color_key is not None:
        return tf.dynspread(tf.shade(counts, color_key=color_key), threshold=0.5, max_px=max_px).data
    spread = tf.dynspread(counts, threshold=0.5, max_px=max_px).data
    # a score of 1e51 (a galaxy a hundred robust sigma out) would be inf in float32 and blank the colour scale
    big = np.finfo(np.float32).max
    image = np.clip(spread, -big, big).astype(np.float32)
    if np.issubdtype(spread.dtype, np.integer):
        image[spread == 0] = np.nan  # a count of 0: no galaxy, drawn transparent
    return image


def image_columns(image: np.ndarray, ranges) -> dict:
    """The columns of an image glyph's data source: ``image`` spanning ``ranges`` exactly."""
    (x0, x1), (y0, y1) = ranges
    return {"image": [image], "x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]}


def scatter_figure(name: str, title: str, frame_px: tuple[int, int], ranges, x_label: str, y_label: str, *,
                   tap: bool = False):
    """A Bokeh figure for a datashaded scatter plot: fixed frame, pan / zoom / box and lasso select
    (and tap), scrolling zooms. The select tools hit no glyph: only their gesture is reported
    (see :func:`on_gestures`), so no selection ever travels back to the server as glyph indices."""
    from bokeh.models import BoxSelectTool, LassoSelectTool, Range1d, TapTool
    from bokeh.plotting import figure

    fig = figure(name=name, title=title, frame_width=frame_px[0], frame_height=frame_px[1],
                 x_range=Range1d(*ranges[0]), y_range=Range1d(*ranges[1]), x_axis_label=x_label,
                 y_axis_label=y_label, tools="pan,wheel_zoom,box_zoom,save,reset", active_scroll="wheel_zoom",
                 min_border=5)
    fig.add_tools(BoxSelectTool(renderers=[]), LassoSelectTool(renderers=[]), *([TapTool(renderers=[])] * tap))
    fig.grid.visible = False
    fig.title.text_font_size = TITLE_SIZE
    return fig


def on_gestures(fig, *, zoom=None, box=None, lasso=None, tap=None, x_span=None) -> None:
    """Call each given callback when its gesture on the Bokeh figure ``fig`` completes.

    ``zoom(x_range, y_range)`` after a zoom, pan or reset, ``box(x0, x1, y0, y1)``,
    ``lasso(xs, ys)`` (three vertices or more), ``tap(x, y)`` and ``x_span(lo, hi)`` (a box
    on a figure that selects x ranges), all in data coordinates.
    """
    from bokeh.events import RangesUpdate, SelectionGeometry, Tap

    def selected(event) -> None:
        g = event.geometry
        if not event.final:
            return
        if g["type"] == "rect" and x_span is not None:
            x_span(*sorted((g["x0"], g["x1"])))
        elif g["type"] == "rect" and box is not None:
            box(*sorted((g["x0"], g["x1"])), *sorted((g["y0"], g["y1"])))
        elif g["type"] == "poly" and lasso is not None and len(g["x"]) >= 3:
            lasso(np.asarray(g["x"], dtype=float), np.asarray(g["y"], dtype=float))

    if zoom is not None:
        fig.on_event(RangesUpdate, lambda e: zoom((e.x0, e.x1), (e.y0, e.y1)))
    if box is not None or lasso is not None or x_span is not None:
        fig.on_event(SelectionGeometry, selected)
    if tap is not None:
        fig.on_event(Tap, lambda e: tap(e.x, e.y))
