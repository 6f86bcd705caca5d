"""The three BPT diagrams of the galaxies' central line ratios, with the classical demarcation lines."""
from __future__ import annotations

from functools import partial

import holoviews as hv
import numpy as np
import panel as pn

from core import bpt
from dashboard.data import BPT_Y, DIAGRAMS, AppData
from dashboard.views.base import PANEL_CSS, StateView, datashader, hv_pane, on_gestures, rasterize, section_title
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


def bpt_dims(key: str) -> list[hv.Dimension]:
    return [hv.Dimension("x", label=DIAGRAMS[key][1]), hv.Dimension("y", label=BPT_Y[1])]


def demarcation(key: str, x_range) -> list[hv.Curve]:
    """The diagram's demarcation lines over ``x_range``."""
    dims = bpt_dims(key)
    xs = np.linspace(*x_range, 300)
    kewley01 = next(fn for fn, label, _ in LINES[key] if label == "Kewley+01")
    curves = []
    for fn, label, dash in LINES[key]:
        ys = np.asarray(fn(xs), dtype=float)
        if dash == "dotted":
            ke01 = np.asarray(kewley01(xs), dtype=float)
            ys = np.where(np.isfinite(ke01) & (ys < ke01), np.nan, ys)
        curves.append(hv.Curve((xs, ys), dims[0], dims[1], label=label).opts(
            color="black", line_dash=dash, line_width=1.3))
    return curves


class BPTDiagrams(StateView):
    """[NII], [SII] and [OI] BPT diagrams: every galaxy datashaded, the selection and the inspected
    galaxy on top, the demarcation lines of core.bpt; box or lasso on a diagram selects everywhere."""

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        self._selected = {key: RasterLayer(*data.bpt[key], BPT_FRAME, bpt_extent(data, key), SELECTED)
                          for key in DIAGRAMS}
        self._stars = {key: Star(*data.bpt[key]) for key in DIAGRAMS}
        self._streams = []
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
        ds, _ = datashader()
        (x0, x1), (y0, y1) = bpt_extent(self.state.data, key)
        pts = hv.Points(self.state.data.frames[key], kdims=bpt_dims(key))
        base = rasterize(pts, ds.count(), BPT_FRAME, ((x0, x1), (y0, y1)), max_px=2).opts(
            cmap="Greys", cnorm="eq_hist", tools=["box_select", "lasso_select"], active_tools=["wheel_zoom"])
        selected, space = self._selected[key], f"bpt_{key}"
        self._streams += on_gestures(base, zoom=selected.zoom, box=partial(self.state.select_box, space=space),
                                     lasso=partial(self.state.select_lasso, space=space))
        return (base * hv.Overlay(demarcation(key, (x0, x1)))).opts(hv.opts.Overlay(
            frame_width=BPT_FRAME[0], frame_height=BPT_FRAME[1], xlim=(x0, x1), ylim=(y0, y1),
            legend_position="bottom_left", title=f"BPT [{key.upper()}]",
            hooks=[selected.hook, self._stars[key].hook],
            backend_opts={"plot.name": f"bpt-{key}"}))

    def __panel__(self):
        return pn.Column(section_title("BPT diagrams", "grey: every galaxy (central aperture); orange: selected; "
                                                       "★ inspected"),
                         pn.Row(*(hv_pane(self._diagram(k), margin=(0, 5)) for k in DIAGRAMS)),
                         stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
