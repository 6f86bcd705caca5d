"""The ``inject`` stage: how the run's score ranks oddities that nobody simulated.

Fresh synthetic galaxies (ordinary classes only, from a seed the run's survey never used,
with the survey's own recipe where ``synth.json`` lies beside the dataset's sources) are
perturbed by every kind of :mod:`core.perturb` at a few strengths (the noiseless maps are
perturbed and keep the galaxy's own noise: :func:`observed`), written as real MAPS
files (:mod:`core.synth.writer`) into a temporary folder and scored by
:func:`core.score.score_files`, the path of ``python -m train score`` (reading, gridding,
normalisation, model, score). Whatever score columns that returns are measured:
``anomaly_score`` and any ``score_<component>``, each as a percentile against the run's
catalogue (``anomaly_pct`` semantics) and as the fraction flagged with the run's flag
percentile. The untouched galaxies are the control. Everything goes to ``injection.json``,
the headline to the manifest (:class:`core.run.Injection`); docs/ARCHITECTURE.md has the layout.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from core import scoring
from core.errors import BlueberryError
from core.io import file_stamp, read_json, remove_stale_tmp, write_json
from core.perturb import DEFAULT_STRENGTHS, KINDS, DapMaps, perturb
from core.run import INJECTION_FILE, Injection, RunManifest, mark_stage, open_run

STAGE = "inject"
#: The default seed of the fresh galaxies; a run whose survey used it is told to pick another.
INJECT_SEED = 20261130
#: Galaxies per kind by default: 17 kinds x 3 strengths x 8 galaxies stays within a minute or two on 2 cores.
N_PER_KIND = 8
#: The name of the untouched galaxies' row.
CONTROL = "none"
#: The perturbation's random stream of galaxy i is SeedSequence(seed, spawn_key=(i, PERTURB_KEY)),
#: apart from the galaxy's own (i,) stream.
PERTURB_KEY = 0x1A7EC7
#: A perturbation counts as plain in the noise ("detectable") when a chi-square test of the file against the galaxy's
#: noiseless maps, over its N measured values and knowing nothing of the perturbation's form, would see it at this
#: many sigma: sum (change)^2 ivar >= DETECTABLE_SIGMA sqrt(2 N). A yardstick, not a bound: no detector knows the
#: noiseless maps, but one that knows a law (the [OIII] doublet's fixed ratio) sees changes this test would not.
DETECTABLE_SIGMA = 5.0


@dataclass(frozen=True)
class InjectConfig:
    """What the benchmark injects."""

    kinds: tuple[str, ...] = tuple(KINDS)  # perturbation kinds (core.perturb.KINDS)
    strengths: tuple[float, ...] = DEFAULT_STRENGTHS  # each kind at each of these strengths, in (0, 1]
    n_per_kind: int = N_PER_KIND  # fresh galaxies per kind, each perturbed at every strength
    seed: int = INJECT_SEED  # seed of the fresh galaxies and of the perturbations

    def __post_init__(self):
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            raise BlueberryError(f"unknown perturbation kind(s) {', '.join(unknown) or '(none given)'}; "
                                 f"kinds are {', '.join(KINDS)}")
        if not self.strengths or not all(0.0 < s <= 1.0 for s in self.strengths):
            raise BlueberryError(f"strengths must lie in (0, 1], got {self.strengths}")
        if self.n_per_kind < 1:
            raise BlueberryError(f"n_per_kind must be at least 1, got {self.n_per_kind}")

    @property
    def middle(self) -> float:
        """The strength the headline is measured at: the middle one of the sorted strengths."""
        ordered = sorted(self.strengths)
        return ordered[(len(ordered) - 1) // 2]


# ---------------------------------------------------------------------------------------
# The fresh galaxies


def survey_recipe(run) -> dict:
    """``{"release", "config", "seed", "source"}``: how the run's survey was made, from the ``synth.json``
    beside its dataset's sources; defaults (and ``seed`` None) for a survey that is not synthetic."""
    from core.synth import SynthConfig

    folders = sorted({str(Path(s["path"]).parent) for s in run.dataset.manifest.sources if "path" in s})
    for folder in folders:
        path = Path(folder) / "synth.json"
        if path.is_file():
            try:
                obj = read_json(path)
                fields = {k: v for k, v in obj.get("config", {}).items() if k in SynthConfig.__dataclass_fields__}
                if "bundle_weights" in fields:  # JSON keys are strings; the bundles are numbers of fibres
                    fields["bundle_weights"] = {int(k): v for k, v in fields["bundle_weights"].items()}
                config = SynthConfig(**fields)
                return {"release": obj.get("release", "dr15"), "config": config, "seed": obj.get("seed"),
                        "source": str(path)}
            except (OSError, ValueError, TypeError) as exc:
                raise BlueberryError(f"{path}: cannot be read as a synthetic survey's recipe ({exc}); remove it "
                                     "or make the survey again with `python -m train synth`") from None
    return {"release": "dr15", "config": SynthConfig(), "seed": None,
            "source": "defaults (no synth.json beside the dataset's sources)"}


def _plan(config: InjectConfig, recipe: dict) -> list[tuple]:
    """One task per fresh galaxy: ``(index, seed, class, release, synth config, kind, strengths)``."""
    from core.synth import assign_classes

    n = len(config.kinds) * config.n_per_kind
    ordinary = replace(recipe["config"], anomaly_fraction=0.0)  # the control must be ordinary galaxies
    classes = assign_classes(n, config.seed, ordinary)
    return [(i, config.seed, classes[i], recipe["release"], ordinary, config.kinds[i // config.n_per_kind],
             tuple(config.strengths)) for i in range(n)]


def observed(changed: DapMaps, sky: DapMaps, maps: DapMaps) -> DapMaps:
    """A perturbed sky ``changed`` observed with the galaxy's own noise: ``maps`` (the galaxy as observed, its
    noiseless ``sky``) where the perturbation left the sky alone, ``changed + (maps - sky)`` where it changed it.

    Perturbing the observed maps would change their noise with their flux: a region dimmed, blurred or
    resampled would be less noisy than its inverse variance says, a brightened one noisier, which no
    observation is (and which the detectors, all measured against the noise, would see instead of the
    perturbation). The synthetic survey's noise does not depend on the line flux (``core.synth.observe``),
    so the perturbed sky keeps the galaxy's noise and the file's inverse variance stays right; a kind that
    changes the inverse variance itself (``overconfident_ivar``) misstates it on purpose.
    """
    flux = np.where(changed.flux == sky.flux, maps.flux, changed.flux + (maps.flux - sky.flux))
    return replace(changed, flux=flux.astype(maps.flux.dtype))


def perturbation_signal(out: DapMaps, maps: DapMaps, changes: str = "flux") -> dict:
    """``{"signal_sigma", "detectable"}`` of a perturbed galaxy ``out`` against the galaxy as observed, ``maps``.

    ``signal_sigma``: sqrt(sum (change)^2 ivar) over the measured values, the significance at which a test that
    knew both the noiseless maps and the perturbation's form would see it; ``detectable``: whether a test that
    knew only the noiseless maps would (:data:`DETECTABLE_SIGMA`). A kind that changes the inverse variance
    (``changes="ivar"``) moves no flux: NaN and detectable, since its files misstate their noise everywhere.
    A faint line's change can be below this test: [OIII] rotated where [OIII] is faint changes little.
    """
    if changes != "flux":
        return {"signal_sigma": float("nan"), "detectable": True}
    good = (maps.ivar > 0) & np.isfinite(maps.ivar)
    change = np.where(good, out.flux.astype(np.float64) - maps.flux, 0.0)  # (C, ny, nx)
    chi2 = float(np.sum(np.square(change) * np.where(good, maps.ivar, 0.0)))
    return {"signal_sigma": float(np.sqrt(chi2)),
            "detectable": bool(chi2 > 0 and chi2 >= DETECTABLE_SIGMA * np.sqrt(2.0 * good.sum()))}


def _write_galaxy(task, out_dir) -> list[dict]:
    """Make one fresh galaxy, write it untouched and at every strength of its kind; one row per file."""
    from core.synth import make_galaxy, survey_file_name, write_maps_file

    index, seed, truth_class, release, synth_config, kind, strengths = task
    g = make_galaxy(index, seed, truth_class, release, synth_config)
    maps = DapMaps(tuple(g.channels), g.flux, g.ivar, g.mask)
    sky = replace(maps, flux=g.model)  # the noiseless maps: the kinds change the sky, not its noise
    stem = survey_file_name(g.galaxy_id).replace(".fits.gz", "")
    rows = []
    for strength in (0.0, *strengths):
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, PERTURB_KEY)))
        out = observed(perturb(kind, sky, rng, strength), sky, maps) if strength else maps
        path = Path(out_dir) / f"{stem}-{kind if strength else CONTROL}-{strength:g}.fits.gz"
        write_maps_file(path, galaxy_id=g.galaxy_id, mangaid=g.mangaid, ra=g.ra, dec=g.dec, z=g.z,
                        channels=g.channels, flux=out.flux, ivar=out.ivar, mask=out.mask, binid=g.binid, snr=g.snr,
                        pa=g.pa, ellipticity=g.ellipticity, reff=g.reff, extra_header=g.header)
        rows.append({"source": str(path), "index": index, "galaxy_id": g.galaxy_id, "truth_class": truth_class,
                     "kind": kind if strength else CONTROL, "strength": float(strength),
                     **perturbation_signal(out, maps, KINDS[kind].changes if strength else "flux")})
    return rows


def write_injected(config: InjectConfig, recipe: dict, out_dir, workers: int = 1, progress: bool = True) -> list[dict]:
    """Write every fresh galaxy, untouched and perturbed, as MAPS files into ``out_dir``; one row per file."""
    from functools import partial

    from core.synth.survey import run_tasks

    tasks = _plan(config, recipe)
    per_galaxy = run_tasks(partial(_write_galaxy, out_dir=str(out_dir)), tasks, workers, progress, desc="inject")
    return [row for rows in per_galaxy for row in rows]


# ---------------------------------------------------------------------------------------
# The measurement


def score_names(table) -> list[str]:
    """The score columns scoring returned: ``anomaly_score`` and every ``score_<component>``."""
    return ["anomaly_score"] + sorted(c for c in table.columns if c.startswith("score_"))


def measured(table, catalogue, flag_pct: float) -> dict:
    """``{score column: (pct (N,), flagged (N,))}`` of the scored ``table`` against the run's ``catalogue``.

    ``anomaly_score`` uses the table's own ``anomaly_pct`` and ``flagged`` (the run's
    threshold, exactly as ``train score`` reports them); a component column is placed in the
    catalogue's column of the same name and flagged at the run's ``flag_pct``.
    """
    out = {}
    for col in score_names(table):
        if col == "anomaly_score":
            out[col] = (table["anomaly_pct"].to_numpy(np.float64), table["flagged"].to_numpy(bool))
            continue
        if col not in catalogue:
            continue  # a component the run's catalogue does not hold: nothing to place it against
        population = catalogue[col].to_numpy(np.float64)
        values = table[col].to_numpy(np.float64)
        cut = scoring.flag_threshold(population, flag_pct)
        out[col] = (scoring.percentile_in(values, population),
                    np.nan_to_num(values, nan=-np.inf) * (1.0 + scoring.SCORE_RTOL) >= cut)
    return out


#: Bootstrap resamples of a kind's galaxies for the interval of its median percentile.
BOOTSTRAP = 2000


def median_interval(pct: np.ndarray, level: float = 0.9) -> list[float] | None:
    """The ``level`` bootstrap interval ``[lo, hi]`` of the median of ``pct`` (a few galaxies a kind give a wide
    one); None for fewer than two values. A fixed seed: the same galaxies give the same interval."""
    pct = np.asarray(pct, np.float64)
    if pct.size < 2:
        return None
    draws = np.random.default_rng(0).integers(0, pct.size, (BOOTSTRAP, pct.size))  # (B, n)
    medians = np.median(pct[draws], axis=1)
    return [float(q) for q in np.quantile(medians, [(1 - level) / 2, (1 + level) / 2])]


def summarise(rows, table, catalogue, flag_pct: float, config: InjectConfig) -> dict:
    """Per kind and strength, per score column: galaxies, median percentile (and its bootstrap 90 % interval),
    fraction flagged; a headline."""
    import pandas as pd

    scored = pd.DataFrame(rows).merge(table, on="source", how="inner", suffixes=("", "_scored"))
    columns = measured(scored, catalogue, flag_pct)
    groups = [(CONTROL, 0.0)] + [(k, s) for k in config.kinds for s in sorted(config.strengths)]
    # files written before perturbation_signal existed count as detectable
    detectable = scored["detectable"].fillna(True).astype(bool).to_numpy() if "detectable" in scored \
        else np.ones(len(scored), bool)
    result_rows = []
    for kind, strength in groups:
        sel = ((scored["kind"] == kind) & np.isclose(scored["strength"], strength)).to_numpy()
        row = {"kind": kind, "family": KINDS[kind].family if kind in KINDS else "control",
               "strength": strength, "n": int(sel.sum()), "n_detectable": int((sel & detectable).sum())}
        same = (scored["kind"] == CONTROL).to_numpy() & scored["index"].isin(scored["index"][sel]).to_numpy()
        for col, (pct, flagged) in columns.items():
            ok, base = sel & np.isfinite(pct), same & np.isfinite(pct)
            plain = ok & detectable
            row[col] = {"median_pct": float(np.median(pct[ok])) if ok.any() else None,
                        "median_pct_90": median_interval(pct[ok]),
                        "flagged": float(flagged[sel].mean()) if sel.any() else None,
                        # the same galaxies untouched: how far the perturbation moved them
                        "untouched_pct": float(np.median(pct[base])) if base.any() else None,
                        # only the perturbations a test knowing the noiseless maps would see (DETECTABLE_SIGMA)
                        "detectable_median_pct": float(np.median(pct[plain])) if plain.any() else None}
        result_rows.append(row)
    headline = {}
    for col in columns:
        middle = [r for r in result_rows if r["kind"] != CONTROL and r["strength"] == config.middle]
        meds = [r[col]["median_pct"] for r in middle if r[col]["median_pct"] is not None]
        plain_meds = [r[col]["detectable_median_pct"] for r in middle if r[col]["detectable_median_pct"] is not None]
        sel = (scored["kind"] != CONTROL).to_numpy() & np.isclose(scored["strength"], config.middle)
        headline[col] = {
            "strength": config.middle,
            "median_pct": float(np.median(meds)) if meds else None,  # the median kind's median
            "min_kind_pct": float(min(meds)) if meds else None,
            "kinds_at_90": int(sum(m >= 90 for m in meds)),
            # kinds on which 12 galaxies cannot say which side of 90 they are
            "kinds_unsure": [r["kind"] for r in middle if (r[col]["median_pct_90"] or [100, 100])[0] < 90
                             <= r[col]["median_pct_90"][1]],
            "flagged": float(columns[col][1][sel].mean()) if sel.any() else None,
            "detectable": {"median_pct": float(np.median(plain_meds)) if plain_meds else None,
                           "kinds": len(plain_meds), "kinds_at_90": int(sum(m >= 90 for m in plain_meds)),
                           "share": float(detectable[sel].mean()) if sel.any() else None,
                           "flagged": float(columns[col][1][sel & detectable].mean()) if (sel & detectable).any()
                           else None},
            "control_pct": result_rows[0][col]["median_pct"],
            "control_flagged": result_rows[0][col]["flagged"],
        }
    per_galaxy = scored[["kind", "strength", "index", "galaxy_id", "truth_class"]
                        + [c for c in ("signal_sigma", "detectable") if c in scored]].copy()
    for col, (pct, flagged) in columns.items():
        per_galaxy[col] = scored[col].to_numpy(np.float64)
        per_galaxy[f"{col}:pct"] = pct
        per_galaxy[f"{col}:flagged"] = flagged
    return {"scores": list(columns), "rows": result_rows, "headline": headline,
            "galaxies": json.loads(per_galaxy.to_json(orient="records"))}


def inject_run(run_dir, config: InjectConfig = InjectConfig(), workers: int = 1, device="auto",
               progress: bool = True, keep=None) -> dict:
    """Run the injection benchmark on the run in ``run_dir``: write injection.json and the manifest entry.

    ``keep``: a folder to write the MAPS files into and leave there (default: a temporary
    folder, removed afterwards). Returns the result that injection.json holds.
    """
    from core.score import score_files

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    run = open_run(run_dir)
    if run.manifest.score is None or "anomaly_score" not in run.catalogue:
        raise BlueberryError(f"{run_dir}: the run has no scores yet; run `python -m train embed --run {run_dir}`")
    recipe = survey_recipe(run)
    if recipe["seed"] is not None and int(recipe["seed"]) == config.seed:
        raise BlueberryError(f"seed {config.seed} is the seed of the run's own survey ({recipe['source']}): the "
                             "injected galaxies would be its galaxies; give another --seed")
    remove_stale_tmp(run_dir)
    with tempfile.TemporaryDirectory(prefix="blueberry-inject-") as tmp:
        folder = Path(keep) if keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rows = write_injected(config, recipe, folder, workers=workers, progress=progress)
        table, skipped = score_files(run_dir, [r["source"] for r in rows], device=device, progress=progress)
    score = run.manifest.score
    result = {
        "kinds": {k: {"family": KINDS[k].family, "summary": KINDS[k].summary} for k in config.kinds},
        "config": asdict(config),
        "survey": {"release": recipe["release"], "recipe": recipe["source"], "survey_seed": recipe["seed"]},
        **summarise(rows, table, run.catalogue, score.flag_pct, config),
        "skipped": [{"path": p, "reason": r} for p, r in skipped],
        "flag_pct": score.flag_pct,
        "n_galaxies": len(rows),
        "catalogue_sha256": run.manifest.checksums.get("catalogue.parquet"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    mark_stage(run_dir, STAGE, False)
    write_json(run_dir / INJECTION_FILE, result)
    head = result["headline"]["anomaly_score"]
    summary = Injection(strength=head["strength"], median_pct=head["median_pct"], flagged=head["flagged"],
                        control_pct=head["control_pct"], n_kinds=len(config.kinds), seconds=result["seconds"],
                        catalogue_sha256=result["catalogue_sha256"])
    files = {**RunManifest.read(run_dir).files, INJECTION_FILE: file_stamp(run_dir / INJECTION_FILE)}
    mark_stage(run_dir, STAGE, True, injection=summary, files=files)
    return result


def read_injection(run) -> dict | None:
    """The run's injection.json when ``inject`` finished on the catalogue that is there now, else None."""
    summary = run.manifest.injection
    if summary is None or STAGE not in run.manifest.stages:
        return None
    if summary.catalogue_sha256 not in (None, run.manifest.checksums.get("catalogue.parquet")):
        return None
    try:
        return read_json(Path(run.path) / INJECTION_FILE)
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------
# The printed form


def _cell(entry: dict | None) -> str:
    if not entry or entry.get("median_pct") is None:
        return f"{'n/a':>13}"
    return f"{entry['median_pct']:>6.1f} {100 * entry['flagged']:>5.0f}%"


def report(result: dict) -> str:
    """The table: one line per kind and strength, median percentile and % flagged per score column."""
    cols = result["scores"]
    head = (f"{'kind':<20}{'family':<12}{'strength':>9}{'n':>4}{'plain':>6}{'untouched':>10}"
            + "".join(f"{c[:13]:>14}" for c in cols))
    out = [f"median percentile against the run / % flagged (top {100 - result['flag_pct']:g} %), per score column; "
           f"untouched: the same galaxies' median {cols[0]} percentile before the perturbation; plain: the "
           f"perturbations plain in the noise (a test knowing the noiseless maps sees them at {DETECTABLE_SIGMA:g} sigma)",
           head, "-" * len(head)]
    for row in result["rows"]:
        base = row[cols[0]].get("untouched_pct")
        plain = row.get("n_detectable")
        out.append(f"{row['kind']:<20}{row['family']:<12}{row['strength']:>9g}{row['n']:>4}"
                   + (f"{plain:>6}" if plain is not None else f"{'':>6}")
                   + (f"{base:>10.1f}" if base is not None else f"{'':>10}")
                   + "".join(f" {_cell(row.get(c))}" for c in cols))
    for col in cols:
        h = result["headline"][col]
        if h["median_pct"] is None:
            continue
        out.append(f"{col} at strength {h['strength']:g}: median kind's median percentile {h['median_pct']:.1f} "
                   f"(lowest {h['min_kind_pct']:.1f}; {h['kinds_at_90']} of {len(result['kinds'])} kinds >= 90), "
                   f"{100 * h['flagged']:.0f} % flagged; untouched galaxies {h['control_pct']:.1f}"
                   + (f"; 90 is inside the 90 % interval of {', '.join(h['kinds_unsure'])}"
                      if h.get("kinds_unsure") else ""))
        plain = h.get("detectable") or {}
        if plain.get("median_pct") is not None and plain["share"] < 1:
            out.append(f"  over the {100 * plain['share']:.0f} % of perturbations plain in the noise: median kind "
                       f"{plain['median_pct']:.1f} ({plain['kinds_at_90']} of {plain['kinds']} kinds >= 90), "
                       f"{100 * plain['flagged']:.0f} % flagged")
    out.append(f"{result['n_galaxies']} MAPS files scored in {result['seconds']:.0f} s"
               + (f"; {len(result['skipped'])} skipped" if result["skipped"] else ""))
    return "\n".join(out)


def plan_text(run_dir, config: InjectConfig, workers: int) -> str:
    """What ``--dry-run`` prints: the kinds, the galaxies, the files, where the result goes; nothing is written."""
    run = open_run(run_dir)
    recipe = survey_recipe(run)
    n = len(config.kinds) * config.n_per_kind
    lines = [f"run {run.path}: score {run.manifest.score.definition[:60] if run.manifest.score else 'missing'}...",
             f"fresh galaxies: {n} ordinary ({config.n_per_kind} per kind), seed {config.seed}, "
             f"release {recipe['release']}, recipe {recipe['source']}",
             f"strengths {', '.join(f'{s:g}' for s in config.strengths)} (headline at {config.middle:g}); "
             f"{n * (1 + len(config.strengths))} MAPS files to write and score on {workers} process(es)",
             f"would write {Path(run_dir) / INJECTION_FILE}", "kinds:"]
    lines += [f"  {k:<20}{KINDS[k].family:<12}{KINDS[k].summary}" for k in config.kinds]
    return "\n".join(lines)
