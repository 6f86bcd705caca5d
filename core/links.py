"""Where the inspector links a galaxy to: Marvin, SkyServer's Navigate tool, the Legacy Surveys viewer.

The URL templates live here and only here. A template is a URL with fields in braces,
filled from the inspected galaxy's catalogue row: ``{plateifu}`` (the ``galaxy_id``),
``{mangaid}``, ``{ra}`` and ``{dec}`` (degrees, 6 decimals). Another set of links is a JSON
file, ``{"name": "template", ...}``, given to ``python -m train serve --links FILE`` (which
passes ``--args --links FILE`` to the app) or in the environment variable
``BLUEBERRY_LINKS``; ``{}`` shows no links. Every link opens in a new tab without
giving the page a handle on this one (``target=_blank rel=noopener``).

It lives in ``core`` (it imports no UI) so that ``train serve --links`` checks a file
before the server starts. See docs/ARCHITECTURE.md.
"""
from __future__ import annotations

import html
import json
import math
import os
import string
from pathlib import Path
from urllib.parse import quote, urlsplit

from core.errors import BlueberryError

#: The links shown when nothing else is configured: name -> URL template.
DEFAULT_LINKS = {
    "Marvin": "https://dr17.sdss.org/marvin/galaxy/{plateifu}/",
    "SkyServer": "https://skyserver.sdss.org/dr17/en/tools/chart/navi.aspx?ra={ra}&dec={dec}",
    "Legacy Surveys": "https://www.legacysurvey.org/viewer?ra={ra}&dec={dec}&layer=ls-dr10&zoom=16",
}
#: The fields a template may use.
FIELDS = ("plateifu", "mangaid", "ra", "dec")
ENV_VAR = "BLUEBERRY_LINKS"

_active: tuple[dict, str] | None = None  # (templates, problem) of this server process, set by configure


class LinksError(BlueberryError):
    """A links file that cannot be used; the message names the file and what is wrong."""


def check_templates(templates, source: str) -> dict[str, str]:
    """``templates`` if it is a JSON object of name -> http(s) URL template using only :data:`FIELDS`."""
    if not isinstance(templates, dict):
        raise LinksError(f"{source}: expected a JSON object of name -> URL template, got {type(templates).__name__}")
    for name, template in templates.items():
        if not isinstance(template, str):
            raise LinksError(f"{source}: the link {name!r} is not a string")
        if urlsplit(template).scheme not in ("http", "https"):
            raise LinksError(f"{source}: the link {name!r} must start with http:// or https://, got {template!r}")
        try:
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
        except ValueError as error:
            raise LinksError(f"{source}: the link {name!r} has a bad brace ({error}); write {{ and }} as {{{{ }}}}")
        unknown = fields - set(FIELDS)
        if unknown:
            raise LinksError(f"{source}: the link {name!r} uses {', '.join(sorted(unknown))}; "
                             f"a template may use {', '.join('{' + f + '}' for f in FIELDS)}")
    return dict(templates)


def load_links(path) -> dict[str, str]:
    """The templates of a links file (JSON); :class:`LinksError` says what is wrong with it."""
    path = Path(path)
    try:
        templates = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise LinksError(f"{path}: cannot read the links file ({error.strerror or error})") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise LinksError(f"{path}: not a JSON file ({error})") from None
    return check_templates(templates, str(path))


def configure(path=None) -> None:
    """Choose this server process's links: those of the file ``path``, else the defaults
    (``dashboard/main.py`` passes the app's ``--links`` or $BLUEBERRY_LINKS).

    A bad links file does not stop the app: the inspector shows the problem where the links go.
    """
    global _active
    try:
        _active = (load_links(path) if path else dict(DEFAULT_LINKS), "")
    except LinksError as error:
        _active = ({}, str(error))


def active() -> tuple[dict[str, str], str]:
    """(templates, problem) of this process: what :func:`configure` chose, else the environment's."""
    if _active is None:
        configure(os.environ.get(ENV_VAR))
    return _active


def galaxy_links(row, templates: dict[str, str]) -> list[tuple[str, str]]:
    """(name, URL) of each template filled from a catalogue row; one whose field the row lacks is left out."""
    values = {}
    for field in FIELDS:
        v = row.get("galaxy_id" if field == "plateifu" else field)
        if field in ("ra", "dec"):
            v = f"{float(v):.6f}" if v is not None and math.isfinite(float(v)) else None
        values[field] = None if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == "" \
            else quote(str(v), safe="")
    out = []
    for name, template in templates.items():
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        if all(values[f] is not None for f in fields):
            out.append((name, template.format(**{f: values[f] for f in fields})))
    return out


def links_html(row) -> str:
    """The inspector's links of a catalogue row, as HTML (or the configuration's problem)."""
    templates, problem = active()
    if problem:
        return f'<p class="bb-links" style="color:#a00;font-size:12px">Links: {html.escape(problem)}</p>'
    anchors = [f'<a href="{html.escape(url)}" target="_blank" rel="noopener noreferrer">{html.escape(name)}</a>'
               for name, url in galaxy_links(row, templates)]
    return f'<p class="bb-links" style="font-size:13px">Open in: {" · ".join(anchors)}</p>' if anchors else ""
