"""The latent space: a seeded UMAP for the map view and a nearest-neighbour index.

umap-learn is imported inside :func:`umap_embedding` (it pulls in numba and takes seconds),
so reading a run never pays for it.
"""
from __future__ import annotations

import numpy as np

from core.errors import RunError

#: UMAP settings of every run (recorded in its manifest with the seed).
UMAP_PARAMS = {"n_neighbors": 15, "min_dist": 0.1, "metric": "euclidean", "n_components": 2}
#: Fewer galaxies than this cannot be laid out (UMAP's spectral start needs a few points).
MIN_GALAXIES = 4
#: Below this many galaxies umap-learn computes every pairwise distance (its small-data path): they are given to it.
EXACT_BELOW = 4096


def umap_embedding(latents, seed: int = 0, **overrides) -> tuple[np.ndarray, dict]:
    """2D UMAP coordinates ``(N, 2)`` float32 of ``latents`` and the parameters used.

    Seeded and single-threaded: umap-learn is reproducible only with ``n_jobs=1`` when a
    ``random_state`` is given, so the same latents and seed always give the same map.
    ``n_neighbors`` shrinks to ``N - 1`` for tiny runs. Below :data:`EXACT_BELOW` galaxies the
    euclidean distances are scikit-learn's, handed to umap-learn as a precomputed matrix: the
    exact distances its small-data path takes anyway, in a fraction of the time.
    """
    latents = np.asarray(latents, dtype=np.float32)
    n = len(latents)
    if n < MIN_GALAXIES:
        raise RunError(f"a UMAP needs at least {MIN_GALAXIES} galaxies; this run has {n}")
    params = {**UMAP_PARAMS, **overrides}
    params["n_neighbors"] = int(min(params["n_neighbors"], n - 1))
    import umap

    if n < EXACT_BELOW and params["metric"] == "euclidean":
        # umap-learn takes every distance exactly below 4,096 points too, but through its numba metric one pair
        # at a time (13 s of the demo's 2,000); scikit-learn's are the same distances in a fraction of a second.
        # The nearest neighbours are handed over as well, sorted as umap-learn sorts them: the same map to the
        # last bit, without compiling umap-learn's parallel neighbour search (10 s of the demo's 23, 2026-12-03).
        import warnings

        from sklearn.metrics import pairwise_distances

        distances = pairwise_distances(latents.astype(np.float64))  # (N, N)
        knn = np.argsort(distances, axis=1)[:, :params["n_neighbors"]]  # (N, k), each galaxy first
        knn_distances = np.take_along_axis(distances, knn, axis=1)
        reducer = umap.UMAP(random_state=seed, n_jobs=1, precomputed_knn=(knn, knn_distances),
                            **{**params, "metric": "precomputed"})
        with warnings.catch_warnings():  # the map is all a run keeps of the reducer: no transform is lost
            warnings.filterwarnings("ignore", message="using precomputed metric", category=UserWarning)
            warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
            coords = reducer.fit_transform(distances).astype(np.float32)
    else:
        reducer = umap.UMAP(random_state=seed, n_jobs=1, **params)
        coords = reducer.fit_transform(latents).astype(np.float32)
    return coords, {**params, "random_state": seed, "n_jobs": 1, "umap_version": umap.__version__}


def nearest_neighbours(latents, k: int = 20) -> np.ndarray:
    """``(N, min(k, N - 1))`` int64: each galaxy's nearest galaxies in latent space, nearest first.

    Euclidean distance; the galaxy itself is never among its own neighbours, even when
    another galaxy has an identical latent vector.
    """
    from sklearn.neighbors import NearestNeighbors

    latents = np.asarray(latents, dtype=np.float32)
    n = len(latents)
    k = int(min(k, n - 1))
    if k < 1:
        raise RunError(f"nearest neighbours need at least 2 galaxies; this run has {n}")
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(latents).kneighbors(latents)
    is_self = idx == np.arange(n)[:, None]
    # Ties can put self at any position, or (with many duplicates) leave it out of the
    # k + 1: drop it where present, else drop the farthest.
    is_self[~is_self.any(axis=1), -1] = True
    return idx[~is_self].reshape(n, k).astype(np.int64)
