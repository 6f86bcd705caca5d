"""The search box: a plate-IFU, a MaNGA-ID (or their beginning) or a sky position (``core.search``)."""
from __future__ import annotations

import html

import panel as pn

from core.search import HELP
from dashboard.views.base import StateView


class SearchBox(StateView):
    """A text box; Enter runs :meth:`DashboardState.find` and shows what it found, or why nothing."""

    def __init__(self, **params):
        super().__init__(**params)
        self._input = pn.widgets.TextInput(placeholder='plate-IFU, MaNGA-ID or "RA Dec [radius]"', width=300,
                                           description=HELP, css_classes=["bb-search"])
        self._message = pn.pane.HTML("", css_classes=["bb-search-message"], styles={"font-size": "13px"},
                                     margin=(12, 5))
        self._input.param.watch(self._search, "enter_pressed")

    def _search(self, _event=None) -> None:
        self._message.object = html.escape(self.state.find(self._input.value_input or self._input.value))

    def __panel__(self):
        return pn.Row(self._input, self._message, margin=0)
