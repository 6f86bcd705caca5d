"""What ionised gas emits: line ratios drawn per class, Case B, doublets and dust.

Line ratios per class are drawn from multivariate normals fitted to real DR17 DAPall
central fluxes (:mod:`core.synth.templates`) and rejected unless they sit on the right
side of the BPT demarcations (:mod:`core.bpt`) with a margin. Intrinsic Balmer and
Paschen lines follow Case B; dust reddens every line with the Calzetti et al. (2000)
curve; doublets are tied at their atomic ratios, as the DAP ties them in its fits.
"""
from __future__ import annotations

import math

import numpy as np

from core.bpt import RATIOS as BPT_RATIOS
from core.bpt import classify
from core.errors import BlueberryError
from core.lines import wavelength
from core.synth.config import CENTRAL_BPT

#: Case B hydrogen lines relative to Hb (T = 10^4 K, n_e = 100 cm^-3; Storey & Hummer
#: 1995 for the Balmer series, Hummer & Storey 1987 for the Paschen lines).
CASE_B = {
    "Ha-6564": 2.86, "Hb-4862": 1.0, "Hgam-4341": 0.468, "Hdel-4102": 0.259,
    "Heps-3971": 0.159, "Hzet-3890": 0.105, "Heta-3836": 0.0731, "Hthe-3798": 0.0530,
    "H11-3771": 0.0397, "H12-3751": 0.0305, "Peps-9548": 0.0366, "Pzet-9231": 0.0254,
    "Peta-9017": 0.0184,
}
#: Doublets fixed by atomic physics: weak member -> (strong member, flux ratio weak/strong).
DOUBLETS = {
    "OIII-4960": ("OIII-5008", 1 / 2.98), "NII-6549": ("NII-6585", 1 / 3.05),
    "OI-6365": ("OI-6302", 1 / 3.1), "NeIII-3968": ("NeIII-3869", 0.301),
    "ArIII-7753": ("ArIII-7137", 0.241), "SIII-9533": ("SIII-9071", 2.47),
}
#: The ratios of the class templates (multivariate normal, correlations kept): the four
#: BPT ratios, the Balmer decrement and the density-sensitive [SII] doublet ratio.
RATIOS = BPT_RATIOS + ("log_ha_hb", "log_sii_6718_6732")
#: Weak lines taken from the templates as log(line / reference), dereddened.
WEAK_LINES = {
    "OII-3727": "Hb-4862", "OII-3729": "Hb-4862", "NeIII-3869": "OIII-5008",
    "HeI-3889": "Hb-4862", "HeII-4687": "Hb-4862", "NI-5199": "Hb-4862", "NI-5201": "Hb-4862",
    "HeI-5877": "Hb-4862", "HeI-7067": "Hb-4862", "ArIII-7137": "Hb-4862", "SIII-9071": "Hb-4862",
}
#: Lines whose ratio follows a radial gradient, by the template ratio that drives them.
GRADIENT_GROUPS = {
    "log_nii_ha": ("NII-6585", "NII-6549"), "log_oiii_hb": ("OIII-5008", "OIII-4960", "NeIII-3869", "NeIII-3968"),
    "log_sii_ha": ("SII-6718", "SII-6732"), "log_oi_ha": ("OI-6302", "OI-6365"),
}
#: Blueberries are too rare for the DAPall templates: mean and scatter of their ratios
#: after Yang et al. 2017 (ApJ 847, 38; [OIII]5007/Hb ~ 6-10, 12+log(O/H) ~ 7.1-7.8) and
#: Izotov et al. 2011 (green peas). Like the real ones they straddle the
#: maximum-starburst lines at the low-metallicity end, so their BPT class varies.
BLUEBERRY = {
    "mean": {"log_nii_ha": -1.9, "log_oiii_hb": 0.95, "log_sii_ha": -1.5, "log_oi_ha": -2.3,
             "log_ha_hb": 0.49, "log_sii_6718_6732": 0.12},
    "std": {"log_nii_ha": 0.1, "log_oiii_hb": 0.04, "log_sii_ha": 0.08, "log_oi_ha": 0.1,
            "log_ha_hb": 0.02, "log_sii_6718_6732": 0.03},
    "weak": {"OII-3727": -0.45, "OII-3729": -0.35, "NeIII-3869": -1.05, "HeI-3889": -1.0,
             "HeII-4687": -1.8, "NI-5199": -2.5, "NI-5201": -2.5, "HeI-5877": -0.98,
             "HeI-7067": -1.45, "ArIII-7137": -1.2, "SIII-9071": -1.0},
    "log_ha_cen": {"median": 2.3, "std": 0.25},
    # Extreme starbursts: EW(Ha) of several hundred Angstrom (Yang et al. 2017, ApJ 844, 171).
    "log_ew_ha": {"median": 2.6, "std": 0.2},
}
#: Calzetti et al. (2000) total-to-selective extinction.
R_V = 4.05


def calzetti_k(wave) -> np.ndarray:
    """Calzetti et al. (2000) k(lambda) = A_lambda / E(B-V) for vacuum wavelengths in Angstrom."""
    x = np.asarray(wave, dtype=float) / 1e4
    blue = 2.659 * (-2.156 + 1.509 / x - 0.198 / x**2 + 0.011 / x**3) + R_V
    red = 2.659 * (-1.857 + 1.040 / x) + R_V
    return np.where(x < 0.63, blue, red)


def av_from_balmer(log_ha_hb) -> np.ndarray:
    """A_V implied by an observed log(Ha/Hb) for Case B 2.86 and the Calzetti curve (>= 0)."""
    k_hb, k_ha = calzetti_k([wavelength("Hb-4862"), wavelength("Ha-6564")])
    av = 2.5 * R_V / (k_hb - k_ha) * (np.asarray(log_ha_hb, dtype=float) - math.log10(CASE_B["Ha-6564"]))
    return np.clip(av, 0.0, None)


def bpt_class(r, margin: float = 0.0) -> str:
    """The class of log ratios ``r`` (dict), or "ambiguous" unless it holds within ``margin`` dex."""
    shifts = [(0.0, 0.0)] if margin <= 0 else [(dx, dy) for dx in (-margin, margin) for dy in (-margin, margin)]
    names = {str(classify(r["log_nii_ha"] + dx, r["log_oiii_hb"] + dy, r["log_sii_ha"] + dx, r["log_oi_ha"] + dx))
             for dx, dy in shifts}
    return names.pop() if len(names) == 1 else "ambiguous"


def draw_ratios(rng, templates: dict, cls: str, margin: float) -> dict:
    """A ratio vector of class ``cls``: a template draw on the class's side of the BPT lines."""
    if cls == "blueberry":
        r = {k: rng.normal(BLUEBERRY["mean"][k], BLUEBERRY["std"][k]) for k in RATIOS}
        return {**r, "weak": {line: rng.normal(v, 0.05) for line, v in BLUEBERRY["weak"].items()}}
    t = templates["classes"][cls]
    mean, weak = np.asarray(t["mean"]), t["weak"]
    chol = np.linalg.cholesky(np.asarray(t["cov"]) + 1e-6 * np.eye(len(RATIOS)))
    target = CENTRAL_BPT[cls]
    for _ in range(50):
        draws = mean + rng.standard_normal((16, len(RATIOS))) @ chol.T
        for d in draws:
            r = dict(zip(RATIOS, d))
            # Physical bounds of the [SII] doublet (low- and high-density limits).
            r["log_sii_6718_6732"] = float(np.clip(r["log_sii_6718_6732"], -0.35, 0.17))
            if bpt_class(r, margin) == target:
                return {**r, "weak": {line: rng.normal(w["median"], w["std"]) for line, w in weak.items()}}
    raise BlueberryError(f"the {cls!r} template never lands in the {target!r} region of the BPT diagrams")


def spectrum(r: dict, channels) -> np.ndarray:
    """Intrinsic line fluxes relative to Ha (= 1) in ``channels`` order, from ratio draw ``r``."""
    hb = 1.0 / CASE_B["Ha-6564"]
    s = {name: v * hb for name, v in CASE_B.items()}
    s["OIII-5008"] = hb * 10 ** r["log_oiii_hb"]
    s["NII-6585"] = 10 ** r["log_nii_ha"]
    s["OI-6302"] = 10 ** r["log_oi_ha"]
    sii, rho = 10 ** r["log_sii_ha"], 10 ** r["log_sii_6718_6732"]
    s["SII-6718"], s["SII-6732"] = sii * rho / (1 + rho), sii / (1 + rho)
    for line, ref in WEAK_LINES.items():
        s[line] = 10 ** r["weak"][line] * (s["OIII-5008"] if ref == "OIII-5008" else hb)
    for weak, (strong, ratio) in DOUBLETS.items():
        s[weak] = s[strong] * ratio
    return np.array([s[c] for c in channels])
