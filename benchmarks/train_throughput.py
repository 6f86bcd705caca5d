"""Training throughput: galaxies per second (forward + backward + AdamW step) and FLOP rate.

Compares, for the ``demo`` and ``paper`` configurations on the available device:

* ``blueberry``: core.models as trained by ``fit`` (input-to-state convolution batched over
  the T steps, state convolution skipped at t = 0, decoder input gates formed once; bf16
  autocast and channels-last on CUDA),
* ``blueberry+compile``: the same under ``torch.compile`` (CUDA only, or ``--compile``),
* ``textbook``: a ConvLSTM autoencoder of the same sizes written the textbook way (the input
  and the state concatenated, one convolution per step, fp32, eager),
* ``reference`` (demo only): the textbook full-resolution AE that the CPU budget of the
  demo was first estimated with (ConvLSTM 16 and 32 channels at 32 x 32, no stem).

FLOPs per galaxy are counted with torch.utils.flop_counter.FlopCounterMode over one
training step (convolutions, matmuls; elementwise work is not counted), so the FLOP rate
is the convolution throughput each implementation achieves; with a peak (``--peak-tflops``,
known for H100 / H200: dense bf16 989 TFLOP/s) the table adds its fraction of that peak.

    python benchmarks/train_throughput.py                 # both configs, prints a table
    python benchmarks/train_throughput.py --configs demo --steps 5
    python benchmarks/train_throughput.py --dry-run       # one step each, no JSON
Writes benchmarks/results/train_throughput-<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from core.models import ModelArgs, autocast, build_model, masked_loss, model_args_for, prepare_model, resolve_device
from core.models.autoencoder import make_head, make_stem

T_LINES = 19
#: Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) of the GPUs we know, by a word of their name.
BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0}


class TextbookConvLSTM(nn.Module):
    """Shi et al. (2015) as usually written: per step, conv(cat([x_t, h])) -> gates."""

    def __init__(self, in_channels: int, hidden: int, kernel: int, stride: int = 1):
        super().__init__()
        self.hidden = hidden
        # Downsampling by pooling the input keeps the FLOPs of a strided input convolution.
        self.pool = nn.MaxPool2d(stride) if stride > 1 else nn.Identity()
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)

    def forward(self, x, state=None):
        b, t = x.shape[:2]
        hs = []
        for step in range(t):
            xt = self.pool(x[:, step] if x.ndim == 5 else x)  # a 4D x is the same input at every step
            if state is None:
                zeros = xt.new_zeros(b, self.hidden, *xt.shape[-2:])
                state = (zeros, zeros)
            h, c = state
            i, f, o, g = self.conv(torch.cat([xt, h], dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            state = (h, c)
            hs.append(h)
        return torch.stack(hs, dim=1), state  # (B, T, Ch, H, W)


class TextbookAE(nn.Module):
    """The core.models architecture of ``args`` with textbook ConvLSTM layers."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        k = args.kernel
        self.stem = make_stem(args)  # stem and head as in core.models: only the ConvLSTMs differ
        c = args.stem_channels[-1] if args.stem_channels else 1
        self.encoder = nn.ModuleList()
        for width, stride in zip(args.enc_hidden, args.enc_strides):
            self.encoder.append(TextbookConvLSTM(c, width, k, stride))
            c = width
        n, d = args.bottleneck, args.dec_hidden[0]
        self.to_latent = nn.Linear(c * n * n, args.latent_dim)
        self.from_latent = nn.Linear(args.latent_dim, 2 * d * n * n)
        self.decoder = nn.ModuleList([TextbookConvLSTM(d, d, k)])
        c = d
        for width in args.dec_hidden[1:]:
            self.decoder.append(TextbookConvLSTM(c, width, k))
            c = width
        self.head = make_head(args, c)

    def forward(self, x):
        b, t = x.shape[:2]
        h = self.stem(x.reshape(b * t, *x.shape[2:]))  # (B*T, C, S', S')
        h = h.reshape(b, t, *h.shape[1:])  # (B, T, C, S', S')
        for layer in self.encoder:
            h, (h_last, _) = layer(h)
        z = self.to_latent(h_last.flatten(1))  # (B, D)
        n, d = self.args.bottleneck, self.args.dec_hidden[0]
        seed = self.from_latent(z).reshape(b, 2 * d, n, n)  # (B, 2*Ch, n, n)
        h0 = torch.tanh(seed[:, :d])
        h, _ = self.decoder[0](h0.unsqueeze(1).expand(b, t, *h0.shape[1:]), (h0, seed[:, d:]))
        for layer in self.decoder[1:]:
            h, _ = layer(h)
        out = self.head(h.reshape(b * t, *h.shape[2:]))  # (B*T, 1, S, S)
        return out.reshape(b, t, *out.shape[1:])  # (B, T, 1, S, S)


class ReferenceAE(nn.Module):
    """The CPU budget's reference: textbook ConvLSTM 16 -> 32 at full resolution, latent 128."""

    def __init__(self, size: int, hidden=(16, 32), latent: int = 128):
        super().__init__()
        self.enc = nn.ModuleList([TextbookConvLSTM(1, hidden[0], 3), TextbookConvLSTM(hidden[0], hidden[1], 3)])
        self.to_latent = nn.Linear(hidden[1] * size * size, latent)
        self.from_latent = nn.Linear(latent, hidden[1] * size * size)
        self.dec = nn.ModuleList([TextbookConvLSTM(hidden[1], hidden[1], 3), TextbookConvLSTM(hidden[1], hidden[0], 3)])
        self.out = nn.Conv2d(hidden[0], 1, 3, padding=1)

    def forward(self, x):
        b, t, _, s, _ = x.shape
        h = x
        for layer in self.enc:
            h, (h_last, _) = layer(h)
        seed = self.from_latent(self.to_latent(h_last.flatten(1))).reshape(b, -1, s, s)  # (B, Ch, S, S)
        h = seed.unsqueeze(1).expand(b, t, *seed.shape[1:])  # (B, T, Ch, S, S)
        for layer in self.dec:
            h, _ = layer(h)
        out = self.out(h.reshape(b * t, *h.shape[2:]))  # (B*T, 1, S, S)
        return out.reshape(b, t, 1, s, s)  # (B, T, 1, S, S)


def _recon(model, x):
    out = model(x)
    return out.recon if hasattr(out, "recon") else out


def prepare(model, size, batch, warmup, device, mixed: bool):
    """A training step of ``model`` on random maps, warmed up; returns ``(step, info)``."""
    torch.manual_seed(0)
    x = torch.randn(batch, T_LINES, 1, size, size, device=device)
    mask = torch.rand(batch, T_LINES, 1, size, size, device=device) < 0.3
    x = torch.where(mask, 0.0, x)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with autocast(device) if mixed else torch.autocast(device.type, enabled=False):
            recon = _recon(model, x)
        loss = masked_loss(recon, x, mask).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    with FlopCounterMode(display=False) as counter:
        step()
    info = {"size": size, "batch": batch, "params": sum(p.numel() for p in model.parameters()),
            "flop_per_galaxy": counter.get_total_flops() / batch}
    return step, info


def time_steps(step, steps: int, device) -> float:
    """Seconds for ``steps`` training steps."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["demo", "paper"], choices=["demo", "paper"])
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--batch-size", type=int, help="galaxies per step (default 32 on CUDA; 16 demo / 8 paper on CPU)")
    p.add_argument("--steps", type=int, default=4, help="timed steps per model and round (after warm-up)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile, allocator, caches)")
    p.add_argument("--compile", action="store_true", help="add a torch.compile row (default on CUDA)")
    p.add_argument("--no-reference", action="store_true", help="skip the slow full-resolution reference row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peak-tflops", type=float, default=None,
                   help="the device's dense bf16 peak, for the %% of peak column (default: known GPUs, "
                        + ", ".join(f"{k} {v:g}" for k, v in BF16_PEAK_TFLOPS.items()) + ")")
    p.add_argument("--dry-run", action="store_true", help="one warm-up and one timed step each; write no JSON")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    device = resolve_device(args.device)
    if args.dry_run:
        args.steps, args.warmup, args.rounds = 1, 1, 1
    cuda = device.type == "cuda"
    rows = []
    for config in args.configs:
        margs = model_args_for(config, "ae", T_LINES, {"demo": 32, "paper": 64}[config])
        batch = args.batch_size or (32 if cuda else {"demo": 16, "paper": 8}[config])
        candidates = [("blueberry", lambda: prepare_model(build_model(margs), device), True)]
        if cuda or args.compile:
            candidates.append(("blueberry+compile", lambda: torch.compile(prepare_model(build_model(margs), device)),
                               True))
        candidates.append(("textbook", lambda: TextbookAE(margs).to(device), False))
        if config == "demo" and not args.no_reference:
            candidates.append(("reference", lambda: ReferenceAE(margs.size).to(device), False))
        prepared = [(name, *prepare(make(), margs.size, batch, args.warmup, device, mixed))
                    for name, make, mixed in candidates]
        # Interleaved rounds, median taken: a CPU's clock and caches drift over a run, and the
        # order of the models must not decide which one looks faster.
        seconds = {name: [] for name, _, _ in prepared}
        for _ in range(args.rounds):
            for name, step, _ in prepared:
                seconds[name].append(time_steps(step, args.steps, device))
        for name, _, info in prepared:
            gps = batch * args.steps / statistics.median(seconds[name])
            row = {"config": config, "model": name, **{k: v for k, v in info.items() if k != "flop_per_galaxy"},
                   "steps": args.steps, "rounds": args.rounds,
                   "gflop_per_galaxy": round(info["flop_per_galaxy"] / 1e9, 3),
                   "galaxies_per_second": round(gps, 2),
                   "gflop_per_second": round(info["flop_per_galaxy"] * gps / 1e9, 1),
                   "ms_per_step": round(1e3 * batch / gps, 1)}
            rows.append(row)
            print(f"  {config:6s} {name:18s} {row['galaxies_per_second']:8.1f} galaxies/s", flush=True)

    device_name = torch.cuda.get_device_name(device) if cuda else f"cpu ({os.cpu_count()} cores)"
    peak = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if cuda and k in device_name), None)
    print(f"\ntraining throughput on {device_name}, torch {torch.__version__}, {torch.get_num_threads()} threads"
          + (f"; % of peak against {peak:g} TFLOP/s dense bf16" if peak else ""))
    header = f"{'config':6s} {'model':18s} {'batch':>5s} {'params':>9s} {'GFLOP/gal':>9s} {'gal/s':>8s} " \
             f"{'GFLOP/s':>8s} {'vs textbook':>11s}" + (f" {'% of peak':>9s}" if peak else "")
    print(header)
    print("-" * len(header))
    for row in rows:
        base = next(r for r in rows if r["config"] == row["config"] and r["model"] == "textbook")
        row["speedup_vs_textbook"] = round(row["galaxies_per_second"] / base["galaxies_per_second"], 2)
        if peak:
            row["pct_of_bf16_peak"] = round(100 * row["gflop_per_second"] / (1e3 * peak), 3)
        print(f"{row['config']:6s} {row['model']:18s} {row['batch']:5d} {row['params']:9d} "
              f"{row['gflop_per_galaxy']:9.3f} {row['galaxies_per_second']:8.1f} {row['gflop_per_second']:8.1f} "
              f"{row['speedup_vs_textbook']:10.2f}x" + (f" {row['pct_of_bf16_peak']:8.2f}%" if peak else ""))
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / f"train_throughput-{device.type}.json"
        path.write_text(json.dumps({
            "benchmark": "train_throughput", "date": date.today().isoformat(), "device": device_name,
            "machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "mixed_precision": "bf16 autocast + channels-last" if cuda else "fp32",
            "bf16_peak_tflops": peak, "rows": rows}, indent=2) + "\n")
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
