"""CSV export of the selected galaxies, streamed over plain HTTP.

A selection can hold a million galaxies, far too much for one base64 message on the
session's websocket (Panel's ``FileDownload``). The Export CSV button therefore points the
browser at an HTTP route served by this module's Tornado handler, which streams the
selected rows in chunks. The route is added the way Panel documents for custom endpoints
("Add custom endpoints to the Panel Server": a module declaring ``ROUTES``, passed to
``panel serve --plugins``)::

    panel serve dashboard --plugins dashboard.export --args --run runs/demo

Each session registers its state under a random token (:func:`register`); the URL
carries that token, so a download only ever sees its own session's selection. Started
without the plugin, the app falls back to ``FileDownload`` for selections below
:data:`WEBSOCKET_MAX_ROWS` and says how to enable larger ones.

The CSV is the project's one spreadsheet-safe writer (``core.tables``): formula-like text
cells are neutralised and a cell holding a line break stays in its row. A session streams
at most one export at a time, made safe chunk by chunk, so a large selection is never held
twice.
"""
from __future__ import annotations

import re
import secrets
import threading
import weakref
from datetime import datetime

from tornado.web import HTTPError, RequestHandler

from core.tables import iter_csv

#: Without the HTTP route, larger selections are not sent through the websocket.
WEBSOCKET_MAX_ROWS = 100_000
#: URL path of the route (relative to the server root) and its pattern.
ROUTE_PREFIX = "blueberry/export"
EXPORT_PATTERN = rf"/{ROUTE_PREFIX}/([A-Za-z0-9_\-]+)"

_sessions: dict[str, weakref.ref] = {}
_exporting: set[str] = set()  # tokens whose export is being streamed now
_lock = threading.Lock()
_route_served = False


def export_filename(run_name: str, when: datetime | None = None) -> str:
    """``<run>_<YYYYmmdd-HHMMSS>.csv``, the run name reduced to filename-safe characters."""
    when = when or datetime.now()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name).strip("._") or "blueberry"
    return f"{stem}_{when:%Y%m%d-%H%M%S}.csv"


# ---------------------------------------------------------------- session registry


def register(state) -> str:
    """Register a session's state; returns the secret token of its export URL."""
    token = secrets.token_urlsafe(24)
    with _lock:
        _sessions[token] = weakref.ref(state)
    return token


def unregister(token: str) -> None:
    with _lock:
        _sessions.pop(token, None)


def lookup(token: str):
    """The live state registered under ``token``, or None."""
    with _lock:
        ref = _sessions.get(token)
    return ref() if ref is not None else None


def export_url(token: str, base_url: str = "/") -> str:
    """The download URL of a session, under the server's root path."""
    return f"{base_url.rstrip('/')}/{ROUTE_PREFIX}/{token}"


def route_served() -> bool:
    """Whether this server process serves :data:`ROUTES` (``--plugins dashboard.export``)."""
    return _route_served


# ---------------------------------------------------------------- the route


class ExportHandler(RequestHandler):
    """GET /blueberry/export/<token>: the session's selected galaxies as a CSV attachment."""

    async def get(self, token: str) -> None:
        state = lookup(token)
        if state is None:
            raise HTTPError(404, "no such dashboard session (it may have been closed); reload the page")
        with _lock:
            busy = token in _exporting
            _exporting.add(token)
        if busy:  # a second download of the same session would hold the selection once more
            raise HTTPError(429, "this session is already exporting; wait for that download to finish")
        try:
            frame = state.export_frame()
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="{export_filename(state.data.name)}"')
            self.set_header("Cache-Control", "no-store")
            self.set_header("X-Blueberry-Rows", str(len(frame)))
            for chunk in iter_csv(frame):
                self.write(chunk.encode("utf-8"))
                # Flushing per chunk streams the file (chunked transfer) instead of buffering it all.
                await self.flush()
        finally:
            with _lock:
                _exporting.discard(token)


def routes() -> list[tuple]:
    """The Tornado routes, for ``pn.serve(..., extra_patterns=routes())``."""
    global _route_served
    _route_served = True
    return [(EXPORT_PATTERN, ExportHandler, {})]


def __getattr__(name: str):
    # Panel's --plugins loader reads the module's ROUTES once at server start. Answering it
    # from this hook records that the route is live, so sessions can tell whether the
    # Export button may link to it (a plain ROUTES list could not tell them).
    if name == "ROUTES":
        return routes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

