"""The Flex client against the loopback Flex Web Service: polling, IB's error codes and faults.

Every request goes to 127.0.0.1. No test sleeps for real: the client's ``sleep`` is a recorder.
Every failure must be one StatementError line that names the problem, and neither it nor any
log line may hold the token or the unmasked account id.
"""

from __future__ import annotations

import hashlib
import logging
import socket
from pathlib import Path

import pytest

from ops_runner.brokers.base import CashKind
from ops_runner.brokers.ib_flex import FlexClient, StatementError
from ops_runner.simulators.flex_server import GET_STATEMENT, SEND_REQUEST, Fault, FlexServer

FLEX = Path(__file__).resolve().parents[1] / "data" / "flex"
OCTOBER = FLEX / "flex_2020_10_cash.xml"
BIL_SPLIT = FLEX / "flex_2017_11_bil_reverse_split.xml"
TOKEN = "flexTOKEN-do-not-leak-271828"
QUERY = "912345"
SPLIT_QUERY = "912346"
ACCOUNT = "U1234567"
POLL = 5.0
# Named in SendRequest's answer to prove the client does not follow it: nothing listens there.
ELSEWHERE = "http://127.0.0.1:9/AccountManagement/FlexWebService/GetStatement"


class Sleeps(list):
    """Records the client's waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def server():
    statements = {QUERY: OCTOBER, SPLIT_QUERY: BIL_SPLIT}
    with FlexServer(statements, token=TOKEN, statement_url=ELSEWHERE, hang_seconds=2.0) as flex:
        yield flex


def client(server: FlexServer, token: str = TOKEN, query: str = QUERY, **options):
    sleeps = Sleeps()
    options = {"timeout": 2.0, "poll_seconds": POLL, "max_polls": 12, "sleep": sleeps, **options}
    return FlexClient(token, query, base_url=server.flex_url, **options), sleeps


def failure(flex: FlexClient, caplog) -> StatementError:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(StatementError) as caught:
        flex.fetch()
    message = str(caught.value)
    assert "\n" not in message
    assert TOKEN not in message and ACCOUNT not in message
    assert message.startswith("IB Flex ") and message.endswith("nothing was read")
    assert TOKEN not in caplog.text
    return caught.value


def test_fetch_when_statement_ready_after_two_polls_returns_it(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.in_progress_polls = 2
    flex, sleeps = client(server)
    body = flex.fetch()
    assert body == OCTOBER.read_bytes()
    assert sleeps == [POLL, POLL]
    served = server.requests
    assert [(r.endpoint, r.answer) for r in served] == [
        (SEND_REQUEST, "reference"),
        (GET_STATEMENT, "1019"),
        (GET_STATEMENT, "1019"),
        (GET_STATEMENT, "statement"),
    ]
    assert served[0].query == QUERY
    assert {r.query for r in served[1:]} == {"8412345670"}  # the reference code, not the query
    assert all(r.tokened and r.version == "3" for r in served)
    assert all(r.user_agent.startswith("Python/") for r in served)
    assert TOKEN not in caplog.text


def test_read_when_statement_served_returns_the_accounts_statement(server):
    flex, _ = client(server)
    statement = flex.read(ACCOUNT)
    assert statement.account == ACCOUNT
    assert statement.source == f"ib-flex query {QUERY}"
    assert statement.sha256 == hashlib.sha256(OCTOBER.read_bytes()).hexdigest()
    assert [c.kind for c in statement.cash] == [
        CashKind.FEE,
        CashKind.INTEREST,
        CashKind.TRANSFER,
        CashKind.DIVIDEND,
        CashKind.WITHHOLDING,
    ]


def test_read_when_split_statement_served_returns_the_split(server):
    flex, _ = client(server, query=SPLIT_QUERY)
    (split,) = flex.read(ACCOUNT).actions
    assert (split.symbol, split.quantity, str(split.cash)) == ("BIL", -151, "45.74")


def test_read_when_statement_is_another_accounts_refuses_it_masked(server):
    flex, _ = client(server)
    with pytest.raises(StatementError) as caught:
        flex.read("U7654321")
    assert "U1****67" in str(caught.value) and "U7****21" in str(caught.value)
    assert ACCOUNT not in str(caught.value) and "U7654321" not in str(caught.value)


@pytest.mark.parametrize(
    ("fault", "code", "words"),
    [
        (Fault.INVALID_TOKEN, "1015", "Token is invalid."),
        (Fault.EXPIRED_TOKEN, "1012", "Token has expired."),
        (Fault.NOT_AVAILABLE, "1003", "Statement is not available."),
        (Fault.INVALID_REQUEST, "1020", "Invalid request"),
    ],
)
@pytest.mark.parametrize("endpoint", [SEND_REQUEST, GET_STATEMENT])
def test_fetch_when_ib_answers_an_error_code_names_it(server, caplog, endpoint, fault, code, words):
    server.set_fault(fault, endpoint)
    flex, sleeps = client(server)
    error = failure(flex, caplog)
    assert error.code == code
    assert f"IB Flex {endpoint}: {code} {words}" in str(error)
    assert sleeps == []


def test_fetch_when_token_is_wrong_ib_says_invalid_token(server, caplog):
    flex, _ = client(server, token="not-the-token")
    error = failure(flex, caplog)
    assert error.code == "1015" and "check the Flex token" in str(error)
    assert "not-the-token" not in str(error)


def test_fetch_when_query_unknown_ib_says_query_invalid(server, caplog):
    flex, _ = client(server, query="999999")
    error = failure(flex, caplog)
    assert error.code == "1014" and "Query is invalid." in str(error)


def test_fetch_when_too_many_requests_once_backs_off_then_succeeds(server):
    server.set_fault(Fault.TOO_MANY_REQUESTS, SEND_REQUEST, times=1)
    server.set_fault(Fault.TOO_MANY_REQUESTS, GET_STATEMENT, times=1)
    flex, sleeps = client(server)
    assert flex.fetch() == OCTOBER.read_bytes()
    assert sleeps == [2 * POLL, 4 * POLL]  # doubling from poll_seconds


def test_fetch_when_too_many_requests_persist_gives_up_naming_1018(server, caplog):
    server.set_fault(Fault.TOO_MANY_REQUESTS, SEND_REQUEST)
    flex, sleeps = client(server, max_polls=4, poll_seconds=10.0)
    error = failure(flex, caplog)
    assert error.code == "1018" and "after 4 waits" in str(error)
    assert sleeps == [20.0, 40.0, 60.0, 60.0]  # capped at a minute


def test_fetch_when_statement_never_ready_gives_up_after_max_polls(server, caplog):
    server.in_progress_polls = 100
    flex, sleeps = client(server, max_polls=3)
    error = failure(flex, caplog)
    assert error.code == "1019"
    assert "Statement generation in progress" in str(error) and "after 3 waits" in str(error)
    assert sleeps == [POLL, POLL, POLL]
    assert len([r for r in server.requests if r.endpoint == GET_STATEMENT]) == 4


@pytest.mark.parametrize(
    ("fault", "endpoint", "words"),
    [
        (Fault.HTML_ERROR, SEND_REQUEST, "HTTP 503 (an HTML page '503 Service Temporarily"),
        (Fault.MAINTENANCE_PAGE, GET_STATEMENT, "an HTML page 'Interactive Brokers - System"),
        (Fault.TRUNCATED_XML, SEND_REQUEST, "truncated or malformed XML"),
        (Fault.TRUNCATED_XML, GET_STATEMENT, "truncated or malformed XML"),
        (Fault.DROP, SEND_REQUEST, "the connection dropped"),
        (Fault.DROP, GET_STATEMENT, "the connection dropped"),
    ],
)
def test_fetch_when_the_answer_is_broken_names_the_problem(server, caplog, fault, endpoint, words):
    server.set_fault(fault, endpoint)
    flex, _ = client(server)
    error = failure(flex, caplog)
    assert f"IB Flex {endpoint}: {words}" in str(error)
    assert error.code is None


def test_fetch_when_ib_does_not_answer_in_time_names_the_timeout(server, caplog):
    server.set_fault(Fault.TIMEOUT, GET_STATEMENT)
    flex, _ = client(server, timeout=0.3)
    error = failure(flex, caplog)
    assert "IB Flex GetStatement: no answer within 0.3 s" in str(error)


def test_fetch_when_nothing_listens_says_it_cannot_connect(caplog):
    with socket.socket() as probe:  # a port that was free a moment ago, now closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    flex = FlexClient(TOKEN, QUERY, base_url=f"http://127.0.0.1:{port}/x", sleep=Sleeps())
    error = failure(flex, caplog)
    assert "IB Flex SendRequest: cannot connect to 127.0.0.1" in str(error)


def test_fetch_when_faults_clear_a_new_fetch_succeeds(server):
    server.set_fault(Fault.DROP, GET_STATEMENT, times=1)
    flex, _ = client(server)
    with pytest.raises(StatementError):
        flex.fetch()
    assert flex.fetch() == OCTOBER.read_bytes()
