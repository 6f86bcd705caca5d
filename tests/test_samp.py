"""SAMP (dashboard.samp): the selection to a hub's clients and their row selections back.

A real SAMP hub (pyvo.samp, the successor of astropy.samp) runs in the test on localhost, with its lockfile in a temporary
folder (SAMP_HUB and HOME point there, so the user's ~/.samp is never read or written),
and a test client stands in for TOPCAT: it receives the broadcast VOTable and the
pointAt, and sends ``table.select.rowList`` / ``table.highlight.row`` back.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from dashboard import samp
from dashboard.data import open_app_data
from dashboard.state import DashboardState
from tests.fakerun import make_fake_run

WAIT_S = 20
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return open_app_data(make_fake_run(tmp_path_factory.mktemp("samp") / "fake-run", n=120))


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """An environment whose SAMP lockfile points at a folder with no hub."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("SAMP_HUB", f"std-lockurl:{(tmp_path / 'samp-lock').as_uri()}")
    return tmp_path


@pytest.fixture
def hub(no_hub):
    from pyvo.samp import SAMPHubServer

    server = SAMPHubServer(web_profile=False, lockfile=str(no_hub / "samp-lock"), addr="127.0.0.1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Topcat:
    """A test SAMP client that records what it receives and subscribes like TOPCAT does."""

    def __init__(self):
        from pyvo.samp import SAMPIntegratedClient

        self.received: dict[str, dict] = {}
        self.event = threading.Condition()
        self.client = SAMPIntegratedClient(name="topcat-stand-in")
        self.client.connect()
        for mtype in (samp.LOAD_VOTABLE, samp.POINT_AT):
            self.client.bind_receive_notification(mtype, self._receive)

    def _receive(self, private_key, sender_id, mtype, params, extra):
        with self.event:
            self.received[mtype] = params
            self.event.notify_all()

    def wait(self, mtype: str) -> dict:
        with self.event:
            assert self.event.wait_for(lambda: mtype in self.received, timeout=WAIT_S), f"no {mtype} came"
            return self.received[mtype]

    def call(self, recipient: str, message: dict) -> dict:
        """Send ``message`` to ``recipient`` as a call and wait for its reply.

        An asynchronous call with a response handler, not the hub's callAndWait: pyvo's hub
        registers a callAndWait only after it has handed the message to a delivery thread, so
        a reply that beats it is dropped and the caller times out (seen once in CI on a loaded
        machine; the app had replied).
        """
        tag = f"call-{message['samp.mtype']}"
        self.client.bind_receive_response(tag, self._response)
        self.client.call(recipient, tag, message)
        return self.wait(tag)

    def _response(self, private_key, responder_id, msg_tag, response):
        with self.event:
            self.received[msg_tag] = response
            self.event.notify_all()

    def close(self):
        self.client.disconnect()


def wait_until(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_without_a_hub_the_link_says_why_and_sends_nothing(data, no_hub):
    link = samp.SampLink()
    state = DashboardState(data)
    state.select_neighbours()
    assert "No SAMP hub is running" in link.hub_problem()
    assert "No SAMP hub is running" in link.send_selection(state)
    assert link._client is None, "no hub: never registered"


def test_the_button_is_disabled_without_a_hub_and_says_why(data, no_hub, monkeypatch):
    from dashboard.views import SampButton

    monkeypatch.setattr(samp, "_link", samp.SampLink())
    state = DashboardState(data)
    state.select_neighbours()
    button = SampButton(state=state)
    assert button._button.disabled and "No SAMP hub" in button._button.description
    assert "no SAMP hub" in button._note.object


def test_selection_goes_to_topcat_and_its_row_selection_comes_back(data, hub, monkeypatch):
    from dashboard.views import SampButton

    link = samp.SampLink()
    monkeypatch.setattr(samp, "_link", link)
    topcat = Topcat()
    try:
        state = DashboardState(data)
        state.select_score_range(data.p90, np.inf)
        sent = state.selection.copy()
        button = SampButton(state=state)
        assert not button._button.disabled, button._button.description
        button._send()
        params = topcat.wait(samp.LOAD_VOTABLE)
        wait_until(lambda: "Sent" in button._note.object, f"the button's note says sent: {button._note.object!r}")
        assert f"Sent {len(sent):,} galaxies to 1 SAMP application" in button._note.object

        # The VOTable behind the URL holds the selection, in the app's order.
        assert params["url"].startswith("file://") and params["table-id"].startswith("blueberry-")
        path = urllib.request.url2pathname(urllib.parse.urlsplit(params["url"]).path)
        table = Table.read(path, format="votable")
        assert list(table["galaxy_id"]) == data.catalogue["galaxy_id"].to_numpy()[sent].tolist()
        assert str(table["ra"].unit) == "deg"

        # And the inspected galaxy's position.
        point = topcat.wait(samp.POINT_AT)
        row = state.row
        assert float(point["ra"]) == pytest.approx(data.catalogue["ra"].iat[row])
        assert float(point["dec"]) == pytest.approx(data.catalogue["dec"].iat[row])

        # TOPCAT broadcasts a subset of the table's rows (0-based row numbers, as strings).
        app_id = next(c for c in topcat.client.get_registered_clients()
                      if topcat.client.get_metadata(c).get("samp.name") == "Blueberry")
        picks = [0, 2, 3]
        topcat.client.notify(app_id, {"samp.mtype": samp.SELECT_ROWS, "samp.params": {
            "table-id": params["table-id"], "url": params["url"], "row-list": [str(i) for i in picks]}})
        wait_until(lambda: state.selection_source == "samp", "the app selects TOPCAT's rows")
        assert set(state.selection.tolist()) == set(sent[picks].tolist())

        # A highlighted row, sent as a call (TOPCAT waits for the answer), is selected and inspected.
        reply = topcat.call(app_id, {"samp.mtype": samp.HIGHLIGHT_ROW, "samp.params": {
            "table-id": params["table-id"], "url": params["url"], "row": "5"}})
        assert reply["samp.status"] == "samp.ok"
        wait_until(lambda: state.galaxy == data.catalogue["galaxy_id"].iat[int(sent[5])], "the highlight is inspected")
        assert state.selection.tolist() == [int(sent[5])]

        # A message about another application's table changes nothing.
        assert not link.apply(samp.SELECT_ROWS, {"table-id": "someone-else", "row-list": ["1"]})
    finally:
        topcat.close()
        samp.close()  # what the server's on_server_unloaded hook does
    assert link._client is None and link._dir is None, "unregistered, files deleted"


def test_a_highlight_reaches_the_session_on_its_document_thread(data, hub):
    """In a served session the change is scheduled on the session's document, never made on SAMP's thread."""
    link = samp.SampLink()
    state = DashboardState(data)
    state.select_neighbours()

    class Doc:  # the two members of a Bokeh document that the link uses
        session_context = object()
        scheduled = []

        def add_next_tick_callback(self, callback):
            self.scheduled.append(callback)

    doc = Doc()
    assert "no application that loads VOTables" in link.send_selection(state, doc)
    topcat = Topcat()
    try:
        assert "Sent 8 galaxies to 1 SAMP application" in link.send_selection(state, doc)
        # The hub delivers on its own threads: closing TOPCAT before both arrive makes the hub warn on one of them.
        topcat.wait(samp.LOAD_VOTABLE)
        topcat.wait(samp.POINT_AT)
        table_id = next(iter(link._tables))
        before = state.selection.copy()
        assert link.apply(samp.SELECT_ROWS, {"table-id": table_id, "row-list": ["0"]})
        assert np.array_equal(state.selection, before), "not yet: waits for the document's tick"
        doc.scheduled.pop()()
        assert state.selection.tolist() == [int(before[0])]
        assert not link.apply(samp.HIGHLIGHT_ROW, {"table-id": table_id, "row": "not a number"})
        assert not doc.scheduled
    finally:
        topcat.close()
        link.close()


def test_the_dashboard_and_its_state_load_no_samp_until_a_button_asks():
    code = ("import json, sys\n"
            "import dashboard.app, dashboard.state, dashboard.samp, dashboard.views\n"
            "print(json.dumps({m: m in sys.modules for m in ('pyvo.samp', 'astropy.samp')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"pyvo.samp": False, "astropy.samp": False}
