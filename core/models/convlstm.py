"""Convolutional LSTM (Shi et al. 2015) with the input-to-state convolution batched over time.

A textbook ConvLSTM concatenates the input and the hidden state and runs one convolution
per step. The input half of that convolution does not depend on the recurrence, so here
it runs once over all T steps as a single ``(B*T, C, H, W)`` convolution, which keeps the
convolution kernels busy with large batches; only the state-to-state convolution stays
in the sequential loop. The two are mathematically the same model.
"""
from __future__ import annotations

import torch
from torch import nn

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (B, Ch, H, W)


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step, split into the input convolution and the recurrent update.

    ``stride`` > 1 makes the input convolution downsample, so a stacked layer can halve
    the maps without a separate pooling step; the state lives at the output resolution.
    Gates are ordered (input, forget, output, cell candidate).
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.conv_x = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, stride=stride,
                                padding=kernel_size // 2)
        # No bias here: conv_x already carries one, and two would be redundant parameters.
        self.conv_h = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=kernel_size // 2,
                                bias=False)
        with torch.no_grad():
            # A forget-gate bias of 1 keeps the cell memory open early in training (Jozefowicz et al. 2015).
            self.conv_x.bias[hidden_channels:2 * hidden_channels].fill_(1.0)

    def input_gates(self, x: torch.Tensor) -> torch.Tensor:
        """Input contribution to the gates: ``(N, C, H, W) -> (N, 4*Ch, H/stride, W/stride)``."""
        return self.conv_x(x)

    def update(self, gx: torch.Tensor, state: State | None) -> State:
        """Advance one step from precomputed input gates ``gx`` (B, 4*Ch, H, W).

        ``state=None`` means h = c = 0, where the state convolution is zero and is skipped.
        """
        ch = self.hidden_channels
        gates = gx if state is None else gx + self.conv_h(state[0])
        i, f, o = torch.sigmoid(gates[:, :3 * ch]).chunk(3, dim=1)
        g = torch.tanh(gates[:, 3 * ch:])
        c = i * g if state is None else f * state[1] + i * g
        h = o * torch.tanh(c)
        return h, c

    def forward(self, x: torch.Tensor, state: State | None = None) -> State:
        """One step: ``x`` (B, C, H, W) -> ``(h, c)``, each (B, Ch, H/stride, W/stride)."""
        return self.update(self.input_gates(x), state)


class ConvLSTM(nn.Module):
    """A ConvLSTM layer over a batch-first sequence.

    ``forward(x, state=None)`` with ``x`` (B, T, C, H, W) returns the hidden sequence
    (B, T, Ch, H/stride, W/stride) and the last state ``(h, c)``. ``recur(gx, state)``
    runs only the recurrence from precomputed input gates (B, T, 4*Ch, H', W'), for
    callers (the decoder) whose input gates are cheaper to form another way.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, stride: int = 1):
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size, stride)

    @property
    def hidden_channels(self) -> int:
        return self.cell.hidden_channels

    def forward(self, x: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        b, t = x.shape[:2]
        gx = self.cell.input_gates(x.reshape(b * t, *x.shape[2:]))  # (B*T, 4*Ch, H', W')
        gx = gx.reshape(b, t, *gx.shape[1:])  # (B, T, 4*Ch, H', W')
        return self.recur(gx, state)

    def recur(self, gx: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        hs = []
        # unbind, not gx[:, step]: the backward of T slices would write T full-size zero tensors.
        for gx_t in gx.unbind(dim=1):  # each (B, 4*Ch, H', W')
            state = self.cell.update(gx_t, state)
            hs.append(state[0])
        return torch.stack(hs, dim=1), state  # (B, T, Ch, H', W')
