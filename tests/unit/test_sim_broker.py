"""The simulated broker: market-on-open fills, T+1 cash, restarts, the gate, every fault."""

from __future__ import annotations

import copy
import json
import multiprocessing
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ops_runner.brokers import open_broker
from ops_runner.brokers.base import BrokerError, BrokerUnavailable, OrderStatus, Outcome
from ops_runner.brokers.gate import GatePass, OrderIntent, OrderRefused, Side, require_gate_pass
from ops_runner.brokers.sim import SimBroker, compute_model_quote
from ops_runner.core.events import Purpose, State
from ops_runner.ledger import open_ledger
from ops_runner.market.prices import open_store
from ops_runner.workbook.config import Config, load_config

NY = ZoneInfo("America/New_York")
CENT = Decimal("0.01")
# 2025-11-28 is the rebalance session (a 13:00 early close); its orders are for the next open.
DECISION_DAY, SESSION, NEXT_SESSION = "2025-11-28", "2025-12-01", "2025-12-02"
INITIAL_CASH = Decimal("100000.00")
BPS = Decimal("2")  # the template's costs.slippage_bps


def ny(day: str, hour: int, minute: int = 0) -> datetime:
    """An instant given as New York wall time, returned in UTC."""
    y, m, d = (int(part) for part in day.split("-"))
    return datetime(y, m, d, hour, minute, tzinfo=NY).astimezone(UTC)


DECIDED = ny(DECISION_DAY, 18)  # evening after the rebalance close
OPEN = ny(SESSION, 9, 30)
NEXT_OPEN = ny(NEXT_SESSION, 9, 30)


class Clock:
    """The broker's 'now', moved by the test."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def config_for(workbook: Path, folder: Path, faults: dict | None = None) -> Config:
    """The sample workbook's config with this test's own broker books and ledger."""
    base = load_config(workbook)
    values = copy.deepcopy(base.values)
    values["paths"]["broker"] = str(folder / "broker")
    values["paths"]["ledger"] = str(folder / "ledger")
    values["broker"]["sim_faults"] = faults or {}
    return Config(workbook=workbook, values=values, source_path=base.source_path)


def stored_bar(workbook: Path, symbol: str, day: str) -> dict[str, Decimal]:
    """The stored raw bar, each price as the Decimal of its float's shortest form."""
    bars = open_store(load_config(workbook)).load_bars("sample", symbol)
    row = bars.loc[day]
    return {name: Decimal(str(float(row[name]))) for name in ("open", "close")}


def buy_price(open_price: Decimal) -> Decimal:
    return (open_price * (1 + BPS / 10_000)).quantize(CENT, rounding=ROUND_HALF_UP)


def sell_price(open_price: Decimal) -> Decimal:
    return (open_price * (1 - BPS / 10_000)).quantize(CENT, rounding=ROUND_HALF_UP)


def commission(quantity: int) -> Decimal:
    """IB fixed pricing as configured: $0.005 a share, at least $1.00 an order."""
    return max(Decimal("1.00"), Decimal("0.005") * quantity).quantize(CENT, ROUND_HALF_UP)


class World:
    """One test's broker books and ledger over the shared sample market."""

    def __init__(self, workbook: Path, folder: Path) -> None:
        self.workbook = workbook
        self.folder = folder
        self.clock = Clock(DECIDED)
        (folder / "ledger").mkdir(parents=True)
        self.ledger = open_ledger(config_for(workbook, folder), create=True)

    def broker(self, faults: dict | None = None) -> SimBroker:
        return SimBroker(config_for(self.workbook, self.folder, faults), clock=self.clock)

    def books(self) -> dict:
        return json.loads((self.folder / "broker" / "sim.json").read_text())

    def gate(self, intent: OrderIntent, held: dict[str, int] | None = None) -> GatePass:
        return require_gate_pass(self.ledger, intent, positions=held or {})

    def place(self, broker, intent: OrderIntent, held: dict[str, int] | None = None):
        return broker.place(intent, self.gate(intent, held))


def intent(ref: str, symbol: str = "SPY", side: str = "BUY", quantity: int = 300,
           session: str = SESSION) -> OrderIntent:  # fmt: skip
    return OrderIntent(ref, symbol, Side(side), quantity, Purpose.REBALANCE, session)


@pytest.fixture
def world(sample_workbook: Path, tmp_path: Path):
    opened = World(sample_workbook, tmp_path)
    yield opened
    opened.ledger.close()


# --- the ordinary path -------------------------------------------------------------------------


def test_sim_broker_when_new_starts_with_initial_cash_and_nothing_held(world):
    broker = world.broker()
    health = broker.connect()
    assert health.connected and health.paper and health.account == "DU0000000"
    assert health.server_time == DECIDED
    values = broker.account_values()
    assert (values.cash, values.settled_cash, values.net_liquidation) == (INITIAL_CASH,) * 3
    assert broker.positions() == {} and broker.open_orders() == [] and broker.executions() == []
    assert world.books()["cash"] == "100000.00"


def test_open_broker_when_kind_is_sim_returns_the_sim_broker(world):
    broker = open_broker(config_for(world.workbook, world.folder), clock=world.clock)
    assert isinstance(broker, SimBroker) and broker.name == "sim"


def test_open_broker_roles_share_one_set_of_books_and_a_bad_role_is_refused(world):
    cfg = config_for(world.workbook, world.folder)
    orders = open_broker(cfg, clock=world.clock, role="orders")
    readonly = open_broker(cfg, clock=world.clock, role="readonly")
    assert (orders.role, readonly.role) == ("orders", "readonly")
    orders.connect()
    assert readonly.account_values() == orders.account_values()
    with pytest.raises(BrokerError, match="broker role 'admin'"):
        open_broker(cfg, clock=world.clock, role="admin")


def test_place_when_moo_buy_before_the_open_is_working_and_nothing_fills(world):
    broker = world.broker()
    result = world.place(broker, intent("buy-spy"))
    assert (result.outcome, result.client_ref, result.broker_order_id) == (
        Outcome.ACCEPTED, "buy-spy", "1",
    )  # fmt: skip
    world.clock.at = OPEN - timedelta(minutes=1)
    [order] = broker.open_orders()
    assert (order.client_ref, order.status, order.filled, order.session) == (
        "buy-spy", OrderStatus.SUBMITTED, 0, SESSION,
    )  # fmt: skip
    assert broker.executions() == [] and broker.positions() == {}
    assert broker.account_values().cash == INITIAL_CASH


def test_place_when_open_passes_buy_fills_at_open_plus_slippage_with_commission(world):
    broker = world.broker()
    world.place(broker, intent("buy-spy", quantity=300))
    world.clock.at = OPEN + timedelta(minutes=1)
    price = buy_price(stored_bar(world.workbook, "SPY", SESSION)["open"])
    [fill] = broker.executions()
    assert (fill.exec_id, fill.client_ref, fill.quantity, fill.price, fill.time) == (
        f"sim.{SESSION}.1.1", "buy-spy", 300, price, OPEN,
    )  # fmt: skip
    assert [(c.exec_id, c.amount) for c in broker.commissions()] == [
        (fill.exec_id, Decimal("1.50"))
    ]
    assert broker.positions() == {"SPY": 300}
    cash = INITIAL_CASH - price * 300 - commission(300)
    values = broker.account_values()
    assert (values.cash, values.settled_cash) == (cash, cash)
    [order] = broker.completed_orders()
    assert (order.status, order.filled, order.quantity) == (OrderStatus.FILLED, 300, 300)
    assert broker.open_orders() == []


def test_commission_when_few_shares_is_the_one_dollar_minimum(world):
    broker = world.broker()
    world.place(broker, intent("buy-small", quantity=100))
    world.clock.at = OPEN
    assert [c.amount for c in broker.commissions()] == [Decimal("1.00")]


def test_account_values_when_holding_marks_at_the_last_closed_session(world):
    broker = world.broker()
    world.place(broker, intent("buy-spy", quantity=300))
    world.clock.at = OPEN + timedelta(hours=1)  # before 12-01's close: 11-28 is the last close
    price = buy_price(stored_bar(world.workbook, "SPY", SESSION)["open"])
    cash = INITIAL_CASH - price * 300 - commission(300)
    friday = stored_bar(world.workbook, "SPY", DECISION_DAY)["close"]
    assert broker.account_values().net_liquidation == (cash + 300 * friday).quantize(CENT)
    world.clock.at = ny(SESSION, 16, 5)
    monday = stored_bar(world.workbook, "SPY", SESSION)["close"]
    assert broker.account_values().net_liquidation == (cash + 300 * monday).quantize(CENT)


def test_sale_when_filled_cash_rises_at_once_and_settles_at_the_next_session_open(world):
    broker = world.broker()
    world.place(broker, intent("buy-spy", quantity=300))
    world.clock.at = ny(SESSION, 18)
    world.place(broker, intent("sell-spy", side="SELL", quantity=200, session=NEXT_SESSION),
                held={"SPY": 300})  # fmt: skip
    world.clock.at = NEXT_OPEN + timedelta(minutes=5)
    bought = buy_price(stored_bar(world.workbook, "SPY", SESSION)["open"])
    sold = sell_price(stored_bar(world.workbook, "SPY", NEXT_SESSION)["open"])
    after_buy = INITIAL_CASH - bought * 300 - commission(300)
    proceeds = sold * 200 - commission(200)
    values = broker.account_values()
    assert (values.cash, values.settled_cash) == (after_buy + proceeds, after_buy)
    assert broker.positions() == {"SPY": 100}
    world.clock.at = ny("2025-12-03", 9, 29)  # T+1, but before that session starts
    assert broker.account_values().settled_cash == after_buy
    world.clock.at = ny("2025-12-03", 9, 30)
    values = broker.account_values()
    assert values.settled_cash == values.cash == after_buy + proceeds


def test_sim_broker_when_restarted_on_the_same_folder_sees_the_same_books(world):
    first = world.broker()
    world.place(first, intent("buy-spy", quantity=300))
    world.place(first, intent("buy-agg", symbol="AGG", quantity=50))
    world.clock.at = OPEN + timedelta(minutes=1)
    seen = (first.positions(), first.executions(), first.commissions(), first.account_values(),
            first.completed_orders())  # fmt: skip
    first.close()
    second = world.broker()
    again = (second.positions(), second.executions(), second.commissions(),
             second.account_values(), second.completed_orders())  # fmt: skip
    assert again == seen and again[0] == {"SPY": 300, "AGG": 50}
    result = world.place(second, intent("buy-qqq", symbol="QQQ", quantity=10,
                                        session=NEXT_SESSION))  # fmt: skip
    assert result.broker_order_id == "3"  # the counter survived the restart


def test_executions_when_since_given_returns_only_later_fills(world):
    broker = world.broker()
    world.place(broker, intent("buy-spy"))
    world.clock.at = ny(SESSION, 18)
    world.place(broker, intent("buy-agg", symbol="AGG", quantity=10, session=NEXT_SESSION))
    world.clock.at = NEXT_OPEN
    assert [e.client_ref for e in broker.executions()] == ["buy-spy", "buy-agg"]
    later = broker.executions(since=OPEN + timedelta(hours=1))
    assert [e.client_ref for e in later] == ["buy-agg"]


def test_cancel_when_working_cancels_once_and_nothing_fills(world):
    broker = world.broker()
    world.place(broker, intent("buy-spy"))
    assert broker.cancel("buy-spy") is True
    assert broker.cancel("buy-spy") is False and broker.cancel("no-such-ref") is False
    world.clock.at = OPEN + timedelta(minutes=1)
    [order] = broker.completed_orders()
    assert (order.status, order.filled) == (OrderStatus.CANCELLED, 0)
    assert broker.executions() == [] and broker.positions() == {}


def test_fill_when_the_store_has_no_bar_for_the_session_order_keeps_working(world):
    broker = world.broker()  # the sample market ends 2025-12-31: 2026-01-02 has no bar yet
    world.clock.at = ny("2025-12-31", 18)
    world.place(broker, intent("buy-late", session="2026-01-02"))
    world.clock.at = ny("2026-01-02", 11)
    [order] = broker.open_orders()
    assert (order.client_ref, order.status) == ("buy-late", OrderStatus.SUBMITTED)
    assert broker.executions() == []


def test_sim_broker_when_books_are_corrupt_or_another_accounts_raises_broker_error(world):
    broker = world.broker()
    broker.connect()
    books = world.folder / "broker" / "sim.json"
    original = books.read_text()
    books.write_text(original.replace('"DU0000000"', '"DU9999999"'))
    with pytest.raises(BrokerError, match="account"):
        broker.positions()
    books.write_text(original[: len(original) // 2])
    with pytest.raises(BrokerError, match="unreadable"):
        broker.positions()


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize("forgery", ["none", "built by hand", "for another intent"])
def test_place_when_gate_pass_missing_or_forged_refuses_and_records_nothing(world, forgery):
    broker = world.broker()
    wanted = intent("buy-spy")
    real = world.gate(intent("other-ref"))
    fake = {
        "none": None,
        "built by hand": GatePass(wanted, State.RUN, real.ledger_seq, "0" * 64),
        "for another intent": real,
    }[forgery]
    with pytest.raises(OrderRefused):
        broker.place(wanted, fake)
    assert not (world.folder / "broker" / "sim.json").exists()
    assert broker.open_orders() == [] and broker.completed_orders() == []


def test_place_when_client_ref_is_working_or_filled_rejects_sim103_without_recording(world):
    broker = world.broker()
    first = world.place(broker, intent("buy-spy"))
    again = world.place(broker, intent("buy-spy"))
    assert (again.outcome, again.code, again.broker_order_id) == (
        Outcome.REJECTED, "SIM103", first.broker_order_id,
    )  # fmt: skip
    assert "duplicate order reference" in again.text
    world.clock.at = ny(SESSION, 18)
    late = world.place(broker, intent("buy-spy", session=NEXT_SESSION))
    assert (late.outcome, late.code) == (Outcome.REJECTED, "SIM103")  # filled by now
    assert len(world.books()["orders"]) == 1
    assert broker.positions() == {"SPY": 300}


def test_place_when_the_open_has_passed_rejects_exchange_closed(world):
    broker = world.broker()
    world.clock.at = OPEN + timedelta(minutes=5)
    result = world.place(broker, intent("late-buy"))
    assert (result.outcome, result.code) == (Outcome.REJECTED, "SIM201")
    assert "exchange is closed" in result.text
    [order] = broker.completed_orders()
    assert (order.client_ref, order.status) == ("late-buy", OrderStatus.REJECTED)
    assert broker.executions() == []


def test_place_when_after_the_0928_moo_cutoff_rejects(world):
    broker = world.broker()
    world.clock.at = ny(SESSION, 9, 29)
    assert world.place(broker, intent("buy-0929")).code == "SIM201"


def test_place_when_session_is_not_the_next_open_rejects(world):
    broker = world.broker()
    result = world.place(broker, intent("buy-early", session=NEXT_SESSION))
    assert (result.outcome, result.code) == (Outcome.REJECTED, "SIM202")
    assert SESSION in result.text


def test_place_when_sell_exceeds_the_position_rejects_no_short_selling(world):
    broker = world.broker()
    result = world.place(broker, intent("sell-spy", side="SELL", quantity=10), held={"SPY": 10})
    assert (result.outcome, result.code) == (Outcome.REJECTED, "SIM201")
    assert "no short selling" in result.text
    assert broker.positions() == {}


def test_place_when_two_sells_together_exceed_the_position_rejects_the_second(world):
    broker = world.broker()
    world.place(broker, intent("buy-spy", quantity=300))
    world.clock.at = ny(SESSION, 18)
    held = {"SPY": 300}
    sell = intent("sell-a", side="SELL", quantity=200, session=NEXT_SESSION)
    assert world.place(broker, sell, held).outcome == Outcome.ACCEPTED
    more = intent("sell-b", side="SELL", quantity=200, session=NEXT_SESSION)
    assert world.place(broker, more, held).code == "SIM201"


# --- faults ------------------------------------------------------------------------------------


def test_fault_refuse_connection_raises_unavailable_and_records_nothing(world):
    broker = world.broker({"refuse_connection": True})
    with pytest.raises(BrokerUnavailable):
        broker.connect()
    with pytest.raises(BrokerUnavailable):
        broker.positions()
    with pytest.raises(BrokerUnavailable):
        world.place(broker, intent("buy-spy"))
    health = broker.health()
    assert health.connected is False and "refused" in health.detail
    assert world.broker().open_orders() == []


def test_fault_disconnect_before_place_raises_and_nothing_reaches_the_broker(world):
    broker = world.broker({"disconnect_at": "before_place"})
    with pytest.raises(BrokerUnavailable, match="before"):
        world.place(broker, intent("buy-spy"))
    assert world.broker().open_orders() == []


def test_fault_disconnect_after_place_raises_but_the_order_exists_under_its_ref(world):
    broker = world.broker({"disconnect_at": "after_place"})
    with pytest.raises(BrokerUnavailable, match="look the reference up"):
        world.place(broker, intent("buy-spy"))
    [order] = world.broker().open_orders()
    assert (order.client_ref, order.broker_order_id, order.status) == (
        "buy-spy", "1", OrderStatus.SUBMITTED,
    )  # fmt: skip


def test_fault_lost_ack_returns_unknown_and_the_order_is_recorded(world):
    broker = world.broker({"lost_ack": ["SPY"]})
    result = world.place(broker, intent("buy-spy"))
    assert (result.outcome, result.broker_order_id) == (Outcome.UNKNOWN, None)
    assert [o.client_ref for o in broker.open_orders()] == ["buy-spy"]
    other = world.place(broker, intent("buy-agg", symbol="AGG", quantity=5))
    assert other.outcome == Outcome.ACCEPTED


def test_fault_reject_returns_the_configured_code_and_never_fills(world):
    broker = world.broker({"reject": {"SPY": "201 Order rejected - reason: margin"}})
    result = world.place(broker, intent("buy-spy"))
    assert (result.outcome, result.code, result.text) == (
        Outcome.REJECTED, "201", "Order rejected - reason: margin",
    )  # fmt: skip
    world.clock.at = OPEN + timedelta(minutes=1)
    [order] = broker.completed_orders()
    assert order.status == OrderStatus.REJECTED and broker.executions() == []


def test_fault_partial_fills_the_floor_of_the_fraction_and_the_rest_expires(world):
    broker = world.broker({"partial": {"SPY": 0.5}})
    world.place(broker, intent("buy-spy", quantity=301))
    world.clock.at = OPEN + timedelta(minutes=1)
    [order] = broker.completed_orders()
    assert (order.status, order.filled, order.quantity) == (OrderStatus.PARTIAL, 150, 301)
    assert broker.open_orders() == [] and broker.positions() == {"SPY": 150}
    price = buy_price(stored_bar(world.workbook, "SPY", SESSION)["open"])
    assert broker.account_values().cash == INITIAL_CASH - price * 150 - commission(150)


def test_fault_partial_when_fraction_fills_nothing_expires(world):
    broker = world.broker({"partial": {"SPY": 0.29}})
    world.place(broker, intent("buy-spy", quantity=3))
    world.clock.at = OPEN
    [order] = broker.completed_orders()
    assert (order.status, order.filled) == (OrderStatus.EXPIRED, 0)


def test_fault_partial_fraction_is_exact_not_float_rounded(world):
    broker = world.broker({"partial": {"SPY": 0.29}})  # 0.29 * 100 is 28.999... in floats
    world.place(broker, intent("buy-spy", quantity=100))
    world.clock.at = OPEN
    assert broker.positions() == {"SPY": 29}


def test_fault_no_fill_expires_at_the_open_unfilled(world):
    broker = world.broker({"no_fill": ["SPY"]})
    world.place(broker, intent("buy-spy"))
    world.clock.at = OPEN + timedelta(minutes=1)
    [order] = broker.completed_orders()
    assert (order.status, order.filled) == (OrderStatus.EXPIRED, 0)
    assert broker.executions() == [] and broker.account_values().cash == INITIAL_CASH


def test_fault_delayed_open_fills_only_after_the_delay(world):
    broker = world.broker({"delayed_open_minutes": 30})
    world.place(broker, intent("buy-spy"))
    world.clock.at = OPEN + timedelta(minutes=1)
    assert broker.executions() == [] and len(broker.open_orders()) == 1
    world.clock.at = OPEN + timedelta(minutes=31)
    [fill] = broker.executions()
    assert fill.time == OPEN + timedelta(minutes=30) and broker.positions() == {"SPY": 300}


def test_fault_duplicate_executions_reports_each_fill_twice_and_counts_it_once(world):
    broker = world.broker({"duplicate_executions": True})
    world.place(broker, intent("buy-spy"))
    world.clock.at = OPEN + timedelta(minutes=1)
    first, second = broker.executions()
    assert first == second and first.exec_id == f"sim.{SESSION}.1.1"
    assert len(broker.commissions()) == 1 and broker.positions() == {"SPY": 300}


@pytest.mark.parametrize(
    ("faults", "named"),
    [
        ({"refuse_connection": True, "explode": 1}, "explode"),
        ({"disconnect_at": "during_place"}, "disconnect_at"),
        ({"partial": {"SPY": 1.5}}, "partial"),
        ({"lost_ack": "SPY"}, "lost_ack"),
        ({"delayed_open_minutes": -1}, "delayed_open_minutes"),
        ({"duplicate_executions": "yes"}, "duplicate_executions"),
    ],
)
def test_faults_when_unknown_or_malformed_raise_broker_error_naming_the_key(world, faults, named):
    with pytest.raises(BrokerError, match=named):
        world.broker(faults)


# --- two processes -----------------------------------------------------------------------------


def _place_many(workbook: str, folder: str, prefix: str, count: int, barrier) -> None:
    """Run in a child process: mint passes from the shared ledger and place ``count`` orders."""
    cfg = config_for(Path(workbook), Path(folder))
    broker = SimBroker(cfg, clock=Clock(DECIDED))
    with open_ledger(cfg) as ledger:
        wanted = [intent(f"{prefix}-{i}", quantity=1 + i) for i in range(count)]
        passes = [require_gate_pass(ledger, w, positions={}) for w in wanted]
        barrier.wait(timeout=60)
        for w, gate_pass in zip(wanted, passes, strict=True):
            result = broker.place(w, gate_pass)
            if result.outcome != Outcome.ACCEPTED:
                raise SystemExit(f"{w.client_ref}: {result}")


@pytest.mark.slow
def test_books_when_two_processes_place_at_once_lose_and_corrupt_nothing(world):
    context = multiprocessing.get_context("spawn")  # a fresh gate secret in each child
    barrier = context.Barrier(2)
    count = 25
    children = [
        context.Process(
            target=_place_many,
            args=(str(world.workbook), str(world.folder), prefix, count, barrier),
        )
        for prefix in ("a", "b")
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    orders = world.broker().open_orders()
    assert sorted(int(o.broker_order_id) for o in orders) == list(range(1, 2 * count + 1))
    assert {o.client_ref for o in orders} == {f"{p}-{i}" for p in "ab" for i in range(count)}
    assert world.books()["next_order_id"] == 2 * count


# --- quotes: the spread model around the store's last print --------------------------------------


@pytest.mark.parametrize(
    ("price", "half_bps", "bid", "ask"),
    [
        ("100.00", "1", "99.99", "100.01"),
        ("610.00", "2.5", "609.85", "610.15"),  # 609.8475 and 610.1525, half-up to cents
        ("33.333", "10", "33.30", "33.37"),  # 33.299667 and 33.366333
        ("70.00", "0", "70.00", "70.00"),  # no spread: a locked quote
    ],
)
def test_model_quote_when_priced_is_the_half_spread_either_side_to_cents(price, half_bps, bid,
                                                                        ask):  # fmt: skip
    assert compute_model_quote(Decimal(price), Decimal(half_bps)) == (Decimal(bid), Decimal(ask))


def quoting_broker(world, **costs) -> SimBroker:
    cfg = config_for(world.workbook, world.folder)
    cfg.values["costs"].update(costs)
    return SimBroker(cfg, clock=world.clock)


def test_quotes_when_before_the_open_spread_around_the_last_close(world):
    broker = quoting_broker(world, quote_half_spreads={"AGG": 5.0})
    close = {s: stored_bar(world.workbook, s, DECISION_DAY)["close"] for s in ("SPY", "AGG")}
    answer = broker.quotes(["SPY", "AGG", "SPY"])
    assert answer.unquoted == {} and sorted(answer.quoted) == ["AGG", "SPY"]
    for symbol, half in (("SPY", Decimal("0.0001")), ("AGG", Decimal("0.0005"))):
        quote = answer.quoted[symbol]
        bid = (close[symbol] - close[symbol] * half).quantize(CENT, ROUND_HALF_UP)
        ask = (close[symbol] + close[symbol] * half).quantize(CENT, ROUND_HALF_UP)
        assert (quote.bid, quote.ask, quote.at) == (bid, ask, DECIDED), symbol
        assert f"the {DECISION_DAY} close" in quote.source


def test_quotes_when_the_session_opened_spread_around_its_open(world):
    world.clock.at = OPEN + timedelta(minutes=30)
    opening = stored_bar(world.workbook, "SPY", SESSION)["open"]
    quote = quoting_broker(world).quotes(["SPY"]).quoted["SPY"]
    assert (quote.bid + quote.ask) / 2 == pytest.approx(opening, abs=Decimal("0.01"))
    assert quote.bid == (opening * Decimal("0.9999")).quantize(CENT, ROUND_HALF_UP)
    assert f"the {SESSION} open" in quote.source


def test_quotes_when_the_store_lacks_a_symbol_leave_it_unquoted(world):
    answer = quoting_broker(world).quotes(["ZZZZ"])
    assert answer.quoted == {} and "no print" in answer.unquoted["ZZZZ"]


def test_quotes_when_refused_or_a_half_spread_is_bad_raise_one_line(world):
    with pytest.raises(BrokerUnavailable, match="refused"):
        world.broker({"refuse_connection": True}).quotes(["SPY"])
    with pytest.raises(BrokerError, match=r"costs.quote_half_spreads.SPY: 'wide'"):
        quoting_broker(world, quote_half_spreads={"SPY": "wide"}).quotes(["SPY"])
