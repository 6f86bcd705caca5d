"""The classes of the synthetic survey and the parameters of a survey (:class:`SynthConfig`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from core import bpt
from core.maps import MANGA_PIXSCALE

NORMAL_CLASSES: tuple[str, ...] = ("sf", "comp", "seyfert", "liner", "retired")
ANOMALY_KINDS: tuple[str, ...] = ("blueberry", "offnuclear", "cones")
#: The Kewley et al. 2006 class (core.bpt.classify) of each class's central aperture.
#: Retired galaxies are LIERs: LINER-like ratios from old stars, not from a nucleus.
CENTRAL_BPT = {"sf": "sf", "comp": "comp", "seyfert": "seyfert", "liner": "liner", "retired": "liner"}

#: Radius (arcsec) of the central aperture whose summed fluxes define the class.
APERTURE = bpt.APERTURE

#: MaNGA bundles: fibres -> diameter of the hexagonal footprint (arcsec).
BUNDLES = {19: 12.0, 37: 17.0, 61: 22.0, 91: 27.0, 127: 32.0}


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic survey (recorded in the survey's ``synth.json``)."""

    # Relative weights of the ordinary classes (normalised); MaNGA is mostly star-forming,
    # composite and retired, with a few per cent Seyferts and LINERs.
    class_mix: dict = field(default_factory=lambda: {
        "sf": 0.56, "comp": 0.17, "retired": 0.19, "seyfert": 0.04, "liner": 0.04})
    # Fraction of the survey that is a true anomaly (rounded to a whole number of galaxies).
    anomaly_fraction: float = 0.02
    # Relative weights of the anomaly kinds.
    anomaly_mix: dict = field(default_factory=lambda: {k: 1.0 for k in ANOMALY_KINDS})
    # 1-sigma line-flux error per spaxel (1E-17 erg/s/cm^2/spaxel) where the continuum is faint;
    # MaNGA's unbinned maps have ~0.05-0.1.
    noise: float = 0.07
    # Scatter of the noise level between galaxies (dex): depth and conditions vary.
    noise_scatter: float = 0.15
    # How much the error grows on the continuum peak: sigma *= sqrt(1 + this * continuum/peak),
    # because photon noise of the starlight dominates the line-fit errors there.
    noise_continuum: float = 1.0
    # Error multiplier for lines bluer than 4000 A, where the spectrograph throughput drops.
    blue_noise: float = 1.5
    # Mean and scatter of the PSF FWHM (arcsec); MaNGA's reconstructed PSF is ~2.5".
    psf_fwhm: float = 2.5
    psf_scatter: float = 0.15
    # Spaxel size (arcsec).
    pixscale: float = MANGA_PIXSCALE
    # Relative frequency of each bundle (fibres -> weight): a MaNGA plate carries
    # 2 x 19, 4 x 37, 4 x 61, 2 x 91 and 5 x 127-fibre bundles.
    bundle_weights: dict = field(default_factory=lambda: {19: 2, 37: 4, 61: 4, 91: 2, 127: 5})
    # Continuum S/N below which the DAP's fits are flagged UNRELIABLE (whole spaxel).
    unreliable_snr: float = 1.0
    # Probability of a foreground star (FORESTAR + DONOTUSE) and of a dead fibre
    # (DEADFIBER + DONOTUSE, no data) in a galaxy.
    star_probability: float = 0.04
    dead_fibre_probability: float = 0.03
    # Every galaxy's brightest Ha spaxel reaches this S/N (fainter draws are brightened):
    # maps of pure noise teach a map-based model nothing and swamp its anomaly scores.
    min_ha_snr: float = 20.0
    # Minimum distance (dex) of a template draw from every BPT demarcation, so that noise
    # does not move a class across a line.
    bpt_margin: float = 0.05
    # The class templates (derive_templates output); None: the committed assets file.
    templates: str | None = None

    def __post_init__(self):
        unknown = set(self.class_mix) - set(NORMAL_CLASSES)
        if unknown or not self.class_mix or min(self.class_mix.values()) < 0 or sum(self.class_mix.values()) <= 0:
            raise ValueError(f"class_mix needs non-negative weights of {NORMAL_CLASSES}, got {self.class_mix}")
        unknown = set(self.anomaly_mix) - set(ANOMALY_KINDS)
        if unknown or min(self.anomaly_mix.values(), default=0) < 0 or sum(self.anomaly_mix.values()) <= 0:
            raise ValueError(f"anomaly_mix needs non-negative weights of {ANOMALY_KINDS}, got {self.anomaly_mix}")
        if not 0.0 <= self.anomaly_fraction <= 1.0:
            raise ValueError(f"anomaly_fraction must lie in [0, 1], got {self.anomaly_fraction}")
        if set(self.bundle_weights) - set(BUNDLES):
            raise ValueError(f"bundle_weights keys must be among {tuple(BUNDLES)}, got {tuple(self.bundle_weights)}")
        if not all(0 < x < math.inf for x in (self.noise, self.pixscale, self.psf_fwhm)):  # NaN fails too
            raise ValueError("noise, pixscale and psf_fwhm must be positive and finite")
