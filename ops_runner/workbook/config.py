"""The workbook's configuration: find the workbook, check config.yaml, hash it, read secrets."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ops_runner.core.errors import ConfigError, SecretError, WorkbookError
from ops_runner.core.hashing import compute_sha256
from ops_runner.workbook.settings import (
    AlertsSettings,
    ApprovalsSettings,
    BackupSettings,
    BooksSettings,
    BrokerSettings,
    CalendarSettings,
    CostsSettings,
    DataSettings,
    PathsSettings,
    ResearchSettings,
    RiskSettings,
    ScheduleSettings,
    SecretsSettings,
    UniverseSettings,
)

CONFIG_NAME = "config.yaml"
HOME_ENV = "OPS_RUNNER_HOME"
SECRET_ENV_PREFIX = "OPS_RUNNER_"
TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
MOO_CUTOFF = time(9, 28)  # Nasdaq takes market-on-open orders until 09:28 ET
# New York wall times a Gateway restart must stay out of: orders go out before the open and
# fill after it (the submission window, the opening burst, the first reconciliation reads).
GATEWAY_QUIET = (time(7, 30), time(10, 30))
REGULAR_OPEN = time(9, 30)
_SECRET_WORDS = re.compile(r"pass(word|wd)?|secret|token|api_?key|credential", re.IGNORECASE)
_SYMBOL = re.compile(r"^[A-Z][A-Z0-9.\-]{0,9}$")
_CHANNEL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}$")
_REQUIRED = object()

# Strategy keys added after workbooks were first hashed: at its default, such a key is left out
# of the hashed values, so the hash of a config that does not use it is what it always was.
RULE_KEYS = (
    "trend_length",
    "trend_basis",
    "trend_fast",
    "failed_slot",
    "signal_offset",
    "canary",
    "canary_breadth",
    "weighting",
    "volatility_sessions",
    "weight_cap",
)


@dataclass(frozen=True)
class Field:
    """One leaf of the config schema: a kind, a default and the rules its value must keep."""

    kind: str
    default: Any = _REQUIRED
    nullable: bool = False
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    hint: str = ""


SCHEMA: dict[str, Any] = {
    "workbook_name": Field("str", "workbook"),
    "universe": {
        "risk": Field("symbols", hint="a list of tickers, e.g. [SPY, VEU]"),
        "defensive": Field("symbol", hint="a ticker, e.g. AGG"),
        "cash_proxy": Field("symbol", None, nullable=True, hint="a ticker such as BIL, or null"),
    },
    "strategy": {
        "name": Field("str", "rotation"),
        "lookback_months": Field("int", 12, low=1, high=60),
        "blend": Field("blend", []),
        "skip_months": Field("int", 0, low=0, high=59),
        "top_n": Field("int", 1, low=1, high=100),
        "absolute_momentum": Field("bool", True),
        "absolute_compare": Field("str", "each", choices=("each", "benchmark")),
        "benchmark": Field("symbol", None, nullable=True),
        # The rules below are off at their defaults, and a key at its default is left out of
        # the config hash (RULE_KEYS): a workbook that does not use them keeps its hash.
        "trend_length": Field("int", 0, low=0, high=400),  # 0: no trend filter
        "trend_basis": Field("str", "months", choices=("months", "sessions")),
        "trend_fast": Field("int", 1, low=1, high=399),  # 1: the close itself vs the average
        "failed_slot": Field("str", "defensive", choices=("defensive", "cash")),
        "signal_offset": Field("int", 0, low=-10, high=0),  # sessions from the month-end
        "canary": Field("symbol_list", []),
        "canary_breadth": Field("int", 1, low=1, high=100),
        "weighting": Field("str", "equal", choices=("equal", "inverse_volatility")),
        "volatility_sessions": Field("int", 63, low=2, high=2520),
        "weight_cap": Field("float", 1.0, low=0.0, high=1.0),
    },
    "data": {
        # No default source: a workbook decides from nothing until its user names one (only
        # the demo workbook uses the SYNTHETIC sample market).
        "primary": Field("str", None, nullable=True),
        "secondary": Field("str", None, nullable=True),
        # Sources fetched from a vendor: name -> {vendor: alphavantage | tiingo | ib, and
        # optionally base_url, timeout_seconds, retries, min_interval_seconds}. Keys come from
        # OPS_RUNNER_ALPHAVANTAGE_API_KEY / OPS_RUNNER_TIINGO_API_KEY (or the secrets file).
        "providers": Field("mapping", {}),
        "fetch_start": Field("date", date(2000, 1, 1)),  # a symbol not stored yet: from here
        "fetch_overlap_sessions": Field("int", 5, low=0, high=250),  # re-read to see revisions
    },
    "qa": {
        "window_sessions": Field("int", 300, low=1, high=100_000),
        "jump_band": Field("float", 0.15, low=0.0, high=10.0),
        "market_move_share": Field("float", 0.5, low=0.0, high=1.0),
        "market_move_ratio": Field("float", 0.2, low=0.0, high=1.0),
        "market_min_others": Field("int", 1, low=1, high=10_000),
        # symbol -> asset class over the defaults of ops_runner/market/asset_classes.py; class ->
        # reference symbol (read from data.primary even outside the universe). Checked by QA.
        "asset_classes": Field("mapping", {}),
        "market_references": Field("mapping", {"equity": "SPY"}),
        "cross_close_tolerance": Field("float", 0.01, low=0.0, high=1.0),
        "cross_return_tolerance": Field("float", 0.02, low=0.0, high=10.0),
        "cross_dividend_tolerance": Field("float", 0.0002, low=0.0, high=1.0),
        "cross_dividend_sessions": Field("int", 0, low=0, high=5),
        "return_lookback_sessions": Field("int", 252, low=2, high=100_000),
        "max_findings_per_kind": Field("int", 25, low=1, high=100_000),
    },
    "calendar": {
        "name": Field("str", "XNYS", choices=("XNYS",)),
        "extra_closed": Field("dates", []),
        "covered_through": Field("date", date(2027, 12, 31)),
    },
    "broker": {
        "kind": Field("str", "sim", choices=("sim", "ib")),
        "mode": Field("str", "paper", choices=("paper", "live")),
        "host": Field("str", "127.0.0.1"),
        "port": Field("int", 4002, low=1, high=65535),
        "client_ids": {
            "orders": Field("int", 11, low=0, high=2**31 - 1),
            "readonly": Field("int", 12, low=0, high=2**31 - 1),
        },
        "account": Field("str", None, nullable=True),
        "sim_faults": Field("mapping", {}),
        # What the simulated broker does to the account between trades, as a real one does:
        # dividends paid this many sessions after the ex-date, tax withheld at this rate,
        # interest on cash at this annual rate (credited, or charged on a debit, at each month's
        # first session), and a monthly fee. Splits are applied on their effective date.
        "sim_account": {
            "dividend_pay_lag_sessions": Field("int", 3, low=0, high=60),
            "withholding_rate": Field("float", 0.0, low=0.0, high=0.5),
            "interest_rate": Field("float", 0.0, low=-0.1, high=0.25),
            "monthly_fee": Field("float", 0.0, low=0.0, high=10_000.0),
        },
        # IB's statements (Flex Web Service) for cash movements and corporate actions: the
        # token and query id are secrets (IB_FLEX_TOKEN, IB_FLEX_QUERY_ID), never config.
        "flex": {
            "enabled": Field("bool", False),
            "base_url": Field(
                "str",
                "https://ndcdyn.interactivebrokers.com/AccountManagement/FlexWebService",
            ),
        },
        # The IB endpoint is the loopback TWS simulator (demo, tests): only then does a tick
        # accept a simulated clock with broker.kind ib.
        "simulator": Field("bool", False),
        # The IB client library: ib_async (maintained), ib_insync (same API), or auto (the first
        # one installed, ib_async first).
        "client": Field("str", "auto", choices=("auto", "ib_async", "ib_insync")),
        # The quotes IB is asked for (a market-data snapshot at submission and after the open):
        # live (needs a subscription), delayed (IB's delayed data where live is not
        # subscribed), or none (nothing asked, nothing quoted).
        "quotes": Field("str", "live", choices=("live", "delayed", "none")),
        "connect_timeout_seconds": Field("float", 10.0, low=0.1, high=300.0),
        "request_timeout_seconds": Field("float", 15.0, low=0.1, high=600.0),
        # How often a dropped or refused session is retried before the caller is told the
        # broker is down (BROKER_DOWN), and the wait between attempts.
        "retry": {
            "attempts": Field("int", 3, low=1, high=20),
            "wait_seconds": Field("float", 2.0, low=0.0, high=300.0),
        },
        # IB only: `ops-runner broker keep-up` keeps IB Gateway (or TWS) running through IBC and
        # ib_async's Watchdog, and restarts it daily at restart_time (New York), never inside
        # 07:30-10:30 when orders go out and fill. The IB user id and password are the secrets
        # IB_USER_ID and IB_PASSWORD, never config.
        "gateway": {
            "enabled": Field("bool", False),
            "app": Field("str", "gateway", choices=("gateway", "tws")),
            "version": Field("int", 1030, low=900, high=99_999),  # the app's major version
            "ibc_path": Field("path", "/opt/ibc"),
            "ibc_ini": Field("path", None, nullable=True),  # IBC's config.ini (None: IBC's own)
            "tws_path": Field("path", None, nullable=True),  # the app's folder (None: ~/Jts)
            "tws_settings_path": Field("path", None, nullable=True),
            "java_path": Field("path", None, nullable=True),  # None: the app's bundled Java
            "client_id": Field("int", 13, low=0, high=2**31 - 1),  # the keeper's own session
            "restart_time": Field("wall_time", "23:45"),  # New York wall time, daily
            "app_startup_seconds": Field("float", 60.0, low=0.0, high=900.0),
            "app_timeout_seconds": Field("float", 20.0, low=1.0, high=3600.0),
            "retry_delay_seconds": Field("float", 10.0, low=0.0, high=3600.0),
            "probe_timeout_seconds": Field("float", 4.0, low=0.1, high=300.0),
        },
    },
    # How the ledger books what happens to the account between trades (dividends, withholding,
    # splits, interest, fees). statements "broker": from the broker's statement lines where it
    # gives them (the simulated broker; IB with broker.flex), otherwise from the price store's
    # dividends and splits; "price_store": always from the price store. A dividend is expected
    # dividend_pay_lag_sessions after its ex-date, net of withholding_rate; one still unpaid
    # pay_grace_sessions after that is a break.
    "books": {
        "statements": Field("str", "broker", choices=("broker", "price_store")),
        "dividend_pay_lag_sessions": Field("int", 3, low=0, high=60),
        "withholding_rate": Field("float", 0.0, low=0.0, high=0.5),
        "pay_grace_sessions": Field("int", 5, low=0, high=120),
    },
    "execution": {
        "cash_buffer": Field("float", 0.02, low=0.0, high=0.5),
        "min_trade_value": Field("float", 100.0, low=0.0, high=1e9),
        "cash_account": Field("bool", True),
        "reconciliation_limit_minutes": Field("int", 240, low=1, high=7 * 24 * 60),
    },
    "paths": {
        "ledger": Field("path", "ledger"),
        "reports": Field("path", "reports"),
        "data": Field("path", "data"),
        "kill_switch": Field("path", "ops/KILL_SWITCH"),
        "broker": Field("path", "broker"),
        "anchor": Field("path", "ops/ledger-anchor.json"),
        "backups": Field("path", "backups"),
    },
    "backup": {
        "keep": Field("int", 8, low=1, high=520),  # archives kept; older ones are deleted
    },
    "costs": {
        "commission_per_share": Field("float", 0.005, low=0.0, high=1.0),
        "commission_min": Field("float", 1.0, low=0.0, high=100.0),
        "slippage_bps": Field("float", 2.0, low=0.0, high=500.0),
        "slippage_band_bps": Field("float", 10.0, low=0.0, high=1000.0),
        "slippage_bands": Field("mapping", {}),
        # The simulated brokers quote a bid and an ask this many bps either side of the price
        # store's last print (per symbol in quote_half_spreads, e.g. {EEM: 3.0}).
        "quote_half_spread_bps": Field("float", 1.0, low=0.0, high=500.0),
        "quote_half_spreads": Field("mapping", {}),
        # The slippage report's bands for the quotes: |fill vs the quoted mid| and the quoted
        # half-spread, in bps (per symbol in vs_mid_bands / half_spread_bands); beyond: flagged.
        "vs_mid_band_bps": Field("float", 10.0, low=0.0, high=1000.0),
        "vs_mid_bands": Field("mapping", {}),
        "half_spread_band_bps": Field("float", 5.0, low=0.0, high=1000.0),
        "half_spread_bands": Field("mapping", {}),
    },
    "research": {
        "initial_cash": Field("float", 100000.0, low=1.0, high=1e12),
        "whole_shares": Field("bool", True),
    },
    "risk": {
        "max_drawdown": Field("float", 0.25, low=0.0, high=1.0),
        "risk_off": Field("str", "defensive", choices=("none", "defensive", "cash")),
    },
    "approvals": {
        "default_ttl_minutes": Field("int", 60, low=1, high=7 * 24 * 60),
    },
    "schedule": {
        "timezone": Field("timezone", "America/New_York"),
        "decision_delay_minutes": Field("int", 30, low=0, high=600),
        "submission_window": {
            "start": Field("wall_time", "08:00", hint='a New York time "HH:MM"'),
            "end": Field("wall_time", "09:20", hint='a New York time "HH:MM"'),
        },
        "reconciliation_delay_minutes": Field("int", 30, low=0, high=600),
        "deadlines": {
            "data_qa": Field("int", 30, low=1, high=24 * 60),
            "decision": Field("int", 30, low=1, high=24 * 60),
            "execution": Field("int", 60, low=1, high=24 * 60),
            "reconciliation": Field("int", 60, low=1, high=24 * 60),
            "slippage_report": Field("int", 120, low=1, high=7 * 24 * 60),
        },
        "max_clock_skew_seconds": Field("int", 5, low=1, high=3600),
        "missed_decision": Field("str", "halt", choices=("halt", "skip_cycle")),
        "heartbeat_max_gap_minutes": Field("int", 60, low=1, high=31 * 24 * 60),
        "cell_timeout_seconds": Field("int", 600, low=1, high=24 * 3600),
        "notebook_deadline_minutes": Field("float", 20.0, low=0.05, high=24 * 60),
        # The tick's own deadline: past it the tick's kernels are killed and, if it is still
        # stuck, the process ends with what it ran recorded as failed. Keep it below the
        # scheduler's own limit (the systemd unit's TimeoutStartSec is 45min).
        "tick_deadline_minutes": Field("float", 40.0, low=0.1, high=24 * 60),
        # After each week's last close: the broker vs ledger audit and a backup archive.
        "weekly_audit": Field("bool", True),
        "weekly_backup": Field("bool", True),
        # Runbook 6, weekly, optional: pip-audit over the workbook's environment, in the same
        # slot. A vulnerable pin is a finding and a warning alert; with dependency_scan_safe_mode
        # also an incident and SAFE_MODE.
        "weekly_dependency_scan": Field("bool", False),
        "dependency_scan_safe_mode": Field("bool", False),
        # The incident notebook runs once for every new incident (its executed copy is the
        # investigation's record).
        "investigate_incidents": Field("bool", True),
    },
    "alerts": {
        "log_file": Field("path", "ops/alerts.log"),
        "email": {
            "to": Field("str", None, nullable=True, hint="addresses, comma separated"),
            "sender": Field("str", "ops-runner@localhost"),
            "host": Field("str", "127.0.0.1"),
            "port": Field("int", 25, low=1, high=65535),
            "starttls": Field("bool", False),
            "username": Field("str", None, nullable=True),
            "timeout_seconds": Field("int", 10, low=1, high=120),
        },
        "webhook": {
            "url": Field("str", None, nullable=True),
            "timeout_seconds": Field("int", 10, low=1, high=120),
        },
        # Push channels sent through apprise (ntfy, Telegram, Pushover, Slack, ...): names
        # here, each one's URL (it holds the service's token) the secret PUSH_<NAME>_URL.
        "push": {
            "channels": Field("channel_names", [], hint="names such as [ntfy_phone]"),
            "timeout_seconds": Field("int", 10, low=1, high=120),
        },
    },
    "secrets": {"file": Field("path", None, nullable=True)},
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _coerce_date(value: Any, key: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise ConfigError(f"config error: {key}: {value!r} is not a date; write YYYY-MM-DD", key)


def _coerce_wall_time(value: Any, key: str) -> str:
    # YAML 1.1 reads an unquoted 08:00 as the sexagesimal integer 480.
    if _is_int(value) and 0 <= value < 24 * 60:
        value = f"{value // 60:02d}:{value % 60:02d}"
    if isinstance(value, str) and re.fullmatch(r"\d{1,2}:\d{2}", value):
        hours, minutes = (int(part) for part in value.split(":"))
        if hours < 24 and minutes < 60:
            return f"{hours:02d}:{minutes:02d}"
    raise ConfigError(f'config error: {key}: {value!r} is not a time; write "HH:MM"', key)


def compute_push_secret_name(channel: str) -> str:
    """Return the secret that holds push channel ``channel``'s URL: ``PUSH_<CHANNEL>_URL``."""
    return f"PUSH_{channel.upper()}_URL"


def _check_channel_names(value: Any, key: str) -> list[str]:
    """Return the push channels' names; a mistake never echoes the value (it may be a URL)."""
    if not isinstance(value, list):
        raise ConfigError(f"config error: {key}: expected a list of channel names such as "
                          "[ntfy_phone, slack_ops]", key)  # fmt: skip
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(item, str) and "://" in item:
            raise ConfigError(
                f"config error: {where}: a URL never goes in config.yaml (it holds the service's "
                "token); write a name such as ntfy_phone and put the URL in the secret "
                f"{compute_push_secret_name('ntfy_phone')}",
                where,
            )
        if not isinstance(item, str) or not _CHANNEL_NAME.match(item):
            raise ConfigError(
                f"config error: {where}: not a channel name; use lower-case letters, digits and "
                "_ (at most 31, starting with a letter), e.g. ntfy_phone",
                where,
            )
    dupes = sorted({name for name in value if value.count(name) > 1})
    if dupes:
        raise ConfigError(f"config error: {key}: {', '.join(dupes)} listed twice", key)
    return list(value)


def _check_leaf(spec: Field, value: Any, key: str) -> Any:
    """Return the value normalised to the field's kind, or raise ConfigError naming the key."""
    if value is None:
        if spec.nullable:
            return None
        needed = spec.hint or spec.kind
        raise ConfigError(f"config error: {key}: a value is required ({needed})", key)

    def wrong(expected: str) -> ConfigError:
        return ConfigError(
            f"config error: {key}: expected {expected}, got {type(value).__name__} {value!r}", key
        )

    kind = spec.kind
    if kind == "str" or kind == "path":
        if not isinstance(value, str) or not value.strip():
            raise wrong("a non-empty string")
        result: Any = value.strip()
    elif kind == "int":
        if not _is_int(value):
            raise wrong("an integer")
        result = value
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong("a number")
        result = float(value)
        if not math.isfinite(result):  # YAML's .nan and .inf: every bound check passes a NaN
            raise ConfigError(f"config error: {key}: {value!r} is not a finite number", key)
    elif kind == "bool":
        if not isinstance(value, bool):
            raise wrong("true or false")
        result = value
    elif kind == "symbol":
        if not isinstance(value, str) or not _SYMBOL.match(value):
            raise wrong("an upper-case ticker such as SPY")
        result = value
    elif kind in ("symbols", "symbol_list"):  # symbol_list may be empty
        if kind == "symbols" and (not isinstance(value, list) or not value):
            raise wrong("a non-empty list of tickers such as [SPY, VEU]")
        if not isinstance(value, list):
            raise wrong("a list of tickers such as [VWO, BND], or []")
        result = [_check_leaf(Field("symbol"), item, f"{key}[{i}]") for i, item in enumerate(value)]
        dupes = sorted({s for s in result if result.count(s) > 1})
        if dupes:
            raise ConfigError(f"config error: {key}: {', '.join(dupes)} listed twice", key)
    elif kind == "channel_names":
        result = _check_channel_names(value, key)
    elif kind == "date":
        result = _coerce_date(value, key)
    elif kind == "dates":
        if not isinstance(value, list):
            raise wrong("a list of dates such as [2025-01-09]")
        result = sorted({_coerce_date(item, f"{key}[{i}]") for i, item in enumerate(value)})
    elif kind == "mapping":
        if not isinstance(value, dict):
            raise wrong("a mapping of keys")
        result = value  # checked by its owner (e.g. the simulated broker's fault names)
    elif kind == "blend":
        if not isinstance(value, list):
            raise wrong("a list like [{lookback_months: 3, weight: 1}, {lookback_months: 12, ...}]")
        result = []
        for i, item in enumerate(value):
            where = f"{key}[{i}]"
            if not isinstance(item, dict) or set(item) != {"lookback_months", "weight"}:
                raise ConfigError(
                    f"config error: {where}: write {{lookback_months: N, weight: W}}", where
                )
            months = _check_leaf(Field("int", low=1, high=60), item["lookback_months"], where)
            weight = _check_leaf(Field("float", low=0.0, high=1e6), item["weight"],
                                 f"{where}.weight")  # fmt: skip
            if weight <= 0:
                raise ConfigError(f"config error: {where}.weight: must be above 0", where)
            result.append({"lookback_months": months, "weight": weight})
    elif kind == "wall_time":
        result = _coerce_wall_time(value, key)
    elif kind == "timezone":
        try:
            ZoneInfo(str(value))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(
                f"config error: {key}: {value!r} is not a time zone; use e.g. America/New_York", key
            ) from exc
        result = str(value)
    else:  # pragma: no cover - a schema typo, caught by the tests
        raise ValueError(f"unknown field kind {kind}")

    if spec.choices and result not in spec.choices:
        allowed = ", ".join(str(c) for c in spec.choices)
        raise ConfigError(f"config error: {key}: {result!r} is not one of: {allowed}", key)
    if spec.low is not None and result < spec.low:
        raise ConfigError(f"config error: {key}: {result} is below the minimum {spec.low:g}", key)
    if spec.high is not None and result > spec.high:
        raise ConfigError(f"config error: {key}: {result} is above the maximum {spec.high:g}", key)
    return result


def _check_section(
    schema: dict[str, Any], raw: Any, prefix: str, problems: list[ConfigError]
) -> dict[str, Any]:
    """Return the section normalised; every mistake found is appended to ``problems``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        where = prefix or "the file"
        problems.append(
            ConfigError(f"config error: {where}: expected a mapping of keys, got {raw!r}", prefix)
        )
        raw = {}
    for name in raw:
        key = f"{prefix}{name}"
        if name in schema:
            continue
        if isinstance(name, str) and _SECRET_WORDS.search(name):
            env = SECRET_ENV_PREFIX + re.sub(r"\W", "_", name).upper()
            problems.append(ConfigError(
                f"config error: {key}: secrets never go in config.yaml; set {env} in the "
                "environment or put it in the 0600 file named by secrets.file",
                key,
            ))  # fmt: skip
            continue
        known = ", ".join(schema)
        problems.append(
            ConfigError(f"config error: {key}: unknown key; known keys here: {known}", key)
        )
    result: dict[str, Any] = {}
    for name, spec in schema.items():
        key = f"{prefix}{name}"
        if isinstance(spec, dict):
            result[name] = _check_section(spec, raw.get(name), f"{key}.", problems)
        elif name in raw:
            try:
                result[name] = _check_leaf(spec, raw[name], key)
            except ConfigError as exc:
                problems.append(exc)
        elif spec.default is _REQUIRED:
            problems.append(ConfigError(
                f"config error: {key}: required key is missing ({spec.hint or spec.kind})", key
            ))  # fmt: skip
        else:
            result[name] = spec.default
    return result


def _hhmm(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


VENDORS = ("alphavantage", "tiingo", "ib")
_PROVIDER_FIELDS = {
    "vendor": Field("str", _REQUIRED, choices=VENDORS),
    "base_url": Field("str", None, nullable=True),
    "timeout_seconds": Field("float", 30.0, low=0.1, high=600.0),
    "retries": Field("int", 3, low=0, high=10),
    "min_interval_seconds": Field("float", None, nullable=True, low=0.0, high=3600.0),
}


def _check_providers(raw: dict[str, Any]) -> tuple[dict[str, Any], list[ConfigError]]:
    """Return ``data.providers`` normalised and a ConfigError per mistake in it."""
    problems: list[ConfigError] = []
    result: dict[str, Any] = {}
    for name, entry in raw.items():
        key = f"data.providers.{name}"
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_-]{0,30}", name):
            problems.append(ConfigError(
                f"config error: {key}: a source name is lower-case letters, digits, - and _",
                key))  # fmt: skip
            continue
        result[name] = _check_section(_PROVIDER_FIELDS, entry, f"{key}.", problems)
        base = result[name].get("base_url")
        if base is not None and (not re.match(r"https?://[^?#]+$", base)):
            problems.append(ConfigError(
                f"config error: {key}.base_url: write an http:// or https:// URL with no query "
                "(a key never goes in it: keys come from the secrets)", key))  # fmt: skip
    return result, problems


def _check_combinations(cfg: dict[str, Any]) -> list[ConfigError]:
    """Return a ConfigError for each pair of values that are fine alone, impossible together."""
    found: list[ConfigError] = []
    uni, strat = cfg["universe"], cfg["strategy"]
    risk = uni["risk"]
    if uni["defensive"] in risk:
        found.append(ConfigError(
            f"config error: universe.defensive: {uni['defensive']} is also in universe.risk; "
            "the defensive asset must sit outside the risk universe",
            "universe.defensive",
        ))  # fmt: skip
    if uni["cash_proxy"] is not None and uni["cash_proxy"] in risk:
        found.append(ConfigError(
            f"config error: universe.cash_proxy: {uni['cash_proxy']} is also in universe.risk; "
            "the cash proxy must sit outside the risk universe",
            "universe.cash_proxy",
        ))  # fmt: skip
    longest = max([strat["lookback_months"], *(b["lookback_months"] for b in strat["blend"])])
    shortest = min([strat["lookback_months"], *(b["lookback_months"] for b in strat["blend"])])
    if strat["skip_months"] >= shortest or longest > 60:
        found.append(ConfigError(
            "config error: strategy.skip_months: must be smaller than strategy.lookback_months",
            "strategy.skip_months",
        ))  # fmt: skip
    if strat["top_n"] > len(risk):
        found.append(ConfigError(
            f"config error: strategy.top_n: {strat['top_n']} exceeds the {len(risk)} risk assets",
            "strategy.top_n",
        ))  # fmt: skip
    if strat["absolute_compare"] == "benchmark" and strat["benchmark"] not in risk:
        found.append(ConfigError(
            "config error: strategy.benchmark: with absolute_compare: benchmark, name one of "
            f"universe.risk ({', '.join(risk)})",
            "strategy.benchmark",
        ))  # fmt: skip
    found.extend(_check_rules(strat))
    if cfg["data"]["secondary"] is not None and cfg["data"]["secondary"] == cfg["data"]["primary"]:
        found.append(ConfigError(
            "config error: data.secondary: must differ from data.primary (or be null)",
            "data.secondary",
        ))  # fmt: skip
    sched = cfg["schedule"]
    if sched["tick_deadline_minutes"] <= sched["notebook_deadline_minutes"]:
        found.append(ConfigError(
            f"config error: schedule.tick_deadline_minutes: {sched['tick_deadline_minutes']:g} "
            "must be longer than schedule.notebook_deadline_minutes "
            f"({sched['notebook_deadline_minutes']:g}): a tick runs whole notebooks",
            "schedule.tick_deadline_minutes",
        ))  # fmt: skip
    window = cfg["schedule"]["submission_window"]
    start, end = _hhmm(window["start"]), _hhmm(window["end"])
    if end >= REGULAR_OPEN:
        found.append(ConfigError(
            f"config error: schedule.submission_window.end: {window['end']} is after the 09:30 "
            "open; market-on-open orders must be in before the open (use e.g. 09:20)",
            "schedule.submission_window.end",
        ))  # fmt: skip
    elif end > MOO_CUTOFF:
        found.append(ConfigError(
            f"config error: schedule.submission_window.end: {window['end']} is past 09:28, when "
            "Nasdaq stops taking market-on-open orders; use 09:20",
            "schedule.submission_window.end",
        ))  # fmt: skip
    if start >= end:
        found.append(ConfigError(
            "config error: schedule.submission_window.start: must be before "
            "schedule.submission_window.end",
            "schedule.submission_window.start",
        ))  # fmt: skip
    broker = cfg["broker"]
    if broker["kind"] == "ib":
        account = broker["account"]
        if not account:
            found.append(ConfigError(
                "config error: broker.account: required when broker.kind is ib", "broker.account"
            ))  # fmt: skip
        elif broker["mode"] == "paper" and not account.startswith("DU"):
            found.append(ConfigError(
                "config error: broker.account: mode is paper but the account is not an IB paper "
                "account (those start with DU); fix broker.mode or broker.account",
                "broker.account",
            ))  # fmt: skip
        elif broker["mode"] == "live" and account.startswith("DU"):
            found.append(ConfigError(
                "config error: broker.account: mode is live but the account is an IB paper "
                "account (DU...); fix broker.mode or broker.account",
                "broker.account",
            ))  # fmt: skip
        if broker["client_ids"]["orders"] == broker["client_ids"]["readonly"]:
            found.append(ConfigError(
                "config error: broker.client_ids.readonly: must differ from "
                "broker.client_ids.orders (IB refuses a second session on one client id)",
                "broker.client_ids.readonly",
            ))  # fmt: skip
    return found + _check_gateway(broker)


def _check_gateway(broker: dict[str, Any]) -> list[ConfigError]:
    """Return a ConfigError for each way ``broker.gateway`` cannot keep this broker up."""
    gateway, found = broker["gateway"], []
    restart = _hhmm(gateway["restart_time"])
    if GATEWAY_QUIET[0] <= restart <= GATEWAY_QUIET[1]:
        found.append(ConfigError(
            f"config error: broker.gateway.restart_time: {gateway['restart_time']} is inside "
            "07:30-10:30 New York, when orders go out and fill; restart at night, e.g. 23:45",
            "broker.gateway.restart_time",
        ))  # fmt: skip
    if not gateway["enabled"]:
        return found
    if broker["kind"] != "ib":
        found.append(ConfigError(
            "config error: broker.gateway.enabled: keeps IB Gateway up, so it needs "
            f"broker.kind: ib (it is {broker['kind']})",
            "broker.gateway.enabled",
        ))  # fmt: skip
    if gateway["client_id"] in broker["client_ids"].values():
        found.append(ConfigError(
            "config error: broker.gateway.client_id: must differ from broker.client_ids (the "
            "keeper holds a session of its own beside the orders and read-only ones)",
            "broker.gateway.client_id",
        ))  # fmt: skip
    return found


class ConfigProblems(ConfigError):
    """config.yaml has several mistakes: ``problems`` holds one ConfigError each, and the
    message is one line per mistake (``key`` is the first one's)."""

    def __init__(self, problems: list[ConfigError]) -> None:
        super().__init__("\n".join(str(p) for p in problems), problems[0].key)
        self.problems = problems


def check_config(raw: Any) -> dict[str, Any]:
    """Return the validated, normalised config (defaults filled in).

    Raises ConfigError for one mistake, ConfigProblems (one line each) for several: every key
    is checked before anything is reported, then the combinations of the values that passed.
    """
    problems: list[ConfigError] = []
    cfg = _check_section(SCHEMA, raw, "", problems)
    if isinstance(cfg.get("data", {}).get("providers"), dict):
        cfg["data"]["providers"], found = _check_providers(cfg["data"]["providers"])
        problems += found
    if not problems:  # combinations of values that passed their own checks
        problems = _check_combinations(cfg)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigProblems(problems)
    return cfg


def _check_rules(strat: dict[str, Any]) -> list[ConfigError]:
    """Return a ConfigError for each impossible pairing of the trend, canary and weight keys."""
    found = []
    if strat["trend_length"] and strat["trend_fast"] >= strat["trend_length"]:
        found.append(ConfigError(
            f"config error: strategy.trend_fast: {strat['trend_fast']} must be below "
            f"strategy.trend_length ({strat['trend_length']})",
            "strategy.trend_fast",
        ))  # fmt: skip
    if strat["canary"] and strat["canary_breadth"] > len(strat["canary"]):
        found.append(ConfigError(
            f"config error: strategy.canary_breadth: {strat['canary_breadth']} exceeds the "
            f"{len(strat['canary'])} canary assets",
            "strategy.canary_breadth",
        ))  # fmt: skip
    if strat["weight_cap"] <= 0:
        found.append(ConfigError(
            "config error: strategy.weight_cap: must be above 0 (1 for no cap)",
            "strategy.weight_cap",
        ))  # fmt: skip
    return found


def _hashed(cfg: dict[str, Any]) -> dict[str, Any]:
    """The values the config hash counts: all, but a RULE_KEYS key at its default."""
    strategy = cfg.get("strategy")
    if not isinstance(strategy, dict):
        return cfg
    schema = SCHEMA["strategy"]
    kept = {k: v for k, v in strategy.items() if k not in RULE_KEYS or v != schema[k].default}
    return {**cfg, "strategy": kept}


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        # 0.10, 0.1 and 1e-1 hash alike; integral floats are written without a fraction.
        return int(value) if value.is_integer() else repr(value)
    return value


def compute_config_hash(cfg: dict[str, Any]) -> str:
    """Return the SHA-256 of the canonical form (sorted keys, normalised numbers, defaults in;
    a RULE_KEYS strategy key at its default left out)."""
    canonical = _canonical(_hashed(cfg))
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return compute_sha256(text)


@dataclass(frozen=True)
class Config:
    """A workbook's checked configuration and where it lives."""

    workbook: Path
    values: dict[str, Any]
    source_path: Path | None = None
    # A notebook run by hand (no run id from the tick or `ops-runner run`): every ledger opened
    # through this config is an in-memory copy that vanishes with the process, no snapshot or
    # anchor is written, no order is sent and no alert goes out.
    preview: bool = False
    # A simulated clock's instant (the demo, a drill, a tick or run given --now): every ledger
    # opened through this config stamps its appends with it, kept after the head's stamp so
    # each transaction still has an instant of its own. None: the real UTC clock.
    simulated_now: datetime | None = None

    @property
    def hash(self) -> str:
        return compute_config_hash(self.values)

    # The sections, typed: computed from ``values`` at each read (cheap), so a Config made by
    # dataclasses.replace, or whose values a test edits in place, never shows stale settings.

    @property
    def workbook_name(self) -> str:
        return str(self.values["workbook_name"])

    @property
    def universe(self) -> UniverseSettings:
        return UniverseSettings.from_config(self.values)

    @property
    def data(self) -> DataSettings:
        return DataSettings.from_config(self.values)

    @property
    def calendar(self) -> CalendarSettings:
        return CalendarSettings.from_config(self.values)

    @property
    def broker(self) -> BrokerSettings:
        return BrokerSettings.from_config(self.values)

    @property
    def books(self) -> BooksSettings:
        return BooksSettings.from_config(self.values)

    @property
    def paths(self) -> PathsSettings:
        return PathsSettings.from_config(self.values)

    @property
    def backup(self) -> BackupSettings:
        return BackupSettings.from_config(self.values)

    @property
    def costs(self) -> CostsSettings:
        return CostsSettings.from_config(self.values)

    @property
    def research(self) -> ResearchSettings:
        return ResearchSettings.from_config(self.values)

    @property
    def risk(self) -> RiskSettings:
        return RiskSettings.from_config(self.values)

    @property
    def approvals(self) -> ApprovalsSettings:
        return ApprovalsSettings.from_config(self.values)

    @property
    def schedule(self) -> ScheduleSettings:
        return ScheduleSettings.from_config(self.values)

    @property
    def alerts(self) -> AlertsSettings:
        return AlertsSettings.from_config(self.values)

    @property
    def secrets(self) -> SecretsSettings:
        return SecretsSettings.from_config(self.values)

    def path(self, name: str) -> Path:
        """Return the absolute path of ``paths.<name>``, relative paths taken from the workbook."""
        value = Path(self.paths.of(name))
        return value if value.is_absolute() else self.workbook / value

    @property
    def primary_source(self) -> str:
        """The source decisions are made from (``data.primary``). Raises ConfigError, one line
        saying how to name one, when the workbook has none yet."""
        source = self.data.primary
        if not source:
            raise ConfigError(
                "config error: data.primary: not set, so there are no prices to decide from; "
                "fetch or import them under a source name (`ops-runner data fetch --source "
                "NAME` or `ops-runner data import PATH --layout L --name NAME`), then set "
                "data.primary: NAME in config.yaml",
                "data.primary",
            )
        return str(source)

    @property
    def simulated(self) -> bool:
        """True for a broker that is a simulator: ``broker.kind: sim``, or the loopback TWS
        simulator (``kind: ib``, ``simulator: true``, paper, on 127.0.0.1). Only then do a
        fixed clock and in-process notebook runs make sense: never for a real account."""
        return self.broker.simulated

    @property
    def universe_symbols(self) -> list[str]:
        """Risk assets, then the defensive asset, then the cash proxy (if any)."""
        return self.universe.symbols


# libyaml's parser where PyYAML was built with it (its wheels are): the same safe loading, about
# a tenth of the time. A config is read by every tick, CLI command and notebook, and the pure
# Python parser took 28 ms on the template.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str) -> Any:
    """Return the YAML document in ``text``, loaded safely (plain data, no tags run).
    Raises yaml.YAMLError."""
    return yaml.load(text, Loader=_YAML_LOADER)  # a safe loader, C or Python


def load_config_text(text: str, workbook: Path, source: Path | None = None) -> Config:
    """Return the Config parsed from YAML text. Raises ConfigError with one line."""
    where = source or "config"
    try:
        raw = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"config error: {where}{line}: {problem}; fix the YAML syntax") from None
    if raw is None:
        raise ConfigError(f"config error: {where} is empty; copy templates/config.yaml")
    return Config(workbook=workbook, values=check_config(raw), source_path=source)


def resolve_workbook(path: str | os.PathLike[str] | None = None) -> Path:
    """Return the workbook folder: the argument, else $OPS_RUNNER_HOME, else the current folder."""
    chosen = path or os.environ.get(HOME_ENV) or os.getcwd()
    return Path(chosen).expanduser().resolve()


def load_config(workbook: str | os.PathLike[str] | None = None) -> Config:
    """Return the workbook's checked Config. Raises WorkbookError or ConfigError."""
    root = resolve_workbook(workbook)
    source = root / CONFIG_NAME
    if not source.is_file():
        raise WorkbookError(
            f"no {CONFIG_NAME} in {root}; run `ops-runner init --workbook {root}` first"
        )
    return load_config_text(source.read_text(encoding="utf-8"), root, source)


DEMO_TEMPLATE = "demo"
# The demo workbook is the production template with these lines changed: the SYNTHETIC
# sample market as its source. No other workbook ever gets it by default.
DEMO_LINES = {
    "workbook_name: demo\n": "workbook_name: demo  # SYNTHETIC sample market: no real prices\n",
    "  primary: null                     # REQUIRED: the source prices come from, a name in the\n"
    "                                    # price store (`ops-runner data list`); only the demo\n"
    "                                    # workbook uses `sample`, the SYNTHETIC sample market\n":
    "  primary: sample                   # the SYNTHETIC sample market (a demo workbook only)\n",
}  # fmt: skip


PRESET_KEY = "extends"  # a strategy preset names the config file beside it that it overlays
_TOP_LEVEL_KEY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")


def _split_sections(text: str) -> tuple[str, dict[str, str]]:
    """Return the header (comment lines before the first key) and each top-level section's
    text by key, in file order; a column-0 comment belongs to the section below it."""
    header: list[str] = []
    sections: dict[str, list[str]] = {}
    pending: list[str] = []
    current: list[str] | None = None
    for line in text.splitlines():
        key = _TOP_LEVEL_KEY.match(line)
        if key:
            current = sections.setdefault(key.group(1), [])
            current.extend(pending)
            pending = []
            current.append(line)
        elif current is None:
            header.append(line)
        elif line.startswith("#"):
            pending.append(line)
        else:
            current.append(line)
    if current is not None:
        current.extend(pending)
    return "\n".join(header).strip("\n"), {k: "\n".join(v).strip("\n") for k, v in sections.items()}


def compute_preset_text(text: str, folder: Path, where: Path | str = "config") -> str:
    """Return the config text of ``text`` with its ``extends: <file>`` resolved: the base file
    (in ``folder``) with each top-level section the preset writes put in place of the base's,
    under the preset's own header comment. Text without ``extends`` is returned unchanged.

    A preset carries only what makes its strategy (name, universe, strategy); everything else
    stays the base's, comments included, so the presets never fall behind the base config.
    Raises ConfigError with one line."""
    header, sections = _split_sections(text)
    if PRESET_KEY not in sections:
        return text
    base_name = parse_yaml(sections.pop(PRESET_KEY)).get(PRESET_KEY)
    if not isinstance(base_name, str) or not (folder / base_name).is_file():
        raise ConfigError(
            f"config error: {where}: {PRESET_KEY}: {base_name!r} is not a config file beside it"
        )
    base_header, merged = _split_sections((folder / base_name).read_text(encoding="utf-8"))
    if PRESET_KEY in merged:
        raise ConfigError(f"config error: {where}: {base_name} extends another file; one level")
    unknown = sorted(set(sections) - set(merged))
    if unknown:
        raise ConfigError(f"config error: {where}: {unknown[0]!r} is not a section of {base_name}")
    merged.update(sections)
    return "\n\n".join([f"{header}\n#\n{base_header}", *merged.values()]) + "\n"


def read_config_text(path: Path) -> str:
    """Return the config text of the file at ``path``, a strategy preset resolved."""
    return compute_preset_text(path.read_text(encoding="utf-8"), path.parent, path)


def compute_template_text(template: str) -> str:
    """Return the config.yaml text of ``template`` (a file in templates/, or ``demo``: the
    production template on the SYNTHETIC sample market). Raises WorkbookError."""
    if template == DEMO_TEMPLATE:
        text = (TEMPLATES / "config.yaml").read_text(encoding="utf-8")
        for old, new in DEMO_LINES.items():
            if old not in text:  # a template edit that broke the demo: say so, never guess
                raise WorkbookError(f"templates/config.yaml no longer has {old.strip()!r}")
            text = text.replace(old, new, 1)
        return text
    source = TEMPLATES / f"{template}.yaml"
    if not source.is_file():
        choices = sorted({*(p.stem for p in TEMPLATES.glob("*.yaml")), DEMO_TEMPLATE})
        raise WorkbookError(f"no template {template!r}; choose one of: {', '.join(choices)}")
    return read_config_text(source)


def _read_secrets_file(path: Path) -> dict[str, str]:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise SecretError(f"secrets file {path} does not exist; create it with mode 0600") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SecretError(
            f"secrets file {path} is readable by others (mode {stat.S_IMODE(mode):04o}); "
            f"run `chmod 600 {path}`"
        )
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name.strip().upper()] = value.strip()
    return values


def load_secret(
    cfg: Config, name: str, lookup: Callable[[str], str | None] = os.environ.get
) -> str:
    """Return secret NAME from $OPS_RUNNER_<NAME> or the 0600 secrets file. Raises SecretError.

    The value is never logged, printed or written to an artifact by this package.
    """
    env_name = SECRET_ENV_PREFIX + name.upper()
    value = lookup(env_name)
    if value:
        return value
    file_value = cfg.secrets.file
    if file_value:
        path = Path(file_value)
        path = path if path.is_absolute() else cfg.workbook / path
        found = _read_secrets_file(path).get(name.upper())
        if found:
            return found
    raise SecretError(
        f"secret {name.upper()} is not set; export {env_name} or add {name.upper()}=... to the "
        "0600 file named by secrets.file"
    )


def mask_account(account: str | None) -> str:
    """Return an account id safe to show: the first two and last two characters survive."""
    if not account:
        return "(none)"
    if len(account) <= 4:
        return "*" * len(account)
    return account[:2] + "*" * (len(account) - 4) + account[-2:]
