"""The survey driver: how many galaxies of each class, in which order, made by which workers,
and the ``truth.csv`` and ``synth.json`` written beside the MAPS files."""
from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from core.errors import BlueberryError
from core.io import atomic_path, write_json
from core.lines import RELEASES
from core.synth.config import SynthConfig
from core.synth.galaxy import galaxy_file_name, make_galaxy
from core.synth.templates import TEMPLATES_PATH, load_templates


def _apportion(total: int, weights: dict) -> dict:
    """Split ``total`` into whole numbers in proportion to ``weights`` (largest remainder)."""
    names = list(weights)
    w = np.array([weights[k] for k in names], dtype=float)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]:
        counts[i] += 1
    return dict(zip(names, counts.tolist()))


def class_counts(n: int, config: SynthConfig = SynthConfig()) -> dict:
    """How many galaxies of each class a survey of ``n`` holds: exact, not sampled."""
    n_anomalies = int(round(config.anomaly_fraction * n))
    return {**_apportion(n - n_anomalies, config.class_mix), **_apportion(n_anomalies, config.anomaly_mix)}


def assign_classes(n: int, seed: int, config: SynthConfig = SynthConfig()) -> list[str]:
    """The class of every galaxy of the survey: :func:`class_counts`, in a seeded random order."""
    labels = [name for name, count in class_counts(n, config).items() for _ in range(count)]
    # A spawn key of length 2 never collides with the galaxies' own (index,) keys.
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(n, 0xC1A55)))
    return [labels[i] for i in rng.permutation(n)]


def _write_one(task) -> dict:
    index, seed, truth_class, release, config, out_dir = task
    galaxy = make_galaxy(index, seed, truth_class, release, config)
    galaxy.write(Path(out_dir) / galaxy.truth["file"])
    return galaxy.truth


def run_tasks(fn, tasks: list, workers: int, progress: bool, desc: str = "synth") -> list:
    """``fn(task)`` for every task on ``workers`` processes, with a progress bar; the results, in order.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one).
    """
    import multiprocessing

    from tqdm.auto import tqdm

    def bar(rows):
        return tqdm(rows, total=len(tasks), desc=desc, unit="galaxy", disable=not progress)

    if workers == 1:
        return [fn(task) for task in bar(tasks)]
    # spawn, not fork: the parent may hold torch or BLAS threads that fork would copy.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        return list(bar(pool.imap(fn, tasks, chunksize=max(1, min(16, len(tasks) // (4 * workers))))))


def generate_survey(out_dir, n: int, seed: int, release: str = "dr15", workers: int | None = None,
                    progress: bool = True, config: SynthConfig = SynthConfig()):
    """Write ``n`` synthetic MaNGA galaxies as MAPS files into ``out_dir``, plus ``truth.csv``.

    Returns the truth table (one row per galaxy, in index order): ``galaxy_id``,
    ``truth_class``, ``truth_anomaly`` and the parameters that made the galaxy. The files
    depend only on ``(seed, index)``, not on ``workers`` (processes; default: all cores).
    ``synth.json`` beside them records the call, so the survey can be made again.
    Worker processes are spawned, so a script calling this with ``workers > 1`` needs the
    usual ``if __name__ == "__main__":`` guard. A folder that holds other MAPS files is
    refused: an ingest of it would mix them in.
    """
    import pandas as pd

    if n < 1:
        raise BlueberryError(f"the survey needs at least one galaxy, got n={n}")
    if release not in RELEASES:
        raise BlueberryError(f"unknown release {release!r}; choose one of {', '.join(RELEASES)}")
    load_templates(config.templates)  # fail before starting processes
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    classes = assign_classes(n, seed, config)
    ours = {galaxy_file_name(i, seed, c, config) for i, c in enumerate(classes)}
    others = sorted(p.name for p in out.glob("manga-*-MAPS-*.fits*") if p.name not in ours)
    if others:
        raise BlueberryError(f"{out}: holds {len(others)} MAPS files that are not part of this survey "
                             f"(e.g. {others[0]}); write into an empty folder or remove them")
    workers = min(os.cpu_count() or 1, n) if workers is None else max(1, min(int(workers), n))
    tasks = [(i, seed, c, release, config, str(out)) for i, c in enumerate(classes)]
    truth = pd.DataFrame(run_tasks(_write_one, tasks, workers, progress))
    with atomic_path(out / "truth.csv") as tmp:
        truth.to_csv(tmp, index=False)
    write_json(out / "synth.json", {"n": n, "seed": seed, "release": release, "config": asdict(config),
                                    "templates": str(config.templates or TEMPLATES_PATH.name),
                                    "written": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return truth
