"""Argument types of ``python -m train``: every option's value is checked here, as it is parsed.

A bad value (``--epochs 0``, ``--lr nan``, ``--val-fraction 2``, ``--device foo``, ``--out``
naming a file where a folder is written) ends in argparse's one-line usage error and exit
status 2 before any work starts: never a traceback, never a value clamped into something
the user did not ask for. Each command module uses these as ``type=``::

    p.add_argument("--epochs", type=positive_int)
    p.add_argument("--lr", type=finite_float(low=0, high=1, low_open=True))

What needs the data or the hardware (a line the file lacks, a CUDA device that is not
there) is checked by ``core`` and reported as a ``core.errors.BlueberryError``.
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path

#: More processes or threads than this is a typo, not a machine (a pool would try to start them all).
MAX_PROCESSES = 1024

#: Seeds go to numpy, torch and UMAP; UMAP (through numpy's legacy RandomState) takes 32 bits.
MAX_SEED = 2**32 - 1

#: What ``--device`` accepts; whether that device is present is ``core.models.resolve_device``'s check.
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")


def int_range(low: int, high: int | None = None):
    """A type for whole numbers in ``[low, high]`` (``high`` None: no upper bound)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a whole number {bounds}")
        return value
    return parse


def finite_float(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                 high_open: bool = False):
    """A type for finite numbers (never NaN or inf) between ``low`` and ``high``, each bound
    included unless ``low_open`` / ``high_open``."""
    interval = (("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}") + ", "
                + ("inf" if high is None else f"{high:g}") + (")" if high_open else "]"))

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if below or above:
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: give a number in {interval}")
        return value
    return parse


positive_int = int_range(1)
processes = int_range(1, MAX_PROCESSES)
processes_or_zero = int_range(0, MAX_PROCESSES)  # 0: the default (torch's threads, loading in-process)
random_seed = int_range(0, MAX_SEED)
fraction = finite_float(0, 1)
percentile = finite_float(0, 100, low_open=True, high_open=True)


def device_name(text: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; whether it exists is checked when it is used."""
    if not DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: give auto, cpu, cuda or cuda:N")
    return text


def out_folder(text: str) -> str:
    """A folder to write into: it may not exist yet, but it cannot be a file or lie under one."""
    path = _writable(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file; give a folder (it is created if needed)")
    return text


def out_file(text: str) -> str:
    """A file to write: it may exist (it is replaced), but it cannot be a folder."""
    path = _writable(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file name, e.g. {Path(text) / 'scores.csv'}")
    return text


def existing_file(text: str) -> str:
    """A file to read: it must exist and be a file."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file")
    return text


def _writable(text: str) -> Path:
    """``text`` as a path whose nearest existing ancestor is a folder this process may write in."""
    if not text.strip():
        raise argparse.ArgumentTypeError("the path is empty")
    path = Path(text).absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())  # "/" always exists
    if existing != path and not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, so {text} cannot be created under it")
    folder = existing if existing.is_dir() else existing.parent
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {folder} (permission denied)")
    return path


def links_file(text: str) -> str:
    """A links file of the inspector that ``core.links`` can use (checked now, not at the first page); absolute."""
    from core.links import LinksError, load_links

    try:
        load_links(text)
    except LinksError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return str(Path(text).resolve())
