"""The training loop, its run directory, resumption, DDP and the ``fit`` command."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.dataset import IngestOptions, write_dataset
from core.models import ModelArgs
from core.run import RunManifest, Split, make_split
from core.training import TrainConfig, fit, load_model
from core.scoring import cell_weights
from train.cli import main

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
TINY_ARGS = dict(n_lines=3, size=16, latent_dim=4, stem_channels=(4,), enc_hidden=(6,), enc_strides=(2,),
                 dec_hidden=(6,), head_channels=(4, 4))


def make_dataset(path: Path, n: int = 16, n_lines: int = 3, size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    flux = rng.normal(size=(n, n_lines, size, size)).astype(np.float32)
    mask = rng.random((n, n_lines, size, size)) < 0.2
    flux[mask] = np.nan
    return write_dataset(
        path, flux=flux, mask=mask, ivar=np.where(mask, 0.0, 1.0).astype(np.float32),
        bpt_map=np.zeros((n, size, size), np.int8),
        catalogue=pd.DataFrame({"galaxy_id": [f"g{i}" for i in range(n)]}),
        options=IngestOptions(lines=tuple(f"L{i}" for i in range(n_lines)), size=size, norm="none"))


@pytest.fixture(scope="module")
def tiny16(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny16")


@pytest.fixture(scope="module")
def tiny32(tmp_path_factory) -> Path:
    """32 x 32 maps, so the named ``demo`` config (what the CLI trains) fits."""
    return make_dataset(tmp_path_factory.mktemp("data") / "tiny32", size=32)


def tiny_fit(data, run, kind="ae", **kw):
    cfg = TrainConfig(**{"epochs": 2, "batch_size": 4, "device": "cpu", **kw.pop("cfg", {})})
    return fit(data, run, model_kind=kind, config_name="demo", train_config=cfg,
               model_args=ModelArgs(kind=kind, **TINY_ARGS), **kw)


def test_make_split_is_deterministic_and_sized():
    a = make_split(100, 0.1, seed=3)
    assert a.dtype == bool and a.shape == (100,) and a.sum() == 10
    assert np.array_equal(a, make_split(100, 0.1, seed=3))
    assert not np.array_equal(a, make_split(100, 0.1, seed=4))
    assert make_split(5, 0.01, 0).sum() == 1  # a tiny survey still validates on one galaxy
    assert make_split(2, 0.9, 0).sum() == 1  # and still trains on one
    assert make_split(10, 0.0, 0).sum() == 0


def test_fit_writes_a_complete_run(tiny16, tmp_path):
    run = tmp_path / "run"
    metrics = tiny_fit(tiny16, run, kind="vae")
    manifest = RunManifest.read(run)
    assert manifest.format == "blueberry-run/1" and manifest.name == "run"
    assert manifest.dataset == str(tiny16.resolve())
    assert manifest.lines == ["L0", "L1", "L2"] and manifest.size == 16 and manifest.norm == "none"
    assert manifest.model == "vae" and manifest.config == "demo"
    assert manifest.model_args["latent_dim"] == 4
    assert manifest.split == Split(val_fraction=0.1, seed=0)
    assert set(manifest.versions) == {"python", "torch", "numpy", "blueberry"}
    assert manifest.metrics == metrics and metrics["epochs_run"] == 2 and metrics["device"] == "cpu"
    assert metrics["galaxies_per_second"] > 0
    assert "fit" in manifest.stages
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns[:4]) == ["epoch", "train_loss", "val_loss", "seconds"]
    assert history["epoch"].tolist() == [1, 2] and np.isfinite(history[["train_loss", "val_loss"]]).all().all()
    assert metrics["best_val_loss"] == history["val_loss"].min()

    payload = torch.load(run / "model.pt", weights_only=True)
    assert set(payload) == {"model_args", "config", "state_dict"}
    model, _ = load_model(run)
    assert not model.training and model.args.kind == "vae"
    # model.pt is the best epoch: its validation loss (the score-weighted error) is what the manifest reports.
    is_val = make_split(16, 0.1, 0)
    flux, mask = np.load(tiny16 / "flux.npy")[is_val], np.load(tiny16 / "mask.npy")[is_val]
    weights = cell_weights(flux, mask, np.load(tiny16 / "ivar.npy")[is_val], manifest.lines)
    x = torch.from_numpy(np.nan_to_num(flux))[:, :, None]  # (B, T, 1, S, S)
    from core.models import kl_divergence, masked_loss
    from core.scoring import MODEL_ERROR
    with torch.no_grad():
        out = model(x)
        rec = masked_loss(out.recon, x, torch.from_numpy(mask)[:, :, None], torch.from_numpy(weights)[:, :, None],
                          MODEL_ERROR)
        val = (rec + 1e-3 * kl_divergence(out.mu, out.logvar)).mean()
    assert float(val) == pytest.approx(metrics["best_val_loss"], rel=1e-5)


class Stop(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(tiny16, tmp_path):
    tiny_fit(tiny16, tmp_path / "straight", kind="vae", cfg={"epochs": 3})

    def die_after_first(epoch, row):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        tiny_fit(tiny16, tmp_path / "broken", kind="vae", cfg={"epochs": 3}, on_epoch_end=die_after_first)
    ckpt = torch.load(tmp_path / "broken" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and len(pd.read_csv(tmp_path / "broken" / "history.csv")) == 1

    seen = []
    tiny_fit(tiny16, tmp_path / "broken", kind="vae", resume=True, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [2, 3]  # continued at the right epoch, with the recorded 3-epoch config

    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "broken" / "checkpoint.pt", weights_only=True)
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    for pa, pb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        for k in pa:
            torch.testing.assert_close(pa[k], pb[k], rtol=0, atol=0)
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"]
    ha, hb = pd.read_csv(tmp_path / "straight" / "history.csv"), pd.read_csv(tmp_path / "broken" / "history.csv")
    assert np.array_equal(ha[["train_loss", "val_loss"]].to_numpy(), hb[["train_loss", "val_loss"]].to_numpy())


def test_early_stopping_keeps_the_best_epoch(tiny16, tmp_path):
    # lr 0 never improves after the first epoch, so patience 1 stops after epoch 2.
    metrics = tiny_fit(tiny16, tmp_path / "run", cfg={"epochs": 10, "lr": 0.0, "patience": 1})
    assert metrics["epochs_run"] == 2 and metrics["best_epoch"] == 1
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["config"]["epoch"] == 1


def test_ctrl_c_keeps_the_last_epoch_and_says_how_to_resume(tiny16, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        [PYTHON, "-c", "import sys; from tests.test_training import _cli_long_fit; _cli_long_fit(*sys.argv[1:])",
         str(tiny16), str(run)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "history.csv").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert proc.poll() is None, "the long fit ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert f"fit --run {run} --resume" in err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] >= 1 and not ckpt["done"]
    assert len(pd.read_csv(run / "history.csv")) == ckpt["epoch"]


def _cli_long_fit(data, run):
    """A long tiny run through the real command path (for the Ctrl-C test)."""
    from core import training

    # A background job of a non-interactive shell starts with SIGINT ignored; a terminal's
    # Ctrl-C is what this test is about, so take the handler Python gives a foreground process.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    real_fit = training.fit

    def fit_tiny(*args, **kw):
        return real_fit(*args, model_args=ModelArgs(kind="ae", **TINY_ARGS), **kw)

    training.fit = fit_tiny
    sys.exit(main(["fit", "--data", data, "--run", run, "--epochs", "500", "--batch-size", "4",
                   "--device", "cpu"]))


def test_two_process_gloo_ddp_epoch(tiny32, tmp_path):
    run = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [str(Path(PYTHON).with_name("torchrun")), "--standalone", "--nproc_per_node=2", "-m", "train", "fit",
         "--data", str(tiny32), "--run-dir", str(run), "--epochs", "1", "--batch-size", "4", "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = RunManifest.read(run)
    assert manifest.metrics["epochs_run"] == 1 and "fit" in manifest.stages
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 1 and np.isfinite(history["val_loss"]).all()
    load_model(run)
    assert proc.stdout.count("epoch 1/1  train") == 1  # only rank 0 reports


def test_fit_dry_run_writes_nothing(tiny32, tmp_path, capsys):
    run = tmp_path / "dry"
    assert main(["fit", "--data", str(tiny32), "--run", str(run), "--dry-run", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert '"batch": [\n    4,\n    3,\n    1,\n    32,\n    32\n  ]' in out
    assert '"train_loss"' in out and '"val_loss"' in out
    assert not run.exists()


def test_fit_errors(tiny32, tmp_path, capsys):
    assert main(["fit", "--data", str(tmp_path / "nope"), "--run", str(tmp_path / "r")]) == 2
    assert "no dataset folder here" in capsys.readouterr().err

    assert main(["fit", "--data", str(tiny32), "--run", str(tmp_path / "r"), "--config", "paper"]) == 2
    assert "64 x 64 maps but the dataset has 32 x 32; use --config demo" in capsys.readouterr().err

    assert main(["fit", "--run", str(tmp_path / "r"), "--resume"]) == 2
    assert "no run here" in capsys.readouterr().err

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "manifest.json").write_text("{}")
    assert main(["fit", "--data", str(tiny32), "--run", str(existing)]) == 2
    assert "a run already exists here; continue it with --resume" in capsys.readouterr().err
    assert (existing / "manifest.json").read_text() == "{}"
