"""``python -m train labels``: export and import the interest labels of a run (``core.labels``)."""
from __future__ import annotations

from train.args import out_file

HELP = "export or import a run's interest labels (0 to 5, with notes) as CSV"
EXAMPLES = """\
  python -m train labels export --run runs/demo --out labels.csv
  python -m train labels import --run runs/demo labels.csv
  python -m train labels import --run runs/other labels.csv --user alice

Labels live in RUN/labels.sqlite (the app writes them too). The CSV has the columns
galaxy_id, interest (a whole number 0 to 5) and an optional note; export adds user and
time, which import ignores. An import sets every row as a new label by --user (default:
you), keeping earlier values in each galaxy's history. A file with ids that are not in the
run, values outside 0..5, duplicates or missing columns is refused with the lines at fault,
and nothing is imported.
"""


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    exp = sub.add_parser("export", help="write the latest label of every labelled galaxy to a CSV file")
    exp.add_argument("--run", required=True, metavar="RUN", help="run directory")
    exp.add_argument("--out", required=True, type=out_file, metavar="FILE.csv", help="CSV file to write")
    imp = sub.add_parser("import", help="add the labels of a CSV file to the run's labels")
    imp.add_argument("--run", required=True, metavar="RUN", help="run directory after `python -m train embed`")
    imp.add_argument("csv", metavar="FILE.csv", help="labels: galaxy_id, interest (0-5)[, note]")
    imp.add_argument("--user", default=None, metavar="NAME", help="who labelled them (default: the OS user)")


def run(args) -> int:
    from core.labels import LabelStore, read_labels_csv, write_labels_csv
    from core.run import RunManifest

    if args.action == "export":
        RunManifest.read(args.run)  # a clear error when RUN is not a run
        labels = LabelStore(args.run).latest()
        write_labels_csv(labels, args.out)
        print(f"exported {len(labels)} label(s) from {args.run} to {args.out}")
        return 0
    from core.run import open_run

    known = open_run(args.run).catalogue["galaxy_id"].astype(str)
    labels = read_labels_csv(args.csv, known)
    n = LabelStore(args.run).set_many(labels[["galaxy_id", "interest", "note"]].itertuples(index=False, name=None),
                                      user=args.user)
    print(f"imported {n} label(s) from {args.csv} into {args.run}")
    return 0
