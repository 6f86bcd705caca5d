"""The run directory: the cache of one trained model that the dashboard reads, and its bookkeeping.

::

    runs/<name>/
      manifest.json       RunManifest: dataset used, model and training config, versions,
                          metrics, score summary, checksums, stages finished
      model.pt            {"model_args", "config", "state_dict"}; torch.load(weights_only=True)
      checkpoint.pt       full training state for --resume (model, optimiser, scheduler, RNG)
      history.csv         epoch, train_loss, val_loss, seconds
      catalogue.parquet   one row per galaxy (docs/ARCHITECTURE.md lists the columns)
      latents.npy         (N, D) float32, rows in catalogue order
      recon.npy           (N, L, S, S) float32 reconstructions, the dataset's normalisation
      neighbours.npy      (N, K) int64, the K nearest galaxies in latent space (self excluded)
      evaluation.json     detection quality against the truth columns (synthetic data)
      injection.json      the injection benchmark: how the score ranks perturbed fresh galaxies

Stages fill it in order (:data:`STAGE_OUTPUTS`): ``fit`` (``core.training``), ``embed``
(``core.embed``), ``evaluate`` (``core.evaluate``) and ``inject`` (``core.inject``). Every file is written atomically
(``core.io``); the manifest records which stages finished (:func:`mark_stage`: a stage
removes its stamp before it rewrites anything and stamps last, with a stamp of each file it
wrote), and :func:`is_done` says whether a stage's outputs are still the ones it recorded. :func:`open_run` refuses a run whose stamps, files and shapes disagree. This module
reads runs; it imports neither torch nor umap.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from core.dataset import ARRAYS, DatasetManifest, SurveyDataset, open_dataset
from core.errors import DatasetError, RunError
from core.io import (check_array, known_fields, load_npy, load_parquet, read_versioned, sha256_file, stamp_problem,
                     write_json)

FORMAT = "blueberry-run/1"
#: The full result of ``evaluate`` (the manifest holds its headline).
EVALUATION_FILE = "evaluation.json"
#: The full result of ``inject`` (the manifest holds its headline).
INJECTION_FILE = "injection.json"
#: The cross-line consistency detector's network (``core.consistency``), trained by embed, read by score.
CONSISTENCY_FILE = "consistency.pt"
#: Each galaxy's per-cell reduced chi-square of the consistency network, ``(N, S, S)`` float32, for the app.
CONSISTENCY_MAP_FILE = "consistency_map.npy"
#: Each line's share of each galaxy's score_consistency, ``(N, L)`` float32 (rows sum to 1), for the app.
CONSISTENCY_LINES_FILE = "consistency_lines.npy"
#: The census detector's survey Gaussian and calibration (``core.census``), fitted by embed, read by score.
CENSUS_FILE = "census.json"
#: What each stage writes besides the manifest, in stage order.
STAGE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "fit": ("model.pt", "checkpoint.pt", "history.csv"),
    "embed": ("catalogue.parquet", "latents.npy", "recon.npy", "neighbours.npy"),
    "evaluate": (EVALUATION_FILE,),
    "inject": (INJECTION_FILE,),
}
#: Files the dashboard needs.
DASHBOARD_FILES = ("manifest.json", *STAGE_OUTPUTS["embed"])


def make_split(n: int, val_fraction: float, seed: int) -> np.ndarray:
    """Deterministic validation mask ``is_val`` (N,) bool: ``round(n * val_fraction)`` galaxies.

    At least one galaxy goes to validation when ``val_fraction`` > 0 and ``n`` >= 2, and at
    least one stays for training. ``fit`` trains on it and ``embed`` labels the catalogue
    with it, both through :meth:`Split.mask`.
    """
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    is_val = np.zeros(n, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n)[:n_val]] = True
    return is_val


# ---------------------------------------------------------------------------------------
# The manifest


@dataclass
class Split:
    """The train/validation split of a run, recorded so that every stage draws the same one."""

    val_fraction: float  # share of galaxies held out for validation and early stopping
    seed: int  # seed of the permutation

    def mask(self, n: int) -> np.ndarray:
        """``is_val`` (N,) bool of a dataset of ``n`` galaxies."""
        return make_split(n, self.val_fraction, self.seed)


@dataclass
class ScoreInfo:
    """The run's anomaly scores in numbers (``embed``); ``train score`` flags new files with its threshold."""

    definition: str  # core.scoring.SCORE_DEFINITION
    pct_definition: str  # core.scoring.PCT_DEFINITION
    normalisation: str  # the dataset normalisation the scores were computed in
    median: float  # of the finite scores
    p90: float  # their 90th percentile
    mean: float
    max: float
    flag_pct: float  # galaxies at or above this percentile are flagged
    flag_threshold: float  # the score at flag_pct
    n_flagged: int
    components: dict = field(default_factory=dict)  # detector column -> {median, spread}: the anomaly score's units


@dataclass
class Evaluation:
    """The headline of ``evaluate`` (evaluation.json holds every task): ROC-AUC and AP per method."""

    task: str  # "anomaly": the true anomalies against everything else
    model: dict  # {"roc_auc", "average_precision"} of the run's anomaly score
    pca: dict  # the same for the PCA reconstruction baseline
    iforest: dict  # the same for the isolation forest on line ratios
    seconds: float  # time the evaluation took
    catalogue_sha256: str | None = None  # the catalogue evaluated: a re-embed that changes it makes this stale
    file: str = EVALUATION_FILE  # where the full result is


@dataclass
class Injection:
    """The headline of ``inject`` (injection.json holds every kind and strength) for ``anomaly_score``."""

    strength: float  # the middle strength the headline is measured at
    median_pct: float | None  # the median over kinds of each kind's median anomaly_pct at that strength
    flagged: float | None  # the fraction of the perturbed galaxies flagged at that strength
    control_pct: float | None  # the untouched fresh galaxies' median anomaly_pct (50 when the score generalises)
    n_kinds: int  # perturbation kinds measured
    seconds: float  # time the benchmark took
    catalogue_sha256: str | None = None  # the catalogue placed against: a re-embed makes this stale
    file: str = INJECTION_FILE  # where the full result is


@dataclass
class RunManifest:
    """``manifest.json`` of a run directory. ``fit`` writes the first half, later stages add theirs."""

    name: str  # the run's name (its folder's name)
    dataset: str  # the dataset folder; relative paths are relative to the run directory
    lines: list[str]  # the dataset's lines, the model's input sequence
    size: int  # grid size S of the maps
    norm: str  # the dataset's normalisation
    model: str  # "ae" | "vae"
    config: str  # named model configuration (core.models.CONFIGS)
    model_args: dict  # asdict(core.models.ModelArgs): rebuilds the architecture
    train_config: dict  # asdict(core.training.TrainConfig)
    split: Split  # the train/validation split
    versions: dict = field(default_factory=dict)  # python, torch, numpy, blueberry of the fit
    n_train: int = 0  # galaxies in the training split
    n_val: int = 0  # galaxies in the validation split
    parameters: int | None = None  # trainable parameters of the model (runs before it was recorded: None)
    metrics: dict | None = None  # fit: best_val_loss, best_epoch, epochs_run, fit_seconds, device, ...
    stages: dict[str, str] = field(default_factory=dict)  # stage -> UTC time it finished
    checksums: dict[str, str] = field(default_factory=dict)  # file -> sha256 of embed's outputs and model.pt
    files: dict[str, dict] = field(default_factory=dict)  # embed: file -> core.io.file_stamp, checked on every open
    n_galaxies: int | None = None  # embed: galaxies scored (the catalogue's rows)
    score: ScoreInfo | None = None  # embed: the score's summary and flag threshold
    umap: dict | None = None  # embed: the UMAP parameters, seed and version
    neighbours: dict | None = None  # embed: k, metric, space, self_excluded
    embed: dict | None = None  # embed: seconds, device, batch_size
    evaluation: Evaluation | None = None  # evaluate: the headline figures
    annotations: list[dict] = field(default_factory=list)  # annotate: catalogues cross-matched into catalogue.parquet
    injection: Injection | None = None  # inject: the injection benchmark's headline
    format: str = FORMAT  # layout version; another one is refused with what to do

    def write(self, run_dir) -> None:
        """Write ``run_dir/manifest.json`` atomically: the one writer of run manifests."""
        obj = {"format": self.format, **{k: v for k, v in asdict(self).items() if v is not None and k != "format"}}
        write_json(Path(run_dir) / "manifest.json", obj)

    @classmethod
    def read(cls, run_dir) -> RunManifest:
        """Read ``run_dir/manifest.json``: the one reader; RunError says how to rebuild what it cannot read."""
        run_dir = Path(run_dir)
        path = run_dir / "manifest.json"
        if not path.is_file():
            raise RunError(f"{run_dir}: no run here (no manifest.json); train one with "
                           f"`python -m train fit --run {run_dir}` or build the demo with `python -m train demo`")
        todo = ("train the model again into a new run: `python -m train fit --data DATASET --run NEW_RUN`, "
                "then `python -m train embed --run NEW_RUN`")
        obj = read_versioned(path, FORMAT, RunError, todo)
        try:
            sections = {"split": Split(**known_fields(Split, obj["split"]))}
            for name, kind in (("score", ScoreInfo), ("evaluation", Evaluation), ("injection", Injection)):
                if obj.get(name) is not None:
                    sections[name] = kind(**known_fields(kind, obj[name]))
            return cls(**{**known_fields(cls, obj), **sections})
        except (KeyError, TypeError) as exc:
            raise RunError(f"{path}: incomplete manifest ({exc}); {todo}") from None
        except ValueError as exc:
            raise RunError(f"{path}: damaged manifest ({exc}); {todo}") from None


def mark_stage(run_dir, stage: str, done: bool, **fields) -> RunManifest:
    """Stamp ``stage`` as finished now (UTC) or remove its stamp, set the manifest ``fields``, and write it."""
    manifest = RunManifest.read(run_dir)
    stages = dict(manifest.stages)
    if done:
        stages[stage] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    else:
        stages.pop(stage, None)
    manifest = replace(manifest, stages=stages, **fields)
    manifest.write(run_dir)
    return manifest


def dataset_path(run_path, manifest: RunManifest) -> Path:
    """The dataset folder of a run; a relative path in the manifest is relative to the run directory."""
    p = Path(manifest.dataset)
    return p if p.is_absolute() else (Path(run_path) / p).resolve()


# ---------------------------------------------------------------------------------------
# Is a stage up to date?


def is_done(run_dir, stage: str) -> bool:
    """``stage`` finished and its outputs are still the ones it recorded.

    ``fit``: stamped and model.pt is there (an interrupted fit is not done: resume it).
    ``embed``: stamped, its outputs and the model.pt they came from have their recorded
    sha256, the dataset is the one it scored, and its scores follow today's
    ``core.scoring.SCORE_DEFINITION``. ``evaluate``
    (``inject``): stamped, evaluation.json (injection.json) is the file it wrote, and it
    measured the catalogue that is there now.
    """
    if stage not in STAGE_OUTPUTS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGE_OUTPUTS)}")
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").is_file():
        return False
    manifest = RunManifest.read(run_dir)
    if stage not in manifest.stages:
        return False
    if stage == "fit":
        return (run_dir / "model.pt").is_file()
    if stage == "embed":
        from core.scoring import SCORE_DEFINITION

        if manifest.score is None or manifest.score.definition != SCORE_DEFINITION:
            return False
        recorded = (manifest.embed or {}).get("dataset_sha256")
        if recorded:  # the dataset it scored, not one ingested again since (open_run would refuse the run)
            try:
                checksums = DatasetManifest.read(dataset_path(run_dir, manifest)).checksums
            except DatasetError:
                return False
            if recorded != checksums:
                return False
        return all((run_dir / f).is_file() and manifest.checksums.get(f) == sha256_file(run_dir / f)
                   for f in (*STAGE_OUTPUTS["embed"], "model.pt"))
    name, headline = (EVALUATION_FILE, manifest.evaluation) if stage == "evaluate" else (INJECTION_FILE,
                                                                                          manifest.injection)
    written = manifest.files.get(name)
    return ((run_dir / name).is_file() and headline is not None
            and (written is None or stamp_problem(run_dir / name, written) is None)
            and headline.catalogue_sha256 == manifest.checksums.get("catalogue.parquet"))


def trained_before_dataset(run_dir) -> bool:
    """The dataset was rebuilt after ``fit`` into other arrays than the model learnt from: its manifest is newer
    than model.pt and its arrays' sha256 are not those that ``embed`` recorded (all rebuilds count where embed
    recorded none). A dataset ingested again by a newer version that only added catalogue columns (0.4.0's
    ``score_sharp``) keeps its arrays, and the model with them."""
    run_dir = Path(run_dir)
    manifest = RunManifest.read(run_dir)
    data = dataset_path(run_dir, manifest)
    if (run_dir / "model.pt").stat().st_mtime >= (data / "manifest.json").stat().st_mtime:
        return False
    recorded = (manifest.embed or {}).get("dataset_sha256") or {}
    arrays = [f"{a}.npy" for a in ARRAYS]
    try:
        checksums = DatasetManifest.read(data).checksums
    except DatasetError:
        return True
    return any(not recorded.get(f) or checksums.get(f) != recorded[f] for f in arrays)


# ---------------------------------------------------------------------------------------
# Reading a finished run


@dataclass
class Run:
    path: Path
    manifest: RunManifest
    catalogue: pd.DataFrame
    latents: np.ndarray  # (N, D) float32
    recon: np.ndarray  # (N, L, S, S) float32, memory-mapped
    neighbours: np.ndarray  # (N, K) int64
    dataset: SurveyDataset
    consistency_map: np.ndarray | None = None  # (N, S, S) float32, memory-mapped; None: no consistency detector
    consistency_lines: np.ndarray | None = None  # (N, L) float32, each line's share of score_consistency

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def lines(self) -> tuple[str, ...]:
        return tuple(self.manifest.lines)

    @property
    def evaluation(self) -> Evaluation | None:
        """The headline of ``evaluate``, when it finished on the catalogue that is there now."""
        ev = self.manifest.evaluation
        if ev is None or "evaluate" not in self.manifest.stages:
            return None
        current = ev.catalogue_sha256 in (None, self.manifest.checksums.get("catalogue.parquet"))
        return ev if current else None

    def consistency_network(self):
        """The consistency detector's network that scored the catalogue (``core.consistency.load``), checked
        against the stamp embed recorded; RunError naming the file and the repair when it is not that one."""
        from core import consistency

        check_stamps(self.path, self.manifest, (CONSISTENCY_FILE,))
        return consistency.load(self.path / CONSISTENCY_FILE, self.lines,
                                f"run `python -m train embed --run {self.path}` again")

    def census_model(self) -> tuple[dict, dict]:
        """``(model, calibration)`` of the census detector that scored the catalogue (``core.census.load``), checked
        against the stamp embed recorded; RunError naming the file and the repair when it is not that one."""
        from core import census

        check_stamps(self.path, self.manifest, (CENSUS_FILE,))
        return census.load(self.path / CENSUS_FILE, self.lines,
                           f"run `python -m train embed --run {self.path}` again")


def missing_files(path) -> list[str]:
    path = Path(path)
    return [f for f in DASHBOARD_FILES if not (path / f).is_file()]


def check_stamps(path, manifest: RunManifest, names) -> None:
    """RunError unless each of the files ``names`` is the one ``embed`` recorded (runs without records pass)."""
    path = Path(path)
    for name in names:
        stamp = manifest.files.get(name)
        problem = stamp_problem(path / name, stamp) if stamp is not None else None
        if problem:
            raise RunError(f"{path / name}: not the file `embed` recorded ({problem}), so the run's files no longer "
                           f"belong together; run `python -m train embed --run {path}` again")


def open_run(path) -> Run:
    """Open a finished run (after ``embed``) read-only; large arrays are memory-mapped.

    Checks are cheap enough for every start of the app: the ``embed`` stamp, each file's
    size against the stamp ``embed`` recorded (its sha256 only when its time moved), the
    arrays' shapes and types against the manifest, and the dataset's identity. Anything
    missing, damaged or out of step is a RunError (or DatasetError) naming the file and the
    command that repairs it.
    """
    path = Path(path)
    manifest = RunManifest.read(path)
    embed = f"`python -m train embed --run {path}`"
    missing = missing_files(path)
    if missing:
        raise RunError(f"{path}: the run is incomplete (missing {', '.join(missing)}); finish it with {embed}")
    if "embed" not in manifest.stages:
        raise RunError(f"{path}: the embed stage did not finish (manifest.json has no embed stamp), so its files "
                       f"may not belong together; run {embed} again")
    check_stamps(path, manifest, STAGE_OUTPUTS["embed"])
    todo = f"rebuild it with {embed}"
    catalogue = load_parquet(path / "catalogue.parquet", RunError, todo)
    latents = load_npy(path / "latents.npy", RunError, todo)
    recon = load_npy(path / "recon.npy", RunError, todo)
    neighbours = load_npy(path / "neighbours.npy", RunError, todo, mmap=False)
    n = len(catalogue)
    if manifest.n_galaxies is not None and manifest.n_galaxies != n:
        raise RunError(f"{path / 'catalogue.parquet'}: {n} rows, but the manifest says {manifest.n_galaxies}; {todo}")
    n_lines, size = len(manifest.lines), manifest.size
    check_array(path / "latents.npy", latents, (n, manifest.model_args.get("latent_dim")), np.float32, RunError, todo)
    check_array(path / "recon.npy", recon, (n, n_lines, size, size), np.float32, RunError, todo)
    check_array(path / "neighbours.npy", neighbours, (n, None), np.int64, RunError, todo)
    if neighbours.size and not (0 <= neighbours.min() and neighbours.max() < n):
        raise RunError(f"{path / 'neighbours.npy'}: indices outside the catalogue's {n} rows; {todo}")
    dataset = open_dataset(dataset_path(path, manifest))
    if len(dataset) != n:
        raise RunError(f"{path}: the catalogue has {n} galaxies but its dataset {dataset.path} has {len(dataset)}")
    recorded = (manifest.embed or {}).get("dataset_sha256")
    if recorded and recorded != dataset.manifest.checksums:
        raise RunError(f"{path}: its dataset {dataset.path} was rebuilt after `embed` scored the run; run {embed} "
                       "again (or, if the lines, grid or normalisation changed, train a new run with "
                       "`python -m train fit`)")
    optional = {}  # the consistency detector's caches, where embed wrote them
    for key, name, shape in (("consistency_map", CONSISTENCY_MAP_FILE, (n, size, size)),
                             ("consistency_lines", CONSISTENCY_LINES_FILE, (n, n_lines))):
        if (path / name).is_file() and name in manifest.files:
            check_stamps(path, manifest, (name,))
            optional[key] = load_npy(path / name, RunError, todo)
            check_array(path / name, optional[key], shape, np.float32, RunError, todo)
    return Run(path=path, manifest=manifest, catalogue=catalogue, latents=latents, recon=recon,
               neighbours=neighbours, dataset=dataset, **optional)
