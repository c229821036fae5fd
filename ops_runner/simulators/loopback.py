"""What every loopback HTTP server the tests start shares: a threaded server on 127.0.0.1, the
requests it answered, and faults a test sets per key for a number of requests.

``VendorServer`` (the data vendors) and ``FlexServer`` (IB's Flex Web Service) subclass
``LoopbackServer`` and answer in their service's exact formats; the request line may carry a
secret (a key, a token), so nothing here ever logs it.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Generic, Self, TypeVar

F = TypeVar("F")  # the server's fault kinds
R = TypeVar("R")  # the server's record of one answered request


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: LoopbackServer[Any, Any]

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) closes its end; anything else is a bug worth printing.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HttpServer

    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.server.owner.answer(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request line may carry a key or a token: never print it


class LoopbackServer(Generic[F, R]):
    """A service on 127.0.0.1 for tests: ``answer`` each GET; a context manager."""

    thread_name = "loopback-server"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._lock = threading.Lock()
        self._faults: dict[str | None, tuple[F, int | None]] = {}
        self._requests: list[R] = []
        self._stopping = threading.Event()
        self._httpd: _HttpServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Start serving in a daemon thread; return the URL a client is given."""
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _HttpServer(self._address, _Handler)
            self._httpd.owner = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=self.thread_name,
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving (a hanging answer is cut short); idempotent."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"the {self.thread_name} is not started")
        host, port = self._httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        """The URL a client is given (the base URL unless the service lives under a path)."""
        return self.base_url

    # -- what tests set and read -------------------------------------------------------------

    def _put_fault(self, key: str | None, fault: F, times: int | None) -> None:
        with self._lock:
            self._faults[key] = (fault, times)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[R]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def _take_fault(self, key: str) -> F | None:
        """Return the fault for ``key`` (its own, else the global one) and count it down."""
        with self._lock:
            found: str | None = key if key in self._faults else None
            if found not in self._faults:
                return None
            fault, times = self._faults[found]
            if times is not None:
                if times <= 1:
                    del self._faults[found]
                else:
                    self._faults[found] = (fault, times - 1)
            return fault

    # -- answering ---------------------------------------------------------------------------

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one GET (called by the request handler's thread)."""
        raise NotImplementedError

    def _record(self, seen: R) -> None:
        with self._lock:
            self._requests.append(seen)

    def _write(
        self,
        handler: Any,
        seen: R,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Record ``seen`` and send one complete answer."""
        self._record(seen)
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)
