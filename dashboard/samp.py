"""SAMP: the selection to TOPCAT, Aladin (any SAMP application), and their row selections back.

SAMP (the IVOA Simple Application Messaging Protocol) lets desktop tools talk through a
*hub* on the user's machine; TOPCAT and Aladin start one. When a hub is running, the
server process registers once as the SAMP client "Blueberry" (lazily, at the first send;
it unregisters when the process exits) and, for the "Send to TOPCAT / Aladin" button:

- writes the selection as a VOTable (``core.export``) to a temporary file and broadcasts
  ``table.load.votable`` with that file's ``file://`` URL and a fresh ``table-id``;
- broadcasts ``coord.pointAt.sky`` at the inspected galaxy, so Aladin centres on it.

When a TOPCAT user then highlights a row of that table (``table.highlight.row``) or
broadcasts a subset of it (``table.select.rowList``), the message names the table-id; the
session that sent it selects those galaxies (a highlighted one is also inspected), through
its state on its own Bokeh document's thread (``doc.add_next_tick_callback``, the one
thread-safe document method), since SAMP messages arrive on the client's own thread.

The hub is the *server's* machine's: the app is served to localhost by default, so that is
the user's. pyvo.samp (astropy.samp until astropy 8 deprecated it) is imported only here, and only when a view asks, so a session
without a hub pays nothing. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np

from core.export import VOTABLE_MAX_ROWS, export_info, write_selection

LOAD_VOTABLE = "table.load.votable"
POINT_AT = "coord.pointAt.sky"
HIGHLIGHT_ROW = "table.highlight.row"
SELECT_ROWS = "table.select.rowList"
#: How long an answer to "is a hub running?" is reused (every session's button asks).
HUB_CHECK_SECONDS = 5.0
#: Tables sent and remembered (their files and row numbers), per server process; older ones are forgotten.
TABLES_KEPT = 20
#: What the app tells the hub about itself.
METADATA = {"samp.name": "Blueberry", "samp.description.text": "Odd galaxies in integral-field surveys: "
            "sends selections as VOTables, selects the rows other applications select"}


class SampLink:
    """The server process's one SAMP client and the tables it has sent."""

    def __init__(self):
        self._lock = threading.RLock()
        self._client = None
        self._dir: Path | None = None  # temporary folder of the sent VOTables
        self._tables: OrderedDict[str, tuple] = OrderedDict()  # table-id -> (state ref, doc ref, rows, path)
        self._checked = (-np.inf, "")  # (monotonic time, answer) of the last hub check

    # ---------------------------------------------------------------- the hub

    def hub_problem(self) -> str:
        """'' when a SAMP hub is running on this machine, else why the button cannot send (cached briefly)."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked[0] < HUB_CHECK_SECONDS:
                return self._checked[1]
        try:
            from pyvo.samp import SAMPHubError
            from pyvo.samp.lockfile_helpers import get_main_running_hub

            get_main_running_hub()
            problem = ""
        except SAMPHubError:
            problem = "No SAMP hub is running on the server's machine: start TOPCAT or Aladin, then try again."
        except Exception as error:  # a damaged lockfile, an unsupported SAMP_HUB profile
            problem = f"Cannot reach a SAMP hub ({type(error).__name__}: {error})."
        with self._lock:
            self._checked = (time.monotonic(), problem)
        return problem

    def _connected(self):
        """The registered client, registering (again) when there is none or the hub went away."""
        from pyvo.samp import SAMPIntegratedClient

        with self._lock:
            if self._client is not None and self._client.is_connected:
                try:
                    self._client.ping()
                    return self._client
                except Exception:  # the hub is gone: register with the one running now
                    self._drop_client()
            client = SAMPIntegratedClient(name="Blueberry", metadata=METADATA, callable=True)
            client.connect()
            for mtype in (HIGHLIGHT_ROW, SELECT_ROWS):
                client.bind_receive_message(mtype, self._received)
            self._client = client
            return client

    def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None and client.is_connected:
            try:
                client.disconnect()
            except Exception:  # the hub may already be gone; nothing to unregister from
                pass

    def close(self) -> None:
        """Unregister from the hub and delete the sent files (at process exit)."""
        with self._lock:
            self._drop_client()
            self._tables.clear()
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None

    # ---------------------------------------------------------------- sending

    def send_selection(self, state, doc=None) -> str:
        """Broadcast ``state``'s selection as a VOTable, then point at its inspected galaxy; returns what happened."""
        rows = np.asarray(state.selection, dtype=np.int64).copy()
        if not len(rows):
            return "Nothing selected to send."
        if len(rows) > VOTABLE_MAX_ROWS:
            return f"SAMP sends at most {VOTABLE_MAX_ROWS:,} rows (a VOTable); export FITS for larger selections."
        problem = self.hub_problem()
        if problem:
            return problem
        frame = state.data.catalogue.take(rows).reset_index(drop=True)
        table_id = f"blueberry-{uuid.uuid4().hex[:12]}"
        with self._lock:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="blueberry-samp-"))
            path = self._dir / f"{table_id}.vot"
        with open(path, "wb") as fh:
            write_selection(fh, frame, export_info(state.data.run.manifest, len(frame)), "votable")
        name = f"{state.data.name}: {len(rows):,} galaxies"
        try:
            client = self._connected()
            listeners = len(client.get_subscribed_clients(LOAD_VOTABLE))
            if not listeners:  # the hub refuses a broadcast that nobody receives
                path.unlink()
                return "The SAMP hub has no application that loads VOTables: start TOPCAT or Aladin."
            self._remember(table_id, state, doc, rows, path)
            client.notify_all({"samp.mtype": LOAD_VOTABLE,
                               "samp.params": {"url": path.as_uri(), "table-id": table_id, "name": name}})
            self.point_at(state)
        except Exception as error:  # the hub went away between the check and the send
            with self._lock:
                self._checked = (-np.inf, "")
            return f"Could not send to the SAMP hub ({type(error).__name__}: {error})."
        return f"Sent {len(rows):,} galaxies to {listeners} SAMP application{'s' if listeners != 1 else ''}."

    def point_at(self, state) -> None:
        """Broadcast ``coord.pointAt.sky`` at the inspected galaxy (if it has a position)."""
        row = state.row
        if row is None:
            return
        ra, dec = (float(state.data.catalogue[c].iat[row]) for c in ("ra", "dec"))
        client = self._connected()
        if np.isfinite(ra) and np.isfinite(dec) and client.get_subscribed_clients(POINT_AT):
            client.notify_all({"samp.mtype": POINT_AT,
                                          "samp.params": {"ra": repr(ra), "dec": repr(dec)}})

    def _remember(self, table_id, state, doc, rows, path) -> None:
        with self._lock:
            self._tables[table_id] = (weakref.ref(state), weakref.ref(doc) if doc is not None else None, rows, path)
            while len(self._tables) > TABLES_KEPT:
                *_, old_path = self._tables.popitem(last=False)[1]
                old_path.unlink(missing_ok=True)

    # ---------------------------------------------------------------- receiving

    def _received(self, private_key, sender_id, msg_id, mtype, params, extra) -> None:
        """A row highlight or a row list from another application (on the SAMP client's thread)."""
        try:
            self.apply(mtype, params)
        finally:
            if msg_id is not None:  # a call, not a notification: the sender waits for an answer
                self._client.reply(msg_id, {"samp.status": "samp.ok", "samp.result": {}})

    def apply(self, mtype: str, params: dict) -> bool:
        """Select (and for a highlight, inspect) the galaxies a SAMP message names; False when it is not ours."""
        with self._lock:
            entry = self._tables.get(str(params.get("table-id", "")))
            if entry is None:  # some senders name the table by its URL only
                entry = next((e for e in self._tables.values() if e[3].as_uri() == params.get("url")), None)
        if entry is None:
            return False
        state_ref, doc_ref, rows, _ = entry
        state = state_ref()
        if state is None:
            return False
        try:
            picked = [int(params["row"])] if mtype == HIGHLIGHT_ROW else [int(r) for r in params.get("row-list", [])]
        except (KeyError, TypeError, ValueError):
            return False
        picked = rows[[i for i in picked if 0 <= i < len(rows)]]

        def select():
            if mtype == HIGHLIGHT_ROW and len(picked):
                state.param.update(selection=picked, selection_source="samp",
                                   galaxy=str(state.data.catalogue["galaxy_id"].iat[int(picked[0])]))
            else:
                state.select_rows(picked, "samp")

        doc = doc_ref() if doc_ref is not None else None
        if doc is not None and doc.session_context is not None:
            doc.add_next_tick_callback(select)
        else:  # no served session (tests, scripts): change the state here
            select()
        return True


_link: SampLink | None = None
_link_lock = threading.Lock()


def link() -> SampLink:
    """The server process's :class:`SampLink`, made at first use and closed at exit."""
    global _link
    with _link_lock:
        if _link is None:
            _link = SampLink()
            atexit.register(_link.close)
        return _link


def close() -> None:
    """Unregister from the hub and delete the sent files, if this process ever used SAMP (server shutdown)."""
    with _link_lock:
        if _link is not None:
            _link.close()
