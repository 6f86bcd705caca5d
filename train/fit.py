"""``python -m train fit``: train the ConvLSTM AE or VAE on a dataset folder into a run directory."""
from __future__ import annotations

import json
import os
import sys

from train.args import device_name, finite_float, out_folder, positive_int, processes_or_zero, random_seed

#: The options that shape the training: --resume continues with the values recorded in the run, so
#: a different value given with it is refused rather than silently ignored.
TRAINING_OPTIONS = ("epochs", "batch_size", "lr", "beta", "repeats", "patience", "val_fraction", "weighting", "seed")

HELP = "train the ConvLSTM autoencoder (or VAE) on a dataset into a run directory"
EXAMPLES = """\
  python -m train fit --data data/demo-dataset --run runs/mine
  python -m train fit --data data/demo-dataset --run runs/mine-vae --model vae --beta 1e-3
  python -m train fit --data data/manga64 --run runs/paper --config paper --epochs 100
  python -m train fit --run runs/mine --resume            # after a kill or Ctrl-C
  python -m train fit --data data/demo-dataset --run runs/x --dry-run   # one batch, writes nothing
  torchrun --nproc_per_node=4 -m train fit --data data/manga64 --run-dir runs/paper --config paper
    (under torchrun write --run-dir: torchrun reads a bare --run as its own --run-path)
"""


def add_arguments(p) -> None:
    p.add_argument("--data", help="dataset folder written by `python -m train ingest` "
                                  "(with --resume: defaults to the run's dataset)")
    # --run-dir: under torchrun, whose own --run-path option swallows a bare --run.
    p.add_argument("--run", "--run-dir", dest="run", required=True, type=out_folder,
                   help="run directory to create (or to continue with --resume); spell it --run-dir under torchrun")
    p.add_argument("--model", choices=("ae", "vae"), default="ae", help="autoencoder or variational AE (default ae)")
    p.add_argument("--config", choices=("demo", "paper"), default="demo",
                   help="architecture and training defaults: demo (32 x 32, CPU-sized) or paper (64 x 64)")
    p.add_argument("--epochs", type=positive_int, help="maximum epochs (default: the config's)")
    p.add_argument("--batch-size", type=positive_int, help="galaxies per step and per process (default: the config's)")
    p.add_argument("--lr", type=finite_float(low=0, high=1, low_open=True),
                   help="peak learning rate, in (0, 1] (default: the config's)")
    p.add_argument("--beta", type=finite_float(low=0), help="VAE: weight of the KL term, >= 0 (default 1e-3)")
    p.add_argument("--repeats", type=positive_int, help="random orientations of each galaxy per epoch (paper: 3)")
    p.add_argument("--patience", type=positive_int, help="early stopping: epochs without a better validation loss")
    p.add_argument("--val-fraction", type=finite_float(low=0, high=1, high_open=True),
                   help="share of galaxies held out for validation, in [0, 1) (default 0.1; 0: none, the "
                        "training loss then drives early stopping)")
    p.add_argument("--weighting", choices=("none", "ivar", "score"), default=None,
                   help="loss weight of each cell: none, ivar (inverse variance) or score (the anomaly score's "
                        "own weights: inverse variance with its error model; the default)")
    p.add_argument("--device", type=device_name, default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--num-workers", type=processes_or_zero, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--threads", type=processes_or_zero, default=0,
                   help="CPU threads of torch (default: all cores; 1 is fastest when other work shares the CPU)")
    p.add_argument("--seed", type=random_seed, help="seed of the split, the weights and the data order (default 0)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (worth it on GPUs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its checkpoint.pt, with the settings recorded in it")
    p.add_argument("--dry-run", action="store_true", help="run one train and one validation batch, write nothing")


def run(args) -> int:
    from core.errors import BlueberryError
    from core.run import RunManifest, dataset_path
    from core.training import fit, train_config_for

    if args.resume:
        manifest = RunManifest.read(args.run)
        changed = [f"--{name.replace('_', '-')} {getattr(args, name)} (the run's: {manifest.train_config.get(name)})"
                   for name in TRAINING_OPTIONS
                   if getattr(args, name) is not None and getattr(args, name) != manifest.train_config.get(name)]
        if changed:
            raise BlueberryError(f"{'; '.join(changed)}: --resume continues with the settings recorded in "
                                 f"{args.run}; leave these out, or train a new run with another --run")
    elif args.beta is not None and args.model != "vae":
        raise BlueberryError("--beta weighs the KL term of the VAE; add --model vae, or leave --beta out")
    data = args.data
    if data is None:
        if not args.resume:
            raise BlueberryError("--data DATASET is required (a folder from `python -m train ingest`)")
        data = dataset_path(args.run, manifest)
    cfg = train_config_for(
        args.config, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, beta=args.beta,
        repeats=args.repeats, patience=args.patience, val_fraction=args.val_fraction, seed=args.seed,
        weighting=args.weighting, device=args.device, num_workers=args.num_workers, threads=args.threads,
        compile=args.compile or None)
    try:
        result = fit(data, args.run, model_kind=args.model, config_name=args.config, train_config=cfg,
                     resume=args.resume, dry_run=args.dry_run)
    except KeyboardInterrupt:
        print(f"\ninterrupted; the last finished epoch is saved in {args.run}/checkpoint.pt. "
              f"Continue with:\n  python -m train fit --run {args.run} --resume", file=sys.stderr)
        return 130
    if args.dry_run and os.environ.get("RANK", "0") == "0":
        print("dry run (nothing written):")
        print(json.dumps(result, indent=2))
    return 0
