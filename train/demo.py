"""``python -m train demo``: synthetic survey -> dataset -> trained model -> scores -> evaluation."""
from __future__ import annotations

HELP = "build the demo run from nothing: synth, ingest, fit, embed and evaluate (each skipped when done)"
EXAMPLES = """\
  python -m train demo                      # runs/demo-survey, runs/demo-dataset, runs/demo
  python -m train demo --out /tmp/runs --n 200 --epochs 2    # a quick small one
  panel serve dashboard --plugins dashboard.export --args --run runs/demo   # then explore it

A stage whose output is already there and up to date is skipped, so running the demo again
is instant and an interrupted demo continues where it stopped (training resumes from its
checkpoint). The survey is generated with a fixed seed, so every demo is the same.
"""

SURVEY, DATASET, RUN = "demo-survey", "demo-dataset", "demo"
#: The smaller DR15 layout (22 channels) writes and reads faster than DR17 (35); the model uses the same 19 lines.
RELEASE = "dr15"


def add_arguments(p) -> None:
    p.add_argument("--out", default="runs", metavar="DIR", help="folder of the demo's survey, dataset and run (default runs)")
    p.add_argument("--n", type=int, default=2000, help="galaxies in the synthetic survey (default 2000)")
    p.add_argument("--seed", type=int, default=1, help="seed of the survey, the training and the UMAP (default 1)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: the demo config's)")
    p.add_argument("--workers", type=int, default=None, help="processes for synth and ingest (default: one per core)")


def run(args) -> int:
    import time
    from pathlib import Path

    from core.errors import RunError
    from train.evaluate import report

    if args.n < 10:
        raise RunError(f"--n {args.n}: the demo needs at least 10 galaxies")
    out = Path(args.out)
    survey, dataset, run_dir = out / SURVEY, out / DATASET, out / RUN
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    seed = str(args.seed)
    stages = [
        ("synth", f"{args.n} synthetic galaxies -> {survey}", lambda: _survey_ready(survey, args.n, args.seed, out),
         lambda: ["synth", "--out", str(survey), "--n", str(args.n), "--seed", seed, "--release", RELEASE, *workers]),
        ("ingest", f"MAPS files -> {dataset}", lambda: _dataset_ready(dataset, survey),
         lambda: ["ingest", str(survey), "--out", str(dataset), *workers]),
        ("fit", f"train the demo model -> {run_dir}", lambda: _fit_ready(run_dir, dataset, args.epochs, out),
         lambda: _fit_command(run_dir, dataset, seed, args.epochs)),
        ("embed", "scores, latents, UMAP, neighbours", lambda: _embed_ready(run_dir),
         lambda: ["embed", "--run", str(run_dir), "--seed", seed]),
        ("evaluate", "detection quality against the truth", lambda: _evaluate_ready(run_dir),
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

        print(report(read_json(run_dir / "evaluation.json")))
    print(f"explore it:  panel serve dashboard --plugins dashboard.export --args --run {run_dir}")
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


def _dataset_ready(dataset, survey) -> bool:
    """The dataset read back and covers exactly the survey's files, all older than it (as make does)."""
    from core.dataset import open_dataset
    from core.errors import DatasetError
    from core.ingest import find_inputs

    try:
        manifest = open_dataset(dataset).manifest
    except DatasetError:
        return False
    files = find_inputs([survey])
    seen = {s["path"] for s in manifest["sources"]} | {s["path"] for s in manifest["skipped"]} \
        | {d["dropped"] for d in manifest.get("duplicates", [])}
    newest = max(f.stat().st_mtime for f in [*files, survey / "truth.csv"])
    return seen == {str(f) for f in files} and (dataset / "manifest.json").stat().st_mtime >= newest


def _fit_ready(run_dir, dataset, epochs, out) -> bool:
    from core.run import read_manifest
    from core.training import train_config_for

    if not (run_dir / "manifest.json").is_file():
        return False
    manifest = read_manifest(run_dir)
    wanted = epochs or train_config_for("demo").epochs
    trained = manifest.get("train_config", {}).get("epochs")
    if trained != wanted:
        raise _mismatch(f"{run_dir} was trained for {trained} epochs, not {wanted}", out)
    if "fit" not in manifest.get("stages", {}) or not (run_dir / "model.pt").is_file():
        return False  # interrupted: _fit_command resumes it
    if (run_dir / "model.pt").stat().st_mtime < (dataset / "manifest.json").stat().st_mtime:
        raise _mismatch(f"{run_dir} was trained before {dataset} was rebuilt", out)
    return True


def _fit_command(run_dir, dataset, seed: str, epochs) -> list[str]:
    if (run_dir / "checkpoint.pt").is_file():
        return ["fit", "--run", str(run_dir), "--resume"]
    return ["fit", "--data", str(dataset), "--run", str(run_dir), "--config", "demo", "--seed", seed,
            *([] if epochs is None else ["--epochs", str(epochs)])]


def _embed_ready(run_dir) -> bool:
    """Stamped, and every cached file (and the model it came from) still has its recorded sha256."""
    from core.io import sha256_file
    from core.run import read_manifest
    from train.embed import OUTPUTS

    manifest = read_manifest(run_dir)
    sums = manifest.get("checksums", {})
    if "embed" not in manifest.get("stages", {}):
        return False
    return all((run_dir / f).is_file() and sums.get(f) == sha256_file(run_dir / f) for f in (*OUTPUTS, "model.pt"))


def _evaluate_ready(run_dir) -> bool:
    from core.run import read_manifest

    manifest = read_manifest(run_dir)
    evaluation = manifest.get("evaluation") or {}
    return ("evaluate" in manifest.get("stages", {}) and (run_dir / "evaluation.json").is_file()
            and evaluation.get("catalogue_sha256") == manifest.get("checksums", {}).get("catalogue.parquet"))
