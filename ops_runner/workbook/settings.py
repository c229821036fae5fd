"""The config's sections as typed, frozen settings, read from a checked config's values.

Each ``from_config`` takes the values ``check_config`` returned (every key present, defaults
filled in, numbers of their schema's kind) and keeps those kinds: a ``float`` field of the schema
stays a float here, and a caller that books money makes its Decimal from it as before. The
``strategy``, ``qa`` and ``execution`` sections have their settings in the layers that use them
(``StrategySettings``, ``QASettings``, ``ExecutionSettings``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The ops layer's Job.AUDIT, Job.BACKUP and Job.DEPENDENCY_SCAN, in their order in a week's slot;
# each is switched by ``schedule.weekly_<job>`` (the scan is off unless a config turns it on).
WEEKLY_JOB_NAMES = ("audit", "backup", "dependency_scan")
WEEKLY_DEFAULTS = ("audit", "backup")
_T = TypeVar("_T", bound="DataclassInstance")


def read_section(cls: type[_T], section: Mapping[str, Any]) -> _T:
    """Return the settings class ``cls`` filled from the keys of a flat config section that
    bear its fields' names (the section's kinds kept as checked)."""
    return cls(**{field.name: section[field.name] for field in fields(cls)})


@dataclass(frozen=True)
class UniverseSettings:
    """``universe``: the risk assets, the defensive asset and the cash proxy (None: no proxy)."""

    risk: tuple[str, ...]
    defensive: str
    cash_proxy: str | None

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> UniverseSettings:
        uni = values["universe"]
        return cls(tuple(uni["risk"]), uni["defensive"], uni["cash_proxy"])

    @property
    def symbols(self) -> list[str]:
        """Risk assets, then the defensive asset, then the cash proxy (if any), once each."""
        found = [*self.risk, self.defensive]
        if self.cash_proxy and self.cash_proxy not in found:
            found.append(self.cash_proxy)
        return found


@dataclass(frozen=True)
class ProviderSettings:
    """One entry of ``data.providers``: the vendor that fills a source and how it is asked.
    The defaults are the schema's (an entry the CLI adds for IB's bars names only its vendor)."""

    vendor: str  # alphavantage, tiingo or ib
    base_url: str | None = None
    timeout_seconds: float = 30.0
    retries: int = 3
    min_interval_seconds: float | None = None

    @classmethod
    def from_config(cls, entry: Mapping[str, Any]) -> ProviderSettings:
        return cls(**entry)


@dataclass(frozen=True)
class DataSettings:
    """``data``: the sources decisions and cross-checks read, the vendors that fill them (by
    source name), and how far back and how much again a fetch reads."""

    primary: str | None
    secondary: str | None
    providers: Mapping[str, ProviderSettings]
    fetch_start: date
    fetch_overlap_sessions: int

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> DataSettings:
        data = values["data"]
        return cls(
            primary=data["primary"],
            secondary=data["secondary"],
            providers={
                name: ProviderSettings.from_config(entry)
                for name, entry in data["providers"].items()
            },
            fetch_start=data["fetch_start"],
            fetch_overlap_sessions=data["fetch_overlap_sessions"],
        )

    @property
    def sources(self) -> tuple[str | None, str | None]:
        """The primary and the secondary, in that order (None where unset)."""
        return self.primary, self.secondary

    @property
    def fetched(self) -> list[str]:
        """The primary and the secondary where a provider serves them, in that order."""
        return [s for s in self.sources if s and s in self.providers]


@dataclass(frozen=True)
class CalendarSettings:
    """``calendar``: the exchange, the sessions it closed beyond its rules, its coverage."""

    name: str
    extra_closed: tuple[date, ...]
    covered_through: date

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> CalendarSettings:
        cal = values["calendar"]
        return cls(cal["name"], tuple(cal["extra_closed"]), cal["covered_through"])


@dataclass(frozen=True)
class ClientIds:
    """``broker.client_ids``: one IB client id per role."""

    orders: int
    readonly: int

    def of(self, role: str) -> int:
        """Return the client id of ``role`` (orders or readonly). Raises KeyError for another."""
        return {"orders": self.orders, "readonly": self.readonly}[role]


@dataclass(frozen=True)
class SimAccountSettings:
    """``broker.sim_account``: what the simulated broker does to the account between trades."""

    dividend_pay_lag_sessions: int
    withholding_rate: float
    interest_rate: float
    monthly_fee: float


@dataclass(frozen=True)
class FlexSettings:
    """``broker.flex``: IB's statements (the token and query id are secrets, never here)."""

    enabled: bool
    base_url: str


@dataclass(frozen=True)
class RetrySettings:
    """``broker.retry``: how often a dropped or refused session is tried, and the wait between."""

    attempts: int
    wait_seconds: float


@dataclass(frozen=True)
class GatewaySettings:
    """``broker.gateway``: how `ops-runner broker keep-up` starts IB Gateway (or TWS) through
    IBC and watches it; the IB user id and password are secrets, never here.

    ``restart_time`` is the daily restart as a New York wall time "HH:MM" (checked to fall
    outside 07:30-10:30); the ``*_seconds`` are the Watchdog's startup grace, idle time before
    a probe, wait before a restart after a failure, and the probe's own timeout."""

    enabled: bool
    app: str  # gateway or tws
    version: int  # the app's major version, e.g. 1030 for 10.30
    ibc_path: str
    ibc_ini: str | None
    tws_path: str | None
    tws_settings_path: str | None
    java_path: str | None
    client_id: int
    restart_time: str
    app_startup_seconds: float
    app_timeout_seconds: float
    retry_delay_seconds: float
    probe_timeout_seconds: float


@dataclass(frozen=True)
class BrokerSettings:
    """``broker``: which broker, where, as which account, and how the simulated one behaves."""

    kind: str  # sim or ib
    mode: str  # paper or live
    host: str
    port: int
    client_ids: ClientIds
    account: str | None
    sim_faults: Mapping[str, Any]  # checked by the simulated broker (SimFaults)
    sim_account: SimAccountSettings
    flex: FlexSettings
    simulator: bool
    client: str  # auto, ib_async or ib_insync
    quotes: str  # live, delayed or none: the market data IB is asked for
    connect_timeout_seconds: float
    request_timeout_seconds: float
    retry: RetrySettings
    gateway: GatewaySettings

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> BrokerSettings:
        broker = values["broker"]
        ids, account, flex = broker["client_ids"], broker["sim_account"], broker["flex"]
        return cls(
            kind=broker["kind"],
            mode=broker["mode"],
            host=broker["host"],
            port=broker["port"],
            client_ids=ClientIds(ids["orders"], ids["readonly"]),
            account=broker["account"],
            sim_faults=broker["sim_faults"],
            sim_account=read_section(SimAccountSettings, account),
            flex=read_section(FlexSettings, flex),
            simulator=broker["simulator"],
            client=broker["client"],
            quotes=broker["quotes"],
            connect_timeout_seconds=broker["connect_timeout_seconds"],
            request_timeout_seconds=broker["request_timeout_seconds"],
            retry=read_section(RetrySettings, broker["retry"]),
            gateway=read_section(GatewaySettings, broker["gateway"]),
        )

    @property
    def simulated(self) -> bool:
        """True for a simulator: ``kind: sim``, or the loopback TWS simulator (``kind: ib``,
        ``simulator: true``, paper, on a loopback host)."""
        if self.kind == "sim":
            return True
        loopback = self.host in LOOPBACK_HOSTS
        return self.kind == "ib" and self.simulator and loopback and self.mode == "paper"


@dataclass(frozen=True)
class BooksSettings:
    """``books``: where the ledger books dividends, splits and fees from, and when a dividend
    still unpaid is a break."""

    statements: str  # broker or price_store
    dividend_pay_lag_sessions: int
    withholding_rate: float
    pay_grace_sessions: int

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> BooksSettings:
        return read_section(cls, values["books"])


@dataclass(frozen=True)
class PathsSettings:
    """``paths``: the workbook's folders and files as written (relative to the workbook or
    absolute); ``Config.path`` resolves them."""

    ledger: str
    reports: str
    data: str
    kill_switch: str
    broker: str
    anchor: str
    backups: str

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> PathsSettings:
        return read_section(cls, values["paths"])

    def of(self, name: str) -> str:
        """Return ``paths.<name>`` as written. Raises KeyError for a name the section lacks."""
        if name not in self.__dataclass_fields__:
            raise KeyError(name)
        return str(getattr(self, name))


@dataclass(frozen=True)
class BackupSettings:
    """``backup``: how many archives are kept (older ones are deleted)."""

    keep: int

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> BackupSettings:
        return read_section(cls, values["backup"])


@dataclass(frozen=True)
class CostsSettings:
    """``costs``: commission per share and its minimum, the slippage assumed, the half-spread the
    simulated brokers quote, and the bands (overall and per symbol, in bps) of slippage, fill vs
    the quoted mid and quoted half-spread past which the report flags an order."""

    commission_per_share: float
    commission_min: float
    slippage_bps: float
    slippage_band_bps: float
    slippage_bands: Mapping[str, Any]
    quote_half_spread_bps: float  # the simulated brokers' quoted half-spread
    quote_half_spreads: Mapping[str, Any]
    vs_mid_band_bps: float
    vs_mid_bands: Mapping[str, Any]
    half_spread_band_bps: float
    half_spread_bands: Mapping[str, Any]

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> CostsSettings:
        return read_section(cls, values["costs"])


@dataclass(frozen=True)
class ResearchSettings:
    """``research``: the backtest's starting cash and whether it trades whole shares."""

    initial_cash: float
    whole_shares: bool

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> ResearchSettings:
        return read_section(cls, values["research"])


@dataclass(frozen=True)
class RiskSettings:
    """``risk``: the drawdown that halts trading, and what is held when risk is off."""

    max_drawdown: float
    risk_off: str  # none, defensive or cash

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> RiskSettings:
        return read_section(cls, values["risk"])


@dataclass(frozen=True)
class ApprovalsSettings:
    """``approvals``: how long an approval token lives unless its issuer says otherwise."""

    default_ttl_minutes: int

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> ApprovalsSettings:
        return read_section(cls, values["approvals"])

    @property
    def default_ttl(self) -> timedelta:
        return timedelta(minutes=self.default_ttl_minutes)


@dataclass(frozen=True)
class EmailSettings:
    """``alerts.email``: the recipients (comma separated; None: no mail) and the SMTP server."""

    to: str | None
    sender: str
    host: str
    port: int
    starttls: bool
    username: str | None
    timeout_seconds: int


@dataclass(frozen=True)
class WebhookSettings:
    """``alerts.webhook``: the URL alerts are posted to (None: the secret's, if any)."""

    url: str | None
    timeout_seconds: int


@dataclass(frozen=True)
class PushSettings:
    """``alerts.push``: the push channels by name (each one's URL is a secret) and how long one
    may take to connect and to answer."""

    channels: tuple[str, ...]
    timeout_seconds: int


@dataclass(frozen=True)
class AlertsSettings:
    """``alerts``: the alert log and the channels alerts go out on."""

    log_file: str
    email: EmailSettings
    webhook: WebhookSettings
    push: PushSettings

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> AlertsSettings:
        alerts = values["alerts"]
        email, hook, push = alerts["email"], alerts["webhook"], alerts["push"]
        return cls(
            log_file=alerts["log_file"],
            email=read_section(EmailSettings, email),
            webhook=read_section(WebhookSettings, hook),
            push=PushSettings(tuple(push["channels"]), push["timeout_seconds"]),
        )


@dataclass(frozen=True)
class SecretsSettings:
    """``secrets``: the 0600 file secrets are read from when the environment lacks them."""

    file: str | None

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> SecretsSettings:
        return read_section(cls, values["secrets"])


@dataclass(frozen=True)
class ScheduleSettings:
    """``schedule``: the jobs' instants as durations and New York wall times, and the limits
    the tick keeps. ``weekly`` names the weekly jobs turned on; ``fetch`` says a provider
    serves the primary or the secondary (``data_fetch`` at each session);
    ``dependency_scan_safe_mode`` makes a vulnerable pin an incident and SAFE_MODE."""

    decision_delay: timedelta
    window_start: str
    window_end: str
    reconciliation_delay: timedelta
    deadlines: Mapping[str, timedelta]
    timezone: str
    max_clock_skew_seconds: int
    missed_decision: str  # halt or skip_cycle
    heartbeat_max_gap_minutes: int
    cell_timeout_seconds: int
    notebook_deadline_minutes: float
    tick_deadline_minutes: float
    investigate_incidents: bool
    weekly: tuple[str, ...] = WEEKLY_DEFAULTS
    fetch: bool = False
    dependency_scan_safe_mode: bool = False
    signal_offset: int = 0  # strategy.signal_offset: a cycle decides that many sessions early

    @classmethod
    def from_config(cls, values: Mapping[str, Any]) -> ScheduleSettings:
        """Return the settings of a checked config's values (``cfg.values``)."""
        sched = values["schedule"]
        minutes = {name: timedelta(minutes=int(m)) for name, m in sched["deadlines"].items()}
        return cls(
            decision_delay=timedelta(minutes=int(sched["decision_delay_minutes"])),
            window_start=sched["submission_window"]["start"],
            window_end=sched["submission_window"]["end"],
            reconciliation_delay=timedelta(minutes=int(sched["reconciliation_delay_minutes"])),
            deadlines=minutes,
            timezone=sched["timezone"],
            max_clock_skew_seconds=sched["max_clock_skew_seconds"],
            missed_decision=sched["missed_decision"],
            heartbeat_max_gap_minutes=sched["heartbeat_max_gap_minutes"],
            cell_timeout_seconds=sched["cell_timeout_seconds"],
            notebook_deadline_minutes=sched["notebook_deadline_minutes"],
            tick_deadline_minutes=sched["tick_deadline_minutes"],
            investigate_incidents=sched["investigate_incidents"],
            weekly=tuple(job for job in WEEKLY_JOB_NAMES if sched[f"weekly_{job}"]),
            fetch=bool(DataSettings.from_config(values).fetched),
            dependency_scan_safe_mode=sched["dependency_scan_safe_mode"],
            signal_offset=int(values.get("strategy", {}).get("signal_offset", 0)),
        )
