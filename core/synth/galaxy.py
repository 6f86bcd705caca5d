"""One synthetic galaxy (:func:`make_galaxy`): its maps as a MAPS file stores them, and its truth.

The stages, each drawing from the galaxy's own random generator in this order: the
bundle, grid and PSF, the stars, the gas and an anomaly's region
(:mod:`core.synth.geometry`); the emission (:mod:`core.synth.ionisation`); the
brightness; noise and masks (:mod:`core.synth.observe`); the position on the sky. The
equivalent widths draw from a second stream of their own (:data:`EW_STREAM`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import BlueberryError
from core.lines import BPT_LINES, RELEASES
from core.synth.config import ANOMALY_KINDS, APERTURE, BUNDLES, NORMAL_CLASSES, SynthConfig
from core.synth.geometry import EARLY, bundle, make_sky, uniform
from core.synth.ionisation import Emission, ionise
from core.synth.observe import equivalent_widths, observe
from core.synth.spectra import BLUEBERRY, DOUBLETS, RATIOS
from core.synth.templates import load_templates
from core.synth.writer import write_maps_file

#: The host class of each anomaly: the galaxy its feature sits in.
HOSTS = {"blueberry": "blueberry", "offnuclear": "sf", "cones": "seyfert"}
#: The component that makes each anomaly, which must stand out of the noise.
FEATURES = {"blueberry": "starburst", "offnuclear": "blob", "cones": "cones"}


@dataclass
class SynthGalaxy:
    """One synthetic galaxy: its maps (as the MAPS file stores them) and its truth."""

    galaxy_id: str  # plate-ifudesign, e.g. "90003-12704"
    mangaid: str
    channels: tuple  # DAP channel names, the order of the first axis of the maps
    model: np.ndarray  # (C, ny, nx) noiseless observed flux, 1E-17 erg/s/cm^2/spaxel
    flux: np.ndarray  # (C, ny, nx) model + noise, zero where nothing was observed
    ivar: np.ndarray  # (C, ny, nx) inverse variance of the noise; 0 where nothing was observed
    mask: np.ndarray  # (C, ny, nx) int32 MANGA_DAPPIXMASK bits
    snr: np.ndarray  # (ny, nx) continuum S/N (SPX_SNR)
    binid: np.ndarray  # (ny, nx) one bin per covered spaxel, -1 elsewhere
    ra: float
    dec: float
    z: float
    pa: float  # major axis, degrees east of north
    ellipticity: float  # 1 - b/a
    reff: float  # effective radius, arcsec
    header: dict  # extra primary-header keys (PSF FWHM ...)
    truth: dict  # the truth-table row
    ew: np.ndarray | None = None  # (C, ny, nx) equivalent widths (EMLINE_GEW), Angstrom
    ew_ivar: np.ndarray | None = None  # (C, ny, nx) their inverse variance

    def write(self, path) -> Path:
        return write_maps_file(
            path, galaxy_id=self.galaxy_id, mangaid=self.mangaid, ra=self.ra, dec=self.dec, z=self.z,
            channels=self.channels, flux=self.flux, ivar=self.ivar, mask=self.mask, binid=self.binid,
            snr=self.snr, pa=self.pa, ellipticity=self.ellipticity, reff=self.reff, extra_header=self.header,
            ew=self.ew, ew_ivar=self.ew_ivar)


def survey_file_name(galaxy_id: str) -> str:
    """The MAPS file name of a synthetic galaxy, patterned on the DAP's."""
    return f"manga-{galaxy_id}-MAPS-SYNTH-GAU.fits.gz"


def _ids(index: int, fibres: int) -> tuple[str, str]:
    # Plates from 90000 up: no real MaNGA plate has such a number, so ids never collide.
    # A plate carries 17 IFUs; the design number starts with the bundle size as MaNGA's do.
    plate, slot = 90000 + index // 17, index % 17 + 1
    return f"{plate}-{fibres * 100 + slot}", f"90-{index:06d}"


#: The random streams of a galaxy besides its main one, each a spawn key after the index: a
#: stream added later leaves the earlier streams' draws, and so the earlier files, unchanged.
EW_STREAM = 1


def _rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, *stream)))


def galaxy_file_name(index: int, seed: int, truth_class: str, config: SynthConfig) -> str:
    """The file name of galaxy ``index``, without making it: the bundle that names it is its first draw."""
    return survey_file_name(_ids(index, bundle(_rng(seed, index), truth_class, config))[0])


_BLAS = None


def _one_blas_thread():
    """A context that keeps BLAS on one thread: the blur matrices are tiny, and threaded
    BLAS on a busy machine makes them 10 to 100 times slower."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def make_galaxy(index: int, seed: int, truth_class: str, release: str = "dr15",
                config: SynthConfig = SynthConfig()) -> SynthGalaxy:
    """Galaxy number ``index`` of the survey with ``seed``, of class ``truth_class``.

    Everything random comes from ``SeedSequence(seed, spawn_key=(index,))``, so a galaxy
    does not depend on which process makes it or on the other galaxies.
    """
    with _one_blas_thread():
        return _make_galaxy(index, seed, truth_class, release, config)


def _brightness(rng, templates: dict, emission: Emission, host: str, truth_class: str, channels,
                config: SynthConfig):
    """``(model, central Ha, noise)``: the noiseless cube scaled to a drawn central Ha flux,
    brightened where it would drown in the galaxy's noise level (also drawn here)."""
    ch = {name: i for i, name in enumerate(channels)}
    ha = ch[BPT_LINES["ha"]]
    lc = (BLUEBERRY if host == "blueberry" else templates["classes"][host])["log_ha_cen"]
    ha_cen = 10 ** rng.normal(lc["median"], lc["std"])
    model = emission.model()
    sigma_gal = config.noise * 10 ** rng.normal(0, config.noise_scatter)
    floor = config.min_ha_snr * sigma_gal / model[ha].max()
    feature = FEATURES.get(truth_class)
    if feature:
        # An anomaly lost in the noise is no anomaly: its [OIII] peaks at >= 15 sigma.
        oiii = emission.comps[feature][ch[BPT_LINES["oiii"]]]
        floor = max(floor, 15 * sigma_gal / (emission.amp[feature] * oiii.max()))
    ha_cen = max(ha_cen, floor)
    model *= ha_cen
    for weak, (strong, ratio) in DOUBLETS.items():
        if weak in ch and strong in ch:
            model[ch[weak]] = model[ch[strong]] * ratio
    return model, ha_cen, sigma_gal


def _position(rng, host: str) -> tuple[float, float, float]:
    """``(z, ra, dec)``, drawn in that order; dec uniform on the sphere between -10 and 70 deg."""
    z = uniform(rng, 0.02, 0.05) if host == "blueberry" else float(np.clip(10 ** rng.normal(math.log10(0.035), 0.2), 0.01, 0.15))
    ra = uniform(rng, 0, 360)
    dec = math.degrees(math.asin(uniform(rng, math.sin(math.radians(-10)), math.sin(math.radians(70)))))
    return z, ra, dec


def _make_galaxy(index, seed, truth_class, release, config) -> SynthGalaxy:
    if release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; choose one of {', '.join(RELEASES)}")
    if truth_class not in NORMAL_CLASSES + ANOMALY_KINDS:
        raise ValueError(f"unknown class {truth_class!r}; choose one of {NORMAL_CLASSES + ANOMALY_KINDS}")
    templates = load_templates(config.templates)
    rng = _rng(seed, index)
    channels = RELEASES[release]
    host = HOSTS.get(truth_class, truth_class)

    fibres = bundle(rng, truth_class, config)
    sky = make_sky(rng, fibres, host, truth_class, config)
    emission = ionise(rng, templates, sky, host, truth_class, channels, config.bpt_margin)
    if emission is None:
        raise BlueberryError(f"galaxy {index} (seed {seed}, {truth_class}) never reached its BPT class")
    model, ha_cen, sigma_gal = _brightness(rng, templates, emission, host, truth_class, channels, config)
    cont = sky.grid.blur(sky.stars.stellar[None])[0]
    obs = observe(rng, model, cont / cont.max(), sky.grid.radius, sigma_gal, host in EARLY, channels, config)
    z, ra, dec = _position(rng, host)
    log_ew = (BLUEBERRY if host == "blueberry" else templates["classes"][host])["log_ew_ha"]
    widths = equivalent_widths(_rng(seed, index, EW_STREAM), log_ew, host, model[channels.index(BPT_LINES["ha"])],
                               obs.flux, obs.ivar, cont, sky.grid.aperture(APERTURE))

    galaxy_id, mangaid = _ids(index, fibres)
    grid, stars, gas = sky.grid, sky.stars, sky.gas
    has_disk = "disk" in emission.comps
    truth = {
        "galaxy_id": galaxy_id, "mangaid": mangaid, "file": survey_file_name(galaxy_id), "index": index,
        "truth_class": truth_class, "truth_anomaly": truth_class in ANOMALY_KINDS,
        "host_class": host, "release": release, "n_fibres": fibres, "bundle_arcsec": BUNDLES[fibres],
        "map_size": grid.n, "ra": ra, "dec": dec, "z": z, "psf_fwhm": grid.psf, "inclination": stars.inclination,
        "ba": stars.ba, "pa": stars.pa, "re_arcsec": stars.re, "bulge_fraction": stars.bt,
        "bulge_re_arcsec": stars.re_bulge, "n_clumps": gas.n_clumps if has_disk else 0,
        "clump_fraction": gas.clump_fraction if has_disk else 0.0, "a_v": emission.a_v,
        "metallicity_gradient": emission.gradient if has_disk else 0.0, "nuclear_fraction": emission.f_nuc,
        "ha_cen": float(ha_cen), "noise": sigma_gal,
        **{f"tpl_{k}": float(emission.main[k]) for k in RATIOS},
        **{f"cen_{k}": v for k, v in emission.central.items()}, "cen_bpt": emission.bpt,
        **sky.feature.truth, "anomaly_ionisation": emission.ionisation,
        "has_star": obs.has_star, "has_dead_fibre": obs.has_dead, "ew_ha_cen": widths.central,
    }
    header = {"RFWHM": (grid.psf, "Reconstructed FWHM in r-band (arcsec)"),
              "GFWHM": (grid.psf * 1.04, "Reconstructed FWHM in g-band (arcsec)"),
              "SYNSEED": (int(seed), "Seed of the synthetic survey"),
              "SYNINDEX": (int(index), "Index of the galaxy in the synthetic survey")}
    return SynthGalaxy(galaxy_id, mangaid, channels, model.astype(np.float32), obs.flux.astype(np.float32),
                       obs.ivar.astype(np.float32), obs.mask, obs.snr.astype(np.float32), obs.binid, ra, dec, z,
                       stars.pa, 1 - stars.ba, stars.re, header, truth, widths.ew.astype(np.float32),
                       widths.ivar.astype(np.float32))
