"""MaNGA's summary catalogues, DAPall and DRPall: reading them, and the columns ingest joins.

The DAPall catalogue has one row per galaxy and DAP analysis type (``DAPTYPE``): the DR17 file
holds one table extension per type, named after it; a table saved by another tool (TOPCAT,
say) holds one table with a ``DAPTYPE`` column. Both are read. Its per-line columns
(``EMLINE_GEW_1RE``, ...) are vectors of one value per emission-line channel; the file's
primary header names the channels (``ELG01``... for the Gaussian fits, ``ELS01``... for the
summed fluxes), and a file without those keys is read with the channel table of its release
(``core.lines``), recognised by the vectors' length. Channels are always found by name.

``python -m train ingest --dapall`` joins the columns an astronomer colours by
(:data:`DAPALL_COLUMNS`, :data:`DAPALL_LINE_COLUMNS`; ``--drpall``: :data:`DRPALL_COLUMNS`) on
PLATEIFU, preferring the row of the galaxy's own DAPTYPE, under the source's names in lower
case (docs/ARCHITECTURE.md, "A new catalogue column"); a per-line column takes its line's ion:
``EMLINE_GEW_1RE`` of ``Ha-6564`` is ``emline_gew_1re_ha``. DAPall's fill value for a failed
measurement (-999) becomes NaN; a galaxy without a row gets NaN (integer columns: pandas' <NA>).
``python -m train download`` selects galaxies with :func:`select_rows` on the same file.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from astropy.io import fits

from core.errors import DatasetError
from core.io import file_stamp
from core.lines import DAPQUAL_BITS, LINES, channels_of

#: Scalar DAPall columns joined at ingest.
DAPALL_COLUMNS = ("SFR_TOT", "SFR_1RE", "NSA_SERSIC_N", "NSA_ELPETRO_BA", "NSA_ELPETRO_TH50_R",
                  "STELLAR_SIGMA_1RE", "DAPQUAL")
#: Per-line DAPall columns joined at ingest, as (column, channel): the Halpha equivalent width in 1 Re.
DAPALL_LINE_COLUMNS = (("EMLINE_GEW_1RE", "Ha-6564"),)
#: DRPall columns joined at ingest: the NSA stellar mass from the elliptical Petrosian fluxes
#: (Msun/h^2, h = 1), which the NSA recommends over the Sersic one.
DRPALL_COLUMNS = ("NSA_ELPETRO_MASS",)
#: The column both catalogues are joined on, and the one that names a file's analysis type.
KEY, DAPTYPE = "PLATEIFU", "DAPTYPE"
#: The value DAPall writes for a measurement that failed.
FILL_VALUE = -999.0
#: The primary-header prefix naming the channels of DAPall's per-line columns, by column prefix.
CHANNEL_KEYS = {"EMLINE_G": "ELG", "EMLINE_S": "ELS"}


@dataclass(frozen=True)
class SummaryFiles:
    """The summary catalogues joined at ingest (``--dapall``, ``--drpall``, ``--drop-critical``)."""

    dapall: str | None = None  # DAPall file: SFR, Halpha EW, Sersic n, axis ratio, size, sigma, DAPQUAL
    drpall: str | None = None  # DRPall file: the NSA stellar mass
    drop_critical: bool = False  # leave out the galaxies whose DAPall DAPQUAL has the CRITICAL bit

    def wanted(self) -> list[tuple[str, str]]:
        """(kind, path) of each file given."""
        return [(kind, path) for kind, path in (("dapall", self.dapall), ("drpall", self.drpall)) if path]


def line_column_name(column: str, channel: str) -> str:
    """The catalogue name of one channel of a per-line column: ``emline_gew_1re_ha``."""
    return f"{column.lower()}_{LINES[channel].ion.lower()}"


def _open(path) -> fits.HDUList:
    try:
        return fits.open(path, memmap=True)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a FITS file ({exc})") from None


def _tables(hdul: fits.HDUList, path, daptypes) -> list[fits.BinTableHDU]:
    """The table extensions to read: those named after one of ``daptypes`` (DR17's layout), else all."""
    tables = [h for h in hdul[1:] if isinstance(h, fits.BinTableHDU)]
    if not tables:
        raise DatasetError(f"{path}: no table extension; give a DAPall or DRPall FITS file")
    named = [h for h in tables if h.name in set(daptypes)]
    return named or tables


def table_names(path) -> list[str]:
    """The names of the table extensions of a summary catalogue (DR17's DAPall: its analysis types)."""
    with _open(path) as hdul:
        return [h.name for h in hdul[1:] if isinstance(h, fits.BinTableHDU)]


def _text(values) -> np.ndarray:
    return np.char.strip(np.asarray(values).astype(str))


def _channels(primary: fits.Header, column: str, width: int, path) -> tuple[str, ...]:
    """The channel names of a per-line column: from the header keys, else by the release's count."""
    prefix = next((key for start, key in CHANNEL_KEYS.items() if column.startswith(start)), None)
    named = {}
    if prefix:
        for key, value in primary.items():
            if key.startswith(prefix) and key[len(prefix):].isdigit():
                named[int(key[len(prefix):]) - 1] = str(value).strip()
    if named:
        return tuple(named.get(i, "") for i in range(width))
    try:
        return channels_of(width)
    except ValueError as exc:
        raise DatasetError(f"{path}: column {column} has {width} channels and the header does not name them "
                           f"({exc})") from None


def read_columns(path, columns, line_columns=(), daptypes=()) -> pd.DataFrame:
    """``plateifu``, ``daptype`` (where the file has it) and the named columns of a summary catalogue.

    ``columns`` are scalar columns, ``line_columns`` (column, channel) pairs; both come back in
    lower case (a line column as :func:`line_column_name`), FILL_VALUE as NaN. Only these
    columns are read from the (memory-mapped) file.
    """
    path = Path(path)
    needed = (KEY, *columns, *(c for c, _ in line_columns))
    frames = []
    with _open(path) as hdul:
        primary = hdul[0].header
        tables = _tables(hdul, path, daptypes)
        # DRPall's second table (MaStar stars) lacks the galaxy columns: only tables with them are read.
        usable = [h for h in tables if set(needed) <= set(h.columns.names)]
        if not usable:
            missing = [c for c in needed if c not in tables[0].columns.names]
            raise DatasetError(f"{path}: extension {tables[0].name} has no column {', '.join(missing)}; "
                               f"its columns are {', '.join(tables[0].columns.names)}")
        for hdu in usable:
            names = set(hdu.columns.names)
            data = hdu.data
            frame = {"plateifu": _text(data[KEY])}
            frame["daptype"] = _text(data[DAPTYPE]) if DAPTYPE in names else np.full(len(data), hdu.name)
            for col in columns:
                frame[col.lower()] = _values(data[col])
            for col, channel in line_columns:
                vectors = np.asarray(data[col])
                channels = _channels(primary, col, vectors.shape[1] if vectors.ndim == 2 else 1, path)
                if channel not in channels:
                    raise DatasetError(f"{path}: column {col} has no {channel} channel (its channels: "
                                       f"{', '.join(channels)})")
                # (rows, channels) -> (rows,): the one channel, found by name.
                frame[line_column_name(col, channel)] = _values(vectors[:, channels.index(channel)])
            frames.append(pd.DataFrame(frame))
    return pd.concat(frames, ignore_index=True)


def _values(column) -> np.ndarray:
    """A column as numbers: floats with FILL_VALUE (and masked values) as NaN; integers as they are."""
    values = np.asarray(column)
    if values.dtype.kind in "iub":
        return values.astype(np.int64)
    values = values.astype(np.float64)
    values[values == FILL_VALUE] = np.nan
    return values


def scalar_table(path, daptypes=()) -> pd.DataFrame:
    """Every scalar column of a summary catalogue, under the file's own names (text stripped)."""
    path = Path(path)
    frames = []
    with _open(path) as hdul:
        for hdu in _tables(hdul, path, daptypes):
            data = hdu.data
            cols = {}
            for col in hdu.columns:
                values = np.asarray(data[col.name])
                if values.ndim != 1:
                    continue  # per-line vectors: not usable in an expression
                cols[col.name] = _text(values) if values.dtype.kind in "SU" else _values(values)
            frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def select_rows(table: pd.DataFrame, where: str | None, path) -> pd.DataFrame:
    """The rows of ``table`` where the expression ``where`` holds (pandas ``DataFrame.query``).

    The expression sees the columns and nothing else (no ``@`` variables, no dunder names), so
    it is a filter, not code; a bad one is a DatasetError that lists the columns.
    """
    if not where:
        return table
    columns = ", ".join(table.columns)
    if "@" in where or "__" in where:
        raise DatasetError(f"--where {where!r}: use column names, numbers, strings and comparisons only "
                           f"(no '@' or '__'); the columns of {path} are {columns}")
    try:
        picked = table.query(where, local_dict={}, global_dict={})
    except Exception as exc:  # pandas raises many kinds: a typo is the user's, never a traceback
        raise DatasetError(f"--where {where!r} cannot be evaluated on {path} ({type(exc).__name__}: {exc}); "
                           f"its columns are {columns}") from None
    if not isinstance(picked, pd.DataFrame):
        raise DatasetError(f"--where {where!r} is not a condition on the rows of {path}; its columns are {columns}")
    return picked


def join(catalogue: pd.DataFrame, files: SummaryFiles) -> tuple[pd.DataFrame, list[dict]]:
    """The catalogue with the summary catalogues' columns, and a record of each join for the manifest.

    Each record: ``kind``, ``path``, the file's stamp (``bytes``, ``mtime_ns``, ``sha256``),
    ``columns`` added, ``rows`` read, ``galaxies`` in the catalogue, how many ``matched`` a row,
    and ``seconds``.
    """
    records = []
    daptypes = sorted(set(catalogue["daptype"].astype(str))) if "daptype" in catalogue else []
    for kind, path in files.wanted():
        t0 = time.perf_counter()
        if kind == "dapall":
            frame = read_columns(path, DAPALL_COLUMNS, DAPALL_LINE_COLUMNS, daptypes)
        else:
            frame = read_columns(path, DRPALL_COLUMNS)
        added = [c for c in frame.columns if c not in ("plateifu", "daptype")]
        clash = [c for c in added if c in catalogue.columns]
        if clash:
            raise DatasetError(f"{path}: its column(s) {', '.join(clash)} are already in the catalogue; "
                               "give each summary catalogue once")
        values, matched = _match(catalogue, frame, added)
        catalogue = pd.concat([catalogue.reset_index(drop=True), values], axis=1)
        records.append({"kind": kind, "path": str(Path(path).resolve()), **file_stamp(path), "columns": added,
                        "rows": len(frame), "galaxies": len(catalogue), "matched": matched,
                        "seconds": round(time.perf_counter() - t0, 3)})
    return catalogue, records


def _match(catalogue: pd.DataFrame, frame: pd.DataFrame, added: list[str]) -> tuple[pd.DataFrame, int]:
    """One summary row per catalogue row (by plateifu, the galaxy's own DAPTYPE first), in catalogue order."""
    left = pd.DataFrame({"row": np.arange(len(catalogue)), "plateifu": catalogue["galaxy_id"].astype(str).to_numpy(),
                         "own": catalogue["daptype"].astype(str).to_numpy() if "daptype" in catalogue else ""})
    pairs = left.merge(frame.assign(order=np.arange(len(frame))), on="plateifu", how="inner")
    pairs["preferred"] = pairs["own"] == pairs["daptype"]
    pairs = pairs.sort_values(["row", "preferred", "order"], ascending=[True, False, True], kind="stable")
    best = pairs.drop_duplicates("row").set_index("row")
    values = best[added].reindex(np.arange(len(catalogue)))
    for col in added:  # a reindex makes integers float to hold NaN: keep them integers, with <NA>
        if frame[col].dtype.kind in "iu":
            values[col] = values[col].astype("Int64")
    return values.reset_index(drop=True), len(best)


def critical(catalogue: pd.DataFrame) -> np.ndarray:
    """(N,) bool: the galaxies whose joined ``dapqual`` has the CRITICAL bit (no row: not critical)."""
    if "dapqual" not in catalogue:
        raise DatasetError("--drop-critical needs the DAPQUAL column of a DAPall file: give --dapall")
    qual = catalogue["dapqual"].astype("Int64").fillna(0).to_numpy(dtype=np.int64)
    return (qual & (1 << DAPQUAL_BITS["CRITICAL"])) != 0
