"""The served app is reachable from this machine only, and only from its own pages."""
from __future__ import annotations

import http.client
import socket
from pathlib import Path
from urllib.parse import urlsplit

from train.cli import build_parser
from train.serve import panel_command

LISTEN = "0A"  # TCP state of a listening socket in /proc/net/tcp


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as the kernel writes them) of the sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.is_file():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == LISTEN and int(hex_port, 16) == port:
                found.append(address)
    return found


def test_served_on_loopback_only(server):
    port = urlsplit(server).port
    addresses = _listening(port)
    assert addresses, f"nothing listens on port {port}"
    ipv4_loopback = socket.inet_aton("127.0.0.1")[::-1].hex().upper()  # /proc/net/tcp is little-endian
    assert set(addresses) == {ipv4_loopback}, f"port {port} listens on {addresses}, not only 127.0.0.1"


def _websocket_status(server: str, origin: str) -> tuple[int, str]:
    parts = urlsplit(server)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", "/dashboard/ws", headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": origin})
    response = conn.getresponse()
    body = response.read().decode(errors="replace")
    conn.close()
    return response.status, body


def test_websocket_refuses_other_origins(server):
    # A page from elsewhere (e.g. a DNS-rebinding attack) must not open the app's websocket.
    status, body = _websocket_status(server, "http://evil.example:80")
    assert status == 403 and "origin" in body.lower()
    status, body = _websocket_status(server, server)
    assert status != 403 and "origin" not in body.lower(), f"the app's own origin was refused ({status}: {body})"


def test_network_serving_is_explicit():
    parse = build_parser().parse_args
    default = panel_command(parse(["serve", "--run", "r"]))
    assert default[default.index("--address") + 1] == "127.0.0.1"
    origins = [default[i + 1] for i, a in enumerate(default) if a == "--allow-websocket-origin"]
    assert origins == ["localhost:5006", "127.0.0.1:5006"]
    assert "--reuse-sessions" in default, "a page request that opens no websocket must not build a session"
    shared = panel_command(parse(["serve", "--run", "r", "--address", "0.0.0.0", "--allow-origin", "galaxies.example.org",
                                  "--basic-auth", "creds.json"]))
    assert shared[shared.index("--address") + 1] == "0.0.0.0"
    assert "galaxies.example.org:5006" in shared and shared[shared.index("--basic-auth") + 1] == "creds.json"
