"""``python -m train synth``: write a synthetic MaNGA-like survey (DAP MAPS files + truth.csv)."""
from __future__ import annotations

from train.args import finite_float, fraction, out_folder, positive_int, processes, random_seed

HELP = "write a synthetic MaNGA-like survey: DAP-format MAPS files plus truth.csv"
EXAMPLES = """\
  python -m train synth --out data/synth --n 2000 --seed 1
  python -m train synth --out data/synth-dr17 --n 500 --seed 2 --release dr17 --workers 4
  python -m train synth --out /tmp/hard --n 1000 --seed 3 --noise 0.15 --anomaly-fraction 0.05
The files are named like the DAP's (manga-<plate>-<ifu>-MAPS-SYNTH-GAU.fits.gz); truth.csv
holds each galaxy's class, whether it is an anomaly, and the parameters that made it.
The same --seed gives the same files whatever --workers is.
"""


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, type=out_folder, help="folder to write the MAPS files and truth.csv into")
    parser.add_argument("--n", type=positive_int, default=2000, help="number of galaxies (default 2000)")
    parser.add_argument("--seed", type=random_seed, default=1, help="random seed (default 1)")
    parser.add_argument("--release", choices=("dr15", "dr17"), default="dr15",
                        help="channel layout: dr15 (22 lines) or dr17 (35 lines); default dr15")
    parser.add_argument("--workers", type=processes, default=None, help="processes (default: all cores)")
    parser.add_argument("--anomaly-fraction", type=fraction, default=None,
                        help="fraction of true anomalies, 0 to 1 (default 0.02)")
    parser.add_argument("--noise", type=finite_float(low=0, low_open=True), default=None,
                        help="1-sigma line-flux error per spaxel in 1E-17 erg/s/cm^2 (default 0.07)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import time

    from core.synth import SynthConfig, generate_survey

    overrides = {k: v for k, v in (("anomaly_fraction", args.anomaly_fraction), ("noise", args.noise))
                 if v is not None}
    config = SynthConfig(**overrides)
    start = time.perf_counter()
    truth = generate_survey(args.out, args.n, args.seed, release=args.release, workers=args.workers,
                            progress=not args.quiet, config=config)
    counts = truth["truth_class"].value_counts()
    mix = ", ".join(f"{name} {counts[name]}" for name in counts.index)
    print(f"wrote {len(truth)} galaxies ({args.release}, seed {args.seed}; {mix}; "
          f"{int(truth['truth_anomaly'].sum())} anomalies) to {args.out} in {time.perf_counter() - start:.1f} s")
    return 0
