"""A loopback HTTP server answering IB's Flex Web Service (version 3), with faults.

It serves saved Flex queries' statements (XML bytes or files) the way IB does: SendRequest checks
the token and query id and answers a FlexStatementResponse with a reference code and the
GetStatement URL; GetStatement checks the token and reference and answers the statement, or
IB's "Statement generation in progress" (1019) for the first ``in_progress_polls`` polls of each
reference. Error answers are IB's own bodies and texts. Faults are switched on per endpoint or
for both, for a number of requests or until cleared. Every request served is recorded without
its token. Standard library only, besides the project.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

from ops_runner.simulators.loopback import LoopbackServer

FLEX_PATH = "/AccountManagement/FlexWebService"
SEND_REQUEST = "SendRequest"
GET_STATEMENT = "GetStatement"
# IB's timestamp on a FlexStatementResponse ("28 August, 2012 10:37 AM EDT"); fixed, so that
# no answer depends on the real clock.
TIMESTAMP = "02 November, 2020 09:15 AM EST"
FIRST_REFERENCE = 8412345670  # IB's reference codes are ten-digit numbers

# IB's Flex Web Service v3 error codes and texts (as listed by IB, and by csingley/ibflex).
FLEX_ERRORS = {
    "1003": "Statement is not available.",
    "1004": "Statement is incomplete at this time. Please try again shortly.",
    "1009": "The server is under heavy load. Statement could not be generated at this time. "
    "Please try again shortly.",
    "1012": "Token has expired.",
    "1014": "Query is invalid.",
    "1015": "Token is invalid.",
    "1017": "Reference code is invalid.",
    "1018": "Too many requests have been made from this token. Please try again shortly.",
    "1019": "Statement generation in progress. Please try again shortly.",
    "1020": "Invalid request or unable to validate request.",
}
_WARNINGS = {"1018", "1019"}  # IB answers "try again shortly" with Status Warn, the rest Fail
HTML_PAGE = (
    "<!DOCTYPE html>\r\n<html>\r\n<head><title>503 Service Temporarily Unavailable</title>"
    "</head>\r\n<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n"
    "</body>\r\n</html>\r\n"
)
MAINTENANCE_PAGE = (
    "<html><head><title>Interactive Brokers - System Maintenance</title></head><body>"
    "<p>Our systems are undergoing scheduled maintenance. Please try again later.</p>"
    "</body></html>"
)


class Fault(enum.Enum):
    """What the server does instead of (or to) a normal answer."""

    INVALID_TOKEN = "invalid_token"  # 1015, as if the token were revoked
    EXPIRED_TOKEN = "expired_token"  # 1012
    TOO_MANY_REQUESTS = "too_many_requests"  # 1018
    NOT_AVAILABLE = "not_available"  # 1003
    INVALID_REQUEST = "invalid_request"  # 1020
    HTML_ERROR = "html_error"  # HTTP 503 with a proxy's HTML page
    MAINTENANCE_PAGE = "maintenance_page"  # HTTP 200 with an HTML page
    TRUNCATED_XML = "truncated_xml"  # the body cut in half
    TIMEOUT = "timeout"  # no answer for hang_seconds, then the connection closes
    DROP = "drop"  # the connection closes without a byte of answer


_FAULT_CODES = {
    Fault.INVALID_TOKEN: "1015",
    Fault.EXPIRED_TOKEN: "1012",
    Fault.TOO_MANY_REQUESTS: "1018",
    Fault.NOT_AVAILABLE: "1003",
    Fault.INVALID_REQUEST: "1020",
}


@dataclass(frozen=True)
class ServedRequest:
    """A request the server answered: ``endpoint`` SendRequest or GetStatement, ``query`` the
    ``q`` parameter (query id or reference code), ``tokened`` whether a ``t`` was given (its
    value is never kept), ``answer`` the Flex error code or "statement"/"reference", ``status``
    the HTTP status (0 for no answer)."""

    endpoint: str
    query: str
    version: str
    tokened: bool
    user_agent: str
    answer: str
    status: int


class FlexServer(LoopbackServer[Fault, ServedRequest]):
    """IB's Flex Web Service on 127.0.0.1, for tests.

    ``statements`` maps a Flex query id to the statement it serves (XML bytes, or a file path).
    ``token`` is the only token accepted. The first ``in_progress_polls`` GetStatement polls of
    each reference answer 1019. ``statement_url`` is the GetStatement URL named in SendRequest's
    answer (this server's own by default; a test may name another to prove a client ignores it).
    """

    def __init__(
        self,
        statements: Mapping[str, bytes | str | Path],
        *,
        token: str = "test-flex-token",
        in_progress_polls: int = 0,
        hang_seconds: float = 2.0,
        statement_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._statements = {
            query: body if isinstance(body, bytes) else Path(body).read_bytes()
            for query, body in statements.items()
        }
        self.token = token
        self.in_progress_polls = in_progress_polls
        self.hang_seconds = hang_seconds
        self.statement_url = statement_url
        super().__init__(host, port)
        self._references: dict[str, str] = {}  # reference code -> query id
        self._polls: dict[str, int] = {}  # reference code -> GetStatement polls so far
        self._next_reference = FIRST_REFERENCE

    def __repr__(self) -> str:
        return f"FlexServer(queries={sorted(self._statements)})"

    thread_name = "flex-server"

    @property
    def url(self) -> str:
        return self.flex_url

    @property
    def flex_url(self) -> str:
        """The base a Flex client is given: SendRequest and GetStatement live under it."""
        return self.base_url + FLEX_PATH

    # -- what tests set and read -------------------------------------------------------------

    def set_fault(
        self, fault: Fault, endpoint: str | None = None, times: int | None = None
    ) -> None:
        """Apply ``fault`` to ``endpoint`` (SendRequest or GetStatement; both when None) for
        ``times`` requests (until cleared when None); an endpoint's own fault wins."""
        if endpoint not in (None, SEND_REQUEST, GET_STATEMENT):
            raise ValueError(f"no Flex endpoint {endpoint!r}")
        self._put_fault(endpoint, fault, times)

    # -- answering ---------------------------------------------------------------------------

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """Answer one GET (called by the request handler's thread)."""
        url = urlsplit(handler.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        token = params.pop("t", None)
        endpoint = url.path.removeprefix(FLEX_PATH + "/") if url.path.startswith(FLEX_PATH) else ""
        seen = ServedRequest(
            endpoint=endpoint,
            query=params.get("q", ""),
            version=params.get("v", ""),
            tokened=token is not None,
            user_agent=handler.headers.get("User-Agent", ""),
            answer="",
            status=200,
        )
        if endpoint not in (SEND_REQUEST, GET_STATEMENT):
            body = b"<html><head><title>404 Not Found</title></head></html>"
            return self._send(handler, replace(seen, answer="404", status=404), body, "text/html")
        fault = self._take_fault(endpoint)
        if self._transport_fault(handler, seen, fault):
            return None
        if seen.version != "3" or not seen.user_agent:
            return self._send_error(handler, seen, "1020")
        if token != self.token or fault is Fault.INVALID_TOKEN:
            return self._send_error(handler, seen, "1015")
        code = _FAULT_CODES.get(fault) if fault is not None else None
        if code is not None:
            return self._send_error(handler, seen, code)
        if endpoint == SEND_REQUEST:
            return self._send_request(handler, seen, fault)
        return self._get_statement(handler, seen, fault)

    def _send_request(self, handler: Any, seen: ServedRequest, fault: Fault | None) -> None:
        if seen.query not in self._statements:
            return self._send_error(handler, seen, "1014")
        with self._lock:
            reference = str(self._next_reference)
            self._next_reference += 1
            self._references[reference] = seen.query
            self._polls[reference] = 0
        url = self.statement_url or f"{self.flex_url}/{GET_STATEMENT}"
        body = _response(
            "Success", f"<ReferenceCode>{reference}</ReferenceCode><Url>{escape(url)}</Url>"
        )
        if fault is Fault.TRUNCATED_XML:
            body = body[: len(body) // 2]
        return self._send(handler, replace(seen, answer="reference"), body, "text/xml")

    def _get_statement(self, handler: Any, seen: ServedRequest, fault: Fault | None) -> None:
        with self._lock:
            query = self._references.get(seen.query)
            polls = self._polls.get(seen.query, 0)
            if query is not None:
                self._polls[seen.query] = polls + 1
        if query is None:
            return self._send_error(handler, seen, "1017")
        if polls < self.in_progress_polls:
            return self._send_error(handler, seen, "1019")
        body = self._statements[query]
        if fault is Fault.TRUNCATED_XML:
            body = body[: len(body) // 2]
        return self._send(handler, replace(seen, answer="statement"), body, "text/xml")

    def _transport_fault(self, handler: Any, seen: ServedRequest, fault: Fault | None) -> bool:
        """Answer the faults below the Flex protocol; return whether one was answered."""
        if fault is Fault.TIMEOUT:
            self._record(replace(seen, answer="timeout", status=0))
            self._stopping.wait(self.hang_seconds)
            handler.close_connection = True
            return True
        if fault is Fault.DROP:
            self._record(replace(seen, answer="drop", status=0))
            handler.close_connection = True
            return True
        if fault is Fault.HTML_ERROR:
            seen = replace(seen, answer="html", status=503)
            self._send(handler, seen, HTML_PAGE.encode(), "text/html")
            return True
        if fault is Fault.MAINTENANCE_PAGE:
            seen = replace(seen, answer="html")
            self._send(handler, seen, MAINTENANCE_PAGE.encode(), "text/html")
            return True
        return False

    def _send_error(self, handler: Any, seen: ServedRequest, code: str) -> None:
        status = "Warn" if code in _WARNINGS else "Fail"
        body = _response(
            status,
            f"<ErrorCode>{code}</ErrorCode><ErrorMessage>{escape(FLEX_ERRORS[code])}</ErrorMessage>",
        )
        self._send(handler, replace(seen, answer=code), body, "text/xml")

    def _send(self, handler: Any, seen: ServedRequest, body: bytes, content_type: str) -> None:
        self._write(handler, seen, seen.status, body, f"{content_type};charset=utf-8")


def _response(status: str, inner: str) -> bytes:
    """A FlexStatementResponse as IB writes it."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<FlexStatementResponse timestamp="{TIMESTAMP}">\n'
        f"<Status>{status}</Status>\n{inner}\n</FlexStatementResponse>\n"
    ).encode()
