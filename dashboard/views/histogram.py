"""The anomaly scores of every galaxy, and of the selected ones, as a histogram."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import panel as pn

from dashboard.views.base import PANEL_CSS, StateView, change, hv_pane, on_gestures
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
        self._chosen = ColumnDataSource({"left": self._edges[:-1], "right": self._edges[1:],
                                         "top": np.zeros(len(self._edges) - 1)})
        self.watch(self._update, "selection")
        self._update()

    def _update(self) -> None:
        counts = np.histogram(self.state.data.score[self.state.selection], self._edges)[0]
        change(self._chosen, data={**self._chosen.data, "top": counts})

    def _hook(self, plot, element) -> None:
        plot.state.quad(left="left", right="right", top="top", bottom=0, source=self._chosen, fill_color=SELECTED,
                        line_color=SELECTED, fill_alpha=0.9)

    def _plot(self):
        data = self.state.data
        score = data.score[np.isfinite(data.score) & (data.score > 0)]
        everyone = hv.Histogram((self._edges, np.histogram(score, self._edges)[0]), kdims=["anomaly_score"],
                                vdims=["galaxies"]).opts(
            color="#c9c9c9", line_color="#9a9a9a", tools=["xbox_select"], active_tools=["xbox_select"])
        self._streams = on_gestures(everyone, x_span=self.state.select_score_range)
        p90 = hv.VLine(data.p90).opts(color=FLAGGED, line_dash="dashed", line_width=1.5)
        label = hv.Text(data.p90, 0, f" 90th pct {data.p90:,.0f}", halign="left", valign="bottom").opts(
            color=FLAGGED, text_font_size="9pt")
        return (everyone * p90 * label).opts(hv.opts.Overlay(
            logx=True, frame_width=HISTOGRAM_FRAME[0], frame_height=HISTOGRAM_FRAME[1],
            title="Anomaly score (drag to select a range)", xlabel="anomaly score", ylabel="galaxies",
            hooks=[self._hook], backend_opts={"plot.name": "score-histogram"}))

    def __panel__(self):
        return pn.Column(hv_pane(self._plot(), margin=(0, 5)), stylesheets=[PANEL_CSS])
