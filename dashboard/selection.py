"""Which galaxies a box, a lasso, a tap or a range picks: plain functions on coordinate arrays.

The plots are datashaded images, so bokeh cannot tell which rows a gesture covered (a
``Selection1D`` stream never fires on them); the views forward the gesture's geometry in
data coordinates and these functions find the rows. All return boolean masks over the
rows (or a row number), treat NaN coordinates as outside, and take float64 arrays.
"""
from __future__ import annotations

import numpy as np


def in_box(x: np.ndarray, y: np.ndarray, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Points inside the box (edges included); the corners may come in either order."""
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    return (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)


def in_range(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Values within [lo, hi] (either order)."""
    lo, hi = sorted((lo, hi))
    return (v >= lo) & (v <= hi)


def in_polygon(x: np.ndarray, y: np.ndarray, xs, ys) -> np.ndarray:
    """Points inside the polygon with vertices (xs, ys) (even-odd rule; it closes itself)."""
    px = np.ascontiguousarray(xs, dtype=np.float64)
    py = np.ascontiguousarray(ys, dtype=np.float64)
    if px.shape != py.shape or px.ndim != 1:
        raise ValueError(f"polygon vertices must be two 1-D arrays of one length, got {px.shape} and {py.shape}")
    if len(px) < 3:
        return np.zeros(len(x), dtype=bool)
    # Imported here, not at the top: numba must not load before the first lasso (or the warm-up).
    from dashboard.kernels import points_in_polygon

    return points_in_polygon(x, y, px, py)


def nearest(x: np.ndarray, y: np.ndarray, at: tuple[float, float], x_range: tuple[float, float],
            y_range: tuple[float, float], frame_px: tuple[int, int], tol_px: float = 6.0) -> int | None:
    """The row nearest to the point ``at``, if it lies within ``tol_px`` screen pixels; else None.

    Distances are measured on the screen: ``x_range``/``y_range`` are the plot's current
    axis ranges and ``frame_px`` the (width, height) of its drawing area, so the tolerance
    means the same few pixels at every zoom and whatever the axes' aspect.
    """
    sx = frame_px[0] / (x_range[1] - x_range[0])  # pixels per data unit
    sy = frame_px[1] / (y_range[1] - y_range[0])
    near = np.flatnonzero(in_box(x, y, at[0] - tol_px / sx, at[0] + tol_px / sx,
                                 at[1] - tol_px / sy, at[1] + tol_px / sy))
    if not len(near):
        return None
    d2 = ((x[near] - at[0]) * sx) ** 2 + ((y[near] - at[1]) * sy) ** 2
    best = int(np.argmin(d2))
    return int(near[best]) if d2[best] <= tol_px ** 2 else None
