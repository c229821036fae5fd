"""The TWS simulator's side of a client socket, and the faults it injects: shared by the
simulator (``tws_sim``) and its request handlers (``tws_orders``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import time

from ops_runner.simulators import tws_codec as wire
from ops_runner.simulators.tws_codec import SERVER_VERSION


@dataclass
class TwsFaults:
    """Faults the simulator injects; tests may change any field between steps."""

    close_on_accept: bool = False  # accept the TCP connection, then close it at once
    silent: bool = False  # accept, read the handshake, never answer
    server_version: int = SERVER_VERSION  # e.g. 100: an old server both clients refuse
    client_ids_in_use: set[int] = field(default_factory=set)  # startApi -> 326, then close
    drop_after_orders: int | None = None  # one-shot: abort the socket right after the n-th
    # placeOrder received from now on; that order IS accepted, but never acknowledged
    burst: str = "none"  # the 09:30 fill burst: "none" | "1100" | "drop" (see advance())
    restore_after_seconds: float = 0.3
    reject: dict[str, tuple[int, str]] = field(default_factory=dict)  # symbol -> (code, text)
    partial: dict[str, float] = field(default_factory=dict)  # symbol -> fraction filled
    hold_presubmitted: bool = True  # MOO orders report PreSubmitted until the open
    duplicate_exec_details: bool = False  # every execDetails is sent twice
    commission_first: bool = False  # commissionReport before its execDetails
    commission_missing: set[str] = field(default_factory=set)  # never reported (still charged)
    empty_order_ref_completed: bool = False  # completedOrder carries "" as orderRef
    empty_order_ref_executions: bool = False  # execDetails carries "" as orderRef
    duplicate_order_id: int = 0  # the next N placeOrder calls get 103 and are not accepted
    order_warning_399: set[str] = field(default_factory=set)  # 399 warning, order accepted
    restart_window: tuple[time, time] | None = None  # NY wall times of a daily restart
    # Without a live market-data subscription a live snapshot gets 354 and no ticks; a delayed
    # one (reqMarketDataType 3) gets 10167 and the delayed ticks.
    quotes_subscribed: bool = True


class Connection:
    """One client socket: its writer, its client id once startApi arrived, subscriptions."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.client_id: int | None = None
        self.client_versions: tuple[int, int] = (0, 0)
        self.account_updates = False
        self.market_data_type = 1  # reqMarketDataType: 1 live, 3 delayed
        self.closed = False

    def send(self, fields: list[str]) -> None:
        if not self.closed:
            self.writer.write(wire.encode_frame(fields))

    def abort(self) -> None:
        """Hang up now: nothing more is sent; what was already written is flushed first, so
        a client sees exactly the messages before the drop (an abort() would discard them)."""
        self.closed = True
        self.writer.transport.close()
