"""The dashboard's views: thin ``Viewer`` classes over one :class:`~dashboard.state.DashboardState`.

Each view draws the state and turns its gestures into calls of the state's methods;
none of them keeps selection logic of its own.

How they draw, and why:

- The big scatter plots (latent map, BPT diagrams) are HoloViews plots of every galaxy,
  datashaded (rasterize + dynspread) so they stay fluid at a million galaxies and
  re-aggregate on zoom. datashader (and with it numba) is imported on first render, never
  at module import.
- Everything that follows the selection or the inspected galaxy (the highlight raster, the
  star marker, the histogram's selected bars, the inspector's maps and bars, the
  neighbour thumbnails) is a Bokeh data source that the view fills directly. The glyphs
  are added to the HoloViews figures by ``hooks`` (or HoloViews' own sources are
  captured by them). A selection then costs a few array assignments instead of HoloViews
  redrawing overlays, which also makes Bokeh re-walk the whole document (~0.2-0.4 s each).
"""
from __future__ import annotations

import html

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param
from panel.viewable import Viewer

from core import bpt
from dashboard import export
from dashboard.data import BPT_Y, DIAGRAMS, AppData, evaluation_figures, run_summary
from dashboard.state import DashboardState

hv.extension("bokeh", logo=False)

SELECTED = "#ff7f0e"  # selection highlight, everywhere
FLAGGED = "#d62728"  # flagged outliers
MASKED = "#b0b0b0"  # masked spaxels
#: Frame of the latent map in screen pixels; fixed, so a tap's pixel tolerance is exact.
MAP_FRAME = (560, 470)
BPT_FRAME = (270, 250)
#: Colours of the BPT classes (core.bpt.CLASSES order).
BPT_COLOURS = {"sf": "#1f77b4", "comp": "#2ca02c", "seyfert": "#d62728", "liner": "#ff7f0e",
               "ambiguous": "#9467bd", "invalid": "#d9d9d9"}
CATEGORY_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94")
#: Maps per row of the inspector's mosaics, and the mosaics' width in screen pixels.
MOSAIC_COLUMNS = 5
MOSAIC_WIDTH = 330
GALLERY_WIDTH = 420
PANEL_CSS = """
:host { border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px 10px; background: white; }
"""


def _hv_pane(obj, **params) -> pn.pane.HoloViews:
    # Panel links the axes of every HoloViews plot sharing dimension names; here all plots
    # use x and y (see LATENT_DIMS) yet show different spaces, so the linking must be off.
    return pn.pane.HoloViews(obj, linked_axes=False, **params)


def _datashader():
    """datashader and HoloViews' operations on it; imported on first render (they bring in numba)."""
    import datashader as ds
    import holoviews.operation.datashader as hd

    return ds, hd


def _rasterize(points, aggregator, frame_px: tuple[int, int], ranges):
    """Datashade ``points`` at the plot's fixed frame size over ``ranges``, re-aggregating on zoom and pan.

    HoloViews' default would also follow the plot's size and start from unknown ranges, so
    every plot would aggregate a second time right after it first paints, when the browser
    reports its size and ranges; here both are known up front.
    """
    _, hd = _datashader()
    return hd.rasterize(points, aggregator=aggregator, width=frame_px[0], height=frame_px[1],
                        streams=[hv.streams.RangeXY(x_range=ranges[0], y_range=ranges[1])])


def category_colours(values) -> dict[str, str]:
    """A colour per category; BPT classes get their conventional colours."""
    values = [str(v) for v in values]
    if set(values) <= set(BPT_COLOURS):
        return {v: BPT_COLOURS[v] for v in values}
    return {v: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i, v in enumerate(sorted(values))}


def _padded(lo: float, hi: float, frac: float = 0.05) -> tuple[float, float]:
    pad = (hi - lo) * frac or 1.0
    return float(lo - pad), float(hi + pad)


def latent_extent(data: AppData) -> tuple[tuple[float, float], tuple[float, float]]:
    """Initial x and y ranges of the latent map: the data's extent plus 5%."""
    return data.derived("latent_extent", lambda: (_padded(np.nanmin(data.x), np.nanmax(data.x)),
                                                  _padded(np.nanmin(data.y), np.nanmax(data.y))))


def bpt_extent(data: AppData, key: str) -> tuple[tuple[float, float], tuple[float, float]]:
    """Axis ranges of a BPT diagram: the usual window, widened to the 0.5-99.5 percentiles of the data."""
    def compute():
        usual = {"nii": (-1.8, 0.8), "sii": (-1.4, 0.8), "oi": (-2.6, 0.2)}[key]
        x, y = data.bpt[key]
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            return usual, (-1.3, 1.5)
        qx, qy = np.percentile(x[ok], [0.5, 99.5]), np.percentile(y[ok], [0.5, 99.5])
        return (min(usual[0], qx[0]), max(usual[1], qx[1])), (min(-1.3, qy[0]), max(1.5, qy[1]))

    return data.derived(("bpt_extent", key), compute)


#: Every datashaded frame has columns x, y (and v): datashader compiles per column schema.
LATENT_DIMS = [hv.Dimension("x", label="UMAP 1"), hv.Dimension("y", label="UMAP 2")]


def bpt_dims(key: str) -> list[hv.Dimension]:
    return [hv.Dimension("x", label=DIAGRAMS[key][1]), hv.Dimension("y", label=BPT_Y[1])]


def raster_mask(x: np.ndarray, y: np.ndarray, x_range, y_range, shape: tuple[int, int], spread: int = 1) -> np.ndarray:
    """Which pixels of a (width, height) raster over the ranges hold a point, grown by ``spread`` px.

    Returns (height, width) uint8, row 0 at the bottom (Bokeh's image order). A plain
    index computation: at a million points it costs a few milliseconds.
    """
    w, h = shape
    fx = (x - x_range[0]) * (w / (x_range[1] - x_range[0]))
    fy = (y - y_range[0]) * (h / (y_range[1] - y_range[0]))
    with np.errstate(invalid="ignore"):
        ok = (fx >= 0) & (fx < w) & (fy >= 0) & (fy < h)
    hit = np.zeros(h * w, dtype=bool)
    hit[fy[ok].astype(np.int64) * w + fx[ok].astype(np.int64)] = True
    hit = hit.reshape(h, w)
    out = hit.copy()
    for dy in range(-spread, spread + 1):
        for dx in range(-spread, spread + 1):
            out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                hit[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out.astype(np.uint8)


def _change(model, **props) -> None:
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


class RasterLayer:
    """Some of a plot's galaxies drawn as a one-colour raster over a HoloViews plot.

    :meth:`hook` adds an image glyph to the plot's Bokeh figure; :meth:`show_rows` and
    :meth:`zoom` refill its data source (a uint8 raster at the frame's resolution, so a
    million rows cost what a few do, in the browser too). ``x``/``y`` are the coordinates
    of every galaxy in the plot's space (NaN where it has none).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, frame_px: tuple[int, int], ranges, colour: str,
                 spread: int = 1):
        from bokeh.models import ColumnDataSource

        self.x, self.y, self.frame_px, self.ranges = x, y, frame_px, ranges
        self.colour, self.spread = colour, spread
        self.rows = np.zeros(0, dtype=np.int64)
        self.source = ColumnDataSource({"image": [np.zeros((1, 1), np.uint8)], "x": [0.0], "y": [0.0],
                                        "dw": [1.0], "dh": [1.0]})

    def hook(self, plot, element) -> None:
        from bokeh.models import LinearColorMapper

        # 0 (no galaxy of these rows in the pixel) is below ``low``, hence drawn transparent.
        mapper = LinearColorMapper(palette=[self.colour], low=1, high=1, low_color=(0, 0, 0, 0))
        plot.state.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self.source, color_mapper=mapper)

    def show_rows(self, rows: np.ndarray) -> None:
        self.rows = rows
        self._draw()

    def zoom(self, x_range, y_range) -> None:
        self.ranges = (tuple(x_range), tuple(y_range))
        if len(self.rows):
            self._draw()

    def _draw(self) -> None:
        (x0, x1), (y0, y1) = self.ranges
        if len(self.rows):
            image = raster_mask(self.x[self.rows], self.y[self.rows], (x0, x1), (y0, y1), self.frame_px, self.spread)
        else:
            image = np.zeros((1, 1), np.uint8)
        _change(self.source, data={"image": [image], "x": [x0], "y": [y0], "dw": [x1 - x0], "dh": [y1 - y0]})


class Star:
    """The inspected galaxy as a star over a HoloViews plot (a glyph added by :meth:`hook`)."""

    def __init__(self, x: np.ndarray, y: np.ndarray):
        from bokeh.models import ColumnDataSource

        self.x, self.y = x, y
        self.source = ColumnDataSource({"x": [], "y": []})

    def hook(self, plot, element) -> None:
        plot.state.scatter("x", "y", source=self.source, marker="star", size=20, fill_color="white",
                           line_color="black", line_width=1.5)

    def show(self, row: int | None) -> None:
        ok = row is not None and np.isfinite(self.x[row]) and np.isfinite(self.y[row])
        _change(self.source, data={"x": [float(self.x[row])] if ok else [], "y": [float(self.y[row])] if ok else []})


class Captured:
    """Bokeh models of a HoloViews element plot, captured by a hook, to be refilled later."""

    def __init__(self):
        self.plots: list[dict] = []

    def hook(self, plot, element) -> None:
        self.plots.append(plot.handles)

    def update(self, **columns) -> None:
        """Replace columns of every captured plot's data source."""
        for handles in self.plots:
            _change(handles["source"], data={**handles["source"].data, **columns})

    def colour_range(self, low: float, high: float) -> None:
        for handles in self.plots:
            _change(handles["color_mapper"], low=low, high=high)

    def y_range(self, start: float, end: float) -> None:
        for handles in self.plots:
            _change(handles["y_range"], start=start, end=end)


# ============================================================================ header


class Header(Viewer):
    """The run at a glance: name, size, model, lines, normalisation, score quantiles, evaluation."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def __panel__(self):
        data = self.state.data
        cells = "".join(f'<div class="bb-stat"><div class="bb-label">{html.escape(k)}</div>'
                        f'<div class="bb-value">{html.escape(v)}</div></div>' for k, v in run_summary(data).items())
        ev = evaluation_figures(data.run.evaluation)
        if ev:
            cells += ('<div class="bb-stat bb-eval"><div class="bb-label">Evaluation</div><div class="bb-value">'
                      + "<br>".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in ev.items()) + "</div></div>")
        lines = ", ".join(data.lines)
        return pn.pane.HTML(
            '<div class="bb-banner"><span class="bb-title">Blueberry</span>'
            '<span class="bb-sub">odd galaxies in integral-field surveys</span></div>'
            f'<div class="bb-header" title="Lines: {html.escape(lines)}">{cells}</div>',
            stylesheets=["""
            .bb-banner { background: #3b4cc0; color: white; padding: 8px 16px; margin-bottom: 8px;
                         font-family: sans-serif; }
            .bb-title { font-size: 22px; font-weight: 700; margin-right: 14px; }
            .bb-sub { font-size: 13px; opacity: .85; }
            .bb-header { display: flex; flex-wrap: wrap; gap: 6px 22px; font-family: sans-serif; padding: 0 16px 6px; }
            .bb-label { font-size: 11px; color: #666; text-transform: uppercase; letter-spacing: .04em; }
            .bb-value { font-size: 15px; font-weight: 600; color: #222; }
            .bb-eval .bb-value { font-size: 12px; font-weight: 500; }
            """], sizing_mode="stretch_width", margin=(0, 0, 8, 0), styles={"background": "white"})


# ============================================================================ latent map


class LatentMap(Viewer):
    """The UMAP of every galaxy, datashaded; box, lasso and tap select; flagged galaxies on top."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        self._ranges = latent_extent(data)
        # Flagged galaxies as a raster too: at a million galaxies that is 100,000 points, which
        # as glyphs would cost the browser seconds at every layout change.
        self._flagged = RasterLayer(data.x, data.y, MAP_FRAME, self._ranges, FLAGGED, spread=2)
        self._selected = RasterLayer(data.x, data.y, MAP_FRAME, self._ranges, SELECTED)
        self._star = Star(data.x, data.y)
        self._flagged.show_rows(np.flatnonzero(data.flagged))
        self._selected.show_rows(self.state.selection)
        self._star.show(self.state.row)
        self._pane = _hv_pane(self._plot(self.state.colour_by), margin=0)
        self.state.param.watch(self._recolour, "colour_by")
        self.state.param.watch(lambda e: self._selected.show_rows(e.new), "selection")
        self.state.param.watch(lambda e: self._star.show(self.state.row), "galaxy")

    def _recolour(self, event) -> None:
        # The base layer changes type (a mean image vs categorical counts), so the plot is
        # rebuilt; it reopens at the current zoom, and the hook re-adds the highlight.
        self._pane.object = self._plot(event.new)

    def _base(self, colour_by: str):
        ds, hd = _datashader()
        data = self.state.data
        frame = data.colour_frame(colour_by)
        pts = hv.Points(frame, kdims=LATENT_DIMS, vdims=[hv.Dimension("v", label=colour_by)])
        if colour_by in data.categorical_colours:
            key = category_colours(frame["v"].cat.categories)
            base = hd.dynspread(_rasterize(pts, ds.count_cat("v"), MAP_FRAME, self._ranges), max_px=3, threshold=0.5).opts(
                cmap=key)
            legend = hv.NdOverlay({k: hv.Points([(np.nan, np.nan)], kdims=LATENT_DIMS, label=k).opts(color=c, size=8)
                                   for k, c in key.items()}, kdims=[colour_by])
            return base, legend
        base = hd.dynspread(_rasterize(pts, ds.mean("v"), MAP_FRAME, self._ranges), max_px=3, threshold=0.5)
        base = base.opts(cmap="viridis", cnorm="eq_hist", colorbar=True, clabel=colour_by, cformatter="%.4g",
                         colorbar_opts={"title_text_font_size": "10px"})
        return base, None

    def _plot(self, colour_by: str):
        base, legend = self._base(colour_by)
        self._attach_streams(base)
        base = base.opts(tools=["box_select", "lasso_select", "tap"], active_tools=["wheel_zoom"])
        # The plot is the image alone (numeric colouring) or the image and a legend (categorical).
        layers = base if legend is None else (base * legend).opts(legend_position="top_left")
        return layers.opts(
            frame_width=MAP_FRAME[0], frame_height=MAP_FRAME[1], xlim=self._ranges[0], ylim=self._ranges[1],
            title=f"Latent space (UMAP), coloured by {colour_by}",
            hooks=[self._flagged.hook, self._selected.hook, self._star.hook], backend_opts={"plot.name": "latent-map"})

    def _attach_streams(self, base) -> None:
        state = self.state
        ranges = hv.streams.RangeXY(source=base)
        box = hv.streams.BoundsXY(source=base)
        lasso = hv.streams.Lasso(source=base)
        tap = hv.streams.Tap(source=base)

        def on_range(x_range, y_range):
            if x_range is not None and y_range is not None:
                self._ranges = (tuple(x_range), tuple(y_range))
                self._flagged.zoom(x_range, y_range)
                self._selected.zoom(x_range, y_range)

        def on_box(bounds):
            if bounds is not None:
                state.select_box(bounds[0], bounds[2], bounds[1], bounds[3], "latent")

        def on_lasso(geometry):
            if geometry is not None and len(geometry) >= 3:
                state.select_lasso(geometry[:, 0], geometry[:, 1], "latent")

        def on_tap(x, y):
            if x is not None and y is not None:
                state.tap(x, y, self._ranges[0], self._ranges[1], MAP_FRAME)

        ranges.add_subscriber(on_range)
        box.add_subscriber(on_box)
        lasso.add_subscriber(on_lasso)
        tap.add_subscriber(on_tap)
        self._streams = (ranges, box, lasso, tap)

    def __panel__(self):
        colour = pn.widgets.Select.from_param(self.state.param.colour_by, label="Colour by", width=220)
        clear = pn.widgets.Button(label="Clear selection", width=130, align="end")
        clear.on_click(lambda _: self.state.clear_selection())
        hint = pn.pane.HTML('<span style="color:#666;font-size:12px">Box, lasso or tap to select '
                            '(toolbar, right); wheel to zoom. Red: flagged; orange: selected; ★ inspected.</span>',
                            align="end")
        return pn.Column(pn.Row(colour, clear, hint), self._pane, stylesheets=[PANEL_CSS])


# ============================================================================ selection table + export


class ExportButton(Viewer):
    """"Export CSV": the selected galaxies with every catalogue column, over HTTP when the route is served."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def __init__(self, **params):
        super().__init__(**params)
        self._note = pn.pane.HTML("", styles={"color": "#a00", "font-size": "12px"}, margin=(0, 5))
        if export.route_served():
            token = export.register(self.state)
            pn.state.on_session_destroyed(lambda _ctx: export.unregister(token))
            self._widget = pn.widgets.Button(label="Export CSV", color="primary", width=120)
            url = export.export_url(token, pn.state.base_url or "/")
            # The browser fetches the file itself: nothing goes through the websocket.
            self._widget.js_on_click(code=f"window.location.assign({url!r});")
        else:
            self._widget = pn.widgets.FileDownload(label="Export CSV", color="primary", width=120,
                                                   callback=self._csv_for_websocket, filename="selection.csv")
        self.state.param.watch(self._update, "selection")
        self._update()

    def _csv_for_websocket(self):
        import io

        self._widget.filename = export.export_filename(self.state.data.name)
        return io.StringIO(export.to_csv(self.state.export_frame()))

    def _update(self, *_):
        n = len(self.state.selection)
        too_big = not export.route_served() and n >= export.WEBSOCKET_MAX_ROWS
        self._widget.disabled = n == 0 or too_big
        self._note.object = ("Exports of 100,000+ rows need the HTTP route: start the server with "
                             "<code>--plugins dashboard.export</code>." if too_big else "")

    def __panel__(self):
        return pn.Row(self._widget, self._note, margin=0)


class SelectionTable(Viewer):
    """The selected galaxies, most anomalous first (remote pagination); a row click inspects it."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def __init__(self, **params):
        super().__init__(**params)
        self._count = pn.pane.HTML("", css_classes=["bb-count"], styles={"font-size": "16px", "font-weight": "600"},
                                   margin=(5, 10))
        self._table = pn.widgets.Tabulator(
            self.state.table_frame(), pagination="remote", page_size=12, disabled=True, show_index=False,
            sortable=False, selectable=False, sizing_mode="stretch_width", height=400,
            titles={"anomaly_score": "score", "anomaly_pct": "pct", "bpt_class": "BPT", "top_line": "top error line"},
            formatters={"anomaly_score": {"type": "money", "precision": 0, "thousand": ","},
                        "anomaly_pct": {"type": "money", "precision": 1},
                        "z": {"type": "money", "precision": 4}},
            widths={"galaxy_id": 110}, layout="fit_data_stretch")
        self._table.on_click(self._clicked)
        self._export = ExportButton(state=self.state)
        self.state.param.watch(self._update, "selection")
        self._update()

    def _update(self, *_):
        self._count.object = html.escape(self.state.count_text)
        self._table.value = self.state.table_frame()

    def _clicked(self, event) -> None:
        self.state.inspect(int(self._table.value.index[event.row]))

    def __panel__(self):
        return pn.Column(pn.Row(self._count, pn.layout.HSpacer(), self._export), self._table,
                         sizing_mode="stretch_width", stylesheets=[PANEL_CSS])


# ============================================================================ inspector


class Mosaic:
    """A grid of equal square maps drawn as one image (one glyph, not one plot per map).

    Panel ``i`` sits in row ``i // ncols`` (top first), column ``i % ncols``, with a label strip
    above it. Gaps and strips are NaN in the image and covered by white rectangles, so they
    read as background while NaN spaxels inside a panel (masked) show in the NaN colour.
    """

    def __init__(self, n: int, size: int, ncols: int, label_px: float = 14.0, px_per_spaxel: float = 2.0):
        self.n, self.s, self.ncols = n, size, max(1, min(ncols, n))
        self.nrows = -(-n // self.ncols)
        self.gap = max(1, size // 16)
        self.strip = max(2, int(np.ceil(label_px / px_per_spaxel)))
        self.width = self.ncols * (size + self.gap)
        self.height = self.nrows * (size + self.strip)

    def origin(self, i: int) -> tuple[int, int]:
        """(column, row) in the image array (row 0 at the top) of panel i's top-left spaxel."""
        r, c = divmod(i, self.ncols)
        return c * (self.s + self.gap), r * (self.s + self.strip) + self.strip

    def grid(self, maps: np.ndarray) -> np.ndarray:
        """(n, S, S) maps (row 0 of each the southern edge, as in the DAP files) as one array,
        row 0 at the top (HoloViews' order)."""
        out = np.full((self.height, self.width), np.nan, np.float32)
        for i in range(min(self.n, len(maps))):
            x0, y0 = self.origin(i)
            out[y0:y0 + self.s, x0:x0 + self.s] = np.flipud(maps[i])
        return out

    def image(self, maps: np.ndarray, vdim: str, value_range) -> hv.Image:
        img = hv.Image(self.grid(maps), bounds=(0, 0, self.width, self.height), kdims=["x", "y"], vdims=[vdim])
        return img.redim.range(**{vdim: value_range})

    def source_image(self, maps: np.ndarray) -> np.ndarray:
        """The same grid in Bokeh's order (row 0 at the bottom), to refill a captured data source."""
        return np.ascontiguousarray(self.grid(maps)[::-1])

    def decorations(self, labels) -> hv.Overlay:
        """White gaps and label strips, and the labels (one per panel) centred in the strips."""
        rects = [(x0 + self.s, 0, x0 + self.s + self.gap, self.height)
                 for x0 in range(0, self.width, self.s + self.gap)]
        rects += [(0, self.height - r * (self.s + self.strip) - self.strip, self.width,
                   self.height - r * (self.s + self.strip)) for r in range(self.nrows)]
        for i in range(self.n, self.nrows * self.ncols):  # empty slots of the last row
            x0, y0 = self.origin(i)
            rects.append((x0, self.height - y0 - self.s, x0 + self.s, self.height - y0))
        return (hv.Rectangles(rects, kdims=["x", "y", "x1", "y1"]).opts(color="white", line_color="white")
                * self.labels(labels))

    def labels(self, labels) -> hv.Labels:
        text = []
        for i, label in enumerate(labels):
            x0, y0 = self.origin(i)
            text.append((x0 + self.s / 2, self.height - y0 + self.strip / 2, label))
        return hv.Labels(text, kdims=["x", "y"], vdims=["label"]).opts(text_font_size="8pt", text_color="#333",
                                                                      text_baseline="middle")

    def panel_at(self, x: float, y: float) -> int | None:
        """The panel under data point (x, y), or None for a gap or strip."""
        c, col_off = divmod(x, self.s + self.gap)
        r, row_off = divmod(self.height - y, self.s + self.strip)
        i = int(r) * self.ncols + int(c)
        if 0 <= x < self.width and 0 <= y <= self.height and col_off < self.s and row_off >= self.strip \
                and i < self.n:
            return i
        return None


def _symmetric_limit(m: np.ndarray) -> float:
    """Colour limit of a residual map: the 99th percentile of |residual| (a floor keeps it > 0)."""
    finite = np.abs(m[np.isfinite(m)])
    return max(float(np.percentile(finite, 99)) if finite.size else 1.0, 1e-3)


class Inspector(Viewer):
    """One galaxy: its line maps (data, model, residual), error shares, BPT class map and metadata."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        self._mosaic = Mosaic(len(data.lines), data.run.dataset.size, MOSAIC_COLUMNS,
                              px_per_spaxel=MOSAIC_WIDTH / (MOSAIC_COLUMNS * (data.run.dataset.size + 1)))
        self._captured = {kind: Captured() for kind in ("data", "model", "residual", "bars", "bpt_map")}
        self._err_cols = [f"err_{ln}" for ln in data.lines if f"err_{ln}" in data.catalogue.columns]
        self.state.param.watch(self._update, "galaxy")

    def _maps(self) -> dict:
        data, row = self.state.data, self.state.row
        if row is not None:
            return data.galaxy_maps(row)
        s = data.run.dataset.size
        nan = np.full((len(data.lines), s, s), np.nan, np.float32)
        return {"data": nan, "model": nan, "residual": nan, "scale": np.ones(len(data.lines)),
                "bpt_map": np.full((s, s), bpt.CLASS_CODES["invalid"], np.int8)}

    def _shares(self) -> tuple[np.ndarray, list[str]]:
        row = self.state.row
        if row is None:
            return np.zeros(len(self._err_cols)), ["#4c72b0"] * len(self._err_cols)
        shares = self.state.data.catalogue[self._err_cols].iloc[row].to_numpy(float)
        top = int(np.argmax(shares))
        return shares, [FLAGGED if i == top else "#4c72b0" for i in range(len(shares))]

    def _update(self, *_) -> None:
        maps = self._maps()
        for kind in ("data", "model", "residual"):
            self._captured[kind].update(image=[self._mosaic.source_image(maps[kind])])
        r = _symmetric_limit(maps["residual"])
        self._captured["residual"].colour_range(-r, r)
        shares, colours = self._shares()
        self._captured["bars"].update(share=shares, color=colours)
        self._captured["bars"].y_range(0.0, float(shares.max()) * 1.1 or 1.0)
        self._captured["bpt_map"].update(image=[np.asarray(maps["bpt_map"], dtype=np.float32)])

    def _mosaic_plot(self, kind: str, maps: dict):
        data, mosaic = self.state.data, self._mosaic
        if kind == "residual":
            r = _symmetric_limit(maps[kind])
            img = mosaic.image(maps[kind], "residual / peak", (-r, r))
        else:
            img = mosaic.image(maps[kind], "flux / peak", (0.0, 1.0))
        title = {"data": "Data", "model": "Reconstruction", "residual": "Residual (data − model)"}[kind]
        return (img.opts(cmap="RdBu_r" if kind == "residual" else "viridis", clipping_colors={"NaN": MASKED},
                         colorbar=kind != "data", tools=["hover"], hooks=[self._captured[kind].hook])
                * mosaic.decorations(data.lines)).opts(
            title=title, frame_width=MOSAIC_WIDTH, frame_height=int(MOSAIC_WIDTH * mosaic.height / mosaic.width),
            xaxis=None, yaxis=None, toolbar=None)

    def _bars(self):
        shares, colours = self._shares()
        frame = pd.DataFrame({"line": [c[4:] for c in self._err_cols], "share": shares, "color": colours})
        return hv.Bars(frame, kdims=["line"], vdims=["share", "color"]).opts(
            color="color", xrotation=70, frame_width=330, frame_height=180, title="Share of the error per line",
            ylabel="share", tools=["hover"], toolbar=None, fontsize={"xticks": "7pt"},
            ylim=(0.0, float(shares.max()) * 1.1 or 1.0),
            hooks=[self._captured["bars"].hook])

    def _bpt_map(self, maps: dict):
        from bokeh.models import FixedTicker

        s = self.state.data.run.dataset.size
        codes = list(range(len(bpt.CLASSES)))
        img = hv.Image(np.flipud(maps["bpt_map"]).astype(np.float32), bounds=(0, 0, s, s), vdims=["class"])
        return img.redim.range(**{"class": (-0.5, len(codes) - 0.5)}).opts(
            cmap=[BPT_COLOURS[c] for c in bpt.CLASSES], colorbar=True, frame_width=200, frame_height=200,
            xaxis=None, yaxis=None, toolbar=None, title="Spatially resolved BPT class",
            colorbar_opts={"ticker": FixedTicker(ticks=codes), "major_label_overrides": dict(enumerate(bpt.CLASSES))},
            hooks=[self._captured["bpt_map"].hook])

    def _meta(self, galaxy: str) -> str:
        row = self.state.row
        if not galaxy:
            return "<h3>No galaxy inspected</h3><p>Tap a galaxy on the latent map or click a table row.</p>"
        if row is None:
            return (f'<h3 class="bb-galaxy-id">{html.escape(galaxy)}</h3>'
                    f"<p>No galaxy {html.escape(galaxy)!r} in this run.</p>")
        r = self.state.data.catalogue.iloc[row]
        items = [("RA, Dec", f"{r['ra']:.5f}°, {r['dec']:+.5f}°"), ("z", f"{r['z']:.4f}"),
                 ("Anomaly score", f"{r['anomaly_score']:,.0f}"), ("Percentile", f"{r['anomaly_pct']:.1f}"),
                 ("Flagged", "yes" if bool(r["flagged"]) else "no"), ("BPT class", str(r["bpt_class"])),
                 ("Top error line", str(r.get("top_line", "")))]
        if "truth_class" in r.index:
            items.append(("Truth class", str(r["truth_class"])))
        rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in items)
        return (f'<h3 class="bb-galaxy-id" style="margin:4px 0">{html.escape(galaxy)}</h3>'
                f'<table class="bb-meta" style="font-size:13px;text-align:left">{rows}</table>')

    def __panel__(self):
        maps = self._maps()
        meta = pn.pane.HTML(pn.bind(self._meta, self.state.param.galaxy), width=240, margin=(0, 10))
        note = pn.pane.HTML(f'<span style="color:#666;font-size:12px">Each line scaled to its own peak '
                            f'(99th percentile of |data|); <span style="background:{MASKED}">&nbsp;grey&nbsp;</span> '
                            'spaxels are masked.</span>')
        mosaics = pn.Row(*(_hv_pane(self._mosaic_plot(k, maps), margin=(0, 5)) for k in ("data", "model", "residual")))
        extras = pn.Row(_hv_pane(self._bars(), margin=(0, 5)), _hv_pane(self._bpt_map(maps), margin=(0, 5)))
        return pn.Column(pn.pane.HTML("<b>Galaxy inspector</b>", margin=(0, 10)),
                         pn.Row(meta, pn.Column(mosaics, note, extras)), stylesheets=[PANEL_CSS],
                         sizing_mode="stretch_width")


# ============================================================================ BPT diagrams


class BPTDiagrams(Viewer):
    """[NII], [SII] and [OI] BPT diagrams: every galaxy datashaded, the selection and the inspected
    galaxy on top, the demarcation lines of core.bpt; box or lasso on a diagram selects everywhere."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    LINES = {
        "nii": ((bpt.kauffmann03_nii, "Kauffmann+03", "dashed"), (bpt.kewley01_nii, "Kewley+01", "solid"),
                (bpt.schawinski07_nii, "Schawinski+07", "dotted")),
        "sii": ((bpt.kewley01_sii, "Kewley+01", "solid"), (bpt.kewley06_sii, "Kewley+06", "dotted")),
        "oi": ((bpt.kewley01_oi, "Kewley+01", "solid"), (bpt.kewley06_oi, "Kewley+06", "dotted")),
    }

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        self._selected = {key: RasterLayer(*data.bpt[key], BPT_FRAME, bpt_extent(data, key), SELECTED)
                          for key in DIAGRAMS}
        self._stars = {key: Star(*data.bpt[key]) for key in DIAGRAMS}
        self._streams = []
        self.state.param.watch(self._show_rows, "selection")
        self.state.param.watch(self._show_star, "galaxy")
        self._show_rows()
        self._show_star()

    def _show_rows(self, *_) -> None:
        for layer in self._selected.values():
            layer.show_rows(self.state.selection)

    def _show_star(self, *_) -> None:
        for star in self._stars.values():
            star.show(self.state.row)

    def _diagram(self, key: str):
        ds, hd = _datashader()
        data, state = self.state.data, self.state
        dims = bpt_dims(key)
        (x0, x1), (y0, y1) = bpt_extent(data, key)
        pts = hv.Points(data.frames[key], kdims=dims)
        base = hd.dynspread(_rasterize(pts, ds.count(), BPT_FRAME, ((x0, x1), (y0, y1))), max_px=2, threshold=0.5).opts(
            cmap="Greys", cnorm="eq_hist", tools=["box_select", "lasso_select"], active_tools=["wheel_zoom"])
        curves = []
        for fn, label, dash in self.LINES[key]:
            xs = np.linspace(x0, x1, 300)
            ys = np.asarray(fn(xs), dtype=float)
            if dash == "dotted":  # the Seyfert/LINER lines only mean something above Kewley+01
                ke01 = np.asarray(self.LINES[key][1 if key == "nii" else 0][0](xs), dtype=float)
                ys = np.where(np.isfinite(ke01) & (ys < ke01), np.nan, ys)
            curves.append(hv.Curve((xs, ys), dims[0], dims[1], label=label).opts(
                color="black", line_dash=dash, line_width=1.3))
        selected = self._selected[key]
        ranges = hv.streams.RangeXY(source=base)
        box = hv.streams.BoundsXY(source=base)
        lasso = hv.streams.Lasso(source=base)
        ranges.add_subscriber(lambda x_range, y_range: x_range is not None and y_range is not None
                              and selected.zoom(x_range, y_range))
        box.add_subscriber(lambda bounds: bounds is not None and state.select_box(
            bounds[0], bounds[2], bounds[1], bounds[3], f"bpt_{key}"))
        lasso.add_subscriber(lambda geometry: geometry is not None and len(geometry) >= 3 and state.select_lasso(
            geometry[:, 0], geometry[:, 1], f"bpt_{key}"))
        self._streams += [ranges, box, lasso]
        return (base * hv.Overlay(curves)).opts(hv.opts.Overlay(
            frame_width=BPT_FRAME[0], frame_height=BPT_FRAME[1], xlim=(x0, x1), ylim=(y0, y1),
            legend_position="bottom_left", title=f"BPT [{key.upper()}]",
            hooks=[selected.hook, self._stars[key].hook],
            backend_opts={"plot.name": f"bpt-{key}"}))

    def __panel__(self):
        return pn.Column(pn.pane.HTML("<b>BPT diagrams</b> <span style='color:#666;font-size:12px'>grey: every "
                                      "galaxy (central aperture); orange: selected; ★ inspected</span>", margin=(0, 10)),
                         pn.Row(*(_hv_pane(self._diagram(k), margin=(0, 5)) for k in DIAGRAMS)),
                         stylesheets=[PANEL_CSS], sizing_mode="stretch_width")


# ============================================================================ similar galaxies


class SimilarGalaxies(Viewer):
    """The inspected galaxy's nearest neighbours in latent space: Hα maps, ids and scores."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        self._k = data.run.neighbours.shape[1]
        self._line = data.lines.index("Ha-6564") if "Ha-6564" in data.lines else 0
        ncols = min(self._k, 4)
        s = data.run.dataset.size
        self._mosaic = Mosaic(self._k, s, ncols, px_per_spaxel=GALLERY_WIDTH / (ncols * (s + 1)))
        self._images, self._captions = Captured(), Captured()
        self.state.param.watch(self._update, "galaxy")

    def _thumbnails(self) -> tuple[np.ndarray, list[str]]:
        data, ds_ = self.state.data, self.state.data.run.dataset
        maps = np.full((self._k, ds_.size, ds_.size), np.nan, np.float32)
        rows = self.state.neighbours[:self._k]
        for j, row in enumerate(rows):
            m = np.where(ds_.mask[row, self._line], np.nan, ds_.flux[row, self._line])
            peak = np.nanpercentile(np.abs(m), 99) if np.isfinite(m).any() else 1.0
            maps[j] = m / (peak or 1.0)
        cat = data.catalogue.iloc[rows]
        labels = [f"{g} · {s:,.0f}" for g, s in zip(cat["galaxy_id"], cat["anomaly_score"])]
        return maps, labels + [""] * (self._k - len(labels))

    def _update(self, *_) -> None:
        maps, labels = self._thumbnails()
        self._images.update(image=[self._mosaic.source_image(maps)])
        self._captions.update(label=labels)

    def _gallery(self):
        state, mosaic = self.state, self._mosaic
        line = self.state.data.lines[self._line].split("-")[0]
        maps, labels = self._thumbnails()
        images = mosaic.image(maps, f"{line} / peak", (0.0, 1.0)).opts(
            cmap="viridis", clipping_colors={"NaN": MASKED}, tools=["tap", "hover"], hooks=[self._images.hook])
        # The Tap stream listens on the image element itself (on the overlay it is not wired up).
        tap = hv.streams.Tap(source=images)

        def on_tap(x, y):
            # Tapping a thumbnail inspects that galaxy.
            j = None if x is None or y is None else mosaic.panel_at(x, y)
            rows = state.neighbours
            if j is not None and j < len(rows):
                state.inspect(int(rows[j]))

        tap.add_subscriber(on_tap)
        self._tap = tap
        decorations = mosaic.decorations([]) * mosaic.labels(labels).opts(hooks=[self._captions.hook])
        return (images * decorations).opts(hv.opts.Overlay(
            frame_width=GALLERY_WIDTH, frame_height=int(GALLERY_WIDTH * mosaic.height / mosaic.width),
            xaxis=None, yaxis=None, toolbar=None, title=f"{line} maps (id · score); tap one to inspect it",
            backend_opts={"plot.name": "neighbours"}))

    def __panel__(self):
        button = pn.widgets.Button(label="Select these neighbours", width=200)
        button.on_click(lambda _: self.state.select_neighbours())
        return pn.Column(pn.Row(pn.pane.HTML("<b>Similar galaxies</b> <span style='color:#666;font-size:12px'>"
                                             "nearest in latent space</span>", margin=(8, 10)), button),
                         _hv_pane(self._gallery(), margin=(0, 5)), stylesheets=[PANEL_CSS])


# ============================================================================ score histogram


class ScoreHistogram(Viewer):
    """Anomaly scores (log bins) with the 90th-percentile line; an x-range drag selects those galaxies."""

    state = param.ClassSelector(class_=DashboardState, doc="The session state.")

    def __init__(self, **params):
        from bokeh.models import ColumnDataSource

        super().__init__(**params)
        score = self.state.data.score
        score = score[np.isfinite(score) & (score > 0)]
        lo, hi = (score.min(), score.max()) if score.size else (1.0, 10.0)
        self._edges = np.logspace(np.log10(lo) - 1e-6, np.log10(hi) + 1e-6, 61)
        self._chosen = ColumnDataSource({"left": self._edges[:-1], "right": self._edges[1:],
                                         "top": np.zeros(len(self._edges) - 1)})
        self.state.param.watch(self._update, "selection")
        self._update()

    def _update(self, *_) -> None:
        counts = np.histogram(self.state.data.score[self.state.selection], self._edges)[0]
        _change(self._chosen, data={**self._chosen.data, "top": counts})

    def _hook(self, plot, element) -> None:
        plot.state.quad(left="left", right="right", top="top", bottom=0, source=self._chosen, fill_color=SELECTED,
                        line_color=SELECTED, fill_alpha=0.9)

    def _plot(self):
        data, state = self.state.data, self.state
        score = data.score[np.isfinite(data.score) & (data.score > 0)]
        everyone = hv.Histogram((self._edges, np.histogram(score, self._edges)[0]), kdims=["anomaly_score"],
                                vdims=["galaxies"]).opts(
            color="#c9c9c9", line_color="#9a9a9a", tools=["xbox_select"], active_tools=["xbox_select"])
        box = hv.streams.BoundsX(source=everyone)
        box.add_subscriber(lambda boundsx: boundsx is not None and state.select_score_range(*boundsx))
        self._box = box
        p90 = hv.VLine(data.p90).opts(color=FLAGGED, line_dash="dashed", line_width=1.5)
        label = hv.Text(data.p90, 0, f" 90th pct {data.p90:,.0f}", halign="left", valign="bottom").opts(
            color=FLAGGED, text_font_size="9pt")
        return (everyone * p90 * label).opts(hv.opts.Overlay(
            logx=True, frame_width=420, frame_height=180, title="Anomaly score (drag to select a range)",
            xlabel="anomaly score", ylabel="galaxies", hooks=[self._hook], backend_opts={"plot.name": "score-histogram"}))

    def __panel__(self):
        return pn.Column(_hv_pane(self._plot(), margin=(0, 5)), stylesheets=[PANEL_CSS])


# ============================================================================ warm-up


def warm_up(data: AppData) -> None:
    """Render every view once and replay each gesture, so numba has compiled all it needs.

    numba compiles on first call and per argument type (a read-only array is a different
    type); datashader compiles per frame schema. Rendering the real views on the run's real
    arrays into a throwaway document, and making a selection of each kind, runs exactly
    the aggregations, spreads and kernels the first visitor would otherwise wait for.
    Categorical colourings other than the first compile when first chosen (~1 s each).
    """
    from bokeh.document import Document

    state = DashboardState(data)
    views = [view(state=state) for view in (Header, LatentMap, SelectionTable, ScoreHistogram, Inspector,
                                            BPTDiagrams, SimilarGalaxies)]
    for view in views:
        pn.panel(view).get_root(Document())
    (x0, x1), (y0, y1) = latent_extent(data)
    state.select_lasso([x0, x1, x1], [y0, y0, y1], "latent")
    state.select_box(x0, (x0 + x1) / 2, y0, (y0 + y1) / 2, "latent")
    for key in DIAGRAMS:
        state.select_lasso([-1.0, 0.0, 0.0], [-1.0, -1.0, 1.0], f"bpt_{key}")
    state.select_score_range(data.median, data.p90)
    state.tap(float(data.x[0]), float(data.y[0]), (x0, x1), (y0, y1), MAP_FRAME)
    if data.categorical_colours:
        state.colour_by = data.categorical_colours[0]
