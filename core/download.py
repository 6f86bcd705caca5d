"""Download the MaNGA DAP MAPS files of the galaxies a DAPall catalogue lists.

The files lie on the SDSS Science Archive Server (SAS) at :data:`SAS_PATH` below the
archive's root (``--base-url``, the part before ``dr17/``). Each is fetched by a pool of
threads into ``NAME.part`` beside its final name and renamed only when it is whole (as many
bytes as the server announced) and readable by ``core.maps.read_maps``, so an interrupted run
leaves no half file under a MAPS name, and a re-run fetches only what is missing: a file
already there is kept when its size is the server's (or, where the server cannot say, when it
reads), and a ``.part`` left by a killed run is started again from its first byte.

A server error (5xx), a timeout or a dropped connection is retried with exponential
backoff; a missing file (404) or another refusal is not, and neither is a file that arrives
whole but unreadable (the server would send the same bytes again). Every failure is recorded
with its reason in the :class:`DownloadReport`.

HTTP goes through ``requests`` (one session per thread, for keep-alive). SDSS's own
``sdss-access`` builds the same paths but brings a configuration tree and its own
dependencies (sdss-tree, sdsstools, daemonocle, ...) for one path template.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from core import summaries
from core.errors import BlueberryError, DatasetError, MapsError

#: The public SDSS archive: the root above ``dr17/``.
DEFAULT_BASE_URL = "https://data.sdss.org/sas/"
#: The DR17 analysis type the paper's maps come from: hybrid binning, MaStar SSP continuum.
DEFAULT_DAPTYPE = "HYB10-MILESHC-MASTARSSP"
#: Where DR17's DAP (DRP v3_1_1, DAP 3.1.0) puts a MAPS file, below the archive root.
SAS_PATH = ("dr17/manga/spectro/analysis/v3_1_1/3.1.0/{daptype}/{plate}/{ifu}/"
            "manga-{plate}-{ifu}-MAPS-{daptype}.fits.gz")
#: HTTP statuses worth another try: the server is busy or briefly broken.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
PART = ".part"


@dataclass(frozen=True)
class DownloadOptions:
    """How files are fetched; the defaults suit the public archive."""

    workers: int = 8  # files fetched at once (threads)
    retries: int = 4  # further attempts after a server error, a timeout or a dropped connection
    backoff: float = 2.0  # seconds before the first retry, doubled for each one after
    timeout: float = 60.0  # seconds to connect, and to wait for each block of bytes
    chunk: int = 1 << 20  # bytes read and written at a time


@dataclass
class Target:
    """One file to fetch."""

    plateifu: str  # the galaxy, e.g. "8485-1901"
    url: str  # where it lies on the archive
    path: Path  # where it goes


@dataclass
class DownloadReport:
    fetched: list = field(default_factory=list)  # plate-IFUs downloaded now
    kept: list = field(default_factory=list)  # plate-IFUs whose complete file was already there
    failed: list = field(default_factory=list)  # [{"plateifu", "url", "reason"}]
    bytes: int = 0  # bytes downloaded now
    seconds: float = 0.0


class _Retry(Exception):
    """A failure another attempt may not meet (a 5xx, a timeout, a dropped connection)."""


class _Fail(Exception):
    """A failure that another attempt would meet again (a 404, an unreadable file)."""


def file_url(base_url: str, plateifu: str, daptype: str) -> str:
    plate, ifu = plateifu.split("-", 1)
    return base_url.rstrip("/") + "/" + SAS_PATH.format(daptype=daptype, plate=plate, ifu=ifu)


def plan(dapall, out, daptype: str = DEFAULT_DAPTYPE, where: str | None = None, limit: int | None = None,
         base_url: str = DEFAULT_BASE_URL) -> list[Target]:
    """The files of the galaxies the DAPall file lists (those where ``where`` holds, the first
    ``limit``), each once, in the file's order. Rows the DAP did not finish (DAPDONE false) have no file."""
    if not base_url.startswith(("http://", "https://")):
        raise BlueberryError(f"--base-url {base_url!r} is not an http:// or https:// address")
    tables = summaries.table_names(dapall)
    if len(tables) > 1 and daptype not in tables:  # one extension per analysis type, as DR17's
        raise DatasetError(f"{dapall}: no analysis type {daptype}; it holds {', '.join(tables)}: choose one "
                           "with --daptype")
    table = summaries.select_rows(summaries.scalar_table(dapall, (daptype,)), where, dapall)
    if "DAPDONE" in table:
        table = table[table["DAPDONE"].astype(bool)]
    if summaries.KEY not in table:
        raise DatasetError(f"{dapall}: no {summaries.KEY} column; give a DAPall catalogue")
    ids = list(dict.fromkeys(table[summaries.KEY]))[:limit]
    odd = [i for i in ids if i.count("-") != 1 or not all(p.isdigit() for p in i.split("-"))]
    if odd:
        raise DatasetError(f"{dapall}: {summaries.KEY} {odd[0]!r} is not PLATE-IFUDESIGN")
    out = Path(out)
    targets = []
    for pid in ids:
        url = file_url(base_url, pid, daptype)
        targets.append(Target(pid, url, out / daptype / Path(*pid.split("-")) / url.rsplit("/", 1)[1]))
    return targets


def download(targets: list[Target], opts: DownloadOptions = DownloadOptions(), progress: bool = True) -> DownloadReport:
    """Fetch ``targets`` in parallel; never raises for one file's failure (the report lists it)."""
    import requests
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    report = DownloadReport()
    local = threading.local()
    sessions = []  # closed at the end, so that no connection outlives the download
    lock = threading.Lock()
    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="download", disable=not progress)

    def session() -> requests.Session:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            with lock:
                sessions.append(local.session)
        return local.session

    def grow(n: int) -> None:  # a file's announced size joins the bar's total
        with lock:
            bar.total += n
            bar.refresh()

    def advance(n: int) -> None:
        with lock:
            bar.update(n)
            report.bytes += n

    def one(t: Target) -> None:
        try:
            outcome = _fetch_with_retries(t, opts, session(), grow, advance)
        except _Fail as exc:
            outcome = str(exc)
        except Exception as exc:  # an unforeseen failure of one file never stops the others
            outcome = f"unexpected {type(exc).__name__}: {exc}"
        with lock:
            if outcome == "fetched":
                report.fetched.append(t.plateifu)
            elif outcome == "kept":
                report.kept.append(t.plateifu)
            else:
                report.failed.append({"plateifu": t.plateifu, "url": t.url, "reason": outcome})
            bar.set_postfix_str(f"{len(report.fetched) + len(report.kept)}/{len(targets)} files, "
                                f"{len(report.failed)} failed", refresh=True)

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(opts.workers, len(targets) or 1))) as pool:
            list(pool.map(one, targets))
    finally:
        bar.close()
        for s in sessions:
            s.close()
    report.seconds = time.perf_counter() - t0
    return report


def _fetch_with_retries(t: Target, opts: DownloadOptions, session, grow, advance) -> str:
    """"kept" or "fetched"; raises _Fail with the reason when it cannot be had."""
    for attempt in range(opts.retries + 1):
        try:
            return _fetch(t, opts, session, grow, advance)
        except _Retry as exc:
            if attempt == opts.retries:
                raise _Fail(f"{exc} (gave up after {opts.retries + 1} attempts)") from None
            time.sleep(opts.backoff * 2 ** attempt)
    raise AssertionError("unreachable")


def _fetch(t: Target, opts: DownloadOptions, session, grow, advance) -> str:
    import requests

    part = t.path.with_name(t.path.name + PART)
    try:
        if t.path.is_file() and _complete(t, opts, session):
            part.unlink(missing_ok=True)  # a leftover of an earlier run
            return "kept"
        t.path.parent.mkdir(parents=True, exist_ok=True)
        with session.get(t.url, stream=True, timeout=opts.timeout) as response:
            _check_status(response)
            announced = int(response.headers.get("Content-Length", 0)) or None
            grow(announced or 0)
            got = 0
            with open(part, "wb") as fh:  # a .part of a killed run starts again from its first byte
                for block in response.iter_content(opts.chunk):
                    fh.write(block)
                    got += len(block)
                    advance(len(block))
            if announced is not None and got != announced:
                raise _Retry(f"the connection ended after {got} of {announced} bytes")
    except requests.Timeout:
        raise _Retry(f"no answer within {opts.timeout:g} s") from None
    except requests.RequestException as exc:  # refused or dropped connection, broken transfer
        raise _Retry(f"connection failed ({type(exc).__name__}: {exc})") from None
    problem = readable(part)
    if problem:
        part.unlink(missing_ok=True)
        raise _Fail(f"the file arrived whole but cannot be read ({problem})")
    os.replace(part, t.path)
    return "fetched"


def _check_status(response) -> None:
    if response.status_code in RETRY_STATUS:
        raise _Retry(f"HTTP {response.status_code} {response.reason}")
    if response.status_code != 200:
        raise _Fail(f"HTTP {response.status_code} {response.reason}")


def _complete(t: Target, opts: DownloadOptions, session) -> bool:
    """Whether the file already at ``t.path`` is whole: its size is the server's, or, when the
    server cannot say, it reads."""
    import requests

    with contextlib.suppress(requests.RequestException, ValueError):
        head = session.head(t.url, timeout=opts.timeout, allow_redirects=True)
        if head.status_code == 200 and "Content-Length" in head.headers:
            return t.path.stat().st_size == int(head.headers["Content-Length"])
    return readable(t.path) is None


def readable(path: Path) -> str | None:
    """Why the MAPS file at ``path`` cannot be read (``core.maps.read_maps``); None when it can."""
    from core.maps import read_maps

    try:
        read_maps(path, lines=())
    except MapsError as exc:
        return exc.problem
    return None


def summary(report: DownloadReport, targets: list[Target]) -> str:
    rate = len(report.fetched) / report.seconds if report.seconds else 0.0
    lines = [f"{len(report.fetched)} of {len(targets)} files downloaded ({report.bytes / 2**20:.1f} MiB in "
             f"{report.seconds:.1f} s, {rate:.1f} files/s), {len(report.kept)} already complete, "
             f"{len(report.failed)} failed"]
    for f in report.failed[:20]:
        lines.append(f"  failed {f['plateifu']}: {f['reason']} ({f['url']})")
    if len(report.failed) > 20:
        lines.append(f"  ... and {len(report.failed) - 20} more")
    if report.failed:
        lines.append("run the same command again to retry the failed files; the others are kept")
    return "\n".join(lines)
