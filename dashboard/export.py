"""Export of the selected galaxies (CSV, FITS binary table, VOTable), streamed over plain HTTP.

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
twice. ``?format=fits`` and ``?format=votable`` give the same rows as a FITS binary table or
a VOTable with units and the run's provenance (``core.export``): written by astropy to a
temporary file in a worker thread (the server keeps answering meanwhile), then streamed.
"""
from __future__ import annotations

import re
import secrets
import tempfile
import threading
import weakref
from datetime import datetime

from tornado.ioloop import IOLoop
from tornado.web import HTTPError, RequestHandler

from core.export import FORMATS, VOTABLE_MAX_ROWS, export_info, write_selection
from core.tables import iter_csv

#: Without the HTTP route, larger selections are not sent through the websocket.
WEBSOCKET_MAX_ROWS = 100_000
#: URL path of the route (relative to the server root) and its pattern.
ROUTE_PREFIX = "blueberry/export"
EXPORT_PATTERN = rf"/{ROUTE_PREFIX}/([A-Za-z0-9_\-]+)"
#: Bytes per chunk when a written FITS / VOTable file is streamed.
FILE_CHUNK_BYTES = 1 << 20

_sessions: dict[str, weakref.ref] = {}
_exporting: set[str] = set()  # tokens whose export is being streamed now
_lock = threading.Lock()
_route_served = False


def export_filename(run_name: str, when: datetime | None = None, fmt: str = "csv") -> str:
    """``<run>_<YYYYmmdd-HHMMSS>.<ext>`` (csv, fits, vot), the run name reduced to filename-safe characters."""
    when = when or datetime.now()
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_name).strip("._") or "blueberry"
    return f"{stem}_{when:%Y%m%d-%H%M%S}.{FORMATS[fmt][0]}"


def too_big(fmt: str, n_rows: int) -> str:
    """Why ``n_rows`` cannot be exported as ``fmt`` ('' when they can)."""
    if fmt == "votable" and n_rows > VOTABLE_MAX_ROWS:
        return (f"VOTable exports stop at {VOTABLE_MAX_ROWS:,} rows (astropy writes them cell by cell); "
                "export FITS, which TOPCAT and astropy read as well")
    return ""


def write_file(fileobj, state, frame, fmt: str) -> None:
    """Write ``frame``, the selection of ``state``, as a FITS / VOTable file with the run's provenance."""
    write_selection(fileobj, frame, export_info(state.data.run.manifest, len(frame)), fmt)


# ---------------------------------------------------------------- session registry


def register(state) -> str:
    """Register a session's state; returns the secret token of its export URL.

    A state registered again (one export button per format) gets its first token back, so
    "one export at a time" holds per session, whatever the format.
    """
    with _lock:
        token = next((t for t, ref in _sessions.items() if ref() is state), None) or secrets.token_urlsafe(24)
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


def export_url(token: str, base_url: str = "/", fmt: str = "csv") -> str:
    """The download URL of a session in format ``fmt``, under the server's root path."""
    return f"{base_url.rstrip('/')}/{ROUTE_PREFIX}/{token}" + ("" if fmt == "csv" else f"?format={fmt}")


def route_served() -> bool:
    """Whether this server process serves :data:`ROUTES` (``--plugins dashboard.export``)."""
    return _route_served


# ---------------------------------------------------------------- the route


class ExportHandler(RequestHandler):
    """GET /blueberry/export/<token>[?format=fits|votable]: the session's selected galaxies as an attachment."""

    async def get(self, token: str) -> None:
        fmt = self.get_argument("format", "csv")
        if fmt not in FORMATS:
            raise HTTPError(400, f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
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
            if too_big(fmt, len(frame)):
                raise HTTPError(413, too_big(fmt, len(frame)))
            self.set_header("Content-Type", FORMATS[fmt][1])
            self.set_header("Content-Disposition",
                            f'attachment; filename="{export_filename(state.data.name, fmt=fmt)}"')
            self.set_header("Cache-Control", "no-store")
            self.set_header("X-Blueberry-Rows", str(len(frame)))
            if fmt == "csv":
                for chunk in iter_csv(frame):
                    self.write(chunk.encode("utf-8"))
                    # Flushing per chunk streams the file (chunked transfer) instead of buffering it all.
                    await self.flush()
                return
            with tempfile.TemporaryFile() as fh:
                # FITS needs its row count and widths before the rows, so the file is written whole
                # (off the event loop, which keeps serving the sessions), then streamed.
                await IOLoop.current().run_in_executor(None, write_file, fh, state, frame, fmt)
                del frame
                fh.seek(0)
                while chunk := fh.read(FILE_CHUNK_BYTES):
                    self.write(chunk)
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

