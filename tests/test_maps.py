"""core.maps: reading DAP MAPS files (real DR15, DR17 layout, bad files), gridding, normalisation."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from astropy.io import fits

from core.dataset import IngestOptions
from core.errors import BlueberryError, MapsError
from core.lines import DEFAULT_LINES, DR15_CHANNELS, DR17_CHANNELS
from core.maps import (
    DAPPIXMASK_BITS,
    MANGA_NOISE_REACH,
    MANGA_NOISE_SIGMA,
    NORMALISATIONS,
    SYNTHETIC_VERSDAP,
    denormalise,
    normalise,
    preprocess,
    read_maps,
    to_grid,
)

C_KMS = 299792.458
NOCOV, UNRELIABLE, DONOTUSE = 1 << 0, 1 << 5, 1 << 30  # MANGA_DAPPIXMASK bits 0, 5, 30
EXTS = ("EMLINE_GFLUX", "EMLINE_GFLUX_IVAR", "EMLINE_GFLUX_MASK")


# --------------------------------------------------------------------------------------
# Helpers: a DAP-format MAPS file written with astropy


def _wcs_header(crpix=(21.0, 19.0), crval=(150.0, 0.0), pixscale=0.5) -> dict:
    deg = pixscale / 3600.0
    return {
        "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
        "CRPIX1": crpix[0], "CRPIX2": crpix[1], "CRVAL1": crval[0], "CRVAL2": crval[1],
        "CDELT1": -deg, "CDELT2": deg,
    }


def _hdul(channels, flux, ivar, bits, primary=None, header=None) -> fits.HDUList:
    """Primary HDU plus the three EMLINE_GFLUX extensions, channel names in C01, C02, ..."""
    prim = fits.PrimaryHDU()
    prim.header.update({"PLATEIFU": "9999-1901", "MANGAID": "1-999", "OBJRA": 150.0, "OBJDEC": 0.0,
                        "SCINPVEL": 3000.0, "DAPTYPE": "TEST-GAU", "VERSDAP": "test"})
    prim.header.update(primary or {})
    hdr = fits.Header()
    hdr.update(_wcs_header() if header is None else header)
    for i, name in enumerate(channels, start=1):
        hdr[f"C{i:02d}"] = name
    hdr["MASKNAME"] = "MANGA_DAPPIXMASK"
    arrays = (np.asarray(flux, np.float32), np.asarray(ivar, np.float32), np.asarray(bits, np.int32))
    return fits.HDUList([prim] + [fits.ImageHDU(a, hdr.copy(), name=e) for a, e in zip(arrays, EXTS)])


def _write(hdul: fits.HDUList, path):
    hdul.writeto(path)  # astropy gzips when the name ends in .gz
    return path


def _galaxy(ny=37, nx=41, seed=0, channels=DR15_CHANNELS):
    """A random galaxy: an elliptical covered footprint (NOCOV outside), positive fluxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:ny, 0:nx]
    covered = ((xx - nx / 2) / (0.4 * nx)) ** 2 + ((yy - ny / 2) / (0.4 * ny)) ** 2 <= 1
    shape = (len(channels), ny, nx)
    flux = rng.lognormal(0.0, 1.0, shape).astype(np.float32)
    ivar = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    bits = np.zeros(shape, np.int32)
    bits[:, ~covered] = NOCOV | DONOTUSE
    flux[:, ~covered] = 0.0
    ivar[:, ~covered] = 0.0
    return flux, ivar, bits


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    """A synthetic odd, non-square (37 x 41) DR15-layout MAPS file."""
    path = tmp_path_factory.mktemp("maps") / "small-MAPS.fits"
    return _write(_hdul(DR15_CHANNELS, *_galaxy()), path)


@pytest.fixture(scope="module")
def real(real_maps_file):
    """The real file's primary header, EMLINE_GFLUX header and arrays, read directly with astropy."""
    with fits.open(real_maps_file) as hdul:
        arrays = [np.array(hdul[e].data) for e in EXTS]
        return {"primary": hdul[0].header.copy(), "header": hdul[EXTS[0]].header.copy(),
                "flux": arrays[0], "ivar": arrays[1], "bits": arrays[2]}


def _channel_index(header, name):
    n = header["NAXIS3"]
    names = [str(header[f"C{i:02d}"]).strip() for i in range(1, n + 1)]
    return names.index(name)


def _ratio(flux, mask, lines, num, den):
    """Total flux ratio num/den over each line's good cells."""
    i, j = lines.index(num), lines.index(den)
    return flux[i][~mask[i]].sum(dtype=np.float64) / flux[j][~mask[j]].sum(dtype=np.float64)


# --------------------------------------------------------------------------------------
# The real DR15 file


def test_real_file_values_match_a_direct_astropy_read(real_maps_file, real):
    g = read_maps(real_maps_file)
    assert g.lines == DEFAULT_LINES
    assert g.flux.shape == (19, 42, 42) and g.flux.dtype == np.float32
    for k, name in enumerate(g.lines):
        c = _channel_index(real["header"], name)
        np.testing.assert_array_equal(g.flux[k], real["flux"][c])
        np.testing.assert_array_equal(g.ivar[k], real["ivar"][c])
        np.testing.assert_array_equal(g.bits[k], real["bits"][c])
    prim = real["primary"]
    assert g.galaxy_id == prim["PLATEIFU"] == "7815-3702"
    assert g.mangaid == prim["MANGAID"]
    assert (g.ra, g.dec) == (prim["OBJRA"], prim["OBJDEC"])
    assert "Z" not in prim and g.z == pytest.approx(prim["SCINPVEL"] / C_KMS)
    assert (g.daptype, g.versdap) == (prim["DAPTYPE"], prim["VERSDAP"])
    assert g.pixscale == pytest.approx(0.5, abs=1e-4)
    # OBJRA/OBJDEC is within 0.01" of the WCS reference pixel in this file.
    crpix = (real["header"]["CRPIX1"] - 1, real["header"]["CRPIX2"] - 1)
    assert g.center == pytest.approx(crpix, abs=0.05)


def test_real_file_mask_bits_decoded(real_maps_file, real):
    g = read_maps(real_maps_file)
    idx = [_channel_index(real["header"], n) for n in g.lines]
    bits, ivar, flux = real["bits"][idx], real["ivar"][idx], real["flux"][idx]
    expected = ((bits & (NOCOV | UNRELIABLE | DONOTUSE)) != 0) | (ivar <= 0) | ~np.isfinite(flux)
    np.testing.assert_array_equal(g.mask, expected)
    np.testing.assert_array_equal(g.footprint, ~((bits & NOCOV) != 0).any(axis=0))
    assert 0 < g.mask.sum() < g.mask.size and 0 < g.footprint.sum() < g.footprint.size
    # Another bad-bit set gives another mask: LOWCOV is set on covered spaxels here.
    lowcov = read_maps(real_maps_file, bad_bits=("LOWCOV",))
    np.testing.assert_array_equal(lowcov.mask, ((bits & 2) != 0) | (ivar <= 0) | ~np.isfinite(flux))


def test_mask_bit_table_is_manga_dappixmask():
    assert DAPPIXMASK_BITS == {"NOCOV": 0, "LOWCOV": 1, "DEADFIBER": 2, "FORESTAR": 3, "NOVALUE": 4,
                               "UNRELIABLE": 5, "MATHERROR": 6, "FITFAILED": 7, "NEARBOUND": 8,
                               "NOCORRECTION": 9, "MULTICOMP": 10, "DONOTUSE": 30}


@pytest.mark.parametrize("size", [16, 32, 64])
def test_real_grid_preserves_line_ratios(real_maps_file, size):
    g = read_maps(real_maps_file)
    grid = to_grid(g, size=size)
    assert grid.flux.shape == grid.ivar.shape == grid.mask.shape == (19, size, size)
    assert grid.flux.dtype == grid.ivar.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(grid.flux), grid.mask)
    assert (grid.ivar[grid.mask] == 0).all() and (grid.ivar[~grid.mask] > 0).all()
    assert np.isfinite(grid.ivar).all()
    lines = list(g.lines)
    for num in ("Ha-6564", "OIII-5008"):
        native = _ratio(g.flux, g.mask, lines, num, "Hb-4862")
        gridded = _ratio(grid.flux, grid.mask, lines, num, "Hb-4862")
        assert gridded == pytest.approx(native, rel=0.02), (num, size)
    # Total flux is kept too: only cells at the footprint's ragged edge are dropped or filled.
    ha = lines.index("Ha-6564")
    assert grid.flux[ha][~grid.mask[ha]].sum() == pytest.approx(g.flux[ha][~g.mask[ha]].sum(), rel=0.03)
    # The grid spans the same sky: cells are larger by the resampling factor.
    x0, y0, x1, y1 = grid.crop
    assert x1 - x0 == pytest.approx(y1 - y0)
    assert grid.pixscale == pytest.approx(g.pixscale * (x1 - x0) / size)


def test_dr17_layout_reads_the_same_values(real_maps_file, real, tmp_path):
    """35 channels in DR17 order (the DR17-only ones filled with decoys) give the same maps."""
    rng = np.random.default_rng(1)
    shape = (len(DR17_CHANNELS),) + real["flux"].shape[1:]
    flux = rng.uniform(0, 100, shape).astype(np.float32)
    ivar = rng.uniform(1, 2, shape).astype(np.float32)
    bits = np.zeros(shape, np.int32)
    for k, name in enumerate(DR17_CHANNELS):
        if name in DR15_CHANNELS:
            c = _channel_index(real["header"], name)
            flux[k], ivar[k], bits[k] = real["flux"][c], real["ivar"][c], real["bits"][c]
    wcs_keys = [k for k in real["header"] if k[:5] in ("CTYPE", "CUNIT", "CRPIX", "CRVAL", "CDELT") or k[:2] == "PC"]
    header = {k: real["header"][k] for k in wcs_keys if k[-1] != "3"}  # the celestial axes only
    hdul = _hdul(DR17_CHANNELS, flux, ivar, bits, primary=dict(real["primary"]), header=header)
    path = _write(hdul, tmp_path / "dr17-MAPS.fits.gz")

    dr15, dr17 = read_maps(real_maps_file), read_maps(path)
    assert dr17.lines == dr15.lines
    for attr in ("flux", "ivar", "bits", "mask", "footprint"):
        np.testing.assert_array_equal(getattr(dr17, attr), getattr(dr15, attr), err_msg=attr)
    assert (dr17.galaxy_id, dr17.pixscale, dr17.center) == (dr15.galaxy_id, dr15.pixscale, dr15.center)
    # A DR17-only line is read from the DR17 file and named as missing in the DR15 one.
    assert read_maps(path, lines=("HeI-3889",)).flux[0] == pytest.approx(flux[DR17_CHANNELS.index("HeI-3889")])
    with pytest.raises(MapsError, match="HeI-3889"):
        read_maps(real_maps_file, lines=("HeI-3889",))


# --------------------------------------------------------------------------------------
# Resampling on synthetic maps


def _square_footprint_file(tmp_path, k=30, ny=40, nx=44, seed=3, hole=None):
    """All spaxels good except an optional DONOTUSE ``hole``; NOCOV (not a bad bit in the
    tests that use it) marks a k x k footprint so the crop box lies inside the map."""
    rng = np.random.default_rng(seed)
    shape = (len(DR15_CHANNELS), ny, nx)
    flux = rng.lognormal(0.0, 1.0, shape).astype(np.float32)
    ivar = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    bits = np.full(shape, NOCOV, np.int32)
    bits[:, 5:5 + k, 7:7 + k] = 0
    if hole is not None:
        bits[(slice(None),) + hole] |= DONOTUSE
    return _write(_hdul(DR15_CHANNELS, flux, ivar, bits), tmp_path / "square-MAPS.fits")


@pytest.mark.parametrize("size", [7, 32, 64])
def test_resampling_conserves_flux(tmp_path, size):
    g = read_maps(_square_footprint_file(tmp_path), bad_bits=("DONOTUSE",))
    grid = to_grid(g, size=size, margin=1.0)
    assert grid.crop == (6.0, 4.0, 38.0, 36.0)  # the 30 x 30 footprint plus one spaxel each side
    assert not grid.mask.any()
    native = g.flux[:, 4:36, 6:38].sum(axis=(1, 2), dtype=np.float64)  # (L,)
    np.testing.assert_allclose(grid.flux.sum(axis=(1, 2), dtype=np.float64), native, rtol=1e-5)


def _dense(g, grid, size, line):
    """The gridding written out as whole matrices for one line: ``(w (C, P) each good cell's spaxel weights times
    its fill, rho (P, P) the spaxels' noise correlation, s (P,) their noise)`` over the map's ``P`` spaxels."""
    x0, y0, x1, _ = grid.crop
    side, (ny, nx) = x1 - x0, g.flux.shape[1:]
    edges = np.arange(size + 1) * side / size

    def overlap(start, n):  # (S, n) length of each cell's overlap with each spaxel
        return np.clip(np.minimum(start + edges[1:, None], np.arange(n) + 1.0)
                       - np.maximum(start + edges[:-1, None], np.arange(n)), 0, None)

    w = np.einsum("ay,bx->abyx", overlap(y0, ny), overlap(x0, nx)).reshape(size * size, ny * nx)  # (S*S, ny*nx)
    yy, xx = np.divmod(np.arange(ny * nx), nx)
    dist2 = (yy[:, None] - yy[None]) ** 2 + (xx[:, None] - xx[None]) ** 2
    if g.versdap.startswith(SYNTHETIC_VERSDAP):
        rho = np.eye(ny * nx)
    else:
        rho = np.where(dist2 <= MANGA_NOISE_REACH**2, np.exp(-dist2 / (2 * MANGA_NOISE_SIGMA**2)), 0.0)
    s = np.where(g.mask[line], 0.0, 1 / np.sqrt(g.ivar[line].astype(np.float64))).ravel()  # (ny*nx,)
    good = ~grid.mask[line].ravel()
    fill = (side / size) ** 2 / (w @ (~g.mask[line]).ravel())[good]  # cell area / its good area
    return w[good] * fill[:, None], rho, s


@pytest.mark.parametrize("size", [5, 13, 32, 50])
def test_a_cells_variance_counts_the_correlation_of_a_manga_cubes_spaxels(tmp_path, size):
    """Every cell's variance is the full double sum over the spaxels it holds, with the DAP's model of a
    MaNGA cube's spatial correlation (written out here as the whole spaxel-by-spaxel matrix)."""
    rng = np.random.default_rng(size)
    g = read_maps(_square_footprint_file(tmp_path, k=12, ny=16, nx=18), bad_bits=("DONOTUSE",))
    g.mask |= rng.random(g.mask.shape) < 0.15
    grid = to_grid(g, size=size, min_good=0.3)
    assert not g.versdap.startswith(SYNTHETIC_VERSDAP)  # a MaNGA file, as the real ones
    x0, _, x1, _ = grid.crop
    for line in (0, 7):
        w, rho, s = _dense(g, grid, size, line)
        assert len(w) > size
        var = np.einsum("cj,ck,jk,j,k->c", w, w, rho, s, s)
        np.testing.assert_allclose(1 / grid.ivar[line][~grid.mask[line]], var, rtol=1e-4)
        # independent spaxels would give less, and much less where a cell sums several: they share fibres
        independent = np.einsum("cj,j->c", w**2, s**2)
        assert np.all(var >= independent * (1 - 1e-9))
        assert (x1 - x0) / size < 1.5 or np.median(var / independent) > 2


@pytest.mark.parametrize("size", [5, 32, 50])
@pytest.mark.parametrize("manga", [True, False])
def test_the_noise_factor_is_the_variance_of_the_galaxys_total_over_its_cells(tmp_path, size, manga):
    """``noise_factor`` is, per line, the variance of the sum of the good cells (the whole spaxel-by-spaxel double
    sum) over the sum of their variances, the median over lines. It exceeds 1 where cells share noise: a MaNGA cube's
    spaxels, or independent spaxels split among cells smaller than themselves (a 14-spaxel map on 32 or 50 cells)."""
    rng = np.random.default_rng(size)
    g = read_maps(_square_footprint_file(tmp_path, k=12, ny=16, nx=18), bad_bits=("DONOTUSE",))
    g.mask |= rng.random(g.mask.shape) < 0.15
    if not manga:
        g.versdap = SYNTHETIC_VERSDAP
    grid = to_grid(g, size=size, min_good=0.3)
    factors = []
    for line in range(len(g.lines)):
        w, rho, s = _dense(g, grid, size, line)
        total = w.sum(0)  # (P,) each spaxel's weight in the sum of the good cells
        factors.append(np.einsum("j,k,jk,j,k->", total, total, rho, s, s) / np.sum(1 / grid.ivar[line][~grid.mask[line]]))
    assert grid.noise_factor == pytest.approx(np.median(factors), rel=1e-4)
    if manga or size > 14:
        assert grid.noise_factor > 1.5
    else:  # 5 cells of ~3 spaxels: only the spaxels on cells' edges are shared
        assert 1 <= grid.noise_factor < 1.5


@pytest.mark.parametrize("manga", [True, False])
def test_a_filters_variance_factor_is_that_of_the_whole_covariance_of_the_cells(tmp_path, manga):
    """``filter_variance_factor``: the variance of a Gaussian-weighted sum of cells over the sum of the cells' own,
    for spaxels of equal noise, is that of the grid's whole cell-by-cell covariance (written out from the
    spaxel-by-spaxel matrix) at every cell far from the edges, within 5 % (where the cells' edges fall on the spaxels
    changes it from cell to cell; the factor is their mean); a single cell is 1."""
    from core.maps import filter_variance_factor
    from core.mixing import _kernel

    path = _square_footprint_file(tmp_path, k=14, ny=24, nx=24)
    with fits.open(path, mode="update") as hdul:
        hdul["EMLINE_GFLUX_IVAR"].data[:] = 4.0  # equal noise everywhere
    g = read_maps(path, bad_bits=("DONOTUSE",))
    if not manga:
        g.versdap = SYNTHETIC_VERSDAP
    size = 24  # cells of 14 / 24 = 0.58 spaxels: every spaxel split among cells
    grid = to_grid(g, size=size, margin=0.0)
    w, rho, s = _dense(g, grid, size, 0)
    assert not grid.mask[0].any()
    ws = w * s  # (C, P)
    cov = (ws @ rho @ ws.T).reshape(size, size, size, size)  # (S, S, S, S) every pair of cells
    for scale in (1.0, 2.0):
        k = _kernel(scale)
        half = len(k) // 2
        kk = np.outer(k, k)
        ratios = []
        for y in range(half, size - half):
            for x in range(half, size - half):
                window = cov[y - half:y + half + 1, x - half:x + half + 1, y - half:y + half + 1, x - half:x + half + 1]
                own = np.einsum("ab,abab->", kk**2, window)
                ratios.append(np.einsum("ab,cd,abcd->", kk, kk, window) / own)
        expected = filter_variance_factor(k, grid.cell_spaxels, grid.noise_sigma)
        assert np.mean(ratios) == pytest.approx(expected, rel=0.05), (scale, np.mean(ratios), expected)
        assert expected > (3 if manga else 1.5)
    assert filter_variance_factor(_kernel(0.0), grid.cell_spaxels, grid.noise_sigma) == pytest.approx(1.0)


def test_the_real_galaxys_noise_does_not_depend_on_the_cell_size(real_maps_file):
    """Binned as independent, the real galaxy's faint lines misfit 2.5 times more at 1.3" cells than at
    0.44" (a reduced chi-square of 7.4 against 3.0); with the cube's spatial correlation they agree (1.6)."""
    from core import mixing

    chi2 = []
    for size in (16, 48):
        done = preprocess(real_maps_file, IngestOptions(size=size))
        g, grid = done.maps, done.grid
        resid = mixing.residuals(grid.flux[None], grid.ivar[None], grid.mask[None], list(grid.lines))[0]  # (L, S, S)
        take = [g.lines.index(line) for line in grid.lines]
        snr = np.nanmedian(np.where(g.mask, np.nan, g.flux * np.sqrt(g.ivar))[take], axis=(1, 2))  # (L,) per spaxel
        chi2.append(np.nanmean(resid[snr < 8] ** 2))  # lines whose noise, not the 3 % floor, sets the weights
    assert 0.8 < chi2[0] / chi2[1] < 1.25, chi2


def test_resampling_identity_and_block_binning(tmp_path):
    """At one cell per spaxel the grid is the native crop; at 2 x 2 spaxels per cell it is
    the mean good surface brightness times the cell area, masked when under half is good."""
    rng = np.random.default_rng(5)
    path = _square_footprint_file(tmp_path, hole=(slice(12, 20), slice(14, 23)))
    g = read_maps(path, bad_bits=("DONOTUSE",))
    g.versdap = SYNTHETIC_VERSDAP  # independent spaxels: the variance of a sum is the sum of variances
    g.mask |= rng.random(g.mask.shape) < 0.2  # scattered bad spaxels: 0 to 4 per 2 x 2 block
    g.center = (20.0, 13.0)  # the middle of spaxel (20, 13), i.e. of [20, 21) x [13, 14)
    crop = (slice(None), slice(4, 36), slice(6, 38))

    same = to_grid(g, size=32)
    np.testing.assert_array_equal(same.mask, g.mask[crop])
    np.testing.assert_allclose(same.flux[~same.mask], g.flux[crop][~same.mask], rtol=1e-6)
    np.testing.assert_allclose(same.ivar[~same.mask], g.ivar[crop][~same.mask], rtol=1e-6)
    assert same.pixscale == pytest.approx(g.pixscale)
    assert same.center == pytest.approx((20 - 6, 13 - 4))

    half = to_grid(g, size=16, min_good=0.5)
    # Crop-relative spaxels [14, 15) and [9, 10) are the left and right halves of cells 7
    # and 4, whose centres sit at 7 and 4 in grid coordinates: a quarter cell off.
    assert half.center == pytest.approx((6.75, 4.25))
    assert half.pixscale == pytest.approx(2 * g.pixscale)
    good = ~g.mask[crop]

    def block_sum(a):
        return a.reshape(len(g.lines), 16, 2, 16, 2).sum(axis=(2, 4), dtype=np.float64)  # (L, S, 2, S, 2)

    n_good = block_sum(good)
    f_sum = block_sum(np.where(good, g.flux[crop], 0))
    v_sum = block_sum(np.where(good, 1 / g.ivar[crop], 0))  # every ivar > 0 in this file
    np.testing.assert_array_equal(half.mask, n_good < 2)
    ok = n_good >= 2
    np.testing.assert_allclose(half.flux[ok], f_sum[ok] / n_good[ok] * 4, rtol=1e-5)
    np.testing.assert_allclose(half.ivar[ok], 1 / (v_sum[ok] / n_good[ok] ** 2 * 16), rtol=1e-5)
    # The hole (native rows 12-19, columns 14-22; crop rows 8-15, columns 8-16) fills
    # blocks 4-7 in both axes: no value is invented there.
    assert half.mask[:, 4:8, 4:8].all() and np.isnan(half.flux[:, 4:8, 4:8]).all()


@pytest.mark.parametrize("size", [16, 32, 64])
def test_odd_non_square_map_and_centre(tmp_path, size):
    """A 37 x 41 map, the object off the reference pixel: the grid is square and the
    object's grid position is where its flux lands."""
    flux, ivar, bits = _galaxy(ny=37, nx=41)
    x, y = 23, 16  # object spaxel, 0-based; the WCS reference pixel is (20, 18)
    flux[:, y, x] = 1e4
    ra = 150.0 - 3 * 0.5 / 3600.0  # RA grows to the left: +3 spaxels in x
    dec = -2 * 0.5 / 3600.0  # -2 spaxels in y
    path = _write(_hdul(DR15_CHANNELS, flux, ivar, bits, primary={"OBJRA": ra, "OBJDEC": dec}),
                  tmp_path / "odd-MAPS.fits")
    g = read_maps(path)
    assert g.flux.shape == (19, 37, 41)
    assert g.center == pytest.approx((x, y), abs=1e-3)
    grid = to_grid(g, size=size)
    assert grid.flux.shape == (19, size, size)
    ha = g.lines.index("Ha-6564")
    peak_y, peak_x = np.unravel_index(np.nanargmax(grid.flux[ha]), (size, size))
    assert abs(peak_x - grid.center[0]) < 1 and abs(peak_y - grid.center[1]) < 1


def test_nan_and_inf_are_masked_not_fatal(tmp_path):
    flux, ivar, bits = _galaxy()
    flux[3, 18, 20], flux[4, 18, 21] = np.nan, -np.inf
    ivar[5, 18, 22], ivar[6, 18, 23], ivar[7, 18, 24] = np.nan, np.inf, -1.0
    path = _write(_hdul(DR15_CHANNELS, flux, ivar, bits), tmp_path / "nan-MAPS.fits")
    g = read_maps(path, lines=DR15_CHANNELS)
    for k, x in zip(range(3, 8), range(20, 25)):
        assert g.mask[k, 18, x]
        assert g.mask[k].sum() == (~g.footprint).sum() + 1  # that spaxel and the uncovered ones
    grid = to_grid(g, size=37)
    assert np.isfinite(grid.flux[~grid.mask]).all() and np.isfinite(grid.ivar).all()
    assert (grid.ivar[~grid.mask] > 0).all()


def test_z_keyword_wins_over_scinpvel(tmp_path):
    path = _write(_hdul(DR15_CHANNELS, *_galaxy(), primary={"Z": 0.0251}), tmp_path / "z-MAPS.fits")
    assert read_maps(path).z == 0.0251
    assert read_maps(tmp_path / "z-MAPS.fits").mangaid == "1-999"


# --------------------------------------------------------------------------------------
# Bad input: every message names the file and the problem


def _expect(path, *words, **kwargs):
    with pytest.raises(MapsError) as info:
        read_maps(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


def test_not_fits_and_missing_file(tmp_path):
    text = tmp_path / "notes-MAPS.fits"
    text.write_text("these are not the maps you are looking for\n" * 100)
    _expect(text, "not a readable FITS file")
    empty = tmp_path / "empty-MAPS.fits"
    empty.write_bytes(b"")
    _expect(empty, "not a readable FITS file")
    _expect(tmp_path / "absent-MAPS.fits.gz", "file not found")


def test_truncated_and_corrupt_files(small_file, tmp_path):
    raw = small_file.read_bytes()
    packed = gzip.compress(raw)
    cut = tmp_path / "cut-MAPS.fits.gz"
    cut.write_bytes(packed[: len(packed) // 2])
    _expect(cut, "gzip", "truncated")

    damaged = bytearray(packed)
    damaged[len(damaged) // 2: len(damaged) // 2 + 64] = bytes(64)
    bad = tmp_path / "corrupt-MAPS.fits.gz"
    bad.write_bytes(bytes(damaged))
    _expect(bad, "gzip", "corrupt")

    # An uncompressed FITS file cut inside the EMLINE_GFLUX_MASK data, plain and gzipped.
    short = tmp_path / "short-MAPS.fits"
    short.write_bytes(raw[: len(raw) - 5000])
    _expect(short, "truncated")
    short_gz = tmp_path / "short-MAPS.fits.gz"
    short_gz.write_bytes(gzip.compress(raw[: len(raw) - 5000]))
    _expect(short_gz, "truncated")


def test_missing_extension(tmp_path):
    hdul = _hdul(DR15_CHANNELS, *_galaxy())
    del hdul["EMLINE_GFLUX_IVAR"]
    _expect(_write(hdul, tmp_path / "noivar-MAPS.fits"), "EMLINE_GFLUX_IVAR", "missing")


def test_missing_channels_are_named(tmp_path):
    keep = [k for k, n in enumerate(DR15_CHANNELS) if n not in ("OIII-5008", "Ha-6564")]
    flux, ivar, bits = (a[keep] for a in _galaxy())
    path = _write(_hdul([DR15_CHANNELS[k] for k in keep], flux, ivar, bits), tmp_path / "few-MAPS.fits")
    message = _expect(path, "OIII-5008, Ha-6564", "missing")
    assert "NII-6585" in message  # it lists what the file has


def test_mismatched_shapes(tmp_path):
    flux, ivar, bits = _galaxy()
    _expect(_write(_hdul(DR15_CHANNELS, flux, ivar[:, :, :-1], bits), tmp_path / "shape-MAPS.fits"),
            "shapes disagree", "EMLINE_GFLUX_IVAR")


def test_no_channel_names_and_no_plateifu(tmp_path):
    hdul = _hdul(DR15_CHANNELS, *_galaxy())
    for i in range(1, len(DR15_CHANNELS) + 1):
        del hdul["EMLINE_GFLUX"].header[f"C{i:02d}"]
    _expect(_write(hdul, tmp_path / "nonames-MAPS.fits"), "no channel names", "EMLINE_GFLUX")

    hdul = _hdul(DR15_CHANNELS, *_galaxy())
    del hdul[0].header["PLATEIFU"]
    _expect(_write(hdul, tmp_path / "noid-MAPS.fits"), "PLATEIFU")


@pytest.mark.parametrize("keys", [{"CTYPE1": "RA---XYZ"}, {"CDELT1": 0.0}], ids=["projection", "singular"])
def test_invalid_wcs(tmp_path, keys):
    hdul = _hdul(DR15_CHANNELS, *_galaxy(), header={**_wcs_header(), **keys})
    _expect(_write(hdul, tmp_path / "wcs-MAPS.fits"), "WCS of EMLINE_GFLUX is invalid")


def test_unknown_mask_bit_name(small_file):
    _expect(small_file, "unknown mask bit", "NOTABIT", bad_bits=("NOCOV", "NOTABIT"))


def test_all_masked_line_is_rejected_by_preprocess(tmp_path):
    flux, ivar, bits = _galaxy()
    bits[DR15_CHANNELS.index("HeII-4687")] |= DONOTUSE
    path = _write(_hdul(DR15_CHANNELS, flux, ivar, bits), tmp_path / "dark-MAPS.fits")
    assert read_maps(path).mask[DEFAULT_LINES.index("HeII-4687")].all()  # reading alone is fine
    with pytest.raises(MapsError) as info:
        preprocess(path, IngestOptions())
    assert str(path) in str(info.value) and "no good spaxels in line(s) HeII-4687" in str(info.value)


# --------------------------------------------------------------------------------------
# Normalisation


@pytest.fixture(scope="module")
def grid(small_file):
    return to_grid(read_maps(small_file), size=32)


@pytest.mark.parametrize("mode", NORMALISATIONS)
def test_normalise_round_trip(grid, mode):
    out, scale = normalise(grid, mode)
    assert (out.norm, out.scale) == (mode, scale) and scale > 0
    np.testing.assert_array_equal(out.mask, grid.mask)
    assert np.isnan(out.flux[out.mask]).all() and (out.ivar[out.mask] == 0).all()
    np.testing.assert_allclose(denormalise(out.flux, scale, mode), grid.flux, rtol=1e-5, equal_nan=True)
    good = ~grid.mask
    if mode == "asinh":
        # Delta method: ivar of asinh(f / s) is ivar(f) / (d asinh(f / s) / df)^2.
        f, eps = grid.flux[good].astype(np.float64), 1e-3
        slope = (np.arcsinh((f + eps) / scale) - np.arcsinh((f - eps) / scale)) / (2 * eps)
        np.testing.assert_allclose(out.ivar[good], grid.ivar[good] / slope**2, rtol=1e-4)
    else:
        # A linear scaling keeps every cell's signal-to-noise.
        np.testing.assert_allclose(out.flux[good] * np.sqrt(out.ivar[good]),
                                   grid.flux[good] * np.sqrt(grid.ivar[good]), rtol=1e-5)
    ha = grid.lines.index("Ha-6564")
    if mode == "ha_peak":
        assert np.percentile(out.flux[ha][good[ha]], 99) == pytest.approx(1.0, rel=1e-5)
    if mode == "ha_total":
        assert out.flux[ha][good[ha]].sum() == pytest.approx(1.0, rel=1e-5)


def test_denormalise_a_batch_with_per_galaxy_scales(grid):
    outs = [normalise(grid, "asinh"), normalise(grid, "ha_peak")]
    batch = np.stack([outs[0][0].flux, outs[0][0].flux * 0.5])  # (N, L, S, S)
    scales = np.array([outs[0][1], 2 * outs[0][1]])[:, None, None, None]  # (N, 1, 1, 1)
    back = denormalise(batch, scales, "asinh")
    np.testing.assert_allclose(back[0], grid.flux, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(back[1], 2 * np.sinh(0.5 * outs[0][0].flux) * outs[0][1], rtol=1e-5)


def test_normalise_guards(grid):
    ha = grid.lines.index("Ha-6564")
    dark = grid.__class__(**{**grid.__dict__, "mask": grid.mask.copy(), "flux": grid.flux.copy()})
    dark.mask[ha] = True
    dark.flux[ha] = np.nan
    for mode in ("ha_peak", "ha_total", "asinh"):
        with pytest.raises(MapsError) as info:
            normalise(dark, mode)
        assert str(grid.path) in str(info.value) and "Ha-6564" in str(info.value)
    assert normalise(dark, "none")[1] == 1.0
    with pytest.raises(BlueberryError, match="unknown normalisation"):
        normalise(grid, "zscore")
    with pytest.raises(BlueberryError, match="already normalised"):
        normalise(normalise(grid, "ha_peak")[0], "asinh")


def test_preprocess_chains_read_grid_normalise(small_file):
    p = preprocess(small_file, IngestOptions(size=24, norm="ha_peak"))
    g, grid, scale = p.maps, p.grid, p.scale
    assert g.flux.shape == (19, 37, 41) and grid.flux.shape == (19, 24, 24)
    assert grid.norm == "ha_peak" and grid.scale == scale
    physical = to_grid(read_maps(small_file), size=24)
    np.testing.assert_allclose(denormalise(grid.flux, scale, "ha_peak"), physical.flux, rtol=1e-5, equal_nan=True)
