"""Ingest: MaNGA DAP MAPS files -> a dataset folder (``core.dataset``).

Every file is read, gridded and normalised in a pool of worker processes. Each result is
cached as one ``.npz`` part under ``DATASET/.parts/`` (named by the file's sha256 and the
preprocessing options), so a re-run, or a run after a kill, reuses the work already done.
The arrays are then assembled in input order into memory-mapped ``.npy`` files, and the
manifest is written last. A re-ingest removes the old manifest before it rewrites anything,
so a folder whose ingest was killed is refused until an ingest finishes; the workers die
with the ingest process, even when it is killed with -9, and the temporary files of dead
writers are removed by the next ingest.

BPT columns come from the physical (unnormalised) fluxes at native resolution; the
per-cell BPT map from the gridded physical fluxes, before normalisation; the WHAN columns
(``core.whan``) from the file's ``EMLINE_GEW`` where it has one.
"""
from __future__ import annotations

import contextlib
import ctypes
import glob
import json
import os
import signal
import sys
import threading
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from core import bpt, maps, sharpness, summaries, whan
from core.dataset import FILES, DatasetManifest, IngestOptions, open_dataset
from core.errors import DatasetError, MapsError
from core.io import atomic_path, open_npy_memmap, remove_stale_tmp, save_parquet, sha256_file, stamp_files
from core.lines import BPT_LINES, check_lines

MAPS_PATTERNS = ("*MAPS*.fits.gz", "*MAPS*.fits")
#: prctl option: the signal the kernel sends this process when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1
#: Seconds between a worker's checks that its parent lives, where prctl is missing.
_PARENT_POLL = 1.0


@dataclass
class IngestReport:
    dataset: Path
    n_ingested: int
    skipped: list = field(default_factory=list)  # [{"path", "reason"}]
    duplicates: list = field(default_factory=list)  # [{"galaxy_id", "kept", "dropped"}]
    reused: int = 0  # parts taken from an earlier run
    seconds: float = 0.0
    joins: list = field(default_factory=list)  # summary catalogues joined: core.summaries.join's records


def find_inputs(inputs) -> list[Path]:
    """Files, folders (searched recursively for MAPS files) and glob patterns -> sorted unique files.

    Neither search follows links to folders (``glob.glob``'s ``**`` would, endlessly in a
    link loop); a file found that is a looping or dangling link is a DatasetError naming it.
    """
    found: list[Path] = []
    for item in inputs:
        item = str(item)
        p = Path(item)
        if p.is_dir():
            for pattern in MAPS_PATTERNS:
                found.extend(p.rglob(pattern))
        elif p.is_file():
            found.append(p)
        else:
            matches = _glob(p)
            if not matches:
                raise DatasetError(f"{item}: no such file, folder or matching files")
            found.extend(m for m in matches if not m.is_dir())
    unique = sorted({_resolve(f) for f in found})
    if not unique:
        raise DatasetError(f"no MAPS files found in {', '.join(map(str, inputs))} "
                           f"(folders are searched for {' or '.join(MAPS_PATTERNS)})")
    return unique


def _glob(pattern: Path) -> list[Path]:
    """The paths matching ``pattern`` (``**``: any depth), through pathlib, whose ``**`` does
    not follow links to folders."""
    parts = pattern.parts
    first = next((i for i, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    root = Path(*parts[:first]) if first else Path(".")
    if first == len(parts):  # no wildcard: the path itself, if there is anything (even a broken link)
        return [root] if os.path.lexists(root) else []
    return list(root.glob(str(Path(*parts[first:]))))


def _resolve(path: Path) -> Path:
    """``path`` with every link followed; a link that loops or leads nowhere is a DatasetError naming it."""
    try:
        return path.resolve(strict=True)
    except FileNotFoundError:
        raise DatasetError(f"{path}: leads to no file (a symbolic link to a missing file?); "
                           "fix or remove the link") from None
    except (OSError, RuntimeError):  # RuntimeError: Python < 3.13's "Symlink loop"
        raise DatasetError(f"{path}: a symbolic link loop (following it never reaches a file); "
                           "fix or remove the link") from None


def _process(path: Path, opts: IngestOptions, part: Path) -> dict:
    """Read, grid and normalise one file into the part file ``part``. Runs in a worker."""
    p = maps.preprocess(path, opts, extra_lines=tuple(BPT_LINES.values()))
    g = p.maps
    row = {"galaxy_id": g.galaxy_id, "mangaid": g.mangaid, "ra": g.ra, "dec": g.dec, "z": g.z,
           "daptype": g.daptype, "versdap": g.versdap}
    row.update(bpt.galaxy_bpt(g.flux, g.ivar, g.mask, g.lines, g.center, g.pixscale,
                              aperture=opts.aperture, snr=opts.snr))
    row.update(whan.galaxy_whan(g.ew, g.lines, g.center, g.pixscale, row["log_nii_ha"], aperture=opts.aperture))
    bpt_map = bpt.spaxel_classes(p.physical.flux, p.physical.ivar, p.physical.mask, p.physical.lines, snr=opts.snr)
    row["scale"] = float(p.scale)
    row["good_frac"] = float((~p.grid.mask).mean())
    row[maps.NOISE_FACTOR] = float(p.grid.noise_factor)
    row[maps.CELL_SPAXELS], row[maps.NOISE_SIGMA] = float(p.grid.cell_spaxels), float(p.grid.noise_sigma)
    row.update(sharpness.measure(g, p.grid.lines).row())
    with atomic_path(part) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, flux=p.grid.flux.astype(np.float32), mask=p.grid.mask, ivar=p.grid.ivar.astype(np.float32),
                     bpt_map=bpt_map.astype(np.int8), row=json.dumps(row, default=float))
    return row


def _die_with_parent() -> None:
    """Worker initializer: end this worker when the ingest process dies, even by kill -9.

    Linux has the kernel send SIGKILL (prctl PR_SET_PDEATHSIG); elsewhere a thread
    watches for the parent's pid to change.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) == 0:
                return
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(1)


def _task(args) -> tuple[str, dict | None, str | None]:
    path, opts, part = args
    try:
        return str(path), _process(path, opts, part), None
    except MapsError as exc:
        return str(path), None, exc.problem
    except Exception as exc:  # a bug or an unforeseen file: record it, never lose the other files
        return str(path), None, f"unexpected {type(exc).__name__}: {exc}"


def ingest(inputs, out, opts: IngestOptions = IngestOptions(), workers: int | None = None,
           progress: bool = True, catalogues: summaries.SummaryFiles = summaries.SummaryFiles()) -> IngestReport:
    """Ingest MAPS files into the dataset folder ``out``, joining the summary ``catalogues``' columns.
    Raises DatasetError when nothing could be read."""
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    opts = replace(opts, lines=check_lines(opts.lines))
    if opts.norm not in maps.NORMALISATIONS:
        raise DatasetError(f"unknown normalisation {opts.norm!r}; choose one of {', '.join(maps.NORMALISATIONS)}")
    files = find_inputs(inputs)
    out = Path(out)
    parts_dir = out / ".parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    for folder in (out, parts_dir):
        remove_stale_tmp(folder)
    key = opts.key()

    hashes = {}
    for f in tqdm(files, desc="hashing", unit="file", disable=not progress or len(files) < 200):
        hashes[f] = sha256_file(f)
    done = _up_to_date(out, files, hashes, opts, catalogues)
    if done is not None:
        return replace(done, seconds=time.perf_counter() - t0)
    # From here on the folder is being rewritten: without a manifest it reads as unfinished.
    (out / "manifest.json").unlink(missing_ok=True)
    tasks, rows, skipped, reused = [], {}, [], 0
    for f in files:
        part = parts_dir / f"{hashes[f]}-{key}.npz"
        row = _cached_row(part)
        if row is not None:
            rows[f] = row
            reused += 1
        else:
            tasks.append((f, opts, part))

    workers = workers or min(len(tasks), os.cpu_count() or 1) or 1
    bar = tqdm(total=len(tasks), desc="ingest", unit="file", disable=not progress or not tasks)
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(max_workers=workers, initializer=_die_with_parent) as pool:
            results = pool.map(_task, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))
            for path, row, problem in results:
                _collect(Path(path), row, problem, rows, skipped)
                bar.update()
    else:
        for t in tasks:
            path, row, problem = _task(t)
            _collect(Path(path), row, problem, rows, skipped)
            bar.update()
    bar.close()

    # One row per galaxy: the first file (in sorted path order) wins, the others are reported.
    kept, duplicates, seen = [], [], {}
    for f in files:
        if f not in rows:
            continue
        gid = rows[f]["galaxy_id"]
        if gid in seen:
            duplicates.append({"galaxy_id": gid, "kept": str(seen[gid]), "dropped": str(f)})
            continue
        seen[gid] = f
        kept.append(f)
    if not kept:
        lines = "\n".join(f"  {s['path']}: {s['reason']}" for s in skipped[:20])
        more = f"\n  ... and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        raise DatasetError(f"no galaxy could be ingested from {len(files)} file(s):\n{lines}{more}")

    catalogue = _add_truth(_catalogue(kept, rows, hashes), kept)
    catalogue, joins = summaries.join(catalogue, catalogues)
    if catalogues.drop_critical:
        catalogue, kept = _drop_critical(catalogue, kept, skipped)
    _assemble(out, kept, rows, hashes, key, opts)
    save_parquet(out / "catalogue.parquet", catalogue)
    DatasetManifest(
        options=opts, n_galaxies=len(kept), skipped=skipped, duplicates=duplicates, files=stamp_files(out, FILES),
        sources=[{"path": str(f), "sha256": hashes[f], "galaxy_id": rows[f]["galaxy_id"]} for f in kept],
        joins=[{**j, "drop_critical": catalogues.drop_critical} for j in joins],
    ).write(out)
    open_dataset(out)  # the folder must read back, or the ingest failed
    return IngestReport(dataset=out, n_ingested=len(kept), skipped=skipped, duplicates=duplicates,
                        reused=reused, seconds=time.perf_counter() - t0, joins=joins)


def _drop_critical(catalogue: pd.DataFrame, kept: list[Path], skipped: list) -> tuple[pd.DataFrame, list[Path]]:
    """The catalogue and files without the galaxies DAPall flags CRITICAL, which are recorded as skipped."""
    bad = summaries.critical(catalogue)
    skipped.extend({"path": str(f), "reason": "DAPall DAPQUAL has the CRITICAL bit set (--drop-critical)"}
                   for f, b in zip(kept, bad) if b)
    if bad.all():
        raise DatasetError(f"every one of the {len(kept)} galaxies is flagged CRITICAL in the DAPall file; "
                           "nothing is left to ingest without --drop-critical")
    return catalogue[~bad].reset_index(drop=True), [f for f, b in zip(kept, bad) if not b]


def _cached_row(part: Path) -> dict | None:
    """The catalogue row of a part an earlier ingest wrote; None (and the part removed) when absent or damaged."""
    if not part.is_file():
        return None
    try:
        with np.load(part) as z:
            row = json.loads(str(z["row"]))
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        row = None
    # damaged, or written by an older version
    if row is None or any(c not in row for c in (*whan.COLUMNS, maps.NOISE_SIGMA, sharpness.COLUMN)):
        part.unlink(missing_ok=True)
        return None
    return row


def _up_to_date(out: Path, files: list[Path], hashes: dict, opts: IngestOptions,
                catalogues: summaries.SummaryFiles) -> IngestReport | None:
    """The report of an earlier ingest of exactly these files, options, summary catalogues and code version, if it
    finished."""
    try:
        manifest = open_dataset(out).manifest
    except DatasetError:
        return None
    joined = [(j.get("kind"), j.get("sha256"), j.get("drop_critical")) for j in manifest.joins]
    if joined != [(kind, sha256_file(path), catalogues.drop_critical) for kind, path in catalogues.wanted()]:
        return None
    before = {(s["path"], s["sha256"]) for s in manifest.sources}
    now = {(str(f), hashes[f]) for f in files}
    if manifest.options != opts or not manifest.current() or not before <= now:
        return None
    if {p for p, _ in now - before} != _left_out(manifest):
        return None
    return IngestReport(dataset=out, n_ingested=len(before), skipped=manifest.skipped,
                        duplicates=manifest.duplicates, reused=len(files), joins=manifest.joins)


def _left_out(manifest: DatasetManifest) -> set[str]:
    """The input files an ingest read but did not keep: skipped, or a second file of a galaxy."""
    return {s["path"] for s in manifest.skipped} | {d["dropped"] for d in manifest.duplicates}


def looks_current(out, inputs, also=()) -> bool:
    """Whether the dataset ``out`` was written by this version of the code, covers exactly the MAPS files of
    ``inputs`` and is newer than them and the files ``also`` (as make decides; no hashing, so it is instant)."""
    try:
        manifest = open_dataset(out).manifest
    except DatasetError:
        return False
    if not manifest.current():  # what a file becomes may have changed
        return False
    files = find_inputs(inputs)
    seen = {s["path"] for s in manifest.sources} | _left_out(manifest)
    newest = max(f.stat().st_mtime for f in [*files, *also])
    return seen == {str(f) for f in files} and (Path(out) / "manifest.json").stat().st_mtime >= newest


def _collect(path: Path, row, problem, rows: dict, skipped: list) -> None:
    if row is None:
        skipped.append({"path": str(path), "reason": problem})
    else:
        rows[path] = row


def _assemble(out: Path, kept: list[Path], rows: dict, hashes: dict, key: str, opts: IngestOptions) -> None:
    n, n_lines, s = len(kept), len(opts.lines), opts.size
    specs = {"flux": ((n, n_lines, s, s), np.float32), "mask": ((n, n_lines, s, s), bool),
             "ivar": ((n, n_lines, s, s), np.float32), "bpt_map": ((n, s, s), np.int8)}
    arrays = {name: open_npy_memmap(out / f"{name}.npy", shape, dtype) for name, (shape, dtype) in specs.items()}
    for i, f in enumerate(kept):
        with np.load(out / ".parts" / f"{hashes[f]}-{key}.npz") as z:
            for name, (arr, _) in arrays.items():
                arr[i] = z[name]
    for arr, commit in arrays.values():
        commit()
        del arr


def _catalogue(kept: list[Path], rows: dict, hashes: dict) -> pd.DataFrame:
    records = []
    for f in kept:
        rec = dict(rows[f])
        rec["source"] = str(f)
        rec["sha256"] = hashes[f]
        records.append(rec)
    return pd.DataFrame.from_records(records)


def _add_truth(catalogue: pd.DataFrame, kept: list[Path]) -> pd.DataFrame:
    """Join ``truth.csv`` files that lie beside the inputs (synthetic surveys) on galaxy_id."""
    truths = [pd.read_csv(t, dtype={"galaxy_id": str}) for t in sorted({f.parent / "truth.csv" for f in kept})
              if t.is_file()]
    if not truths:
        return catalogue
    truth = pd.concat(truths, ignore_index=True).drop_duplicates("galaxy_id")
    truth = truth.rename(columns={c: f"truth_{c}" for c in truth.columns
                                  if c != "galaxy_id" and not c.startswith("truth_")})
    return catalogue.merge(truth, on="galaxy_id", how="left")


def summary(report: IngestReport) -> str:
    lines = [f"ingested {report.n_ingested} galaxies into {report.dataset} "
             f"({len(report.skipped)} skipped, {len(report.duplicates)} duplicate ids, "
             f"{report.reused} reused from an earlier run) in {report.seconds:.1f} s"]
    for j in report.joins:
        lines.append(f"  joined {j['kind']} {j['path']}: {j['matched']} of {j['galaxies']} "
                     f"galaxies matched a row of its {j['rows']} ({', '.join(j['columns'])})")
    for s in report.skipped[:10]:
        lines.append(f"  skipped {s['path']}: {s['reason']}")
    if len(report.skipped) > 10:
        lines.append(f"  ... {len(report.skipped) - 10} more skipped files are listed in {report.dataset}/manifest.json")
    for d in report.duplicates[:10]:
        lines.append(f"  duplicate {d['galaxy_id']}: kept {d['kept']}, dropped {d['dropped']}")
    return "\n".join(lines)

