"""Atomic writes: a crash never leaves a half-written file under its final name.

Every cached artifact (dataset arrays, run arrays, catalogues, manifests, checkpoints) is
written to a temporary name in the same folder, flushed, and renamed over the target.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    The caller writes the temporary file however it likes (``np.save``, ``to_parquet``,
    ``torch.save``). On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def read_versioned(path, fmt: str, error: type[Exception], todo: str) -> dict:
    """The JSON object in ``path`` when its ``format`` is ``fmt``, else ``error`` ending with ``todo``.

    Manifests carry their format so that a folder written by another version of Blueberry
    is refused with what to do, instead of failing later on a missing or renamed field.
    """
    try:
        obj = read_json(path)
    except (OSError, ValueError) as exc:
        raise error(f"{path}: cannot be read ({exc}); {todo}") from None
    found = obj.get("format") if isinstance(obj, dict) else None
    if found != fmt:
        raise error(f"{path}: format {found!r}, but this version of Blueberry reads {fmt!r}; "
                    f"{todo}")
    return obj


def known_fields(cls, obj: dict) -> dict:
    """The entries of ``obj`` that are fields of the dataclass ``cls`` (a manifest section)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in obj.items() if k in names}


def save_npy(path, arr) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(arr))


def save_parquet(path, df) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def open_npy_memmap(path, shape, dtype):
    """Create a ``.npy`` file of ``shape`` and ``dtype`` under a temporary name and memory-map it.

    Returns ``(array, commit)``: fill the array, then call ``commit()`` to flush and
    rename it into place. Lets ingest write arrays larger than memory.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))

    def commit():
        arr.flush()
        os.replace(tmp, path)

    return arr, commit


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
