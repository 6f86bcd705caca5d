"""The training loop: single process, or DistributedDataParallel under ``torchrun``.

``fit`` trains an AE or VAE on a dataset folder into a run directory::

    runs/<name>/
      manifest.json   core.run.RunManifest: dataset, lines, size, norm, model, config,
                      model_args, train_config, split, versions, parameters, metrics, stages
      model.pt        the best model so far (lowest validation loss): {"model_args", "config",
                      "state_dict"}; core.models.load_model rebuilds it
      checkpoint.pt   the full training state after the last finished epoch, for --resume
      history.csv     epoch, train_loss, val_loss, seconds, lr

Every file is written atomically, so a kill at any moment leaves the last finished epoch
on disk, and ``resume=True`` continues from it with the same optimiser and scheduler
state, the same data order and the same random draws: an interrupted run ends with the
weights an uninterrupted one would have. Random streams are re-seeded from
``(seed, epoch, rank)`` at the start of every epoch (data order, orientations, VAE noise),
which is what makes resumption exact, also across DDP ranks and loader workers.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every rank trains on its shard of the data
(``DistributedSampler``), validation losses are summed across ranks, and only rank 0
writes files and draws the progress bar.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import signal
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from core.dataset import open_dataset
from core.errors import RunError, first_line
from core.io import atomic_path, remove_stale_tmp
from core.models import (
    ConfigError, ModelArgs, as_model_args, autocast, build_model, kl_divergence, load_model, masked_loss, model_args_for, model_payload, prepare_model,
    read_torch_file, resolve_device,
)
from core.run import RunManifest, Split, mark_stage
from core.scoring import MODEL_ERROR
from core.torchdata import WEIGHTS, MapsDataset

# load_model is re-exported: it reads the model.pt this module writes.
__all__ = ["TrainConfig", "TRAIN_DEFAULTS", "train_config_for", "fit", "load_model"]

#: What a checkpoint.pt holds besides the loop's state (the ``state`` dict of ``_fit``).
CHECKPOINT_KEYS = ("model_kind", "config_name", "model_args", "train_config", "model", "optimizer", "scheduler")


@dataclass
class TrainConfig:
    epochs: int = 30  # upper bound on epochs; early stopping may end sooner
    batch_size: int = 32  # galaxies per optimiser step (per rank under DDP)
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule (AdamW)
    weight_decay: float = 1e-4  # AdamW decoupled weight decay
    beta: float = 1e-3  # VAE only: loss = weighted masked reconstruction loss + beta * KL (summed over latent dims)
    augment: bool = True  # random dihedral orientation (rotations and flips) of every item
    repeats: int = 3  # orientations of each galaxy per epoch (the paper's "3x")
    val_fraction: float = 0.1  # share of galaxies held out for validation and early stopping
    patience: int = 5  # stop after this many epochs without a better validation loss
    seed: int = 0  # seeds the split, the initial weights, the data order and the VAE noise
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    compile: bool = False  # torch.compile the model (pays off on GPUs for long runs)
    # Loss weight of each cell: none (plain squared error, as the paper) | ivar | score (the
    # anomaly score's own weights and error model, so training minimises the score: demo AUC 0.96 vs 0.93)
    weighting: str = "score"
    num_workers: int = 0  # DataLoader worker processes (0 = load in the training process)
    threads: int = 0  # CPU threads of torch (0 = its default); 1 is fastest on a CPU shared with other work
    grad_clip: float = 1.0  # clip the global gradient norm (ConvLSTMs can spike early on)


#: Training defaults of the named model configurations (``--config``).
TRAIN_DEFAULTS: dict[str, dict] = {
    # Sized to the CPU budget: minutes for the 2,000-galaxy demo survey on 2 cores. 4 epochs, not 8: ~2 min
    # less for the same detection (with the three detectors, AP 0.852 against 0.851 with 5; injection's median
    # kind 91.2 against 90.9; benchmarks/README.md, "Six epochs", "Five epochs, nine for the network" and "A third
    # detector"). 3 epochs in batches of 16, not 4 of 32: 1.5 times the steps in ~15 % less time, and ordinary
    # galaxies fitted as well as 5 epochs of 32 did (32.1 against 44.9, against the noise; "session 32").
    "demo": dict(epochs=3, batch_size=16, lr=3e-3, repeats=1, patience=4),
    "paper": dict(epochs=100, batch_size=32, lr=1e-3, repeats=3, patience=10),
}


def train_config_for(config_name: str, **overrides) -> TrainConfig:
    """The training defaults of a named configuration with ``overrides`` (None values ignored)."""
    base = TRAIN_DEFAULTS.get(config_name, {})
    return TrainConfig(**{**base, **{k: v for k, v in overrides.items() if v is not None}})


# ---------------------------------------------------------------------------------------
# Distributed helpers


@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def sum(self, values: list[float], device) -> list[float]:
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()


def _init_distributed(device_name: str) -> tuple[_Dist, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), resolve_device(device_name)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
    return _Dist(rank=rank, world=world, local_rank=local_rank), device


def _seed_everything(seed: int, epoch: int, rank: int) -> None:
    torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


# ---------------------------------------------------------------------------------------
# The loop


def _versions() -> dict:
    try:
        blueberry = importlib.metadata.version("blueberry-ifs")
    except importlib.metadata.PackageNotFoundError:
        blueberry = "unknown"
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "blueberry": blueberry}


def _loss_weights(cfg: TrainConfig) -> str | None:
    """The :class:`MapsDataset` ``weights`` of ``cfg.weighting`` ("none": no weights)."""
    weights = None if cfg.weighting == "none" else cfg.weighting
    if weights not in WEIGHTS:
        raise ConfigError(f"weighting {cfg.weighting!r}: expected none, ivar or score")
    return weights


def _batch_loss(model, batch, device, cfg: TrainConfig, kind: str):
    """Per-galaxy losses (B,) of one batch: (objective, reconstruction term), and the output."""
    flux, mask = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
    weights = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
    with autocast(device):
        out = model(flux)
    rec = masked_loss(out.recon, flux, mask, weights, MODEL_ERROR if cfg.weighting == "score" else 0.0)
    loss = rec + cfg.beta * kl_divergence(out.mu, out.logvar) if kind == "vae" else rec
    return loss, rec, out


def _validate(model, loader, device, cfg, kind, dd: _Dist) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            loss, _, _ = _batch_loss(model, batch, device, cfg, kind)
            total += float(loss.sum())
            count += loss.numel()
    total, count = dd.sum([total, count], device)
    return total / count if count else math.nan


def _write_history(run_path: Path, history: list[dict]) -> None:
    with atomic_path(run_path / "history.csv") as tmp:
        pd.DataFrame(history, columns=["epoch", "train_loss", "val_loss", "seconds", "lr"]).to_csv(tmp, index=False)


@contextlib.contextmanager
def _interrupts_deferred():
    """Hold a Ctrl-C that arrives inside the block until the block has finished."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _save_checkpoint(run_path: Path, state: dict) -> None:
    with atomic_path(run_path / "checkpoint.pt") as tmp:
        torch.save(state, tmp)


def _save_model(run_path: Path, model, meta: dict) -> None:
    with atomic_path(run_path / "model.pt") as tmp:
        torch.save(model_payload(model, meta), tmp)


def _restart(run_path: Path) -> str:
    return (f"it cannot be resumed: train again in a new run (`python -m train fit --data DATASET --run NEW_RUN`), "
            f"or remove {run_path} first")


def _check_run_path(run_path: Path, resume: bool) -> None:
    started = (run_path / "manifest.json").is_file() or (run_path / "checkpoint.pt").is_file()
    if resume and not (run_path / "checkpoint.pt").is_file():
        raise RunError(f"{run_path}: nothing to resume (no checkpoint.pt); start it without --resume")
    if not resume and started:
        raise RunError(f"{run_path}: a run already exists here; continue it with --resume, "
                       f"or choose a new --run name (nothing was overwritten)")
    if not resume and run_path.exists() and not run_path.is_dir():
        raise RunError(f"{run_path}: exists and is not a directory")


def fit(data_path, run_path, model_kind: str = "ae", config_name: str = "demo",
        train_config: TrainConfig | None = None, resume: bool = False, dry_run: bool = False,
        on_epoch_end=None, model_args: ModelArgs | dict | None = None) -> dict:
    """Train a ``model_kind`` ("ae" | "vae") of the named ``config_name`` on ``data_path``.

    Returns the run's metrics (``best_val_loss``, ``best_epoch``, ``epochs_run``,
    ``fit_seconds``, ``device``, ``galaxies_per_second``); with ``dry_run`` one train and
    one validation batch run, nothing is written, and a description of the shapes and
    losses is returned instead. ``resume`` continues ``run_path`` from its checkpoint with
    the configuration recorded there (``train_config`` then only chooses the device, the
    loader workers and the CPU threads). ``model_args`` replaces the named architecture (its ``kind``,
    ``n_lines`` and ``size`` must match). ``on_epoch_end(epoch, row)`` is called on rank 0 after each
    epoch's files are written (epochs count from 1). A KeyboardInterrupt propagates after
    the last finished epoch is safely on disk.
    """
    data_path, run_path = Path(data_path).resolve(), Path(run_path)
    data = open_dataset(data_path)
    cfg = train_config or train_config_for(config_name)
    ckpt = None
    if resume and not dry_run:
        _check_run_path(run_path, resume=True)
        ckpt = read_torch_file(run_path / "checkpoint.pt", CHECKPOINT_KEYS, _restart(run_path))
        model_kind, config_name, model_args = ckpt["model_kind"], ckpt["config_name"], ckpt["model_args"]
        try:
            cfg = replace(TrainConfig(**ckpt["train_config"]), device=cfg.device, num_workers=cfg.num_workers,
                          threads=cfg.threads)
        except TypeError as exc:
            raise RunError(f"{run_path / 'checkpoint.pt'}: its train_config does not fit ({exc}); "
                           f"{_restart(run_path)}") from None
    elif not dry_run:
        _check_run_path(run_path, resume=False)

    if model_args is None:
        model_args = model_args_for(config_name, model_kind, n_lines=len(data.lines), size=data.size)
    else:
        model_args = as_model_args(model_args)
        wanted = (model_kind, len(data.lines), data.size)
        if (model_args.kind, model_args.n_lines, model_args.size) != wanted:
            raise ConfigError(f"model_args (kind, n_lines, size) = {(model_args.kind, model_args.n_lines, model_args.size)}"
                              f" do not fit {wanted} of {data_path}")
    dd, device = _init_distributed(cfg.device)
    try:
        dd.barrier()  # every rank has checked the run directory before rank 0 writes into it
        return _fit(data, data_path, run_path, model_kind, config_name, model_args, cfg, ckpt, dry_run,
                    on_epoch_end, dd, device)
    finally:
        if dd.active and dist.is_initialized():
            dist.destroy_process_group()


def _fit(data, data_path, run_path, model_kind, config_name, model_args, cfg, ckpt, dry_run, on_epoch_end,
         dd: _Dist, device) -> dict:
    n = len(data)
    split = Split(val_fraction=cfg.val_fraction, seed=cfg.seed)
    is_val = split.mask(n)
    train_idx, val_idx = np.flatnonzero(~is_val), np.flatnonzero(is_val)

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = prepare_model(build_model(model_args), device)
    net = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if dd.active else model
    if cfg.compile:
        net = torch.compile(net)

    train_ds = MapsDataset(data, train_idx, augment=cfg.augment, repeats=cfg.repeats,
                           weights=_loss_weights(cfg), seed=cfg.seed)
    sampler = DistributedSampler(train_ds, num_replicas=dd.world, rank=dd.rank, shuffle=True, seed=cfg.seed)
    loader_kw = dict(num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                     persistent_workers=cfg.num_workers > 0)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, **loader_kw)
    # Each rank validates a disjoint slice (no padding duplicates); the sums are all-reduced.
    val_ds = MapsDataset(data, val_idx[dd.rank::dd.world], weights=_loss_weights(cfg))
    val_loader = DataLoader(val_ds, batch_size=2 * cfg.batch_size, shuffle=False, **loader_kw)

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs * len(train_loader),
                                                pct_start=0.15)

    if dry_run:
        return _dry_run(net, model, opt, sched, train_loader, val_loader, device, cfg, model_kind, n,
                        len(train_idx), len(val_idx), dd)

    meta = {"config_name": config_name, "model_kind": model_kind, "dataset": str(data_path),
            "train_config": asdict(cfg)}
    state = {"epoch": 0, "best_val_loss": math.inf, "best_epoch": 0, "bad_epochs": 0, "history": [],
             "fit_seconds": 0.0, "train_seconds": 0.0, "samples": 0, "done": False}
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            state.update({k: ckpt[k] for k in state})
        except (TypeError, ValueError, RuntimeError, KeyError) as exc:
            raise RunError(f"{run_path / 'checkpoint.pt'}: the saved state does not fit the model "
                           f"({first_line(exc)}); {_restart(run_path)}") from None
        if dd.main and not state["done"]:
            mark_stage(run_path, "fit", False)  # model.pt will change: embed must wait for the end
    elif dd.main:
        run_path.mkdir(parents=True, exist_ok=True)
        RunManifest(
            name=run_path.name, dataset=str(data_path), lines=list(data.lines), size=data.size, norm=data.norm,
            model=model_kind, config=config_name, model_args=asdict(model_args), train_config=asdict(cfg),
            split=split, versions=_versions(), n_train=len(train_idx), n_val=len(val_idx),
            parameters=sum(p.numel() for p in model.parameters())).write(run_path)
    if dd.main:
        remove_stale_tmp(run_path)  # what a killed fit was writing

    def checkpoint():
        _save_checkpoint(run_path, {
            **meta, **state, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "model_args": asdict(model_args)})

    if dd.main and ckpt is None:
        checkpoint()  # so that an interrupt during the first epoch can resume too
    dd.barrier()

    from tqdm.auto import tqdm

    if state["done"] and dd.main:
        tqdm.write(f"{run_path}: training already finished (epoch {state['epoch']}); nothing to resume")
    started = time.perf_counter()
    last_epoch = state["epoch"] if state["done"] else cfg.epochs
    for epoch in range(state["epoch"], last_epoch):
        t0 = time.perf_counter()
        _seed_everything(cfg.seed, epoch, dd.rank)
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        net.train()
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
                   disable=not dd.main, mininterval=1.0, dynamic_ncols=True)
        for batch in bar:
            loss, _, _ = _batch_loss(net, batch, device, cfg, model_kind)
            mean = loss.mean()
            opt.zero_grad(set_to_none=True)
            mean.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            sched.step()
            total += float(loss.detach().sum())
            count += loss.numel()
            bar.set_postfix(loss=f"{total / count:.4g}", refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - t0
        total, count = dd.sum([total, count], device)
        train_loss = total / count
        val_loss = _validate(model, val_loader, device, cfg, model_kind, dd) if len(val_idx) else math.nan
        seconds = time.perf_counter() - t0

        state["epoch"] = epoch + 1
        state["samples"] += int(count)
        state["train_seconds"] += train_seconds
        state["fit_seconds"] += seconds
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "seconds": round(seconds, 3),
               "lr": sched.get_last_lr()[0]}
        state["history"].append(row)
        monitored = val_loss if len(val_idx) else train_loss
        improved = monitored < state["best_val_loss"]
        if improved:
            state.update(best_val_loss=monitored, best_epoch=epoch + 1, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        stop = state["bad_epochs"] >= cfg.patience
        state["done"] = stop or epoch + 1 == cfg.epochs
        if dd.main:
            with _interrupts_deferred():  # the epoch's three files agree with each other
                if improved:
                    _save_model(run_path, model, {**meta, "epoch": epoch + 1, "val_loss": monitored})
                checkpoint()
                _write_history(run_path, state["history"])
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  train {train_loss:.5g}  val {val_loss:.5g}  "
                       f"{seconds:.1f} s{'  *' if improved else ''}")
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, row)
        dd.barrier()
        if stop:
            if dd.main:
                tqdm.write(f"early stop: no better validation loss for {cfg.patience} epochs "
                           f"(best {state['best_val_loss']:.5g} at epoch {state['best_epoch']})")
            break

    metrics = _metrics(state, device)
    if dd.main:
        mark_stage(run_path, "fit", True, metrics=metrics)
        tqdm.write(f"trained in {time.perf_counter() - started:.0f} s; best model (epoch {state['best_epoch']}) "
                   f"in {run_path / 'model.pt'}")
    return metrics


def _metrics(state: dict, device) -> dict:
    return {"best_val_loss": state["best_val_loss"], "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"], "fit_seconds": round(state["fit_seconds"], 2), "device": str(device),
            "galaxies_per_second": round(state["samples"] / state["train_seconds"], 2)
            if state["train_seconds"] else None}


def _dry_run(net, model, opt, sched, train_loader, val_loader, device, cfg, kind, n, n_train, n_val,
             dd: _Dist) -> dict:
    net.train()
    batch = next(iter(train_loader))
    loss, rec, out = _batch_loss(net, batch, device, cfg, kind)
    opt.zero_grad(set_to_none=True)
    loss.mean().backward()
    opt.step()
    sched.step()
    info = {"galaxies": n, "n_train": n_train, "n_val": n_val, "batch": list(batch[0].shape),
            "recon": list(out.recon.shape), "latent": list(out.mu.shape),
            "parameters": sum(p.numel() for p in model.parameters()), "train_loss": float(loss.detach().mean()),
            "device": str(device)}
    if len(val_loader):
        model.eval()
        with torch.no_grad():
            vloss, _, _ = _batch_loss(model, next(iter(val_loader)), device, cfg, kind)
        info["val_loss"] = float(vloss.mean())
    return info

