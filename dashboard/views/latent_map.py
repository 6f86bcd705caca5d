"""The latent map: every galaxy's UMAP position, datashaded, coloured by a catalogue column."""
from __future__ import annotations

from functools import partial

import holoviews as hv
import numpy as np
import panel as pn

from dashboard.data import AppData
from dashboard.views.base import PANEL_CSS, StateView, datashader, hv_pane, on_gestures, rasterize
from dashboard.views.glyphs import FLAGGED, SELECTED, RasterLayer, Star, category_colours

#: Frame of the latent map in screen pixels; fixed, so a tap's pixel tolerance is exact.
MAP_FRAME = (560, 470)
#: Every datashaded frame has columns x, y (and v): datashader compiles per column schema.
LATENT_DIMS = [hv.Dimension("x", label="UMAP 1"), hv.Dimension("y", label="UMAP 2")]


def padded(lo: float, hi: float, frac: float = 0.05) -> tuple[float, float]:
    pad = (hi - lo) * frac or 1.0
    return float(lo - pad), float(hi + pad)


def latent_extent(data: AppData) -> tuple[tuple[float, float], tuple[float, float]]:
    """Initial x and y ranges of the latent map: the data's extent plus 5%."""
    return data.derived("latent_extent", lambda: (padded(np.nanmin(data.x), np.nanmax(data.x)),
                                                  padded(np.nanmin(data.y), np.nanmax(data.y))))


class LatentMap(StateView):
    """The UMAP of every galaxy, datashaded; box, lasso and tap select; flagged galaxies on top."""

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
        self._pane = hv_pane(self._plot(self.state.colour_by), margin=0)
        # The base layer changes type (a mean image vs categorical counts), so a new colouring
        # rebuilds the plot; it reopens at the current zoom, and the hooks re-add the highlights.
        self.watch(lambda: setattr(self._pane, "object", self._plot(self.state.colour_by)), "colour_by")
        self.watch(lambda: self._selected.show_rows(self.state.selection), "selection")
        self.watch(lambda: self._star.show(self.state.row), "galaxy")

    def _base(self, colour_by: str):
        ds, _ = datashader()
        data = self.state.data
        frame = data.colour_frame(colour_by)
        pts = hv.Points(frame, kdims=LATENT_DIMS, vdims=[hv.Dimension("v", label=colour_by)])
        if colour_by in data.categorical_colours:
            key = category_colours(frame["v"].cat.categories)
            base = rasterize(pts, ds.count_cat("v"), MAP_FRAME, self._ranges, max_px=3).opts(cmap=key)
            legend = hv.NdOverlay({k: hv.Points([(np.nan, np.nan)], kdims=LATENT_DIMS, label=k).opts(color=c, size=8)
                                   for k, c in key.items()}, kdims=[colour_by])
            return base, legend
        base = rasterize(pts, ds.mean("v"), MAP_FRAME, self._ranges, max_px=3).opts(
            cmap="viridis", cnorm="eq_hist", colorbar=True, clabel=colour_by, cformatter="%.4g",
            colorbar_opts={"title_text_font_size": "10px"})
        return base, None

    def _plot(self, colour_by: str):
        base, legend = self._base(colour_by)
        self._streams = on_gestures(base, zoom=self._zoom, box=partial(self.state.select_box, space="latent"),
                                    lasso=partial(self.state.select_lasso, space="latent"), tap=self._tap)
        base = base.opts(tools=["box_select", "lasso_select", "tap"], active_tools=["wheel_zoom"])
        # The plot is the image alone (numeric colouring) or the image and a legend (categorical).
        layers = base if legend is None else (base * legend).opts(legend_position="top_left")
        return layers.opts(
            frame_width=MAP_FRAME[0], frame_height=MAP_FRAME[1], xlim=self._ranges[0], ylim=self._ranges[1],
            title=f"Latent space (UMAP), coloured by {colour_by}",
            hooks=[self._flagged.hook, self._selected.hook, self._star.hook], backend_opts={"plot.name": "latent-map"})

    def _zoom(self, x_range, y_range) -> None:
        self._ranges = (tuple(x_range), tuple(y_range))
        self._flagged.zoom(x_range, y_range)
        self._selected.zoom(x_range, y_range)

    def _tap(self, x: float, y: float) -> None:
        self.state.tap(x, y, self._ranges[0], self._ranges[1], MAP_FRAME)

    def __panel__(self):
        colour = pn.widgets.Select.from_param(self.state.param.colour_by, label="Colour by", width=220)
        clear = pn.widgets.Button(label="Clear selection", width=130, align="end")
        clear.on_click(lambda _: self.state.clear_selection())
        hint = pn.pane.HTML('<span style="color:#666;font-size:12px">Box, lasso or tap to select '
                            '(toolbar, right); wheel to zoom. Red: flagged; orange: selected; ★ inspected.</span>',
                            align="end")
        return pn.Column(pn.Row(colour, clear, hint), self._pane, stylesheets=[PANEL_CSS])
