"""The "Send to TOPCAT / Aladin" button (``dashboard.samp``): enabled only while a SAMP hub is running."""
from __future__ import annotations

import html
import threading

import panel as pn

from dashboard.views.base import StateView

LABEL = "Send to TOPCAT / Aladin"
TOOLTIP = ("Broadcast the selection as a VOTable and point at the inspected galaxy over SAMP; "
           "rows selected in TOPCAT come back as the selection")
#: The note beside a button disabled for want of a hub (its tooltip has the whole reason).
NO_HUB_NOTE = "no SAMP hub (start TOPCAT or Aladin)"
#: Milliseconds between two looks for a hub (started or stopped after the page loaded).
RECHECK_MS = 10_000


class SampButton(StateView):
    """Sends the selection over SAMP; disabled, saying why, without a hub or a selection."""

    def __init__(self, **params):
        super().__init__(**params)
        self._button = pn.widgets.Button(label=LABEL, width=190, description=TOOLTIP, css_classes=["bb-samp"])
        self._note = pn.pane.HTML("", css_classes=["bb-samp-note"], styles={"font-size": "12px", "color": "#555"},
                                  margin=(12, 5), max_width=420)
        self._button.on_click(self._send)
        self.watch(self._update, "selection")
        self._update()
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:
            pn.state.add_periodic_callback(self._update, period=RECHECK_MS)

    def _update(self) -> None:
        from dashboard.samp import link

        problem = link().hub_problem()
        empty = not len(self.state.selection)
        self._button.disabled = bool(problem) or empty
        self._button.description = problem or ("Select galaxies first. " + TOOLTIP if empty else TOOLTIP)
        if self._note.object in ("", NO_HUB_NOTE):  # never hide the outcome of a send
            self._note.object = NO_HUB_NOTE if problem else ""

    def _send(self, _event=None) -> None:
        from dashboard.samp import link

        doc = pn.state.curdoc
        self._note.object = "Sending…"

        def work():
            message = html.escape(link().send_selection(self.state, doc))
            if doc is not None and doc.session_context is not None:
                doc.add_next_tick_callback(lambda: setattr(self._note, "object", message))
            else:
                self._note.object = message

        # Writing the VOTable takes seconds for a large selection: off the session's thread.
        threading.Thread(target=work, name="blueberry-samp-send", daemon=True).start()

    def __panel__(self):
        return pn.Row(self._button, self._note, margin=0)
