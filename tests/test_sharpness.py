"""score_sharp (core.sharpness): no sky seen through the PSF breaks its bound; what no sky can make does."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core import sharpness
from core.maps import read_maps

N, PIX = 40, 0.5  # spaxels a side, arcsec a spaxel
FWHM = 2.5  # arcsec: MaNGA's reconstructed PSF
SIGMA = sharpness.psf_sigma(FWHM, PIX)  # 2.12 spaxels
LINES = ("Hb-4862", "OIII-5008", "Ha-6564")


def sky_through_psf(rng, n_sources: int, sigma: float = SIGMA) -> np.ndarray:
    """``(3, N, N)`` a random non-negative sky seen through a Gaussian PSF of ``sigma`` spaxels, evaluated exactly
    at the spaxels: point sources anywhere (off the lattice too), each with its own spectrum, and a smooth disk
    that is itself a sum of point sources; a positive peak of 10 to 1000 in every line."""
    yy, xx = np.mgrid[:N, :N].astype(float)
    flux = np.zeros((3, N, N))
    for _ in range(n_sources):
        y, x = rng.uniform(-5, N + 5, 2)  # some outside the map, whose light still falls on it
        spectrum = rng.uniform(0.0, 1.0, 3) * 10 ** rng.uniform(0, 2)
        width = rng.choice([0.0, rng.uniform(0, 6)])  # a point, or a Gaussian blob (a point seen through more PSF)
        s2 = sigma**2 + width**2
        flux += spectrum[:, None, None] * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * s2))[None]
    return flux * (1000.0 / flux.max(axis=(1, 2), keepdims=True).clip(1e-12)) * rng.uniform(0.01, 1)


def galaxy(flux, noise: float = 1.0, fwhm: float = FWHM):
    """The duck-typed ``core.maps.GalaxyMaps`` that :func:`core.sharpness.measure` reads."""
    return SimpleNamespace(lines=LINES, flux=flux, ivar=np.full(flux.shape, noise**-2), mask=np.zeros(flux.shape, bool),
                           psf_fwhm=fwhm, pixscale=PIX, center=(N / 2, N / 2))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_sources=st.integers(1, 30))
def test_no_sky_seen_through_the_psf_breaks_the_bound(seed, n_sources):
    """Without noise, every test of any non-negative sky through the PSF is at or below the bound (z <= 0):
    compact knots, point sources between spaxels, blobs of every size, many or few."""
    flux = sky_through_psf(np.random.default_rng(seed), n_sources)
    z = sharpness.significance(flux, np.full(flux.shape, 1.0), np.zeros(flux.shape, bool), SIGMA)
    assert np.isfinite(z).sum() > 1000
    assert np.nanmax(z) <= 1e-6
    assert sharpness.measure(galaxy(flux)).score == 1.0


def test_a_psf_wider_than_the_header_says_is_within_the_bound():
    """A sky seen through a wider PSF than the header's (a bluer band) meets the header's bound: the sharpest
    band's FWHM is the one to use."""
    flux = sky_through_psf(np.random.default_rng(5), 12, sigma=1.3 * SIGMA)
    z = sharpness.significance(flux, np.full(flux.shape, 1.0), np.zeros(flux.shape, bool), SIGMA)
    assert np.nanmax(z) < 0


def test_noise_alone_rarely_exceeds_three_sigma():
    """With noise, the tests of a sky through the PSF exceed 3 sigma about as often as a normal tail or less,
    and a galaxy scores near 1."""
    rng = np.random.default_rng(0)
    z, scores = [], []
    for _ in range(20):
        flux = sky_through_psf(rng, 15) + rng.normal(0, 1.0, (3, N, N))
        z.append(sharpness.significance(flux, np.full(flux.shape, 1.0), np.zeros(flux.shape, bool), SIGMA))
        scores.append(sharpness.measure(galaxy(flux)).score)
    z = np.concatenate([a[np.isfinite(a)] for a in z])
    assert z.size > 20000
    assert np.mean(z > 3) < 0.00135
    assert np.median(scores) < 10  # 1, plus 0.0085 for each test that sits at the bound (a blob's peak)


@pytest.mark.parametrize("c", [1e-3, 7.0, 1e4])
def test_the_flux_scale_changes_nothing(c):
    """Multiplying every flux by c and the inverse variance by 1 / c^2 leaves every test's z as it was."""
    rng = np.random.default_rng(1)
    flux = sky_through_psf(rng, 10) + rng.normal(0, 1.0, (3, N, N))
    ivar, mask = np.full(flux.shape, 1.0), np.zeros(flux.shape, bool)
    np.testing.assert_allclose(sharpness.significance(c * flux, ivar / c**2, mask, SIGMA),
                               sharpness.significance(flux, ivar, mask, SIGMA), rtol=1e-9, atol=1e-9)


def _bright_spot(flux) -> tuple[int, int]:
    """A spaxel well inside the map where Halpha is bright."""
    inner = np.zeros((N, N), bool)
    inner[8:-8, 8:-8] = True
    return np.unravel_index(np.argmax(np.where(inner, flux[2], -np.inf)), (N, N))


def test_an_unflagged_dead_fibre_is_found_and_placed():
    """A 2" hole where every line lost half its flux (grey: the line ratios stay) scores far above the same
    galaxy without it, and the place named is on the hole's rim."""
    rng = np.random.default_rng(2)
    clean = sky_through_psf(rng, 15) + rng.normal(0, 1.0, (3, N, N))
    y0, x0 = _bright_spot(clean)
    yy, xx = np.mgrid[:N, :N]
    hole = np.hypot(yy - y0, xx - x0) <= 2.0
    holed = np.where(hole[None], 0.5 * clean, clean)
    before, after = sharpness.measure(galaxy(clean)), sharpness.measure(galaxy(holed))
    assert after.score > 100 * before.score
    # measured from the map's centre, in arcsec, on the rim: within 3 spaxels of the hole's centre
    y, x = after.dy / PIX + N / 2, after.dx / PIX + N / 2
    assert np.hypot(y - y0, x - x0) <= 3.0


@pytest.mark.parametrize("where", ["bright", "faint"])
def test_a_cosmic_ray_is_found_in_its_line(where):
    """One spaxel of one line raised by half its flux where the galaxy is bright, by 30 sigma where the line
    is not even detected, is found, in that line, at that spaxel."""
    rng = np.random.default_rng(3)
    flux = sky_through_psf(rng, 15) + rng.normal(0, 1.0, (3, N, N))
    if where == "bright":
        y0, x0 = _bright_spot(flux[[1, 1, 1]])
        rise = 0.5 * flux[1, y0, x0]
    else:
        y0, x0 = np.argwhere(flux[1, 2:-2, 2:-2] < 1.0)[0] + 2
        rise = 30.0
    hit = flux.copy()
    hit[1, y0, x0] += rise
    found = sharpness.measure(galaxy(hit))
    assert found.score > 10 * sharpness.measure(galaxy(flux)).score
    assert found.line == "OIII-5008"
    assert (found.dx / PIX + N / 2, found.dy / PIX + N / 2) == (x0, y0)


def test_masked_and_faint_spaxels_are_not_tested():
    """A masked spaxel is never tested nor used as a neighbour, and a spike there counts for nothing; a
    galaxy with every spaxel masked scores 1."""
    rng = np.random.default_rng(4)
    flux = sky_through_psf(rng, 15) + rng.normal(0, 1.0, (3, N, N))
    y0, x0 = _bright_spot(flux)
    mask = np.zeros(flux.shape, bool)
    mask[:, y0, x0] = True
    spiked = flux.copy()
    spiked[:, y0, x0] = 1e6
    z = sharpness.significance(spiked, np.full(flux.shape, 1.0), mask, SIGMA)
    assert np.isnan(z[:, :, y0, x0]).all() and np.isnan(z[0, :, y0, x0 + 1]).all()  # step (0, 1) has x0 beside it
    g, same = galaxy(spiked), galaxy(flux)
    g.mask = same.mask = mask
    assert sharpness.measure(g).score == sharpness.measure(same).score
    g.mask = np.ones(flux.shape, bool)
    nothing = sharpness.measure(g)
    assert nothing.score == 1.0 and nothing.line is None


def test_no_psf_in_the_header_no_score():
    """Without a PSF FWHM the detector has nothing to test against: NaN, which the anomaly score leaves out."""
    flux = sky_through_psf(np.random.default_rng(6), 5)
    assert np.isnan(sharpness.measure(galaxy(flux, fwhm=float("nan"))).score)


def test_the_real_galaxy_is_within_the_bound(real_maps_file):
    """The real DR15 galaxy 7815-3702: the header's sharpest FWHM is read, and its maps meet the bound as a
    sky through the PSF should (no more tests above 3 sigma than a normal tail's share)."""
    g = read_maps(real_maps_file)
    assert g.psf_fwhm == pytest.approx(2.58875)  # ZFWHM, the smallest of GFWHM, RFWHM, IFWHM, ZFWHM
    z = sharpness.significance(g.flux, g.ivar, g.mask, sharpness.psf_sigma(g.psf_fwhm, g.pixscale))
    tested = z[np.isfinite(z)]
    assert tested.size > 10000
    assert np.mean(tested > 3) < 0.00135
    assert sharpness.measure(g).score < 50


def test_the_cell_map_puts_each_spaxel_in_its_cell():
    """A violation at one spaxel lands in the grid cell its centre falls in; cells with no tested spaxel are NaN,
    tested ones that meet the bound 0."""
    z = np.full((len(sharpness.STEPS), 2, 20, 20), np.nan)
    z[:, :, 4:16, 4:16] = -3.0  # tested, within the bound
    z[1, 0, 10, 7] = 6.0
    cells = sharpness.cell_map(z, crop=(2.0, 2.0, 18.0, 18.0), size=8)  # cells of 2 spaxels from (2, 2)
    assert cells[4, 2] == 6.0  # spaxel (10, 7): centre (10.5, 7.5) -> cell ((10.5 - 2) // 2, (7.5 - 2) // 2)
    assert np.nansum(cells) == 6.0 and (cells[1:7, 1:7] >= 0).all()
    assert np.isnan(cells[0]).all() and np.isnan(cells[:, 7]).all()
