"""``python -m train demo``: synthetic survey -> dataset -> trained model -> scores -> evaluation."""
from __future__ import annotations

from train.args import int_range, out_folder, positive_int, processes, random_seed

HELP = "build the demo run from nothing: synth, ingest, fit, embed and evaluate (each skipped when done)"
EXAMPLES = """\
  python -m train demo                      # runs/demo-survey, runs/demo-dataset, runs/demo
  python -m train demo --out /tmp/runs --n 200 --epochs 2    # a quick small one
  python -m train serve --run runs/demo     # then explore it at http://localhost:5006/dashboard

A stage whose output is already there and up to date is skipped, so running the demo again
is instant and an interrupted demo continues where it stopped (training resumes from its
checkpoint). The survey is generated with a fixed seed, so every demo is the same.
"""

SURVEY, DATASET, RUN = "demo-survey", "demo-dataset", "demo"
#: The smaller DR15 layout (22 channels) writes and reads faster than DR17 (35); the model uses the same 19 lines.
RELEASE = "dr15"
#: Fewer galaxies leave too few to train on beside the validation split and the anomalies.
MIN_GALAXIES = 10


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs", type=out_folder, metavar="DIR", help="folder of the demo's survey, dataset and run (default runs)")
    p.add_argument("--n", type=int_range(MIN_GALAXIES), default=2000,
                   help=f"galaxies in the synthetic survey, at least {MIN_GALAXIES} (default 2000)")
    p.add_argument("--seed", type=random_seed, default=1, help="seed of the survey, the training and the UMAP (default 1)")
    p.add_argument("--epochs", type=positive_int, default=None, help="training epochs (default: the demo config's)")
    p.add_argument("--workers", type=processes, default=None, help="processes for synth and ingest (default: one per core)")


def run(args) -> int:
    import time
    from pathlib import Path

    from core.evaluate import report
    from core.ingest import looks_current
    from core.run import is_done

    out = Path(args.out)
    survey, dataset, run_dir = out / SURVEY, out / DATASET, out / RUN
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    seed = str(args.seed)
    stages = [
        ("synth", f"{args.n} synthetic galaxies -> {survey}", lambda: _survey_ready(survey, args.n, args.seed, out),
         lambda: ["synth", "--out", str(survey), "--n", str(args.n), "--seed", seed, "--release", RELEASE, *workers]),
        ("ingest", f"MAPS files -> {dataset}", lambda: looks_current(dataset, [survey], also=[survey / "truth.csv"]),
         lambda: ["ingest", str(survey), "--out", str(dataset), *workers]),
        ("fit", f"train the demo model -> {run_dir}", lambda: _fit_ready(run_dir, args.epochs, out),
         lambda: _fit_command(run_dir, dataset, seed, args.epochs)),
        ("embed", "scores, latents, UMAP, neighbours", lambda: is_done(run_dir, "embed"),
         lambda: ["embed", "--run", str(run_dir), "--seed", seed]),
        ("evaluate", "detection quality against the truth", lambda: is_done(run_dir, "evaluate"),
         lambda: ["evaluate", "--run", str(run_dir)]),
    ]
    t_all = time.perf_counter()
    evaluated_now = False
    for i, (name, what, ready, command) in enumerate(stages, 1):
        head = f"[{i}/{len(stages)}] {name:<8} {what}"
        if ready():
            print(f"{head}: already done, skipped", flush=True)
            continue
        evaluated_now = name == "evaluate"
        print(f"{head} ...", flush=True)
        t0 = time.perf_counter()
        _run_command(command())
        print(f"[{i}/{len(stages)}] {name:<8} done in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"demo ready in {time.perf_counter() - t_all:.1f} s: {run_dir}")
    if not evaluated_now:  # else the evaluate stage has just printed it
        from core.io import read_json
        from core.run import EVALUATION_FILE

        print(report(read_json(run_dir / EVALUATION_FILE)))
    print(f"explore it:  python -m train serve --run {run_dir}")
    return 0


def _run_command(argv: list[str]) -> None:
    """Run ``python -m train <argv>`` in this process; its errors propagate to the CLI."""
    from train.cli import build_parser

    args = build_parser().parse_args(argv)
    code = int(args._run(args) or 0)
    if code:
        from core.errors import BlueberryError

        raise BlueberryError(f"`python -m train {' '.join(argv)}` failed with exit status {code}")


def _mismatch(what: str, out) -> Exception:
    from core.errors import RunError

    return RunError(f"{what}; the demo folders in {out} were built with other settings. Choose another --out, "
                    f"or remove {out}/{SURVEY}, {out}/{DATASET} and {out}/{RUN} to rebuild")


def _survey_ready(survey, n: int, seed: int, out) -> bool:
    """synth.json (written last) says this survey was made with these settings, and its files are all there."""
    from core.errors import DatasetError
    from core.ingest import find_inputs
    from core.io import read_json

    if not (survey / "synth.json").is_file() or not (survey / "truth.csv").is_file():
        return False
    made = read_json(survey / "synth.json")
    if (made.get("n"), made.get("seed"), made.get("release")) != (n, seed, RELEASE):
        raise _mismatch(f"{survey} holds a survey of n={made.get('n')}, seed={made.get('seed')}, "
                        f"release={made.get('release')}, not --n {n} --seed {seed}", out)
    try:
        return len(find_inputs([survey])) == n
    except DatasetError:
        return False


def _fit_ready(run_dir, epochs, out) -> bool:
    """Trained with the demo's epochs (else the folders belong to other settings) and finished."""
    from core.run import RunManifest, is_done, trained_before_dataset
    from core.training import train_config_for

    if not (run_dir / "manifest.json").is_file():
        return False
    wanted = epochs or train_config_for("demo").epochs
    trained = RunManifest.read(run_dir).train_config.get("epochs")
    if trained != wanted:
        raise _mismatch(f"{run_dir} was trained for {trained} epochs, not {wanted}", out)
    if not is_done(run_dir, "fit"):
        return False  # interrupted: _fit_command resumes it
    if trained_before_dataset(run_dir):
        raise _mismatch(f"{run_dir} was trained before its dataset was rebuilt", out)
    return True


def _fit_command(run_dir, dataset, seed: str, epochs) -> list[str]:
    if (run_dir / "checkpoint.pt").is_file():
        return ["fit", "--run", str(run_dir), "--resume"]
    return ["fit", "--data", str(dataset), "--run", str(run_dir), "--config", "demo", "--seed", seed,
            *([] if epochs is None else ["--epochs", str(epochs)])]
