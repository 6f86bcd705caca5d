"""Does a bright compact region ever lower the anomaly score? The score's error model against the former floor.

    python benchmarks/brightness_safety.py              # 3,000 random odd galaxies
    python benchmarks/brightness_safety.py --cases 500
    python benchmarks/brightness_safety.py --run runs/demo --cases 2000   # the census, on a run's galaxies

Random odd galaxies (``tests/test_scoring._random_galaxy``: a disc and a nucleus that the
"reconstruction" holds, plus a clump of other line ratios that it misses, and noise) get a
Gaussian spot of 0.5 to 1.5 cells, centred on one of their cells, peaking at 0.5 to 100 times
their Halpha peak, in Halpha or in one of the other lines; the reconstruction is held fixed
(a feature the model does not reproduce). For each score it prints how often the spot lowered
the galaxy's score, and the median and worst change. ``today``: ``core.scoring``'s definition;
``raw peak 1 %``: the floor before 2026-12-01 (1 % of the raw Halpha peak, no model error).
Results: ``results/brightness_safety.json``.

With ``--run``: the census (``core.census``), which compares a galaxy with the survey rather than with a
model of itself, on the run's own galaxies with the run's ``census.json``: the same spots (in any line
but Halpha, on a cell of the galaxy's Halpha footprint), and how often ``score_census`` fell. It can
lower the anomaly score only where the census is the galaxy's largest robust z-score, so that share
is printed too (the other detectors never fall for such a spot: property-tested). Results:
``results/brightness_safety_census.json``.

With ``--run`` and ``--sharp``: ``score_sharp`` (``core.sharpness``), which reads the native maps, on the
run's own source files: a point source seen through the galaxy's PSF (a sky could make it, unlike the
sub-PSF spots above), 0.5 to 100 times a random line's peak, at a random spaxel of the footprint; how
often ``score_sharp`` fell or rose, in robust standard deviations of the run, and how often it fell
where it was the galaxy's largest z-score. Results: ``results/brightness_safety_sharp.json``.

    python benchmarks/brightness_safety.py --run runs/demo --sharp --cases 1500
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


def census_on_run(run_dir, cases: int, seed: int) -> dict:
    """The census's change for spots added to a run's galaxies; prints a table, returns the JSON."""
    from core import census
    from core.run import open_run

    run = open_run(run_dir)
    model, calibration = run.census_model()
    data, lines, cat = run.dataset, list(run.lines), run.catalogue
    ha = lines.index(census.REFERENCE)
    scales = run.manifest.score.components
    names = [name for name in scales if name in cat]
    zs = scoring.robust_z({name: cat[name].to_numpy(np.float64) for name in names}, scales)
    largest = np.argmax(np.where(np.isfinite(zs), zs, -np.inf), 0)
    census_largest = np.array(names)[largest] == census.COLUMN
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(cases):
        i = int(rng.integers(len(cat)))
        flux, ivar = (np.asarray(a[i:i + 1], np.float64) for a in (data.flux, data.ivar))
        mask = np.asarray(data.mask[i:i + 1], bool)
        cells = np.argwhere(~mask[0, ha])
        if not len(cells):
            continue
        line = int(rng.choice([j for j in range(len(lines)) if j != ha]))
        y, x = cells[rng.integers(len(cells))]
        width, amplitude = rng.uniform(0.5, 1.5), 10 ** rng.uniform(np.log10(0.5), 2)
        yy, xx = np.mgrid[:flux.shape[-2], :flux.shape[-1]]
        peak = np.percentile(flux[0, ha][~mask[0, ha]], 99)
        brighter = flux.copy()
        brighter[0, line] += np.where(mask[0, line], 0.0, amplitude * peak * np.exp(
            -((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2)))
        before, after = (census.galaxy_scores(*census.statistics(*census.features(f, ivar, mask, lines), model),
                                              calibration, lines)[0][0] for f in (flux, brighter))
        rows.append((i, lines[line], amplitude, before, after, bool(census_largest[i])))
    # in robust standard deviations (ln score_census): the score itself spans hundreds of decades
    change = np.array([np.log(a) - np.log(b) for _, _, _, b, a, _ in rows])
    lowered = change < 0
    largest_rows = np.array([r[5] for r in rows])
    out = {"run": str(run_dir), "cases": len(rows), "seed": seed, "lowered": float(lowered.mean()),
           "lowered_where_census_is_largest": float((lowered & largest_rows).mean()),
           "census_largest_share": float(largest_rows.mean()), "median_change_ln": float(np.median(change)),
           "worst_change_ln": float(change.min()),
           "lowered_cases": [{"row": r[0], "line": r[1], "amplitude": r[2], "ln_before": float(np.log(r[3])),
                              "ln_after": float(np.log(r[4])), "census_largest": r[5]}
                             for r, low in zip(rows, lowered) if low]}
    print(f"census on {run_dir}: {len(rows)} spots (0.5-100x the Halpha peak, 0.5-1.5 cells, any line but Halpha)")
    print(f"  score_census lowered: {out['lowered']:.1%} of cases (median change {out['median_change_ln']:+.1f}, "
          f"worst {out['worst_change_ln']:+.1f} robust standard deviations)")
    for i, line, amplitude, b, a, big in (r for r, low in zip(rows, lowered) if low):
        print(f"    galaxy {i}: {line} spot of {amplitude:.1f}x the Halpha peak: ln score_census {np.log(b):.2f} -> "
              f"{np.log(a):.2f}{' (the largest z-score)' if big else ''}")
    print(f"  ... where the census was the galaxy's largest z-score (the only cases that can lower anomaly_score): "
          f"{out['lowered_where_census_is_largest']:.1%} of cases (the census is the largest for "
          f"{out['census_largest_share']:.0%} of the galaxies drawn)")
    return out


def sharp_on_run(run_dir, cases: int, seed: int) -> dict:
    """score_sharp's change for point sources added to a run's source files; prints a line, returns the JSON."""
    from dataclasses import replace

    from core import sharpness
    from core.maps import read_maps
    from core.run import open_run

    run = open_run(run_dir)
    cat, scales = run.catalogue, run.manifest.score.components
    names = [name for name in scales if name in cat]
    zs = scoring.robust_z({name: cat[name].to_numpy(np.float64) for name in names}, scales)
    sharp_largest = np.array(names)[np.argmax(np.where(np.isfinite(zs), zs, -np.inf), 0)] == sharpness.COLUMN
    spread = scales[sharpness.COLUMN]["spread"]
    rng = np.random.default_rng(seed)
    change, largest = [], []
    for _ in range(cases):
        i = int(rng.integers(len(cat)))
        g = read_maps(cat["source"].iat[i], lines=run.lines)
        ys, xs = np.nonzero(g.footprint)
        line = int(rng.integers(len(g.lines)))
        good = g.flux[line][~g.mask[line]]
        if not len(ys) or not len(good):
            continue
        k, amplitude = int(rng.integers(len(ys))), 10 ** rng.uniform(np.log10(0.5), 2)
        y0, x0 = ys[k] + rng.uniform(-0.5, 0.5), xs[k] + rng.uniform(-0.5, 0.5)
        yy, xx = np.indices(g.footprint.shape)
        s = sharpness.psf_sigma(g.psf_fwhm, g.pixscale)
        flux = g.flux.copy()
        flux[line] += amplitude * max(np.percentile(good, 99), 1e-3) * np.exp(
            -((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * s * s))
        before, after = sharpness.measure(g).score, sharpness.measure(replace(g, flux=flux)).score
        change.append(np.log(after / before) / spread)  # robust standard deviations of the run
        largest.append(bool(sharp_largest[i]))
    change, largest = np.array(change), np.array(largest)
    out = {"run": str(run_dir), "cases": len(change), "seed": seed, "lowered": float(np.mean(change < 0)),
           "raised": float(np.mean(change > 0)), "median_change_z": float(np.median(change)),
           "worst_fall_z": float(change.min()), "largest_rise_z": float(change.max()),
           "lowered_where_sharp_is_largest": float(np.mean((change < 0) & largest))}
    print(f"score_sharp on {run_dir}: {len(change)} point sources through the PSF (0.5-100x a line's peak, any line)")
    print(f"  lowered {out['lowered']:.1%}, raised {out['raised']:.1%}; median change {out['median_change_z']:+.3f}, "
          f"worst fall {out['worst_fall_z']:+.2f}, largest rise {out['largest_rise_z']:+.2f} robust standard "
          f"deviations; lowered where score_sharp was the galaxy's largest z-score: "
          f"{out['lowered_where_sharp_is_largest']:.1%}")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3000, help="random galaxies (default 3000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--run", type=Path, default=None, help="measure the census on this run's galaxies instead")
    parser.add_argument("--sharp", action="store_true", help="with --run: measure score_sharp instead of the census")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON (default results/brightness_safety.json, with --run brightness_safety_census.json)")
    args = parser.parse_args(argv)
    results = REPO / "benchmarks" / "results"
    if args.run is not None:
        measure, name = (sharp_on_run, "sharp") if args.sharp else (census_on_run, "census")
        out = measure(args.run, args.cases, args.seed)
        path = args.out or results / f"brightness_safety_{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(out, indent=1))
        print(f"wrote {path}")
        return 0
    args.out = args.out or results / "brightness_safety.json"
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
