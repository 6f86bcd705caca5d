"""The astronomer's labels: an interest score 0..5 per galaxy, with a note, who and when.

Labels live in the run, in ``runs/<name>/labels.sqlite`` (SQLite in WAL mode), so the app's
sessions, a second browser and ``python -m train labels`` share them, and they survive a
restart. The table ``labels`` is append-only: setting a label adds a row, so every earlier
value stays in its history, and the latest row of a galaxy is its label (a row with a NULL
interest is a removal). Every call opens its own connection and commits before it returns:
two processes (two app servers, the app and the CLI) may write at once, SQLite serialises
them (``busy_timeout``), and no label is lost. The store is created on the first write, so
reading a run that nobody labelled writes nothing into it.

Named selections (lists of galaxy ids) are kept in the same file. The CSV exchange format
is ``galaxy_id, interest[, note]`` (:func:`read_labels_csv`, :func:`write_labels_csv`).
docs/ARCHITECTURE.md describes the run folder.
"""
from __future__ import annotations

import contextlib
import getpass
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from core.errors import LabelsError
from core.tables import FORMULA_PREFIXES, write_csv

#: The store's file name in a run folder.
LABELS_FILE = "labels.sqlite"
#: The interest scale (Astronomaly / Protege: 0 = not interesting, 5 = most interesting).
MIN_INTEREST, MAX_INTEREST = 0, 5
#: How long a writer waits for another one to finish before it gives up (ms).
BUSY_TIMEOUT_MS = 30_000
#: The columns of :meth:`LabelStore.latest` and :meth:`LabelStore.history`.
LABEL_COLUMNS = ("galaxy_id", "interest", "note", "user", "time")
#: The columns of :meth:`LabelStore.selections`.
SELECTION_COLUMNS = ("name", "n", "user", "time")
#: Rows listed at most in an error message about a labels file.
MAX_LISTED = 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of writing: the history's order
    galaxy_id TEXT NOT NULL,
    interest  INTEGER,                            -- 0..5; NULL: the label was removed
    note      TEXT NOT NULL DEFAULT '',
    user      TEXT NOT NULL,
    time      TEXT NOT NULL                       -- UTC, ISO 8601
);
CREATE INDEX IF NOT EXISTS labels_by_galaxy ON labels (galaxy_id, id);
CREATE TABLE IF NOT EXISTS selections (
    name       TEXT PRIMARY KEY,
    galaxy_ids TEXT NOT NULL,                     -- JSON list of galaxy ids, in the order given
    user       TEXT NOT NULL,
    time       TEXT NOT NULL
);
"""
_LATEST = """
SELECT galaxy_id, interest, note, user, time FROM labels
WHERE id IN (SELECT MAX(id) FROM labels GROUP BY galaxy_id) AND interest IS NOT NULL
ORDER BY id
"""


def os_user() -> str:
    """The user running this process (the default labeller)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a container): still label, anonymously
        return "unknown"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_interest(value) -> int:
    """``value`` as an int in 0..5, else ValueError naming it (bools and fractions are refused)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"interest {value!r} is not a whole number {MIN_INTEREST} to {MAX_INTEREST}")
    value = int(value)
    if not MIN_INTEREST <= value <= MAX_INTEREST:
        raise ValueError(f"interest {value} is out of range: give a whole number {MIN_INTEREST} to {MAX_INTEREST}")
    return value


def _check_id(galaxy_id) -> str:
    if not isinstance(galaxy_id, str) or not galaxy_id:
        raise ValueError(f"galaxy id {galaxy_id!r} is not a non-empty string")
    return galaxy_id


def _set_up(conn, tries: int = 40) -> None:
    """WAL mode (readers never block the writer, nor it them) and the tables, on a new connection.

    Two processes creating the store at once can meet before it is in WAL mode, where SQLite
    answers "database is locked" at once instead of waiting (its deadlock rule for two
    readers that both want to write): then wait a little and try again.
    """
    for attempt in range(tries):
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == tries - 1:
                raise
            time.sleep(0.01 * (attempt + 1))


class LabelStore:
    """The labels and named selections of one run (``run_dir/labels.sqlite``)."""

    def __init__(self, run_dir):
        self.path = Path(run_dir) / LABELS_FILE

    @contextlib.contextmanager
    def _connect(self, write: bool):
        """A connection in a transaction (committed on success); on reading a missing store, None."""
        if not write and not self.path.is_file():
            yield None
            return
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        except sqlite3.Error as exc:
            raise LabelsError(f"{self.path}: cannot open the label store ({exc})") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if write:
                _set_up(conn)
            # IMMEDIATE: take the write lock at the start, so that two writers queue instead of failing.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield conn
            conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise LabelsError(f"{self.path}: the label store cannot be used ({exc}); move it away to start afresh "
                              "(the labels in it are lost unless you `python -m train labels export` them first)"
                              ) from None
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def stamp(self) -> tuple:
        """Changes whenever the store does (any process's write): the size and time of its file and
        of its write-ahead log, where every commit lands first. A reader may keep what it read until then."""
        out = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = path.stat()
            except FileNotFoundError:
                out.append(None)
            else:
                out.append((st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _frame(self, sql: str, params=(), columns=LABEL_COLUMNS) -> pd.DataFrame:
        with self._connect(write=False) as conn:
            rows = [] if conn is None or not self._has_tables(conn) else conn.execute(sql, params).fetchall()
        df = pd.DataFrame(rows, columns=list(columns))
        if "interest" in df:
            df["interest"] = df["interest"].astype("Int64") if df["interest"].isna().any() else df["interest"].astype("int64")
        return df

    @staticmethod
    def _has_tables(conn) -> bool:
        return conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'labels'").fetchone()[0] > 0

    # -- labels ------------------------------------------------------------------------

    def set(self, galaxy_id: str, interest: int, note: str = "", user: str | None = None) -> None:
        """Label ``galaxy_id`` with ``interest`` (0..5) now; its earlier value stays in the history."""
        self.set_many([(galaxy_id, interest, note)], user=user)

    def set_many(self, rows: Iterable[tuple[str, int, str]], user: str | None = None) -> int:
        """Set several labels ``(galaxy_id, interest, note)`` in one transaction (all or none); their count."""
        user, now = user or os_user(), _now()
        checked = [(_check_id(g), check_interest(i), str(n or ""), user, now) for g, i, n in rows]
        with self._connect(write=True) as conn:
            conn.executemany("INSERT INTO labels (galaxy_id, interest, note, user, time) VALUES (?, ?, ?, ?, ?)",
                             checked)
        return len(checked)

    def remove(self, galaxy_id: str, user: str | None = None) -> None:
        """Remove the label of ``galaxy_id`` (recorded in its history as a removal)."""
        with self._connect(write=True) as conn:
            conn.execute("INSERT INTO labels (galaxy_id, interest, note, user, time) VALUES (?, NULL, '', ?, ?)",
                         (_check_id(galaxy_id), user or os_user(), _now()))

    def latest(self) -> pd.DataFrame:
        """One row per labelled galaxy, its latest value: ``galaxy_id, interest, note, user, time``."""
        return self._frame(_LATEST)

    def history(self, galaxy_id: str) -> pd.DataFrame:
        """Every value ``galaxy_id`` had, oldest first (a removal has a missing interest)."""
        return self._frame("SELECT galaxy_id, interest, note, user, time FROM labels WHERE galaxy_id = ? ORDER BY id",
                           (galaxy_id,))

    # -- named selections --------------------------------------------------------------

    def save_selection(self, name: str, galaxy_ids: Sequence[str], user: str | None = None) -> None:
        """Save ``galaxy_ids`` under ``name`` (replacing a selection of that name)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"selection name {name!r} is empty; give it a name")
        ids = [_check_id(str(g)) for g in galaxy_ids]
        with self._connect(write=True) as conn:
            conn.execute("INSERT OR REPLACE INTO selections (name, galaxy_ids, user, time) VALUES (?, ?, ?, ?)",
                         (name, json.dumps(ids), user or os_user(), _now()))

    def selections(self) -> pd.DataFrame:
        """The saved selections: ``name, n, user, time``, in the order they were saved."""
        with self._connect(write=False) as conn:
            rows = [] if conn is None or not self._has_tables(conn) else conn.execute(
                "SELECT name, galaxy_ids, user, time FROM selections ORDER BY time, name").fetchall()
        return pd.DataFrame([(n, len(json.loads(ids)), u, t) for n, ids, u, t in rows],
                            columns=list(SELECTION_COLUMNS)).astype({"n": "int64"})

    def selection(self, name: str) -> list[str]:
        """The galaxy ids saved under ``name``; KeyError naming it when there is none."""
        with self._connect(write=False) as conn:
            row = None if conn is None or not self._has_tables(conn) else conn.execute(
                "SELECT galaxy_ids FROM selections WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise KeyError(f"no saved selection named {name!r} in {self.path}")
        return json.loads(row[0])

    def delete_selection(self, name: str) -> None:
        """Delete the selection ``name``; KeyError naming it when there is none."""
        with self._connect(write=True) as conn:
            if conn.execute("DELETE FROM selections WHERE name = ?", (name,)).rowcount == 0:
                raise KeyError(f"no saved selection named {name!r} in {self.path}")


# ---------------------------------------------------------------------------------------
# The CSV exchange format


def _unquote(values: pd.Series) -> pd.Series:
    """Undo ``core.tables.safe_text``: ``'=x`` (written for spreadsheets) reads back as ``=x``."""
    quoted = values.str.startswith("'") & values.str[1:2].isin(FORMULA_PREFIXES)
    return values.where(~quoted, values.str[1:])


def _rows(index: Iterable[int]) -> str:
    """Data rows by their line number in the file (the header is line 1), at most MAX_LISTED."""
    lines = [str(i + 2) for i in index]
    more = f" and {len(lines) - MAX_LISTED} more" if len(lines) > MAX_LISTED else ""
    return ", ".join(lines[:MAX_LISTED]) + more


def read_labels_csv(path, known_ids) -> pd.DataFrame:
    """The labels in a CSV file (``galaxy_id, interest`` and an optional ``note``; other columns ignored).

    Returns ``galaxy_id, interest, note`` (interest int64). A file with only the header is
    valid (no labels). LabelsError naming the file and its lines (the header is line 1)
    when columns are missing, an id is not one of ``known_ids`` or appears twice, or an
    interest is not a whole number 0..5; nothing is returned then, so nothing is written.
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError:
        raise LabelsError(f"{path}: empty file; a labels file starts with the header `galaxy_id,interest,note`"
                          ) from None
    except (UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise LabelsError(f"{path}: not a readable CSV file ({str(exc).strip().splitlines()[0]})") from None
    raw.columns = _unquote(pd.Series(raw.columns, dtype=str).str.strip()).tolist()
    missing = [c for c in ("galaxy_id", "interest") if c not in raw.columns]
    if missing:
        raise LabelsError(f"{path}: missing column(s) {', '.join(missing)}; the columns are galaxy_id, interest "
                          f"(0 to 5) and an optional note (found: {', '.join(map(str, raw.columns)) or 'none'})")
    ids = _unquote(raw["galaxy_id"].str.strip())
    notes = _unquote(raw["note"]) if "note" in raw else pd.Series("", index=raw.index, dtype=str)
    problems = []
    unknown = ~ids.isin(pd.Index(known_ids))
    if unknown.any():
        shown = ", ".join(repr(g) for g in ids[unknown].head(5))
        problems.append(f"galaxy ids not in the run on line(s) {_rows(raw.index[unknown])} ({shown})")
    dup = ids.duplicated(keep=False) & ~unknown
    if dup.any():
        problems.append(f"galaxy ids given more than once on line(s) {_rows(raw.index[dup])} "
                        f"({', '.join(repr(g) for g in ids[dup].drop_duplicates().head(5))})")
    text = raw["interest"].str.strip()
    values = pd.to_numeric(text, errors="coerce")
    bad = ~(values.notna() & (values % 1 == 0) & values.between(MIN_INTEREST, MAX_INTEREST))
    if bad.any():
        shown = ", ".join(repr(v) for v in text[bad].head(5))
        problems.append(f"interest not a whole number {MIN_INTEREST} to {MAX_INTEREST} on line(s) "
                        f"{_rows(raw.index[bad])} ({shown})")
    if problems:
        raise LabelsError(f"{path}: nothing imported: " + "; ".join(problems))
    return pd.DataFrame({"galaxy_id": ids.astype(str), "interest": values.astype("int64"), "note": notes.astype(str)})


def write_labels_csv(df: pd.DataFrame, path) -> None:
    """Write labels (``galaxy_id, interest``, and ``note``, ``user``, ``time`` when present) as a safe CSV."""
    cols = [c for c in LABEL_COLUMNS if c in df.columns]
    write_csv(path, df[cols])
