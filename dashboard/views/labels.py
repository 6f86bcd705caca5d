"""The inspected galaxy's interest label: six buttons, a note, its history, and the keyboard shortcuts.

Keys (anywhere on the page but in a text box): 0 to 5 label the inspected galaxy, n / p
inspect the next / previous galaxy in the table's order. The labels go to the run's store
(``dashboard/discovery.py``), so another session sees them when it inspects the galaxy.
"""
from __future__ import annotations

import html

import pandas as pd
import panel as pn
import param
from panel.reactive import ReactiveHTML

from core.labels import MAX_INTEREST, MIN_INTEREST
from dashboard.views.base import StateView, section_title

#: How many of a galaxy's labels its history shows, newest first.
HISTORY_ROWS = 5
#: Under the history: what the interest values mean and the keys (in the history's pane: one pane less to lay out).
HINT = ('<p style="color:#666;font-size:12px">0 = nothing to see … 5 = a discovery. '
        'Keys: 0–5 label, n / p next / previous in the table.</p>')


class KeyShortcuts(ReactiveHTML):
    """An invisible element that reports the page's shortcut keys to Python.

    One listener on the document (keys typed into a text box, or with a modifier, are
    ignored; the box is found through ``composedPath`` because Panel's widgets live in
    shadow roots, whose events reach the document retargeted to their host).
    """

    pressed = param.String(default="", doc="The last shortcut pressed, with a counter so a repeat is a change.")

    keys = param.String(default="012345np", constant=True, doc="The keys reported.")

    _template = '<div id="keys" style="display:none"></div>'

    _scripts = {
        "render": """
          let count = 0;
          state.handler = (e) => {
            const target = e.composedPath()[0];
            const typing = target && (target.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(target.tagName));
            if (typing || e.ctrlKey || e.metaKey || e.altKey || e.key.length !== 1 || !data.keys.includes(e.key)) return;
            count += 1;
            data.pressed = e.key + ' ' + count;
          };
          document.addEventListener('keydown', state.handler);
        """,
        "remove": "document.removeEventListener('keydown', state.handler);",
    }


class LabelPanel(StateView):
    """Interest 0-5 of the inspected galaxy, an optional note, and who labelled it when."""

    def __init__(self, **params):
        super().__init__(**params)
        self._buttons = pn.widgets.RadioButtonGroup(options=[str(v) for v in range(MIN_INTEREST, MAX_INTEREST + 1)], value=None,
                                                    color="primary", variant="outline", width=220)
        self._note = pn.widgets.TextInput(placeholder="note (Enter saves it with the label)", width=220)
        self._history = pn.pane.HTML("", width=230, css_classes=["bb-labels"], margin=(0, 10))
        self._keys = KeyShortcuts(width=0, height=0, margin=0)
        self._syncing = False  # True while the buttons show a stored value (not a click)
        self._buttons.param.watch(self._clicked, "value")
        self._note.param.watch(self._note_entered, "enter_pressed")
        self._keys.param.watch(self._key, "pressed")
        self.watch(self._update, "galaxy")
        self.state.discovery.param.watch(lambda *_: self._update(), ["labels_version"])
        self._update()

    def _label(self, value: int) -> None:
        if self.state.row is not None:
            self.state.discovery.label(value, self._note.value_input or self._note.value)

    def _clicked(self, event) -> None:
        if not self._syncing and event.new is not None:
            self._label(int(event.new))

    def _note_entered(self, _event) -> None:
        current = self.state.discovery.interest_of()
        if current is not None:
            self._label(current)

    def _key(self, event) -> None:
        key = event.new.split(" ")[0]
        if key.isdigit():
            self._label(int(key))
        elif key == "n":
            self.state.discovery.next_galaxy()
        elif key == "p":
            self.state.discovery.previous_galaxy()

    def _update(self) -> None:
        history = self.state.discovery.history() if self.state.row is not None else None
        current = None if history is None or not len(history) or pd.isna(history["interest"].iat[-1]) \
            else history.iloc[-1]
        self._syncing = True
        try:
            self._buttons.value = None if current is None else str(int(current["interest"]))
        finally:
            self._syncing = False
        note = "" if current is None else str(current["note"] or "")
        self._note.param.update(value=note, value_input=note)  # both: a label reads what is being typed
        if history is None or not len(history):
            self._history.object = '<span style="color:#666;font-size:12px">Not labelled yet.</span>' + HINT
            return
        rows = "".join(
            f"<tr><td><b>{'–' if pd.isna(r.interest) else int(r.interest)}</b></td><td>{html.escape(str(r.user))}</td>"
            f"<td>{html.escape(str(r.time)[:16].replace('T', ' '))}</td><td>{html.escape(str(r.note or ''))}</td></tr>"
            for r in history.iloc[::-1].head(HISTORY_ROWS).itertuples())
        self._history.object = f'<table class="bb-history" style="font-size:12px">{rows}</table>' + HINT

    def __panel__(self):
        return pn.Column(section_title("Interest"), self._buttons, self._note, self._history, self._keys, width=250)
