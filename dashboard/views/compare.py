"""Two selections side by side (or one against the rest), drawn only when asked for.

The numbers come from ``dashboard/compare.py``. Tables (summary, class fractions, error
shares) are HTML; the distributions are small multiples in one Bokeh figure and the mean
residual maps two mosaics in a second, so a comparison adds two figures to the page, and
none until the first "Compare" click.
"""
from __future__ import annotations

import asyncio
import html

import numpy as np
import panel as pn

from core.errors import BlueberryError
from dashboard.compare import Comparison, compare_rows
from dashboard.discovery import CURRENT, REST
from dashboard.views.base import PANEL_CSS, StateView, section_title
from dashboard.views.glyphs import MASKED, Mosaic, plain_figure
from dashboard.views.inspector import MOSAIC_COLUMNS, MOSAIC_WIDTH, symmetric_limit

#: The two groups' colours, in every table and plot.
GROUP_COLOURS = ("#3b4cc0", "#e07b00")
#: A distribution's panel in screen pixels (plotting area), the gap between panels, the strips above and below.
PANEL_PX, PANEL_GAP, TITLE_PX, TICKS_PX = (170, 110), 28, 22, 18


def _table(frame, fmt) -> str:
    """An HTML table of a Comparison frame (one column per group), the group names in their colours."""
    head = "".join(f'<th style="color:{c}">{html.escape(str(n))}</th>' for n, c in zip(frame.columns, GROUP_COLOURS))
    body = "".join(f"<tr><th>{html.escape(str(k))}</th>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>"
                   for k, row in zip(frame.index, frame.to_numpy()))
    return f'<table class="bb-compare" style="font-size:12px;text-align:right"><tr><th></th>{head}</tr>{body}</table>'


def _share(v) -> str:
    return f"{100 * v:.1f} %"


def _figure(v) -> str:
    return "–" if v != v else (f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}")


def distributions_figure(c: Comparison):
    """Each distribution of ``c`` as a panel of two step lines (share of each group per bin), side by side."""
    names = list(c.distributions)
    w, h = PANEL_PX
    width = len(names) * (w + PANEL_GAP)
    height = TITLE_PX + h + TICKS_PX
    fig = plain_figure(width, height, 1.0, name="compare-distributions")
    xs, ys, colours, texts = [], [], [], {"x": [], "y": [], "text": [], "align": []}
    for k, name in enumerate(names):
        edges, shares = c.distributions[name]
        x0 = k * (w + PANEL_GAP) + PANEL_GAP / 2
        top = float(shares.max()) or 1.0
        bx = x0 + (edges - edges[0]) / (edges[-1] - edges[0]) * w  # bin edges in screen pixels
        for g in range(2):
            xs.append(np.repeat(bx, 2)[1:-1])  # a step line: each bin's top from its left to its right edge
            ys.append(TICKS_PX + np.repeat(shares[g], 2) / top * h)
            colours.append(GROUP_COLOURS[g])
        for x, text, align in ((x0, f"{edges[0]:.2g}", "left"), (x0 + w, f"{edges[-1]:.2g}", "right"),
                               (x0 + w / 2, name, "center")):
            texts["x"].append(x)
            texts["y"].append(TICKS_PX / 2 if text != name else height - TITLE_PX / 2)
            texts["text"].append(text)
            texts["align"].append(align)
    fig.multi_line(xs=xs, ys=ys, line_color=colours, line_width=2)
    fig.segment(x0=[k * (w + PANEL_GAP) + PANEL_GAP / 2 for k in range(len(names))], y0=TICKS_PX,
                x1=[k * (w + PANEL_GAP) + PANEL_GAP / 2 + w for k in range(len(names))], y1=TICKS_PX, color="#999")
    fig.text(x="x", y="y", text="text", text_align="align", source=texts, text_font_size="11px",
             text_baseline="middle", text_color="#333")
    return fig


def residuals_figure(c: Comparison, lines):
    """The mean residual map of each line, group a's mosaic beside group b's, on one symmetric colour scale."""
    from bokeh.models import ColorBar, LinearColorMapper
    from bokeh.palettes import RdBu11, interp_palette

    s = c.residuals.shape[-1]
    mosaic = Mosaic(len(lines), s, MOSAIC_COLUMNS, px_per_spaxel=MOSAIC_WIDTH / (MOSAIC_COLUMNS * (s + 1)))
    px = MOSAIC_WIDTH / mosaic.width
    gap, bar = 20 / px, 70 / px
    title = TITLE_PX / px
    fig = plain_figure(2 * mosaic.width + gap + bar, mosaic.height + title, px, name="compare-residuals")
    r = symmetric_limit(c.residuals)
    mapper = LinearColorMapper(palette=interp_palette(RdBu11, 256), low=-r, high=r, nan_color=MASKED)
    for g in range(2):
        left = g * (mosaic.width + gap)
        mosaic.draw(fig, c.residuals[g], mapper, lines, at=(left, 0.0))
        fig.text(x=[left], y=[mosaic.height + title / 2], text=[f"{c.names[g]}: mean of {c.residual_n[g]:,}"],
                 text_font_size="12px", text_font_style="bold", text_color=GROUP_COLOURS[g], text_baseline="middle")
    fig.add_layout(ColorBar(color_mapper=mapper, location=(2 * MOSAIC_WIDTH + 28, 10), width=10,
                            height=int(0.8 * mosaic.height * px), title="residual / peak", title_standoff=4,
                            title_text_font_size="10px", major_label_text_font_size="10px", padding=0,
                            background_fill_alpha=0), "center")
    return fig


class CompareView(StateView):
    """Pick two groups (saved selections, the current one, the rest) and see them side by side."""

    def __init__(self, **params):
        super().__init__(**params)
        self._a = pn.widgets.Select(label="Compare", width=180)
        self._b = pn.widgets.Select(label="with", width=180)
        self._go = pn.widgets.Button(label="Compare", color="primary", width=90, align="end")
        self._go.on_click(self._compare)
        self._out = pn.Column(sizing_mode="stretch_width")
        self.state.discovery.param.watch(lambda *_: self._refresh(), ["selection_name", "status"])
        self._refresh()

    def _refresh(self) -> None:
        names = self.state.discovery.group_names()
        self._a.options, self._b.options = names, [REST, *names]

    async def _compare(self, _event) -> None:
        d, data = self.state.discovery, self.state.data
        a, b = self._a.value or CURRENT, self._b.value or REST
        self._go.loading = True
        try:
            groups = d.groups(a, b)  # the store is read in this thread, the maps in a worker
            c = await asyncio.to_thread(compare_rows, data, *groups, (a, b), d.loop.interest())
        except (ValueError, BlueberryError) as error:
            self._out.objects = [pn.pane.Alert(html.escape(str(error)), alert_type="warning")]
            return
        finally:
            self._go.loading = False
        self.show(c)

    def show(self, c: Comparison) -> None:
        """Draw the comparison ``c`` below the controls."""
        tables = [("Summary", _table(c.summary, _figure))]
        tables += [(col.replace("_", " "), _table(frame, _share)) for col, frame in c.classes.items()]
        tables.append(("Share of the error per line", _table(c.error_shares, _share)))
        self._out.objects = [
            pn.FlexBox(*(pn.pane.HTML(f"<b>{html.escape(t)}</b>{body}", margin=(0, 12)) for t, body in tables)),
            pn.pane.HTML("<b>Distributions</b> <span style='color:#666;font-size:12px'>share of each group per bin; "
                         "the end bins hold the 2 % beyond</span>", margin=(8, 12, 0, 12)),
            pn.pane.Bokeh(distributions_figure(c), margin=(0, 12)),
            pn.pane.HTML("<b>Mean residual maps</b> <span style='color:#666;font-size:12px'>each galaxy's residual "
                         "scaled to its own peak, then averaged</span>", margin=(8, 12, 0, 12)),
            pn.pane.Bokeh(residuals_figure(c, self.state.data.lines), margin=(0, 12)),
        ]

    def __panel__(self):
        return pn.Column(section_title("Compare selections", "two saved selections, or one against the rest"),
                         pn.Row(self._a, self._b, self._go), self._out, sizing_mode="stretch_width",
                         stylesheets=[PANEL_CSS])
