"""The anomaly scores of every galaxy, and of the selected ones, as a histogram."""
from __future__ import annotations

import numpy as np
import panel as pn

from dashboard.views.base import PANEL_CSS, TITLE_SIZE, StateView, change, on_gestures
from dashboard.views.glyphs import FLAGGED, SELECTED

#: Frame of the histogram in screen pixels.
HISTOGRAM_FRAME = (420, 180)


class ScoreHistogram(StateView):
    """Anomaly scores (log bins) with the 90th-percentile line; an x-range drag selects those galaxies."""

    def __init__(self, **params):
        from bokeh.models import ColumnDataSource

        super().__init__(**params)
        score = self.state.data.score
        score = score[np.isfinite(score) & (score > 0)]
        lo, hi = (score.min(), score.max()) if score.size else (1.0, 10.0)
        self._edges = np.logspace(np.log10(lo) - 1e-6, np.log10(hi) + 1e-6, 61)
        self._everyone = np.histogram(score, self._edges)[0]
        self._chosen = ColumnDataSource({"left": self._edges[:-1], "right": self._edges[1:],
                                         "top": np.zeros(len(self._edges) - 1)})
        self.watch(self._update, "selection")
        self._update()
        self._fig = self._figure()

    def _update(self) -> None:
        counts = np.histogram(self.state.data.score[self.state.selection], self._edges)[0]
        change(self._chosen, data={**self._chosen.data, "top": counts})

    def _figure(self):
        from bokeh.models import BoxSelectTool, ColumnDataSource, FixedTicker, Label, Quad, Range1d, Span
        from bokeh.plotting import figure

        p90 = self.state.data.p90
        fig = figure(name="score-histogram", title="Anomaly score (drag to select a range)", x_axis_type="log",
                     x_range=Range1d(self._edges[0], self._edges[-1]),
                     y_range=Range1d(0, max(int(self._everyone.max()), 1) * 1.05),
                     frame_width=HISTOGRAM_FRAME[0], frame_height=HISTOGRAM_FRAME[1], x_axis_label="anomaly score",
                     y_axis_label="galaxies", tools="pan,wheel_zoom,box_zoom,save,reset", min_border=5)
        select = BoxSelectTool(dimensions="width", renderers=[])
        fig.add_tools(select)
        fig.toolbar.active_drag = select
        fig.grid.visible = False
        fig.title.text_font_size = TITLE_SIZE
        # Ticks at the powers of ten only: Bokeh's log ticker crowds a two-decade axis with labels.
        decades = np.arange(np.ceil(np.log10(self._edges[0])), np.floor(np.log10(self._edges[-1])) + 1)
        fig.xaxis.ticker = FixedTicker(ticks=list(10.0 ** decades))
        everyone = ColumnDataSource({"left": self._edges[:-1], "right": self._edges[1:], "top": self._everyone})
        fig.add_glyph(everyone, Quad(left="left", right="right", top="top", bottom=0, fill_color="#c9c9c9",
                                     line_color="#9a9a9a"))
        fig.add_glyph(self._chosen, Quad(left="left", right="right", top="top", bottom=0, fill_color=SELECTED,
                                         line_color=SELECTED, fill_alpha=0.9))
        fig.add_layout(Span(location=p90, dimension="height", line_color=FLAGGED, line_dash="dashed", line_width=1.5))
        fig.add_layout(Label(x=p90, y=0, text=f" 90th pct {p90:,.0f}", text_align="left", text_baseline="bottom",
                             text_color=FLAGGED, text_font_size="9pt"))
        on_gestures(fig, x_span=self.state.select_score_range)
        return fig

    def __panel__(self):
        return pn.Column(pn.pane.Bokeh(self._fig, margin=(0, 5)), stylesheets=[PANEL_CSS])
