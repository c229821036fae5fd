"""pypi.org on 127.0.0.1 for the dependency scan's pip-audit child: a CONNECT proxy that answers
as pypi.org over TLS with a certificate from a CA of the test's own, and PyPI's release JSON.

pip-audit asks ``https://pypi.org/pypi/<name>/<version>/json`` and nothing else (its
``_service/pypi.py``). The child inherits ``HTTPS_PROXY`` pointing at the server (requests
honours it) and ``REQUESTS_CA_BUNDLE`` naming only the test's CA (a connection that went
elsewhere would fail verification). The answers are PyPI's release JSON as documented
(``info``, ``urls``, ``vulnerabilities`` with ``aliases``, ``details``, ``summary``,
``fixed_in``, ``id``, ``link``, ``source``, ``withdrawn``); the server logs every release asked
about, the scan's independent witness.
"""

from __future__ import annotations

import http.server
import json
import re
import ssl
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trustme

# One pinned package of pyproject.toml and its version here, the one the server calls
# vulnerable; another whose only advisory was withdrawn (pip-audit must drop it).
VULNERABLE = "pyyaml"
WITHDRAWN = "six"
ADVISORY = {
    "aliases": ["CVE-2099-0001", "GHSA-test-test-test"],
    "details": "A made-up advisory of the dependency scan's tests.\nSecond line.",
    "summary": "Made-up: arbitrary code execution in the test's YAML loader",
    "fixed_in": ["7.0", "6.0.99"],  # out of order, as PyPI does not promise an order
    "id": "PYSEC-2099-1",
    "link": "https://osv.dev/vulnerability/PYSEC-2099-1",
    "source": "osv",
    "withdrawn": None,
}
WITHDRAWN_ADVISORY = {**ADVISORY, "id": "PYSEC-2099-2", "aliases": ["CVE-2099-0002"],
                      "withdrawn": "2099-01-02T03:04:05Z"}  # fmt: skip


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass
class Advisories:
    """The local pypi.org: what it answers and which releases it was asked about."""

    vulnerable: bool = True
    known: bool = True  # False: every release is a 404, as from a mirror without the JSON API
    asked: list[tuple[str, str]] = field(default_factory=list)
    proxy: str = ""

    def answer(self, name: str, version: str) -> tuple[int, dict]:
        self.asked.append((name, version))
        if not self.known:
            return 404, {"message": "Not Found"}
        vulnerabilities = []
        if self.vulnerable and name == VULNERABLE:
            vulnerabilities = [ADVISORY]
        if name == WITHDRAWN:
            vulnerabilities = [WITHDRAWN_ADVISORY]
        return 200, {
            "info": {"name": name, "version": version, "summary": "", "yanked": False},
            "last_serial": 1,
            "urls": [],
            "vulnerabilities": vulnerabilities,
        }


def _handler(world: Advisories, tls: ssl.SSLContext) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_CONNECT(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "pypi.org:443":
                self.send_error(403, "this test serves pypi.org only")
                return
            self.send_response(200, "Connection established")
            self.end_headers()
            # The tunnel: TLS as pypi.org on the same socket, then its requests (http.client
            # sends CONNECT as HTTP/1.0, which would end the connection after it).
            self.connection = tls.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb")
            self.wfile = self.connection.makefile("wb")
            self.close_connection = False

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            found = re.fullmatch(r"/pypi/([^/]+)/([^/]+)/json", self.path)
            status, document = world.answer(*found.groups()) if found else (404, {})
            body = json.dumps(document).encode()
            self.send_response(status)
            self.send_header("Content-Type", 'application/json; charset="UTF-8"')
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

    return Handler


def make_authority(folder: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA of the test's own and pypi.org's certificate from it; the CA's PEM file."""
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pypi.org").configure_cert(tls)
    pem = folder / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    return tls, pem


def point_at(environ: MutableMapping[str, str], proxy: str, pem: Path) -> None:
    """The scan's child inherits these: pypi.org through ``proxy``, trusting only our CA.
    ``environ``: a MonkeyPatch's setenv/delenv through ``monkeypatched``, or a plain dict."""
    for name in ("ALL_PROXY", "all_proxy", "NO_PROXY", "no_proxy", "CURL_CA_BUNDLE"):
        environ.pop(name, None)
    environ["HTTPS_PROXY"] = environ["https_proxy"] = proxy
    environ["REQUESTS_CA_BUNDLE"] = str(pem)


@contextmanager
def serve_advisories(tls: ssl.SSLContext, world: Advisories | None = None) -> Iterator[Advisories]:
    """pypi.org on 127.0.0.1 while inside; ``world.proxy`` is its address."""
    world = world or Advisories()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(world, tls))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    world.proxy = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield world
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
