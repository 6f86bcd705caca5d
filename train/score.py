"""``python -m train score``: score new MAPS files with a trained run, against the run's population."""
from __future__ import annotations

HELP = "score new MaNGA MAPS files with a trained run (same preprocessing, percentiles against the run)"
EXAMPLES = """\
  python -m train score --run runs/demo new/manga-*-MAPS-*.fits.gz --out scores.csv
  python -m train score --run runs/dr17 dr17/8485 --out 8485.csv --device cuda

Each file is read with the run's own preprocessing (its lines, grid size, normalisation and
mask bits), reconstructed by its model and scored exactly as `train embed` scores the run.
anomaly_pct is the percentage of the run's galaxies scoring at or below the file, and
flagged uses the run's threshold. Files that cannot be used are listed on stderr and skipped.
"""


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="run directory after `python -m train embed`")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="MAPS files, folders (searched recursively) or glob patterns")
    p.add_argument("--out", required=True, metavar="FILE.csv", help="CSV file to write, one row per scored galaxy")
    p.add_argument("--batch-size", type=int, default=64, help="galaxies per forward pass (default 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    import sys

    table, skipped = score_files(args.run, args.inputs, batch_size=args.batch_size, device=args.device,
                                 progress=not args.quiet)
    from core.io import atomic_path

    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False)
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(f"scored {len(table)} galaxies ({int(table['flagged'].sum())} flagged) into {args.out}"
          + (f"; {len(skipped)} file(s) skipped, listed above" if skipped else ""))
    return 0


def score_files(run_dir, inputs, batch_size: int = 64, device="auto", progress: bool = True):
    """Score MAPS files with a run: ``(table, skipped)``, skipped a list of ``(path, reason)``.

    Raises :class:`core.errors.BlueberryError` when no file could be scored.
    """
    import numpy as np
    import pandas as pd
    from tqdm.auto import tqdm

    from core import maps, scoring
    from core.errors import BlueberryError, RunError
    from core.ingest import find_inputs
    from core.models import load_model, resolve_device
    from core.run import open_run

    run = open_run(run_dir)
    score_info = run.manifest.get("score")
    if not score_info or "anomaly_score" not in run.catalogue:
        raise RunError(f"{run.path}: the run has no scores yet; run `python -m train embed --run {run.path}`")
    options = run.dataset.manifest.get("options", {})
    prep = {"lines": run.lines, "size": int(run.manifest["size"]), "norm": run.dataset.norm,
            "bad_bits": tuple(run.dataset.manifest.get("bad_bits", maps.DEFAULT_BAD_BITS))}
    if "min_good" in options:
        prep["min_good"] = float(options["min_good"])
    dev = resolve_device(device)
    model, _ = load_model(run.path, device=dev)
    population = run.catalogue["anomaly_score"].to_numpy(dtype=np.float64)
    lines = list(run.lines)

    files = find_inputs(inputs)
    tables, skipped = [], []
    bar = tqdm(total=len(files), desc="score", unit="file", disable=not progress)
    for start in range(0, len(files), batch_size):
        grids, sources = [], []
        for path in files[start:start + batch_size]:
            try:
                _, grid, _ = maps.preprocess(path, **prep)
            except BlueberryError as exc:
                skipped.append((str(path), getattr(exc, "problem", str(exc))))
            except Exception as exc:  # an unforeseen file must not stop the others
                skipped.append((str(path), f"unexpected {type(exc).__name__}: {exc}"))
            else:
                grids.append(grid)
                sources.append(str(path))
            bar.update()
        if not grids:
            continue
        flux = np.stack([g.flux for g in grids]).astype(np.float32)
        mask = np.stack([g.mask for g in grids])
        ivar = np.stack([g.ivar for g in grids]).astype(np.float32)
        (_, _, recon), = scoring.reconstruct(model, flux, mask, batch_size=len(grids), device=dev, progress=False)
        scores, shares = scoring.galaxy_errors(recon, flux, mask, ivar, lines)
        cols = scoring.score_columns(scores, shares, lines, population, score_info["flag_threshold"])
        cols.insert(0, "source", sources)
        cols.insert(0, "galaxy_id", [g.galaxy_id for g in grids])
        tables.append(cols)
    bar.close()
    if not tables:
        listing = "\n".join(f"  {p}: {r}" for p, r in skipped[:20])
        raise BlueberryError(f"none of the {len(files)} file(s) could be scored:\n{listing}")
    return pd.concat(tables, ignore_index=True), skipped
