"""The selected galaxies as a table, with the count and the exports (CSV, FITS, VOTable)."""
from __future__ import annotations

import html

import panel as pn
import param

from core.tables import to_csv
from dashboard import export
from dashboard.state import TABLE_ROWS
from dashboard.views.base import PANEL_CSS, StateView


#: The export buttons: format -> (label, tooltip).
EXPORTS = {"csv": ("Export CSV", "The selected galaxies, every catalogue column, as a spreadsheet-safe CSV"),
           "fits": ("FITS", "The selection as a FITS binary table: units, the run and the model in the header"),
           "votable": ("VOTable", "The selection as a VOTable (TOPCAT, Aladin): units, UCDs, the run and the model")}


class LinkButton(pn.widgets.Button):
    """A button that sends the browser to ``url``: the browser fetches the file itself, nothing goes
    through the websocket.

    The click is a Bokeh ``CustomJS`` on the button's own model rather than Panel's
    ``js_on_click``: any Panel link on the page makes Panel walk every Bokeh model of the
    document each time a view is added to it (a third of the server's time drawing the
    views that came after the page; benchmarks/README.md).
    """

    url = param.String(default="", doc="Where a click sends the browser.")

    _rename = {**pn.widgets.Button._rename, "url": None}  # a Python-side parameter, not a property of the model

    def _get_model(self, doc, root=None, parent=None, comm=None):
        from bokeh.events import ButtonClick
        from bokeh.models import CustomJS

        model = super()._get_model(doc, root, parent, comm)
        model.js_on_event(ButtonClick, CustomJS(code=f"window.location.assign({self.url!r});"))
        return model


class ExportButton(StateView):
    """One export button: the selected galaxies with every catalogue column, over HTTP when the route is served."""

    fmt = param.Selector(default="csv", objects=list(EXPORTS), doc="The file format this button exports.")

    def __init__(self, **params):
        super().__init__(**params)
        label, tooltip = EXPORTS[self.fmt]
        self._note = pn.pane.HTML("", styles={"color": "#a00", "font-size": "12px"}, margin=(0, 5))
        width = 120 if self.fmt == "csv" else 80
        if export.route_served():
            token = export.register(self.state)
            pn.state.on_session_destroyed(lambda _ctx: export.unregister(token))
            self._widget = LinkButton(label=label, color="primary", width=width, description=tooltip,
                                      url=export.export_url(token, pn.state.base_url or "/", self.fmt))
        else:
            self._widget = pn.widgets.FileDownload(label=label, color="primary", width=width, description=tooltip,
                                                   callback=self._file_for_websocket, filename="selection.csv")
        self.watch(self._update, "selection")
        self._update()

    def _csv_for_websocket(self):
        import io

        self._widget.filename = export.export_filename(self.state.data.name)
        return io.StringIO(to_csv(self.state.export_frame()))

    def _file_for_websocket(self):
        import io

        if self.fmt == "csv":
            return self._csv_for_websocket()
        self._widget.filename = export.export_filename(self.state.data.name, fmt=self.fmt)
        out = io.BytesIO()
        export.write_file(out, self.state, self.state.export_frame(), self.fmt)
        out.seek(0)
        return out

    def _update(self):
        n = len(self.state.selection)
        too_big = not export.route_served() and n >= export.WEBSOCKET_MAX_ROWS
        why = export.too_big(self.fmt, n)
        self._widget.disabled = n == 0 or too_big or bool(why)
        self._note.object = ("Exports of 100,000+ rows need the HTTP route: start the server with "
                             "<code>--plugins dashboard.export</code>." if too_big and self.fmt == "csv" else html.escape(why))

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
        self._exports = [ExportButton(state=self.state, fmt=fmt) for fmt in EXPORTS]
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
        return pn.Column(pn.Row(self._count, pn.layout.HSpacer(), *self._exports), self._table,
                         sizing_mode="stretch_width", stylesheets=[PANEL_CSS])
