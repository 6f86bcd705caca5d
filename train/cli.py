"""``python -m train <command>``: the Blueberry command line.

Each command lives in its own module of this package with ``HELP`` (one line),
``EXAMPLES`` (shown by ``--help``), ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import heavy libraries (torch, umap) inside ``run`` so that ``--help``
stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from core.errors import BlueberryError

COMMANDS = ("synth", "download", "ingest", "fit", "embed", "score", "evaluate", "annotate", "demo", "serve", "labels",
            "rank")

DESCRIPTION = """Blueberry: find the odd galaxies in IFS surveys.

Typical sequence:
  python -m train synth  --out data/synth --n 2000 --seed 1
  python -m train ingest data/synth --out data/demo-dataset
  python -m train fit    --data data/demo-dataset --run runs/mine --config demo
  python -m train embed  --run runs/mine
  python -m train evaluate --run runs/mine
or all of it at once:  python -m train demo
then explore it:      python -m train serve --run runs/demo
The real survey:      python -m train download --dapall DAPALL.fits --out data/manga-dr17
                      python -m train ingest data/manga-dr17/HYB10-MILESHC-MASTARSSP --out data/dr17 --dapall DAPALL.fits
Another catalogue:    python -m train annotate --run runs/mine known_agn.fits --on plateifu
label and re-rank:    python -m train rank --run runs/demo --out ranked.csv
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"train.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"train.{name}":
                raise
            continue  # command not built yet
        p = sub.add_parser(
            name, help=mod.HELP, description=mod.HELP, epilog="examples:\n" + mod.EXAMPLES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except BlueberryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the machine, not the code: a full disk, a folder that cannot be written
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
