"""The discovery loop in the app: interest labels, the re-ranked order, the label-next queue, saved selections.

Labels and saved selections live in the run (``core.labels.LabelStore``, ``labels.sqlite``), so
every session, every server process and a notebook read the same ones, and they outlive the
server; the ranking (``core.rank``) lives in the run's ``ranking.parquet``. A server process
shares one :class:`RunLoop` per run between its sessions; each session adds a
:class:`Discovery`, held by its :class:`~dashboard.state.DashboardState` as ``state.discovery``.
No widget code here: ``views/labels.py``, ``views/discovery.py`` and ``views/compare.py`` draw
it, so the loop is tested without a server. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import param

from core.errors import BlueberryError
from core.labels import LABEL_COLUMNS, LabelStore, check_interest, os_user
from core.rank import RANKING_FILE, rank, read_ranking, write_ranking
from dashboard.compare import Comparison, compare_rows
from dashboard.data import AppData

if TYPE_CHECKING:
    from dashboard.state import DashboardState

LOG = logging.getLogger("blueberry.dashboard")
#: The ranking's columns the app reads, beside galaxy_id (core.rank's contract).
RANKING_COLUMNS = ("relevance", "uncertainty", "acquisition")
#: Orders of the table (and of n / p), as shown -> the column that sorts it, highest first.
ORDERS = {"anomaly score": "anomaly_score", "relevance": "relevance", "label next (acquisition)": "acquisition"}
#: Longest selection name; names go into URLs and file names, so they are short and printable.
MAX_NAME = 60
#: Names of the groups a comparison can take besides saved selections.
CURRENT, REST = "(current selection)", "(the rest)"


class RunLoop:
    """What every session on one run shares: its label store and its latest ranking.

    The store opens a connection per call (so any thread may use it) and creates its file at
    the first label or saved selection: a run nobody labels stays as ``embed`` left it.
    """

    def __init__(self, data: AppData):
        self.data = data
        self.store = LabelStore(data.run.path)
        self._lock = threading.Lock()  # one re-rank at a time; a second click waits for the first
        self.ranking: pd.DataFrame | None = None  # RANKING_COLUMNS in catalogue row order, or None
        self.version = 0  # counts the rankings this process has taken in, so sessions see a new one
        self._orders: dict = {}  # ranking column -> every row sorted by it (for this version)
        self.problem = ""  # why the labels or the ranking could not be read, for the status line
        self._seen = None  # (mtime_ns, size) of the ranking.parquet taken in
        self._cache: dict = {}  # what -> (the store's stamp when read, the value): see _read
        self.refresh()

    def refresh(self) -> None:
        """Take in ranking.parquet when it changed since it was last read: a re-rank by another server
        process or by ``python -m train rank`` reaches the next session opened here (a stat per session)."""
        path = self.data.run.path / RANKING_FILE
        try:
            st = path.stat()
        except FileNotFoundError:
            return
        if self._seen == (st.st_mtime_ns, st.st_size):
            return
        self._seen = (st.st_mtime_ns, st.st_size)
        try:
            self._take(read_ranking(self.data.run.path))
        except BlueberryError as error:  # a damaged ranking.parquet: the app works without it until a re-rank
            self.problem = str(error)
            LOG.warning("ignoring the ranking: %s", error)

    # ------------------------------------------------------------------ labels and selections

    def _read(self, what: str, read):
        """``read()``'s value, read again only when the store changed (every view asks at every
        selection; a stat is cheap, a query and a DataFrame are not)."""
        stamp = self.store.stamp()
        cached = self._cache.get(what)
        if cached is None or cached[0] != stamp:
            cached = self._cache[what] = (stamp, read())
        return cached[1]

    def labels(self) -> pd.DataFrame:
        """The latest label of every labelled galaxy: galaxy_id, interest, note, user, time. A store that
        cannot be read reads as empty (the app still shows the run) and says why in ``problem``.
        Shared: copy before changing it."""
        def read():
            try:
                return self.store.latest()
            except BlueberryError as error:
                self.problem = str(error)
                LOG.warning("cannot read the labels: %s", error)
                return pd.DataFrame(columns=list(LABEL_COLUMNS))
        return self._read("labels", read)

    def interest(self) -> np.ndarray:
        """(N,) float64: each galaxy's latest interest, NaN where unlabelled (or labelled in another run).
        Shared and read-only."""
        def read():
            latest = self.labels()
            out = np.full(self.data.n, np.nan)
            rows = self.data.rows_of(latest["galaxy_id"])
            known = rows >= 0
            out[rows[known]] = latest["interest"].to_numpy(dtype=np.float64)[known]
            out.flags.writeable = False
            return out
        return self._read("interest", read)

    def selections(self) -> pd.DataFrame:
        """The saved selections (``LabelStore.selections``). Shared: copy before changing it."""
        return self._read("selections", self.store.selections)

    # ------------------------------------------------------------------ ranking

    def _take(self, ranking: pd.DataFrame | None) -> None:
        """Keep a ranking, aligned to the catalogue's rows by galaxy_id (a galaxy it lacks gets NaN),
        and offer its relevance as a colouring. A ranking of other galaxies altogether is ignored."""
        if ranking is None:
            return
        rows = self.data.rows_of(ranking["galaxy_id"])
        known = rows >= 0
        if not known.any():
            return
        columns = {c: np.full(self.data.n, np.nan) for c in RANKING_COLUMNS}
        for c, values in columns.items():
            values[rows[known]] = ranking[c].to_numpy(dtype=np.float64)[known]
        self.ranking = aligned = pd.DataFrame(columns)
        self._orders = {}
        self.version += 1
        self.data.set_colouring("relevance", aligned["relevance"].to_numpy())

    def sorted_rows(self, column: str) -> np.ndarray:
        """Every row by the ranking's ``column``, highest first, NaN last, ties in anomaly order; computed
        once per ranking, so ordering a selection is a mask lookup (as ``AppData.by_score``), not a sort."""
        if column not in self._orders:
            rows = self.data.order
            k = self.ranking[column].to_numpy()[rows]
            self._orders[column] = rows[np.argsort(-np.where(np.isnan(k), -np.inf, k), kind="stable")]
        return self._orders[column]

    def rerank(self, labels: pd.DataFrame) -> float:
        """Fit the interest model to ``labels`` (core.rank), write ranking.parquet and take the new
        ranking; returns the seconds it took. Safe to call from a worker thread."""
        with self._lock:
            start = time.perf_counter()
            ranking = rank(self.data.run, labels)
            path = write_ranking(self.data.run.path, ranking, n_labels=len(labels))
            st = path.stat()
            self._seen = (st.st_mtime_ns, st.st_size)
            self._take(ranking)
            return time.perf_counter() - start


def run_loop(data: AppData) -> RunLoop:
    """The RunLoop of ``data``'s run, made once per server process."""
    return data.derived("discovery", lambda: RunLoop(data))


class Discovery(param.Parameterized):
    """One session's side of the loop: the table's order, the label-next queue, the open saved selection."""

    order_by = param.Selector(default="anomaly_score", objects={"anomaly score": "anomaly_score"},
                              doc="How the table (and n / p) orders the galaxies, highest first: anomaly score; "
                                  "relevance and acquisition once a ranking exists.")

    unlabelled_first = param.Boolean(default=False, doc="Put the galaxies nobody has labelled first in the table.")

    selection_name = param.String(default="", doc="Name of the open saved selection ('' when the selection is "
                                                  "not a saved one); kept in the page URL as ?selection=.")

    user = param.String(default="", doc="Who this session's labels are attributed to.")

    labels_version = param.Integer(default=0, doc="Counts this session's labels, so the views redraw after one.")

    ranking_version = param.Integer(default=0, doc="The version of the shared ranking this session shows.")

    status = param.String(default="", doc="The last re-rank's outcome, or what went wrong, for the user.")

    def __init__(self, state: DashboardState, **params):
        super().__init__(**{"user": os_user(), **params})
        self._state = state
        self.loop = run_loop(state.data)
        self.loop.refresh()
        self._walk: np.ndarray | None = None  # the order n / p walk, frozen until the list changes
        self._opened = ""  # the saved selection whose rows are selected now
        self._show_ranking()
        state.param.watch(self._selection_changed, ["selection"])
        self.param.watch(lambda *_: self._forget_walk(), ["order_by", "unlabelled_first", "ranking_version"])
        self.param.watch(self._name_changed, ["selection_name"])

    # ------------------------------------------------------------------ labels

    def label(self, interest: int, note: str = "", galaxy: str | None = None) -> None:
        """Give the inspected galaxy (or ``galaxy``) an interest score 0-5 and an optional note."""
        galaxy = self._state.galaxy if galaxy is None else str(galaxy)
        if not galaxy or self._state.data.row_of(galaxy) is None:
            raise ValueError(f"no galaxy {galaxy!r} in this run to label")
        if self._walk is None:
            self._walk = self.order()  # n / p go on from the order the table showed before this label
        self.loop.store.set(galaxy, check_interest(interest), note=str(note), user=self.user)
        self.labels_version += 1

    def labels(self) -> pd.DataFrame:
        """The latest label of every labelled galaxy (a copy: the caller may change it)."""
        return self.loop.labels().copy()

    def history(self, galaxy: str | None = None) -> pd.DataFrame:
        """Every label the galaxy (default: the inspected one) has had, oldest first."""
        return self.loop.store.history(self._state.galaxy if galaxy is None else str(galaxy))

    def interest_of(self, galaxy: str | None = None) -> int | None:
        """The latest interest of the galaxy (default: the inspected one); None when unlabelled."""
        history = self.history(galaxy)
        return None if not len(history) or pd.isna(history["interest"].iat[-1]) else int(history["interest"].iat[-1])

    # ------------------------------------------------------------------ ranking

    def ranking_frame(self) -> pd.DataFrame:
        """galaxy_id, relevance, uncertainty, acquisition of every galaxy, in catalogue order. Before the
        first re-rank: relevance = acquisition = the anomaly score's percentile / 100 (core.rank without labels)."""
        if self.loop.ranking is None:
            return rank(self.loop.data.run, None)  # no labels: no model is fitted, it costs nothing
        ids = self.loop.data.catalogue["galaxy_id"].to_numpy()
        return self.loop.ranking.assign(galaxy_id=ids)[["galaxy_id", *RANKING_COLUMNS]]

    def rerank(self) -> None:
        """Re-rank every galaxy on the labels so far (in this thread; the view runs it in a worker)."""
        labels = self.labels()
        self.ranked(len(labels), self.loop.rerank(labels))

    def ranked(self, n_labels: int, seconds: float) -> None:
        """Show the shared ranking: colour the latent map by relevance, offer the ranking's orders."""
        self.status = f"re-ranked on {n_labels:,} label{'s' * (n_labels != 1)} in {seconds:.1f} s"
        self._show_ranking()
        if self._state.colour_by == "relevance":
            self._state.param.trigger("colour_by")
        else:
            self._state.colour_by = "relevance"

    def _show_ranking(self) -> None:
        state = self._state
        if self.loop.ranking is not None:
            self.param.order_by.objects = dict(ORDERS)
            state.param.colour_by.objects = list(state.data.colour_options)
        self.ranking_version = self.loop.version

    # ------------------------------------------------------------------ order, n / p, the queue

    def _sorted(self, by: str, unlabelled_first: bool) -> np.ndarray:
        """The selection's rows (every galaxy's when nothing is selected) sorted by the column ``by``,
        highest first, NaN last, ties in anomaly order; then the unlabelled ones first if asked."""
        state = self._state
        rows = state.selection if len(state.selection) else state.data.order  # both in anomaly order
        if by != "anomaly_score" and self.loop.ranking is not None:
            everyone = self.loop.sorted_rows(by)
            if len(rows) < len(everyone):
                chosen = np.zeros(state.data.n, dtype=bool)
                chosen[rows] = True
                everyone = everyone[chosen[everyone]]
            rows = everyone
        if unlabelled_first:
            labelled = ~np.isnan(self.loop.interest()[rows])
            rows = np.concatenate([rows[~labelled], rows[labelled]])
        return rows

    def order(self) -> np.ndarray:
        """The table's rows in the table's order (``order_by``, ``unlabelled_first``)."""
        return self._sorted(self.order_by, self.unlabelled_first)

    def table_columns(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The table's columns from the loop for ``rows``: interest once the run has a label, relevance
        once it has a ranking (a run nobody labels shows the table as before)."""
        out = {}
        interest = self.loop.interest()
        if not np.isnan(interest).all():
            out["interest"] = interest[rows]
        if self.loop.ranking is not None:
            out["relevance"] = self.loop.ranking["relevance"].to_numpy()[rows]
        return out

    def _forget_walk(self) -> None:
        self._walk = None

    def _step(self, by: int) -> int | None:
        # n / p walk the order as it was when the walk began: a labelled galaxy that "unlabelled
        # first" moves to the end does not make the next press jump there.
        if self._walk is None:
            self._walk = self.order()
        walk, row = self._walk, self._state.row
        at = np.flatnonzero(walk == row) if row is not None else []
        if not len(walk):
            return None
        if not len(at):
            target = 0
        else:
            target = int(at[0]) + by
            if not 0 <= target < len(walk):
                self.status = "the end of the list" if by > 0 else "the start of the list"
                return None
        self._state.inspect(int(walk[target]))
        return int(walk[target])

    def next_galaxy(self) -> int | None:
        """Inspect the galaxy after the inspected one in the table's order (the first when it is not in it);
        returns its row, or None at the end."""
        return self._step(+1)

    def previous_galaxy(self) -> int | None:
        """Inspect the galaxy before the inspected one in the table's order; returns its row, or None."""
        return self._step(-1)

    def queue(self) -> np.ndarray:
        """The label-next queue: the unlabelled galaxies of the list, highest acquisition first
        (anomaly order before the first ranking)."""
        rows = self._sorted(self._queue_order(), False)
        return rows[np.isnan(self.loop.interest()[rows])]

    def _queue_order(self) -> str:
        return "acquisition" if self.loop.ranking is not None else "anomaly_score"

    def label_next(self) -> int | None:
        """Walk the queue: order the table by acquisition, unlabelled first, and inspect its top galaxy."""
        self.param.update(order_by=self._queue_order(), unlabelled_first=True)
        queue = self.queue()
        if not len(queue):
            self.status = "every galaxy of the list is labelled"
            return None
        self._walk = self.order()
        self._state.inspect(int(queue[0]))
        return int(queue[0])

    def queue_text(self) -> str:
        """"12 to label · 3 labelled in the run", and what keeps the labels or the ranking unread, if anything."""
        queue, n = len(self.queue()), int(np.count_nonzero(~np.isnan(self.loop.interest())))
        problem = f" · {self.loop.problem}" if self.loop.problem else ""
        return f"{queue:,} to label · {n:,} labelled in the run{problem}"

    # ------------------------------------------------------------------ saved selections

    def saved_selections(self) -> pd.DataFrame:
        return self.loop.selections()

    def save_selection(self, name: str) -> int:
        """Save the current selection as ``name`` (replacing one of that name); returns its size."""
        name = check_name(name)
        selection = self._state.selection
        if not len(selection):
            raise ValueError("nothing is selected: select galaxies before saving a selection")
        ids = self._state.data.catalogue["galaxy_id"].to_numpy()[selection]
        self.loop.store.save_selection(name, [str(g) for g in ids], user=self.user)
        self._opened = name
        self._state.selection_source = "saved"
        self.selection_name = name
        return len(selection)

    def open_selection(self, name: str) -> int:
        """Select the galaxies of the saved selection ``name``; returns how many of them this run has."""
        if name not in set(self.saved_selections()["name"]):
            raise ValueError(f"no saved selection {name!r} in this run")
        ids = self.loop.store.selection(name)
        rows = self._state.data.rows_of(ids)
        # The name first, so that the views redrawing on the new rows show it.
        self._opened = name
        self.selection_name = name
        self._state.select_rows(rows[rows >= 0], "saved")
        missing = int(np.count_nonzero(rows < 0))
        self.status = f"{missing:,} galaxies of {name!r} are not in this run" if missing else ""
        return int(np.count_nonzero(rows >= 0))

    def delete_selection(self, name: str) -> None:
        if name not in set(self.saved_selections()["name"]):
            raise ValueError(f"no saved selection {name!r} in this run")
        self.loop.store.delete_selection(name)
        if self.selection_name == name:
            self.selection_name = ""

    def _selection_changed(self, _event) -> None:
        self._walk = None
        if self._state.selection_source != "saved":
            self._opened = ""
            self.selection_name = ""

    def _name_changed(self, event) -> None:
        # A name arriving from outside (the page URL) opens that selection.
        name = event.new
        if name and name != self._opened:
            try:
                self.open_selection(name)
            except ValueError as error:
                self.status = str(error)

    # ------------------------------------------------------------------ comparison

    def group_names(self) -> list[str]:
        """What a comparison can take: the current selection and each saved selection."""
        return [CURRENT, *self.saved_selections()["name"]]

    def rows_of_group(self, name: str) -> np.ndarray:
        if name == CURRENT:
            return np.asarray(self._state.selection)
        if name not in set(self.saved_selections()["name"]):
            raise ValueError(f"no saved selection {name!r} in this run; choose one of {', '.join(self.group_names())}")
        rows = self._state.data.rows_of(self.loop.store.selection(name))
        return rows[rows >= 0]

    def groups(self, a: str, b: str) -> tuple[np.ndarray, np.ndarray]:
        """The rows of the groups ``a`` and ``b`` (a saved selection's name, CURRENT, or for ``b`` REST:
        every galaxy not in ``a``)."""
        rows_a = self.rows_of_group(a)
        if b != REST:
            return rows_a, self.rows_of_group(b)
        rest = np.ones(self._state.data.n, dtype=bool)
        rest[rows_a] = False
        return rows_a, np.flatnonzero(rest)

    def compare(self, a: str = CURRENT, b: str = REST) -> Comparison:
        """Compare the group ``a`` with ``b`` (see :meth:`groups`)."""
        return compare_rows(self._state.data, *self.groups(a, b), (a, b), interest=self.loop.interest())


def check_name(name: str) -> str:
    """A selection name, stripped; ValueError saying what is wrong with an empty, long or unprintable one."""
    name = str(name).strip()
    if not name:
        raise ValueError("give the selection a name")
    if len(name) > MAX_NAME:
        raise ValueError(f"a selection name has at most {MAX_NAME} characters, this one {len(name)}")
    if not name.isprintable() or name in (CURRENT, REST):
        raise ValueError(f"{name!r} cannot name a selection: use letters, digits, spaces and punctuation")
    return name
