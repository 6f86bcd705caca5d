"""The discovery loop's controls above the table: order, unlabelled first, label next, re-rank, saved selections."""
from __future__ import annotations

import asyncio
import html

import panel as pn

from core.errors import BlueberryError
from dashboard.views.base import PANEL_CSS, StateView

NOTE_STYLE = {"color": "#555", "font-size": "12px"}


class DiscoveryBar(StateView):
    """Order the table (anomaly, relevance, acquisition), walk the label-next queue, re-rank on the labels
    (in a worker thread), and save, open or delete named selections."""

    def __init__(self, **params):
        super().__init__(**params)
        d = self.state.discovery
        self._order = pn.widgets.Select.from_param(d.param.order_by, label="Order by", width=170)
        self._unlabelled = pn.widgets.Switch.from_param(d.param.unlabelled_first, name="", width=40, align="end")  # the label sits above it
        self._next = pn.widgets.Button(label="Label next", width=100, align="end",
                                       description="Inspect the unlabelled galaxy that labelling would teach the "
                                                   "model most about")
        self._rerank = pn.widgets.Button(label="Re-rank", color="primary", width=90, align="end",
                                         description="Fit the interest model to the labels and re-order every galaxy")
        self._picker = pn.widgets.Select(label="Saved selection", width=170)
        self._name = pn.widgets.TextInput(label="Save selection as", placeholder="name", width=150)
        self._save = pn.widgets.Button(label="Save", width=60, align="end")
        self._delete = pn.widgets.Button(label="Delete", width=70, align="end", disabled=True,
                                         description="Delete the saved selection chosen on the left")
        self._note = pn.pane.HTML("", styles=NOTE_STYLE, margin=(0, 10), css_classes=["bb-discovery-status"])
        self._next.on_click(lambda _: self._try(d.label_next))
        self._rerank.on_click(self._rerank_clicked)
        self._save.on_click(lambda _: self._try(self._save_selection))
        self._delete.on_click(lambda _: self._try(self._delete_selection))
        self._picker.param.watch(self._picked, "value")
        d.param.watch(lambda *_: self._refresh(), ["labels_version", "ranking_version", "status", "selection_name"])
        self.watch(self._refresh, "selection")
        self._refresh()

    def _try(self, action) -> None:
        try:
            action()
        except (ValueError, BlueberryError) as error:
            self.state.discovery.status = str(error)

    def _save_selection(self) -> None:
        n = self.state.discovery.save_selection(self._name.value_input or self._name.value)
        self.state.discovery.status = f"saved {n:,} galaxies"
        self._name.value = ""

    def _delete_selection(self) -> None:
        name = self._picker.value
        if name:
            self.state.discovery.delete_selection(name)
            self.state.discovery.status = f"deleted the saved selection {name!r}"

    def _picked(self, event) -> None:
        self._delete.disabled = not event.new
        if event.new and event.new != self.state.discovery.selection_name:
            self._try(lambda: self.state.discovery.open_selection(event.new))

    async def _rerank_clicked(self, _event) -> None:
        d = self.state.discovery
        labels = d.labels()  # read here: the store's connection belongs to this thread
        self._rerank.loading = True
        d.status = f"re-ranking on {len(labels):,} labels…"
        try:
            seconds = await asyncio.to_thread(d.loop.rerank, labels)
        except (ValueError, BlueberryError) as error:
            d.status = f"re-ranking failed: {error}"
        else:
            d.ranked(len(labels), seconds)
        finally:
            self._rerank.loading = False

    def _refresh(self) -> None:
        d = self.state.discovery
        names = list(d.saved_selections()["name"])
        self._picker.options = ["", *names]
        self._picker.value = d.selection_name if d.selection_name in names else ""
        status = f" · {d.status}" if d.status else ""
        self._note.object = html.escape(d.queue_text() + status)

    def __panel__(self):
        unlabelled = pn.Column(pn.pane.HTML('<span style="font-size:13px">Unlabelled first</span>', margin=(0, 5)),
                               self._unlabelled, margin=0)
        return pn.Column(
            pn.FlexBox(self._order, unlabelled, self._next, self._rerank, self._picker, self._delete, self._name, self._save,
                       gap="4px", align_items="flex-end"),
            self._note, sizing_mode="stretch_width", stylesheets=[PANEL_CSS])
