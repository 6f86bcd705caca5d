"""The cross-line consistency detector (core.consistency): invariances and what it must see."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import consistency
from tests.galaxies import HA, LINES, OIII, L, S, with_oiii_moved
from tests.galaxies import mixed_survey as survey



@pytest.fixture(scope="module")
def detector():
    flux, ivar, mask = survey(48)
    return consistency.fit(flux, ivar, mask, LINES, np.arange(48),
                           consistency.FitConfig(epochs=150, batch_size=16, lr=3e-3), progress=False)


def scores(detector, flux, ivar, mask):
    return consistency.consistency_scores(detector, flux, ivar, mask, LINES)


@settings(max_examples=15, deadline=None)
@given(c=st.floats(1e-3, 1e3), seed=st.integers(0, 10_000))
def test_score_does_not_depend_on_the_flux_scale(detector, c, seed):
    flux, ivar, mask = survey(2, seed=seed)
    before = scores(detector, flux, ivar, mask)
    after = scores(detector, flux * c, ivar / c**2, mask)
    np.testing.assert_allclose(after, before, rtol=1e-3)  # the issue asks < 1 %; float32 rounding only


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), factor=st.floats(2.0, 5.0), y0=st.integers(4, 8), x0=st.integers(4, 8))
def test_a_group_of_lines_moved_against_the_others_raises_the_score(detector, seed, factor, y0, x0):
    before, after = scores(detector, *with_oiii_moved(*survey(1, seed=seed), factor, y0, x0))
    assert after > before


def test_one_line_turned_against_the_others_raises_the_score(detector):
    flux, ivar, mask = survey(6, seed=3)
    turned = flux.copy()
    turned[:, HA] = np.rot90(flux[:, HA], k=1, axes=(1, 2))  # Halpha's morphology no longer that of the other lines
    assert np.all(scores(detector, turned, ivar, mask) > scores(detector, flux, ivar, mask))


def test_ordinary_galaxies_are_predicted_near_their_noise(detector):
    flux, ivar, mask = survey(4, seed=7)  # galaxies the network never saw
    terms, good = consistency.cell_terms(detector, flux, ivar, mask, LINES)
    assert terms.shape == flux.shape and good.shape == flux.shape
    # every line predicted while hidden: reduced chi-square of a few, not hundreds
    assert terms[good].mean() < 10, terms[good].mean()


def test_the_fit_columns_are_each_galaxys_mean_term_with_the_floors_and_against_the_noise(detector):
    flux, ivar, mask = survey(3, seed=8)
    flux[1, :, :5] = np.nan  # fewer measured cells: the mean is over those that are
    fits = np.full((3, len(consistency.FIT_COLUMNS)), np.nan)
    consistency.consistency_scores(detector, flux, ivar, mask, LINES, batch=2, fits=fits)
    for column, floor in enumerate((None, 0.0)):
        terms, good = consistency.cell_terms(detector, flux, ivar, mask, LINES, floor=floor)
        np.testing.assert_allclose(fits[:, column], terms.sum((1, 2, 3)) / good.sum((1, 2, 3)), rtol=1e-5)
    assert np.all(fits[:, 1] > fits[:, 0])  # the floors only ever widen the errors


def test_each_line_floor_puts_the_training_galaxies_median_term_at_the_chi_square_median(detector):
    flux, ivar, mask = survey(48)  # the training galaxies
    floors = detector.floors.numpy()
    assert floors.shape == (L,) and np.all(floors >= 0) and floors.any()
    terms, good = consistency.cell_terms(detector, flux, ivar, mask, LINES)
    for line in np.flatnonzero(floors):
        np.testing.assert_allclose(np.median(terms[:, line][good[:, line]]), consistency.CHI2_MEDIAN, rtol=0.02)
    # without them every line's median term is above it: the floors are what brings it down
    raw, _ = consistency.cell_terms(detector, flux, ivar, mask, LINES, floor=0.0)
    assert all(np.median(raw[:, line][good[:, line]]) > consistency.CHI2_MEDIAN for line in np.flatnonzero(floors))


def test_masked_cells_bad_values_and_empty_galaxies(detector):
    flux, ivar, mask = survey(3, seed=11)
    flux[0, :, :4] = np.nan  # NaN flux and inf ivar where the mask does not say so: not counted
    ivar[0, :, 4:6] = np.inf
    mask[1] = True  # all masked: nothing to count
    mask[2, HA] = True  # no Halpha anywhere: the galaxy's level falls back, the other lines still count
    out = scores(detector, flux, ivar, mask)
    assert np.isfinite(out[0]) and np.isnan(out[1]) and np.isfinite(out[2])


def test_fit_needs_halpha_and_galaxies(detector, tmp_path):
    flux, ivar, mask = survey(2)
    with pytest.raises(ValueError, match="Ha-6564"):
        consistency.fit(np.delete(flux, HA, 1), np.delete(ivar, HA, 1), np.delete(mask, HA, 1),
                        LINES[:HA] + LINES[HA + 1:], [0, 1], progress=False)
    with pytest.raises(ValueError, match="no galaxies"):
        consistency.fit(flux, ivar, mask, LINES, [], progress=False)


def test_saved_network_scores_the_same_and_a_damaged_one_is_named(detector, tmp_path):
    from core.errors import RunError

    flux, ivar, mask = survey(2, seed=5)
    path = tmp_path / "consistency.pt"
    consistency.save(detector, path, LINES, consistency.FitConfig())
    np.testing.assert_array_equal(scores(consistency.load(path, LINES, "again"), flux, ivar, mask),
                                  scores(detector, flux, ivar, mask))
    with pytest.raises(RunError, match="other lines"):
        consistency.load(path, LINES[::-1], "again")
    import torch

    payload = torch.load(path, weights_only=True)
    del payload["state_dict"]["floors"]  # a network saved before its floors were calibrated: embed again
    torch.save(payload, path)
    with pytest.raises(RunError, match="could not be read"):
        consistency.load(path, LINES, "again")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(RunError, match="consistency.pt: the consistency network could not be read"):
        consistency.load(path, LINES, "again")


@settings(deadline=None)  # the first example imports torch
@given(size=st.integers(3, 80), rings=st.integers(2, 8))
def test_every_cell_has_a_ring_and_no_ring_has_a_direction(size, rings):
    """The rings are what lets the network use a galaxy's ratios at each radius; each cell must take
    part in one (its context is a mean over rings), and a turned or mirrored galaxy must see the same rings."""
    import torch

    from core.models.linehider import ring_weights

    share = ring_weights(size, rings)  # (R, S, S)
    assert share.shape == (rings, size, size) and (share >= 0).all()
    assert (share.sum(0) > 0).all()
    assert torch.equal(share, share.rot90(1, (1, 2))) and torch.equal(share, share.flip(2))
    assert torch.equal(share, share.transpose(1, 2))


def test_a_network_saved_before_the_rings_scores_as_it_did(tmp_path):
    import torch

    from core.models.linehider import LineHider, LineHiderArgs

    flux, ivar, mask = survey(2, seed=9)
    torch.manual_seed(0)
    old = LineHider(LineHiderArgs(n_lines=L, rings=0)).eval()
    path = tmp_path / "consistency.pt"
    consistency.save(old, path, LINES, consistency.FitConfig())
    payload = torch.load(path, weights_only=True)
    del payload["model_args"]["rings"]  # what an embed before the rings wrote
    torch.save(payload, path)
    np.testing.assert_array_equal(scores(consistency.load(path, LINES, "again"), flux, ivar, mask),
                                  scores(old, flux, ivar, mask))


def test_lines_of_one_ion_are_hidden_together():
    groups = consistency.line_groups(LINES)
    assert sorted(i for g in groups for i in g) == list(range(L))
    assert OIII in groups and [LINES.index("SII-6718"), LINES.index("SII-6732")] in groups
    assert [HA] in groups


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), line=st.sampled_from([i for i in range(L) if i != HA]),
       where=st.integers(0, 10**6), width=st.floats(0.5, 1.5), amplitude=st.floats(0.5, 100.0))
def test_a_compact_bright_region_never_lowers_the_score(detector, seed, line, where, width, amplitude):
    """Flux added to a compact region of any line but Halpha never lowers score_consistency: the region's
    cells no longer agree with the other lines, and the galaxy's level (Halpha) is untouched.

    The region as in test_scoring's property for score_recon: a Gaussian of 0.5 to 1.5 cells on a
    cell of the galaxy, 0.5 to 100 times the galaxy's Halpha level and at least 10 times that
    cell's noise (a spot within the noise can cancel a low excursion and lower any residual score).
    """
    flux, ivar, mask = survey(1, seed=seed)
    cells = np.argwhere(~mask[0, 0])
    y, x = cells[where % len(cells)]
    yy, xx = np.mgrid[:S, :S]
    level = np.percentile(flux[0, HA][~mask[0, HA]], consistency.LEVEL_PCT)
    height = max(amplitude * level, 10 / np.sqrt(ivar[0, line, y, x]))
    brighter = flux.copy()
    spot = height * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * width**2))
    brighter[0, line] += np.where(mask[0, line], 0.0, spot)
    before, after = scores(detector, np.concatenate([flux, brighter]), np.concatenate([ivar, ivar]),
                           np.concatenate([mask, mask]))
    assert after > before
