"""The three BPT diagrams of the galaxies' central line ratios, with the classical demarcation lines."""
from __future__ import annotations

from functools import partial

import numpy as np
import panel as pn

from core import bpt
from dashboard.data import BPT_Y, DIAGRAMS, AppData
from dashboard.views.base import (PANEL_CSS, StateView, change, datashade, datashader, image_columns, on_gestures,
                                  scatter_figure, section_title)
from dashboard.views.glyphs import SELECTED, RasterLayer, Star

#: Frame of each diagram in screen pixels.
BPT_FRAME = (270, 250)
#: The demarcation lines of each diagram: (function of log x, label, dash). The dotted
#: Seyfert/LINER lines only mean something above Kewley+01 (the diagram's "kewley01" entry).
LINES = {
    "nii": ((bpt.kauffmann03_nii, "Kauffmann+03", "dashed"), (bpt.kewley01_nii, "Kewley+01", "solid"),
            (bpt.schawinski07_nii, "Schawinski+07", "dotted")),
    "sii": ((bpt.kewley01_sii, "Kewley+01", "solid"), (bpt.kewley06_sii, "Kewley+06", "dotted")),
    "oi": ((bpt.kewley01_oi, "Kewley+01", "solid"), (bpt.kewley06_oi, "Kewley+06", "dotted")),
}


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


def demarcation(fig, key: str, x_range) -> None:
    """Draw the diagram's demarcation lines over ``x_range`` on ``fig``, with a legend.

    One multi-line glyph draws them all, each with its own dash: the browser lays out and
    paints one renderer per diagram instead of one per line.
    """
    from bokeh.models import Legend, LegendItem

    xs = np.linspace(*x_range, 300)
    kewley01 = next(fn for fn, label, _ in LINES[key] if label == "Kewley+01")
    ke01 = np.asarray(kewley01(xs), dtype=float)
    ys = []
    for fn, _, dash in LINES[key]:
        y = np.asarray(fn(xs), dtype=float)
        ys.append(np.where(np.isfinite(ke01) & (y < ke01), np.nan, y) if dash == "dotted" else y)
    lines = fig.multi_line(xs=[xs] * len(ys), ys=ys, line_dash=[dash for *_, dash in LINES[key]], color="black",
                           line_width=1.3)
    fig.add_layout(Legend(items=[LegendItem(label=label, renderers=[lines], index=i)
                                 for i, (_, label, _) in enumerate(LINES[key])], location="bottom_left"))


class BPTDiagrams(StateView):
    """[NII], [SII] and [OI] BPT diagrams: every galaxy datashaded, the selection and the inspected
    galaxy on top, the demarcation lines of core.bpt; box or lasso on a diagram selects everywhere."""

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        self._selected = {key: RasterLayer(*data.bpt[key], BPT_FRAME, bpt_extent(data, key), SELECTED)
                          for key in DIAGRAMS}
        self._stars = {key: Star(*data.bpt[key]) for key in DIAGRAMS}
        self.watch(self._show_rows, "selection")
        self.watch(self._show_star, "galaxy")
        self._show_rows()
        self._show_star()

    def _show_rows(self) -> None:
        for layer in self._selected.values():
            layer.show_rows(self.state.selection)

    def _show_star(self) -> None:
        for star in self._stars.values():
            star.show(self.state.row)

    def _diagram(self, key: str):
        from bokeh.models import EqHistColorMapper
        from bokeh.palettes import Greys256

        ds, _ = datashader()
        frame, ranges = self.state.data.frames[key], bpt_extent(self.state.data, key)
        fig = scatter_figure(f"bpt-{key}", f"BPT [{key.upper()}]", BPT_FRAME, ranges, DIAGRAMS[key][1], BPT_Y[1])
        background = fig.image(source=image_columns(datashade(frame, ds.count(), BPT_FRAME, ranges, 2), ranges),
                               color_mapper=EqHistColorMapper(palette=Greys256[::-1], nan_color=(0, 0, 0, 0),
                                                                        rescale_discrete_levels=True))
        selected, star = self._selected[key], self._stars[key]
        selected.add_to(fig)
        demarcation(fig, key, ranges[0])
        star.add_to(fig)

        def zoom(x_range, y_range):
            ranges = (tuple(x_range), tuple(y_range))
            change(background.data_source, data=image_columns(datashade(frame, ds.count(), BPT_FRAME, ranges, 2),
                                                              ranges))
            selected.zoom(*ranges)

        space = f"bpt_{key}"
        on_gestures(fig, zoom=zoom, box=partial(self.state.select_box, space=space),
                    lasso=partial(self.state.select_lasso, space=space))
        return fig

    def __panel__(self):
        from bokeh.layouts import row

        return pn.Column(section_title("BPT diagrams", "grey: every galaxy (central aperture); orange: selected; "
                                                       "★ inspected"),
                         pn.pane.Bokeh(row(*(self._diagram(k) for k in DIAGRAMS), spacing=10), margin=(0, 5)),
                         stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
