"""A fake but plausible run directory, for the dashboard tests and the latency benchmark.

``make_fake_run(path)`` writes a dataset folder (``core.dataset`` format, inside the run as
``path/dataset``) and a run directory (``core.run`` format), their manifests through the
same writers as the real stages (``DatasetManifest``, ``RunManifest``), with the structure the
dashboard has to show: clusters in the UMAP plane, one per truth class, a sprinkle of rare
anomalous galaxies far from them, BPT line ratios on the right side of the demarcation
lines, hexagonal IFU footprints with masked corners, reconstructions that miss the
anomalies, and the K nearest neighbours of every galaxy.

It scales to a million galaxies: maps are built in chunks from a few spatial templates
(outer product of a template with each galaxy's line amplitudes), written straight into
memory-mapped ``.npy`` files, so memory stays flat; use a small ``size`` for big ``n``
(1,000,000 galaxies x 19 lines x 8 x 8 spaxels is ~5 GB per float array on disk).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from core import bpt, scoring
from core.dataset import FILES, DatasetManifest, IngestOptions
from core.io import open_npy_memmap, save_npy, save_parquet, stamp_files
from core.lines import BPT_LINES, DEFAULT_LINES, check_lines
from core.run import STAGE_OUTPUTS, Evaluation, RunManifest, ScoreInfo, Split

#: Truth classes: (name, anomalous, log [NII]/Ha, log [OIII]/Hb, log [SII]/Ha, log [OI]/Ha, share).
CLASSES = (
    ("sf", False, -0.55, -0.25, -0.45, -1.6, 0.42),
    ("comp", False, -0.25, 0.0, -0.35, -1.3, 0.15),
    ("seyfert", False, 0.05, 0.85, -0.15, -0.75, 0.10),
    ("liner", False, 0.05, 0.05, 0.05, -0.55, 0.12),
    ("retired", False, 0.15, -0.05, 0.1, -0.5, 0.17),
    ("blueberry", True, -1.25, 0.85, -1.1, -2.0, 0.02),
    ("off_nuclear", True, -0.1, 0.6, -0.2, -0.9, 0.02),
)
IFU_DESIGNS = (1901, 1902, 3701, 3702, 3703, 3704, 6101, 6102, 6103, 6104, 9101, 9102, 12701, 12702, 12703, 12704, 12705)
N_TEMPLATES = 16
K_NEIGHBOURS = 8
LATENT_DIM = 16
CHUNK = 4096


def fake_lines(n_lines: int) -> tuple[str, ...]:
    """``n_lines`` of the default 19, the BPT lines first, in wavelength order."""
    bpt_lines = [name for name in DEFAULT_LINES if name in BPT_LINES.values()]
    others = [name for name in DEFAULT_LINES if name not in bpt_lines]
    if not 1 <= n_lines <= len(DEFAULT_LINES):
        raise ValueError(f"n_lines must be 1..{len(DEFAULT_LINES)}, got {n_lines}")
    return check_lines((bpt_lines + others)[:n_lines])


def _line_amplitudes(lines, nii, oiii, sii, oi) -> np.ndarray:
    """(G, L) line fluxes relative to Ha from the log ratios (Case B Hb, fixed doublet ratios)."""
    n = len(nii)
    amp = {
        "Ha-6564": np.ones(n), "Hb-4862": np.full(n, 1 / 2.86),
        "NII-6585": 10 ** nii, "NII-6549": 10 ** nii / 2.94,
        "OIII-5008": 10 ** oiii / 2.86, "OIII-4960": 10 ** oiii / 2.86 / 2.98,
        "SII-6718": 10 ** sii * 0.58, "SII-6732": 10 ** sii * 0.42,
        "OI-6302": 10 ** oi, "OI-6365": 10 ** oi / 3.1,
        "Hgam-4341": np.full(n, 0.47 / 2.86), "Hdel-4102": np.full(n, 0.26 / 2.86),
        "Heps-3971": np.full(n, 0.16 / 2.86), "Hzet-3890": np.full(n, 0.11 / 2.86),
        "Heta-3836": np.full(n, 0.07 / 2.86), "NeIII-3869": 10 ** oiii * 0.05,
        "NeIII-3968": 10 ** oiii * 0.015, "HeII-4687": 10 ** oiii * 0.004, "HeI-5877": np.full(n, 0.04),
    }
    return np.stack([np.nan_to_num(amp[name], nan=0.02) for name in lines], axis=1).astype(np.float32)


def _templates(size: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Spatial templates: (T, S, S) disk profiles and (T, S, S) masks of the uncovered spaxels."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) * 2 - 1
    profiles, footprints = [], []
    for _ in range(N_TEMPLATES):
        pa, q = rng.uniform(0, np.pi), rng.uniform(0.35, 1.0)
        xr = xx * np.cos(pa) + yy * np.sin(pa)
        yr = (-xx * np.sin(pa) + yy * np.cos(pa)) / q
        r = np.hypot(xr, yr)
        clump = np.exp(-((xx - rng.uniform(-.4, .4)) ** 2 + (yy - rng.uniform(-.4, .4)) ** 2) / 0.02)
        profiles.append(np.exp(-r / rng.uniform(0.2, 0.45)) + 0.3 * clump)
        # A regular hexagon of circumradius ~0.95: the IFU footprint; corners stay uncovered.
        hexagon = np.max([np.abs(xx * np.cos(a) + yy * np.sin(a)) for a in np.deg2rad([0, 60, 120])], axis=0) <= 0.92
        footprints.append(~hexagon)
    return np.array(profiles, np.float32), np.array(footprints)


def _bpt_pattern(truth: str, size: int) -> np.ndarray:
    """The per-spaxel BPT class map of a galaxy of a truth class: an AGN core, star formation outside."""
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1) * 2 - 1
    r = np.hypot(xx, yy)
    c = bpt.CLASS_CODES
    out = np.full((size, size), c["sf"], np.int8)
    if truth in ("comp", "retired"):
        out[r < 0.5] = c["comp"] if truth == "comp" else c["liner"]
    elif truth in ("seyfert", "off_nuclear"):
        if truth == "off_nuclear":
            r = np.hypot(xx - 0.35, yy - 0.2)
        out[r < 0.45] = c["comp"]
        out[r < 0.25] = c["seyfert"]
    elif truth == "liner":
        out[r < 0.8] = c["ambiguous"]
        out[r < 0.6] = c["liner"]
    return out


def _galaxy_ids(n: int) -> np.ndarray:
    i = np.arange(n)
    plates = (7443 + i // len(IFU_DESIGNS)).astype(str)
    ifus = np.asarray(IFU_DESIGNS)[i % len(IFU_DESIGNS)].astype(str)
    return np.char.add(np.char.add(plates, "-"), ifus)


def _catalogue(n: int, lines, rng, with_truth: bool) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The run catalogue, plus each galaxy's truth-class index and latent vector."""
    shares = np.array([c[-1] for c in CLASSES])
    truth_idx = rng.choice(len(CLASSES), size=n, p=shares / shares.sum())
    anomalous = np.array([c[1] for c in CLASSES])[truth_idx]
    ratios = np.array([c[2:6] for c in CLASSES])[truth_idx] + rng.normal(0, 0.12, size=(n, 4))
    # Faint [OI] in a tenth of the galaxies, no usable lines at all in one percent.
    ratios[rng.random(n) < 0.1, 3] = np.nan
    ratios[rng.random(n) < 0.01] = np.nan
    nii, oiii, sii, oi = ratios.T

    # UMAP: one blob per normal class on a ring; anomalies scattered far out.
    angles = np.linspace(0, 2 * np.pi, len(CLASSES), endpoint=False)
    centres = np.stack([6 * np.cos(angles), 6 * np.sin(angles)], axis=1)
    umap = centres[truth_idx] + rng.normal(0, 1.1, size=(n, 2))
    umap[anomalous] = rng.uniform(-13, 13, size=(int(anomalous.sum()), 2))

    score = rng.lognormal(np.log(3000), 0.6, size=n)
    score[anomalous] *= rng.uniform(4, 12, size=int(anomalous.sum()))
    pct = pd.Series(score).rank(pct=True).to_numpy() * 100
    err = rng.dirichlet(np.ones(len(lines)) * 0.8, size=n).astype(np.float32)
    oiii_col = [i for i, name in enumerate(lines) if name.startswith("OIII")]
    if oiii_col:  # blueberries are odd in [OIII]
        blue = truth_idx == [c[0] for c in CLASSES].index("blueberry")
        err[blue, oiii_col[-1]] += 2.0
        err /= err.sum(axis=1, keepdims=True)

    latents = rng.normal(0, 0.3, size=(n, LATENT_DIM)).astype(np.float32)
    latents[:, :2] += umap / 3

    cat = pd.DataFrame({
        "galaxy_id": _galaxy_ids(n),
        "ra": rng.uniform(0, 360, n), "dec": np.degrees(np.arcsin(rng.uniform(-0.3, 1, n))),
        "z": rng.uniform(0.01, 0.15, n),
        "anomaly_score": score, "anomaly_pct": pct, "flagged": score >= scoring.flag_threshold(score),
    })
    for j, name in enumerate(lines):
        cat[f"err_{name}"] = err[:, j]
    cat["top_line"] = np.asarray(lines)[err.argmax(axis=1)]
    cat["umap_x"], cat["umap_y"] = umap[:, 0].astype(np.float32), umap[:, 1].astype(np.float32)
    cat["log_nii_ha"], cat["log_oiii_hb"], cat["log_sii_ha"], cat["log_oi_ha"] = nii, oiii, sii, oi
    cat["bpt_nii"] = bpt.classify_nii(nii, oiii)
    cat["bpt_sii"] = bpt.classify_sii(sii, oiii)
    cat["bpt_oi"] = bpt.classify_oi(oi, oiii)
    cat["bpt_class"] = bpt.classify(nii, oiii, sii, oi)
    cat["split"] = np.where(rng.random(n) < 0.9, "train", "val")
    if with_truth:
        cat["truth_class"] = np.array([c[0] for c in CLASSES])[truth_idx]
        cat["truth_anomaly"] = anomalous
    return cat, truth_idx, latents


def _neighbours(umap: np.ndarray, k: int) -> np.ndarray:
    """The k nearest galaxies of each (self excluded), by distance in the UMAP plane."""
    from scipy.spatial import cKDTree

    k = min(k, len(umap) - 1)
    _, idx = cKDTree(umap).query(umap, k=k + 1)
    return idx[:, 1:].astype(np.int64)


def make_fake_run(path, n: int = 300, n_lines: int = 19, size: int = 32, seed: int = 0,
                  with_truth: bool = True) -> Path:
    """Write a fake run of ``n`` galaxies at ``path`` (its dataset at ``path/dataset``); return ``path``."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    lines = fake_lines(n_lines)
    cat, truth_idx, latents = _catalogue(n, lines, rng, with_truth)
    profiles, footprints = _templates(size, rng)
    patterns = np.array([_bpt_pattern(c[0], size) for c in CLASSES])  # (C, S, S)
    template = rng.integers(0, N_TEMPLATES, size=n)
    brightness = rng.lognormal(0, 0.5, size=n).astype(np.float32) * 10
    amps = _line_amplitudes(lines, *(cat[c].to_numpy() for c in ("log_nii_ha", "log_oiii_hb", "log_sii_ha", "log_oi_ha")))
    # What a model that never saw the rare classes would reconstruct: the look of star formation.
    sf_amps = _line_amplitudes(lines, *(np.full(n, v) for v in CLASSES[0][2:6]))
    anomalous = np.array([c[1] for c in CLASSES])[truth_idx]

    data_dir = path / "dataset"
    shape = (n, len(lines), size, size)
    flux, commit_flux = open_npy_memmap(data_dir / "flux.npy", shape, np.float32)
    mask, commit_mask = open_npy_memmap(data_dir / "mask.npy", shape, bool)
    ivar, commit_ivar = open_npy_memmap(data_dir / "ivar.npy", shape, np.float32)
    bpt_map, commit_bpt = open_npy_memmap(data_dir / "bpt_map.npy", (n, size, size), np.int8)
    recon, commit_recon = open_npy_memmap(path / "recon.npy", shape, np.float32)
    where = np.empty((n, len(scoring.SHAPE_COLUMNS)))
    for lo in range(0, n, CHUNK):
        sl = slice(lo, min(lo + CHUNK, n))
        t = template[sl]
        model = brightness[sl, None, None, None] * amps[sl, :, None, None] * profiles[t][:, None]
        sigma = 0.05 * brightness[sl, None, None, None]
        noisy = model + rng.standard_normal(model.shape, dtype=np.float32) * sigma
        bad = np.broadcast_to(footprints[t][:, None], model.shape).copy()
        bad |= rng.random(model.shape, dtype=np.float32) < 0.01  # a few dead spaxels
        flux[sl] = np.where(bad, np.nan, noisy)
        mask[sl] = bad
        ivar[sl] = np.where(bad, 0.0, 1.0 / sigma ** 2)
        expected = np.where(anomalous[sl, None, None, None],
                            brightness[sl, None, None, None] * sf_amps[sl, :, None, None] * profiles[t][:, None], model)
        recon[sl] = expected
        where[sl] = scoring.residual_shape(expected, flux[sl], mask[sl], ivar[sl], lines)
        bpt_map[sl] = np.where(footprints[t], bpt.CLASS_CODES["invalid"], patterns[truth_idx[sl]])
    for commit in (commit_flux, commit_mask, commit_ivar, commit_bpt, commit_recon):
        commit()
    for j, name in enumerate(scoring.SHAPE_COLUMNS):
        cat[name] = where[:, j]
    ds_cat = cat[["galaxy_id", "ra", "dec", "z"]].assign(scale=brightness)
    save_parquet(data_dir / "catalogue.parquet", ds_cat)
    DatasetManifest(options=IngestOptions(lines=lines, size=size), n_galaxies=n,
                    files=stamp_files(data_dir, FILES)).write(data_dir)

    save_parquet(path / "catalogue.parquet", cat)
    save_npy(path / "latents.npy", latents)
    save_npy(path / "neighbours.npy", _neighbours(cat[["umap_x", "umap_y"]].to_numpy(np.float64), K_NEIGHBOURS))
    score = cat["anomaly_score"].to_numpy()
    threshold = scoring.flag_threshold(score)
    manifest = RunManifest(
        name=path.name, dataset="dataset", lines=list(lines), size=size, norm="none", model="vae", config="demo",
        model_args={"kind": "vae", "n_lines": len(lines), "size": size, "latent_dim": LATENT_DIM},
        train_config={"epochs": 3, "batch_size": 64, "lr": 1e-3, "repeats": 3, "seed": seed},
        split=Split(val_fraction=0.1, seed=seed), parameters=51234,
        stages={"fit": "2026-01-01T00:00:00+00:00", "embed": "2026-01-01T00:01:00+00:00"},
        score=ScoreInfo(definition=scoring.SCORE_DEFINITION, pct_definition=scoring.PCT_DEFINITION, normalisation="none",
                        median=float(np.median(score)), p90=float(np.percentile(score, 90)), mean=float(score.mean()),
                        max=float(score.max()), flag_pct=scoring.FLAG_PCT, flag_threshold=threshold,
                        n_flagged=int(cat["flagged"].sum())),
        n_galaxies=n, files=stamp_files(path, STAGE_OUTPUTS["embed"]))
    if with_truth:
        # The shape ``python -m train evaluate`` writes: the headline task, per method.
        manifest.stages["evaluate"] = "2026-01-01T00:02:00+00:00"
        manifest.evaluation = Evaluation(task="anomaly", model={"roc_auc": 0.912, "average_precision": 0.587},
                                         pca={"roc_auc": 0.781, "average_precision": 0.301},
                                         iforest={"roc_auc": 0.744, "average_precision": 0.215}, seconds=1.5)
    manifest.write(path)
    return path
