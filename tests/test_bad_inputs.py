"""Bad invocations of ``python -m train``: each ends in a clear error, never a traceback.

Each row of the table is a command line, with the files it needs made once in ``world``.
Every row runs through ``train.cli.main`` in-process (argparse's usage error, SystemExit(2),
is a clean exit) and a few through a real ``python -m train``, so that nothing reaches a
terminal as a traceback. A row passes when the command exits non-zero, prints no
traceback and names the offending argument or file. MAPS files are written with the
helpers of test_maps and test_ingest.
"""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch

from core import maps
from core.dataset import IngestOptions, open_dataset
from core.errors import MapsError
from core.lines import DR15_CHANNELS
from core.models import build_model, model_payload
from core.run import RunManifest
from tests.fakerun import make_fake_run
from tests.test_ingest import blob_galaxy
from tests.test_maps import _galaxy, _hdul, _square_footprint_file, _write
from train.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
N_CUDA = torch.cuda.device_count() if torch.cuda.is_available() else 0
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The inputs every row may name: a finished (fake) run with a model, a survey of one
    galaxy, a file, folders, link loops, and MAPS files that must be refused."""
    w = tmp_path_factory.mktemp("world")
    make_fake_run(w / "run", n=24)
    model = build_model(RunManifest.read(w / "run").model_args)
    torch.save(model_payload(model, {}), w / "run" / "model.pt")
    (w / "survey").mkdir()
    blob_galaxy(w / "survey" / "manga-1-1901-MAPS-SYNTH-GAU.fits.gz", "1-1901")
    (w / "afile").write_text("not a folder\n")
    (w / "adir").mkdir()
    (w / "empty").mkdir()
    (w / "readonly").mkdir(mode=0o555)
    loops = w / "loops"
    loops.mkdir()
    (loops / "a-MAPS.fits.gz").symlink_to("b-MAPS.fits.gz")
    (loops / "b-MAPS.fits.gz").symlink_to("a-MAPS.fits.gz")
    (w / "dangling-MAPS.fits.gz").symlink_to(w / "gone-MAPS.fits.gz")
    # Two links back up: glob.glob's ** followed them, 2^depth paths, for ever.
    (w / "folderloop" / "sub").mkdir(parents=True)
    (w / "folderloop" / "sub" / "up").symlink_to("..")
    (w / "folderloop" / "sub" / "up2").symlink_to("..")

    bad = w / "maps"
    bad.mkdir()
    twice = list(DR15_CHANNELS)
    twice[0] = "Ha-6564"  # the first plane claims to be Ha as well: read first, it would be the wrong one
    _write(_hdul(twice, *_galaxy()), bad / "twice-MAPS.fits")
    _write(_hdul(DR15_CHANNELS, *_galaxy(ny=1, nx=1)), bad / "one-MAPS.fits")
    _write(_hdul(DR15_CHANNELS, *_galaxy(ny=2, nx=2)), bad / "two-MAPS.fits")
    (bad / "speck").mkdir()
    _square_footprint_file(bad / "speck", k=3).rename(bad / "speck-MAPS.fits")
    (bad / "notes-MAPS.fits").write_text("not a FITS file\n" * 200)
    packed = gzip.compress((bad / "twice-MAPS.fits").read_bytes())
    (bad / "cut-MAPS.fits.gz").write_bytes(packed[: len(packed) // 2])
    damaged = bytearray(packed)
    damaged[len(packed) // 2: len(packed) // 2 + 64] = bytes(64)
    (bad / "corrupt-MAPS.fits.gz").write_bytes(bytes(damaged))
    return w


# --------------------------------------------------------------------------------------
# The table: (id, command line, words the output must hold). {w}: the world; {t}: a fresh
# folder for the row's outputs.

BASE = {
    "synth": "synth --out {t}/s --quiet",
    "ingest": "ingest {w}/survey --out {t}/ds --quiet",
    "fit": "fit --data {w}/run/dataset --run {t}/r --device cpu",
    "embed": "embed --run {w}/run --quiet",
    "score": "score --run {w}/run {w}/survey --out {t}/s.csv --quiet",
    "evaluate": "evaluate --run {w}/run",
    "demo": "demo --out {t}/demo",
    "serve": "serve --run {w}/run --dry-run",
    "download": "download --dapall {w}/afile --out {t}/dl --dry-run",
    "annotate": "annotate --run {w}/run {w}/afile --on radec",
    "rank": "rank --run {w}/run --out {t}/r.csv",
}
#: Every numeric option of every command, with values that are zero, negative, NaN, inf,
#: not numbers or out of range for it.
NUMBERS = {
    "synth": {"--n": "0 -1 nan 2.5", "--seed": "-1 4294967296 nan", "--workers": "0 -1 100000",
              "--anomaly-fraction": "-0.1 1.5 nan inf", "--noise": "0 -1 nan inf"},
    "ingest": {"--size": "0 1 3 -32 100000 nan", "--workers": "0 -2 nan", "--dapall": "{w}/nowhere.fits {w}/maps",
               "--drpall": "{w}/nowhere.fits {w}/maps"},
    "fit": {"--epochs": "0 -1 nan", "--batch-size": "0 -4 nan", "--lr": "0 -1 nan inf 2",
            "--beta": "-1 nan inf", "--repeats": "0 -1", "--patience": "0 -1", "--val-fraction": "-0.1 1 2 nan",
            "--num-workers": "-1 100000", "--threads": "-1 100000", "--seed": "-1 nan"},
    "embed": {"--batch-size": "0 -1", "--neighbours": "0 -1 nan", "--flag-pct": "0 100 -5 150 nan", "--seed": "-1",
              "--mixing-rank": "0 -1 nan 1.5"},
    "score": {"--batch-size": "0 -1 nan"},
    "evaluate": {"--seed": "-1 x", "--n-per-kind": "0 -1 nan", "--strengths": "0 -0.5 1.5 nan inf",
                 "--workers": "0 -1 100000", "--keep": "{w}/afile"},
    "rank": {"--seed": "-1 4294967296 x"},
    "demo": {"--n": "0 9 -1", "--seed": "-1", "--epochs": "0 -1", "--workers": "0 -1"},
    "serve": {"--port": "0 -1 65536 nan", "--num-procs": "0 -1 100000"},
    "download": {"--dapall": "{w}/nowhere.fits {w}/maps", "--limit": "0 -1 nan", "--workers": "0 -1 100000",
                 "--retries": "-1 101 nan", "--timeout": "0 -1 nan inf"},
    "annotate": {"--radius": "0 -1 -2arcsec nan inf 2parsec"},
}
NUMERIC_ROWS = [(f"{cmd}{opt}={value}", f"{BASE[cmd]} {opt} {value}", (f"argument {opt}",))
                for cmd, options in NUMBERS.items() for opt, values in options.items() for value in values.split()]

DEVICE_COMMANDS = {"fit": "fit --data {w}/run/dataset --run {t}/r", "embed": BASE["embed"], "score": BASE["score"]}
DEVICES = ["foo", "gpu", "meta", "cuda:x", "cuda:-1", f"cuda:{N_CUDA}"] + ([] if N_CUDA else ["cuda"])
DEVICE_ROWS = [(f"{cmd}--device={dev}", f"{line} --device {dev}", ("--device", dev))
               for cmd, line in DEVICE_COMMANDS.items() for dev in DEVICES]

PATH_ROWS = [
    ("synth-out-is-a-file", "synth --out {w}/afile --n 1", ("afile", "is a file")),
    ("synth-out-under-a-file", "synth --out {w}/afile/sub --n 1", ("afile", "is a file")),
    ("synth-out-empty", "synth --out '' --n 1", ("--out", "empty")),
    ("ingest-out-is-a-file", "ingest {w}/survey --out {w}/afile", ("afile", "is a file")),
    ("demo-out-is-a-file", "demo --out {w}/afile", ("afile", "is a file")),
    ("fit-run-is-a-file", "fit --data {w}/run/dataset --run {w}/afile", ("afile", "is a file")),
    ("score-out-is-a-folder", "score --run {w}/run {w}/survey --out {w}/adir", ("adir", "is a folder")),
    ("score-out-under-a-file", "score --run {w}/run {w}/survey --out {w}/afile/s.csv", ("afile", "is a file")),
    ("ingest-link-loop-folder", "ingest {w}/loops --out {t}/ds", ("loops", "symbolic link loop")),
    ("ingest-link-loop-file", "ingest {w}/loops/a-MAPS.fits.gz --out {t}/ds", ("a-MAPS.fits.gz", "loop")),
    ("ingest-link-loop-glob", "ingest '{w}/loops/*' --out {t}/ds", ("loops", "loop")),
    ("ingest-folder-link-loop-glob", "ingest '{w}/folderloop/**/*MAPS*' --out {t}/ds", ("folderloop",)),
    ("ingest-dangling-link", "ingest {w}/dangling-MAPS.fits.gz --out {t}/ds", ("dangling-MAPS.fits.gz", "no file")),
    ("score-link-loop", "score --run {w}/run {w}/loops --out {t}/s.csv", ("loops", "loop")),
    ("ingest-missing-input", "ingest {w}/nowhere --out {t}/ds", ("nowhere", "no such file")),
    ("ingest-empty-folder", "ingest {w}/empty --out {t}/ds", ("empty", "no MAPS files")),
    ("score-missing-input", "score --run {w}/run {w}/nowhere --out {t}/s.csv", ("nowhere",)),
    ("score-missing-run", "score --run {w}/nowhere {w}/survey --out {t}/s.csv", ("nowhere",)),
    ("fit-missing-data", "fit --data {w}/nowhere --run {t}/r", ("nowhere",)),
    ("fit-data-is-a-file", "fit --data {w}/afile --run {t}/r", ("afile",)),
    ("fit-data-empty-folder", "fit --data {w}/empty --run {t}/r", ("empty",)),
    ("embed-missing-run", "embed --run {w}/nowhere", ("nowhere",)),
    ("embed-run-is-a-file", "embed --run {w}/afile", ("afile",)),
    ("embed-run-empty-folder", "embed --run {w}/empty", ("empty",)),
    ("evaluate-missing-run", "evaluate --run {w}/nowhere", ("nowhere",)),
    ("evaluate-run-empty-folder", "evaluate --run {w}/empty", ("empty",)),
    ("serve-links-not-json", "serve --run {w}/run --dry-run --links {w}/afile", ("--links", "afile", "not a JSON file")),
    ("serve-links-missing", "serve --run {w}/run --dry-run --links {w}/nowhere", ("--links", "nowhere", "cannot read")),
]
if Path("/sys").is_dir() and sys.platform.startswith("linux"):  # nobody, root included, creates folders in sysfs
    PATH_ROWS.append(("synth-out-unwritable-sysfs", "synth --out /sys/blueberry-test --n 1 --quiet", ("/sys",)))
if not IS_ROOT:  # root writes in a read-only folder
    PATH_ROWS.append(("synth-out-unwritable", "synth --out {w}/readonly/s --n 1", ("readonly", "cannot write")))

MAPS_ROWS = [
    (f"{cmd}-{name}", line.format(f="{w}/maps/" + name), (name, *words))
    for name, words in (("twice-MAPS.fits", ("Ha-6564", "more than once", "C01")),
                        ("one-MAPS.fits", ("1 x 1 spaxels",)), ("two-MAPS.fits", ("2 x 2 spaxels",)),
                        ("speck-MAPS.fits", ("footprint is 3 x 3",)), ("notes-MAPS.fits", ("not a readable FITS",)),
                        ("cut-MAPS.fits.gz", ("truncated",)), ("corrupt-MAPS.fits.gz", ("corrupt",)))
    for cmd, line in (("ingest", "ingest {f} --out {{t}}/ds --quiet"),
                      ("score", "score --run {{w}}/run {f} --out {{t}}/s.csv --quiet"))
]

TABLE = NUMERIC_ROWS + DEVICE_ROWS + PATH_ROWS + MAPS_ROWS


def _argv(line: str, world: Path, out: Path) -> list[str]:
    import shlex

    return shlex.split(line.format(w=world, t=out))


def _run_in_process(argv, capsys) -> tuple[int, str]:
    """(exit status, stdout + stderr) of ``main(argv)``; an exception that escapes is a traceback."""
    tb = ""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except Exception:  # what a user would see: the traceback
        code, tb = 1, traceback.format_exc()
    captured = capsys.readouterr()
    return code, captured.out + captured.err + tb


def _check(code, output: str, words) -> None:
    assert code not in (0, None), output
    assert "Traceback" not in output, output
    for word in words:
        assert word in output, f"{word!r} not in:\n{output}"


@pytest.mark.parametrize("line,words", [row[1:] for row in TABLE], ids=[row[0] for row in TABLE])
def test_bad_invocation_is_a_clear_error(world, tmp_path, capsys, line, words):
    argv = _argv(line, world, tmp_path)
    _check(*_run_in_process(argv, capsys), words)


SUBPROCESS_IDS = ("synth--n=0", "fit--lr=nan", "fit--val-fraction=2", f"fit--device=cuda:{N_CUDA}",
                  "score-out-is-a-folder", "ingest-link-loop-folder", "ingest-twice-MAPS.fits")


@pytest.mark.parametrize("row", [row for row in TABLE if row[0] in SUBPROCESS_IDS], ids=lambda row: row[0])
def test_no_traceback_reaches_the_terminal(world, tmp_path, row):
    _, line, words = row
    proc = subprocess.run([sys.executable, "-m", "train", *_argv(line, world, tmp_path)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120)
    _check(proc.returncode, proc.stdout + proc.stderr, words)


def test_the_table_covers_every_numeric_option():
    """A numeric option added to a command without a row here fails this test."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    for name, sub in commands.items():
        numeric = {a.option_strings[0] for a in sub._actions
                   if a.option_strings and a.type is not None and a.option_strings[0] not in ("--out", "--run", "--device", "--links")}
        assert numeric == set(NUMBERS.get(name, {})), name


# --------------------------------------------------------------------------------------
# Nothing accepted turns into nonsense


def test_values_in_range_are_taken_as_given_and_the_bounds_are_refused(capsys):
    parse = build_parser().parse_args
    args = parse(["fit", "--data", "d", "--run", "r", "--val-fraction", "0", "--lr", "1", "--beta", "0",
                  "--threads", "0", "--seed", "4294967295"])
    assert (args.val_fraction, args.lr, args.beta, args.threads, args.seed) == (0.0, 1.0, 0.0, 0, 2**32 - 1)
    assert parse(["fit", "--data", "d", "--run", "r", "--val-fraction", "0.999"]).val_fraction == 0.999
    assert parse(["embed", "--run", "r", "--flag-pct", "99.5"]).flag_pct == 99.5
    assert parse(["synth", "--out", "s", "--anomaly-fraction", "1"]).anomaly_fraction == 1.0
    for argv in (["fit", "--data", "d", "--run", "r", "--val-fraction", "2"],  # once clamped to n - 1 galaxies
                 ["fit", "--data", "d", "--run", "r", "--val-fraction", "1"],
                 ["synth", "--out", "s", "--noise", "nan"]):  # once a survey of NaN maps
        with pytest.raises(SystemExit) as exc:
            parse(argv)
        assert exc.value.code == 2
    assert "--noise: 'nan' is not a finite number" in capsys.readouterr().err


def test_fit_refuses_options_it_would_ignore(world, tmp_path, capsys):
    run = world / "run"  # its manifest records epochs 3
    assert main(["fit", "--run", str(run), "--resume", "--epochs", "99", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert "--epochs 99 (the run's: 3); --lr 0.01 (the run's: 0.001)" in err and "--resume continues" in err
    # The recorded values themselves are fine; this run then has no checkpoint to resume from.
    assert main(["fit", "--run", str(run), "--resume", "--epochs", "3"]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["fit", "--data", str(run / "dataset"), "--run", str(tmp_path / "r"), "--beta", "0.1"]) == 2
    assert "--beta weighs the KL term of the VAE" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_absurd_fluxes_are_masked_and_never_reach_a_score(tmp_path):
    flux, ivar, bits = _galaxy()
    ha = DR15_CHANNELS.index("Ha-6564")
    flux[ha, 18, 20], flux[ha, 18, 21], flux[ha, 17, 20] = 3e38, -2e7, maps.MAX_ABS_FLUX  # the bound is believed
    path = _write(_hdul(DR15_CHANNELS, flux, ivar, bits), tmp_path / "bright-MAPS.fits")
    g = maps.read_maps(path, lines=DR15_CHANNELS)
    assert g.mask[ha, 18, 20] and g.mask[ha, 18, 21] and not g.mask[ha, 17, 20]
    assert g.mask[ha].sum() == (~g.footprint).sum() + 2
    for norm in ("none", "ha_peak"):
        grid = maps.preprocess(path, IngestOptions(size=32, norm=norm)).grid
        assert np.isfinite(grid.flux[~grid.mask]).all() and np.isfinite(grid.ivar).all()
    assert main(["ingest", str(path), "--out", str(tmp_path / "ds"), "--quiet"]) == 0
    ds = open_dataset(tmp_path / "ds")
    assert np.isfinite(np.asarray(ds.flux)[~np.asarray(ds.mask)]).all()
    assert np.abs(np.nan_to_num(np.asarray(ds.flux))).max() < maps.MAX_ABS_FLUX


def test_gzip_bomb_is_refused_quickly_and_recorded(tmp_path, monkeypatch, capsys):
    """A gzip that expands 1000-fold past the limit (a small limit here, so the test stays fast)."""
    monkeypatch.setattr(maps, "MAX_FILE_BYTES", 4 << 20)
    bomb = tmp_path / "manga-1-1-MAPS-bomb.fits.gz"
    with gzip.open(bomb, "wb", compresslevel=9) as fh:
        for _ in range(64):
            fh.write(bytes(1 << 20))  # 64 MiB of zeros, 64 KB on disk
    assert bomb.stat().st_size < 200_000
    t0 = time.perf_counter()
    with pytest.raises(MapsError, match="more than 4 MiB once decompressed"):
        maps.read_maps(bomb)
    assert time.perf_counter() - t0 < 2.0
    assert main(["ingest", str(bomb), "--out", str(tmp_path / "ds"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(bomb) in err and "more than 4 MiB" in err


def test_real_files_sit_far_below_the_size_limit(real_maps_file):
    with gzip.open(real_maps_file) as fh:
        size = len(fh.read())
    assert 20 * size < maps.MAX_FILE_BYTES  # a 5 MB file of 42 x 42 spaxels; the largest maps are 74 x 74


def test_links_back_up_a_folder_neither_hang_nor_repeat_the_search(tmp_path):
    from core.ingest import find_inputs

    (tmp_path / "survey" / "sub").mkdir(parents=True)
    for name in ("up", "up2"):
        (tmp_path / "survey" / "sub" / name).symlink_to("..")
    (tmp_path / "survey" / "sub" / "x-MAPS.fits.gz").touch()
    found = [tmp_path.resolve() / "survey" / "sub" / "x-MAPS.fits.gz"]
    assert find_inputs([tmp_path / "survey"]) == found
    assert find_inputs([f"{tmp_path}/survey/**/*MAPS*"]) == found
