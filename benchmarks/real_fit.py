"""How many spectra does a real galaxy need? ``core.mixing``'s fit of real MaNGA MAPS files at several ranks.

    python benchmarks/real_fit.py                                # the MAPS files in ../shared/data/manga
    python benchmarks/real_fit.py FILE.fits.gz ... --ranks 1 2 3 4 5
    python benchmarks/real_fit.py --run runs/demo                # the run's ingest options, and its galaxies beside
    python benchmarks/real_fit.py --sizes 16 24 32 38 48 64       # and the faint lines' fit at every grid size

``score_mixing`` fits each galaxy alone as a mix of ``core.mixing.RANK`` (2) spectra, a number chosen on
the synthetic survey, whose galaxies that mix fits to their noise. This measures it where it matters: each
real file is read and gridded as ingest does (``core.maps.preprocess``), fitted with 1 to 4 spectra, and
its median reduced chi-square printed, against the noise and the 3 % floor and against the noise alone,
with every line's at rank 2 beside its median signal-to-noise. Lines of low signal-to-noise, where the
floor is negligible, say whether the file's errors are the scatter the model leaves (chi-square 1) or
smaller. With ``--run`` the run's own galaxies (its first 500) are fitted the same way, for comparison.
With ``--sizes`` each file is also gridded at those sizes, with the cube's spatial correlation of the
noise (as ingest does, ``core.maps.to_grid``) and with its spaxels taken as independent, and the
reduced chi-square of its faint lines (median signal-to-noise under 8) at rank 2 printed: errors that
are right do not depend on the cell size. Results: ``results/real_fit.json``.
"""
from __future__ import annotations

import argparse
import platform
import sys
from datetime import date
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.discovery import write_result  # noqa: E402
from core import mixing  # noqa: E402
from core.dataset import IngestOptions  # noqa: E402
from core.errors import BlueberryError  # noqa: E402

SHARED_MANGA = REPO.parent / "shared" / "data" / "manga"


def fit(flux, ivar, mask, lines, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fits (N, 2), residuals (N, L, S, S))`` of the galaxies' mix of ``rank`` spectra."""
    fits = np.empty((len(flux), 2))
    resid = mixing.residuals(flux, ivar, mask, lines, fits=fits, rank=rank)
    return fits, resid


def per_line(flux, ivar, mask, resid) -> list[dict]:
    """Each line's reduced chi-square (noise and floor) and median signal-to-noise over its measured cells."""
    rows = []
    for line in range(flux.shape[1]):
        good = ~mask[:, line] & np.isfinite(resid[:, line])
        snr = (flux[:, line] * np.sqrt(ivar[:, line]))[good]
        rows.append({"chi2": float(np.mean(resid[:, line][good] ** 2)) if good.any() else float("nan"),
                     "median_snr": float(np.median(snr)) if good.any() else float("nan")})
    return rows


def faint_chi2(path, lines, size: int, independent: bool) -> tuple[float, float]:
    """``(chi2, cell)``: the reduced chi-square at rank 2 of the file's lines whose median signal-to-noise is
    under 8 in its spaxels, gridded to ``size``; the cell's side in arcsec."""
    from core import maps

    g = maps.read_maps(path, lines=tuple(lines))
    if independent:
        g.versdap = maps.SYNTHETIC_VERSDAP  # the gridding then takes every spaxel's noise as its own
    grid = maps.to_grid(g, size=size)
    flux, ivar, mask = grid.flux[None], grid.ivar[None], grid.mask[None]
    resid = mixing.residuals(flux, ivar, mask, lines)[0]  # (L, S, S)
    snr = np.nanmedian(np.where(g.mask, np.nan, g.flux * np.sqrt(g.ivar)), axis=(1, 2))  # (L,) per spaxel, as read
    return float(np.nanmean(resid[snr < 8] ** 2)), float(grid.pixscale)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=Path, help="MAPS files (default: every MAPS file in ../shared/data/manga)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 3, 4], help="spectra in the mix (default 1 to 4)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[], help="grid sizes of the faint lines' table")
    parser.add_argument("--run", type=Path, help="a run folder: its ingest options, and its first 500 galaxies beside")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "real_fit.json"))
    args = parser.parse_args(argv)

    from core import maps
    from core.run import open_run

    files = args.files or sorted(SHARED_MANGA.glob("*MAPS*.fits*"))
    if not files:
        print(f"no MAPS files given and none in {SHARED_MANGA}", file=sys.stderr)
        return 2
    run = open_run(args.run) if args.run else None
    options = run.dataset.manifest.options if run else IngestOptions()
    lines = list(options.lines)
    rows = []
    print(f"{'galaxy':<22} {'rank':>4} {'chi2 (noise + floor)':>21} {'chi2 (noise)':>13}")
    sets = []
    for path in files:
        try:
            grid = maps.preprocess(path, options).grid
        except BlueberryError as err:
            print(f"skipped: {err}", file=sys.stderr)
            continue
        sets.append((grid.galaxy_id, grid.flux[None].astype(np.float32), grid.ivar[None].astype(np.float32),
                     grid.mask[None], {"cell_arcsec": round(float(grid.pixscale), 3)}))
    if run is not None:
        n = min(500, len(run.dataset.flux))
        sets.append((f"{args.run.name} (median of {n})", np.asarray(run.dataset.flux[:n], np.float32),
                     np.asarray(run.dataset.ivar[:n], np.float32), np.asarray(run.dataset.mask[:n]), {}))
    for name, flux, ivar, mask, extra in sets:
        row = {"galaxy": name, **extra, "ranks": {}}
        for rank in args.ranks:
            fits, resid = fit(flux, ivar, mask, lines, rank)
            med = np.median(fits, axis=0)
            row["ranks"][rank] = {"chi2": round(float(med[0]), 3), "chi2_noise": round(float(med[1]), 3)}
            print(f"{name:<22} {rank:>4} {med[0]:>21.2f} {med[1]:>13.2f}", flush=True)
            if rank == mixing.RANK:
                row["lines"] = dict(zip(lines, per_line(flux, ivar, mask, resid)))
        rows.append(row)
    for row in rows:
        if "lines" in row:
            print(f"\n{row['galaxy']}: each line at rank {mixing.RANK}\n{'line':<12} {'chi2':>7} {'median S/N':>11}")
            for line, r in row["lines"].items():
                print(f"{line:<12} {r['chi2']:>7.2f} {r['median_snr']:>11.1f}")
    sweep = []
    if args.sizes:
        print(f"\nfaint lines (median S/N < 8), rank {mixing.RANK}\n{'galaxy':<22} {'size':>4} {'cell (arcsec)':>13} "
              f"{'chi2 correlated':>15} {'chi2 independent':>16}")
        for path in files:
            for size in args.sizes:
                try:
                    (correlated, cell), (independent, _) = (faint_chi2(path, lines, size, flag) for flag in (False, True))
                except BlueberryError as err:
                    print(f"skipped: {err}", file=sys.stderr)
                    break
                sweep.append({"file": Path(path).name, "size": size, "cell_arcsec": round(cell, 3),
                              "correlated": round(correlated, 3), "independent": round(independent, 3)})
                print(f"{Path(path).name[:22]:<22} {size:>4} {cell:>13.2f} {correlated:>15.2f} {independent:>16.2f}",
                      flush=True)
    write_result(args.out, {"date": date.today().isoformat(), "machine": platform.platform(),
                            "floor": mixing.FLOOR, "grid": options.size, "rows": rows, "sizes": sweep})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
