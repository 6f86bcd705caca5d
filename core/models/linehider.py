"""The network of the cross-line consistency detector (``core.consistency``): it predicts the
lines hidden from it in part of a galaxy from the lines it sees there and from the whole
galaxy's visible maps.

Input: the galaxy's maps divided by its own Halpha level (``core.consistency.normalise``), with
the hidden and masked cells set to 0, and one "visible" channel per line. A 3 x 3
convolution reads each cell's neighbourhood; the mean of its features over the visible cells
(the galaxy's own line ratios, wherever they are visible) is handed back to every cell; 1 x 1
convolutions then predict every line. The prediction is the network's output times the
local brightness of the visible lines (a 3 x 3 mean), so the network learns ratios, not
fluxes: the same galaxy made brighter or fainter gives the same prediction in its units.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LineHiderArgs:
    n_lines: int  # emission-line maps in and out
    width: int = 64  # feature channels of every convolution
    softening: float = 0.05  # asinh softening of the input, in units of the galaxy's Halpha level


class LineHider(nn.Module):
    def __init__(self, args: LineHiderArgs):
        super().__init__()
        self.args = args
        n, w = args.n_lines, args.width
        self.local = nn.Conv2d(2 * n, w, 3, padding=1)
        self.cell = nn.Conv2d(w, w, 1)
        self.mix = nn.Conv2d(2 * w, w, 1)
        self.hidden = nn.Conv2d(w, w, 1)
        self.out = nn.Conv2d(w, n, 1)
        # Each line's relative error, a fraction of the prediction: not learned, but measured on the
        # training galaxies once the weights are trained (core.consistency.calibrate); saved with them.
        self.register_buffer("floors", torch.zeros(n))

    def forward(self, x: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, S, S) normalised flux, ``visible`` (B, L, S, S) 1 where a line is seen;
        returns the predicted flux of every line (B, L, S, S) in the units of ``x``."""
        seen = torch.asinh(x / self.args.softening) * visible  # (B, L, S, S)
        h = F.gelu(self.cell(F.gelu(self.local(torch.cat([seen, visible], 1)))))  # (B, W, S, S)
        any_seen = visible.amax(1, keepdim=True)  # (B, 1, S, S)
        pooled = (h * any_seen).sum((2, 3), keepdim=True)
        pooled = pooled / any_seen.sum((2, 3), keepdim=True).clamp(min=1)  # (B, W, 1, 1)
        h = F.gelu(self.hidden(F.gelu(self.mix(torch.cat([h, pooled.expand_as(h)], 1)))))  # (B, W, S, S)
        level = F.avg_pool2d((x * visible).sum(1, keepdim=True).clamp(min=0), 3, 1, 1) + 1e-3  # (B, 1, S, S)
        return self.out(h) * level
