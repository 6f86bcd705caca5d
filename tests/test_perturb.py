"""The injection benchmark's perturbations (core.perturb): identity at strength 0, only what each kind
claims changes, deterministic for a seed, and none is one of the synthetic survey's kinds."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.perturb import FAMILIES, KINDS, DapMaps, footprint, perturb
from core.synth import ANOMALY_KINDS, make_galaxy


@lru_cache(maxsize=None)
def galaxy(index: int) -> DapMaps:
    """A fresh synthetic galaxy of a seed no test survey uses, as a MAPS file would hold it."""
    g = make_galaxy(index, 424242, ("sf", "seyfert", "retired", "comp")[index % 4], release=("dr15", "dr17")[index % 2])
    return DapMaps(tuple(g.channels), g.flux, g.ivar, g.mask)


kinds = st.sampled_from(sorted(KINDS))
strengths = st.floats(0.05, 1.0)
seeds = st.integers(0, 2**32 - 1)
galaxies = st.integers(0, 3)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(C,) the channels that differ."""
    return (a != b).reshape(len(a), -1).any(axis=1)  # (C, ny * nx) -> (C,)


def test_at_least_twelve_kinds_in_four_families_none_of_the_survey():
    assert len(KINDS) >= 12
    assert {k.family for k in KINDS.values()} == set(FAMILIES)
    assert not set(KINDS) & set(ANOMALY_KINDS)
    assert all(k.changes in ("flux", "ivar") and k.sign in (-1, 0, 1) for k in KINDS.values())


@settings(max_examples=40, deadline=None)
@given(kind=kinds, seed=seeds, index=galaxies)
def test_strength_zero_leaves_the_maps_unchanged(kind, seed, index):
    m = galaxy(index)
    out = perturb(kind, m, np.random.default_rng(seed), 0.0)
    for a, b in ((out.flux, m.flux), (out.ivar, m.ivar), (out.mask, m.mask)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


@settings(max_examples=60, deadline=None)
@given(kind=kinds, seed=seeds, index=galaxies, strength=strengths)
def test_each_kind_changes_what_it_claims_and_nothing_else(kind, seed, index, strength):
    m = galaxy(index)
    before = (m.flux.copy(), m.ivar.copy(), m.mask.copy())
    k = KINDS[kind]
    out = perturb(kind, m, np.random.default_rng(seed), strength)
    for a, b in zip(before, (m.flux, m.ivar, m.mask)):  # the input is not modified
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(out.mask, m.mask)  # no kind sets or clears a mask bit
    claimed = np.array([k.lines is None or c in k.lines for c in m.channels])
    changed, other = (out.flux, m.flux) if k.changes == "flux" else (out.ivar, m.ivar)
    np.testing.assert_array_equal(*((out.ivar, m.ivar) if k.changes == "flux" else (out.flux, m.flux)))
    moved = _changed(changed, other)
    assert moved.any(), f"{kind} at strength {strength:.2f} changed nothing"
    assert not (moved & ~claimed).any(), f"{kind} changed {np.asarray(m.channels)[moved & ~claimed]}"
    fp = footprint(m)
    assert (changed[:, ~fp] == other[:, ~fp]).all(), f"{kind} changed spaxels without data"
    if k.sign:
        delta = (changed[claimed][:, fp].astype(np.float64) - other[claimed][:, fp]).sum()
        assert np.sign(delta) == k.sign, f"{kind}: summed change {delta:g}, claimed sign {k.sign}"


@settings(max_examples=30, deadline=None)
@given(kind=kinds, seed=seeds, index=galaxies, strength=strengths)
def test_deterministic_for_a_seed(kind, seed, index, strength):
    m = galaxy(index)
    a = perturb(kind, m, np.random.default_rng(seed), strength)
    b = perturb(kind, m, np.random.default_rng(seed), strength)
    np.testing.assert_array_equal(a.flux, b.flux)
    np.testing.assert_array_equal(a.ivar, b.ivar)


@pytest.mark.parametrize("kind", ["bright_knot", "nii_patch", "dead_fibres", "stripe"])
def test_a_stronger_perturbation_changes_more_in_the_same_place(kind):
    m = galaxy(0)
    weak, strong = (perturb(kind, m, np.random.default_rng(5), s) for s in (0.25, 1.0))
    dw, ds = np.abs(weak.flux - m.flux), np.abs(strong.flux - m.flux)
    assert ds.sum() > dw.sum() > 0
    # the region is drawn before the strength is used: where the strong one acts, the weak one does too
    assert (dw[ds > 0.01 * ds.max()] > 0).all()


def test_bad_kind_or_strength_is_refused():
    m = galaxy(0)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb("blueberry", m, np.random.default_rng(0), 0.5)
    for s in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="strength"):
            perturb("stripe", m, np.random.default_rng(0), s)
