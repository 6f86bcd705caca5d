"""Half-written and damaged state: every reader refuses it with the command that repairs it.

A table of damaged files (truncated, empty, garbage of the same size, bad manifests,
hostile or foreign torch files) against every command that reads them, and kill -9 tests
of ``embed`` and ``ingest``: the folder left behind is refused, the next run removes the
dead writer's temporary files and succeeds, and no ingest worker outlives its parent.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.dataset import open_dataset
from core.errors import BlueberryError, DatasetError, RunError
from core.io import file_stamp, remove_stale_tmp, stamp_files, write_json
from core.lines import DR15_CHANNELS
from core.models import ModelArgs
from core.run import STAGE_OUTPUTS, RunManifest, is_done, mark_stage, open_run
from core.training import TrainConfig, fit
from tests.fakerun import make_fake_run
from tests.test_ingest import blob_galaxy
from train.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ModelArgs(kind="ae", n_lines=3, size=16, latent_dim=16, stem_channels=(4,), enc_hidden=(6,), enc_strides=(2,),
                 dec_hidden=(6,), head_channels=(4, 4))


def _complete_run(root: Path, n: int) -> Path:
    """A fake run (fakerun's embed outputs) with a real tiny model, checkpoint and history, stamped as embed would."""
    run = make_fake_run(root / "run", n=n, n_lines=3, size=16)
    fit(run / "dataset", root / "fit", config_name="demo", model_args=TINY,
        train_config=TrainConfig(epochs=1, batch_size=n, repeats=1, device="cpu"))
    for name in STAGE_OUTPUTS["fit"]:
        shutil.copy2(root / "fit" / name, run / name)
    files = stamp_files(run, (*STAGE_OUTPUTS["embed"], "model.pt"))
    mark_stage(run, "embed", True, files=files, checksums={f: s["sha256"] for f, s in files.items()})
    return run


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("state")
    maps = blob_galaxy(root / "manga-9100-1901-MAPS-SYNTH-GAU.fits.gz", "9100-1901", channels=DR15_CHANNELS)
    return _complete_run(root, n=40), maps


def _hostile(path: Path) -> None:
    class Payload:  # unpickling it would run a shell command; weights_only must refuse it
        def __reduce__(self):
            return (os.system, (f"touch {path}.pwned",))
    torch.save({"model_args": Payload(), "state_dict": {}, "model": Payload()}, path)


def _rewrite_json(change):
    def damage(path: Path) -> None:
        obj = json.loads(path.read_text())
        change(obj)
        path.write_text(json.dumps(obj))
    return damage


DAMAGES = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "empty": lambda p: p.write_bytes(b""),
    "garbage": lambda p: p.write_bytes(np.random.default_rng(0).bytes(p.stat().st_size)),  # same size
}
MANIFEST_DAMAGES = {
    "not json": lambda p: p.write_text("{ this is not json"),
    "wrong types": _rewrite_json(lambda o: o.update(size="big", lines="Ha", stages=[1], options=7, split=3)),
    "missing field": _rewrite_json(lambda o: [o.pop(k, None) for k in ("lines", "split", "n_galaxies")]),
}
TORCH_DAMAGES = {
    "hostile pickle": _hostile,
    "foreign dict": lambda p: torch.save({"weights": torch.zeros(3)}, p),
}

# Which commands read which file, and what they must say. "DS" is the run's dataset folder.
SCORE = ["score", "--run", "RUN", "MAPS", "--out", "OUT/scores.csv", "--device", "cpu", "--quiet"]
EVALUATE = ["evaluate", "--run", "RUN"]
EMBED = ["embed", "--run", "RUN", "--device", "cpu", "--quiet"]
FIT = ["fit", "--data", "DS", "--run", "OUT/new", "--device", "cpu", "--epochs", "1"]
RESUME = ["fit", "--data", "DS", "--run", "RUN", "--resume", "--device", "cpu"]
READERS = {  # file -> (damages, commands, repair command named)
    **{f: (DAMAGES, ["open_run", SCORE, EVALUATE], "python -m train embed") for f in STAGE_OUTPUTS["embed"]},
    "manifest.json": ({**DAMAGES, **MANIFEST_DAMAGES}, ["open_run", SCORE, EVALUATE, EMBED, RESUME], "python -m train fit"),
    "model.pt": ({**DAMAGES, **TORCH_DAMAGES}, [SCORE, EMBED], "python -m train fit"),
    "checkpoint.pt": ({**DAMAGES, **TORCH_DAMAGES}, [RESUME], "python -m train fit"),
    **{f"dataset/{f}": (DAMAGES, ["open_run", SCORE, EVALUATE, EMBED, FIT], "python -m train ingest")
       for f in ("catalogue.parquet", "flux.npy", "mask.npy", "ivar.npy", "bpt_map.npy")},
    "dataset/manifest.json": ({**DAMAGES, **MANIFEST_DAMAGES}, ["open_run", SCORE, EVALUATE, EMBED, FIT],
                              "python -m train ingest"),
}
# Data files are damaged twice: with the stamps their stage recorded, and without (runs and
# datasets written before stamps existed), where the readers themselves must catch the damage.
CASES = [(f, d, stamped) for f, (damages, _, _) in READERS.items() for d in damages
         for stamped in ((True, False) if f.endswith((".npy", ".parquet")) else (True,))]


def _refused(command, run: Path, out: Path, maps: Path, capsys) -> str:
    """Run ``command`` on the damaged run; return its error message (it must fail cleanly)."""
    if command == "open_run":
        with pytest.raises(BlueberryError) as info:
            open_run(run)
        return str(info.value)
    names = {"RUN": str(run), "DS": str(run / "dataset"), "MAPS": str(maps)}
    argv = [names.get(a, a.replace("OUT", str(out))) for a in command]
    capsys.readouterr()
    assert main(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


@pytest.mark.parametrize("name,damage,stamped", CASES,
                         ids=[f"{f}-{d}" + ("" if s else "-unstamped") for f, d, s in CASES])
def test_damaged_file_is_refused_naming_it(pristine, name, damage, stamped, tmp_path, capsys):
    source, maps = pristine
    run = tmp_path / "run"
    shutil.copytree(source, run)  # copy2 keeps the times, as cp -a does
    if not stamped:
        for manifest in (run / "manifest.json", run / "dataset" / "manifest.json"):
            _rewrite_json(lambda o: o.pop("files"))(manifest)
    damages, commands, repair = READERS[name]
    damages[damage](run / name)
    for command in commands:
        message = _refused(command, run, tmp_path, maps, capsys)
        assert Path(name).name in message and repair in message, (command, message)
    assert not Path(f"{run / name}.pwned").exists()


def test_a_copied_run_opens_and_a_changed_file_of_the_same_size_does_not(pristine, tmp_path):
    source, _ = pristine
    run = tmp_path / "copy"
    shutil.copytree(source, run, copy_function=shutil.copy)  # new times: the sha256 decides
    assert len(open_run(run).catalogue) == 40
    recon = np.load(run / "recon.npy")
    recon[3] += 1.0
    np.save(run / "recon.npy", recon)
    with pytest.raises(RunError, match=r"recon.npy: not the file `embed` recorded.*python -m train embed"):
        open_run(run)


def test_stages_out_of_step_are_refused(pristine, tmp_path, capsys):
    source, _ = pristine
    run = tmp_path / "run"
    shutil.copytree(source, run)
    assert open_run(run).evaluation is not None
    # an embed that started (its stamp removed) and did not finish
    mark_stage(run, "embed", False)
    with pytest.raises(RunError, match=f"embed stage did not finish.*python -m train embed --run {run}"):
        open_run(run)
    # an evaluation of another catalogue is not shown
    evaluated = replace(RunManifest.read(run).evaluation, catalogue_sha256="one catalogue")
    mark_stage(run, "embed", True, checksums={"catalogue.parquet": "another"}, evaluation=evaluated)
    assert open_run(run).evaluation is None
    # embed refuses a model whose training did not finish
    mark_stage(run, "fit", False)
    assert main(["embed", "--run", str(run), "--device", "cpu"]) == 2
    assert f"python -m train fit --run {run} --resume" in capsys.readouterr().err


def test_a_damaged_evaluation_is_not_done(pristine, tmp_path):
    source, _ = pristine
    run = tmp_path / "run"
    shutil.copytree(source, run)
    write_json(run / "evaluation.json", {"tasks": []})
    evaluation = RunManifest.read(run).evaluation
    mark_stage(run, "evaluate", True, files={**RunManifest.read(run).files, "evaluation.json":
                                            file_stamp(run / "evaluation.json")},
               evaluation=replace(evaluation, catalogue_sha256=RunManifest.read(run).checksums["catalogue.parquet"]))
    assert is_done(run, "evaluate")
    DAMAGES["truncated"](run / "evaluation.json")
    assert not is_done(run, "evaluate")  # `demo` runs evaluate again instead of reading it


def test_stale_tmp_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".recon.npy.pid{dead.pid}.abc123.tmp"
    live = tmp_path / f".recon.npy.pid{os.getppid()}.abc123.tmp"  # the test runner's parent lives
    mine = tmp_path / f".latents.npy.pid{os.getpid()}.x.tmp"  # an earlier process with this pid
    other = tmp_path / ".notes.tmp"  # not one of ours
    for p in (stale, live, mine, other):
        p.write_bytes(b"x")
    assert sorted(remove_stale_tmp(tmp_path)) == sorted([stale, mine])
    assert live.exists() and other.exists()


# ---------------------------------------------------------------------------------------
# kill -9


def _start(argv, log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "train", *argv], cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"finished before {what}"
        assert time.monotonic() < end, f"no {what} after {timeout} s"
        time.sleep(0.005)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def _tmp_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob(".*.tmp"))


def _cli_refuses(argv, repair: str) -> None:
    """The command fails in its own process: non-zero status, the repair command, no traceback."""
    done = subprocess.run([sys.executable, "-m", "train", *argv], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2 and "Traceback" not in done.stderr and repair in done.stderr, done.stderr


def test_embed_killed_is_refused_then_repaired(tmp_path):
    run = _complete_run(tmp_path, n=300)
    catalogue_before = (run / "catalogue.parquet").read_bytes()
    log = tmp_path / "embed.log"
    repair = f"python -m train embed --run {run}"

    # Killed during the UMAP: a new recon.npy beside the old catalogue, the case.
    proc = _start(["embed", "--run", str(run), "--device", "cpu", "--batch-size", "4"], log)
    _wait_for(lambda: "embed: UMAP of" in log.read_text(), proc, "UMAP line")
    _kill(proc)
    assert (run / "catalogue.parquet").read_bytes() == catalogue_before
    assert "embed" not in RunManifest.read(run).stages
    with pytest.raises(RunError, match=f"embed stage did not finish.*{repair}"):
        open_run(run)
    _cli_refuses(["score", "--run", str(run), str(run), "--out", str(tmp_path / "s.csv"), "--device", "cpu"], repair)
    _cli_refuses(["evaluate", "--run", str(run)], repair)

    # Killed while reconstructing: its temporary recon.npy stays behind.
    proc = _start(["embed", "--run", str(run), "--device", "cpu", "--batch-size", "1", "--quiet"], log)
    _wait_for(lambda: list(run.glob(".recon.npy.pid*.tmp")), proc, "temporary recon.npy")
    _kill(proc)
    assert list(run.glob(".recon.npy.pid*.tmp"))
    with pytest.raises(RunError, match=repair):
        open_run(run)

    assert main(["embed", "--run", str(run), "--device", "cpu", "--quiet"]) == 0
    assert not _tmp_files(run) and is_done(run, "embed")
    assert len(open_run(run).catalogue) == 300


def _children(pid: int) -> list[int]:
    """Live descendants of ``pid``, from /proc (no psutil)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_ingest_killed_is_refused_leaves_no_worker_and_reruns_identically(tmp_path):
    src = tmp_path / "maps"
    src.mkdir()
    for i in range(24):
        blob_galaxy(src / f"manga-95{i:02d}-1901-MAPS-SYNTH-GAU.fits.gz", f"95{i:02d}-1901", seed=i)
    out, log = tmp_path / "ds", tmp_path / "ingest.log"
    argv = ["ingest", str(src), "--out", str(out), "--size", "16", "--workers", "1", "--quiet"]
    assert main(argv) == 0
    before = {p.name for p in (out / ".parts").iterdir()}

    # A re-ingest with another normalisation, killed once its workers have written a part.
    proc = _start([*argv[:-3], "--workers", "2", "--quiet", "--norm", "asinh"], log)
    workers: list[int] = []

    def working():
        workers[:] = _children(proc.pid) or workers
        return bool({p.name for p in (out / ".parts").glob("*.npz")} - before)

    _wait_for(working, proc, "new part")
    _kill(proc)
    assert workers, "the ingest had no worker processes"
    end = time.monotonic() + 10
    while any(map(_alive, workers)) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(map(_alive, workers)), "ingest workers outlived their parent"

    with pytest.raises(DatasetError, match="ingest did not finish.*python -m train ingest"):
        open_dataset(out)
    _cli_refuses(["fit", "--data", str(out), "--run", str(tmp_path / "run"), "--device", "cpu"],
                 "python -m train ingest")

    assert main([*argv, "--norm", "asinh"]) == 0
    assert not _tmp_files(out)
    straight = tmp_path / "straight"
    assert main(["ingest", str(src), "--out", str(straight), "--size", "16", "--workers", "1", "--quiet",
                 "--norm", "asinh"]) == 0
    for name in ("flux.npy", "mask.npy", "ivar.npy", "bpt_map.npy"):
        assert (out / name).read_bytes() == (straight / name).read_bytes(), name
    pd.testing.assert_frame_equal(open_dataset(out).catalogue, open_dataset(straight).catalogue)
    assert open_dataset(out).norm == "asinh"


@pytest.mark.parametrize("name,damage", [("recon.npy", "truncated"), ("catalogue.parquet", "garbage"),
                                         ("dataset/manifest.json", "wrong types"), ("dataset/flux.npy", "empty")])
def test_the_app_shows_its_error_page_for_a_damaged_run(pristine, name, damage, tmp_path):
    from dashboard.app import create_app

    source, _ = pristine
    run = tmp_path / "run"
    shutil.copytree(source, run)
    READERS[name][0][damage](run / name)
    text = str(create_app(run).objects[1].object)
    assert Path(name).name in text and "python -m train" in text, text


def test_a_reingest_that_dies_after_its_arrays_leaves_a_refused_dataset(tmp_path, monkeypatch):
    import core.ingest

    src = tmp_path / "maps"
    src.mkdir()
    for i in range(3):
        blob_galaxy(src / f"manga-96{i:02d}-1901-MAPS-SYNTH-GAU.fits.gz", f"96{i:02d}-1901", seed=i)
    out = tmp_path / "ds"
    core.ingest.ingest([src], out, core.ingest.IngestOptions(size=16), workers=1, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the arrays hold the new normalisation, the catalogue the old

    monkeypatch.setattr(core.ingest, "save_parquet", killed)
    with pytest.raises(KeyboardInterrupt):
        core.ingest.ingest([src], out, core.ingest.IngestOptions(size=16, norm="asinh"), workers=1, progress=False)
    with pytest.raises(DatasetError, match="ingest did not finish.*python -m train ingest"):
        open_dataset(out)
