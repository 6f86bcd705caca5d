"""One galaxy in detail: its line maps, the model's reconstruction and residual, error shares, BPT class map.

Everything but the metadata is drawn in ONE Bokeh figure whose data coordinates are
spaxels: three mosaics of the line maps (data and model on one colour scale, the residual
on its own), the error-share bars and the spatially resolved BPT class map as glyphs, with
colour bars placed in the frame.
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
        """The figure, with as few Bokeh models as it can: each model costs the server and the
        browser at every page load. One glyph draws the data and model mosaics (one colour scale),
        one the residual mosaic, one every text; no glyph has selection or muted copies."""
        from bokeh.models import (ColorBar, ColumnDataSource, FixedTicker, HoverTool, Image, LinearColorMapper,
                                  Quad, Segment, Text)
        from bokeh.palettes import RdBu11, Viridis256, interp_palette

        data, mosaic, px = self.state.data, self._mosaic, self._px
        m_w, m_h = MOSAIC_WIDTH, mosaic.height * px
        row2_h = TITLE_PX + BARS_PX[1] + NAMES_PX
        width = 3 * m_w + GAP_PX + 2 * COLOUR_BAR_PX
        height = TITLE_PX + m_h + row2_h
        fig = plain_figure(width / px, height / px, px, name="inspector")
        maps = self._maps()
        texts = []  # (x, y in screen pixels, text, size, angle, align, baseline, colour, bold)

        # Row 1: the three mosaics, data and model on one scale, the residual on a symmetric one.
        flux = LinearColorMapper(palette=Viridis256, low=0.0, high=1.0, nan_color=MASKED)
        r = symmetric_limit(maps["residual"])
        self._residual_mapper = LinearColorMapper(palette=interp_palette(RdBu11, 256), low=-r, high=r,
                                                  nan_color=MASKED)
        lefts = {"data": 0.0, "model": m_w + GAP_PX, "residual": 2 * m_w + GAP_PX + COLOUR_BAR_PX}
        names = {"data": "Data", "model": "Reconstruction", "residual": "Residual (data − model)"}
        self._at = {kind: (left / px, row2_h / px) for kind, left in lefts.items()}
        self._flux_source = ColumnDataSource(self._flux_columns(maps))
        self._residual_source = ColumnDataSource(mosaic.image_columns(maps["residual"], self._at["residual"]))
        for source, mapper, unit in ((self._flux_source, flux, "flux / peak"),
                                     (self._residual_source, self._residual_mapper, "residual / peak")):
            images = fig.add_glyph(source, Image(color_mapper=mapper))
            fig.add_tools(HoverTool(renderers=[images], tooltips=[(unit, "@image{0.00}")]))
        for kind, left in lefts.items():
            labels = mosaic.label_columns(data.lines, self._at[kind])
            texts += [(x * px, y * px, t, "10px", 0.0, "center", "middle", "#333", False)
                      for x, y, t in zip(labels["x"], labels["y"], labels["text"])]
            texts.append((left, height - TITLE_PX / 2, names[kind], "14px", 0.0, "left", "middle", "#222", True))
        for kind, unit in (("model", "flux / peak"), ("residual", "residual / peak")):
            fig.add_layout(ColorBar(color_mapper=self._residual_mapper if kind == "residual" else flux,
                                    location=(lefts[kind] + m_w + 8, row2_h + 0.1 * m_h),
                                    width=10, height=int(0.8 * m_h), title=unit, title_standoff=4,
                                    title_text_font_size="10px", major_label_text_font_size="10px",
                                    padding=0, background_fill_alpha=0), "center")

        # Row 2, left: the share of the error per line, on an axis drawn with glyphs.
        self._bars_at = (TICKS_PX / px, NAMES_PX / px)
        columns, ticks = self._bars()
        self._bar_source = ColumnDataSource(columns)
        tick_y = [(NAMES_PX + f * BARS_PX[1]) / px for f in (0.0, 0.5, 1.0)]
        fig.add_glyph(ColumnDataSource({"y": tick_y}),
                      Segment(x0=TICKS_PX / px, x1=(TICKS_PX + BARS_PX[0]) / px, y0="y", y1="y", line_color="#e5e5e5"))
        bars = fig.add_glyph(self._bar_source, Quad(left="left", right="right", bottom="bottom", top="top",
                                                    fill_color="colour", line_color="colour"))
        fig.add_tools(HoverTool(renderers=[bars], tooltips=[("line", "@line"), ("share", "@share{0.000}")]))
        texts += [((a + b) / 2 * px, NAMES_PX - 4, line, "10px", np.pi / 2, "right", "middle", "#444", False)
                  for a, b, line in zip(columns["left"], columns["right"], columns["line"])]
        texts.append((0.0, row2_h - TITLE_PX / 2, "Share of the error per line", "14px", 0.0, "left", "middle",
                      "#222", True))

        # Row 2, right: the spatially resolved BPT class map and its legend.
        side = CLASS_MAP_PX / px
        x0 = (TICKS_PX + BARS_PX[0] + 3 * GAP_PX) / px
        y0 = (row2_h - TITLE_PX - CLASS_MAP_PX) / px
        codes = list(range(len(bpt.CLASSES)))
        classes = LinearColorMapper(palette=[BPT_COLOURS[c] for c in bpt.CLASSES], low=-0.5, high=len(codes) - 0.5)
        self._class_source = ColumnDataSource({"image": [np.asarray(maps["bpt_map"], dtype=np.float32)],
                                               "x": [x0], "y": [y0], "dw": [side], "dh": [side]})
        fig.add_glyph(self._class_source, Image(color_mapper=classes))
        fig.add_layout(ColorBar(color_mapper=classes, location=(x0 * px + CLASS_MAP_PX + 8, y0 * px), width=10,
                                height=CLASS_MAP_PX, ticker=FixedTicker(ticks=codes),
                                major_label_overrides=dict(enumerate(bpt.CLASSES)), major_label_text_font_size="10px",
                                padding=0, background_fill_alpha=0), "center")
        texts.append((x0 * px, row2_h - TITLE_PX / 2, "Spatially resolved BPT class", "14px", 0.0, "left", "middle",
                      "#222", True))

        # Every text in one glyph; the share axis' tick labels last, as they change with the galaxy.
        texts += [(TICKS_PX - 4, y * px, t, "10px", 0.0, "right", "middle", "#444", False) for y, t in zip(tick_y, ticks)]
        x, y, text, size, angle, align, baseline, colour, bold = zip(*texts)
        self._text_source = ColumnDataSource({"x": np.array(x) / px, "y": np.array(y) / px, "text": list(text),
                                              "size": list(size), "angle": list(angle), "align": list(align),
                                              "baseline": list(baseline), "colour": list(colour),
                                              "style": ["bold" if b else "normal" for b in bold]})
        fig.add_glyph(self._text_source, Text(x="x", y="y", text="text", text_font_size="size", angle="angle",
                                              text_align="align", text_baseline="baseline", text_color="colour",
                                              text_font_style="style"))
        return fig

    def _flux_columns(self, maps: dict) -> dict:
        """The data and model mosaics' images, as the columns of their one image glyph."""
        d, m = (self._mosaic.image_columns(maps[kind], self._at[kind]) for kind in ("data", "model"))
        return {key: d[key] + m[key] for key in d}

    def _update(self) -> None:
        maps = self._maps()
        change(self._flux_source, data={**self._flux_source.data, "image": self._flux_columns(maps)["image"]})
        change(self._residual_source, data={**self._residual_source.data,
                                            "image": self._mosaic.images(maps["residual"])})
        r = symmetric_limit(maps["residual"])
        change(self._residual_mapper, low=-r, high=r)
        columns, ticks = self._bars()
        change(self._bar_source, data=columns)
        change(self._text_source, data={**self._text_source.data, "text": self._text_source.data["text"][:-3] + ticks})
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
