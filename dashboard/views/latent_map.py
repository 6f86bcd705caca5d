"""The latent map: every galaxy's UMAP position, datashaded, coloured by a catalogue column."""
from __future__ import annotations

from functools import partial

import numpy as np
import panel as pn

from dashboard.data import AppData
from dashboard.views.base import (PANEL_CSS, StateView, change, datashade, datashader, image_columns, on_gestures,
                                  scatter_figure)
from dashboard.views.glyphs import FLAGGED, SELECTED, RasterLayer, Star, category_colours

#: Frame of the latent map in screen pixels; fixed, so a tap's pixel tolerance is exact.
MAP_FRAME = (560, 470)


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
        self._fig = self._figure()
        self._draw()
        self.watch(self._draw, "colour_by")
        self.watch(lambda: self._selected.show_rows(self.state.selection), "selection")
        self.watch(lambda: self._star.show(self.state.row), "galaxy")

    def _figure(self):
        """The figure, with a glyph for each kind of colouring (a numeric column through a colour
        mapper with its colour bar; categories as RGBA with a legend), the highlights on top."""
        from bokeh.models import (BasicTickFormatter, ColorBar, ColumnDataSource, EqHistColorMapper, Image, ImageRGBA,
                                  Legend, LegendItem, Scatter)
        from bokeh.palettes import Viridis256
        from bokeh.core.property.vectorization import Field

        fig = scatter_figure("latent-map", "", MAP_FRAME, self._ranges, "UMAP 1", "UMAP 2", tap=True)
        mapper = EqHistColorMapper(palette=Viridis256, nan_color=(0, 0, 0, 0), rescale_discrete_levels=True)
        empty = image_columns(np.zeros((1, 1), np.uint32), self._ranges)
        # Image glyphs read the columns image, x, y, dw and dh by default (base.image_columns).
        self._numeric = fig.add_glyph(ColumnDataSource(empty), Image(color_mapper=mapper))
        self._categorical = fig.add_glyph(ColumnDataSource(empty), ImageRGBA())
        # Scientific above 10^4: the anomaly score (exp of a z-score) spans many decades, and printf's %g
        # writes 2.2e9 as 2218000000 in the browser.
        self._colour_bar = ColorBar(color_mapper=mapper, title_text_font_size="10px",
                                    formatter=BasicTickFormatter(precision=3, power_limit_high=4, power_limit_low=-3))
        fig.add_layout(self._colour_bar, "right")
        # One invisible point per category; the legend groups them by label, in their colours.
        self._keys = fig.add_glyph(ColumnDataSource({"x": [], "y": [], "colour": [], "label": []}),
                                   Scatter(x="x", y="y", fill_color="colour", line_color="colour", size=8))
        fig.add_layout(Legend(items=[LegendItem(label=Field("label"), renderers=[self._keys])], location="top_left"))
        for layer in (self._flagged, self._selected, self._star):
            layer.add_to(fig)
        on_gestures(fig, zoom=self._zoom, box=partial(self.state.select_box, space="latent"),
                    lasso=partial(self.state.select_lasso, space="latent"), tap=self._tap)
        return fig

    def _draw(self) -> None:
        """Aggregate every galaxy at the current zoom, coloured by the state's column."""
        ds, _ = datashader()
        data, colour_by = self.state.data, self.state.colour_by
        frame = data.colour_frame(colour_by)
        blank = image_columns(np.zeros((1, 1), np.uint32), self._ranges)
        keys = {"x": [], "y": [], "colour": [], "label": []}
        if colour_by in data.categorical_colours:
            key = category_colours(frame["v"].cat.categories)
            image = datashade(frame, ds.count_cat("v"), MAP_FRAME, self._ranges, 3, color_key=key)
            change(self._categorical.data_source, data=image_columns(image, self._ranges))
            change(self._numeric.data_source, data=blank)
            keys = {"x": [np.nan] * len(key), "y": [np.nan] * len(key), "colour": list(key.values()),
                    "label": list(key)}
        else:
            image = datashade(frame, ds.mean("v"), MAP_FRAME, self._ranges, 3)
            change(self._numeric.data_source, data=image_columns(image, self._ranges))
            change(self._categorical.data_source, data=blank)
        change(self._colour_bar, visible=colour_by not in data.categorical_colours, title=colour_by)
        change(self._keys.data_source, data=keys)
        change(self._fig.title, text=f"Latent space (UMAP), coloured by {colour_by}")

    def _zoom(self, x_range, y_range) -> None:
        self._ranges = (tuple(x_range), tuple(y_range))
        self._draw()
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
        return pn.Column(pn.Row(colour, clear, hint), pn.pane.Bokeh(self._fig, margin=0), stylesheets=[PANEL_CSS])
