"""The spectral-mixing detector (core.mixing): fit, invariances, what it must see, bad inputs."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import mixing
from tests.galaxies import HA, LINES, OIII, L, S, mixed_survey, with_oiii_moved

SII = [LINES.index("SII-6718"), LINES.index("SII-6732")]


def survey(n, seed=0, noise=0.02, spectra=2):
    """Ordinary galaxies for this detector: two spectra (test_three_spectra_do_not_fit_as_two asks for three)."""
    return mixed_survey(n, seed, noise, spectra)


@pytest.fixture(scope="module")
def calibration():
    """The units of a run of 300 ordinary galaxies, in 3 bins of signal-to-noise."""
    flux, ivar, mask = survey(300, seed=1)
    out = mixing.calibrate(mixing.block_statistics(flux, ivar, mask, LINES),
                           snr=mixing.signal_to_noise(flux, ivar, mask, LINES))
    assert len(out["log_snr"]) == 3
    return out


def scored(flux, ivar, mask, calibration):
    """``(score_mixing, mixing_group)`` of each galaxy in the run's units, at its signal-to-noise."""
    return mixing.galaxy_scores(mixing.block_statistics(flux, ivar, mask, LINES), calibration, LINES,
                                mixing.signal_to_noise(flux, ivar, mask, LINES))


def score(flux, ivar, mask, calibration):
    return scored(flux, ivar, mask, calibration)[0]


def test_two_spectrum_galaxies_are_fitted_to_their_noise():
    flux, ivar, mask = survey(8, seed=2)
    fits = np.empty((8, 2))
    resid = mixing.residuals(flux, ivar, mask, LINES, fits=fits)
    assert resid.shape == flux.shape and np.isnan(resid[mask]).all() and np.isfinite(resid[~mask]).all()
    # against the noise alone every galaxy's reduced chi-square is 1, less the few degrees of freedom the fit takes
    assert np.all((fits[:, 1] > 0.85) & (fits[:, 1] < 1.15)), fits
    # the 3 % floor only adds to each cell's error, and at this signal-to-noise (up to ~1,000) it dominates
    assert np.all(fits[:, 0] <= fits[:, 1]) and np.nanvar(resid) < 0.5


def test_three_spectra_do_not_fit_as_two():
    flux, ivar, mask = survey(4, seed=3, spectra=3)
    fits = np.empty((4, 2))
    mixing.residuals(flux, ivar, mask, LINES, fits=fits)
    assert np.all(fits[:, 1] > 2), fits
    # the same galaxies as a mix of three spectra (the general solver, not rank 2's closed form) fit to their noise
    mixing.residuals(flux, ivar, mask, LINES, fits=fits, rank=3)
    assert np.all((fits[:, 1] > 0.85) & (fits[:, 1] < 1.15)), fits


def test_the_matched_filter_is_a_standard_normal_for_unit_noise():
    rng = np.random.default_rng(0)
    resid = rng.normal(size=(400, L, S, S))
    resid[:, :, :3] = np.nan  # unmeasured rows: the filter's variance counts only measured lines
    stats = mixing.statistics(resid, LINES)  # (N, G, T) largest |S| of ~S*S roughly independent normals
    single = stats[:, :, 0]
    # the largest |N(0, 1)| of 13 x 16 cells sits near 3; filtered scales have fewer independent cells
    assert 2.4 < np.median(single) < 3.6, np.median(single)
    assert np.all(np.median(stats, axis=0) < 3.6) and np.all(np.median(stats, axis=0) > 1.0)


@settings(max_examples=15, deadline=None)
@given(c=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_score_does_not_depend_on_the_flux_scale(calibration, c, seed):
    flux, ivar, mask = survey(2, seed=seed)
    np.testing.assert_allclose(score(flux * c, ivar / c**2, mask, calibration), score(flux, ivar, mask, calibration),
                               rtol=1e-2)  # the issue asks < 1 %; the fit's float32 rounding moves it by up to ~1e-3 (CI saw 1.07e-3 at c = 7)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.floats(1.5, 4.0), y0=st.integers(4, 8), x0=st.integers(4, 8))
def test_a_group_of_lines_moved_against_the_others_raises_the_score(calibration, seed, factor, y0, x0):
    before, after = score(*with_oiii_moved(*survey(1, seed=seed), factor, y0, x0), calibration)
    assert after > before


@pytest.mark.parametrize("ion", ["OIII", "SII"])
def test_the_group_that_departs_is_named(calibration, ion):
    """A moderate change is named where it was made. (A line made several times brighter can pull the fit
    towards it, and the misfit then shows in the other lines: the column says where the departure lies.)"""
    idx = dict(mixing.groups(LINES))[ion]
    for seed, factor in zip(range(4), (1.2, 1.5, 2.0, 0.6)):
        flux, ivar, mask = survey(1, seed=seed)
        flux[0, idx, 4:8, 4:8] *= factor
        assert scored(flux, ivar, mask, calibration)[1][0] == ion


def test_one_line_turned_against_the_others_raises_the_score(calibration):
    flux, ivar, mask = survey(6, seed=3)
    turned = flux.copy()
    turned[:, SII] = np.rot90(flux[:, SII], k=1, axes=(2, 3))  # [SII]'s morphology no longer that of the others
    assert np.all(score(turned, ivar, mask, calibration) > score(flux, ivar, mask, calibration))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), line=st.integers(0, L - 1), where=st.integers(0, 10**6),
       width=st.floats(0.5, 1.5), amplitude=st.floats(0.5, 100.0))
def test_a_compact_bright_region_never_lowers_the_score(calibration, seed, line, where, width, amplitude):
    """Flux added to a compact region of any line (Halpha too) never lowers score_mixing: the region's cells
    are no longer the galaxy's two-spectrum mix. The region as in test_consistency's property."""
    flux, ivar, mask = survey(1, seed=seed)
    cells = np.argwhere(~mask[0, 0])
    y, x = cells[where % len(cells)]
    yy, xx = np.mgrid[:S, :S]
    level = np.percentile(flux[0, HA][~mask[0, HA]], 90)
    height = max(amplitude * level, 10 / np.sqrt(ivar[0, line, y, x]))
    brighter = flux.copy()
    brighter[0, line] += np.where(mask[0, line], 0.0, height * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2)))
    before, after = score(np.concatenate([flux, brighter]), np.concatenate([ivar, ivar]),
                          np.concatenate([mask, mask]), calibration)
    assert after > before


def test_bad_cells_and_empty_galaxies(calibration):
    flux, ivar, mask = survey(3, seed=4)
    flux[0, :, 5, 5], ivar[0, :, 6, 6] = np.nan, np.inf  # NaN flux and infinite ivar: unusable cells
    mask[1] = True  # a galaxy with nothing measured
    scores, groups = scored(flux, ivar, mask, calibration)
    assert np.isfinite(scores[[0, 2]]).all() and np.isnan(scores[1])
    assert groups[1] is None and isinstance(groups[0], str)


def test_odd_map_sizes_and_runs_without_halpha():
    rng = np.random.default_rng(5)
    lines = [ln for ln in LINES if ln != "Ha-6564"]
    flux = rng.uniform(0.5, 1.5, (2, len(lines), 9, 13))[:, :, :, :9]  # 9 x 9, cut from a wider block
    stats = mixing.block_statistics(flux, np.full(flux.shape, 100.0), np.zeros(flux.shape, bool), lines)
    assert stats.shape == (2, len(mixing.groups(lines)), len(mixing.SCALES)) and np.isfinite(stats).all()


def test_groups_hold_each_ion_and_all_lines():
    groups = dict(mixing.groups(LINES))
    assert groups["OIII"] == OIII and groups["SII"] == SII and groups["Ha"] == [HA]
    assert groups[mixing.ALL_LINES] == list(range(L))


def test_a_galaxy_scores_the_same_alone_or_among_others_without_halpha():
    """Without Halpha the line that sets the units comes from the run's lines, not from the galaxies in the block:
    ``train score`` scores one file alone, ``embed`` 256 at a time."""
    lines = [ln for ln in LINES if ln != "Ha-6564"]
    keep = [LINES.index(ln) for ln in lines]
    flux, ivar, mask = (a[:, keep] for a in survey(2, seed=6))
    flux[1, lines.index("OIII-5008")] *= 50  # the second galaxy's brightest line is another one
    alone = mixing.block_statistics(flux[:1], ivar[:1], mask[:1], lines)
    together = mixing.block_statistics(flux, ivar, mask, lines)
    np.testing.assert_allclose(together[:1], alone, rtol=1e-5)


def test_the_matched_filter_counts_the_noise_that_neighbouring_cells_share(tmp_path):
    """Independent unit noise in every spaxel of a file, gridded on cells of 0.58 spaxels, so that each spaxel is
    split among neighbouring cells: over 300 draws, each filter's ``S`` at cells far from the edges has variance
    ``F`` (``filter_factors``) within 10 %, where the formula for independent cells gives 1."""
    import dataclasses

    from core.maps import SYNTHETIC_VERSDAP, read_maps, to_grid
    from tests.test_maps import _square_footprint_file

    g = read_maps(_square_footprint_file(tmp_path, k=14, ny=24, nx=24), bad_bits=("DONOTUSE",))
    g.versdap = SYNTHETIC_VERSDAP  # independent spaxels
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(300):
        noise = (rng.normal(size=g.flux.shape) / np.sqrt(g.ivar)).astype(np.float32)
        grid = to_grid(dataclasses.replace(g, flux=noise), size=24, margin=0.0)
        draws.append(grid.flux * np.sqrt(grid.ivar))  # (L, S, S) each cell's noise in its own sigma
    resid = np.stack(draws)  # (300, L, S, S)
    assert np.isfinite(resid).all()
    factors = mixing.filter_factors([grid.cell_spaxels], [grid.noise_sigma])[0]
    sums = mixing._sums(resid, grid.lines)
    for sigma, factor in zip(mixing.SCALES, factors):
        half = len(mixing._kernel(sigma)) // 2
        s = mixing._filtered(*sums, sigma)[:, :, half:24 - half, half:24 - half]  # (300, G, ., .)
        assert np.mean(np.var(s, axis=0)) == pytest.approx(factor, rel=0.1), (sigma, factor)
    assert factors[0] == pytest.approx(1) and factors[-1] > 2


def test_each_statistic_is_calibrated_among_galaxies_of_like_signal_to_noise():
    """A statistic whose scatter grows with the galaxies' signal-to-noise (as the mix's own misfit does) is, in
    units of its scatter among galaxies of like S/N, as often high for the best-measured fifth as for the worst;
    in units of the whole run's scatter the best-measured fifth takes most of the tail."""
    rng = np.random.default_rng(0)
    n, groups = 2000, len(mixing.groups(LINES))
    snr = np.exp(rng.uniform(np.log(3), np.log(300), n))
    width = 0.1 + 0.2 * np.log10(snr)[:, None, None]  # (N, 1, 1): 0.2 at S/N 3, 0.6 at 300
    stats = np.exp(1.0 + width * rng.standard_normal((n, groups, len(mixing.SCALES))))
    worst, best = snr < np.quantile(snr, 0.2), snr > np.quantile(snr, 0.8)

    def tail(calibration, given=None):  # the share of each fifth among the galaxies whose largest z is over 3
        z = np.log(mixing.galaxy_scores(stats, calibration, LINES, given)[0])
        return np.mean(z[worst] > 3), np.mean(z[best] > 3)

    low, high = tail(mixing.calibrate(stats))
    assert high > 5 * max(low, 0.01)
    low, high = tail(mixing.calibrate(stats, snr=snr), snr)
    assert abs(high - low) < 0.05, (low, high)
    # a galaxy beyond the run's S/N takes the nearest bin's units, and one without Halpha the faintest's
    calibration = mixing.calibrate(stats, snr=snr)
    far = mixing.galaxy_scores(stats[:2], calibration, LINES, [1e6, np.nan])[0]
    edge = mixing.galaxy_scores(stats[:2], calibration, LINES, [snr.max(), snr.min()])[0]
    np.testing.assert_allclose(far, edge, rtol=1e-6)


def test_signal_to_noise_is_the_median_over_the_level_lines_cells():
    flux, ivar, mask = survey(3, seed=4)
    snr = mixing.signal_to_noise(flux, ivar, mask, LINES)
    good = ~mask[:, HA]
    expected = [np.median((flux[i, HA] * np.sqrt(ivar[i, HA]))[good[i]]) for i in range(3)]
    np.testing.assert_allclose(snr, expected, rtol=1e-6)
    np.testing.assert_allclose(mixing.signal_to_noise(3 * flux, ivar / 9, mask, LINES), snr, rtol=1e-6)
    mask[0, HA] = True
    assert np.isnan(mixing.signal_to_noise(flux, ivar, mask, LINES)[0])
