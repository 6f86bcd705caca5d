"""The selected galaxies as a table, with the count and the CSV export."""
from __future__ import annotations

import html

import panel as pn

from core.tables import to_csv
from dashboard import export
from dashboard.state import TABLE_ROWS
from dashboard.views.base import PANEL_CSS, StateView


class ExportButton(StateView):
    """"Export CSV": the selected galaxies with every catalogue column, over HTTP when the route is served."""

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
        self.watch(self._update, "selection")
        self._update()

    def _csv_for_websocket(self):
        import io

        self._widget.filename = export.export_filename(self.state.data.name)
        return io.StringIO(to_csv(self.state.export_frame()))

    def _update(self):
        n = len(self.state.selection)
        too_big = not export.route_served() and n >= export.WEBSOCKET_MAX_ROWS
        self._widget.disabled = n == 0 or too_big
        self._note.object = ("Exports of 100,000+ rows need the HTTP route: start the server with "
                             "<code>--plugins dashboard.export</code>." if too_big else "")

    def __panel__(self):
        return pn.Row(self._widget, self._note, margin=0)


class SelectionTable(StateView):
    """The most anomalous selected galaxies (remote pagination); a row click inspects it."""

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
                        "z": {"type": "money", "precision": 4}, "relevance": {"type": "money", "precision": 3}},
            widths={"galaxy_id": 110}, layout="fit_data_stretch")
        self._table.on_click(self._clicked)
        self._export = ExportButton(state=self.state)
        self.watch(self._update, "selection")
        # The order, the labels' interest and the ranking's relevance change the rows or their columns.
        self.state.discovery.param.watch(lambda *_: self._update(), ["order_by", "unlabelled_first", "labels_version",
                                                                      "ranking_version", "selection_name"])
        self._update()

    def _update(self):
        shown = "" if len(self.state.selection) <= TABLE_ROWS else f" · the table shows the top {TABLE_ROWS:,}"
        self._count.object = html.escape(self.state.count_text + shown)
        self._table.value = self.state.table_frame()

    def _clicked(self, event) -> None:
        self.state.inspect(int(self._table.value.index[event.row]))

    def __panel__(self):
        return pn.Column(pn.Row(self._count, pn.layout.HSpacer(), self._export), self._table,
                         sizing_mode="stretch_width", stylesheets=[PANEL_CSS])
