"""One galaxy in detail: its line maps, the model's reconstruction and residual, error shares, BPT class map.

Everything but the metadata is drawn in ONE Bokeh figure whose data coordinates are
spaxels: three mosaics of the line maps (each its own colour mapper), the error-share bars
and the spatially resolved BPT class map as glyphs, with colour bars placed in the frame.
The browser lays out and paints one figure instead of five; inspecting another galaxy
refills the glyphs' data sources.

Layout of the figure, in screen pixels (converted to spaxels by :attr:`Inspector._px`)::

    Data        Reconstruction      | Residual (data - model)     |
    [mosaic]    [mosaic]          bar [mosaic]                  bar
    Share of the error per line     Spatially resolved BPT class
    [bars]                          [class map]  legend
"""
from __future__ import annotations

import html

import numpy as np
import panel as pn

from core import bpt
from core.links import links_html
from dashboard.views.base import PANEL_CSS, StateView, change
from dashboard.views.glyphs import BPT_COLOURS, FLAGGED, MASKED, Mosaic, plain_figure
from dashboard.views.labels import LabelPanel

#: Maps per row of the mosaics, and each mosaic's width in screen pixels.
MOSAIC_COLUMNS = 5
MOSAIC_WIDTH = 330
#: Screen pixels: a title strip, the gap after a mosaic, the room for a colour bar and its labels.
TITLE_PX, GAP_PX, COLOUR_BAR_PX = 26, 16, 72
#: Screen pixels of the bars' plotting area, and below it the room for the rotated line names.
BARS_PX, NAMES_PX, TICKS_PX = (330, 160), 66, 34
#: Side of the BPT class map in screen pixels.
CLASS_MAP_PX = 190
BAR_COLOUR = "#4c72b0"
MAPS_NOTE = (f'<p style="color:#666;font-size:12px">Each line scaled to its own peak (99th percentile of |data|); '
             f'<span style="background:{MASKED}">&nbsp;grey&nbsp;</span> spaxels are masked.</p>')


def symmetric_limit(m: np.ndarray) -> float:
    """Colour limit of a residual map: the 99th percentile of |residual| (a floor keeps it > 0)."""
    finite = np.abs(m[np.isfinite(m)])
    return max(float(np.percentile(finite, 99)) if finite.size else 1.0, 1e-3)


class Inspector(StateView):
    """One galaxy: its line maps (data, model, residual), error shares, BPT class map and metadata."""

    def __init__(self, **params):
        super().__init__(**params)
        data = self.state.data
        s = data.run.dataset.size
        self._mosaic = Mosaic(len(data.lines), s, MOSAIC_COLUMNS,
                              px_per_spaxel=MOSAIC_WIDTH / (MOSAIC_COLUMNS * (s + 1)))
        self._px = MOSAIC_WIDTH / self._mosaic.width  # screen pixels per spaxel, both ways
        self._err_cols = [f"err_{ln}" for ln in data.lines if f"err_{ln}" in data.catalogue.columns]
        self._fig = self._figure()
        self.watch(self._update, "galaxy")

    # ------------------------------------------------------------------ what is drawn

    def _maps(self) -> dict:
        data, row = self.state.data, self.state.row
        if row is not None:
            return data.galaxy_maps(row)
        s = data.run.dataset.size
        nan = np.full((len(data.lines), s, s), np.nan, np.float32)
        return {"data": nan, "model": nan, "residual": nan, "scale": np.ones(len(data.lines)),
                "bpt_map": np.full((s, s), bpt.CLASS_CODES["invalid"], np.int8)}

    def _bars(self) -> dict:
        """The bars' columns (geometry in spaxels) and the share axis' tick labels."""
        row = self.state.row
        shares = (self.state.data.catalogue[self._err_cols].iloc[row].to_numpy(float) if row is not None
                  else np.zeros(len(self._err_cols)))
        top = float(shares.max()) * 1.1 or 1.0  # the axis' end, 10% above the largest bar
        colours = [BAR_COLOUR] * len(shares)
        if row is not None and len(shares):
            colours[int(np.argmax(shares))] = FLAGGED
        x0, y0 = self._bars_at
        step = BARS_PX[0] / self._px / max(len(shares), 1)
        left = x0 + step * (np.arange(len(shares)) + 0.1)
        return {"left": left, "right": left + 0.8 * step, "bottom": np.full(len(shares), y0),
                "top": y0 + shares / top * BARS_PX[1] / self._px, "share": shares, "colour": colours,
                "line": [c[4:] for c in self._err_cols]}, [f"{v:.2g}" for v in (0.0, top / 2, top)]

    # ------------------------------------------------------------------ the figure

    def _figure(self):
        from bokeh.models import ColorBar, ColumnDataSource, FixedTicker, HoverTool, LinearColorMapper
        from bokeh.palettes import RdBu11, Viridis256, interp_palette

        data, mosaic, px = self.state.data, self._mosaic, self._px
        m_w, m_h = MOSAIC_WIDTH, mosaic.height * px
        row2_h = TITLE_PX + BARS_PX[1] + NAMES_PX
        width = 3 * m_w + GAP_PX + 2 * COLOUR_BAR_PX
        height = TITLE_PX + m_h + row2_h
        fig = plain_figure(width / px, height / px, px, name="inspector")
        titles = []
        maps = self._maps()

        # Row 1: the three mosaics, data and model on one scale, the residual on a symmetric one.
        flux = LinearColorMapper(palette=Viridis256, low=0.0, high=1.0, nan_color=MASKED)
        r = symmetric_limit(maps["residual"])
        self._residual_mapper = LinearColorMapper(palette=interp_palette(RdBu11, 256), low=-r, high=r,
                                                  nan_color=MASKED)
        lefts = {"data": 0.0, "model": m_w + GAP_PX, "residual": 2 * m_w + GAP_PX + COLOUR_BAR_PX}
        mappers = {"data": flux, "model": flux, "residual": self._residual_mapper}
        names = {"data": ("Data", "flux / peak"), "model": ("Reconstruction", "flux / peak"),
                 "residual": ("Residual (data − model)", "residual / peak")}
        self._images = {}
        for kind, left in lefts.items():
            self._images[kind], _ = mosaic.draw(fig, maps[kind], mappers[kind], data.lines, at=(left / px, row2_h / px))
            titles.append((left, height - TITLE_PX / 2, names[kind][0]))
            fig.add_tools(HoverTool(renderers=[self._images[kind]], tooltips=[(names[kind][1], "@image{0.00}")]))
        for kind in ("model", "residual"):
            fig.add_layout(ColorBar(color_mapper=mappers[kind], location=(lefts[kind] + m_w + 8, row2_h + 0.1 * m_h),
                                    width=10, height=int(0.8 * m_h), title=names[kind][1], title_standoff=4,
                                    title_text_font_size="10px", major_label_text_font_size="10px",
                                    padding=0, background_fill_alpha=0), "center")

        # Row 2, left: the share of the error per line, on an axis drawn with glyphs.
        self._bars_at = (TICKS_PX / px, NAMES_PX / px)
        columns, ticks = self._bars()
        self._bar_source = ColumnDataSource(columns)
        tick_y = [(NAMES_PX + f * BARS_PX[1]) / px for f in (0.0, 0.5, 1.0)]
        self._tick_source = ColumnDataSource({"x": [(TICKS_PX - 4) / px] * 3, "y": tick_y, "text": ticks})
        fig.segment(x0=TICKS_PX / px, x1=(TICKS_PX + BARS_PX[0]) / px, y0=tick_y, y1=tick_y, color="#e5e5e5")
        bars = fig.quad(left="left", right="right", bottom="bottom", top="top", fill_color="colour",
                        line_color="colour", source=self._bar_source)
        fig.text("x", "y", "text", source=self._tick_source, text_font_size="10px", text_color="#444",
                 text_align="right", text_baseline="middle")
        fig.text(x=(columns["left"] + columns["right"]) / 2, y=[(NAMES_PX - 4) / px] * len(columns["left"]),
                 text=columns["line"], angle=np.pi / 2, text_font_size="10px", text_color="#444",
                 text_align="right", text_baseline="middle")
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[("line", "@line"), ("share", "@share{0.000}")]))
        titles.append((0.0, row2_h - TITLE_PX / 2, "Share of the error per line"))

        # Row 2, right: the spatially resolved BPT class map and its legend.
        side = CLASS_MAP_PX / px
        x0 = (TICKS_PX + BARS_PX[0] + 3 * GAP_PX) / px
        y0 = (row2_h - TITLE_PX - CLASS_MAP_PX) / px
        codes = list(range(len(bpt.CLASSES)))
        classes = LinearColorMapper(palette=[BPT_COLOURS[c] for c in bpt.CLASSES], low=-0.5, high=len(codes) - 0.5)
        self._class_source = ColumnDataSource({"image": [np.asarray(maps["bpt_map"], dtype=np.float32)],
                                               "x": [x0], "y": [y0], "dw": [side], "dh": [side]})
        fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=self._class_source, color_mapper=classes)
        fig.add_layout(ColorBar(color_mapper=classes, location=(x0 * px + CLASS_MAP_PX + 8, y0 * px), width=10,
                                height=CLASS_MAP_PX, ticker=FixedTicker(ticks=codes),
                                major_label_overrides=dict(enumerate(bpt.CLASSES)), major_label_text_font_size="10px",
                                padding=0, background_fill_alpha=0), "center")
        titles.append((x0 * px, row2_h - TITLE_PX / 2, "Spatially resolved BPT class"))

        tx, ty, text = zip(*titles)
        fig.text(x=np.array(tx) / px, y=np.array(ty) / px, text=list(text), text_font_size="14px",
                 text_font_style="bold", text_color="#222", text_baseline="middle")
        return fig

    def _update(self) -> None:
        maps = self._maps()
        for kind, renderer in self._images.items():
            change(renderer.data_source, data={**renderer.data_source.data, "image": self._mosaic.images(maps[kind])})
        r = symmetric_limit(maps["residual"])
        change(self._residual_mapper, low=-r, high=r)
        columns, ticks = self._bars()
        change(self._bar_source, data=columns)
        change(self._tick_source, data={**self._tick_source.data, "text": ticks})
        change(self._class_source, data={**self._class_source.data,
                                         "image": [np.asarray(maps["bpt_map"], dtype=np.float32)]})

    # ------------------------------------------------------------------ the panel

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
                f'<table class="bb-meta" style="font-size:13px;text-align:left">{rows}</table>' + links_html(r))

    def __panel__(self):
        # No title of its own (its tab names it); the note on the maps sits with the metadata.
        meta = pn.pane.HTML(pn.bind(lambda galaxy: self._meta(galaxy) + MAPS_NOTE, self.state.param.galaxy),
                            width=240, margin=(0, 10))
        # The inner row does not stretch: the colour bars sit at screen pixels, so the figure's frame must not.
        return pn.Column(pn.Row(pn.Column(meta, LabelPanel(state=self.state)), pn.pane.Bokeh(self._fig, margin=(0, 5))),
                         stylesheets=[PANEL_CSS], sizing_mode="stretch_width")
