"""Shared test fixtures: where the real MaNGA samples live, and a fixture that skips without them."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI draws the same examples every run (HYPOTHESIS_PROFILE=ci in .ci/run), so a merge is judged on the code, not on
# the luck of the draw; a developer's runs keep drawing new examples, which is where rare failures are found.
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: Real MaNGA files, beside the repository (never copied into it); see its README.md.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: A real DR15 DAP MAPS file (plateifu 7815-3702, 22 channels, 42 x 42 spaxels).
REAL_MAPS = SHARED_DATA / "manga" / "manga-7815-3702-MAPS-HYB10-GAU-MILESHC.fits.gz"


@pytest.fixture(scope="session")
def real_maps_file() -> Path:
    """Path of the real DR15 MAPS file; skips the test where ../shared/data is absent."""
    if not REAL_MAPS.is_file():
        pytest.skip(f"real MaNGA MAPS file not found at {REAL_MAPS} (../shared/data beside the repository)")
    return REAL_MAPS
