"""Scoring new MAPS files with a finished run (``train score``), against the run's own population.

Each file goes through ``core.maps.preprocess`` with the ``IngestOptions`` recorded in the
run's dataset manifest, so it is read, gridded and normalised exactly as the run's galaxies
were; the arithmetic of the score is ``core.scoring``'s, as in ``embed``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from core import census, consistency, maps, mixing, scoring, sharpness
from core.errors import BlueberryError, RunError
from core.ingest import find_inputs
from core.run import check_stamps, open_run


def score_files(run_dir, inputs, batch_size: int = scoring.BATCH_SIZE, device="auto", progress: bool = True):
    """Score MAPS files with a run: ``(table, skipped)``, skipped a list of ``(path, reason)``.

    Raises :class:`core.errors.BlueberryError` when no file could be scored.
    """
    from tqdm.auto import tqdm

    from core.models import load_model, resolve_device

    run = open_run(run_dir)
    score_info = run.manifest.score
    if score_info is None or "anomaly_score" not in run.catalogue:
        raise RunError(f"{run.path}: the run has no scores yet; run `python -m train embed --run {run.path}`")
    if score_info.definition != scoring.SCORE_DEFINITION:
        raise RunError(f"{run.path}: the run's galaxies were scored with another definition of the anomaly score "
                       f"(an earlier Blueberry), so new files could not be compared with them; score them again "
                       f"with `python -m train embed --run {run.path}`")
    options = run.dataset.manifest.options
    dev = resolve_device(device)
    model, _ = load_model(run.path, device=dev)
    check_stamps(run.path, run.manifest, ("model.pt",))  # the model that scored the run's population
    population = run.catalogue["anomaly_score"].to_numpy(dtype=np.float64)
    lines = list(run.lines)
    # the network that scored the run's population, intact
    detector = run.consistency_network() if consistency.COLUMN in score_info.components else None
    census_fit = run.census_model() if census.COLUMN in score_info.components else None
    # a dataset ingested before 0.3.0 has no noise factors, and embed took its cells as independent: so do new files
    shared_noise = maps.NOISE_SIGMA in run.dataset.catalogue
    measure_sharp = sharpness.COLUMN in score_info.components

    files = find_inputs(inputs)
    tables, skipped = [], []
    bar = tqdm(total=len(files), desc="score", unit="file", disable=not progress)
    for start in range(0, len(files), batch_size):
        grids, sources, sharp = [], [], []
        for path in files[start:start + batch_size]:
            try:
                p = maps.preprocess(path, options)
                grid, measured = p.grid, sharpness.measure(p.maps, p.grid.lines) if measure_sharp else None
            except BlueberryError as exc:
                skipped.append((str(path), getattr(exc, "problem", str(exc))))
            except Exception as exc:  # an unforeseen file must not stop the others
                skipped.append((str(path), f"unexpected {type(exc).__name__}: {exc}"))
            else:
                grids.append(grid)
                sources.append(str(path))
                sharp.append(measured)
            bar.update()
        if not grids:
            continue
        flux = np.stack([g.flux for g in grids]).astype(np.float32)
        mask = np.stack([g.mask for g in grids])
        ivar = np.stack([g.ivar for g in grids]).astype(np.float32)
        (_, _, recon), = scoring.reconstruct(model, flux, mask, batch_size=len(grids), device=dev, progress=False)
        scores, shares, shape = scoring.score_batch(recon, flux, mask, ivar, lines)
        components = {scoring.RECON_COLUMN: scores}
        if detector is not None:
            components[consistency.COLUMN] = consistency.consistency_scores(detector, flux, ivar, mask, lines,
                                                                            device=dev)
        groups = None
        calibration = mixing.calibration_of(score_info)
        if calibration is not None:
            factors = (mixing.filter_factors([g.cell_spaxels for g in grids], [g.noise_sigma for g in grids])
                       if shared_noise else None)
            stats = mixing.block_statistics(flux, ivar, mask, lines, rank=mixing.rank_of(calibration), factors=factors)
            components[mixing.COLUMN], groups = mixing.galaxy_scores(stats, calibration, lines,
                                                                     mixing.signal_to_noise(flux, ivar, mask, lines))
        features = None
        if census_fit is not None:
            factor = [g.noise_factor for g in grids] if shared_noise else None
            stats, feature = census.statistics(*census.features(flux, ivar, mask, lines, factor), census_fit[0])
            components[census.COLUMN], features = census.galaxy_scores(stats, feature, census_fit[1], lines)
        if measure_sharp:
            components[sharpness.COLUMN] = np.array([m.score for m in sharp])
        anomaly = scoring.combine(components, score_info.components)
        cols = scoring.score_columns(anomaly, shares, lines, population, score_info.flag_threshold, shape, components)
        if groups is not None:
            cols[mixing.GROUP_COLUMN] = groups
        if features is not None:
            cols[census.FEATURE_COLUMN] = features
        for name in sharpness.COLUMNS[1:] if measure_sharp else ():
            cols[name] = [m.row()[name] for m in sharp]
        cols.insert(0, "source", sources)
        cols.insert(0, "galaxy_id", [g.galaxy_id for g in grids])
        tables.append(cols)
    bar.close()
    if not tables:
        listing = "\n".join(f"  {p}: {r}" for p, r in skipped[:20])
        raise BlueberryError(f"none of the {len(files)} file(s) could be scored:\n{listing}")
    return pd.concat(tables, ignore_index=True), skipped
