"""The on-disk dataset: memory-mapped arrays plus a catalogue.

A dataset folder holds::

    manifest.json       lines, grid size, normalisation, mask bits, sources (sha256),
                        skipped files with reasons, duplicates, code version
    catalogue.parquet   one row per galaxy, in array order
    flux.npy            (N, L, S, S) float32, normalised as the manifest says; NaN where masked
    mask.npy            (N, L, S, S) bool, True = bad (masked)
    ivar.npy            (N, L, S, S) float32, inverse variance in the same units; 0 where masked
    bpt_map.npy         (N, S, S) int8, per-cell BPT class code (core.bpt.CLASSES)

Arrays are opened with ``mmap_mode="r"`` so training and the dashboard can read a few
galaxies of a survey larger than memory. Every file is written atomically, and
``manifest.json`` last: a folder without a manifest is an unfinished ingest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import DatasetError
from core.io import read_json, save_parquet, save_npy, write_json

FORMAT = "blueberry-dataset/1"
ARRAYS = ("flux", "mask", "ivar", "bpt_map")


@dataclass
class SurveyDataset:
    path: Path
    manifest: dict
    catalogue: pd.DataFrame
    flux: np.ndarray  # (N, L, S, S) float32, NaN where masked
    mask: np.ndarray  # (N, L, S, S) bool, True = bad
    ivar: np.ndarray  # (N, L, S, S) float32, 0 where masked
    bpt_map: np.ndarray  # (N, S, S) int8 codes of core.bpt.CLASSES

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self.manifest["lines"])

    @property
    def size(self) -> int:
        return int(self.manifest["size"])

    @property
    def norm(self) -> str:
        return str(self.manifest["norm"])

    def __len__(self) -> int:
        return len(self.catalogue)


def open_dataset(path, mmap: bool = True) -> SurveyDataset:
    """Open a dataset folder written by ``python -m train ingest`` (read-only, memory-mapped)."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no dataset folder here; build one with `python -m train ingest INPUTS --out {path}`")
    if not (path / "manifest.json").is_file():
        raise DatasetError(f"{path}: no manifest.json, so the ingest did not finish; run `python -m train ingest` again")
    manifest = read_json(path / "manifest.json")
    if manifest.get("format") != FORMAT:
        raise DatasetError(f"{path}/manifest.json: format {manifest.get('format')!r}, expected {FORMAT!r}")
    missing = [f"{a}.npy" for a in ARRAYS if not (path / f"{a}.npy").is_file()]
    if not (path / "catalogue.parquet").is_file():
        missing.append("catalogue.parquet")
    if missing:
        raise DatasetError(f"{path}: missing {', '.join(missing)}; run `python -m train ingest` again")
    catalogue = pd.read_parquet(path / "catalogue.parquet")
    arrays = {a: np.load(path / f"{a}.npy", mmap_mode="r" if mmap else None) for a in ARRAYS}
    n, n_lines, size = len(catalogue), len(manifest["lines"]), int(manifest["size"])
    expected = {"flux": (n, n_lines, size, size), "mask": (n, n_lines, size, size),
                "ivar": (n, n_lines, size, size), "bpt_map": (n, size, size)}
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise DatasetError(f"{path}/{name}.npy: shape {arrays[name].shape}, expected {shape} "
                               "from the manifest and catalogue; run `python -m train ingest` again")
    return SurveyDataset(path=path, manifest=manifest, catalogue=catalogue, **arrays)


def write_dataset(path, *, flux, mask, ivar, bpt_map, catalogue: pd.DataFrame, manifest: dict) -> Path:
    """Write a complete dataset folder from in-memory arrays (tests, small surveys).

    ``manifest`` needs at least ``lines``, ``size`` and ``norm``; ``format`` is added.
    Ingest writes large surveys array by array through ``core.io.open_npy_memmap`` instead.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    n = len(catalogue)
    for name, arr, dtype in (("flux", flux, np.float32), ("mask", mask, bool),
                             ("ivar", ivar, np.float32), ("bpt_map", bpt_map, np.int8)):
        arr = np.asarray(arr, dtype=dtype)
        if arr.shape[0] != n:
            raise DatasetError(f"{path}: {name} has {arr.shape[0]} rows, catalogue {n}")
        save_npy(path / f"{name}.npy", arr)
    save_parquet(path / "catalogue.parquet", catalogue.reset_index(drop=True))
    write_json(path / "manifest.json", {"format": FORMAT, "n_galaxies": n, **manifest})
    return path
