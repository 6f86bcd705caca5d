"""torch view of a dataset folder, with dihedral augmentation.

Kept apart from ``core.dataset`` so that reading a dataset (the dashboard does) never
imports torch.
"""
from __future__ import annotations

import numpy as np
import torch

from core.dataset import SurveyDataset, open_dataset
from core.scoring import cell_weights, data_floor_peaks

#: Loss weights a :class:`MapsDataset` can add to each item.
WEIGHTS = (None, "ivar", "score")


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of the dihedral group of the square, on the last two axes.

    k = 0..3 rotate by k * 90 degrees; k = 4..7 flip left-right, then rotate by (k - 4) * 90.
    """
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k % 4, dims=(-2, -1))


class MapsDataset(torch.utils.data.Dataset):
    """Galaxies of a dataset folder as ``(flux, mask)`` tensors, each ``(T, 1, S, S)``.

    ``flux`` is float32 with masked cells set to 0 (the loss ignores them through
    ``mask``, True = bad); with ``weights`` a third tensor holds each cell's loss weight:
    ``"ivar"`` the inverse variance, ``"score"`` the anomaly score's own weights
    (:func:`core.scoring.cell_weights`, the inverse variance with the error floor; the loss adds
    the model's relative error, :data:`core.scoring.MODEL_ERROR`, as it needs the reconstruction).
    With ``augment`` every item is drawn in one of the 8 dihedral orientations, and
    ``repeats`` (the paper's "3x") makes one epoch visit each galaxy that many times.
    """

    def __init__(self, data, indices=None, augment: bool = False, repeats: int = 1,
                 weights: str | None = None, seed: int = 0):
        if weights not in WEIGHTS:
            raise ValueError(f"weights {weights!r}: expected one of {WEIGHTS}")
        self.data: SurveyDataset = data if isinstance(data, SurveyDataset) else open_dataset(data)
        self.indices = np.arange(len(self.data)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.augment = augment
        self.repeats = max(1, int(repeats))
        self.weights = weights
        self.seed = seed
        self.epoch = 0
        self._peaks: dict[int, float] = {}  # row -> the score's P (core.scoring.data_floor_peaks)

    def set_epoch(self, epoch: int) -> None:
        """Change the orientations drawn, reproducibly per epoch (also under DDP)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.indices) * self.repeats

    def __getitem__(self, i: int):
        row = int(self.indices[i % len(self.indices)])
        flux = np.nan_to_num(np.asarray(self.data.flux[row]), nan=0.0, posinf=0.0, neginf=0.0)
        mask = np.array(self.data.mask[row])  # a copy: memmaps are read-only
        items = [flux, mask]
        if self.weights == "ivar":
            items.append(np.array(self.data.ivar[row], dtype=np.float32))
        elif self.weights == "score":
            ivar = np.asarray(self.data.ivar[row])[None]  # (1, T, S, S)
            if row not in self._peaks:  # the median filter is a tenth of an item's time: once per galaxy, not per epoch
                self._peaks[row] = data_floor_peaks(flux[None], mask[None], ivar, self.data.lines)[0]
            w = cell_weights(flux[None], mask[None], ivar, self.data.lines, peaks=[self._peaks[row]])
            items.append(w[0].astype(np.float32))
        items = [torch.from_numpy(a) for a in items]
        items = [t.unsqueeze(1) for t in items]  # (T, S, S) -> (T, 1, S, S)
        if self.augment:
            k = int(np.random.default_rng((self.seed, self.epoch, i)).integers(8))
            items = [dihedral(t, k) for t in items]
        return tuple(t.contiguous() for t in items)
