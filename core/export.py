"""A selection of galaxies as a FITS binary table or a VOTable, with the run it came from.

The CSV (``core.tables``) is for spreadsheets; FITS and VOTable are what TOPCAT, Aladin,
DS9 and astropy read, and they carry what a CSV cannot: units, a column's meaning (UCD)
and where the rows came from. Every file records the run's name, the export's UTC time,
the score's definition and the model (FITS: header keywords, with COMMENT cards for the
long text; VOTable: INFO elements and the table's DESCRIPTION), so a table found on a
disk months later still says what it is.

Text is written so every reader gets one well-formed cell, whoever wrote the catalogue:

- FITS strings are ASCII by the standard: any other character (and any control
  character) is written as a Python escape (``α`` -> ``\\u03b1``, a line feed -> ``\\n``).
- XML cannot hold most control characters: in a VOTable they become U+FFFD; every other
  character is kept (non-ASCII text is a ``unicodeChar`` column).
- Missing values are nulls: NaN in float columns (both formats' null), masked cells for
  integers (FITS ``TNULL``), empty strings for text in FITS, null cells in a VOTable.

The app streams these files over HTTP (``dashboard/export.py``); a script calls
:func:`write_selection`. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from core.io import atomic_path

#: Export formats: name -> (file extension, MIME type).
FORMATS = {"csv": ("csv", "text/csv; charset=utf-8"), "fits": ("fits", "application/fits"),
           "votable": ("vot", "application/x-votable+xml")}
#: Units of the catalogue columns that have one (astropy unit strings, FITS-standard).
UNITS = {"ra": "deg", "dec": "deg", "truth_ra": "deg", "truth_dec": "deg"}
#: A column whose name ends so carries that unit (the synthetic survey's ``truth_re_arcsec``, ...).
UNIT_SUFFIXES = {"_arcsec": "arcsec", "_deg": "deg"}
#: UCDs (IVOA Unified Content Descriptors) by which TOPCAT and Aladin find the id and position.
UCDS = {"galaxy_id": "meta.id;meta.main", "mangaid": "meta.id", "ra": "pos.eq.ra;meta.main",
        "dec": "pos.eq.dec;meta.main", "z": "src.redshift", "anomaly_score": "stat.fit.chi2"}
#: The table's name in both formats (FITS EXTNAME, VOTable TABLE name).
TABLE_NAME = "SELECTION"
#: How a VOTable holds its rows: BINARY, read by every VOTable reader (TOPCAT, Aladin, astropy, pyvo)
#: and measured ~3x faster to write with astropy than TABLEDATA or BINARY2 (~0.3 ms a row of ~100 columns).
VOTABLE_SERIALIZATION = "binary"
#: The largest selection written as a VOTable (astropy writes it cell by cell: ~30 s here); use FITS beyond.
VOTABLE_MAX_ROWS = 100_000
#: The value that stands for a missing integer in a VOTable (FITS gets its TNULL from astropy).
INT_NULL = np.iinfo(np.int64).min
#: Width of a FITS COMMENT card's text.
CARD_TEXT = 70

_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


@dataclass
class ExportInfo:
    """Where a selection comes from; written into every FITS / VOTable export."""

    run: str  # the run's name
    created: str  # UTC time of the export, ISO 8601 to the second
    score_definition: str  # core.scoring.SCORE_DEFINITION as recorded by embed ('' before embed)
    model: str  # one line: kind, latent size, parameters, named config
    model_args: str  # the architecture, "key=value" pairs of the manifest's model_args
    n_rows: int  # galaxies in the selection


def model_summary(manifest) -> str:
    """The run's model in one line ("ae, latent 128, 1,087,169 parameters, config demo")."""
    parts = [manifest.model]
    if "latent_dim" in manifest.model_args:
        parts.append(f"latent {manifest.model_args['latent_dim']}")
    if manifest.parameters is not None:
        parts.append(f"{manifest.parameters:,} parameters")
    parts.append(f"config {manifest.config}")
    return ", ".join(parts)


def export_info(manifest, n_rows: int, when: datetime | None = None) -> ExportInfo:
    """The :class:`ExportInfo` of ``n_rows`` galaxies of the run whose ``core.run.RunManifest`` is ``manifest``."""
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return ExportInfo(
        run=str(manifest.name), created=when.strftime("%Y-%m-%dT%H:%M:%S"),
        score_definition=manifest.score.definition if manifest.score else "",
        model=model_summary(manifest),
        model_args=", ".join(f"{k}={v}" for k, v in manifest.model_args.items()),
        n_rows=int(n_rows))


# ---------------------------------------------------------------- text


def fits_text(value: str) -> str:
    """``value`` as printable ASCII: every other character as a Python escape (FITS strings are ASCII)."""
    if value.isascii() and value.isprintable():
        return value
    return "".join(c if c.isascii() and c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in value)


def xml_text(value: str) -> str:
    """``value`` with the characters XML 1.0 cannot hold replaced by U+FFFD."""
    return _XML_ILLEGAL.sub("\ufffd", value)


def _unit(name: str) -> str | None:
    if name in UNITS:
        return UNITS[name]
    return next((unit for suffix, unit in UNIT_SUFFIXES.items() if name.endswith(suffix)), None)


# ---------------------------------------------------------------- the table


def selection_table(df: pd.DataFrame, info: ExportInfo, fmt: str):
    """``df`` as an astropy ``Table`` ready to write as ``fmt`` ("fits" or "votable"): units, UCDs,
    nulls and text as that format needs them, the export's provenance in ``meta``.

    Numeric columns are not copied where pandas holds them as numpy arrays, so the table
    costs little beside the frame.
    """
    from astropy.table import MaskedColumn, Table

    if fmt not in ("fits", "votable"):
        raise ValueError(f"unknown export format {fmt!r}; use 'fits' or 'votable'")
    text = fits_text if fmt == "fits" else xml_text
    columns, names = [], []
    for name in df.columns:
        out_name = text(str(name))
        if out_name in names:
            raise ValueError(f"two columns are both written as {out_name!r}; rename one of {name!r}")
        s = df[name]
        if pd.api.types.is_bool_dtype(s) and not s.hasnans:
            values, mask = s.to_numpy(dtype=bool), None
        elif pd.api.types.is_float_dtype(s):
            values, mask = s.to_numpy(dtype=np.float64, na_value=np.nan), None  # NaN is both formats' float null
        elif pd.api.types.is_integer_dtype(s):
            mask = s.isna().to_numpy()
            values = s.to_numpy(dtype=np.int64, na_value=0)
        else:  # text, or anything else, written as text; missing cells are nulls
            mask = s.isna().to_numpy()
            strings = [text(str(v)) for v in s.to_numpy(dtype=object, na_value="")]
            values = np.array(strings, dtype=str) if strings else np.zeros(0, dtype="U1")
        if fmt == "fits" and values.dtype.kind == "U":
            values = np.char.encode(values, "ascii")  # bytes: FITS strings are ASCII (fits_text made them so)
        col = MaskedColumn(values, name=out_name, mask=mask, copy=False) if mask is not None and mask.any() \
            else values
        columns.append(col)
        names.append(out_name)
    table = Table(columns, names=names, copy=False)
    for name, original in zip(names, df.columns):
        unit = _unit(str(original))
        if unit:
            table[name].unit = unit
        if fmt == "votable" and original in UCDS:
            table[name].meta["ucd"] = UCDS[original]
        if fmt == "votable" and table[name].dtype.kind == "i" and getattr(table[name], "mask", None) is not None:
            table[name].meta["values"] = {"null": INT_NULL}  # a BINARY VOTable marks null integers by a value
    table.meta.update(_fits_meta(info) if fmt == "fits" else {"description": _description(info)})
    return table


def _fits_meta(info: ExportInfo) -> dict:
    """Header keywords (8 characters, ASCII) and COMMENT cards of the provenance."""
    paragraphs = (f"Blueberry selection of {info.n_rows:,} galaxies of the run {info.run}, exported {info.created} UTC.",
                  f"Model: {info.model}. Architecture: {info.model_args}.",
                  f"anomaly_score: {info.score_definition or 'not recorded'}")
    # Not at hyphens: "chi-" and "square" on two cards would not read back as the definition.
    comments = [line for p in paragraphs for line in textwrap.wrap(fits_text(p), CARD_TEXT, break_on_hyphens=False)]
    return {"EXTNAME": TABLE_NAME, "ORIGIN": "Blueberry", "DATE": info.created, "BBRUN": fits_text(info.run)[:68],
            "BBMODEL": fits_text(info.model)[:68], "BBNROWS": info.n_rows,
            "comments": comments}


def _description(info: ExportInfo) -> str:
    return xml_text(f"Blueberry selection of {info.n_rows:,} galaxies of the run {info.run}, exported "
                    f"{info.created} UTC. Model: {info.model}. anomaly_score: {info.score_definition or 'not recorded'}")


def _infos(info: ExportInfo) -> list[tuple[str, str]]:
    """The VOTable INFO elements: name -> value."""
    return [("run", info.run), ("created", info.created + "Z"), ("model", info.model),
            ("model_args", info.model_args), ("score_definition", info.score_definition), ("n_rows", str(info.n_rows))]


# ---------------------------------------------------------------- writing


def write_selection(fileobj, df: pd.DataFrame, info: ExportInfo, fmt: str) -> None:
    """Write the selection ``df`` as ``fmt`` ("fits" or "votable") to an open binary file, with ``info``."""
    table = selection_table(df, info, fmt)
    if fmt == "fits":
        from astropy.io import fits

        fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(table)]).writeto(fileobj)
        return
    from astropy.io.votable import from_table
    from astropy.io.votable.tree import Info

    vot = from_table(table, table_id=TABLE_NAME.lower())
    resource = vot.resources[0]
    resource.tables[0].name = TABLE_NAME.lower()
    resource.tables[0].description = table.meta["description"]
    resource.infos.extend(Info(name=name, value=xml_text(value)) for name, value in _infos(info))
    vot.to_xml(fileobj, tabledata_format=VOTABLE_SERIALIZATION)


def save_selection(path, df: pd.DataFrame, info: ExportInfo, fmt: str) -> None:
    """Write the selection to ``path`` atomically (``fmt``: "fits" or "votable")."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write_selection(fh, df, info, fmt)
