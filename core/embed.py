"""The ``embed`` stage: score every galaxy of a trained run and cache what the dashboard reads.

Writes ``catalogue.parquet``, ``latents.npy``, ``recon.npy``, ``neighbours.npy`` and the
cross-line consistency detector's network ``consistency.pt`` (``core.consistency``, trained here),
per-cell map ``consistency_map.npy`` and per-line shares ``consistency_lines.npy`` into the run
directory (atomically) and records the score summary (:class:`core.run.ScoreInfo`), the UMAP
parameters, the files' stamps (size, time, sha256) and the dataset's in its manifest; the embed
stamp is removed before the first file is rewritten and set last. The anomaly score combines the
autoencoder's reduced chi-square, the consistency detector, the spectral-mixing detector
(``core.mixing``, whose per-statistic calibration is kept with the score's units in the manifest)
and the census (``core.census``, whose survey Gaussian and calibration go to ``census.json``;
``core.scoring.SCORE_DEFINITION``).
Torch and umap are imported inside :func:`embed_run`.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from core import census, consistency, latent, maps, mixing, scoring, sharpness
from core.dataset import open_dataset
from core.errors import RunError
from core.io import open_npy_memmap, remove_stale_tmp, save_npy, save_parquet, stamp_files
from core.run import (CENSUS_FILE, CONSISTENCY_FILE, CONSISTENCY_LINES_FILE, CONSISTENCY_MAP_FILE, STAGE_OUTPUTS,
                      RunManifest, ScoreInfo, dataset_path, mark_stage, open_run)

STAGE = "embed"
#: Nearest neighbours kept per galaxy in latent space.
K_NEIGHBOURS = 20


def embed_run(run_dir, *, batch_size: int = scoring.BATCH_SIZE, device="auto", k: int = K_NEIGHBOURS,
              flag_pct: float = scoring.FLAG_PCT, seed: int = 0, mixing_rank: int = mixing.RANK,
              progress: bool = True) -> str:
    """Embed the run in ``run_dir``; return a one-paragraph summary. ``mixing_rank``: the spectra of each galaxy's
    mix in ``score_mixing`` (``core.mixing``)."""
    from core.models import load_model, resolve_device

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    manifest = RunManifest.read(run_dir)
    if not (run_dir / "model.pt").is_file():
        raise RunError(f"{run_dir}: no model.pt; train the model first with `python -m train fit --run {run_dir}`")
    if "fit" not in manifest.stages:
        raise RunError(f"{run_dir}: the training did not finish, so model.pt may still change; finish it with "
                       f"`python -m train fit --run {run_dir} --resume`")
    remove_stale_tmp(run_dir)
    data = open_dataset(dataset_path(run_dir, manifest))
    if list(data.lines) != list(manifest.lines) or data.size != manifest.size:
        raise RunError(f"{run_dir}: the model was trained on lines {manifest.lines} at size {manifest.size} "
                       f"but {data.path} now holds {list(data.lines)} at size {data.size}; train again with "
                       f"`python -m train fit --data {data.path} --run {run_dir}`")
    if not 1 <= mixing_rank < len(data.lines):
        raise RunError(f"{run_dir}: --mixing-rank {mixing_rank}: a mix of {len(data.lines)} lines needs between 1 and "
                       f"{len(data.lines) - 1} spectra (2 by default)")
    dev = resolve_device(device)
    model, payload = load_model(run_dir, device=dev)
    # A crash from here on leaves a run that says it was not embedded.
    mark_stage(run_dir, STAGE, False)

    n, lines = len(data), list(data.lines)
    latents = np.empty((n, payload["model_args"]["latent_dim"]), np.float32)
    scores, shares, shape = np.empty(n), np.empty((n, len(lines))), np.empty((n, len(scoring.SHAPE_COLUMNS)))
    recon, commit = open_npy_memmap(run_dir / "recon.npy", data.flux.shape, np.float32)
    try:
        for rows, z, rec in scoring.reconstruct(model, data.flux, data.mask, batch_size, dev, progress, desc="embed"):
            latents[rows], recon[rows] = z, rec
            scores[rows], shares[rows], shape[rows] = scoring.score_batch(rec, data.flux[rows], data.mask[rows],
                                                                          data.ivar[rows], lines)
        commit()
    except BaseException:
        os.unlink(recon.filename)
        raise
    del recon

    if progress:
        print(f"embed: UMAP of {n} latents and {min(k, n - 1)} nearest neighbours ...", flush=True)
    coords, umap_params = latent.umap_embedding(latents, seed=seed)
    neighbours = latent.nearest_neighbours(latents, k)

    components = {scoring.RECON_COLUMN: scores}
    consistency_file, map_file = run_dir / CONSISTENCY_FILE, run_dir / CONSISTENCY_MAP_FILE
    lines_file = run_dir / CONSISTENCY_LINES_FILE
    for stale in (consistency_file, map_file, lines_file):  # a crash before the new ones must not leave the old
        stale.unlink(missing_ok=True)
    fit_config = consistency.FitConfig(seed=seed)
    try:
        detector = consistency.fit(data.flux, data.ivar, data.mask, lines, np.flatnonzero(~manifest.split.mask(n)),
                                   fit_config, device=dev, progress=progress)
    except ValueError as exc:  # no Halpha: the run simply lacks the column
        detector = None
        if progress:
            print(f"embed: no {consistency.COLUMN} ({exc})", flush=True)
    else:
        cell_maps, commit = open_npy_memmap(map_file, (n, data.size, data.size), np.float32)
        line_shares = np.empty((n, len(lines)), np.float32)
        fits = np.empty((n, len(consistency.FIT_COLUMNS)))
        try:
            components[consistency.COLUMN] = consistency.consistency_scores(
                detector, data.flux, data.ivar, data.mask, lines, maps=cell_maps, shares=line_shares, fits=fits,
                device=dev, progress=progress)
            commit()
        except BaseException:
            os.unlink(cell_maps.filename)
            raise
        del cell_maps
    if progress:
        if maps.NOISE_SIGMA not in data.catalogue:  # a dataset ingested before 0.3.0
            print(f"embed: the dataset has no {maps.NOISE_FACTOR}, {maps.NOISE_SIGMA} columns; {mixing.COLUMN} and "
                  f"{census.COLUMN} take its cells' noise as independent (ingest the files again to have them)",
                  flush=True)
        print(f"embed: {mixing.COLUMN}, every galaxy fitted as a mix of {mixing_rank} spectra ...", flush=True)
    mixing_fits = np.empty((n, len(mixing.FIT_COLUMNS)))
    mixing_stats = mixing.block_statistics(data.flux, data.ivar, data.mask, lines, fits=mixing_fits,
                                           progress=progress, rank=mixing_rank,
                                           factors=mixing.catalogue_factors(data.catalogue))
    mixing_snr = mixing.signal_to_noise(data.flux, data.ivar, data.mask, lines)
    mixing_calibration = mixing.calibrate(mixing_stats, mixing_rank, mixing_snr)
    components[mixing.COLUMN], mixing_group = mixing.galaxy_scores(mixing_stats, mixing_calibration, lines,
                                                                   mixing_snr)
    census_file = run_dir / CENSUS_FILE
    census_file.unlink(missing_ok=True)
    census_fit = None
    if census.REFERENCE in lines:
        noise_factor = data.catalogue.get(maps.NOISE_FACTOR)
        noise_factor = None if noise_factor is None else noise_factor.to_numpy(np.float64)
        if progress:
            print(f"embed: {census.COLUMN}, every galaxy's line ratios and shapes against the survey's ...", flush=True)
        try:
            census_model = census.fit_survey(data.flux, data.ivar, data.mask, lines,
                                             np.flatnonzero(~manifest.split.mask(n)), seed=seed,
                                             noise_factor=noise_factor)
        except ValueError as exc:  # no training galaxy with Halpha detected: the run simply lacks the column
            if progress:
                print(f"embed: no {census.COLUMN} ({exc})", flush=True)
        else:
            census_stats, census_feature = census.block_statistics(data.flux, data.ivar, data.mask, lines,
                                                                   census_model, progress=progress,
                                                                   noise_factor=noise_factor)
            census_fit = (census_model, census.calibrate(census_stats))
            components[census.COLUMN], census_names = census.galaxy_scores(census_stats, census_feature,
                                                                           census_fit[1], lines)
    sharp = data.catalogue.get(sharpness.COLUMN)
    if sharp is not None and np.isfinite(sharp).any():  # measured by ingest on the native maps
        components[sharpness.COLUMN] = sharp.to_numpy(np.float64)
    elif progress:
        print(f"embed: no {sharpness.COLUMN} (ingest the files again with this version to have it, or their "
              f"headers name no PSF: {', '.join(maps.PSF_KEYS)})", flush=True)
    scales = scoring.component_scales(components)
    # train score puts new files' statistics in the same units
    scales[mixing.COLUMN]["statistics"] = mixing_calibration
    anomaly = scoring.combine(components, scales)
    threshold = scoring.flag_threshold(anomaly, flag_pct)
    catalogue = data.catalogue.reset_index(drop=True).copy()
    for name, col in scoring.score_columns(anomaly, shares, lines, anomaly, threshold, shape, components).items():
        catalogue[name] = col
    if detector is not None:
        for i, name in enumerate(consistency.FIT_COLUMNS):
            catalogue[name] = fits[:, i]
    catalogue[mixing.GROUP_COLUMN] = mixing_group
    if census_fit is not None:
        catalogue[census.FEATURE_COLUMN] = census_names
    for i, name in enumerate(mixing.FIT_COLUMNS):
        catalogue[name] = mixing_fits[:, i]
    catalogue["umap_x"], catalogue["umap_y"] = coords[:, 0], coords[:, 1]
    catalogue["split"] = np.where(manifest.split.mask(n), "val", "train")

    save_npy(run_dir / "latents.npy", latents)
    save_npy(run_dir / "neighbours.npy", neighbours)
    if detector is not None:
        consistency.save(detector, consistency_file, lines, fit_config)
        save_npy(lines_file, line_shares)
    if census_fit is not None:
        census.save(census_file, *census_fit, lines)
    save_parquet(run_dir / "catalogue.parquet", catalogue)
    detector_files = [CONSISTENCY_FILE, CONSISTENCY_MAP_FILE, CONSISTENCY_LINES_FILE] if detector is not None else []
    detector_files += [CENSUS_FILE] if census_fit is not None else []
    files = stamp_files(run_dir, (*STAGE_OUTPUTS[STAGE], "model.pt", *detector_files))
    checksums = {**manifest.checksums, **{f: stamp["sha256"] for f, stamp in files.items()}}
    finite = anomaly[np.isfinite(anomaly)]
    score = ScoreInfo(
        definition=scoring.SCORE_DEFINITION, pct_definition=scoring.PCT_DEFINITION, normalisation=data.norm,
        median=float(np.median(finite)), p90=float(np.percentile(finite, 90)), mean=float(finite.mean()),
        max=float(finite.max()), flag_pct=flag_pct, flag_threshold=threshold,
        n_flagged=int(catalogue["flagged"].sum()), components=scales)
    seconds = time.perf_counter() - t0
    # annotations=[]: the catalogue was rebuilt from the dataset, without annotate's columns.
    mark_stage(run_dir, STAGE, True, score=score, umap=umap_params, checksums=checksums, files=files, n_galaxies=n,
               annotations=[],
               neighbours={"k": int(neighbours.shape[1]), "metric": "euclidean", "space": "latent", "self_excluded": True},
               embed={"seconds": round(seconds, 2), "device": str(dev), "batch_size": batch_size,
                      "dataset_sha256": data.manifest.checksums})
    open_run(run_dir)  # the dashboard must be able to read what was written
    return (f"embedded {n} galaxies of {run_dir} in {seconds:.1f} s: score median {score.median:.4g}, "
            f"90th percentile {score.p90:.4g}; {score.n_flagged} flagged (>= {flag_pct:g}th percentile)")
