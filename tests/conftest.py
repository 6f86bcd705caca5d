"""Shared test fixtures: where the real MaNGA samples live, and a fixture that skips without them."""
from __future__ import annotations

from pathlib import Path

import pytest

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
