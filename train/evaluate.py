"""``python -m train evaluate``: detection quality of a run against the truth of a synthetic survey,
or (``--inject``) against perturbations of fresh galaxies that the survey never made."""
from __future__ import annotations

from train.args import device_name, finite_float, out_folder, positive_int, processes, random_seed

HELP = "measure how well the anomaly score finds the true anomalies (synthetic surveys), next to two baselines"
EXAMPLES = """\
  python -m train evaluate --run runs/demo
  python -m train evaluate --run runs/demo --seed 1
  python -m train evaluate --run runs/demo --inject                 # the injection benchmark
  python -m train evaluate --run runs/demo --inject --dry-run       # what it would do
  python -m train evaluate --run runs/demo --inject --n-per-kind 20 --strengths 0.1 0.25 0.5 1 --workers 2
  python -m train evaluate --run runs/demo --inject --kinds bright_knot shifted_red --keep /tmp/injected

Needs the truth columns (truth_anomaly, truth_class) that ingest copies from a synthetic
survey's truth.csv. Tasks: true anomalies vs everything else, each anomaly kind vs the
non-anomalies, Seyfert + LINER vs star-forming. Methods: the run's anomaly score, each of
its five detectors alone (recon: the autoencoder's score_recon; consistency: score_consistency,
each line predicted from the others by core.consistency's network; mixing: score_mixing, each
galaxy's departures from its own two-spectrum mix, core.mixing; census: score_census, its line
ratios and line shapes against the survey's, core.census; sharp: score_sharp, structure sharper
than the PSF, core.sharpness), PCA reconstruction error
on the same maps (as many components as the model's latent, fitted on the training split)
and an isolation forest on the catalogue's log line ratios.
Prints ROC-AUC / average precision and writes RUN/evaluation.json and manifest "evaluation".

With --inject: makes fresh ordinary synthetic galaxies (a seed the run's survey never used,
its recipe from the survey's synth.json), perturbs each at every strength with one of the
kinds of core.perturb (brightness, line ratios, morphology, instrument artefacts; none of
them made by the synthetic survey or seen in training), writes them as MAPS files, scores
them exactly as `train score` does, and prints per kind and strength the median percentile
against the run's galaxies and the fraction flagged, for anomaly_score and every score_*
component, with the untouched galaxies as the control ("none"). Writes RUN/injection.json
and manifest "injection"; the app's header shows it.
"""


def add_arguments(p) -> None:
    from core.inject import INJECT_SEED, N_PER_KIND
    from core.perturb import DEFAULT_STRENGTHS, KINDS

    p.add_argument("--run", required=True, metavar="RUN", help="run directory after `python -m train embed`")
    p.add_argument("--seed", type=random_seed, default=None,
                   help=f"seed of the PCA and isolation-forest baselines (default 0); with --inject, of the fresh "
                        f"galaxies and their perturbations (default {INJECT_SEED})")
    g = p.add_argument_group("injection benchmark")
    g.add_argument("--inject", action="store_true", help="run the injection benchmark instead of the truth evaluation")
    g.add_argument("--n-per-kind", type=positive_int, default=N_PER_KIND,
                   help=f"fresh galaxies per kind, each perturbed at every strength (default {N_PER_KIND})")
    g.add_argument("--strengths", type=finite_float(0, 1, low_open=True), nargs="+", default=list(DEFAULT_STRENGTHS),
                   metavar="S", help="strengths in (0, 1] (default " + " ".join(f"{s:g}" for s in DEFAULT_STRENGTHS)
                   + "; the headline is at the middle one)")
    g.add_argument("--kinds", nargs="+", choices=list(KINDS), default=list(KINDS), metavar="KIND",
                   help="perturbation kinds (default all: " + ", ".join(KINDS) + ")")
    g.add_argument("--workers", type=processes, default=1, help="processes that make the MAPS files (default 1)")
    g.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when present), cpu or cuda[:N]")
    g.add_argument("--keep", type=out_folder, default=None, metavar="DIR",
                   help="write the MAPS files into DIR and keep them (default: a temporary folder, removed)")
    g.add_argument("--dry-run", action="store_true", help="print what --inject would do, write nothing")
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    if args.inject or args.dry_run:
        return _inject(args)
    from core.evaluate import evaluate_run, report

    result = evaluate_run(args.run, seed=0 if args.seed is None else args.seed)
    if result is None:
        print(f"{args.run}: the catalogue has no truth columns (truth_anomaly, truth_class), so there is nothing "
              "to evaluate; evaluation needs a synthetic survey (`python -m train synth`) ingested with its truth.csv")
        return 0
    print(report(result))
    return 0


def _inject(args) -> int:
    from core.inject import INJECT_SEED, InjectConfig, inject_run, plan_text, report

    config = InjectConfig(kinds=tuple(dict.fromkeys(args.kinds)), strengths=tuple(sorted(set(args.strengths))),
                          n_per_kind=args.n_per_kind, seed=INJECT_SEED if args.seed is None else args.seed)
    if args.dry_run:
        print(plan_text(args.run, config, args.workers))
        return 0
    print(report(inject_run(args.run, config, workers=args.workers, device=args.device, progress=not args.quiet,
                            keep=args.keep)))
    return 0
