"""The state of one dashboard session: what is selected, what is inspected, how the map is coloured.

No widget or plot code lives here, so the whole behaviour of the app (every selection
gesture, the inspector's galaxy, the neighbours, the export rows) can be driven and tested
without a server. The views only translate gestures into calls of these methods and
redraw when the parameters change.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import param

from core.search import IdIndex, search
from dashboard import selection as sel
from dashboard.data import DIAGRAMS, AppData
from dashboard.discovery import Discovery

#: Selection sources, as shown next to the count.
SOURCES = {
    "": "", "latent": "latent map", "bpt_nii": "[NII] BPT diagram", "bpt_sii": "[SII] BPT diagram",
    "bpt_oi": "[OI] BPT diagram", "histogram": "score histogram", "neighbours": "similar galaxies",
    "tap": "tap on the latent map", "search": "search", "samp": "sent by a SAMP application (TOPCAT)",
    "saved": "saved selection", "python": "set from Python",
}
#: How far (screen pixels) a tap may land from a galaxy and still pick it.
TAP_TOLERANCE_PX = 6.0
#: How many of the selected rows the table shows (the most anomalous).
TABLE_ROWS = 1000


class DashboardState(param.Parameterized):
    """What one session shows; all the app's logic, none of its widgets."""

    data = param.ClassSelector(class_=AppData, constant=True, doc="The run, shared read-only by every session.")

    colour_by = param.Selector(default="anomaly_score", objects=["anomaly_score"],
                               doc="Catalogue column that colours the latent map.")

    selection = param.Array(default=np.zeros(0, dtype=np.int64),
                            doc="Row numbers of the selected galaxies, most anomalous first.")

    selection_source = param.Selector(default="", objects=list(SOURCES),
                                      doc="The view whose gesture made the current selection.")

    galaxy = param.String(default="", doc="galaxy_id of the inspected galaxy ('' for none); "
                                          "kept in the page URL as ?galaxy=.")

    def __init__(self, data: AppData, **params):
        super().__init__(data=data, **params)
        self.param.colour_by.objects = list(data.colour_options)
        #: Labels, the ranking's order, saved selections (dashboard/discovery.py).
        self.discovery = Discovery(self)
        if not self.galaxy:
            # Open on the most anomalous galaxy, so the inspector has something to say at once.
            self.galaxy = str(data.catalogue["galaxy_id"].iat[int(data.order[0])])

    # ------------------------------------------------------------------ inspected galaxy

    @property
    def row(self) -> int | None:
        """Row number of the inspected galaxy; None when there is none or the id is unknown."""
        return self.data.row_of(self.galaxy) if self.galaxy else None

    def inspect(self, row: int) -> None:
        """Inspect the galaxy in catalogue row ``row``."""
        self.galaxy = str(self.data.catalogue["galaxy_id"].iat[int(row)])

    @property
    def neighbours(self) -> np.ndarray:
        """Rows of the inspected galaxy's nearest neighbours in latent space (nearest first)."""
        row = self.row
        if row is None:
            return np.zeros(0, dtype=np.int64)
        return np.asarray(self.data.run.neighbours[row], dtype=np.int64)

    # ------------------------------------------------------------------ selections

    def select_mask(self, mask: np.ndarray, source: str) -> None:
        """Select the rows where ``mask`` is True (replacing the previous selection)."""
        # One update, so watchers run once and see the rows and their source together.
        self.param.update(selection=self.data.by_score(np.asarray(mask, dtype=bool)), selection_source=source)

    def select_rows(self, rows, source: str) -> None:
        """Select the given rows (any order; repeats dropped)."""
        mask = np.zeros(self.data.n, dtype=bool)
        mask[np.asarray(rows, dtype=np.int64)] = True
        self.select_mask(mask, source)

    def clear_selection(self) -> None:
        self.select_rows([], "")

    def _xy(self, space: str) -> tuple[np.ndarray, np.ndarray]:
        if space == "latent":
            return self.data.x, self.data.y
        if space.startswith("bpt_") and space[4:] in DIAGRAMS:
            return self.data.bpt[space[4:]]
        raise ValueError(f"unknown selection space {space!r}; use 'latent' or one of "
                         + ", ".join(f"'bpt_{k}'" for k in DIAGRAMS))

    def select_box(self, x0: float, x1: float, y0: float, y1: float, space: str = "latent") -> None:
        """Box select on the latent map (``space='latent'``) or a BPT diagram (``'bpt_nii'``, ...)."""
        x, y = self._xy(space)
        self.select_mask(sel.in_box(x, y, x0, x1, y0, y1), space)

    def select_lasso(self, xs, ys, space: str = "latent") -> None:
        """Lasso select: the galaxies inside the polygon (xs, ys) in that space's data coordinates."""
        x, y = self._xy(space)
        self.select_mask(sel.in_polygon(x, y, xs, ys), space)

    def tap(self, x: float, y: float, x_range, y_range, frame_px, tol_px: float = TAP_TOLERANCE_PX) -> int | None:
        """A tap on the latent map at data (x, y): selects and inspects the nearest galaxy within
        ``tol_px`` screen pixels (given the plot's current ranges and frame size in pixels).
        A tap on empty space changes nothing. Returns the row picked, or None."""
        row = sel.nearest(self.data.x, self.data.y, (x, y), x_range, y_range, frame_px, tol_px)
        if row is not None:
            self.param.update(selection=np.array([row], dtype=np.int64), selection_source="tap",
                              galaxy=str(self.data.catalogue["galaxy_id"].iat[row]))
        return row

    def select_score_range(self, lo: float, hi: float) -> None:
        """The galaxies whose anomaly score lies in [lo, hi]."""
        self.select_mask(sel.in_range(self.data.score, lo, hi), "histogram")

    def select_neighbours(self) -> None:
        """Make the inspected galaxy's nearest neighbours the selection."""
        self.select_rows(self.neighbours, "neighbours")

    def find(self, text: str) -> str:
        """The search box (``core.search``): a plate-IFU or MaNGA-ID (or its beginning), or a position.

        One galaxy found is selected and inspected; several are selected; none changes
        nothing. Returns the line to show the user.
        """
        index = self.data.derived("id_index", lambda: IdIndex(self.data.catalogue))
        result = search(self.data.catalogue, text, index)
        if len(result.rows) == 1:
            self.param.update(selection=result.rows, selection_source="search",
                              galaxy=str(self.data.catalogue["galaxy_id"].iat[int(result.rows[0])]))
        elif len(result.rows):
            self.select_rows(result.rows, "search")
        return result.message

    # ------------------------------------------------------------------ what the views show

    @property
    def count_text(self) -> str:
        """"N selected", plus where the selection came from."""
        n = len(self.selection)
        where = SOURCES[self.selection_source] if n else ""
        if where and self.discovery.selection_name:
            where += f" “{self.discovery.selection_name}”"
        return f"{n:,} selected" + (f" · {where}" if where else "")

    def table_frame(self) -> pd.DataFrame:
        """The selection table: ``dashboard.data.TABLE_COLUMNS`` (and the labels' interest and the ranking's
        relevance, once there are some) of the first ``TABLE_ROWS`` selected rows in the discovery order
        (most anomalous first unless re-ordered), indexed by catalogue row. Only these go to the browser:
        the table widget indexes every row it holds (half a second at a million), and nobody pages
        past a thousand; the count and the export still cover the whole selection."""
        rows = self.discovery.order()[:TABLE_ROWS] if len(self.selection) else self.selection
        return self.data.table_base.take(rows).assign(**self.discovery.table_columns(rows))

    def export_frame(self) -> pd.DataFrame:
        """Every catalogue column of the selected galaxies, most anomalous first."""
        return self.data.catalogue.take(self.selection).reset_index(drop=True)
