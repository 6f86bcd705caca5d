"""Concurrent sessions: how many people one server on 2 cores serves with a first paint under 10 s.

    python benchmarks/concurrent_sessions.py                       # 10,000 galaxies, 1 2 4 8 12 sessions
    python benchmarks/concurrent_sessions.py --size 1000000 --sessions 1 4 --num-procs 2

The server is the command users run (``python -m train serve``). Two measurements:

- plain requests: GETs of ``/dashboard`` that never open a websocket (a link preview, a
  crawler, a health check), and the server CPU they cost (utime + stime of the server
  process from /proc), so a burst of them cannot starve the real sessions;
- concurrent sessions: N Chromium pages opened at the same moment, each timed to its first
  paint (header, latent map, table) and to its full page (every figure painted).

Chromium runs on the same cores as the server, as on a laptop, so the figures are a lower
bound of what a separate server machine does. Prints a table and writes JSON (default
benchmarks/results/concurrent_sessions.json).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.dashboard_latency import (  # noqa: E402
    CHROMIUM, CHROMIUM_ARGS, N_FIGURES, PAINT_JS, ensure_run, running_server)

#: A session "is served" when its first paint comes within this many seconds.
FIRST_PAINT_LIMIT_S = 10.0


def _cpu_seconds(pid: int) -> float:
    """utime + stime of the server process and its children (the workers of --num-procs)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # a process that ended meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def plain_requests(url: str, pid: int, n: int) -> dict:
    cpu, t = _cpu_seconds(pid), time.perf_counter()
    for _ in range(n):
        with urllib.request.urlopen(url + "/dashboard", timeout=60) as response:
            response.read()
    time.sleep(1)  # let the server finish what the requests started
    return {"requests": n, "wall_s": round(time.perf_counter() - t, 2),
            "server_cpu_s": round(_cpu_seconds(pid) - cpu, 2)}


async def _sessions(url: str, n: int) -> list[dict]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        warm = await browser.new_page()  # the browser's own start and cache, not counted
        await warm.goto(url + "/dashboard")
        await warm.evaluate(PAINT_JS, N_FIGURES)
        await warm.close()
        contexts = [await browser.new_context(viewport={"width": 1700, "height": 1400}) for _ in range(n)]
        pages = [await c.new_page() for c in contexts]

        async def visit(page):
            await page.goto(url + "/dashboard", wait_until="commit", timeout=300_000)
            marks = await page.evaluate(PAINT_JS, N_FIGURES)
            return {k: round(v / 1000, 2) for k, v in marks.items()}

        marks = await asyncio.gather(*(visit(page) for page in pages))
        await browser.close()
    return list(marks)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=10_000, help="galaxies in the fake run (default 10,000)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8, 12],
                        help="numbers of sessions opened at once")
    parser.add_argument("--plain", type=int, default=20, help="plain GET requests (default 20)")
    parser.add_argument("--num-procs", type=int, default=1, help="server processes (python -m train serve --num-procs)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "blueberry-dashboard-bench",
                        help="where the fake run is built (and reused)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "concurrent_sessions.json")
    args = parser.parse_args(argv)

    path, _ = ensure_run(args.work, args.size)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "size": args.size, "num_procs": args.num_procs, "first_paint_limit_s": FIRST_PAINT_LIMIT_S, "runs": []}
    with running_server(path, num_procs=args.num_procs) as (url, pid):
        result["plain"] = plain_requests(url, pid, args.plain)
        p = result["plain"]
        print(f"{p['requests']} plain requests (no websocket): {p['wall_s']} s, server CPU {p['server_cpu_s']} s")
        print(f"{'sessions':>8}{'first paint median / max s':>30}{'full page median / max s':>28}{'under 10 s':>12}")
        for n in args.sessions:
            marks = asyncio.run(_sessions(url, n))
            first, full = [m["first"] for m in marks], [m["full"] for m in marks]
            served = sum(f <= FIRST_PAINT_LIMIT_S for f in first)
            result["runs"].append({"sessions": n, "first_paint_s": first, "full_page_s": full, "served": served})
            print(f"{n:>8}{statistics.median(first):>18.2f} / {max(first):<9.2f}"
                  f"{statistics.median(full):>16.2f} / {max(full):<9.2f}{served:>8} of {n}", flush=True)
            time.sleep(3)  # the closed sessions' clean-up, before the next round
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
