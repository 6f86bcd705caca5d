"""Atomic writes, careful reads: a crash never leaves a half-written file under its final name,
and a damaged file is refused with a message that names it.

Every cached artifact (dataset arrays, run arrays, catalogues, manifests, checkpoints) is
written to a temporary name in the same folder (``.NAME.pid<PID>.<random>.tmp``), flushed,
and renamed over the target. A writer killed with -9 leaves its temporary file behind; the
next stage in that folder removes it (:func:`remove_stale_tmp`). A stage records a
:func:`file_stamp` of each file it wrote, and readers check it (:func:`stamp_problem`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import tempfile
import types
import typing
from pathlib import Path

import numpy as np
import pandas as pd

#: The temporary names of this module: the writer's pid is in the name, so that a later
#: process can tell a dead writer's leftovers from a live writer's file.
_TMP_NAME = re.compile(r"^\..+\.pid(\d+)\.[^.]*\.tmp$")
#: What reading a damaged .npy or .parquet file raises (pyarrow's errors subclass these).
_READ_ERRORS = (OSError, ValueError, EOFError)


def _tmp_beside(path: Path) -> Path:
    """A new, empty temporary file beside ``path``, named after it and this process."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.pid{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it to ``path``.

    The caller writes the temporary file however it likes (``np.save``, ``to_parquet``,
    ``torch.save``). On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_beside(path)
    try:
        yield tmp
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
    """The entries of ``obj`` that are fields of the dataclass ``cls`` (a manifest section).

    Raises ValueError when ``obj`` is not an object or a value does not have its field's
    type (a damaged or hand-edited manifest), so that it is refused on reading, not later.
    """
    if not isinstance(obj, dict):
        raise ValueError(f"{cls.__name__} should be an object, found {type(obj).__name__}")
    hints = typing.get_type_hints(cls)
    known = {k: v for k, v in obj.items() if k in hints}
    for name, value in known.items():
        if not _fits(value, hints[name]):
            raise ValueError(f"{name!r} is {_short(value)}, which is not {_type_name(hints[name])}")
    return known


def _fits(value, hint) -> bool:
    """Whether a JSON value fits a manifest field's annotation (dataclass sections: any object)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    if origin in (list, tuple):  # list[X], tuple[X, ...]: JSON has lists
        return isinstance(value, list) and all(_fits(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_fits(k, args[0]) and _fits(v, args[1]) for k, v in value.items())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return isinstance(value, origin or hint)


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "") if typing.get_args(hint) else hint.__name__


def _short(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def load_npy(path, error: type[Exception], todo: str, mmap: bool = True) -> np.ndarray:
    """``np.load`` (memory-mapped, no pickles), or ``error`` naming the damaged file and ending with ``todo``."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except _READ_ERRORS as exc:
        raise error(f"{path}: damaged or not a .npy array ({exc}); {todo}") from None


def check_array(path, arr: np.ndarray, shape: tuple, dtype, error: type[Exception], todo: str) -> None:
    """``error`` unless ``arr`` (read from ``path``) has ``dtype`` and ``shape`` (None: any length there)."""
    fits = arr.ndim == len(shape) and all(want is None or got == want for got, want in zip(arr.shape, shape))
    if not fits or arr.dtype != np.dtype(dtype):
        wanted = "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"
        raise error(f"{path}: {arr.dtype} array of shape {arr.shape}, but the manifest says {np.dtype(dtype)} "
                    f"{wanted}; {todo}")


def load_parquet(path, error: type[Exception], todo: str):
    """``pd.read_parquet``, or ``error`` naming the damaged file and ending with ``todo``."""
    try:
        return pd.read_parquet(path)
    except _READ_ERRORS as exc:
        raise error(f"{path}: damaged or not a parquet table ({exc}); {todo}") from None


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
    tmp = _tmp_beside(path)
    arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=tuple(shape))

    def commit():
        arr.flush()
        os.replace(tmp, path)

    return arr, commit


def file_stamp(path) -> dict:
    """What a stage records of a file it wrote: ``{"bytes", "mtime_ns", "sha256"}``."""
    st = os.stat(path)
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(path)}


def stamp_files(folder, names) -> dict[str, dict]:
    """The :func:`file_stamp` of each of the files ``names`` in ``folder``."""
    return {name: file_stamp(Path(folder) / name) for name in names}


def stamp_problem(path, stamp: dict) -> str | None:
    """Why the file at ``path`` is not the one ``stamp`` recorded; None when it is.

    Cheap on every open: the size must match; the sha256 is computed only when the
    modification time moved (a copy without its times, or another writer).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "missing"
    if st.st_size != stamp.get("bytes"):
        return f"{st.st_size} bytes, not the {stamp.get('bytes')} written"
    if st.st_mtime_ns != stamp.get("mtime_ns") and sha256_file(path) != stamp.get("sha256"):
        return "its content changed after it was written"
    return None


def remove_stale_tmp(folder) -> list[Path]:
    """Remove the temporary files in ``folder`` whose writer has died (a kill -9 leaves them).

    A stage calls it when it starts in a folder it owns. A file named with this process's
    own pid is a leftover too: it came from an earlier process that had the same pid.
    """
    removed = []
    for tmp in Path(folder).glob(".*.tmp"):
        match = _TMP_NAME.match(tmp.name)
        if match and not _alive(int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


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
