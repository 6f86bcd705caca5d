"""The injection benchmark with each brightened region's errors kept right: how much of what it finds is noise?

    python benchmarks/injection_matched_ivar.py --run runs/demo --n-per-kind 12

The benchmark's kinds that multiply a region's flux by a factor (``core.perturb._scaled``: ``bright_ring``,
``nii_patch``, ``balmer_excess``, ``oiii_doublet``, ``blue_tilt`` ...) multiply its noise too, but leave the
file's inverse variance as it was, so the file says its errors are smaller than they are; a detector that
tests the noise (``score_sharp`` above all) can find the region by that alone. A sky that really brightens
would not do it: in the synthetic survey the noise does not grow with the line flux at all. Here every factor
above 1 also divides the region's ivar by the factor squared, so the errors the file gives are the noise it
holds, and the benchmark runs as ``train evaluate --inject`` does (it rewrites the run's injection.json: run
``train evaluate --inject`` again afterwards). Dimming (a factor under 1) keeps the ivar, as the kinds say.
Prints the headline per score column; the result is written to ``--out``
(default ``results/injection-demo-sharp-matched-ivar.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import core.perturb as perturb  # noqa: E402
from core.inject import InjectConfig, inject_run  # noqa: E402


def scaled_with_ivar(m, names, factor):
    """``core.perturb._scaled``, with the ivar of every brightened spaxel divided by the factor squared."""
    flux, ivar = m.flux.copy(), m.ivar.copy()
    fp = perturb.footprint(m)
    up = fp & (factor > 1)
    for i in m.index(names):
        flux[i] = np.where(fp, flux[i] * factor, flux[i])
        ivar[i] = np.where(up, ivar[i] / np.where(up, factor, 1.0) ** 2, ivar[i])
    return replace(m, flux=flux, ivar=ivar)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=REPO / "runs" / "demo")
    parser.add_argument("--n-per-kind", type=int, default=12)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results"
                        / "injection-demo-sharp-matched-ivar.json")
    args = parser.parse_args(argv)
    perturb._scaled = scaled_with_ivar  # workers=1: the kinds run in this process, which sees the change
    result = inject_run(args.run, InjectConfig(n_per_kind=args.n_per_kind), workers=1, progress=False)
    for name, head in result["headline"].items():
        print(f"{name:18s} at {head['strength']:g}: median kind {head['median_pct']:.1f}, lowest "
              f"{head['min_kind_pct']:.1f}, {head['kinds_at_90']} kinds >= 90, {100 * head['flagged']:.0f} % flagged, "
              f"untouched {head['control_pct']:.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}; run `python -m train evaluate --run {args.run} --inject` to restore the run's own")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
