"""Does a bright compact region ever lower the anomaly score? The score's error model against the former floor.

    python benchmarks/brightness_safety.py              # 3,000 random odd galaxies
    python benchmarks/brightness_safety.py --cases 500

Random odd galaxies (``tests/test_scoring._random_galaxy``: a disc and a nucleus that the
"reconstruction" holds, plus a clump of other line ratios that it misses, and noise) get a
Gaussian spot of 0.5 to 1.5 cells, centred on one of their cells, peaking at 0.5 to 100 times
their Halpha peak, in Halpha or in one of the other lines; the reconstruction is held fixed
(a feature the model does not reproduce). For each score it prints how often the spot lowered
the galaxy's score, and the median and worst change. ``today``: ``core.scoring``'s definition;
``raw peak 1 %``: the floor before 2026-12-01 (1 % of the raw Halpha peak, no model error).
Results: ``results/brightness_safety.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from core import scoring  # noqa: E402
from tests.test_scoring import _random_galaxy  # noqa: E402


def raw_peak_score(recon, flux, mask, ivar, lines) -> float:
    """The former anomaly score: floor 1 % of the raw peak unmasked Halpha, no model error."""
    ha = np.where(mask[0, lines.index(scoring.FLOOR_LINE)], -np.inf, flux[0, lines.index(scoring.FLOOR_LINE)]).max()
    good = ~mask
    return float(np.mean((recon[good] - flux[good]) ** 2 / (1 / ivar[good] + (0.01 * ha) ** 2)))


def today_score(recon, flux, mask, ivar, lines) -> float:
    return float(scoring.galaxy_errors(recon, flux, mask, ivar, lines)[0][0])


SCORES = {"today": today_score, "raw peak 1 %": raw_peak_score}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3000, help="random galaxies (default 3000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "brightness_safety.json")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    change = {(name, where): [] for name in SCORES for where in ("Ha", "other lines")}
    for _ in range(args.cases):
        recon, flux, mask, ivar, lines = _random_galaxy(np.random.default_rng(int(rng.integers(2**32))))
        line = int(rng.integers(len(lines)))
        cells = np.argwhere(~mask[0, 0])
        y, x = cells[rng.integers(len(cells))]
        width, amplitude = rng.uniform(0.5, 1.5), 10 ** rng.uniform(np.log10(0.5), 2)
        yy, xx = np.mgrid[:flux.shape[-2], :flux.shape[-1]]
        peak = scoring.floor_peaks(recon, mask, lines)[0]
        brighter = flux.copy()
        brighter[0, line] += np.where(mask[0, line], 0.0, amplitude * peak * np.exp(
            -((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2)))
        where = "Ha" if lines[line] == scoring.FLOOR_LINE else "other lines"
        for name, score in SCORES.items():
            change[(name, where)].append(score(recon, brighter, mask, ivar, lines) / score(recon, flux, mask, ivar, lines) - 1)
    rows = []
    print(f"{'score':14s} {'spot in':12s} {'cases':>6s} {'lowered':>8s} {'median change':>14s} {'worst':>8s}")
    for (name, where), values in change.items():
        v = np.array(values)
        row = {"score": name, "spot_in": where, "cases": len(v), "lowered": float(np.mean(v < 0)),
               "median_change": float(np.median(v)), "worst": float(v.min())}
        rows.append(row)
        print(f"{name:14s} {where:12s} {len(v):6d} {row['lowered']:8.1%} {row['median_change']:+14.0%} "
              f"{row['worst']:+8.0%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cases": args.cases, "seed": args.seed, "rows": rows}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
