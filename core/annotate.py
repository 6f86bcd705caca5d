"""Annotate a run: cross-match an external catalogue into the run's catalogue.

``python -m train annotate --run RUN CATALOGUE --on plateifu`` (or ``--on radec --radius
2arcsec``) reads a table (FITS, CSV, ECSV, VOTable through astropy.table; Parquet through
pandas), finds each galaxy's row in it (by plate-IFU; or the nearest source within the
radius, astropy's ``match_to_catalog_sky``), and adds the table's other columns to
``RUN/catalogue.parquet``: the galaxies without a match get empty values. New names are the
source's in lower case, after an optional ``--prefix`` (docs/ARCHITECTURE.md, "A new catalogue
column"); a name that is already a column of the run, or two source names that differ only
in case, are refused, named, before anything is written. A sky match adds ``<prefix>sep_arcsec``,
the distance to the matched source.

The catalogue is replaced atomically (``core.io``), and the manifest is rewritten right after
with the file's new stamp (and those of the evaluation and injection benchmark, whose columns did not change), so
``core.run.open_run`` accepts the run; the manifest's ``annotations`` records each catalogue
added (file stamp, key, radius, columns, matches). ``embed`` rewrites the catalogue from the
dataset, so the annotations are undone by a re-embed (and its manifest says so).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import RunError
from core.io import file_stamp, remove_stale_tmp, save_parquet
from core.run import open_run

#: Suffixes read, and the astropy.table format of each (None: pandas' parquet reader).
FORMATS = {".fits": "fits", ".fit": "fits", ".fits.gz": "fits", ".csv": "ascii.csv", ".ecsv": "ascii.ecsv",
           ".vot": "votable", ".xml": "votable", ".votable": "votable", ".parquet": None}
#: How a plate-IFU column may be called (case-insensitive), most specific first.
PLATEIFU_NAMES = ("plateifu", "plate_ifu", "plate-ifu", "galaxy_id")
#: How RA and Dec columns may be called (case-insensitive), most specific first.
RA_NAMES = ("ra", "objra", "ra_deg", "raj2000", "ra_icrs", "_raj2000")
DEC_NAMES = ("dec", "objdec", "dec_deg", "dej2000", "decj2000", "de_icrs", "dec_icrs", "_dej2000")
#: The largest matching radius accepted: beyond it a "match" is a neighbour, not the galaxy.
MAX_RADIUS_ARCSEC = 60.0


@dataclass
class AnnotateReport:
    run: Path
    catalogue: Path
    rows: int  # rows in the external catalogue
    matched: int  # galaxies of the run that found a row
    galaxies: int  # galaxies in the run
    columns: list  # names added to the run's catalogue
    left_out: list  # source columns that cannot be a catalogue column (vectors), not added
    duplicates: int  # rows whose key repeats an earlier row's (the first is used)
    seconds: float


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".fits.gz" if name.endswith(".fits.gz") else path.suffix.lower()


def read_table(path) -> pd.DataFrame:
    """The table in ``path`` as a DataFrame; RunError (naming the file) when it cannot be read.

    Columns with a unit keep it in ``DataFrame.attrs["units"]`` (name -> unit string), so that
    coordinates in radians or hours are converted, not misread.
    """
    from astropy.table import Table

    path = Path(path)
    suffix = _suffix(path)
    if suffix not in FORMATS:
        raise RunError(f"{path}: unknown table format {suffix or '(no suffix)'}; give one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    try:
        if FORMATS[suffix] is None:
            return pd.read_parquet(path)
        table = Table.read(path, format=FORMATS[suffix])
    except Exception as exc:  # each reader raises its own kinds: a bad file is the user's, never a traceback
        raise RunError(f"{path}: cannot be read as {FORMATS[suffix] or 'parquet'} ({type(exc).__name__}: {exc})") from None
    units = {c: str(table[c].unit) for c in table.colnames if getattr(table[c], "unit", None) is not None}
    vectors = [c for c in table.colnames if table[c].ndim > 1]
    frame = table[[c for c in table.colnames if c not in vectors]].to_pandas()
    frame.attrs["units"] = units
    frame.attrs["vectors"] = vectors
    return frame


def _find(frame: pd.DataFrame, names, given: str | None, what: str, path) -> str:
    """The column of ``frame`` called ``given`` (or the first of ``names``), case-insensitively."""
    lower = {c.lower(): c for c in frame.columns}
    for name in ([given] if given else names):
        if name.lower() in lower:
            return lower[name.lower()]
    hint = f"--{what}-column" if what != "key" else "--key"
    raise RunError(f"{path}: no {given or what} column (looked for {', '.join([given] if given else names)}); "
                   f"its columns are {', '.join(map(str, frame.columns))}; name it with {hint}")


def _degrees(frame: pd.DataFrame, col: str, path) -> np.ndarray:
    """A coordinate column in degrees (its unit converted when it has one)."""
    import astropy.units as u

    values = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(values).all():
        raise RunError(f"{path}: column {col} holds no numbers; give RA and Dec in degrees")
    unit = frame.attrs.get("units", {}).get(col)
    if unit:
        try:
            values = (values * u.Unit(unit)).to_value(u.deg)
        except (ValueError, u.UnitsError):
            raise RunError(f"{path}: column {col} is in {unit!r}, which is not an angle") from None
    return values


def new_names(source: list[str], existing, prefix: str, path) -> dict[str, str]:
    """Source column -> catalogue name (prefix + lower case); RunError naming every collision."""
    names = {c: f"{prefix}{str(c).lower()}" for c in source}
    by_name: dict[str, list[str]] = {}
    for col, name in names.items():
        by_name.setdefault(name, []).append(str(col))
    twins = [cols for cols in by_name.values() if len(cols) > 1]
    if twins:
        raise RunError(f"{path}: columns that differ only in case are ambiguous: "
                       + "; ".join(" and ".join(c) for c in twins) + "; rename them in the file")
    taken = {str(c).lower() for c in existing}
    clash = [f"{col} -> {name}" for col, name in names.items() if name.lower() in taken]
    if clash:
        raise RunError(f"{path}: column(s) {', '.join(clash)} would replace column(s) the run's catalogue "
                       f"already has; add a prefix, e.g. --prefix {Path(path).stem.split('.')[0].lower()}_")
    return names


def annotate(run_dir, catalogue, on: str = "plateifu", radius_arcsec: float = 2.0, prefix: str = "",
             key: str | None = None, ra_column: str | None = None, dec_column: str | None = None) -> AnnotateReport:
    """Cross-match the table ``catalogue`` into the run ``run_dir``; see the module's docstring."""
    t0 = time.perf_counter()
    run = open_run(run_dir)
    path = Path(catalogue)
    if on not in ("plateifu", "radec"):
        raise RunError(f"--on {on!r}: give plateifu or radec")
    if on == "radec" and not (0 < radius_arcsec <= MAX_RADIUS_ARCSEC):
        raise RunError(f"--radius {radius_arcsec:g} arcsec: give a radius above 0 and at most "
                       f"{MAX_RADIUS_ARCSEC:g} arcsec (a MaNGA bundle is 12-32 arcsec across)")
    frame = read_table(path)
    if on == "plateifu":
        keys = [_find(frame, PLATEIFU_NAMES, key, "key", path)]
        rows, extra = _match_ids(run.catalogue, frame, keys[0])
    else:
        keys = [_find(frame, RA_NAMES, ra_column, "ra", path), _find(frame, DEC_NAMES, dec_column, "dec", path)]
        rows, extra = _match_sky(run.catalogue, frame, keys, radius_arcsec, path)
    source = [c for c in frame.columns if c not in keys]
    names = new_names(source + list(extra), run.catalogue.columns, prefix, path)
    matched = rows >= 0
    picked = frame[source].iloc[np.where(matched, rows, 0)].reset_index(drop=True)
    added = pd.DataFrame({names[c]: _with_gaps(picked[c], matched) for c in source})
    for col, values in extra.items():
        added[names[col]] = values
    table = pd.concat([run.catalogue.reset_index(drop=True), added], axis=1)
    report = AnnotateReport(run=run.path, catalogue=path, rows=len(frame), matched=int(matched.sum()),
                            galaxies=len(table), columns=list(added.columns), left_out=frame.attrs.get("vectors", []),
                            duplicates=int(frame[keys[0]].duplicated().sum()) if on == "plateifu" else 0,
                            seconds=0.0)
    _write(run, table, report, on, radius_arcsec if on == "radec" else None, prefix)
    report.seconds = time.perf_counter() - t0
    return report


def _match_ids(catalogue: pd.DataFrame, frame: pd.DataFrame, key: str) -> tuple[np.ndarray, dict]:
    """(N,) row of ``frame`` for each galaxy (-1: none), by plate-IFU; the first of repeated keys."""
    ids = frame[key].astype(str).str.strip()
    first = pd.Series(np.arange(len(frame)), index=ids)
    first = first[~first.index.duplicated()]
    rows = first.reindex(catalogue["galaxy_id"].astype(str)).fillna(-1).to_numpy(dtype=np.int64)
    return rows, {}


def _match_sky(catalogue: pd.DataFrame, frame: pd.DataFrame, keys: list[str], radius: float,
               path) -> tuple[np.ndarray, dict]:
    """(N,) row of the nearest source within ``radius`` arcsec (-1: none), and its separation column."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord

    if not {"ra", "dec"} <= set(catalogue.columns):
        raise RunError("the run's catalogue has no ra/dec columns; rebuild its dataset with `python -m train ingest`")
    ra, dec = _degrees(frame, keys[0], path), _degrees(frame, keys[1], path)
    usable = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    rows = np.full(len(catalogue), -1, np.int64)
    sep = np.full(len(catalogue), np.nan)
    g_ra, g_dec = catalogue["ra"].to_numpy(np.float64), catalogue["dec"].to_numpy(np.float64)
    placed = np.isfinite(g_ra) & np.isfinite(g_dec)
    if usable.any() and placed.any():
        sources = SkyCoord(ra[usable] * u.deg, dec[usable] * u.deg)
        idx, d2d, _ = SkyCoord(g_ra[placed] * u.deg, g_dec[placed] * u.deg).match_to_catalog_sky(sources)
        arcsec = d2d.to_value(u.arcsec)
        near = arcsec <= radius
        where = np.flatnonzero(placed)
        rows[where[near]] = np.flatnonzero(usable)[idx[near]]
        sep[where[near]] = arcsec[near]
    return rows, {"sep_arcsec": sep}


def _with_gaps(values: pd.Series, matched: np.ndarray) -> pd.Series:
    """``values`` where ``matched``, empty elsewhere, in a type that holds the gap (ints: Int64)."""
    if values.dtype.kind in "iu":
        values = values.astype("Int64")
    elif values.dtype.kind == "b":
        values = values.astype("boolean")
    elif values.dtype.kind == "O" and values.map(lambda v: isinstance(v, bytes)).any():
        values = values.map(lambda v: v.decode(errors="replace") if isinstance(v, bytes) else v)
    return values.where(pd.Series(matched, index=values.index))


def _write(run, table: pd.DataFrame, report: AnnotateReport, on: str, radius, prefix: str) -> None:
    """Replace the run's catalogue and stamp it in the manifest (and the current evaluation and injection)."""
    remove_stale_tmp(run.path)
    target = run.path / "catalogue.parquet"
    manifest = run.manifest
    old = manifest.checksums.get("catalogue.parquet")
    save_parquet(target, table)
    stamp = file_stamp(target)
    # Their columns are untouched, so a current evaluation or injection benchmark stays current.
    evaluation, injection = (
        replace(h, catalogue_sha256=stamp["sha256"]) if h is not None and h.catalogue_sha256 == old else h
        for h in (manifest.evaluation, manifest.injection))
    record = {"path": str(report.catalogue.resolve()), **file_stamp(report.catalogue), "on": on,
              "radius_arcsec": radius, "prefix": prefix, "columns": report.columns, "rows": report.rows,
              "matched": report.matched, "added": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    replace(manifest, files={**manifest.files, "catalogue.parquet": stamp},
            checksums={**manifest.checksums, "catalogue.parquet": stamp["sha256"]}, evaluation=evaluation,
            injection=injection, annotations=[*manifest.annotations, record]).write(run.path)


def summary(report: AnnotateReport) -> str:
    lines = [f"{report.matched} of {report.galaxies} galaxies of {report.run} matched a row of {report.catalogue} "
             f"({report.rows} rows); added {len(report.columns)} column(s): {', '.join(report.columns)}"]
    if report.duplicates:
        lines.append(f"  {report.duplicates} row(s) repeat an earlier row's key: the first row of each was used")
    if report.left_out:
        lines.append(f"  left out {', '.join(report.left_out)}: vector columns cannot be catalogue columns")
    if not report.matched:
        lines.append("  no galaxy matched: check the key column (--key) or the radius (--radius)")
    return "\n".join(lines)
