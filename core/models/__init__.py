"""The ConvLSTM autoencoder / VAE, its named configurations, and loading a trained model.

Typical use::

    from core.models import model_args_for, build_model, masked_loss, load_model
    model = build_model(model_args_for("demo", "ae", n_lines=19, size=32))
    out = model(x)                      # x (B, T, 1, S, S) -> ModelOutput
    err = masked_loss(out.recon, x, mask, w)  # (B,) per-galaxy masked weighted squared error;
                                              # with core.scoring.cell_weights as w: the anomaly score
    model, payload = load_model("runs/demo")  # eval mode, rebuilt from payload["model_args"]
"""
from __future__ import annotations

import contextlib
import pickle
from dataclasses import asdict, fields
from pathlib import Path

import torch

from core.errors import BlueberryError, RunError, first_line
from core.models.autoencoder import ConvLSTMAutoencoder, ModelArgs, ModelOutput, kl_divergence, masked_loss
from core.models.convlstm import ConvLSTM, ConvLSTMCell

__all__ = [
    "CONFIGS", "ConfigError", "as_model_args", "ConvLSTM", "ConvLSTMAutoencoder", "ConvLSTMCell", "ModelArgs", "ModelOutput",
    "autocast", "build_model", "kl_divergence", "load_model", "masked_loss", "model_args_for", "model_payload", "prepare_model",
    "read_torch_file", "resolve_device",
]

#: Named architectures. Each fixes the map size it was designed for; ``kind`` and
#: ``n_lines`` come from the command line and the dataset.
CONFIGS: dict[str, dict] = {
    # ~10x lighter than a textbook full-resolution ConvLSTM AE so that 2 CPU cores train
    # the 2,000-galaxy demo survey in minutes: the stem halves the maps twice (32 -> 8)
    # before any recurrence, and one narrow ConvLSTM runs on each side.
    "demo": dict(size=32, latent_dim=128, stem_channels=(8, 16), enc_hidden=(32,), enc_strides=(1,),
                 dec_hidden=(32,), head_channels=(16, 8)),
    # The paper's scale (64 x 64 maps, latent 128), for a GPU.
    "paper": dict(size=64, latent_dim=128, stem_channels=(16, 32), enc_hidden=(32, 64), enc_strides=(1, 2),
                  dec_hidden=(64,), head_channels=(32, 16, 8)),
}


class ConfigError(BlueberryError):
    """A model configuration that does not fit the data (unknown name, wrong map size)."""


def model_args_for(config: str, kind: str, n_lines: int, size: int) -> ModelArgs:
    """ModelArgs of a named configuration for data with ``n_lines`` lines of ``size`` x ``size`` maps."""
    if config not in CONFIGS:
        raise ConfigError(f"unknown model config {config!r}; choose one of {', '.join(CONFIGS)}")
    if kind not in ("ae", "vae"):
        raise ConfigError(f"unknown model kind {kind!r}; choose 'ae' or 'vae'")
    spec = CONFIGS[config]
    if spec["size"] != size:
        fitting = [name for name, c in CONFIGS.items() if c["size"] == size]
        hint = f"use --config {fitting[0]}" if fitting else "ingest the data again with --size " + \
            " or ".join(str(c["size"]) for c in CONFIGS.values())
        raise ConfigError(f"config {config!r} is built for {spec['size']} x {spec['size']} maps but the dataset "
                          f"has {size} x {size}; {hint}")
    return ModelArgs(kind=kind, n_lines=n_lines, **spec)


def as_model_args(model_args: ModelArgs | dict) -> ModelArgs:
    """A ModelArgs from itself or its ``asdict`` (as stored in model.pt and manifests)."""
    if isinstance(model_args, ModelArgs):
        return model_args
    unknown = set(model_args) - {f.name for f in fields(ModelArgs)}
    if unknown:
        raise ConfigError(f"model_args has unknown fields {sorted(unknown)}: written by a newer Blueberry?")
    try:
        return ModelArgs(**model_args)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model_args {model_args}: {exc}") from None


def build_model(model_args: ModelArgs | dict) -> ConvLSTMAutoencoder:
    """The model described by ``model_args`` (a ModelArgs or its ``asdict``), freshly initialised."""
    return ConvLSTMAutoencoder(as_model_args(model_args))


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` is CUDA when present, else CPU; any other device must be ``cpu``, ``cuda`` or
    ``cuda:N`` and be here, else a :class:`ConfigError` names the devices that are."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    here = ", ".join(["cpu", *(f"cuda:{i}" for i in range(n_cuda))])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {device!r} is not a device Blueberry runs on; the devices here: {here} (or auto)")
    if dev.type == "cuda" and (n_cuda == 0 or (dev.index or 0) >= n_cuda):
        seen = f"{n_cuda} CUDA device(s)" if n_cuda else "no CUDA device"
        raise ConfigError(f"--device {device} but torch sees {seen}; the devices here: {here} (or auto)")
    return dev


def prepare_model(model: torch.nn.Module, device) -> torch.nn.Module:
    """Move ``model`` to ``device`` with channels-last weights (activations follow them).

    Channels-last pays on CUDA (tensor cores) and on the CPU too: oneDNN's convolutions
    run ~15 % faster on these small maps (benchmarks/README.md).
    """
    return model.to(torch.device(device)).to(memory_format=torch.channels_last)


def autocast(device):
    """bf16 autocast on CUDA, nothing on the CPU (where bf16 convolutions are slower and noisier)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_model(path, device="cpu") -> tuple[ConvLSTMAutoencoder, dict]:
    """Load ``model.pt`` (or the ``model.pt`` of a run directory): ``(model in eval mode, payload)``.

    ``payload`` holds ``model_args`` (a dict), ``config`` (training metadata) and ``state_dict``.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise RunError(f"{path}: no trained model here; train one with `python -m train fit --run {path.parent}`")
    todo = "train the model again into a new run: `python -m train fit --data DATASET --run NEW_RUN`"
    payload = read_torch_file(path, ("model_args", "state_dict"), todo)
    try:
        model = build_model(payload["model_args"])
        model.load_state_dict(payload["state_dict"])
    except (TypeError, ValueError, RuntimeError) as exc:  # RuntimeError: weights of another shape
        raise RunError(f"{path}: the weights do not fit the model it describes ({first_line(exc)}); {todo}") from None
    return prepare_model(model, device).eval(), payload


def read_torch_file(path, keys, todo: str) -> dict:
    """``torch.load(weights_only=True)`` of a file Blueberry wrote: a dict holding ``keys``.

    A truncated, foreign or hostile file (weights_only refuses any pickled code) is a
    RunError naming it and ending with ``todo``.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise RunError(f"{path}: holds more than tensors and plain values (refused by weights-only loading: "
                       f"damaged, or not written by Blueberry); {todo}") from None
    except Exception as exc:  # torch raises RuntimeError, EOFError, OSError, ... on a truncated file
        raise RunError(f"{path}: damaged or not a Blueberry file ({type(exc).__name__}: {first_line(exc)}); "
                       f"{todo}") from None
    missing = [k for k in keys if k not in obj] if isinstance(obj, dict) else list(keys)
    if missing:
        raise RunError(f"{path}: not a Blueberry file (it lacks {', '.join(missing)}); {todo}")
    return obj


def model_payload(model: ConvLSTMAutoencoder, config: dict) -> dict:
    """The self-describing ``model.pt`` content: rebuild with ``build_model(payload["model_args"])``."""
    return {"model_args": asdict(model.args), "config": config,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}
