"""Fixtures of the browser tests: a served dashboard on a fake run, and headless Chromium.

The server is the real command (``python -m train serve --run RUN``, which becomes
``panel serve dashboard --plugins dashboard.export ...``) in a subprocess; Playwright drives the Debian Chromium at
/usr/bin/chromium (never a downloaded browser). Everything skips, with the reason, where
that Chromium is absent.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.fakerun import make_fake_run

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
#: Startup opens the run and compiles numba kernels (app_hooks.py): tens of seconds on 2 cores.
SERVER_START_TIMEOUT = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("browser") / "fake-run", n=300)


def serve(run: Path, log_dir: Path, *extra: str):
    """Base URL of ``python -m train serve --run RUN [extra]`` on a free port, until the generator is closed;
    the server's log is shown if it dies or does not answer."""
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}; the browser tests drive that binary and never download one")
    port = _free_port()
    log_path = log_dir / "panel.log"
    cmd = [sys.executable, "-m", "train", "serve", "--run", str(run), "--port", str(port), *extra]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"panel serve exited with {proc.returncode}:\n{log_path.read_text()}")
            try:
                # Bokeh's root redirects to the app index: cheap, and only answered once the
                # warm-up of on_server_loaded has finished.
                with urllib.request.urlopen(base + "/", timeout=5):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    pytest.fail(f"panel serve did not answer within {SERVER_START_TIMEOUT} s:\n{log_path.read_text()}")
                time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server(fake_run, tmp_path_factory):
    """Base URL of ``python -m train serve`` on the fake run; the log is printed if it dies."""
    yield from serve(fake_run, tmp_path_factory.mktemp("server"))


@pytest.fixture(scope="session")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1700, "height": 2300}, accept_downloads=True)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
