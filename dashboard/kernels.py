"""numba kernels of the dashboard's selections.

Kept in their own importable module, away from the served script, for two reasons: numba's
on-disk cache (``cache=True``) only works for functions of an importable module, and the
dashboard must not import numba when it starts, only when the first selection (or the
warm-up at server start) needs it; ``dashboard.selection`` imports this module lazily.
"""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True, nogil=True)
def points_in_polygon(x, y, px, py):
    """Boolean mask of the points (x, y) inside the polygon (px, py), by the even-odd rule.

    NaN coordinates are outside. The polygon's bounding box rejects most points before the
    edge loop, so a small lasso over millions of points costs little more than a pass.
    """
    n, m = x.shape[0], px.shape[0]
    out = np.zeros(n, dtype=np.bool_)
    xmin, xmax, ymin, ymax = px.min(), px.max(), py.min(), py.max()
    for i in numba.prange(n):
        xi, yi = x[i], y[i]
        if not (xmin <= xi <= xmax and ymin <= yi <= ymax):
            continue
        inside = False
        j = m - 1
        for k in range(m):
            if (py[k] > yi) != (py[j] > yi):
                if xi < (px[j] - px[k]) * (yi - py[k]) / (py[j] - py[k]) + px[k]:
                    inside = not inside
            j = k
        out[i] = inside
    return out
