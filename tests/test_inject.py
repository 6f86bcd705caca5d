"""The injection benchmark (`train evaluate --inject`, core.inject) on a tiny synthetic run."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.embed import embed_run
from core.errors import BlueberryError
from core.inject import (CONTROL, InjectConfig, inject_run, measured, median_interval, read_injection, summarise,
                         survey_recipe)
from core.ingest import IngestOptions, ingest
from core.io import read_json
from core.run import INJECTION_FILE, is_done, open_run
from core.synth import generate_survey
from core.training import fit, train_config_for
from train.cli import main

SIZE = 16
TINY = dict(kind="ae", n_lines=19, size=SIZE, latent_dim=8, stem_channels=(4, 8), enc_hidden=(8,),
            enc_strides=(1,), dec_hidden=(8,), head_channels=(8, 4))
SURVEY_SEED = 5
SMALL = InjectConfig(kinds=("bright_knot", "shifted_red"), strengths=(0.5, 1.0), n_per_kind=2, seed=11)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 24-galaxy synthetic survey (with its synth.json), ingested, trained for an epoch and embedded."""
    root = tmp_path_factory.mktemp("inject")
    generate_survey(root / "survey", 24, SURVEY_SEED, workers=1, progress=False)
    ingest([root / "survey"], root / "ds", IngestOptions(size=SIZE), workers=1, progress=False)
    fit(root / "ds", root / "run", model_args=TINY,
        train_config=train_config_for("demo", epochs=1, batch_size=8, device="cpu"))
    embed_run(root / "run", batch_size=12, device="cpu", k=5, seed=0, progress=False)
    return root / "run"


def test_the_recipe_is_the_surveys(run):
    recipe = survey_recipe(open_run(run))
    assert recipe["seed"] == SURVEY_SEED and recipe["release"] == "dr15" and recipe["source"].endswith("synth.json")


def test_inject_writes_injection_json_and_stamps_the_run(run, tmp_path):
    result = inject_run(run, SMALL, device="cpu", progress=False, keep=tmp_path / "maps")
    on_disk = read_json(run / INJECTION_FILE)
    assert on_disk["headline"] == result["headline"]
    # 4 fresh galaxies, each untouched and at two strengths: 12 real MAPS files, all scored
    assert result["n_galaxies"] == 12 and len(list((tmp_path / "maps").glob("*.fits.gz"))) == 12
    assert not result["skipped"]
    assert [(r["kind"], r["strength"], r["n"]) for r in result["rows"]] == [
        (CONTROL, 0.0, 4), ("bright_knot", 0.5, 2), ("bright_knot", 1.0, 2), ("shifted_red", 0.5, 2),
        ("shifted_red", 1.0, 2)]
    # the score and its detectors
    assert result["scores"] == ["anomaly_score", "score_census", "score_consistency", "score_mixing", "score_recon",
                                "score_sharp"]
    for row in result["rows"]:
        for name in result["scores"]:
            cell = row[name]
            assert 0 <= cell["median_pct"] <= 100 and 0 <= cell["flagged"] <= 1 and 0 <= cell["untouched_pct"] <= 100
    head = result["headline"]["anomaly_score"]
    assert head["strength"] == 0.5 and head["control_pct"] == result["rows"][0]["anomaly_score"]["median_pct"]
    # the perturbed galaxies are the control's galaxies: the same indices, other scores
    gal = pd.DataFrame(result["galaxies"])
    ctrl = gal[gal.kind == CONTROL].set_index("index")["anomaly_score"]
    knot = gal[(gal.kind == "bright_knot") & (gal.strength == 1.0)].set_index("index")["anomaly_score"]
    assert set(knot.index) <= set(ctrl.index) and not np.allclose(knot, ctrl[knot.index])
    assert is_done(run, "inject")
    manifest = open_run(run).manifest
    assert manifest.injection.median_pct == head["median_pct"] and manifest.injection.n_kinds == 2
    assert read_injection(open_run(run))["headline"] == result["headline"]


def test_inject_is_deterministic_for_a_seed(run):
    one = InjectConfig(kinds=("stripe",), strengths=(1.0,), n_per_kind=1, seed=3)
    first = inject_run(run, one, device="cpu", progress=False)["galaxies"]
    again = inject_run(run, one, device="cpu", progress=False)["galaxies"]
    assert [g["anomaly_score"] for g in first] == pytest.approx([g["anomaly_score"] for g in again], rel=1e-5)


def test_the_surveys_own_seed_is_refused(run):
    with pytest.raises(BlueberryError, match="seed of the run's own survey"):
        inject_run(run, InjectConfig(kinds=("stripe",), n_per_kind=1, seed=SURVEY_SEED), progress=False)


def test_component_columns_are_measured_against_the_catalogue():
    catalogue = pd.DataFrame({"anomaly_score": np.arange(100.0), "score_recon": np.arange(100.0) * 2})
    rows = [{"source": f"f{i}", "index": i % 2, "galaxy_id": f"g{i % 2}", "truth_class": "sf",
             "kind": CONTROL if i < 2 else "stripe", "strength": 0.0 if i < 2 else 0.5,
             "signal_sigma": [0.0, 0.0, 300.0, 2.0][i], "detectable": i != 3} for i in range(4)]
    table = pd.DataFrame({"source": [f"f{i}" for i in range(4)], "anomaly_score": [10.0, 20.0, 95.0, 99.5],
                          "anomaly_pct": [11.0, 21.0, 96.0, 100.0], "flagged": [False, False, True, True],
                          "score_recon": [20.0, 40.0, 150.0, 500.0]})
    cols = measured(table, catalogue, 90.0)
    assert list(cols) == ["anomaly_score", "score_recon"]
    np.testing.assert_allclose(cols["score_recon"][0], [11.0, 21.0, 76.0, 100.0])
    assert cols["score_recon"][1].tolist() == [False, False, False, True]  # 90th percentile of 0..198 is 178.2
    config = InjectConfig(kinds=("stripe",), strengths=(0.5,), n_per_kind=2, seed=1)
    result = summarise(rows, table, catalogue, 90.0, config)
    assert result["scores"] == ["anomaly_score", "score_recon"]
    stripe = result["rows"][1]
    assert stripe["anomaly_score"] == {"median_pct": 98.0, "median_pct_90": [96.0, 100.0], "flagged": 1.0,
                                       "untouched_pct": 16.0, "detectable_median_pct": 96.0}
    assert stripe["n"] == 2 and stripe["n_detectable"] == 1
    assert result["headline"]["anomaly_score"]["detectable"] == {"median_pct": 96.0, "kinds": 1, "kinds_at_90": 1,
                                                                 "share": 0.5, "flagged": 1.0}
    assert [g["signal_sigma"] for g in result["galaxies"]] == [0.0, 0.0, 300.0, 2.0]
    assert stripe["score_recon"]["median_pct"] == 88.0 and stripe["score_recon"]["flagged"] == 0.5
    # score_recon's two galaxies lie at 76 and 100: its median could be either side of 90
    assert result["headline"]["score_recon"]["kinds_unsure"] == ["stripe"]
    assert result["headline"]["anomaly_score"]["kinds_unsure"] == []


def test_the_median_percentiles_interval_narrows_with_more_galaxies():
    rng = np.random.default_rng(1)
    few, many = (median_interval(rng.uniform(70, 100, n)) for n in (12, 400))
    assert few[0] < 85 < few[1] and many[0] < 85 < many[1]
    assert many[1] - many[0] < (few[1] - few[0]) / 3
    assert median_interval(np.array([50.0])) is None
    assert median_interval(np.full(12, 93.0)) == [93.0, 93.0]


def test_cli_inject_dry_run_writes_nothing_then_runs(run, capsys):
    (run / INJECTION_FILE).unlink(missing_ok=True)
    before = sorted(p.name for p in run.iterdir())
    assert main(["evaluate", "--run", str(run), "--inject", "--dry-run", "--kinds", "stripe", "--n-per-kind", "1"]) == 0
    out = capsys.readouterr().out
    assert "stripe" in out and "4 MAPS files to write" in out
    assert sorted(p.name for p in run.iterdir()) == before
    assert main(["evaluate", "--run", str(run), "--inject", "--kinds", "stripe", "dead_fibres", "--n-per-kind", "1",
                 "--strengths", "1", "0.3", "--seed", "7", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "dead_fibres" in out and "anomaly_score at strength 0.3" in out
    assert main(["evaluate", "--run", str(run), "--inject", "--seed", str(SURVEY_SEED), "--kinds", "stripe",
                 "--n-per-kind", "1", "--quiet"]) == 2
    assert "own survey" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--strengths", "0"], ["--strengths", "1.5"], ["--kinds", "blueberry"],
                                  ["--n-per-kind", "0"]])
def test_cli_refuses_bad_injection_options(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--run", "nowhere", "--inject", *argv])
    assert exc.value.code == 2
    assert "usage" in capsys.readouterr().err


def test_cli_help_has_injection_examples(capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    out = capsys.readouterr().out
    assert "--inject --dry-run" in out and "--n-per-kind" in out


@pytest.mark.parametrize("kind", ["dark_lane", "rotated_oiii", "smoothed_sii", "bright_knot", "overconfident_ivar"])
def test_a_perturbed_galaxy_keeps_its_own_noise(kind):
    """The kinds change the noiseless sky and the file keeps the galaxy's noise: dimming, blurring or resampling
    the observed maps would have made them less noisy than their ivar says, and the detectors would see that."""
    from dataclasses import replace

    from core.inject import observed
    from core.perturb import DapMaps, perturb
    from core.synth import SynthConfig, make_galaxy

    g = make_galaxy(3, 4242, "sf", "dr15", SynthConfig())
    maps = DapMaps(tuple(g.channels), g.flux, g.ivar, g.mask)
    sky = replace(maps, flux=g.model)
    changed = perturb(kind, sky, np.random.default_rng(0), 0.5)
    out = observed(changed, sky, maps)
    touched = changed.flux != sky.flux
    assert touched.any() or not np.array_equal(changed.ivar, sky.ivar)
    np.testing.assert_array_equal(out.flux[~touched], g.flux[~touched])  # the rest is the file as observed
    np.testing.assert_allclose(out.flux - changed.flux, g.flux - g.model, atol=1e-3)  # the noise, cell by cell
    assert np.array_equal(out.ivar, changed.ivar) and np.array_equal(out.mask, g.mask)
    # what a kind does to the observed maps instead shrinks or stretches the noise where it acts
    if kind in ("dark_lane", "rotated_oiii", "smoothed_sii"):
        direct = perturb(kind, maps, np.random.default_rng(0), 0.5)
        noise = lambda f, m: np.std((f - m)[touched])  # noqa: E731
        assert noise(direct.flux, changed.flux) < 0.95 * noise(out.flux, changed.flux)


def test_a_perturbations_signal_is_its_chi_square_against_the_noise():
    from dataclasses import replace

    from core.inject import DETECTABLE_SIGMA, perturbation_signal
    from core.perturb import DapMaps

    n = 2 * 30 * 30
    maps = DapMaps(("Ha-6564", "Hb-4862"), np.ones((2, 30, 30)), np.full((2, 30, 30), 4.0),
                   np.zeros((2, 30, 30), np.int32))  # sigma 0.5
    flux = maps.flux.copy()
    flux[0, 10, 10] += 1.5  # one value moved by 3 sigma: plain to a test that knew where, lost among 1,800
    one = perturbation_signal(replace(maps, flux=flux), maps)
    assert one["signal_sigma"] == pytest.approx(3.0) and not one["detectable"]
    flux[:, :10] += 0.5  # 600 values moved by 1 sigma each: chi-square 609, against 5 sqrt(2 x 1,800) = 300
    many = perturbation_signal(replace(maps, flux=flux), maps)
    assert many["signal_sigma"] == pytest.approx(np.sqrt(609.0)) and many["detectable"]
    assert 609.0 >= DETECTABLE_SIGMA * np.sqrt(2 * n) > 9.0
    unmeasured = replace(maps, ivar=np.where(np.arange(30)[None, :, None] < 10, 0.0, 4.0))  # the 600 not measured
    assert perturbation_signal(replace(maps, flux=flux), unmeasured)["signal_sigma"] == pytest.approx(3.0)
    ivar_only = perturbation_signal(maps, maps, changes="ivar")
    assert np.isnan(ivar_only["signal_sigma"]) and ivar_only["detectable"]
