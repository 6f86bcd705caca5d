"""The ``evaluate`` stage: detection quality of a run against the truth of a synthetic survey.

Tasks (``core.scoring.truth_tasks``): true anomalies against everything else, each anomaly
kind against the non-anomalies, Seyfert + LINER against star-forming. Methods: the run's
anomaly score, each of its detectors alone (the autoencoder's ``score_recon`` and, where the
catalogue has it, the cross-line consistency detector ``core.consistency``), PCA reconstruction
error on the same maps (as many components as the model's latent, fitted on the training split)
and an isolation forest on the catalogue's log line ratios. It also reports how well the model
fits the ordinary galaxies (:func:`ordinary_fit`). The full result goes to ``evaluation.json``,
the headline task to the manifest (:class:`core.run.Evaluation`).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core import census, consistency, mixing, scoring, sharpness
from core.io import file_stamp, remove_stale_tmp, write_json
from core.run import EVALUATION_FILE, Evaluation, mark_stage, open_run

STAGE = "evaluate"
#: The methods compared, each a field of :class:`core.run.Evaluation`.
METHODS = ("model", "pca", "iforest")


def evaluate_run(run_dir, seed: int = 0) -> dict | None:
    """Evaluate the run in ``run_dir``: write evaluation.json and the manifest entry, return the result.

    None (and nothing written) when the catalogue has no truth columns.
    """
    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    run = open_run(run_dir)
    cat = run.catalogue
    tasks = scoring.truth_tasks(cat)
    if not tasks:
        return None
    remove_stale_tmp(run_dir)
    mark_stage(run_dir, STAGE, False)
    train_rows = np.flatnonzero(cat["split"].to_numpy() == "train")
    if len(train_rows) == 0:
        train_rows = np.arange(len(cat))
    methods = {
        "model": cat["anomaly_score"].to_numpy(dtype=np.float64),
        "pca": scoring.pca_errors(run.dataset.flux, run.dataset.mask, run.dataset.ivar, run.lines, train_rows,
                                  n_components=run.latents.shape[1], seed=seed),
        "iforest": scoring.isolation_forest_scores(cat, seed=seed),
    }
    detectors = {name: (column, definition) for name, column, definition in (
        ("recon", scoring.RECON_COLUMN, scoring.RECON_DEFINITION), ("consistency", consistency.COLUMN,
                                                                     consistency.DEFINITION),
        ("mixing", mixing.COLUMN, mixing.DEFINITION), ("census", census.COLUMN, census.DEFINITION),
        ("sharp", sharpness.COLUMN, sharpness.DEFINITION)) if column in cat}
    for name, (column, _) in detectors.items():
        methods[name] = cat[column].to_numpy(dtype=np.float64)
    rows = scoring.detection_metrics(tasks, methods)
    is_val = cat["split"].to_numpy() == "val"
    if is_val.any():
        val_rows = scoring.detection_metrics([t for t in tasks if t[0] == "anomaly"], methods, subset=is_val)
        for row in val_rows:
            row["task"] += " (val)"
        rows += val_rows
    result = {
        "tasks": rows,
        "methods": {
            "model": f"the run's anomaly score: {scoring.SCORE_DEFINITION}",
            "pca": f"PCA reconstruction of the same maps (masked cells 0), scored like the model, "
                   f"{run.latents.shape[1]} components fitted on the training split",
            "iforest": "isolation forest (300 trees) on " + ", ".join(c for c in scoring.RATIO_FEATURES if c in cat)
                       + " (missing ratios: median plus an indicator)",
            **{name: f"the run's {column} alone, {definition}" for name, (column, definition) in detectors.items()},
        },
        "seed": seed,
        "n_galaxies": len(cat),
        "catalogue_sha256": run.manifest.checksums.get("catalogue.parquet"),
    }
    if "truth_anomaly" in cat:
        truth = cat["truth_anomaly"].fillna(False).astype(bool).to_numpy()
        flagged = cat["flagged"].to_numpy(dtype=bool)
        result["flagged"] = {"n_flagged": int(flagged.sum()), "n_true_anomalies": int(truth.sum()),
                             "true_anomalies_flagged": int((flagged & truth).sum()),
                             "precision": float((flagged & truth).sum() / max(flagged.sum(), 1)),
                             "recall": float((flagged & truth).sum() / max(truth.sum(), 1))}
    fit = ordinary_fit(run)
    if fit is not None:
        result["fit"] = fit
    write_json(run_dir / EVALUATION_FILE, result)
    headline = rows[0]  # the "anomaly" task where truth_anomaly exists (truth_tasks lists it first)
    summary = Evaluation(task=headline["task"], **{m: headline[m] for m in METHODS},
                         seconds=round(time.perf_counter() - t0, 2), catalogue_sha256=result["catalogue_sha256"])
    files = {**run.manifest.files, EVALUATION_FILE: file_stamp(run_dir / EVALUATION_FILE)}
    mark_stage(run_dir, STAGE, True, evaluation=summary, files=files)
    return result


def ordinary_fit(run, block: int = 256) -> dict | None:
    """How well the model fits the galaxies that are not true anomalies: median reduced chi-squares.

    ``score``: the autoencoder's ``score_recon`` (the reduced chi-square with the score's error model) and
    ``noise``: the same against the measured noise alone, no error model; each over every ordinary
    galaxy and over those of the validation split, which the model never trained on. None
    without a ``truth_anomaly`` column. A model that reproduced ordinary galaxies to their noise
    would give ``noise`` near 1. Where the catalogue has ``core.consistency.FIT_COLUMNS`` (the run has the
    consistency network), ``consistency`` and ``consistency_noise`` say the same of its predictions of hidden
    lines (its score's error floors, and the noise alone); with ``core.mixing.FIT_COLUMNS``, ``mixing`` and
    ``mixing_noise`` of each galaxy's own mix (a 3 % floor, and the noise alone), of ``mixing_rank`` spectra.
    """
    cat = run.catalogue
    if "truth_anomaly" not in cat:
        return None
    ordinary = ~cat["truth_anomaly"].fillna(False).astype(bool).to_numpy()
    val = ordinary & (cat["split"].to_numpy() == "val")
    ds = run.dataset
    noise = np.concatenate([
        scoring.galaxy_errors(run.recon[lo:lo + block], ds.flux[lo:lo + block], ds.mask[lo:lo + block],
                              ds.ivar[lo:lo + block], run.lines, floor_fraction=0.0, model_error=0.0)[0]
        for lo in range(0, len(cat), block)])
    score = cat[scoring.RECON_COLUMN if scoring.RECON_COLUMN in cat else "anomaly_score"].to_numpy(dtype=np.float64)

    def median(values, rows):
        values = values[rows & np.isfinite(values)]
        return float(np.median(values)) if values.size else None

    fit = {"n_ordinary": int(ordinary.sum()), "n_ordinary_val": int(val.sum()),
           "score": median(score, ordinary), "score_val": median(score, val),
           "noise": median(noise, ordinary), "noise_val": median(noise, val)}
    # embed measured them with the fits that scored each galaxy (core.consistency / core.mixing .FIT_COLUMNS)
    for key, column in (*zip(("consistency", "consistency_noise"), consistency.FIT_COLUMNS),
                        *zip(("mixing", "mixing_noise"), mixing.FIT_COLUMNS)):
        if column in cat:
            values = cat[column].to_numpy(dtype=np.float64)
            fit[key], fit[f"{key}_val"] = median(values, ordinary), median(values, val)
    if fit.get("mixing") is not None:
        fit["mixing_rank"] = mixing.rank_of(mixing.calibration_of(run.manifest.score))
    return fit


def report(result: dict) -> str:
    """The printed form of an evaluation result: the metrics table, the flag counts, the methods."""
    lines = ["ROC-AUC / average precision (higher is better; 0.5 AUC = chance)",
             scoring.format_table(result["tasks"], list(result["methods"]))]
    flagged = result.get("flagged")
    if flagged:
        lines.append(f"flagged: {flagged['n_flagged']} galaxies, {flagged['true_anomalies_flagged']} of the "
                     f"{flagged['n_true_anomalies']} true anomalies (precision {flagged['precision']:.2f}, "
                     f"recall {flagged['recall']:.2f})")
    fit = result.get("fit")
    if fit and fit["score"] is not None:
        def pair(key):
            val = fit[f"{key}_val"]
            return f"{fit[key]:.3g}" + (f" (validation split {val:.3g})" if val is not None else "")
        lines.append(f"fit of the {fit['n_ordinary']} ordinary galaxies (not true anomalies), median reduced "
                     f"chi-square: {pair('score')} with the score's error model, {pair('noise')} against the "
                     "noise alone (1 = fitted to the noise)")
        if fit.get("consistency") is not None:
            lines.append(f"  the consistency network's predictions of hidden lines: {pair('consistency')} with its "
                         f"calibrated floors, {pair('consistency_noise')} against the noise alone")
        if fit.get("mixing") is not None:
            lines.append(f"  each galaxy's own mix of {fit.get('mixing_rank', mixing.RANK)} spectra ({mixing.COLUMN}'s "
                         f"fit): {pair('mixing')} "
                         f"with its {mixing.FLOOR:.0%} floor, {pair('mixing_noise')} against the noise alone")
    lines += [f"  {m}: {d}" for m, d in result["methods"].items()]
    return "\n".join(lines)
