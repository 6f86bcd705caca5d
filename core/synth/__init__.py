"""A synthetic MaNGA-like survey, written as real DAP-format MAPS files.

An astronomer trying Blueberry has no MaNGA data at hand and the tests run offline, so
this package makes galaxies that look like MaNGA's, with a ground truth, and writes them in
the layout of the MaNGA Data Analysis Pipeline (DAP) ``MAPS`` files: the same extensions,
header keys, channel names ``C01..``, celestial TAN WCS and ``MANGA_DAPPIXMASK`` bits, so
the reader of real data serves the synthetic survey too.

The modules, in the order a galaxy is made:

- :mod:`~core.synth.config`: the classes and :class:`SynthConfig`, the survey's parameters.
- :mod:`~core.synth.templates`: the per-class line-ratio templates, fitted to real DR17
  DAPall central fluxes (:func:`derive_templates`, committed as ``assets/synth_templates.json``).
- :mod:`~core.synth.spectra`: line ratios per class, Case B (T = 10^4 K, n_e = 100 cm^-3),
  atomic doublet ratios and the Calzetti et al. (2000) dust curve.
- :mod:`~core.synth.geometry`: the bundle, grid and PSF; inclined exponential disks with
  Sersic bulges; clumpy HII regions; the anomalies' regions.
- :mod:`~core.synth.ionisation`: the components of the gas's emission, with dust and
  metallicity gradients, balanced so the central aperture has the class's BPT class.
- :mod:`~core.synth.observe`: the bundle's hexagonal footprint, noise and masks.
- :mod:`~core.synth.galaxy`: one galaxy from these stages (:func:`make_galaxy`) and its truth.
- :mod:`~core.synth.writer`: the DAP ``MAPS`` file writer (:func:`write_maps_file`), the
  mirror of :mod:`core.maps`.
- :mod:`~core.synth.survey`: the survey (:func:`generate_survey`), its ``truth.csv`` and
  ``synth.json``.

The anomalies (a few per cent, ``truth_anomaly``), each visible in the line maps:

- ``blueberry``: a compact (sub-PSF) starburst with extreme [OIII]/Hb ~ 9, strong
  [NeIII] and HeII and very weak [NII], [SII] and [OI] (low metallicity; Yang et al. 2017,
  ApJ 847, 38): a blob whose [OIII] map outshines Ha by three times.
- ``offnuclear``: a star-forming disk with a compact Seyfert- or shock/LINER-like region
  offset from the nucleus (a wandering AGN or a shock from an interaction): a blob that is
  ordinary in Ha but stands out in [OIII], [NII], [SII] and [OI].
- ``cones``: a Seyfert whose extended narrow-line region is a bicone of high-ionisation
  gas reaching the edge of the bundle, along an axis unrelated to the disk. Chosen
  because it is a real, rare and scientifically prized MaNGA population (the DAPall
  subset the templates come from is a bicone-candidate sample; see also the MaNGA AGN
  ionisation-cone searches), and because it tests what a per-galaxy line-ratio
  catalogue cannot: its central line ratios are those of an ordinary Seyfert, so only
  the spatial shape of the [OIII] map gives it away.
"""
from core.synth.config import ANOMALY_KINDS, APERTURE, BUNDLES, CENTRAL_BPT, NORMAL_CLASSES, SynthConfig
from core.synth.galaxy import SynthGalaxy, make_galaxy, survey_file_name
from core.synth.spectra import (
    BLUEBERRY, CASE_B, DOUBLETS, GRADIENT_GROUPS, R_V, RATIOS, WEAK_LINES, av_from_balmer, calzetti_k,
)
from core.synth.survey import assign_classes, class_counts, generate_survey
from core.synth.templates import TEMPLATES_PATH, derive_templates, load_templates
from core.synth.writer import FLUX_UNIT, GZIP_LEVEL, ellcoo, write_maps_file

__all__ = [
    "ANOMALY_KINDS", "APERTURE", "BLUEBERRY", "BUNDLES", "CASE_B", "CENTRAL_BPT", "DOUBLETS", "FLUX_UNIT",
    "GRADIENT_GROUPS", "GZIP_LEVEL", "NORMAL_CLASSES", "RATIOS", "R_V", "TEMPLATES_PATH", "WEAK_LINES",
    "SynthConfig", "SynthGalaxy", "assign_classes", "av_from_balmer", "calzetti_k", "class_counts",
    "derive_templates", "ellcoo", "generate_survey", "load_templates", "make_galaxy", "survey_file_name",
    "write_maps_file",
]
