"""The run directory: the cache of one trained model that the dashboard reads.

::

    runs/<name>/
      manifest.json       dataset used, model and training config, versions, metrics, checksums
      model.pt            {"model_args", "config", "state_dict"}; torch.load(weights_only=True)
      checkpoint.pt       full training state for --resume (model, optimiser, scheduler, RNG)
      history.csv         epoch, train_loss, val_loss, seconds
      catalogue.parquet   one row per galaxy (DESIGN.md lists the columns)
      latents.npy         (N, D) float32, rows in catalogue order
      recon.npy           (N, L, S, S) float32 reconstructions, the dataset's normalisation
      neighbours.npy      (N, K) int64, the K nearest galaxies in latent space (self excluded)
      evaluation.json     detection quality against the truth columns (synthetic data)

Stages fill it in order: ``fit`` writes model.pt, checkpoint.pt, history.csv and the
manifest; ``embed`` the catalogue and the arrays; ``evaluate`` evaluation.json. Every file
is written atomically (``core.io``) and the manifest records which stages finished.
This module reads runs; it imports neither torch nor umap.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.dataset import SurveyDataset, open_dataset
from core.errors import RunError
from core.io import read_json, write_json

FORMAT = "blueberry-run/1"
#: Files the dashboard needs; ``embed`` writes all but model.pt, manifest.json and history.csv.
DASHBOARD_FILES = ("manifest.json", "catalogue.parquet", "latents.npy", "recon.npy", "neighbours.npy")


@dataclass
class Run:
    path: Path
    manifest: dict
    catalogue: pd.DataFrame
    latents: np.ndarray  # (N, D) float32
    recon: np.ndarray  # (N, L, S, S) float32, memory-mapped
    neighbours: np.ndarray  # (N, K) int64
    dataset: SurveyDataset

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self.manifest["lines"])

    @property
    def evaluation(self) -> dict | None:
        return self.manifest.get("evaluation")


def read_manifest(path) -> dict:
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise RunError(f"{path}: no run here (no manifest.json); train one with `python -m train fit --run {path}` "
                       "or build the demo with `python -m train demo`")
    return read_json(path / "manifest.json")


def update_manifest(path, **fields) -> dict:
    """Merge ``fields`` into the run's manifest.json (atomically) and return the result."""
    path = Path(path)
    manifest = read_json(path / "manifest.json") if (path / "manifest.json").is_file() else {"format": FORMAT}
    manifest.update(fields)
    write_json(path / "manifest.json", manifest)
    return manifest


def dataset_path(run_path, manifest: dict) -> Path:
    """The dataset folder of a run; a relative path in the manifest is relative to the run directory."""
    p = Path(manifest["dataset"])
    return p if p.is_absolute() else (Path(run_path) / p).resolve()


def missing_files(path) -> list[str]:
    path = Path(path)
    return [f for f in DASHBOARD_FILES if not (path / f).is_file()]


def open_run(path) -> Run:
    """Open a finished run (after ``embed``) read-only; large arrays are memory-mapped."""
    path = Path(path)
    manifest = read_manifest(path)
    missing = missing_files(path)
    if missing:
        raise RunError(f"{path}: the run is incomplete (missing {', '.join(missing)}); "
                       f"finish it with `python -m train embed --run {path}`")
    catalogue = pd.read_parquet(path / "catalogue.parquet")
    latents = np.load(path / "latents.npy", mmap_mode="r")
    recon = np.load(path / "recon.npy", mmap_mode="r")
    neighbours = np.load(path / "neighbours.npy")
    dataset = open_dataset(dataset_path(path, manifest))
    n = len(catalogue)
    for name, arr in (("latents", latents), ("recon", recon), ("neighbours", neighbours)):
        if arr.shape[0] != n:
            raise RunError(f"{path}/{name}.npy has {arr.shape[0]} rows but the catalogue {n}; "
                           f"rebuild with `python -m train embed --run {path}`")
    if len(dataset) != n:
        raise RunError(f"{path}: the catalogue has {n} galaxies but its dataset {dataset.path} has {len(dataset)}")
    return Run(path=path, manifest=manifest, catalogue=catalogue, latents=latents, recon=recon,
               neighbours=neighbours, dataset=dataset)
