"""The next visitor's state and views, built ahead while the server is idle.

Building a session's own views (the latent map's datashading, the inspector's figure, the
table, the histogram) takes ~0.3 s on two cores, and about twice that while the browser
loads the page beside it. So the server builds them for the next session of a run a little
after a page has painted, in a thread, and a new session takes them: its page then costs
only Panel's and Bokeh's models (docs/ARCHITECTURE.md, "How the page is drawn").

A spare is thrown away, and the views built afresh, when the run's labels, saved selections
or ranking changed after it was built: a session never starts from what another has changed.
"""
from __future__ import annotations

import logging
import threading

from dashboard.data import AppData
from dashboard.discovery import run_loop
from dashboard.state import DashboardState

#: Seconds from a page's "document ready" to building the next spare: the browser paints the
#: page in that time, and the two would otherwise share the cores.
DELAY_S = 2.0

_lock = threading.Lock()
_spares: dict[int, tuple] = {}  # id(AppData) -> (the run's stamp, the AppData, its state, its views)
_building: set[int] = set()  # ids of the AppData whose spare a thread is building


def page_views(state: DashboardState) -> dict:
    """The views a page shows at load, built on ``state``: view class -> view."""
    from dashboard.views import DiscoveryBar, Inspector, LatentMap, ScoreHistogram, SelectionTable

    return {cls: cls(state=state) for cls in (LatentMap, SelectionTable, DiscoveryBar, ScoreHistogram, Inspector)}


def _stamp(data: AppData) -> tuple:
    """Changes whenever what a new session starts from does: the labels, saved selections and ranking."""
    loop = run_loop(data)
    loop.refresh()
    return loop.store.stamp(), loop.version


def build(data: AppData) -> None:
    """Build the spare of ``data``'s run now, unless there is one (or one is being built)."""
    key = id(data)
    with _lock:
        if key in _spares or key in _building:
            return
        _building.add(key)
    try:
        stamp = _stamp(data)  # read first: a change during the build makes the spare stale
        state = DashboardState(data)
        spare = (stamp, data, state, page_views(state))
        with _lock:
            _spares[key] = spare
    except Exception:  # a spare is an optimisation: the next session builds its views itself
        logging.getLogger("blueberry.dashboard").exception("could not build the next session's views")
    finally:
        with _lock:
            _building.discard(key)


def build_later(data: AppData) -> None:
    """Build the spare of ``data``'s run :data:`DELAY_S` from now, in a thread."""
    timer = threading.Timer(DELAY_S, build, args=(data,))
    timer.daemon = True
    timer.start()


def take(data: AppData) -> tuple[DashboardState, dict]:
    """A new session's state and page views: the spare if it is still current, else built now."""
    with _lock:
        spare = _spares.pop(id(data), None)
    if spare is not None and spare[1] is data and spare[0] == _stamp(data):
        return spare[2], spare[3]
    state = DashboardState(data)
    return state, page_views(state)
