"""``train download``: a SAS-shaped tree of synthetic MAPS files served over HTTP, with faults."""
from __future__ import annotations

import functools
import gzip
import threading
import time
from collections import Counter
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.download import DEFAULT_DAPTYPE, PART, SAS_PATH, DownloadOptions, download, plan, summary
from core.errors import DatasetError
from tests.test_ingest import blob_galaxy
from tests.test_summaries import dapall_file
from train.cli import main

#: Galaxies on the server; 10003 is missing (404), 10004 truncated on the server, 10005 slow at first,
#: 10006 drops the connection at first, 10007 answers 503 at first.
IDS = [f"1000{i}-1901" for i in range(8)]
MISSING, TRUNCATED, SLOW, DROPPED, BUSY = IDS[3:]
#: Seconds the slow file waits before its first answer: longer than the tests' timeout.
DELAY = 1.5
FAST = dict(timeout=0.5, backoff=0.05, retries=2, workers=4)


class FaultyArchive(SimpleHTTPRequestHandler):
    """Serves a folder; the first GET of some files misbehaves. ``requests`` counts GETs per file."""

    requests: Counter = Counter()
    lock = threading.Lock()

    def do_GET(self):
        with self.lock:
            self.requests[self.path] += 1
            first = self.requests[self.path] == 1
        if first and SLOW in self.path:
            time.sleep(DELAY)
        if first and BUSY in self.path:
            self.send_error(503, "Busy")
            return
        if first and DROPPED in self.path:
            body = Path(self.translate_path(self.path)).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):  # quiet
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):  # a client that gave up on the slow file: expected
        pass


@pytest.fixture
def archive(tmp_path):
    """(base URL, DAPall file, the handler class) of a local archive in SAS layout."""
    root = tmp_path / "sas"
    for i, pid in enumerate(IDS):
        if pid == MISSING:
            continue
        plate, ifu = pid.split("-")
        path = root / SAS_PATH.format(daptype=DEFAULT_DAPTYPE, plate=plate, ifu=ifu)
        path.parent.mkdir(parents=True)
        blob_galaxy(path, pid, seed=i, n=16)
        if pid == TRUNCATED:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) * 2 // 3])
    dapall = dapall_file(tmp_path / "dapall.fits", [(pid, DEFAULT_DAPTYPE, 1.0, 0, 5.0) for pid in IDS])
    handler = type("Handler", (FaultyArchive,), {"requests": Counter()})
    server = QuietServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", dapall, handler
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_retries_records_failures_and_resumes(archive, tmp_path):
    base, dapall, handler = archive
    out = tmp_path / "out"
    targets = plan(dapall, out, base_url=base)
    assert [t.plateifu for t in targets] == IDS
    assert targets[0].path == out / DEFAULT_DAPTYPE / "10000" / "1901" / f"manga-10000-1901-MAPS-{DEFAULT_DAPTYPE}.fits.gz"
    report = download(targets, DownloadOptions(**FAST), progress=False)
    failed = {f["plateifu"]: f["reason"] for f in report.failed}
    assert set(failed) == {MISSING, TRUNCATED}
    assert failed[MISSING].startswith("HTTP 404")
    assert "cannot be read" in failed[TRUNCATED] and "truncated" in failed[TRUNCATED]
    assert sorted(report.fetched) == sorted(set(IDS) - {MISSING, TRUNCATED})
    gets = {k.split("/")[-1].split("-MAPS")[0]: v for k, v in handler.requests.items()}
    assert gets["manga-" + MISSING] == 1 and gets["manga-" + TRUNCATED] == 1  # never retried
    assert gets["manga-" + SLOW] == 2 and gets["manga-" + DROPPED] == 2 and gets["manga-" + BUSY] == 2
    # what is there is whole and readable; no .part is left and no file stands under a failed name
    assert not list(out.rglob(f"*{PART}"))
    assert {p.name.split("-MAPS")[0] for p in out.rglob("*.fits.gz")} == {f"manga-{i}" for i in report.fetched}
    text = summary(report, targets)
    assert "6 of 8 files downloaded" in text and f"failed {MISSING}: HTTP 404" in text and "again" in text

    # a second run downloads nothing it has; a file cut short by a kill and a stale .part are fetched again
    handler.requests.clear()
    cut = targets[0].path
    cut.write_bytes(cut.read_bytes()[:100])
    stale = targets[1].path.with_name(targets[1].path.name + PART)
    stale.write_bytes(b"half")
    again = download(targets, DownloadOptions(**FAST), progress=False)
    assert again.fetched == [IDS[0]] and sorted(again.kept) == sorted(set(report.fetched) - {IDS[0]})
    assert not stale.exists() and {f["plateifu"] for f in again.failed} == {MISSING, TRUNCATED}
    assert sum(v for k, v in handler.requests.items() if IDS[1] in k) == 0  # kept after a HEAD, not fetched


def test_retries_give_up_and_say_so(archive, tmp_path):
    base, dapall, _ = archive
    targets = plan(dapall, tmp_path / "out", base_url=base, where=f"PLATEIFU == '{SLOW}'")
    report = download(targets, DownloadOptions(timeout=0.2, backoff=0.01, retries=0), progress=False)
    assert report.failed[0]["reason"] == "no answer within 0.2 s (gave up after 1 attempts)"


def test_cli_dry_run_selection_exit_status_and_errors(archive, tmp_path, capsys):
    base, dapall, handler = archive
    out = tmp_path / "out"
    args = ["download", "--dapall", str(dapall), "--out", str(out), "--base-url", base, "--quiet"]
    assert main([*args, "--dry-run", "--where", "PLATEIFU > '10005'", "--limit", "1"]) == 0
    printed = capsys.readouterr().out
    assert f"manga-{IDS[5]}-MAPS" in printed and "1 files" in printed and not handler.requests
    assert main([*args, "--limit", "3"]) == 0
    assert "3 of 3 files downloaded" in capsys.readouterr().out
    assert main([*args, "--timeout", "0.5", "--retries", "1"]) == 1
    assert f"failed {MISSING}: HTTP 404" in capsys.readouterr().out
    assert main([*args, "--where", "REDSHIFT < 1"]) == 2
    assert "its columns are PLATEIFU" in capsys.readouterr().err
    assert main([*args, "--base-url", "ftp://example.org/"]) == 2
    with pytest.raises(SystemExit):
        main([*args, "--workers", "0"])
    with pytest.raises(DatasetError, match="PLATEIFU 'x-1' is not PLATE-IFUDESIGN"):
        plan(dapall_file(tmp_path / "odd.fits", [("x-1", DEFAULT_DAPTYPE, 1.0, 0, 1.0)]), out, base_url=base)


def test_files_per_second_against_a_local_server(archive, tmp_path):
    """Not a benchmark: the figure the report quotes (print with -s); the files are ~20 kB."""
    base, dapall, _ = archive
    good = f"PLATEIFU not in ['{MISSING}', '{TRUNCATED}', '{SLOW}', '{DROPPED}', '{BUSY}']"
    targets = plan(dapall, tmp_path / "out", base_url=base, where=good)
    report = download(targets, DownloadOptions(workers=4), progress=False)
    assert len(report.fetched) == len(targets) == 3
    print(f"\n{len(targets) / report.seconds:.1f} files/s")


def test_a_dapall_with_one_extension_per_daptype(tmp_path):
    """DR17's layout: the rows of the --daptype extension are read; an unknown type names the others."""
    from astropy.io import fits

    def ext(name, ids):
        return fits.BinTableHDU.from_columns([fits.Column("PLATEIFU", "12A", array=ids),
                                              fits.Column("DAPDONE", "L", array=[True, False][: len(ids)])], name=name)
    path = tmp_path / "dapall.fits"
    fits.HDUList([fits.PrimaryHDU(), ext("SPX-MILESHC-MASTARSSP", ["1-2"]),
                  ext(DEFAULT_DAPTYPE, ["3-4", "5-6"])]).writeto(path)
    targets = plan(path, tmp_path / "out", base_url="https://example.org/sas")
    assert [t.plateifu for t in targets] == ["3-4"]  # 5-6: DAPDONE false, no file
    assert targets[0].url == ("https://example.org/sas/dr17/manga/spectro/analysis/v3_1_1/3.1.0/"
                              f"{DEFAULT_DAPTYPE}/3/4/manga-3-4-MAPS-{DEFAULT_DAPTYPE}.fits.gz")
    assert [t.plateifu for t in plan(path, tmp_path, daptype="SPX-MILESHC-MASTARSSP", base_url="http://x/")] == ["1-2"]
    with pytest.raises(DatasetError, match="no analysis type HYB10-TYPO; it holds SPX-MILESHC-MASTARSSP, HYB10"):
        plan(path, tmp_path, daptype="HYB10-TYPO", base_url="http://x/")
