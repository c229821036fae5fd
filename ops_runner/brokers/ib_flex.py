"""IB's Flex statements: the Flex Web Service client, and the reader of the statement it serves.

The Flex Web Service is IB's two-step HTTP API for a query saved in Client Portal: SendRequest
answers a reference code, then GetStatement answers the statement (or "still generating, try
again shortly"). The reader turns one FlexStatement's cash transactions and corporate actions into
a ``Statement``. IB's vocabulary (type strings, action codes, error codes, camelCase attributes)
stays in this module; the token stays out of every URL, log line and message above the wire.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal, InvalidOperation

import httpx

from ops_runner.brokers.base import ActionLine, BrokerError, CashKind, CashLine, Statement
from ops_runner.core.hashing import compute_sha256
from ops_runner.workbook.config import mask_account

log = logging.getLogger(__name__)

FLEX_BASE_URL = "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService"
FLEX_VERSION = "3"  # without v=3 IB answers in version 2, with vaguer errors
SOURCE = "ib-flex"
# IB refuses programmatic requests without a User-Agent and asks for "technology/version".
USER_AGENT = f"Python/{sys.version_info.major}.{sys.version_info.minor} ops-runner"
MAX_BACKOFF_SECONDS = 60.0
DETAIL_CHARS = 160  # IB's text quoted in a message is cut to this many characters

# CashTransaction ``type`` as IB writes it -> the workbook's kind. Verified against ibflex's
# enums.CashAction (csingley/ibflex) and real statements kept as test data by titov-vv/jal.
# IB wrote "Deposits/Withdrawals" for years and "Deposits & Withdrawals" later: both are read.
# Anything else (Commission Adjustments, Bond Interest, Advisor Fees...) is OTHER.
CASH_KINDS: dict[str, CashKind] = {
    "Dividends": CashKind.DIVIDEND,
    "Withholding Tax": CashKind.WITHHOLDING,
    "Payment In Lieu Of Dividends": CashKind.IN_LIEU,
    "Broker Interest Received": CashKind.INTEREST,
    "Broker Interest Paid": CashKind.INTEREST,
    "Other Fees": CashKind.FEE,
    "Deposits/Withdrawals": CashKind.TRANSFER,
    "Deposits & Withdrawals": CashKind.TRANSFER,
}

# CorporateAction ``type`` codes this reader turns into ActionLines (ibflex enums.Reorg).
FORWARD_SPLIT = "FS"
REVERSE_SPLIT = "RS"
SPLIT_TYPES = {FORWARD_SPLIT, REVERSE_SPLIT}
# IB sells the fraction a split leaves as a Trade of this transactionType: the cash in lieu.
FRACTION_SALES = {"FracShare", "FracShareCancel"}
OLD_SUFFIX = ".OLD"  # IB's symbol for the line that removes the old shares when the ISIN changes
DETAIL = "DETAIL"
EXECUTION = "EXECUTION"
ORDER = "ORDER"

IN_PROGRESS = "1019"  # "Statement generation in progress. Please try again shortly."
THROTTLED = "1018"  # "Too many requests have been made from this token."
_ADVICE = {
    "1003": "check the Flex query's period in Client Portal, then fetch again",
    "1004": "IB's statement data is not ready yet: fetch again later",
    "1005": "IB's settlement data is not ready yet: fetch again later",
    "1006": "IB's P/L data is not ready yet: fetch again later",
    "1007": "IB's P/L data is not ready yet: fetch again later",
    "1008": "IB's P/L data is not ready yet: fetch again later",
    "1009": "IB is under heavy load: fetch again later",
    "1010": "convert the legacy Flex query to an Activity Flex query in Client Portal",
    "1011": "activate the Flex Web Service in Client Portal",
    "1012": "generate a new Flex token in Client Portal and put it in the workbook's secrets",
    "1013": "the token is bound to another IP address: generate one for this machine",
    "1014": "check the Flex query id",
    "1015": "check the Flex token in the workbook's secrets",
    "1016": "check the account the Flex query covers",
    "1017": "the reference code expired: fetch again",
    "1018": "IB limits requests per token: wait a few minutes, then fetch again",
    "1019": "IB is still generating the statement: fetch again later, or allow more polls",
    "1020": "check the Flex token and query id",
    "1021": "IB could not retrieve the statement: fetch again later",
}
_DEFAULT_ADVICE = "fetch again later; if it persists, look the code up in IB's Flex documentation"
_SPLIT = re.compile(r"^(?P<head>.*?\bSPLIT\s+(?P<new>\d+)\s+FOR\s+(?P<old>\d+))", re.IGNORECASE)
_HTML = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html)\b", re.IGNORECASE | re.DOTALL)
_DOCTYPE = re.compile(rb"<!DOCTYPE", re.IGNORECASE)
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


class StatementError(BrokerError):
    """A Flex statement could not be fetched or read; nothing was read from it.

    ``code`` is IB's Flex error code (e.g. "1012") when IB gave one. The message is one line
    and never holds the token or an unmasked account id.
    """


# -- reading a statement -------------------------------------------------------------------------


def parse_statement(xml: bytes, account: str | None = None) -> Statement:
    """Return the Statement in a Flex query response: cash lines and split actions, oldest first.

    ``account``, when given, is the account the statement must be for. Only rows IB marks
    ``levelOfDetail="DETAIL"`` count (rows without the attribute count too). Raises
    StatementError for malformed XML, an HTML page, a FlexStatementResponse error body, a
    statement for another account, a row that cannot be read, a corporate action other than a
    split, or a split that leaves a fraction of a share unsettled.
    """
    root = _read_xml(xml, "statement")
    if root.tag == "FlexStatementResponse":
        status, code, message = _read_response(root)
        raise StatementError(
            f"IB Flex statement: IB answered {status or 'an error'} {code} "
            f"{_one_line(message)} instead of a statement; {_advice(code)}; nothing was read",
            code=code or None,
        )
    if root.tag != "FlexQueryResponse":
        raise _refused(f"the root element is <{_one_line(root.tag, limit=40)}>", "")
    node = _pick_statement(root.findall("FlexStatements/FlexStatement"), account)
    owner = node.get("accountId", "")
    start = _required_date(node, "fromDate", owner)
    end = _required_date(node, "toDate", owner)
    if start > end:
        raise _refused(f"fromDate {start} is after toDate {end}", owner)
    cash = _read_cash(_detail(node.findall("CashTransactions/CashTransaction")), owner)
    sales = [t for t in node.findall("Trades/Trade") if t.get("transactionType") in FRACTION_SALES]
    # A query may list a trade per order and per execution: count each sale once.
    levels = {t.get("levelOfDetail") for t in sales}
    sales = _detail(sales, level=ORDER if levels == {ORDER} else EXECUTION)
    actions = _read_actions(_detail(node.findall("CorporateActions/CorporateAction")), sales, owner)
    return Statement(
        account=owner,
        start=start,
        end=end,
        cash=tuple(sorted(cash, key=lambda line: line.on)),
        actions=tuple(sorted(actions, key=lambda action: (action.effective, action.line_id))),
        source=SOURCE,
        sha256=compute_sha256(xml),
    )


def _pick_statement(nodes: list[ET.Element], account: str | None) -> ET.Element:
    if not nodes:
        raise _refused("it holds no FlexStatement", account or "")
    if account is not None:
        mine = [n for n in nodes if n.get("accountId") == account]
        if len(mine) == 1:
            return mine[0]
        if not mine:
            others = ", ".join(sorted({mask_account(n.get("accountId")) for n in nodes}))
            raise StatementError(
                f"IB Flex statement: it is for account {others}, not {mask_account(account)}; "
                "check the Flex query's account; nothing was read"
            )
        raise _refused(f"it holds {len(mine)} statements for the account", account)
    if len(nodes) > 1:
        raise _refused(f"it holds {len(nodes)} statements and no account was named", "")
    return nodes[0]


def _detail(rows: Iterable[ET.Element], level: str = DETAIL) -> list[ET.Element]:
    """The rows at ``level`` (IB repeats amounts in SUMMARY rows); rows without one count."""
    return [r for r in rows if r.get("levelOfDetail") in (None, level)]


def _read_cash(rows: list[ET.Element], owner: str) -> list[CashLine]:
    lines: dict[str, CashLine] = {}
    for row in rows:
        where = _where(row, owner)
        _require_owner(row, owner, where)
        line_id = _required(row, "transactionID", owner, where)
        on = (
            _date(row, "settleDate", owner)
            or _date(row, "dateTime", owner)
            or _date(row, "reportDate", owner)
        )
        if on is None:
            raise _refused(f"{where} has no settleDate, dateTime or reportDate", owner)
        line = CashLine(
            line_id=line_id,
            kind=CASH_KINDS.get(row.get("type", ""), CashKind.OTHER),
            amount=_decimal(row, "amount", owner, where),
            currency=_required(row, "currency", owner, where),
            on=on,
            symbol=row.get("symbol") or None,
            ex_date=_date(row, "exDate", owner),
            description=_masked(row.get("description", ""), owner),
            evidence=_evidence([row], owner),
        )
        if line_id in lines and lines[line_id] != line:
            raise _refused(f"transactionID {line_id} names two different lines", owner)
        lines[line_id] = line
    return list(lines.values())


@dataclass
class _Split:
    """The rows of one split as IB books it: one row for a forward split; for a split that
    changes the ISIN, a row taking the old shares (symbol ``X.OLD``) and one giving the new."""

    symbol: str
    ratio: Decimal
    effective: date
    booked: date  # the dateTime's day: a fraction sale is on or after it
    rows: list[ET.Element]


def _read_actions(rows: list[ET.Element], sales: list[ET.Element], owner: str) -> list[ActionLine]:
    splits: dict[tuple[str, str], _Split] = {}
    for row in rows:
        where = _where(row, owner)
        _require_owner(row, owner, where)
        kind = row.get("type", "")
        described = _SPLIT.match(row.get("description", ""))
        if kind not in SPLIT_TYPES and (kind or described is None):
            what = _masked(_one_line(row.get("description", ""), limit=80), owner)
            raise _refused(
                f"{where} is corporate action {kind or '(no type)'} {what!r}, which this "
                "reader does not book: book it by hand",
                owner,
            )
        if described is None:
            raise _refused(f"{where} is a split without 'SPLIT N FOR M' in its description", owner)
        new, old = int(described["new"]), int(described["old"])
        if new == 0 or old == 0:
            raise _refused(f"{where} has a split ratio of {new} for {old}", owner)
        key = (described["head"].upper(), row.get("dateTime", ""))
        symbol = _required(row, "symbol", owner, where).removesuffix(OLD_SUFFIX)
        split = splits.get(key)
        if split is None:
            booked = _date(row, "dateTime", owner) or _date(row, "reportDate", owner)
            effective = _date(row, "reportDate", owner) or booked
            if booked is None or effective is None:
                raise _refused(f"{where} has neither reportDate nor dateTime", owner)
            split = _Split(symbol, Decimal(new) / Decimal(old), effective, booked, [])
            splits[key] = split
        elif symbol != split.symbol:
            raise _refused(
                f"the split of {split.symbol} changes the symbol to {symbol}: book it by hand",
                owner,
            )
        split.rows.append(row)
    used: set[int] = set()
    ordered = sorted(splits.values(), key=lambda s: s.booked)
    return [_action(split, ordered, sales, used, owner) for split in ordered]


def _action(
    split: _Split, ordered: list[_Split], sales: list[ET.Element], used: set[int], owner: str
) -> ActionLine:
    """One ActionLine from a split's rows and the fraction sales that settle it."""
    shares = sum((_decimal(r, "quantity", owner, _where(r, owner)) for r in split.rows), Decimal(0))
    cash = sum(
        (_decimal(r, "proceeds", owner, _where(r, owner), default="0") for r in split.rows),
        Decimal(0),
    )
    # IB books a split's fraction of a share first, then sells it (a FracShare trade) on or
    # after that day: such sales settle this split, up to the next split of the same symbol,
    # and only while a fraction is left.
    later = [s.booked for s in ordered if s.symbol == split.symbol and s.booked > split.booked]
    until = min(later, default=date.max)
    settling = []
    for i, sale in enumerate(sales):
        if shares == shares.to_integral_value():
            break
        day = _date(sale, "tradeDate", owner) or _date(sale, "dateTime", owner)
        symbol = sale.get("symbol", "").removesuffix(OLD_SUFFIX)
        if i in used or symbol != split.symbol or day is None or not split.booked <= day < until:
            continue
        used.add(i)
        settling.append(sale)
        where = _where(sale, owner)
        shares += _decimal(sale, "quantity", owner, where)
        # netCash is what reached the account: proceeds less any commission and tax.
        cash += _decimal(sale, "netCash" if sale.get("netCash") else "proceeds", owner, where)
    if shares != shares.to_integral_value():
        raise _refused(
            f"the split of {split.symbol} on {split.effective} leaves {shares} shares, with no "
            "fraction sale (FracShare trade) in the statement: include Trades in the Flex query",
            owner,
        )
    ids = sorted(_required(r, "transactionID", owner, _where(r, owner)) for r in split.rows)
    given = [r for r in split.rows if _decimal(r, "quantity", owner, "") > 0] or split.rows
    return ActionLine(
        line_id="+".join(ids),
        symbol=split.symbol,
        effective=split.effective,
        ratio=split.ratio,
        quantity=int(shares),
        cash=cash,
        description=_masked(given[0].get("description", ""), owner),
        evidence=_evidence([*split.rows, *settling], owner),
    )


# -- the Flex Web Service ------------------------------------------------------------------------


class _TokenTransport(httpx.BaseTransport):
    """Adds the token to each request as it leaves, so no URL, log line or error above the
    wire holds it (httpx logs and attaches the URL it was given, not the one sent)."""

    def __init__(self, inner: httpx.BaseTransport, token: str) -> None:
        self._inner = inner
        self._token = token

    def __repr__(self) -> str:
        return "_TokenTransport()"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sent = httpx.Request(
            request.method,
            request.url.copy_add_param("t", self._token),
            headers=request.headers,
            extensions=request.extensions,
        )
        return self._inner.handle_request(sent)

    def close(self) -> None:
        self._inner.close()


class _Polls:
    """The waits of one fetch, bounded together: ``wait`` while IB generates the statement,
    ``back_off`` (doubling, at most a minute) while IB says too many requests."""

    def __init__(self, limit: int, seconds: float, sleep: Callable[[float], None]) -> None:
        self.limit = limit
        self.seconds = seconds
        self.sleep = sleep
        self.waits = 0
        self.throttled = 0

    def wait(self, seconds: float | None = None) -> bool:
        """Sleep and return True, or return False when the waits are spent."""
        if self.waits >= self.limit:
            return False
        self.waits += 1
        pause = self.seconds if seconds is None else seconds
        log.info("IB Flex: not ready, asking again in %.3g s (wait %d)", pause, self.waits)
        self.sleep(pause)
        return True

    def back_off(self) -> bool:
        self.throttled += 1
        return self.wait(min(self.seconds * 2**self.throttled, MAX_BACKOFF_SECONDS))


class FlexClient:
    """Fetches one saved Flex query's statement through IB's Flex Web Service.

    ``token`` is the Flex Web Service token (a secret: it goes only into the query string on
    the wire), ``query_id`` the saved query's id. While IB answers 1019 (still generating) the
    client waits ``poll_seconds`` and asks again; on 1018 (too many requests) it backs off,
    doubling from ``poll_seconds`` up to a minute. ``max_polls`` bounds those waits for the
    whole fetch. ``sleep`` is for tests.
    """

    def __init__(
        self,
        token: str,
        query_id: str,
        *,
        base_url: str = FLEX_BASE_URL,
        timeout: float = 30.0,
        poll_seconds: float = 5.0,
        max_polls: int = 12,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not isinstance(token, str) or not token.strip():
            raise StatementError(
                "IB Flex: no Flex token given; put it in the workbook's secrets; nothing was read"
            )
        if not isinstance(query_id, str) or not query_id.strip() or query_id != query_id.strip():
            raise StatementError(
                "IB Flex: the Flex query id is empty or padded with spaces; give the id Client "
                "Portal shows for the saved query; nothing was read"
            )
        if timeout <= 0 or poll_seconds < 0 or max_polls < 0:
            raise StatementError(
                f"IB Flex: timeout must be > 0, poll_seconds and max_polls >= 0 (got {timeout}, "
                f"{poll_seconds}, {max_polls}); nothing was read"
            )
        self._token = token
        self.query_id = query_id
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.poll_seconds = poll_seconds
        self.max_polls = max_polls
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"FlexClient(query {self.query_id!r} at {self.base_url!r})"

    def read(self, account: str | None) -> Statement:
        """Return the statement of ``account``, fetched now. Raises StatementError."""
        statement = parse_statement(self.fetch(), account)
        return replace(statement, source=f"{SOURCE} query {self.query_id}")

    def fetch(self) -> bytes:
        """Return the statement XML exactly as IB served it: SendRequest, then GetStatement
        until it is ready. Raises StatementError (naming IB's code, never the token)."""
        polls = _Polls(self.max_polls, self.poll_seconds, self._sleep)
        with httpx.Client(
            timeout=httpx.Timeout(self.timeout),
            transport=_TokenTransport(httpx.HTTPTransport(), self._token),
            follow_redirects=False,  # a redirect would carry the token to another address
            headers={"User-Agent": USER_AGENT, "Accept": "text/xml, application/xml"},
        ) as client:
            reference = self._send_request(client, polls)
            log.info("IB Flex: query %s accepted, reference %s", self.query_id, reference)
            body = self._get_statement(client, reference, polls)
        log.info("IB Flex: statement of %d bytes after %d waits", len(body), polls.waits)
        return body

    def _send_request(self, client: httpx.Client, polls: _Polls) -> str:
        """Ask IB to generate the statement; return its reference code."""
        while True:
            root, _ = self._ask(client, "SendRequest", self.query_id)
            if root.tag != "FlexStatementResponse":
                raise self._garbage("SendRequest", f"<{root.tag}> instead of an answer")
            status, code, message = _read_response(root)
            if status == "Success":
                reference = (root.findtext("ReferenceCode") or "").strip()
                if not reference:
                    raise self._garbage("SendRequest", "Success without a ReferenceCode")
                # IB's answer also names a GetStatement URL (historically on another host,
                # gdcdyn). It is not followed: GetStatement is called beside SendRequest on
                # ``base_url``, where IB serves it too. So the token only ever goes to the
                # address the operator configured, never to one read from a response body,
                # and a test's loopback server keeps every request.
                return reference
            if code != THROTTLED or not polls.back_off():
                raise self._error("SendRequest", code or status, message, polls.waits)

    def _get_statement(self, client: httpx.Client, reference: str, polls: _Polls) -> bytes:
        """Poll GetStatement until IB serves the statement; return its raw body."""
        while True:
            root, body = self._ask(client, "GetStatement", reference)
            if root.tag == "FlexQueryResponse":
                return body
            if root.tag != "FlexStatementResponse":
                raise self._garbage("GetStatement", f"<{root.tag}> instead of a statement")
            status, code, message = _read_response(root)
            if code == IN_PROGRESS and polls.wait():
                continue
            if code == THROTTLED and polls.back_off():
                continue
            raise self._error("GetStatement", code or status, message, polls.waits)

    def _ask(self, client: httpx.Client, step: str, query: str) -> tuple[ET.Element, bytes]:
        """GET one endpoint and return its parsed XML with the raw body."""
        url = f"{self.base_url}/{step}"
        try:
            response = client.get(url, params={"q": query, "v": FLEX_VERSION})
        except httpx.TimeoutException:
            raise self._fail(
                step, f"no answer within {self.timeout:g} s", "fetch again later"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
            raise self._fail(
                step, "the connection dropped before a complete answer", "fetch again later"
            ) from None
        except httpx.ConnectError:
            host = httpx.URL(self.base_url).host
            raise self._fail(
                step, f"cannot connect to {host}", "check the network and the Flex base URL"
            ) from None
        except httpx.TransportError as error:
            raise self._fail(step, type(error).__name__, "fetch again later") from None
        body = response.content
        html = _HTML.match(body) is not None
        page = f" (an HTML page {_page_title(body)!r})" if html else ""
        if response.status_code != 200:
            raise self._fail(
                step,
                f"HTTP {response.status_code}{page}",
                "IB or a proxy failed: fetch again later",
            )
        if html:
            raise self._fail(
                step,
                f"an HTML page {_page_title(body)!r} instead of XML",
                "IB or a proxy answered with a web page: check the base URL, fetch again later",
            )
        try:
            return _read_xml(body, step), body
        except StatementError as error:
            raise StatementError(_redact(str(error), self._token)) from None

    def _error(self, step: str, code: str, message: str, waits: int) -> StatementError:
        text = _redact(_one_line(message), self._token)
        after = f" (after {waits} wait{'s' if waits > 1 else ''})" if waits else ""
        return StatementError(
            f"IB Flex {step}: {code} {text}{after}; {_advice(code)}; nothing was read",
            code=code or None,
        )

    def _fail(self, step: str, problem: str, advice: str) -> StatementError:
        return StatementError(f"IB Flex {step}: {problem}; {advice}; nothing was read")

    def _garbage(self, step: str, problem: str) -> StatementError:
        return self._fail(step, _one_line(problem, limit=80), "fetch again later")


# -- helpers -------------------------------------------------------------------------------------


def _read_xml(body: bytes, step: str) -> ET.Element:
    """Parse ``body`` as XML; refuse HTML, a DTD (entity expansion) and anything malformed."""
    what = f"IB Flex {step}"
    if _HTML.match(body):
        raise StatementError(
            f"{what}: an HTML page {_page_title(body)!r} instead of XML; check where it came "
            "from; nothing was read"
        )
    if _DOCTYPE.search(body[:4096]):
        raise StatementError(
            f"{what}: the XML declares a DOCTYPE, which IB never sends; nothing was read"
        )
    try:
        return ET.fromstring(body)
    except ET.ParseError as error:
        raise StatementError(
            f"{what}: truncated or malformed XML ({_one_line(str(error), limit=80)}, "
            f"{len(body)} bytes); fetch it again; nothing was read"
        ) from None


def _read_response(root: ET.Element) -> tuple[str, str, str]:
    """Status, ErrorCode and ErrorMessage of a FlexStatementResponse (empty when absent)."""
    status = (root.findtext("Status") or "").strip()
    code = (root.findtext("ErrorCode") or "").strip()
    message = (root.findtext("ErrorMessage") or "").strip()
    legacy = (root.findtext("code") or "").strip()
    if not code and legacy:
        # An older GetStatement answer carries only <code>text</code> (ib_async's FlexReport
        # still checks for it): its "generation in progress" is 1019 all the same.
        code = IN_PROGRESS if legacy.startswith("Statement generation in progress") else ""
        message = legacy
    return status, code, message


def _advice(code: str) -> str:
    return _ADVICE.get(code, _DEFAULT_ADVICE)


def _refused(problem: str, owner: str) -> StatementError:
    return StatementError(f"IB Flex statement: {_masked(problem, owner)}; nothing was read from it")


def _where(row: ET.Element, owner: str) -> str:
    """A row named for a message: its tag and transactionID (never the account)."""
    line_id = row.get("transactionID") or "(no transactionID)"
    return f"{row.tag} {_masked(_one_line(line_id, limit=40), owner)}"


def _require_owner(row: ET.Element, owner: str, where: str) -> None:
    other = row.get("accountId")
    if other and other != owner:
        raise StatementError(
            f"IB Flex statement: {where} is for account {mask_account(other)} inside the "
            f"statement of {mask_account(owner)}; nothing was read from it"
        )


def _required(row: ET.Element, name: str, owner: str, where: str) -> str:
    value = (row.get(name) or "").strip()
    if not value:
        raise _refused(f"{where} has no {name}", owner)
    return value


def _decimal(
    row: ET.Element, name: str, owner: str, where: str, default: str | None = None
) -> Decimal:
    text = (row.get(name) or "").strip() or default
    if text is None:
        raise _refused(f"{where} has no {name}", owner)
    try:
        value = Decimal(text)
    except InvalidOperation:
        value = Decimal("NaN")
    if not value.is_finite():
        raise _refused(f"{where} has {name} {_one_line(text, limit=40)!r}, not a number", owner)
    return value


def _required_date(row: ET.Element, name: str, owner: str) -> date:
    day = _date(row, name, owner)
    if day is None:
        raise _refused(f"{row.tag} has no {name}", owner)
    return day


def _date(row: ET.Element, name: str, owner: str) -> date | None:
    """The day of a Flex date or date-time: yyyyMMdd or yyyy-MM-dd, then any time part."""
    text = (row.get(name) or "").strip()
    if not text or text == "MULTI":
        return None
    day = re.split(r"[;, T]", text, maxsplit=1)[0]
    for layout in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(day, layout).date()
        except ValueError:
            continue
    raise _refused(
        f"{_where(row, owner)} has {name} {_one_line(text, limit=40)!r}: set the Flex query's "
        "date format to yyyyMMdd or yyyy-MM-dd",
        owner,
    )


def _masked(text: str, owner: str) -> str:
    return text.replace(owner, mask_account(owner)) if owner else text


def _evidence(rows: list[ET.Element], owner: str) -> str:
    """The rows as IB wrote them, re-serialised on one line each, the account id masked."""
    parts = []
    for row in rows:
        copy = ET.Element(row.tag, {k: _masked(v, owner) for k, v in row.attrib.items()})
        parts.append(ET.tostring(copy, encoding="unicode"))
    return " ".join(parts)


def _one_line(text: str, limit: int = DETAIL_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _redact(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _page_title(body: bytes) -> str:
    title = _TITLE.search(body[:4096])
    return _one_line(title.group(1).decode("utf-8", "replace"), limit=60) if title else "no title"
