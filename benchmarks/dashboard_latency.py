"""Dashboard latency: paint time, selection-to-views time and memory per session, at 10k and 1M galaxies.

    python benchmarks/dashboard_latency.py                      # 10,000 and 1,000,000 galaxies
    python benchmarks/dashboard_latency.py --sizes 10000 --visits 5

For each size it builds a fake run (tests/fakerun.py; small maps so a million fit on
disk: 16 x 16 spaxels up to 100k galaxies, 4 x 4 beyond), then measures

- server side, in process: opening the run, the warm-up (numba compilation), rendering
  one session, and for each selection gesture the time from the state call to every
  linked view updated (table, count, highlights on the latent map and the three BPT
  diagrams, histogram, inspector for a tap). That is all the Python work an event costs;
  sending the patch over the websocket is not included.
- served: ``python -m train serve`` (the command users run) in a subprocess, headless
  Chromium (/usr/bin/chromium) opening the page: time to the first paint (header, latent
  map and table painted) and to the full page (every figure the page shows painted: the latent
  map, the histogram and the inspector), on a warm server, checked once per animation frame;
  then the time from a click on each other detail tab (why it is odd, BPT diagrams, neighbours,
  comparison) to its figures painted, the first time it is opened; and the server's resident
  memory per extra open session.

Browser and server share the machine's cores, as they would on a laptop. Prints a table
and writes JSON (default benchmarks/results/dashboard_latency.json).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.fakerun import make_fake_run  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
N_FIGURES = 3  # latent map, histogram, inspector: the other views wait in their tabs
#: Each detail tab but the inspector's, and the named figures it draws when first opened (the
#: comparison draws none until asked: its tab is open when its Compare button shows).
TABS = {"Why it is odd": ["why"], "BPT diagrams": ["bpt-nii", "bpt-sii", "bpt-oi"], "Neighbours": ["neighbours"],
        "Compare selections": []}
#: True once every figure named in the argument has painted.
ALL_PAINTED_JS = """(names) => names.every(n => [...Bokeh.index.query(v => v.model && v.model.name === n && v.has_finished())].length)"""
TARGETS = {"paint_s": {10_000: 3.0, 1_000_000: 4.0}, "select_ms": {10_000: 250, 1_000_000: 1000}}

#: Resolves when the latent map has painted (first) and when all figures have (full), in ms
#: since navigation start. It looks once per animation frame (~16 ms), the browser's own
#: pace: polling on a 10 ms timer cost the page's main thread ~0.7 s during a load.
PAINT_JS = """(n) => new Promise(resolve => {
  const marks = {};
  function check() {
    const now = performance.now();
    if (window.Bokeh !== undefined && Bokeh.index !== undefined) {
      let done = 0;
      for (const v of Bokeh.index.query(v => v.model && v.model.constructor && v.model.constructor.__name__ === 'Figure')) {
        if (v.has_finished()) { done += 1; if (v.model.name === 'latent-map' && marks.first === undefined) marks.first = now; }
      }
      if (done >= n) { marks.full = now; resolve(marks); return; }
    }
    requestAnimationFrame(check);
  }
  check();
})"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def ensure_run(work: Path, n: int) -> tuple[Path, float]:
    path = work / f"run-{n}"
    if (path / "manifest.json").is_file():
        return path, 0.0
    t = time.perf_counter()
    make_fake_run(path, n=n, size=16 if n <= 100_000 else 4, seed=1)
    return path, time.perf_counter() - t


def server_side(path: Path, reps: int) -> dict:
    """In-process timings: open, warm up, one session, and every selection gesture."""
    from bokeh.document import Document

    from dashboard.app import build_app, warm_up
    from dashboard.data import open_app_data
    from dashboard.views.latent_map import MAP_FRAME, latent_extent

    out = {}
    t = time.perf_counter()
    data = open_app_data(path)
    out["open_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    warm_up(data)
    out["warm_up_s"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    state, page = build_app(data)
    page.server_doc(Document())
    out["session_render_s"] = round(time.perf_counter() - t, 2)

    (x0, x1), (y0, y1) = latent_extent(data)
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    far = int(np.argmax(np.hypot(data.x - cx, data.y - cy)))
    gestures = {
        # Two shapes each, alternated, so every call really changes the selection.
        "box (latent, ~1/4 of the map)": [
            lambda: state.select_box(x0 + 0.25 * w, x0 + 0.75 * w, y0 + 0.25 * h, y0 + 0.75 * h),
            lambda: state.select_box(x0 + 0.2 * w, x0 + 0.7 * w, y0 + 0.3 * h, y0 + 0.8 * h)],
        "lasso (latent, 12 vertices)": [
            lambda: state.select_lasso(cx + 0.35 * w * np.cos(np.linspace(0, 6.2, 12)),
                                       cy + 0.35 * h * np.sin(np.linspace(0, 6.2, 12))),
            lambda: state.select_lasso(cx + 0.3 * w * np.cos(np.linspace(0, 6.2, 12)),
                                       cy + 0.4 * h * np.sin(np.linspace(0, 6.2, 12)))],
        "tap (select + inspect)": [
            lambda: state.tap(data.x[far], data.y[far], (x0, x1), (y0, y1), MAP_FRAME),
            lambda: state.tap(data.x[int(data.order[0])], data.y[int(data.order[0])], (x0, x1), (y0, y1), MAP_FRAME)],
        "box ([NII] BPT)": [lambda: state.select_box(-1.0, 0.0, -1.0, 1.0, "bpt_nii"),
                            lambda: state.select_box(-0.8, 0.2, -0.5, 1.2, "bpt_nii")],
        "histogram range": [lambda: state.select_score_range(data.median, data.p90),
                            lambda: state.select_score_range(data.p90, float(data.score.max()))],
        "neighbours": [state.select_neighbours, state.clear_selection],
    }
    out["gestures"] = {}
    for name, calls in gestures.items():
        times, sizes = [], []
        for i in range(reps):
            t = time.perf_counter()
            calls[i % 2]()
            times.append(time.perf_counter() - t)
            sizes.append(len(state.selection))
        out["gestures"][name] = {"median_ms": _ms(statistics.median(times)), "max_ms": _ms(max(times)),
                                 "selected": int(statistics.median(sizes))}
    return out


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@contextlib.contextmanager
def running_server(path: Path, num_procs: int = 1):
    """``python -m train serve`` on ``path`` (the command users run), answering: yields (url, pid)."""
    port = _free_port()
    cmd = [sys.executable, "-m", "train", "serve", "--run", str(path), "--port", str(port),
           "--num-procs", str(num_procs)]
    with tempfile.NamedTemporaryFile("w+", suffix=".log") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the server exited:\n{Path(log.name).read_text()}")
                try:
                    with urllib.request.urlopen(url + "/", timeout=5):
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    time.sleep(0.5)
            yield url, proc.pid
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def served(path: Path, visits: int, sessions: int) -> dict:
    """Start the real server; paint times of fresh visits; memory per extra open session."""
    from playwright.sync_api import sync_playwright

    from dashboard import spare

    out = {}
    t = time.perf_counter()
    with running_server(path) as (url, pid):
        out["server_start_s"] = round(time.perf_counter() - t, 1)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            context = browser.new_context(viewport={"width": 1700, "height": 1400})
            marks = []
            for i in range(visits + 1):  # the first visit warms the browser cache, not counted
                page = context.new_page()
                page.goto(url + "/dashboard", wait_until="commit")
                m = page.evaluate(PAINT_JS, N_FIGURES)
                time.sleep(1)
                for title, names in TABS.items():  # timed from Python: Playwright's round trips included
                    t = time.perf_counter()
                    page.locator(".bk-tab", has_text=title).first.click()
                    if names:
                        page.wait_for_function(ALL_PAINTED_JS, arg=names)
                    else:
                        page.get_by_role("button", name="Compare", exact=True).wait_for()
                    m[title] = (time.perf_counter() - t) * 1000
                page.close()
                if i:
                    marks.append(m)
                time.sleep(1)
            out["first_paint_s"] = round(statistics.median(m["first"] for m in marks) / 1000, 2)
            out["full_paint_s"] = round(statistics.median(m["full"] for m in marks) / 1000, 2)
            out["tab_open_s"] = {title: round(statistics.median(m[title] for m in marks) / 1000, 2) for title in TABS}
            out["visits"] = [{k: round(v / 1000, 2) for k, v in m.items()} for m in marks]

            # Each RSS is read after the server has built the next session's views (dashboard/spare.py),
            # so both include one spare and the difference is what the open sessions hold.
            settle = spare.DELAY_S + 3
            pages = []
            page = context.new_page()
            page.goto(url + "/dashboard")
            page.evaluate(PAINT_JS, N_FIGURES)
            pages.append(page)
            time.sleep(settle)
            base = _rss_mb(pid)
            for _ in range(sessions):
                page = context.new_page()
                page.goto(url + "/dashboard")
                page.evaluate(PAINT_JS, N_FIGURES)
                pages.append(page)
                time.sleep(settle)
            out["rss_one_session_mb"] = round(base)
            out["rss_per_extra_session_mb"] = round((_rss_mb(pid) - base) / sessions, 1)
            browser.close()
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "blueberry-dashboard-bench",
                        help="where the fake runs are built (and reused)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "dashboard_latency.json")
    parser.add_argument("--reps", type=int, default=6, help="repetitions of each gesture")
    parser.add_argument("--visits", type=int, default=3, help="timed page visits")
    parser.add_argument("--sessions", type=int, default=3, help="extra sessions for the memory figure")
    parser.add_argument("--no-browser", action="store_true", help="server-side timings only")
    args = parser.parse_args(argv)

    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform()}, "targets": TARGETS, "sizes": {}}
    for n in args.sizes:
        path, gen_s = ensure_run(args.work, n)
        print(f"--- {n:,} galaxies ({path}; built in {gen_s:.0f} s)" if gen_s else f"--- {n:,} galaxies ({path})",
              flush=True)
        # A fresh interpreter per size, so one size's caches and compiled kernels do not help the next.
        code = (f"import json, sys; sys.path.insert(0, {str(REPO)!r}); "
                f"from benchmarks.dashboard_latency import server_side; "
                f"print(json.dumps(server_side(__import__('pathlib').Path({str(path)!r}), {args.reps})))")
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
        entry = {"server": json.loads(done.stdout.strip().splitlines()[-1])}
        if not args.no_browser:
            entry["served"] = served(path, args.visits, args.sessions)
        results["sizes"][str(n)] = entry
        print_table(n, entry)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def print_table(n: int, entry: dict) -> None:
    s = entry["server"]
    target = TARGETS["select_ms"].get(n)
    print(f"  open run {s['open_s']} s, warm-up {s['warm_up_s']} s, one session rendered {s['session_render_s']} s")
    print(f"  {'gesture':<32}{'selected':>10}{'median ms':>11}{'max ms':>9}" + ("   target ms" if target else ""))
    for name, g in s["gestures"].items():
        print(f"  {name:<32}{g['selected']:>10,}{g['median_ms']:>11.1f}{g['max_ms']:>9.1f}"
              + (f"{target:>12}" if target else ""))
    if "served" in entry:
        v = entry["served"]
        print(f"  server start {v['server_start_s']} s; first paint {v['first_paint_s']} s, full page "
              f"{v['full_paint_s']} s (target {TARGETS['paint_s'].get(n, '-')} s); RSS {v['rss_one_session_mb']} MB with one "
              f"session, +{v['rss_per_extra_session_mb']} MB per extra session")
        print("  a detail tab opened the first time, click to painted: "
              + ", ".join(f"{title} {sec} s" for title, sec in v["tab_open_s"].items()))


if __name__ == "__main__":
    sys.exit(main())
