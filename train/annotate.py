"""``python -m train annotate``: cross-match an external catalogue into a run's catalogue."""
from __future__ import annotations

import argparse
import re

from train.args import existing_file

HELP = "add the columns of an external catalogue (FITS, CSV, ECSV, Parquet, VOTable) to a run, by plate-IFU or sky position"
EXAMPLES = """\
  python -m train annotate --run runs/mine known_agn.fits --on plateifu
  python -m train annotate --run runs/mine galaxy_zoo.csv --on radec --radius 2arcsec --prefix gz_
  python -m train annotate --run runs/mine mergers.vot --on radec --radius 3 --ra-column RAJ2000 --dec-column DEJ2000
  python -m train annotate --run runs/mine mine.parquet --on plateifu --key PLATE_IFU

--on plateifu finds each galaxy's row by its plate-IFU (a column called plateifu, plate_ifu or
galaxy_id, any case; or --key); --on radec takes the nearest source within --radius (ra/dec,
objra/objdec, RAJ2000/DEJ2000 ..., in degrees unless the column has a unit) and adds
sep_arcsec. The other columns are added in lower case (after --prefix); galaxies without a
match get empty values. A name the run already has, or two names that differ only in case,
are refused before anything is written. Restart the app to see the new columns.
"""

#: "2arcsec", "2 arcsec", "2\\"", "0.5arcmin", "2": arcsec per unit.
_RADIUS = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(arcsec|arcmin|deg|\"|'')?\s*")
_ARCSEC = {None: 1.0, "arcsec": 1.0, '"': 1.0, "''": 1.0, "arcmin": 60.0, "deg": 3600.0}


def radius(text: str) -> float:
    """A matching radius in arcsec: a number, optionally with arcsec, arcmin or deg."""
    m = _RADIUS.fullmatch(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a radius: give e.g. 2arcsec, 1.5, 0.1arcmin")
    value = float(m.group(1)) * _ARCSEC[m.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: the radius must be above 0")
    return value


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="the run folder (after embed)")
    p.add_argument("catalogue", type=existing_file, metavar="CATALOGUE",
                   help="table to add: .fits, .csv, .ecsv, .parquet or .vot")
    p.add_argument("--on", required=True, choices=("plateifu", "radec"), help="match by plate-IFU or by sky position")
    p.add_argument("--radius", type=radius, default=2.0, help="for --on radec: the largest separation (default 2arcsec)")
    p.add_argument("--prefix", default="", help="put before every new column name, e.g. agn_")
    p.add_argument("--key", help="for --on plateifu: the catalogue's plate-IFU column (default: found by name)")
    p.add_argument("--ra-column", help="for --on radec: the RA column (default: found by name)")
    p.add_argument("--dec-column", help="for --on radec: the Dec column (default: found by name)")


def run(args) -> int:
    from core.annotate import annotate, summary

    report = annotate(args.run, args.catalogue, on=args.on, radius_arcsec=args.radius, prefix=args.prefix,
                      key=args.key, ra_column=args.ra_column, dec_column=args.dec_column)
    print(summary(report))
    return 0
