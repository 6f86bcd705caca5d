"""``python -m train embed``: score every galaxy of a trained run and cache what the dashboard reads."""
from __future__ import annotations

HELP = "reconstruct and score every galaxy of a run; write latents, UMAP and nearest neighbours"
EXAMPLES = """\
  python -m train embed --run runs/demo
  python -m train embed --run runs/dr17 --device cuda --batch-size 256
  python -m train embed --run runs/demo --neighbours 50 --flag-pct 95

Writes RUN/catalogue.parquet, latents.npy, recon.npy and neighbours.npy (atomically) and
records the score definition, its median and 90th percentile, the UMAP parameters and the
files' sha256 in RUN/manifest.json. The anomaly score is the mean squared residual over a
galaxy's unmasked cells, in the dataset's normalisation (see core/scoring.py).
"""

STAGE = "embed"
#: The files this stage writes (their sha256 go into the manifest).
OUTPUTS = ("catalogue.parquet", "latents.npy", "recon.npy", "neighbours.npy")


def add_arguments(p) -> None:
    p.add_argument("--run", required=True, metavar="RUN", help="run directory written by `python -m train fit`")
    p.add_argument("--batch-size", type=int, default=64, help="galaxies per forward pass (default 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N] (default auto)")
    p.add_argument("--neighbours", type=int, default=20, metavar="K",
                   help="nearest neighbours kept per galaxy in latent space (default 20)")
    p.add_argument("--flag-pct", type=float, default=90.0, metavar="PCT",
                   help="flag galaxies at or above this percentile of the score (default 90)")
    p.add_argument("--seed", type=int, default=0, help="seed of the UMAP (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args) -> int:
    from core.errors import RunError

    if not 0.0 < args.flag_pct < 100.0:
        raise RunError(f"--flag-pct {args.flag_pct}: give a percentile between 0 and 100")
    if args.neighbours < 1 or args.batch_size < 1:
        raise RunError("--neighbours and --batch-size must be at least 1")
    summary = embed_run(args.run, batch_size=args.batch_size, device=args.device, k=args.neighbours,
                        flag_pct=args.flag_pct, seed=args.seed, progress=not args.quiet)
    print(summary)
    return 0


def embed_run(run_dir, *, batch_size=64, device="auto", k=20, flag_pct=90.0, seed=0, progress=True) -> str:
    """Do the work of ``train embed`` on ``run_dir``; return a one-paragraph summary."""
    import os
    import time
    from pathlib import Path

    import numpy as np

    from core import embed as latent
    from core import scoring
    from core.dataset import open_dataset
    from core.errors import RunError
    from core.io import open_npy_memmap, save_npy, save_parquet, sha256_file
    from core.models import load_model, resolve_device
    from core.run import dataset_path, open_run, read_manifest
    from core.training import make_split

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    if not (run_dir / "model.pt").is_file():
        raise RunError(f"{run_dir}: no model.pt; train the model first with `python -m train fit --run {run_dir}`")
    data = open_dataset(dataset_path(run_dir, manifest))
    if list(data.lines) != list(manifest["lines"]) or data.size != int(manifest["size"]):
        raise RunError(f"{run_dir}: the model was trained on lines {manifest['lines']} at size {manifest['size']} "
                       f"but {data.path} now holds {list(data.lines)} at size {data.size}; train again with "
                       f"`python -m train fit --data {data.path} --run {run_dir}`")
    dev = resolve_device(device)
    model, payload = load_model(run_dir, device=dev)
    # A crash from here on leaves a run that says it was not embedded.
    mark_stage(run_dir, STAGE, False)

    n, lines = len(data), list(data.lines)
    latents = np.empty((n, payload["model_args"]["latent_dim"]), np.float32)
    scores, shares = np.empty(n), np.empty((n, len(lines)))
    recon, commit = open_npy_memmap(run_dir / "recon.npy", data.flux.shape, np.float32)
    try:
        for rows, z, rec in scoring.reconstruct(model, data.flux, data.mask, batch_size, dev, progress, desc="embed"):
            latents[rows], recon[rows] = z, rec
            scores[rows], shares[rows] = scoring.galaxy_errors(rec, data.flux[rows], data.mask[rows],
                                                                 data.ivar[rows], lines)
        commit()
    except BaseException:
        os.unlink(recon.filename)
        raise
    del recon

    if progress:
        print(f"embed: UMAP of {n} latents and {min(k, n - 1)} nearest neighbours ...", flush=True)
    coords, umap_params = latent.umap_embedding(latents, seed=seed)
    neighbours = latent.nearest_neighbours(latents, k)

    threshold = scoring.flag_threshold(scores, flag_pct)
    catalogue = data.catalogue.reset_index(drop=True).copy()
    for name, col in scoring.score_columns(scores, shares, lines, scores, threshold).items():
        catalogue[name] = col
    catalogue["umap_x"], catalogue["umap_y"] = coords[:, 0], coords[:, 1]
    split = manifest.get("split") or {}
    is_val = make_split(n, float(split.get("val_fraction", 0.0)), int(split.get("seed", 0)))
    catalogue["split"] = np.where(is_val, "val", "train")

    save_npy(run_dir / "latents.npy", latents)
    save_npy(run_dir / "neighbours.npy", neighbours)
    save_parquet(run_dir / "catalogue.parquet", catalogue)
    checksums = {**manifest.get("checksums", {}), **{f: sha256_file(run_dir / f) for f in (*OUTPUTS, "model.pt")}}
    finite = scores[np.isfinite(scores)]
    score_info = {
        "definition": scoring.SCORE_DEFINITION,
        "pct_definition": scoring.PCT_DEFINITION,
        "normalisation": data.norm,
        "median": float(np.median(finite)), "p90": float(np.percentile(finite, 90)),
        "mean": float(finite.mean()), "max": float(finite.max()),
        "flag_pct": flag_pct, "flag_threshold": threshold, "n_flagged": int(catalogue["flagged"].sum()),
    }
    seconds = time.perf_counter() - t0
    mark_stage(run_dir, STAGE, True, score=score_info, umap=umap_params, checksums=checksums, n_galaxies=n,
               neighbours={"k": int(neighbours.shape[1]), "metric": "euclidean", "space": "latent", "self_excluded": True},
               embed={"seconds": round(seconds, 2), "device": str(dev), "batch_size": batch_size})
    open_run(run_dir)  # the dashboard must be able to read what was written
    return (f"embedded {n} galaxies of {run_dir} in {seconds:.1f} s: score median {score_info['median']:.4g}, "
            f"90th percentile {score_info['p90']:.4g}; {score_info['n_flagged']} flagged (>= {flag_pct:g}th percentile)")


def mark_stage(run_dir, stage: str, done: bool, **fields) -> dict:
    """Stamp ``stage`` as finished now (UTC, as ``fit`` does) or remove its stamp, and merge ``fields``."""
    from datetime import datetime, timezone

    from core.run import read_manifest, update_manifest

    stages = dict(read_manifest(run_dir).get("stages") or {})
    if done:
        stages[stage] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    else:
        stages.pop(stage, None)
    return update_manifest(run_dir, stages=stages, **fields)
