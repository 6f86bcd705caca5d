"""ConvLSTM autoencoder and variational autoencoder over a sequence of emission-line maps.

Each of the T emission lines is one step of the sequence. The encoder runs a small
convolutional stem on every step (shared weights, strided, so the recurrence works on
small maps), stacked ConvLSTM layers, and projects the last hidden state to the latent
vector. The decoder turns the latent vector into the initial state of a ConvLSTM that
runs over the T steps, and a per-step head of transposed convolutions brings every step
back to ``(1, S, S)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from core.models.convlstm import ConvLSTM


@dataclass
class ModelArgs:
    kind: str = "ae"  # "ae": deterministic latent; "vae": mean and log-variance, sampled while training
    n_lines: int = 19  # T: emission lines, one step of the sequence each
    size: int = 32  # S: maps are S x S
    latent_dim: int = 128  # D: length of the latent vector
    stem_channels: tuple[int, ...] = (8, 16)  # per-step conv stem widths; every conv has stride 2
    enc_hidden: tuple[int, ...] = (32,)  # stacked encoder ConvLSTM widths
    enc_strides: tuple[int, ...] = (1,)  # spatial stride of each encoder ConvLSTM (its input conv)
    dec_hidden: tuple[int, ...] = (32,)  # decoder ConvLSTM widths at the bottleneck; z seeds the first
    head_channels: tuple[int, ...] = (16, 8)  # per-step transposed convs, each doubles the map size
    kernel: int = 3  # kernel of the stem and the ConvLSTM convolutions

    def __post_init__(self):
        # model_args come back from JSON / torch.load as lists; tuples keep asdict() round trips equal.
        for name in ("stem_channels", "enc_hidden", "enc_strides", "dec_hidden", "head_channels"):
            setattr(self, name, tuple(int(v) for v in getattr(self, name)))
        self.validate()

    @property
    def bottleneck(self) -> int:
        """Side of the maps the ConvLSTMs see at the bottleneck."""
        return self.size // (2 ** len(self.stem_channels) * math.prod(self.enc_strides))

    def validate(self) -> None:
        if self.kind not in ("ae", "vae"):
            raise ValueError(f"model kind {self.kind!r}: expected 'ae' or 'vae'")
        if len(self.enc_strides) != len(self.enc_hidden):
            raise ValueError(f"enc_strides {self.enc_strides} needs one entry per enc_hidden {self.enc_hidden}")
        if not self.dec_hidden or not self.enc_hidden:
            raise ValueError("the encoder and the decoder need at least one ConvLSTM layer each")
        down = 2 ** len(self.stem_channels) * math.prod(self.enc_strides)
        if self.size % down or self.size // down < 1:
            raise ValueError(f"size {self.size} is not divisible by the encoder's downsampling {down}")
        if 2 ** len(self.head_channels) != down:
            raise ValueError(f"the head upsamples by {2 ** len(self.head_channels)} but the encoder "
                             f"downsamples by {down}; give head_channels {int(math.log2(down))} entries")


class ModelOutput(NamedTuple):
    recon: torch.Tensor  # (B, T, 1, S, S) reconstruction
    mu: torch.Tensor  # (B, D) latent mean (the latent itself for the AE)
    logvar: torch.Tensor | None  # (B, D) latent log-variance; None for the AE
    z: torch.Tensor  # (B, D) the latent the decoder saw: a sample while a VAE trains, else mu


def make_stem(args: ModelArgs) -> nn.Sequential:
    """The per-step convolutional stem: ``(N, 1, S, S) -> (N, stem_channels[-1], S', S')``, stride 2 each."""
    layers, c = [], 1
    for width in args.stem_channels:
        layers += [nn.Conv2d(c, width, args.kernel, stride=2, padding=args.kernel // 2), nn.SiLU()]
        c = width
    return nn.Sequential(*layers)


def make_head(args: ModelArgs, in_channels: int) -> nn.Sequential:
    """The per-step upsampling head: ``(N, in_channels, n, n) -> (N, 1, S, S)``, each transposed conv x2."""
    layers, c = [], in_channels
    for width in args.head_channels:
        layers += [nn.ConvTranspose2d(c, width, 4, stride=2, padding=1), nn.SiLU()]
        c = width
    layers.append(nn.Conv2d(c, 1, args.kernel, padding=args.kernel // 2))
    return nn.Sequential(*layers)


class ConvLSTMAutoencoder(nn.Module):
    """AE or VAE (``args.kind``) mapping ``(B, T, 1, S, S)`` line maps to a latent and back."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        k = args.kernel
        self.stem = make_stem(args)
        c = args.stem_channels[-1] if args.stem_channels else 1
        self.encoder = nn.ModuleList()
        for width, stride in zip(args.enc_hidden, args.enc_strides):
            self.encoder.append(ConvLSTM(c, width, k, stride))
            c = width
        n = args.bottleneck
        self.to_latent = nn.Linear(c * n * n, args.latent_dim * (2 if args.kind == "vae" else 1))

        d = args.dec_hidden[0]
        # z -> initial (h, c) of the first decoder layer.
        self.from_latent = nn.Linear(args.latent_dim, 2 * d * n * n)
        # Its input at every step is the seed h0, so its input gates are convolved once, not T
        # times, plus a learned per-step (per-line) term.
        self.step_gates = nn.Parameter(torch.zeros(args.n_lines, 4 * d, n, n))
        self.decoder = nn.ModuleList([ConvLSTM(d, d, k)])
        c = d
        for width in args.dec_hidden[1:]:
            self.decoder.append(ConvLSTM(c, width, k))
            c = width
        self.head = make_head(args, c)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        h = self.stem(x.reshape(b * t, *x.shape[2:]))  # (B*T, C, S', S')
        h = h.reshape(b, t, *h.shape[1:])  # (B, T, C, S', S')
        for layer in self.encoder:
            h, (h_last, _) = layer(h)
        return self.to_latent(h_last.flatten(1))  # (B, D) or (B, 2D)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Deterministic latent ``(B, D)`` of ``x`` (B, T, 1, S, S): the mean for the VAE."""
        stats = self._encode(x)
        return stats[:, :self.args.latent_dim]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``(B, T, 1, S, S)`` of latents ``z`` (B, D)."""
        b, n, d = z.shape[0], self.args.bottleneck, self.args.dec_hidden[0]
        seed = self.from_latent(z).reshape(b, 2 * d, n, n)  # (B, 2*Ch, n, n)
        h0 = torch.tanh(seed[:, :d])
        c0 = seed[:, d:]
        gx = self.decoder[0].cell.input_gates(h0).unsqueeze(1) + self.step_gates  # (B, T, 4*Ch, n, n)
        h, _ = self.decoder[0].recur(gx, (h0, c0))
        for layer in self.decoder[1:]:
            h, _ = layer(h)
        t = h.shape[1]
        out = self.head(h.reshape(b * t, *h.shape[2:]))  # (B*T, 1, S, S)
        return out.reshape(b, t, *out.shape[1:])  # (B, T, 1, S, S)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        stats = self._encode(x)
        if self.args.kind == "ae":
            return ModelOutput(self.decode(stats), stats, None, stats)
        mu, logvar = stats.chunk(2, dim=1)  # (B, D) each
        # Sample only while training: evaluation and scoring see the deterministic mean.
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return ModelOutput(self.decode(z), mu, logvar, z)


def masked_loss(recon: torch.Tensor, x: torch.Tensor, mask: torch.Tensor,
                weights: torch.Tensor | None = None, model_error: float = 0.0) -> torch.Tensor:
    """Per-galaxy mean squared error over the unmasked cells, shape ``(B,)``.

    ``recon``, ``x``, ``mask`` (True = bad) and ``weights`` share a shape whose first axis is
    the galaxy, e.g. (B, T, 1, S, S). Masked cells contribute nothing and get exactly
    zero gradient, whatever ``x`` holds there (NaN included). With ``weights`` every squared
    residual is multiplied by its cell's weight (the inverse variance gives a mean chi-square
    per cell; :func:`core.scoring.cell_weights` with ``model_error`` = ``core.scoring.MODEL_ERROR``
    gives the anomaly score itself: each weight ``w`` becomes ``w / (1 + w (model_error recon)**2)``,
    the reconstruction detached, so the error model weighs the residual without being a way to lower
    it). The mean is over each galaxy's unmasked cells; a fully masked galaxy scores 0. Computed in
    float32 even under autocast, so anomaly scores do not depend on the training precision.
    """
    valid = ~mask
    diff = torch.where(valid, recon.float() - torch.nan_to_num(x.float()), 0.0)
    sq = diff * diff
    if weights is not None:
        w = torch.where(valid, weights.float(), 0.0)
        if model_error:
            w = w / (1.0 + w * (model_error * recon.detach().float()).square())
        sq = sq * w
    dims = tuple(range(1, sq.ndim))
    return sq.sum(dims) / valid.sum(dims).clamp_min(1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over latent dimensions, shape ``(B,)``."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)

