"""One contract over every registered broker: an order reaches the adapter's own code only with a
pass the order gate minted for exactly that intent, and no adapter can take that check away."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from ops_runner.brokers import BrokerRegistry, brokers, open_broker
from ops_runner.brokers.base import Broker, BrokerError, PlaceResult
from ops_runner.brokers.gate import GatePass, OrderIntent, OrderRefused, Side, require_gate_pass
from ops_runner.core.events import Purpose, State
from ops_runner.ledger import open_ledger
from ops_runner.workbook.config import Config, compute_template_text, load_config_text

REGISTERED = ["ib", "sim"]  # written by hand: a new adapter must be added here to be released


def config_of(kind: str, root: Path) -> Config:
    values = yaml.safe_load(compute_template_text("demo"))  # the sample market: no network
    values["broker"].update({"kind": kind, "mode": "paper", "account": "DU1234567"})
    return load_config_text(yaml.safe_dump(values), root)


def intent(ref: str = "contract-1", quantity: int = 10) -> OrderIntent:
    return OrderIntent(ref, "SPY", Side.BUY, quantity, Purpose.REBALANCE, "2025-03-03")


@pytest.fixture
def ledger(tmp_path: Path):
    cfg = config_of("sim", tmp_path)
    cfg.path("ledger").mkdir(parents=True)
    with open_ledger(cfg) as opened:
        yield opened


class Recorder:
    """Stands in for an adapter's own order code: notes every intent that reached it."""

    def __init__(self) -> None:
        self.reached: list[OrderIntent] = []

    def __call__(self, sent: OrderIntent) -> PlaceResult:
        self.reached.append(sent)
        return PlaceResult(sent.client_ref, "accepted")  # type: ignore[arg-type]


def opened(kind: str, root: Path) -> tuple[Broker, Recorder]:
    broker = open_broker(config_of(kind, root))
    recorder = Recorder()
    broker._place = recorder  # type: ignore[method-assign]
    return broker, recorder


def test_registry_when_listed_holds_exactly_the_adapters_this_contract_covers():
    assert brokers.names() == REGISTERED


@pytest.mark.parametrize("kind", REGISTERED)
def test_every_broker_when_opened_is_a_broker_whose_place_is_the_base_class_one(kind, tmp_path):
    broker = open_broker(config_of(kind, tmp_path))
    assert isinstance(broker, Broker) and type(broker) is brokers.resolve(kind)
    assert type(broker).place is Broker.place


@pytest.mark.parametrize("kind", REGISTERED)
@pytest.mark.parametrize(
    "forgery",
    ["no pass", "a dict", "built by hand", "signature altered", "state altered",
     "intent swapped", "quantity raised"],
)  # fmt: skip
def test_every_broker_when_the_pass_is_forged_refuses_before_its_own_code_runs(
    kind, forgery, ledger, tmp_path
):
    broker, recorder = opened(kind, tmp_path)
    real = require_gate_pass(ledger, intent(), {})
    flipped = ("0" if real.signature[0] != "0" else "1") + real.signature[1:]
    fake = {
        "no pass": None,
        "a dict": dataclasses.asdict(real),
        "built by hand": GatePass(real.intent, State.RUN, real.ledger_seq, "0" * 64),
        "signature altered": dataclasses.replace(real, signature=flipped),
        "state altered": dataclasses.replace(real, state=State.SAFE_MODE),
        "intent swapped": dataclasses.replace(real, intent=intent("contract-2")),
        "quantity raised": dataclasses.replace(real, intent=intent(quantity=1000)),
    }[forgery]
    target = fake.intent if isinstance(fake, GatePass) else intent()
    with pytest.raises(OrderRefused):
        broker.place(target, fake)
    assert recorder.reached == []


@pytest.mark.parametrize("kind", REGISTERED)
def test_every_broker_when_the_pass_is_for_another_intent_refuses(kind, ledger, tmp_path):
    broker, recorder = opened(kind, tmp_path)
    gate_pass = require_gate_pass(ledger, intent("contract-1"), {})
    with pytest.raises(OrderRefused, match="not this intent"):
        broker.place(intent("contract-2"), gate_pass)
    assert recorder.reached == []


@pytest.mark.parametrize("kind", REGISTERED)
def test_every_broker_when_the_gate_minted_the_pass_reaches_its_own_code_once(
    kind, ledger, tmp_path
):
    broker, recorder = opened(kind, tmp_path)
    wanted = intent()
    broker.place(wanted, require_gate_pass(ledger, wanted, {}))
    assert recorder.reached == [wanted]


def test_an_adapter_when_it_defines_place_is_refused_as_its_class_is_created():
    with pytest.raises(TypeError, match="defines place"):

        class Careless(Broker):  # noqa: F841 - the class statement itself must fail
            def place(self, intent, gate_pass):  # type: ignore[override]
                return None


class LooksLikeOne:
    """Has a place() of its own, and is no Broker."""

    def place(self, intent, gate_pass):
        return None


def test_the_registry_when_a_name_points_at_something_not_a_broker_refuses_it():
    registry = BrokerRegistry()
    registry.register("fake", f"{__name__}:LooksLikeOne")
    with pytest.raises(TypeError, match="not a Broker subclass"):
        registry.resolve("fake")


def test_the_registry_when_the_kind_is_unknown_says_so_in_one_line(tmp_path):
    with pytest.raises(BrokerError, match="'paper-trader' has no adapter"):
        brokers.resolve("paper-trader")
