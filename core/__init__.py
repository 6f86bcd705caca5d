"""Blueberry's science core: reading MaNGA maps, the synthetic survey, datasets, models, scores, BPT.

Nothing here imports a plotting or web library, so it serves scripts, notebooks and the app alike.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("blueberry-ifs")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"
