"""``python -m train serve``: serve the app on a run, to this machine only unless asked otherwise."""
from __future__ import annotations

HELP = "serve the app on a run (http://localhost:5006/dashboard), reachable from this machine only by default"
EXAMPLES = """\
  python -m train serve --run runs/demo
  python -m train serve --run runs/mine --port 5007
  python -m train serve --run runs/mine --user "A. Astronomer"   # who the labels made here are by
  python -m train serve --run runs/mine --address 0.0.0.0 --allow-origin galaxies.example.org \\
      --basic-auth credentials.json --cookie-secret "$(openssl rand -hex 32)"
  python -m train serve --run runs/mine --dry-run          # print the panel command, start nothing
  python -m train serve --run runs/mine --links links.json # the inspector's links from a JSON file

The app listens on 127.0.0.1 and accepts websocket connections only from pages it served
itself (http://localhost:PORT and http://127.0.0.1:PORT), so neither another machine nor a
web page from elsewhere (DNS rebinding) can read the catalogue or pull the export. To share
the app on a network, give --address (0.0.0.0 for every interface) and the host names people
will type (--allow-origin), and put authentication in front: --basic-auth takes a password or
a JSON file of user credentials (Panel's basic authentication; add --cookie-secret), or run
`panel serve` yourself with Panel's OAuth options (--oauth-provider ...).
"""

from train.args import int_range, links_file, processes

#: The loopback addresses, which only this machine reaches.
LOOPBACK = ("127.0.0.1", "localhost", "::1")
#: Addresses that mean "every interface": nobody types them into a browser.
WILDCARD = ("0.0.0.0", "::", "")
#: Ports a server may listen on.
port_number = int_range(1, 65535)


def add_arguments(p) -> None:
    p.add_argument("--run", default="runs/demo", help="run directory after `python -m train embed` (default runs/demo)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    p.add_argument("--port", type=port_number, default=5006, help="port to listen on (default 5006)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="another host name that pages may be served from (repeatable); needed with --address")
    p.add_argument("--basic-auth", metavar="PASSWORD|FILE.json",
                   help="require a password, or the credentials in a JSON file (Panel's basic authentication)")
    p.add_argument("--cookie-secret", help="secret that signs the login cookie (with --basic-auth)")
    p.add_argument("--num-procs", type=processes, default=1,
                   help="server processes (default 1); more serve more concurrent sessions on more cores")
    p.add_argument("--links", type=links_file, metavar="FILE.json",
                   help='the inspector\'s links: a JSON object {"name": "https://...{plateifu}..."} with fields '
                        '{plateifu} {mangaid} {ra} {dec} (default: Marvin, SkyServer, Legacy Surveys)')
    p.add_argument("--user", metavar="NAME",
                   help="who the interest labels made in the app are attributed to (default: the OS user; "
                        "with --basic-auth, each person's login)")
    p.add_argument("--dry-run", action="store_true", help="print the panel command and exit")


def panel_command(args) -> list[str]:
    """The ``panel serve`` command line of ``args``; the dashboard is found without importing it."""
    import importlib.util
    import sys
    from pathlib import Path

    app_dir = Path(importlib.util.find_spec("dashboard").origin).parent
    origins = [f"{host}:{args.port}" for host in ("localhost", "127.0.0.1")]
    if args.address not in LOOPBACK + WILDCARD:
        origins.append(f"{args.address}:{args.port}")
    origins += [o if ":" in o else f"{o}:{args.port}" for o in args.allow_origin]
    cmd = [sys.executable, "-m", "panel", "serve", str(app_dir), "--plugins", "dashboard.export",
           "--address", args.address, "--port", str(args.port), "--num-procs", str(args.num_procs)]
    for origin in dict.fromkeys(origins):
        cmd += ["--allow-websocket-origin", origin]
    if args.basic_auth:
        cmd += ["--basic-auth", args.basic_auth]
    if args.cookie_secret:
        cmd += ["--cookie-secret", args.cookie_secret]
    # --warm runs the app once at start, so the first visitor does not wait for it.
    # --reuse-sessions answers a page request from a cached page and builds the real session only
    # when the page's websocket connects: a request that never opens one (a link preview, a
    # crawler, a health check) costs almost nothing instead of a whole session.
    app_args = ["--run", str(args.run)] + (["--links", str(args.links)] if getattr(args, "links", None) else [])
    app_args += ["--user", args.user] if getattr(args, "user", None) else []
    return [*cmd, "--warm", "--reuse-sessions", "--args", *app_args]


def run(args) -> int:
    import os
    import shlex
    import sys

    cmd = panel_command(args)
    if args.dry_run:
        print(shlex.join(cmd))
        return 0
    if args.address not in LOOPBACK and not args.basic_auth:
        print(f"warning: serving on {args.address} without authentication: anyone who can reach port "
              f"{args.port} can read the whole catalogue and export it. Add --basic-auth (and --cookie-secret), "
              "or put OAuth in front (see `python -m train serve --help`).", file=sys.stderr)
    host = "localhost" if args.address in LOOPBACK + WILDCARD else args.address
    print(f"Blueberry: open http://{host}:{args.port}/dashboard (Ctrl-C stops the server)", flush=True)
    # The server replaces this process, so Ctrl-C and kill reach it directly.
    os.execv(cmd[0], cmd)
