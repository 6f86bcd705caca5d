"""The app from Python: ``explore(run_dir)`` returns an :class:`Explorer` (see docs/ARCHITECTURE.md).

In Jupyter the object shows the whole app inline (run ``pn.extension()`` first, as for any
Panel output); its properties are pandas DataFrames of what the app shows, and its methods
are the app's gestures, so a selection made in the page is ``app.selection`` in the next
cell and ``app.select(ids)`` lights up in the page. Without Jupyter everything but the
inline display works the same (a script, a test).
"""
from __future__ import annotations

import pandas as pd

from dashboard.compare import Comparison
from dashboard.data import open_app_data
from dashboard.discovery import CURRENT, REST
from dashboard.state import DashboardState


class Explorer:
    """One session of the app on a run, driven from Python; the page is built on first display."""

    def __init__(self, run_dir, *, user: str | None = None, galaxy: str | None = None):
        # The plain open, not the server's `prepared`: its warm-up compiles every view's kernels
        # (many seconds), which a notebook pays only for the views it displays.
        self.data = open_app_data(run_dir)
        self.state = DashboardState(self.data, **({"galaxy": str(galaxy)} if galaxy else {}))
        if user:
            self.state.discovery.user = user
        self._page = None

    def __repr__(self) -> str:
        return (f"<Explorer of {self.data.name}: {self.data.n:,} galaxies, {len(self.state.selection):,} selected, "
                f"inspecting {self.state.galaxy or 'none'}>")

    # ------------------------------------------------------------------ the page

    def panel(self):
        """The app's page (a Panel layout), built once and tied to this object's state."""
        if self._page is None:
            from dashboard.app import build_app

            _, self._page = build_app(self.data, self.state)
        return self._page

    def _repr_mimebundle_(self, include=None, exclude=None):
        return self.panel()._repr_mimebundle_(include, exclude)

    def servable(self, title: str = "Blueberry"):
        """Mark the page servable (``panel serve notebook.ipynb``), as any Panel object."""
        return self.panel().servable(title=title)

    # ------------------------------------------------------------------ DataFrames

    @property
    def selection(self) -> pd.DataFrame:
        """The selected galaxies, every catalogue column, most anomalous first."""
        return self.state.export_frame()

    @property
    def labels(self) -> pd.DataFrame:
        """The latest interest label of every labelled galaxy: galaxy_id, interest, note, user, time."""
        return self.state.discovery.labels()

    @property
    def ranking(self) -> pd.DataFrame:
        """galaxy_id, relevance, uncertainty, acquisition of every galaxy, in catalogue order (before the
        first re-rank: the anomaly percentile as relevance and acquisition)."""
        return self.state.discovery.ranking_frame()

    @property
    def selections(self) -> pd.DataFrame:
        """The run's saved selections: name, n, user, time."""
        return self.state.discovery.saved_selections()

    # ------------------------------------------------------------------ gestures

    def select(self, galaxy_ids) -> int:
        """Make these galaxies (ids, any order) the selection; returns how many. Unknown ids are an error
        naming them, and nothing changes."""
        ids = [galaxy_ids] if isinstance(galaxy_ids, str) else [str(g) for g in galaxy_ids]
        rows = self.data.rows_of(ids)
        unknown = [g for g, r in zip(ids, rows) if r < 0]
        if unknown:
            more = f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else ""
            raise KeyError(f"not in the run {self.data.name}: {', '.join(unknown[:5])}{more}")
        self.state.select_rows(rows, "python")
        return len(self.state.selection)

    def inspect(self, galaxy_id: str) -> None:
        if self.data.row_of(str(galaxy_id)) is None:
            raise KeyError(f"not in the run {self.data.name}: {galaxy_id}")
        self.state.galaxy = str(galaxy_id)

    def label(self, galaxy_id: str, interest: int, note: str = "") -> None:
        """Label a galaxy 0 (nothing to see) to 5 (a discovery), with an optional note."""
        self.state.discovery.label(interest, note, galaxy=galaxy_id)

    def rerank(self) -> pd.DataFrame:
        """Re-rank every galaxy on the labels so far; returns the new ranking."""
        self.state.discovery.rerank()
        return self.ranking

    def save_selection(self, name: str) -> int:
        return self.state.discovery.save_selection(name)

    def open_selection(self, name: str) -> int:
        return self.state.discovery.open_selection(name)

    def compare(self, a: str = CURRENT, b: str = REST) -> Comparison:
        """Compare two saved selections (or the current one, or one against the rest): see dashboard.compare."""
        return self.state.discovery.compare(a, b)
