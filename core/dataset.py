"""The on-disk dataset: memory-mapped arrays plus a catalogue.

A dataset folder holds::

    manifest.json       DatasetManifest: format, the IngestOptions (lines, grid size,
                        normalisation, mask bits, ...), sources (sha256), skipped files
                        with reasons, duplicates, code version
    catalogue.parquet   one row per galaxy, in array order
    flux.npy            (N, L, S, S) float32, normalised as the manifest says; NaN where masked
    mask.npy            (N, L, S, S) bool, True = bad (masked)
    ivar.npy            (N, L, S, S) float32, inverse variance in the same units; 0 where masked
    bpt_map.npy         (N, S, S) int8, per-cell BPT class code (core.bpt.CLASSES)

Arrays are opened with ``mmap_mode="r"`` so training and the dashboard can read a few
galaxies of a survey larger than memory. Every file is written atomically, and
``manifest.json`` last, with a stamp of every file (size, time, sha256): a folder without a
manifest is an unfinished ingest (a re-ingest removes the old one before it rewrites
anything), and a file that is not the one stamped is refused by :func:`open_dataset`.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from core import __version__, bpt
from core.errors import DatasetError
from core.io import (check_array, known_fields, load_npy, load_parquet, read_versioned, save_npy, save_parquet,
                     stamp_files, stamp_problem, write_json)
from core.lines import DEFAULT_BAD_BITS, DEFAULT_LINES

FORMAT = "blueberry-dataset/1"
ARRAYS = ("flux", "mask", "ivar", "bpt_map")
#: The files a manifest stamps, written before it.
FILES = (*(f"{a}.npy" for a in ARRAYS), "catalogue.parquet")
#: What rebuilds a dataset folder, for error messages.
REBUILD = "python -m train ingest INPUTS --out {path}"


@dataclass(frozen=True)
class IngestOptions:
    """How MAPS files become a dataset's grids; recorded in its manifest, reused by ``train score``."""

    lines: tuple[str, ...] = DEFAULT_LINES  # emission lines of the sequence, in wavelength order
    size: int = 32  # output grid S (32 demo, 64 paper)
    norm: str = "none"  # normalisation, one of core.maps.NORMALISATIONS
    bad_bits: tuple[str, ...] = DEFAULT_BAD_BITS  # MANGA_DAPPIXMASK bits that mark a spaxel bad
    min_good: float = 0.5  # a grid cell is bad when less than this fraction of it is good
    aperture: float = bpt.APERTURE  # radius (arcsec) of the central aperture of the per-galaxy BPT class
    snr: float = bpt.SNR_CUT  # per-line signal-to-noise cut of the BPT ratios

    def key(self) -> str:
        """Short hash of everything that changes a part; parts of other options are not reused."""
        blob = json.dumps(asdict(self), sort_keys=True) + __version__
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @classmethod
    def from_json(cls, obj: dict) -> IngestOptions:
        obj = known_fields(cls, obj)
        for name in ("lines", "bad_bits"):  # JSON has lists, the options hold tuples
            if name in obj:
                obj[name] = tuple(obj[name])
        return cls(**obj)


@dataclass
class DatasetManifest:
    """``manifest.json`` of a dataset folder: what it holds and how it was made."""

    options: IngestOptions  # lines, grid size, normalisation, mask bits and cuts of the arrays
    n_galaxies: int  # rows of the catalogue and of every array
    sources: list[dict] = field(default_factory=list)  # [{"path", "sha256", "galaxy_id"}] in array order
    skipped: list[dict] = field(default_factory=list)  # [{"path", "reason"}] files that could not be used
    duplicates: list[dict] = field(default_factory=list)  # [{"galaxy_id", "kept", "dropped"}] repeated galaxies
    files: dict[str, dict] = field(default_factory=dict)  # FILES -> core.io.file_stamp, checked on every open
    joins: list[dict] = field(default_factory=list)  # summary catalogues joined (core.summaries.join): file stamp, columns, matched
    code_version: str = __version__  # Blueberry version that wrote the folder
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    format: str = FORMAT  # layout version; another one is refused with what to do

    @property
    def lines(self) -> tuple[str, ...]:
        return self.options.lines

    @property
    def size(self) -> int:
        return self.options.size

    @property
    def norm(self) -> str:
        return self.options.norm

    @property
    def checksums(self) -> dict[str, str | None]:
        """Each of the folder's files' sha256 as written: what ``embed`` records of the dataset it scored."""
        return {f: stamp.get("sha256") for f, stamp in self.files.items()}

    def current(self) -> bool:
        """Written by this version of the code: a folder of another version is ingested again, since what a file
        becomes may have changed (as the gridding's variances did in 0.2.0; 0.3.0 added the noise_factor column,
        0.4.0 score_sharp)."""
        return self.code_version == __version__

    def write(self, folder) -> None:
        """Write ``folder/manifest.json`` atomically: the one writer of dataset manifests."""
        # lines, size, norm and bad_bits also at the top, where readers of the JSON look first.
        opts = asdict(self.options)
        write_json(Path(folder) / "manifest.json", {
            "format": self.format, "n_galaxies": self.n_galaxies, "lines": opts["lines"], "size": opts["size"],
            "norm": opts["norm"], "bad_bits": opts["bad_bits"], "options": opts, "sources": self.sources,
            "skipped": self.skipped, "duplicates": self.duplicates, "files": self.files, "joins": self.joins,
            "code_version": self.code_version, "created": self.created})

    @classmethod
    def read(cls, folder) -> DatasetManifest:
        """Read ``folder/manifest.json``: the one reader; DatasetError says how to rebuild what it cannot read."""
        path = Path(folder) / "manifest.json"
        todo = f"rebuild it with `{REBUILD.format(path=folder)}`"
        obj = read_versioned(path, FORMAT, DatasetError, todo)
        try:
            # Manifests of in-memory datasets written before options were recorded hold only
            # lines, size and norm at the top; the other options were the defaults.
            options = IngestOptions.from_json(obj.get("options") or {k: obj[k] for k in ("lines", "size", "norm")})
            return cls(**{**known_fields(cls, obj), "options": options})
        except (KeyError, TypeError) as exc:
            raise DatasetError(f"{path}: incomplete manifest ({exc}); {todo}") from None
        except ValueError as exc:
            raise DatasetError(f"{path}: damaged manifest ({exc}); {todo}") from None


@dataclass
class SurveyDataset:
    path: Path
    manifest: DatasetManifest
    catalogue: pd.DataFrame
    flux: np.ndarray  # (N, L, S, S) float32, NaN where masked
    mask: np.ndarray  # (N, L, S, S) bool, True = bad
    ivar: np.ndarray  # (N, L, S, S) float32, 0 where masked
    bpt_map: np.ndarray  # (N, S, S) int8 codes of core.bpt.CLASSES

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self.manifest.lines)

    @property
    def size(self) -> int:
        return int(self.manifest.size)

    @property
    def norm(self) -> str:
        return str(self.manifest.norm)

    def __len__(self) -> int:
        return len(self.catalogue)


def open_dataset(path, mmap: bool = True) -> SurveyDataset:
    """Open a dataset folder written by ``python -m train ingest`` (read-only, memory-mapped).

    Refused with a DatasetError naming the file when the manifest is missing (an unfinished
    ingest), a file is missing or damaged, a file is not the one the manifest stamped (its
    size; its sha256 when its time moved), or the shapes disagree with the manifest.
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path}: no dataset folder here; build one with `{REBUILD.format(path=path)}`")
    if not (path / "manifest.json").is_file():
        raise DatasetError(f"{path}: no manifest.json, so the ingest did not finish; run `python -m train ingest` again")
    manifest = DatasetManifest.read(path)
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise DatasetError(f"{path}: missing {', '.join(missing)}; run `python -m train ingest` again")
    todo = f"rebuild the dataset with `{REBUILD.format(path=path)}`"
    for name, stamp in manifest.files.items():
        problem = stamp_problem(path / name, stamp)
        if problem:
            raise DatasetError(f"{path / name}: not the file the manifest recorded ({problem}), so the dataset's "
                               f"files no longer belong together; {todo}")
    catalogue = load_parquet(path / "catalogue.parquet", DatasetError, todo)
    arrays = {a: load_npy(path / f"{a}.npy", DatasetError, todo, mmap=mmap) for a in ARRAYS}
    n, n_lines, size = len(catalogue), len(manifest.lines), manifest.size
    if manifest.n_galaxies != n:
        raise DatasetError(f"{path / 'catalogue.parquet'}: {n} rows, but the manifest says {manifest.n_galaxies}; {todo}")
    expected = {"flux": ((n, n_lines, size, size), np.float32), "mask": ((n, n_lines, size, size), bool),
                "ivar": ((n, n_lines, size, size), np.float32), "bpt_map": ((n, size, size), np.int8)}
    for name, (shape, dtype) in expected.items():
        check_array(path / f"{name}.npy", arrays[name], shape, dtype, DatasetError, todo)
    return SurveyDataset(path=path, manifest=manifest, catalogue=catalogue, **arrays)


def write_dataset(path, *, flux, mask, ivar, bpt_map, catalogue: pd.DataFrame, options: IngestOptions) -> Path:
    """Write a complete dataset folder from in-memory arrays (tests, small surveys).

    ``options`` says what the arrays hold (at least their lines, size and normalisation).
    Ingest writes large surveys array by array through ``core.io.open_npy_memmap`` instead.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").unlink(missing_ok=True)  # until the new one is written, the folder is unfinished
    n = len(catalogue)
    for name, arr, dtype in (("flux", flux, np.float32), ("mask", mask, bool),
                             ("ivar", ivar, np.float32), ("bpt_map", bpt_map, np.int8)):
        arr = np.asarray(arr, dtype=dtype)
        if arr.shape[0] != n:
            raise DatasetError(f"{path}: {name} has {arr.shape[0]} rows, catalogue {n}")
        save_npy(path / f"{name}.npy", arr)
    save_parquet(path / "catalogue.parquet", catalogue.reset_index(drop=True))
    DatasetManifest(options=options, n_galaxies=n, files=stamp_files(path, FILES)).write(path)
    return path
