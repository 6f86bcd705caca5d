"""The app's own arguments, parsed once: ``panel serve dashboard --args --run PATH [--links FILE] [--user NAME]``.

``python -m train serve`` writes them (``train/serve.py``); Bokeh hands them to ``main.py``
and ``app_hooks.py`` as ``sys.argv``. Each has an environment variable for a bare
``panel serve dashboard`` and a default.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from core import links

#: The run shown without --run and $BLUEBERRY_RUN.
DEFAULT_RUN = "runs/demo"
#: The environment variable naming the run.
RUN_ENV = "BLUEBERRY_RUN"


@dataclass(frozen=True)
class AppArgs:
    """What the served app was asked to show, and for whom."""

    run: Path  # the run folder: --run, else $BLUEBERRY_RUN, else runs/demo
    links: str | None  # the links file: --links, else $BLUEBERRY_LINKS, else None (core.links.DEFAULT_LINKS)
    user: str | None  # who labels: --user, else None (the OS user)


def parse_app_args(argv: list[str] | None = None, environ=None) -> AppArgs:
    """``argv``: the app's arguments (``sys.argv[1:]`` in a served app); unknown ones are ignored."""
    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(prog="panel serve dashboard --args", add_help=False)
    parser.add_argument("--run", default=None)
    parser.add_argument("--links", default=None)
    parser.add_argument("--user", default=None)
    args, _ = parser.parse_known_args(argv or [])
    return AppArgs(run=Path(args.run or environ.get(RUN_ENV) or DEFAULT_RUN),
                   links=args.links or environ.get(links.ENV_VAR) or None, user=args.user or None)
