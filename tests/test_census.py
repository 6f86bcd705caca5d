"""The census detector (core.census): noise propagation, invariances, what it sees, drop-outs, bad inputs, its file."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import census, consistency
from core.errors import RunError
from tests.galaxies import HA, LINES, OIII, S, mixed_survey, with_oiii_moved

NAMES = census.names(LINES)
D = len(NAMES)
#: Each feature's ion: the lines whose cells it is measured on, besides Halpha's.
ION = np.array([name.split(" ")[0].split("-")[0] for name in NAMES])
IS_RATIO = np.array([name.endswith(f" {census.RATIO}") for name in NAMES])
IONS = [(LINES[g[0]].split("-")[0], g) for g in consistency.line_groups(LINES) if HA not in g]
HEII = LINES.index("HeII-4687")  # an ion of one line


@pytest.fixture(scope="module")
def survey():
    """A run of 200 ordinary galaxies: their features, the survey's Gaussian fitted to them, the run's calibration
    over them and their scores."""
    flux, ivar, mask = mixed_survey(200, seed=1)
    values, noise = census.features(flux, ivar, mask, LINES)
    model = census.fit(values, noise, LINES)
    stats, feature = census.statistics(values, noise, model)
    calibration = census.calibrate(stats)
    scores = census.galaxy_scores(stats, feature, calibration, LINES)[0]
    return SimpleNamespace(flux=flux, ivar=ivar, mask=mask, values=values, noise=noise, model=model,
                           calibration=calibration, scores=scores, ordinary=np.flatnonzero(np.log(scores) < 1))


def statistics(flux, ivar, mask, survey):
    return census.statistics(*census.features(flux, ivar, mask, LINES), survey.model)


def scores(flux, ivar, mask, survey):
    """``(score_census, census_feature)`` of each galaxy in the survey's run."""
    return census.galaxy_scores(*statistics(flux, ivar, mask, survey), survey.calibration, LINES)


@pytest.fixture(scope="module")
def monte_carlo():
    """One galaxy's features' noise covariance from :func:`census.features` and from 2,000 draws of its noise. Halpha
    is three times noisier than the other lines, so that its share of every feature's noise weighs."""
    flux, ivar, mask = mixed_survey(1, seed=0, noise=0.5)
    ivar[:, HA] /= 9
    values, noise = census.features(flux, ivar, mask, LINES)
    draws = flux + np.random.default_rng(7).normal(size=(2000,) + flux.shape[1:]) / np.sqrt(ivar)
    drawn, _ = census.features(draws, np.broadcast_to(ivar, draws.shape), np.broadcast_to(mask, draws.shape), LINES)
    without_ha = ivar.copy()
    without_ha[:, HA] = np.inf  # Halpha noiseless: what the prediction would be without its part
    return SimpleNamespace(values=values[0], predicted=noise[0], drawn=drawn, measured=np.cov(drawn.T),
                           without_ha=census.features(flux, without_ha, mask, LINES)[1][0])


def correlations(cov):
    sd = np.sqrt(np.diag(cov))
    return cov / np.outer(sd, sd)


def test_the_noise_variance_of_every_feature_is_that_of_its_draws(monte_carlo):
    """The first-order propagation holds where the features are well measured but the noise matters: every feature's
    variance within 15 % of 2,000 draws' (their own scatter is ~3 %)."""
    mc = monte_carlo
    assert np.isfinite(mc.values).all() and np.isfinite(mc.drawn).all()
    ratio = np.diag(mc.measured) / np.diag(mc.predicted)
    assert np.all((ratio > 0.85) & (ratio < 1.15)), dict(zip(np.array(NAMES)[np.abs(ratio - 1) >= 0.15],
                                                             ratio[np.abs(ratio - 1) >= 0.15]))
    # and the check sees Halpha's part: without it some feature's variance is off by far more
    assert np.max(np.diag(mc.measured) / np.diag(mc.without_ha)) > 1.5


def test_the_noise_correlations_of_features_of_different_ions_are_those_of_the_draws(monte_carlo):
    """Features measured on different lines share only Halpha's noise: their correlations are those of the draws
    (whose own scatter is ~0.02; 0.15 is ~7 of it)."""
    mc = monte_carlo
    apart = (ION[:, None] != ION[None, :])
    diff = np.abs(correlations(mc.measured) - correlations(mc.predicted))
    assert np.all(diff[apart] < 0.15), np.max(diff[apart])


def test_the_noise_correlation_of_a_line_ratio_with_its_own_ion_shape_is_that_of_the_draws(monte_carlo):
    """A line's ratio and its ion's shape share the line's cells (correlations up to ~0.5 in the draws)."""
    mc = monte_carlo
    same = (ION[:, None] == ION[None, :]) & (IS_RATIO[:, None] != IS_RATIO[None, :])
    diff = np.abs(correlations(mc.measured) - correlations(mc.predicted))
    assert np.all(diff[same] < 0.15), np.max(diff[same])


def test_a_real_galaxys_feature_noise_does_not_depend_on_the_grid(real_maps_file):
    """On a real MaNGA file, whose neighbouring spaxels share noise, every feature's noise is the same on 16 and 48
    cells (within 15 %; 4 % to 12 % measured) once each galaxy's ``noise_factor`` scales it; taking the cells as independent, it shrinks
    with the cells (by half or more)."""
    from core.dataset import IngestOptions
    from core.maps import preprocess

    errors = {}
    for size in (16, 48):
        grid = preprocess(real_maps_file, IngestOptions(size=size)).grid
        for factor in (None, [grid.noise_factor]):
            values, noise = census.features(grid.flux[None], grid.ivar[None], grid.mask[None], grid.lines, factor)
            errors[size, factor is None] = np.sqrt(np.diag(noise[0]))  # NaN-free: 0 where not measured
    measured = errors[16, False] > 0
    assert measured.sum() > 40
    ratio = errors[48, False][measured] / errors[16, False][measured]
    names = np.array(census.names(grid.lines))[measured]
    assert np.all((ratio > 0.85) & (ratio < 1.15)), dict(zip(names, ratio))
    independent = errors[48, True][measured] / errors[16, True][measured]
    assert np.median(independent) < 0.5, np.median(independent)


@settings(max_examples=20, deadline=None)
@given(c=st.floats(1e-4, 1e4), seed=st.integers(0, 10_000))
def test_score_does_not_depend_on_the_flux_scale(survey, c, seed):
    """Every feature is a ratio of fluxes or a moment normalised by the total, and the noise scales with them: the
    issue asks < 1 %, the features are scale-free up to rounding."""
    flux, ivar, mask = mixed_survey(2, seed=seed)
    before, named = scores(flux, ivar, mask, survey)
    after, named_after = scores(flux * c, ivar / c**2, mask, survey)
    np.testing.assert_allclose(after, before, rtol=1e-6)
    assert list(named_after) == list(named)


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 3), mirror=st.booleans(), seed=st.integers(0, 10_000), y0=st.integers(0, 12),
       x0=st.integers(0, 12))
def test_turns_and_mirrors_leave_the_statistics_unchanged(survey, k, mirror, seed, y0, x0):
    """The survey's Gaussian is symmetric under the map's 8 turns and mirrors, and the features of a turned map are the turned
    features: both statistics are unchanged, for an ordinary galaxy and for one made lopsided ([OIII] brighter in an
    off-centre patch)."""
    flux, ivar, mask = with_oiii_moved(*mixed_survey(1, seed=seed), 3.0, y0, x0)
    turned = [np.rot90(a, k, axes=(2, 3)) for a in (flux, ivar, mask)]
    if mirror:
        turned = [a[..., ::-1] for a in turned]
    np.testing.assert_allclose(statistics(*turned, survey)[0], statistics(flux, ivar, mask, survey)[0],
                               rtol=1e-8, atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(line=st.sampled_from([i for i in range(len(LINES)) if i != HA]),
       factor=st.one_of(st.floats(1.2, 2.0), st.floats(0.5, 0.83)), seed=st.integers(0, 10_000))
def test_one_line_brighter_or_fainter_over_the_whole_galaxy_is_seen_and_named(survey, line, factor, seed):
    """Every galaxy of the survey mixes the same three spectra, so its line ratios keep to their plane; one line
    multiplied over the whole galaxy (the [OIII] doublet off its atomic ratio) leaves it: the galaxy scores above
    99 % of the survey's, and census_feature names that line's ratio."""
    flux, ivar, mask = mixed_survey(1, seed=seed)
    flux[:, line] *= factor
    score, named = scores(flux, ivar, mask, survey)
    assert score[0] > np.percentile(survey.scores, 99)
    assert named[0] == f"{LINES[line]} {census.RATIO}"


def test_the_oiii_doublet_off_its_ratio_is_named(survey):
    """The module's own example: [OIII] 4960 at 1/1.5 of 5008 instead of the survey's ratio."""
    flux, ivar, mask = mixed_survey(5, seed=2)
    flux[:, OIII[0]] = flux[:, OIII[1]] / 1.5
    score, named = scores(flux, ivar, mask, survey)
    assert np.all(score > np.percentile(survey.scores, 99)), score
    assert set(named) <= {f"{LINES[i]} {census.RATIO}" for i in OIII}, named


@settings(max_examples=20, deadline=None)
@given(ion=st.sampled_from(IONS), shift=st.sampled_from([-2, -1, 1, 2]), axis=st.sampled_from([2, 3]),
       seed=st.integers(0, 10_000))
def test_one_ion_moved_against_halpha_is_seen_and_named(survey, ion, shift, axis, seed):
    """One ion's maps moved by a cell or two (the footprint stays): its centroid is no longer where the survey's
    mix puts it against Halpha's; the galaxy scores above 99 % of the survey's and census_feature names that ion."""
    name, group = ion
    flux, ivar, mask = mixed_survey(1, seed=seed)
    flux[:, group] = np.roll(flux[:, group], shift, axis=axis)
    score, named = scores(flux, ivar, mask, survey)
    assert score[0] > np.percentile(survey.scores, 99)
    assert named[0].split(" ")[0].split("-")[0] == name, named[0]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.floats(3.0, 10.0), y0=st.integers(2, 10), x0=st.integers(2, 10))
def test_oiii_moved_in_a_patch_raises_the_score(survey, seed, factor, y0, x0):
    """[OIII] several times brighter in a 4 x 4-cell patch changes its ratio to Halpha and its centroid: the score
    rises, above 99 % of the survey's."""
    (before, after), _ = scores(*with_oiii_moved(*mixed_survey(1, seed=seed), factor, y0, x0), survey)
    assert after > before and after > np.percentile(survey.scores, 99)


@settings(max_examples=25, deadline=None)
@given(galaxy=st.integers(0, 199), dropped=st.sets(st.integers(0, D - 1), min_size=1, max_size=5))
def test_unmeasured_features_drop_out_exactly(survey, galaxy, dropped):
    """A galaxy with features left out is scored by the Gaussian's marginal over the others:
    the Mahalanobis distance r_M^T (Sigma_MM + N_MM)^-1 r_M as a normal over D - (left out) degrees of freedom, and the
    conditional z-scores of that marginal."""
    model = survey.model
    values, noise = survey.values[galaxy:galaxy + 1].copy(), survey.noise[galaxy:galaxy + 1].copy()
    out = sorted(dropped)
    values[0, out] = np.nan
    noise[0, out, :] = noise[0, :, out] = 0.0  # as census.features leaves an undetected feature
    stats, feature = census.statistics(values, noise, model)

    keep = np.setdiff1d(np.arange(D), out)
    mean, cov = np.asarray(model["mean"])[keep], np.asarray(model["cov"])[np.ix_(keep, keep)]
    r = values[0, keep] - mean
    precision = np.linalg.inv(cov + noise[0][np.ix_(keep, keep)])
    d2 = r @ precision @ r
    cond = np.abs(precision @ r) / np.sqrt(np.diag(precision))
    np.testing.assert_allclose(stats[0], [census._distance_z(d2, len(keep)), cond.max()], rtol=1e-6)
    assert feature[0] == keep[np.argmax(cond)]


def test_bad_galaxies_get_no_score(survey):
    """A galaxy with every cell masked, and one whose Halpha is pure noise (no ratio or shape can be measured
    against it), have no feature: NaN score and no feature name, without a warning (warnings are errors here)."""
    flux, ivar, mask = mixed_survey(3, seed=4)
    mask[1] = True
    flux[2, HA] = np.random.default_rng(0).normal(size=(S, S)) / np.sqrt(ivar[2, HA])
    values, noise = census.features(flux, ivar, mask, LINES)
    assert np.isfinite(values[0]).all() and np.isnan(values[1:]).all() and not noise[1:].any()
    score, named = census.galaxy_scores(*census.statistics(values, noise, survey.model), survey.calibration, LINES)
    assert np.isfinite(score[0]) and isinstance(named[0], str)
    assert np.isnan(score[1:]).all() and list(named[1:]) == [None, None]


def test_a_line_of_pure_noise_leaves_out_only_its_own_features(survey):
    """A line not detected gives no ratio (nor a shape, when it is its ion's only line); the others are measured
    and the galaxy is scored on them."""
    flux, ivar, mask = mixed_survey(1, seed=5)
    for line in (HEII, OIII[0]):
        flux[0, line] = np.random.default_rng(line).normal(size=(S, S)) / np.sqrt(ivar[0, line])
    values, noise = census.features(flux, ivar, mask, LINES)
    lost = np.isin(NAMES, [f"{LINES[HEII]} {census.RATIO}", f"{LINES[OIII[0]]} {census.RATIO}"]) | \
        (~IS_RATIO & (ION == "HeII"))
    assert np.isnan(values[0, lost]).all() and np.isfinite(values[0, ~lost]).all()
    assert not noise[0, lost].any() and not noise[0, :, lost].any()
    score, named = census.galaxy_scores(*census.statistics(values, noise, survey.model), survey.calibration, LINES)
    assert np.isfinite(score[0]) and named[0] in np.array(NAMES)[~lost]


def test_a_feature_measured_in_no_galaxy_of_the_survey():
    """A line undetected in every galaxy of the survey (HeII in a faint one) leaves its features out of the fit,
    without a warning (np.nanmedian's all-NaN one included), and the galaxies are scored on the others."""
    flux, ivar, mask = mixed_survey(60, seed=3)
    flux[:, HEII] = np.random.default_rng(0).normal(size=(60, S, S)) / np.sqrt(ivar[:, HEII])
    values, noise = census.features(flux, ivar, mask, LINES)
    assert np.isnan(values[:, ION == "HeII"]).all()
    model = census.fit(values, noise, LINES)
    assert np.isfinite(census.statistics(values, noise, model)[0]).all()


def test_save_and_load(survey, tmp_path):
    path = tmp_path / "census.json"
    census.save(path, survey.model, survey.calibration, LINES)
    assert census.load(path, LINES, "fit it again") == (survey.model, survey.calibration)


@pytest.mark.parametrize("damage", ["fewer lines", "lines in another order", "truncated", "format", "shapes"])
def test_load_refuses_a_file_of_another_run(survey, tmp_path, damage):
    """A census file that cannot be used with the run's lines is refused with a message naming it and the repair."""
    path = tmp_path / "census.json"
    census.save(path, survey.model, survey.calibration, LINES)
    lines = LINES
    if damage == "fewer lines":
        lines = [ln for ln in LINES if ln != "SII-6732"]
    elif damage == "lines in another order":  # as many features, under other names
        lines = [LINES[1], LINES[0], *LINES[2:]]
    elif damage == "truncated":
        text = path.read_text()
        path.write_text(text[: len(text) // 2])
    else:
        obj = json.loads(path.read_text())
        if damage == "format":
            obj["format"] = "blueberry-census/0"
        else:
            obj["model"]["cov"] = obj["model"]["cov"][:-1]
        path.write_text(json.dumps(obj))
    with pytest.raises(RunError, match="fit it again") as info:
        census.load(path, lines, "fit it again")
    assert str(path) in str(info.value)


@settings(max_examples=50, deadline=None)
@given(pick=st.integers(0, 10**6), line=st.sampled_from([i for i in range(len(LINES)) if i != HA]),
       where=st.integers(0, 10**6), width=st.floats(0.5, 1.5), amplitude=st.floats(1.0, 100.0))
def test_a_compact_bright_region_raises_the_score(survey, pick, line, where, width, amplitude):
    """A Gaussian spot of width 0.5-1.5 cells, peaking at 1-100 times the galaxy's Halpha peak, added to any line
    but Halpha at any cell of the footprint of an ordinary galaxy of the survey (robust z under 1) raises its
    score_census: the line's ratio and centroid leave the survey's."""
    galaxy = survey.ordinary[pick % len(survey.ordinary)]
    flux, ivar, mask = (a[galaxy:galaxy + 1] for a in (survey.flux, survey.ivar, survey.mask))
    y, x = np.argwhere(~mask[0, 0])[where % (~mask[0, 0]).sum()]
    yy, xx = np.mgrid[:S, :S]
    brighter = flux.copy()
    brighter[0, line] += amplitude * flux[0, HA][~mask[0, HA]].max() * np.exp(-((yy - y) ** 2 + (xx - x) ** 2)
                                                                               / (2 * width**2))
    after, _ = scores(brighter, ivar, mask, survey)
    assert after[0] > survey.scores[galaxy]
