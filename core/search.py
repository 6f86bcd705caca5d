"""Finding galaxies in a catalogue by what an astronomer types: a plate-IFU, a MaNGA-ID, or a position.

The app's search box calls :func:`search`; so can a script. What it understands:

- an identifier or its beginning, matched against ``galaxy_id`` (the plate-IFU) and
  ``mangaid`` (``7815-12701``, ``1-593159``; ``7815-`` lists plate 7815). An exact match
  wins over longer ids that start with the text;
- a position, in degrees (``150.1 2.2``) or sexagesimal (``10h00m24s +02d12m``,
  ``10:00:24 +02:12:00``: colon- or space-separated RA is in hours, as astronomers write
  it), parsed by astropy, with an optional radius and unit at the end (``150.1 2.2
  10arcsec``, ``... 1.5arcmin``, ``... 0.01deg``; :data:`DEFAULT_RADIUS_ARCSEC` without).

See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Catalogue columns searched for identifiers, in the order their matches are listed.
ID_COLUMNS = ("galaxy_id", "plateifu", "mangaid")
#: Radius of a position search without one (a MaNGA bundle is 12-32 arcsec across).
DEFAULT_RADIUS_ARCSEC = 5.0
#: The largest radius accepted: beyond it the flat-sky habits of a search box stop making sense.
MAX_RADIUS_DEG = 10.0
#: The longest text taken (a position with a radius fits easily).
MAX_QUERY_CHARS = 200
#: Units a radius may be given in.
RADIUS_UNITS = {"arcsec": 1 / 3600, '"': 1 / 3600, "arcmin": 1 / 60, "'": 1 / 60, "deg": 1.0}
HELP = ('Type a plate-IFU or MaNGA-ID (a beginning such as "7815-" lists a plate), or a position: '
        '"150.1 2.2", "10h00m24s +02d12m", optionally with a radius, "150.1 2.2 10arcsec".')

_NUMBER = r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?"
_DEGREES = re.compile(rf"\s*({_NUMBER})\s*[,\s]\s*({_NUMBER})\s*")
_RADIUS = re.compile(rf"^(.*\S)\s+({_NUMBER})\s*(arcsec|arcmin|deg|\"|')$")
_ID = re.compile(r"[A-Za-z0-9_.\-]+")


@dataclass
class SearchResult:
    """What a search found."""

    rows: np.ndarray  # catalogue rows: nearest first for a position, by id (then catalogue order) for ids
    kind: str  # "id", "position", or "" when the text was neither
    message: str  # one line for the user: what was found, or why nothing


class IdIndex:
    """The catalogue's identifiers sorted once, so a prefix costs two binary searches, not a scan.

    Built in O(N log N) (a second at a million galaxies); the app keeps one per server.
    """

    def __init__(self, catalogue: pd.DataFrame):
        self.columns = []  # (column name, sorted values, their catalogue rows)
        for col in ID_COLUMNS:
            if col in catalogue.columns:
                values = catalogue[col].astype(str).to_numpy(dtype=str)
                order = np.argsort(values, kind="stable")
                self.columns.append((col, values[order], order))

    def find(self, text: str) -> np.ndarray:
        """Rows whose id is ``text``; failing that, rows whose id starts with it (each row once)."""
        for exact in (True, False):
            found = []
            for _, values, order in self.columns:
                lo = np.searchsorted(values, text, side="left")
                # Every string that starts with ``text`` sorts below text + the largest code point.
                hi = np.searchsorted(values, text if exact else text + "\U0010ffff", side="right")
                found.append(order[lo:hi])
            rows = pd.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
            if len(rows):
                return np.asarray(rows, dtype=np.int64)
        return np.zeros(0, dtype=np.int64)


def parse_position(text: str) -> tuple[float, float, float]:
    """(ra, dec, radius), all in degrees, of a typed position; ValueError says what is wrong."""
    radius = DEFAULT_RADIUS_ARCSEC / 3600
    m = _RADIUS.match(text.strip())
    if m:
        text, radius = m.group(1), float(m.group(2)) * RADIUS_UNITS[m.group(3)]
        if not 0 < radius <= MAX_RADIUS_DEG:
            raise ValueError(f"a search radius must be above 0 and at most {MAX_RADIUS_DEG:g} deg")
    m = _DEGREES.fullmatch(text)
    if m:
        ra, dec = float(m.group(1)), float(m.group(2))
    else:
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        try:
            coord = SkyCoord(text, unit=(u.hourangle, u.deg), frame="icrs")
        except (ValueError, TypeError) as error:
            raise ValueError(f"{text.strip()!r} is not a position astropy can read ({error})") from None
        if not coord.isscalar:
            raise ValueError(f"{text.strip()!r} holds more than one position")
        ra, dec = float(coord.ra.deg), float(coord.dec.deg)
    if not (np.isfinite(ra) and 0 <= ra < 360):
        raise ValueError(f"RA {ra:g} is outside 0-360 deg")
    if not (np.isfinite(dec) and -90 <= dec <= 90):
        raise ValueError(f"Dec {dec:g} is outside -90..+90 deg")
    return ra, dec, radius


def separation_deg(ra, dec, ra0: float, dec0: float) -> np.ndarray:
    """Angle (deg) between each (ra, dec) and (ra0, dec0), all in degrees (haversine: exact at small angles)."""
    ra, dec, ra0, dec0 = (np.radians(np.asarray(v, dtype=np.float64)) for v in (ra, dec, ra0, dec0))
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * np.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1))))


def cone(catalogue: pd.DataFrame, ra: float, dec: float, radius: float) -> np.ndarray:
    """Rows within ``radius`` deg of (ra, dec), nearest first; galaxies without a position never match."""
    sep = separation_deg(catalogue["ra"], catalogue["dec"], ra, dec)
    rows = np.flatnonzero(sep <= radius)  # NaN compares False
    return rows[np.argsort(sep[rows], kind="stable")]


def _arcsec(deg: float) -> str:
    return f"{deg * 3600:g} arcsec" if deg < 1 / 60 else f"{deg * 60:g} arcmin" if deg < 1 else f"{deg:g} deg"


def search(catalogue: pd.DataFrame, text: str, index: IdIndex | None = None) -> SearchResult:
    """The galaxies of ``catalogue`` that ``text`` names (see the module's docstring)."""
    text = " ".join(str(text).split())
    none = np.zeros(0, dtype=np.int64)
    if not text:
        return SearchResult(none, "", HELP)
    if len(text) > MAX_QUERY_CHARS:
        return SearchResult(none, "", f"That is {len(text)} characters; a search takes at most {MAX_QUERY_CHARS}.")
    if _ID.fullmatch(text):
        rows = (index or IdIndex(catalogue)).find(text)
        if len(rows):
            return SearchResult(rows, "id", f"{len(rows):,} galaxies whose id starts with {text!r}"
                                if len(rows) > 1 else f"Found {text!r}")
    try:
        ra, dec, radius = parse_position(text)
    except ValueError as error:
        if _ID.fullmatch(text):
            return SearchResult(none, "", f"No galaxy's plate-IFU or MaNGA-ID is or starts with {text!r}.")
        return SearchResult(none, "", f"Cannot read {text!r}: {error}. {HELP}")
    if "ra" not in catalogue.columns or "dec" not in catalogue.columns:
        return SearchResult(none, "", "This catalogue has no ra/dec columns to search by position.")
    rows = cone(catalogue, ra, dec, radius)
    where = f"within {_arcsec(radius)} of RA {ra:.5f}, Dec {dec:+.5f}"
    if not len(rows):
        return SearchResult(none, "position", f"No galaxy {where}.")
    return SearchResult(rows, "position", f"{len(rows):,} galaxies {where}" if len(rows) > 1 else
                        f"Found {catalogue['galaxy_id'].iat[int(rows[0])]} {where}")
