"""What a synthetic galaxy's gas emits: components, dust, gradients, and the balance that
gives the central aperture its class.

A galaxy's emission is the sum of components, each a map from :mod:`core.synth.geometry`
with a ratio draw from :mod:`core.synth.spectra`: the star-forming disk (with metallicity
gradients), a composite's core, a Seyfert's or LINER's point-like nucleus (the PSF makes
it PSF-sized), the diffuse LIER emission of LINERs and retired galaxies (it follows the
starlight), a blueberry's starburst, and an anomaly's blob or cones. Dust reddens every
line through a spatially varying A_V map, so the observed Ha/Hb is never below 2.86.
The components' shares of the central Ha are drawn, then the nucleus is made more
dominant until the central aperture has the host's BPT class; a draw that never gets
there is redrawn.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.bpt import log_ratios
from core.lines import BPT_LINES, wavelength
from core.synth.config import APERTURE, CENTRAL_BPT
from core.synth.geometry import EARLY, Grid, Sky, uniform
from core.synth.spectra import GRADIENT_GROUPS, R_V, av_from_balmer, bpt_class, calzetti_k, draw_ratios, spectrum


@dataclass
class Emission:
    """The gas's emission, balanced so that its central aperture has the host's BPT class."""

    main: dict  # the host's ratio draw: the template ratios and "weak", the weak lines
    a_v: float  # V-band extinction at the centre (mag), from the draw's Balmer decrement
    gradient: float  # metallicity gradient of the disk, dex per Re in log [NII]/Ha
    comps: dict  # component name -> (C, n, n) observed cube (dust, PSF), Ha = 1 somewhere
    amp: dict  # component name -> its amplitude: sum(amp * comps) has central Ha = 1
    f_nuc: float  # fraction of the central Ha from the nuclear components ("core", "nucleus")
    central: dict  # the four BPT log ratios of the central aperture, noiseless
    bpt: str  # their class, checked with half the draw's margin
    ionisation: str  # what ionises an off-nuclear blob ("seyfert" or "liner"); "" for others

    def model(self) -> np.ndarray:
        """(C, n, n) the noiseless observed cube, central Ha = 1."""
        return sum(self.amp[c] * self.comps[c] for c in self.comps)


@dataclass
class _Shares:
    """How the Ha of the central aperture is shared between the components."""

    nuc: float = 0.0  # the nuclear components ("core", "nucleus")
    sf: float = 0.0  # a LINER's star-forming disk, if it has one
    total: float = 0.0  # an anomaly's blob or cones: its total Ha in units of the disk's


@dataclass
class _Light:
    """What one attempt at a galaxy's emission draws from and paints with."""

    rng: np.random.Generator
    templates: dict  # the class templates (load_templates)
    margin: float  # minimum distance (dex) of a ratio draw from the BPT demarcations
    channels: tuple  # DAP channel names: the order of the cubes' first axis
    grid: Grid
    transmission: np.ndarray  # (C, n, n) fraction of each line's flux that the dust lets through
    ch: dict = field(init=False)  # channel name -> row of the cubes

    def __post_init__(self):
        self.ch = {name: i for i, name in enumerate(self.channels)}

    def ratios(self, cls: str) -> dict:
        return draw_ratios(self.rng, self.templates, cls, self.margin)

    def cube(self, m, r, grads=None) -> np.ndarray:
        """Observed (dust, PSF) cube of a component: map ``m`` with line ratios ``r``, some of
        which vary across the map by ``grads`` (template ratio -> (N, N) offset in dex)."""
        s = spectrum(r, self.channels)
        stack = [m] + [m * 10**g for g in (grads or {}).values()]
        blurred = self.grid.blur(np.stack(stack).astype(np.float32))  # (1 + gradients, n, n)
        out = blurred[0][None] * s[:, None, None]
        for b, group in zip(blurred[1:], (grads or {})):
            rows = [self.ch[line] for line in GRADIENT_GROUPS[group] if line in self.ch]
            out[rows] = b[None] * s[rows, None, None]
        return out * self.transmission


def _transmission(sky: Sky, av: float, k_lines: np.ndarray) -> np.ndarray:
    """(C, n, n) dust transmission of each line for central extinction ``av``: the dust
    thins out with radius and thickens in the HII regions, and is seen through the PSF."""
    stars, clumps = sky.stars, sky.gas.clumps
    av_map = av * (0.35 + 0.65 * np.exp(-stars.r_disk / (1.5 * stars.re))) * (0.8 + 0.4 * clumps / clumps.max())
    av_obs = sky.grid.blur(av_map[None])[0] / sky.grid.blur(np.ones((1,) + av_map.shape))[0]
    return 10 ** (-0.4 * av_obs[None] * k_lines[:, None, None] / R_V)


def _host_components(light: _Light, sky: Sky, main: dict, disk_grads: dict, host: str, truth_class: str):
    """The host galaxy's components (name -> cube) and their shares of the central Ha."""
    comps, shares, rng = {}, _Shares(), light.rng
    if host in ("sf", "comp", "seyfert"):
        disk_r = main if host == "sf" else light.ratios("sf")
        comps["disk"] = light.cube(sky.gas.gas, disk_r, disk_grads)
    if host == "comp":
        comps["core"] = light.cube(sky.stars.bulge, main)
        shares.nuc = uniform(rng, 0.55, 0.85)
    elif host == "seyfert":
        comps["nucleus"] = light.cube(sky.grid.point(), main)
        # An ionisation cone's nucleus is often itself obscured: less dominant.
        shares.nuc = uniform(rng, 0.4, 0.7) if truth_class == "cones" else uniform(rng, 0.6, 0.9)
    elif host in EARLY:
        comps["diffuse"] = light.cube(sky.stars.stellar, main)
        if host == "liner":
            comps["nucleus"] = light.cube(sky.grid.point(), main)
            shares.nuc = uniform(rng, 0.3, 0.7)
            if rng.random() < 0.3:  # some LINERs live in spirals with star formation
                comps["disk"] = light.cube(sky.gas.gas, light.ratios("sf"), disk_grads)
                shares.sf = uniform(rng, 0.05, 0.15)
    elif host == "blueberry":
        comps["starburst"] = light.cube(sky.stars.disk, main)
    return comps, shares


def _anomaly_component(light: _Light, sky: Sky, main: dict, comps: dict, shares: _Shares, truth_class: str) -> str:
    """Add an anomaly's blob or cones to ``comps``; returns what ionises a blob ("" for others)."""
    if truth_class == "offnuclear":
        kind = "seyfert" if light.rng.random() < 0.5 else "liner"
        comps["blob"] = light.cube(sky.feature.shape, light.ratios(kind))
        shares.total = uniform(light.rng, 0.15, 0.4)
        return kind
    if truth_class == "cones":
        length = sky.feature.truth["anomaly_size"]
        # The ionisation parameter falls with distance from the AGN: lower [OIII]/Hb outwards.
        grads = {"log_oiii_hb": -0.25 * np.minimum(np.hypot(sky.grid.xe, sky.grid.yn) / length, 1.5)}
        comps["cones"] = light.cube(sky.feature.shape, main, grads)
        shares.total = uniform(light.rng, 0.6, 1.4)
    return ""


def _amplitudes(comps: dict, ap: dict, ha: int, host: str, shares: _Shares) -> dict:
    """Each component's amplitude: the central aperture's Ha is 1, shared as ``shares`` says."""
    amp = {c: shares.nuc / ap[c][ha] for c in ("core", "nucleus") if c in comps}
    if host == "liner":
        amp["diffuse"] = (1 - shares.nuc - shares.sf) / ap["diffuse"][ha]
        if "disk" in comps:
            amp["disk"] = shares.sf / ap["disk"][ha]
    else:
        extended = next(c for c in ("disk", "diffuse", "starburst") if c in comps)
        amp[extended] = (1 - shares.nuc) / ap[extended][ha]
    for c in ("blob", "cones"):
        if c in comps:
            amp[c] = shares.total * amp["disk"] * comps["disk"][ha].sum() / comps[c][ha].sum()
    return amp


def _balance(comps: dict, shares: _Shares, host: str, light: _Light):
    """``(amplitudes, central ratios, their class)`` once the central aperture has the host's
    class, raising the nucleus's share as needed; None if it never does."""
    in_aperture = light.grid.aperture(APERTURE)
    ha = light.ch[BPT_LINES["ha"]]
    ap = {name: c[:, in_aperture].sum(axis=1) for name, c in comps.items()}  # (C,) each
    for _boost in range(8):
        amp = _amplitudes(comps, ap, ha, host, shares)
        sums = sum(amp[c] * ap[c] for c in comps)
        central = log_ratios({name: sums[light.ch[name]] for name in BPT_LINES.values()})
        got = bpt_class(central, light.margin / 2)
        if host == "blueberry" or got == CENTRAL_BPT[host]:
            return amp, central, got
        # Too diluted by the disk: let the nucleus (or the LIER gas) dominate more.
        shares.nuc, shares.sf = (1 + shares.nuc) / 2, shares.sf / 2
    return None


def ionise(rng, templates: dict, sky: Sky, host: str, truth_class: str, channels: tuple,
           margin: float) -> Emission | None:
    """The emission of a galaxy of class ``truth_class`` (host class ``host``), or None if
    20 draws of its ratios all missed the host's BPT class in the central aperture."""
    k_lines = calzetti_k([wavelength(c) for c in channels])
    rr = np.minimum(sky.stars.r_disk / sky.stars.re, 3.0)
    for _attempt in range(20):
        main = draw_ratios(rng, templates, host, margin)
        av = float(av_from_balmer(main["log_ha_hb"]))
        light = _Light(rng, templates, margin, channels, sky.grid, _transmission(sky, av, k_lines))
        g = rng.normal(-0.08, 0.03)  # metallicity gradient, dex per Re in log [NII]/Ha
        disk_grads = {"log_nii_ha": g * rr, "log_oiii_hb": -1.5 * g * rr, "log_sii_ha": 0.04 * rr,
                      "log_oi_ha": 0.06 * rr}
        comps, shares = _host_components(light, sky, main, disk_grads, host, truth_class)
        ionisation = _anomaly_component(light, sky, main, comps, shares, truth_class)
        balanced = _balance(comps, shares, host, light)
        if balanced is not None:
            amp, central, got = balanced
            return Emission(main, av, g, comps, amp, shares.nuc, central, got, ionisation)
    return None
