"""A recording HTTP server on 127.0.0.1 for the alert channels' tests (the webhook, the push
services): it keeps every POST and answers ``status`` after ``delay`` seconds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def document(self) -> dict[str, Any]:
        return json.loads(self.body)


class RecordingServer(ThreadingHTTPServer):
    """Records each POST; answers ``status`` (with ``location`` when set, and ``answer`` as
    its body) after ``delay`` seconds."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, answer: bytes = b"{}", content_type: str | None = None) -> None:
        super().__init__((HOST, 0), _RecordingHandler)
        self.status = 200
        self.delay = 0.0
        self.location = ""
        self.answer = answer
        self.content_type = content_type
        self.received: list[Request] = []

    @property
    def where(self) -> str:
        return f"{HOST}:{self.server_address[1]}"

    @property
    def base(self) -> str:
        return f"http://{self.where}"

    def handle_error(self, request, client_address) -> None:
        pass  # a client that timed out has gone: nothing to report


class _RecordingHandler(BaseHTTPRequestHandler):
    server: RecordingServer

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.received.append(Request("POST", self.path, dict(self.headers), body))
        time.sleep(self.server.delay)
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        if self.server.content_type:
            self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(self.server.answer)))
        self.end_headers()
        self.wfile.write(self.server.answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(**options: Any) -> Iterator[RecordingServer]:
    """Yield a started server (for a fixture to ``yield from``); stopped after."""
    server = RecordingServer(**options)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=2)
