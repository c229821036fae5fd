"""Reading IB Flex statements: answers worked out by hand from the fixtures in tests/data/flex.

Each fixture is built in IB's Flex layout (see the comment at its top). The expected lines below
are read off the XML by eye and the per-share arithmetic done by hand (SPY paid USD 1.3392 a
share on 2020-10-30, ex 2020-09-18; EEM split 3 for 1 on 2005-06-09; BIL reverse split 1 for 2
on 2017-11-30), never computed by the reader under test.
"""

from __future__ import annotations

import hashlib
import re
import xml.etree.ElementTree as ET
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from ops_runner.brokers.base import BrokerError, CashKind
from ops_runner.brokers.ib_flex import FlexClient, StatementError, parse_statement
from ops_runner.core.errors import OpsError

FLEX = Path(__file__).resolve().parents[1] / "data" / "flex"
ACCOUNT = "U1234567"
MASKED = "U1****67"
OTHER = "U7654321"
OTHER_MASKED = "U7****21"

OCTOBER = FLEX / "flex_2020_10_cash.xml"
EEM_SPLIT = FLEX / "flex_2005_06_eem_split.xml"
BIL_SPLIT = FLEX / "flex_2017_11_bil_reverse_split.xml"
REVERSAL = FLEX / "flex_2020_11_dividend_reversal.xml"
OTHER_ACCOUNT = FLEX / "flex_2020_10_other_account.xml"

D = Decimal
SPY_EX = date(2020, 9, 18)

# (line_id, kind, amount, on, symbol, ex_date), oldest first
OCTOBER_CASH = [
    ("13987000101", CashKind.FEE, D("-10"), date(2020, 10, 2), None, None),
    ("13987000102", CashKind.INTEREST, D("1.37"), date(2020, 10, 5), None, None),
    ("13987000103", CashKind.TRANSFER, D("5000"), date(2020, 10, 15), None, None),  # settleDate
    ("13987000104", CashKind.DIVIDEND, D("200.88"), date(2020, 10, 30), "SPY", SPY_EX),
    ("13987000105", CashKind.WITHHOLDING, D("-30.13"), date(2020, 10, 30), "SPY", SPY_EX),
]
REVERSAL_CASH = [
    ("14100000001", CashKind.DIVIDEND, D("-200.88"), date(2020, 10, 30), "SPY", SPY_EX),
    ("14100000002", CashKind.WITHHOLDING, D("30.13"), date(2020, 10, 30), "SPY", SPY_EX),
    ("14100000003", CashKind.DIVIDEND, D("174.10"), date(2020, 10, 30), "SPY", SPY_EX),
    ("14100000004", CashKind.WITHHOLDING, D("-26.11"), date(2020, 10, 30), "SPY", SPY_EX),
    ("14100000005", CashKind.IN_LIEU, D("26.78"), date(2020, 10, 30), "SPY", SPY_EX),
    ("14100000006", CashKind.WITHHOLDING, D("-4.02"), date(2020, 10, 30), "SPY", SPY_EX),
    ("14100000007", CashKind.INTEREST, D("-0.85"), date(2020, 11, 4), None, None),
    ("14100000008", CashKind.TRANSFER, D("-1000"), date(2020, 11, 16), None, None),
    ("14100000009", CashKind.OTHER, D("0.35"), date(2020, 11, 23), "SPY", None),
]


def table(statement):
    return [(c.line_id, c.kind, c.amount, c.on, c.symbol, c.ex_date) for c in statement.cash]


def refused(xml: bytes, account: str | None = ACCOUNT) -> StatementError:
    with pytest.raises(StatementError) as caught:
        parse_statement(xml, account)
    message = str(caught.value)
    assert "\n" not in message
    for raw in (ACCOUNT, OTHER):
        assert raw not in message
    return caught.value


def test_parse_statement_when_october_2020_reads_each_detail_line():
    statement = parse_statement(OCTOBER.read_bytes(), ACCOUNT)
    assert statement.account == ACCOUNT
    assert (statement.start, statement.end) == (date(2020, 10, 1), date(2020, 10, 30))
    assert table(statement) == OCTOBER_CASH  # IB's SUMMARY deposit row is not a line
    assert statement.actions == ()
    assert statement.source == "ib-flex"
    assert statement.sha256 == hashlib.sha256(OCTOBER.read_bytes()).hexdigest()


def test_parse_statement_when_amounts_read_they_are_decimals_in_usd():
    statement = parse_statement(OCTOBER.read_bytes(), ACCOUNT)
    assert all(type(c.amount) is Decimal for c in statement.cash)
    assert {c.currency for c in statement.cash} == {"USD"}
    net = sum((c.amount for c in statement.cash), Decimal(0))
    assert net == D("5162.12")  # -10 + 1.37 + 5000 + 200.88 - 30.13


def test_parse_statement_when_dividend_keeps_ibs_description():
    dividend = parse_statement(OCTOBER.read_bytes(), ACCOUNT).cash[3]
    assert dividend.description == (
        "SPY(US78462F1030) CASH DIVIDEND USD 1.3392 PER SHARE (Ordinary Dividend)"
    )


def test_parse_statement_when_evidence_written_it_is_one_masked_line_of_the_row():
    statement = parse_statement(OCTOBER.read_bytes(), ACCOUNT)
    for line in statement.cash:
        assert "\n" not in line.evidence
        assert ACCOUNT not in line.evidence
        row = ET.fromstring(line.evidence)
        assert row.tag == "CashTransaction"
        assert row.get("accountId") == MASKED
        assert row.get("transactionID") == line.line_id
        assert D(row.get("amount", "")) == line.amount


def test_parse_statement_when_description_names_the_account_it_is_masked():
    xml = OCTOBER.read_bytes().replace(
        b"USD CREDIT INT FOR SEP-2020", b"USD CREDIT INT FOR SEP-2020 (U1234567)"
    )
    interest = parse_statement(xml, ACCOUNT).cash[1]
    assert interest.description == f"USD CREDIT INT FOR SEP-2020 ({MASKED})"
    assert ACCOUNT not in interest.evidence


def test_parse_statement_when_eem_splits_3_for_1_on_100_shares_books_200():
    statement = parse_statement(EEM_SPLIT.read_bytes(), ACCOUNT)
    assert statement.cash == ()
    (split,) = statement.actions
    assert split.line_id == "1160458230"
    assert split.symbol == "EEM"
    assert split.effective == date(2005, 6, 9)  # reportDate; IB's dateTime is the evening before
    assert split.ratio == D(3)
    assert split.quantity == 200  # 100 shares become 300
    assert split.cash == D(0)
    assert split.description.startswith("EEM(US4642872349) SPLIT 3 FOR 1")
    assert ACCOUNT not in split.evidence and MASKED in split.evidence


def test_parse_statement_when_bil_reverse_splits_an_odd_position_pays_cash_in_lieu():
    statement = parse_statement(BIL_SPLIT.read_bytes(), ACCOUNT)
    (split,) = statement.actions
    assert split.line_id == "8901234501+8901234502"  # the old-shares and new-shares rows
    assert split.symbol == "BIL"  # not BIL.OLD
    assert split.effective == date(2017, 11, 30)
    assert split.ratio == D("0.5")
    assert split.quantity == -151  # 301 old shares -> 150 new, the half share sold
    assert split.cash == D("45.74")  # 0.5 x 91.48, the FracShare sale counted once
    assert "(BIL, SPDR BBG BARC 1-3 MONTH T-BILL, US78468R6633)" in split.description
    assert "\n" not in split.evidence
    assert split.evidence.count("<CorporateAction ") == 2
    assert split.evidence.count("<Trade ") == 1  # the EXECUTION row, not the ORDER row
    assert ACCOUNT not in split.evidence


def test_parse_statement_when_bil_dividend_paid_on_old_shares_reads_it():
    statement = parse_statement(BIL_SPLIT.read_bytes(), ACCOUNT)
    assert table(statement) == [
        ("8870012210", CashKind.DIVIDEND, D("10.41"), date(2017, 11, 3), "BIL", date(2017, 11, 1))
    ]  # 301 x 0.0346 = 10.4146


def test_parse_statement_when_trades_listed_per_order_only_counts_the_sale_once():
    xml = re.sub(rb'\n\s*<Trade [^\n]*levelOfDetail="EXECUTION"[^\n]*', b"", BIL_SPLIT.read_bytes())
    assert xml.count(b"<Trade ") == 1
    (split,) = parse_statement(xml, ACCOUNT).actions
    assert (split.quantity, split.cash) == (-151, D("45.74"))


def test_parse_statement_when_fraction_sale_missing_refuses_the_split():
    xml = re.sub(rb"<Trades>.*?</Trades>", b"<Trades />", BIL_SPLIT.read_bytes(), flags=re.S)
    error = refused(xml)
    assert "BIL" in str(error) and "-150.5" in str(error) and "Trades" in str(error)


def test_parse_statement_when_dividend_reversed_and_rebooked_reads_every_line():
    statement = parse_statement(REVERSAL.read_bytes(), ACCOUNT)
    assert (statement.start, statement.end) == (date(2020, 11, 1), date(2020, 11, 30))
    assert table(statement) == REVERSAL_CASH
    assert statement.cash[0].description.endswith("(Ordinary Dividend) - REVERSAL")


def test_parse_statement_when_reversal_rebooked_income_and_tax_net_to_zero():
    statement = parse_statement(REVERSAL.read_bytes(), ACCOUNT)
    income = {CashKind.DIVIDEND, CashKind.IN_LIEU}
    spy = [c for c in statement.cash if c.ex_date == SPY_EX]
    assert sum((c.amount for c in spy if c.kind in income), D(0)) == 0
    assert sum((c.amount for c in spy if c.kind is CashKind.WITHHOLDING), D(0)) == 0


def test_parse_statement_when_reversal_keeps_the_original_pay_date_it_falls_before_start():
    statement = parse_statement(REVERSAL.read_bytes(), ACCOUNT)
    assert statement.cash[0].on == date(2020, 10, 30) < statement.start


def test_parse_statement_when_another_accounts_statement_refuses_it_masked():
    error = refused(OTHER_ACCOUNT.read_bytes(), ACCOUNT)
    assert OTHER_MASKED in str(error) and MASKED in str(error)


def test_parse_statement_when_account_matches_or_is_not_named_reads_it():
    for account in (OTHER, None):
        statement = parse_statement(OTHER_ACCOUNT.read_bytes(), account)
        assert statement.account == OTHER
        assert [(c.kind, c.amount) for c in statement.cash] == [
            (CashKind.TRANSFER, D("2500")),
            (CashKind.DIVIDEND, D("13.39")),  # 10 x 1.3392
        ]


def two_statements() -> bytes:
    ours = re.search(rb"<FlexStatement .*</FlexStatement>", OCTOBER.read_bytes(), re.S)
    theirs = re.search(rb"<FlexStatement .*</FlexStatement>", OTHER_ACCOUNT.read_bytes(), re.S)
    assert ours and theirs
    return (
        b'<FlexQueryResponse queryName="q" type="AF"><FlexStatements count="2">'
        + theirs.group(0)
        + ours.group(0)
        + b"</FlexStatements></FlexQueryResponse>"
    )


def test_parse_statement_when_two_accounts_picks_the_named_one():
    assert parse_statement(two_statements(), ACCOUNT).account == ACCOUNT
    assert "2 statements" in str(refused(two_statements(), None))


def test_parse_statement_when_rows_have_no_level_of_detail_they_count():
    xml = re.sub(rb' levelOfDetail="DETAIL"', b"", OTHER_ACCOUNT.read_bytes())
    assert len(parse_statement(xml, OTHER).cash) == 2


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (
            b"<FlexStatementResponse timestamp='x'><Status>Fail</Status><ErrorCode>1012</ErrorCode>"
            b"<ErrorMessage>Token has expired.</ErrorMessage></FlexStatementResponse>",
            "1012",
            "Token has expired.",
        ),
        (
            b"<FlexStatementResponse><Status>Warn</Status><ErrorCode>1019</ErrorCode><ErrorMessage>"
            b"Statement generation in progress. Please try again shortly.</ErrorMessage>"
            b"</FlexStatementResponse>",
            "1019",
            "generation in progress",
        ),
        (
            b"<FlexStatementResponse><code>Statement generation in progress. Please try again "
            b"shortly.</code></FlexStatementResponse>",
            "1019",
            "generation in progress",
        ),
    ],
)
def test_parse_statement_when_given_an_error_body_refuses_with_ibs_code(body, code, words):
    error = refused(body)
    assert error.code == code
    assert code in str(error) and words in str(error)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (OCTOBER.read_bytes()[:3000], "truncated or malformed XML"),
        (b"", "truncated or malformed XML"),
        (b"\x00\xffgarbage", "truncated or malformed XML"),
        (b"<html><head><title>Maintenance</title></head></html>", "HTML page 'Maintenance'"),
        (b'<!DOCTYPE x [<!ENTITY a "aaaa">]><FlexQueryResponse/>', "DOCTYPE"),
        (b"<Something/>", "<Something>"),
        (b"<FlexQueryResponse><FlexStatements count='0'/></FlexQueryResponse>", "no FlexStatement"),
    ],
)
def test_parse_statement_when_not_a_statement_refuses_it(body, words):
    error = refused(body)
    assert words in str(error)
    assert isinstance(error, BrokerError) and isinstance(error, OpsError)


def edited(path: Path, old: bytes, new: bytes, count: int = 1) -> bytes:
    xml = path.read_bytes()
    assert old in xml
    return xml.replace(old, new, count)


@pytest.mark.parametrize(
    ("xml", "words"),
    [
        (edited(OCTOBER, b'amount="1.37"', b'amount="1,37"'), "'1,37', not a number"),
        (edited(OCTOBER, b'amount="1.37"', b'amount="NaN"'), "not a number"),
        (edited(OCTOBER, b'settleDate="20201005"', b'settleDate="10/05/2020"'), "yyyyMMdd"),
        (edited(OCTOBER, b'transactionID="13987000102"', b'transactionID=""'), "transactionID"),
        (
            edited(OCTOBER, b'transactionID="13987000102"', b'transactionID="13987000101"'),
            "two different lines",
        ),
        (
            edited(
                OCTOBER,
                b'<CashTransaction accountId="U1234567"',
                b'<CashTransaction accountId="U7654321"',
            ),
            "for account U7****21",
        ),
        (edited(EEM_SPLIT, b'type="FS"', b'type="TC"'), "corporate action TC"),
        (edited(EEM_SPLIT, b"SPLIT 3 FOR 1", b"SPLIT 3 FOR 0", 2), "3 for 0"),
        (edited(BIL_SPLIT, b'symbol="BIL.OLD"', b'symbol="BILX.OLD"'), "changes the symbol"),
    ],
)
def test_parse_statement_when_a_row_cannot_be_read_refuses_the_statement(xml, words):
    assert words in str(refused(xml))


def test_parse_statement_when_statement_names_no_period_refuses_it():
    xml = edited(OCTOBER, b'fromDate="20201001" ', b"")
    assert "fromDate" in str(refused(xml))


def test_flex_client_when_built_keeps_the_token_out_of_its_repr():
    client = FlexClient("s3cret-token", "912345", base_url="http://127.0.0.1:9/flex")
    assert "s3cret-token" not in repr(client) and "912345" in repr(client)


@pytest.mark.parametrize(
    ("token", "query", "options", "words"),
    [
        ("", "912345", {}, "no Flex token"),
        ("   ", "912345", {}, "no Flex token"),
        ("tok", "", {}, "query id"),
        ("tok", "912345", {"timeout": 0}, "timeout must be > 0"),
        ("tok", "912345", {"max_polls": -1}, "max_polls"),
    ],
)
def test_flex_client_when_built_badly_refuses(token, query, options, words):
    with pytest.raises(StatementError) as caught:
        FlexClient(token, query, **options)
    assert words in str(caught.value)
