"""The typed config sections: each one says what the checked values say, key by key."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from ops_runner.market.calendar import MarketCalendar
from ops_runner.ops.schedule import Job, compute_session_slots
from ops_runner.workbook.config import (
    _PROVIDER_FIELDS,
    Config,
    compute_template_text,
    load_config_text,
)
from ops_runner.workbook.settings import ProviderSettings

ROOT = Path("/workbook")

# A config whose every section differs from the template's defaults.
CHANGED = {
    "workbook_name": "desk",
    "universe": {"risk": ["SPY", "EFA"], "defensive": "IEF", "cash_proxy": "SHV"},
    "data": {
        "primary": "av",
        "secondary": "ti",
        "providers": {
            "av": {"vendor": "alphavantage", "timeout_seconds": 12, "retries": 1},
            "ti": {"vendor": "tiingo", "base_url": "https://example.test/api",
                   "min_interval_seconds": 1.5},
        },
        "fetch_start": "2010-02-01",
        "fetch_overlap_sessions": 9,
    },
    "calendar": {"extra_closed": ["2025-01-09", "2018-12-05"], "covered_through": "2026-12-31"},
    "broker": {
        "kind": "ib",
        "mode": "live",
        "host": "10.0.0.5",
        "port": 7496,
        "client_ids": {"orders": 21, "readonly": 22},
        "account": "U7654321",
        "sim_faults": {"late_dividends": {"VEU": 2}},
        "sim_account": {"dividend_pay_lag_sessions": 4, "withholding_rate": 0.15,
                        "interest_rate": -0.01, "monthly_fee": 10},
        "flex": {"enabled": True, "base_url": "https://flex.example.test"},
        "client": "ib_insync",
        "connect_timeout_seconds": 3,
        "request_timeout_seconds": 7.5,
        "retry": {"attempts": 5, "wait_seconds": 0},
    },
    "books": {"statements": "price_store", "dividend_pay_lag_sessions": 2,
              "withholding_rate": 0.3, "pay_grace_sessions": 9},
    "paths": {"ledger": "/srv/ledger", "reports": "out", "data": "prices",
              "kill_switch": "KILL", "broker": "ib", "anchor": "anchor.json",
              "backups": "/srv/backups"},
    "backup": {"keep": 3},
    "costs": {"commission_per_share": 0.0035, "commission_min": 0, "slippage_bps": 5,
              "slippage_band_bps": 15, "slippage_bands": {"EFA": 25.0}},
    "research": {"initial_cash": 250000, "whole_shares": False},
    "risk": {"max_drawdown": 0.1, "risk_off": "cash"},
    "approvals": {"default_ttl_minutes": 15},
    "schedule": {
        "decision_delay_minutes": 45,
        "submission_window": {"start": "07:30", "end": "09:10"},
        "reconciliation_delay_minutes": 20,
        "deadlines": {"data_qa": 40, "decision": 50, "execution": 70, "reconciliation": 80,
                      "slippage_report": 90},
        "max_clock_skew_seconds": 2,
        "missed_decision": "skip_cycle",
        "heartbeat_max_gap_minutes": 30,
        "cell_timeout_seconds": 300,
        "notebook_deadline_minutes": 12,
        "tick_deadline_minutes": 25,
        "weekly_audit": False,
        "weekly_backup": True,
        "investigate_incidents": False,
    },
    "alerts": {
        "log_file": "/var/log/ops.log",
        "email": {"to": "a@example.test, b@example.test", "sender": "desk@example.test",
                  "host": "smtp.example.test", "port": 587, "starttls": True,
                  "username": "desk", "timeout_seconds": 20},
        "webhook": {"url": "https://hooks.example.test/x", "timeout_seconds": 5},
        "push": {"channels": ["ntfy_phone", "slack_ops"], "timeout_seconds": 7},
    },
    "secrets": {"file": "secrets.env"},
}  # fmt: skip


def template(name: str) -> Config:
    return load_config_text(compute_template_text(name), ROOT)


def changed() -> Config:
    values = yaml.safe_load(compute_template_text("config"))
    for section, keys in CHANGED.items():
        if isinstance(keys, dict):
            values[section].update(keys)
        else:
            values[section] = keys
    return load_config_text(yaml.safe_dump(values), ROOT)


def scanning() -> Config:
    """``changed`` with the weekly dependency scan on, its findings meaning SAFE_MODE."""
    values = yaml.safe_load(compute_template_text("config"))
    values["schedule"].update(weekly_dependency_scan=True, dependency_scan_safe_mode=True)
    return load_config_text(yaml.safe_dump(values), ROOT)


CONFIGS = {"demo": lambda: template("demo"), "config": lambda: template("config"),
           "changed": changed, "scanning": scanning}  # fmt: skip


@pytest.fixture(params=sorted(CONFIGS), scope="module")
def cfg(request) -> Config:
    return CONFIGS[request.param]()


def plain(value):
    """A settings object as the nested dict and list shape of config.yaml's values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    "section",
    ["universe", "calendar", "broker", "books", "paths", "backup", "costs", "research", "risk",
     "approvals", "alerts", "secrets"],
)  # fmt: skip
def test_section_when_typed_reads_every_key_as_checked(cfg, section):
    raw = cfg.values[section]
    typed = plain(getattr(cfg, section))
    assert typed == raw
    assert list(typed) == list(raw)  # no key left out, none added


def test_data_when_typed_fills_each_provider_as_checked(cfg):
    raw, data = cfg.values["data"], cfg.data
    assert (data.primary, data.secondary) == (raw["primary"], raw["secondary"])
    assert data.fetch_start == raw["fetch_start"]
    assert data.fetch_overlap_sessions == raw["fetch_overlap_sessions"]
    assert {name: plain(p) for name, p in data.providers.items()} == raw["providers"]
    assert data.fetched == [s for s in data.sources if s and s in raw["providers"]]


def test_schedule_when_typed_reads_every_key_as_checked(cfg):
    raw, sched = cfg.values["schedule"], cfg.schedule
    minutes = {k: timedelta(minutes=v) for k, v in raw["deadlines"].items()}
    assert sched.decision_delay == timedelta(minutes=raw["decision_delay_minutes"])
    assert sched.reconciliation_delay == timedelta(minutes=raw["reconciliation_delay_minutes"])
    assert (sched.window_start, sched.window_end) == tuple(raw["submission_window"].values())
    assert sched.deadlines == minutes
    for key in ("timezone", "max_clock_skew_seconds", "missed_decision", "cell_timeout_seconds",
                "heartbeat_max_gap_minutes", "notebook_deadline_minutes",
                "tick_deadline_minutes", "investigate_incidents",
                "dependency_scan_safe_mode"):  # fmt: skip
        assert getattr(sched, key) == raw[key], key
    weekly = ("audit", "backup", "dependency_scan")
    assert sched.weekly == tuple(j for j in weekly if raw[f"weekly_{j}"])


def test_dependency_scan_when_not_configured_is_off_and_when_on_follows_the_backup():
    default = template("config").schedule
    assert default.weekly == ("audit", "backup") and default.dependency_scan_safe_mode is False
    on = scanning().schedule
    assert on.weekly == ("audit", "backup", "dependency_scan")
    assert on.dependency_scan_safe_mode is True


def test_scalars_when_typed_match_the_checked_values(cfg):
    uni = cfg.values["universe"]
    assert cfg.workbook_name == cfg.values["workbook_name"]
    assert cfg.universe_symbols == [*uni["risk"], uni["defensive"], *(
        [uni["cash_proxy"]] if uni["cash_proxy"] else [])]  # fmt: skip
    for name, written in cfg.values["paths"].items():
        assert cfg.path(name) == (Path(written) if written.startswith("/") else ROOT / written)


def test_changed_config_when_typed_keeps_the_kinds_the_code_uses():
    cfg = changed()
    broker = cfg.broker
    assert broker.port == 7496 and type(broker.port) is int
    assert (broker.client_ids.of("orders"), broker.client_ids.of("readonly")) == (21, 22)
    assert broker.connect_timeout_seconds == 3.0 and type(broker.connect_timeout_seconds) is float
    assert broker.retry.wait_seconds == 0.0 and type(broker.retry.wait_seconds) is float
    assert type(broker.sim_account.monthly_fee) is float and broker.sim_account.monthly_fee == 10
    assert broker.flex.enabled is True and broker.simulated is False
    costs = cfg.costs
    assert [type(v) for v in (costs.commission_min, costs.slippage_bps)] == [float, float]
    assert costs.slippage_bands == {"EFA": 25.0}
    assert cfg.research.initial_cash == 250000.0 and type(cfg.research.initial_cash) is float
    assert cfg.calendar.extra_closed == (date(2018, 12, 5), date(2025, 1, 9))
    assert cfg.calendar.covered_through == date(2026, 12, 31)
    assert cfg.data.fetch_start == date(2010, 2, 1)
    assert cfg.data.providers["av"] == ProviderSettings("alphavantage", None, 12.0, 1, None)
    assert cfg.data.providers["ti"].min_interval_seconds == 1.5
    assert cfg.data.fetched == ["av", "ti"] and cfg.schedule.fetch is True
    assert cfg.approvals.default_ttl == timedelta(minutes=15)
    assert cfg.alerts.email.port == 587 and cfg.alerts.webhook.timeout_seconds == 5
    assert cfg.alerts.push.channels == ("ntfy_phone", "slack_ops")
    assert cfg.alerts.push.timeout_seconds == 7
    assert cfg.secrets.file == "secrets.env" and cfg.backup.keep == 3
    assert cfg.schedule.weekly == ("backup",) and cfg.schedule.investigate_incidents is False
    assert cfg.universe_symbols == ["SPY", "EFA", "IEF", "SHV"]


def test_weekly_slots_when_typed_are_jobs():
    cfg = template("config")
    slots = compute_session_slots(MarketCalendar(), cfg.schedule, date(2025, 1, 10))  # a Friday
    weekly = [s.job for s in slots if s.job in (Job.AUDIT, Job.BACKUP)]
    assert weekly == [Job.AUDIT, Job.BACKUP] and all(type(j) is Job for j in weekly)


def test_provider_when_only_its_vendor_is_named_takes_the_schema_defaults():
    defaults = {k: f.default for k, f in _PROVIDER_FIELDS.items() if k != "vendor"}
    assert plain(ProviderSettings.from_config({"vendor": "ib"})) == {"vendor": "ib", **defaults}


@pytest.mark.parametrize("change", ["replace", "in place"])
def test_sections_when_values_change_follow_them(change):
    cfg = template("demo")
    if change == "replace":
        values = {**cfg.values, "backup": {"keep": 2}, "broker": {**cfg.values["broker"],
                                                                  "kind": "ib"}}  # fmt: skip
        cfg = dataclasses.replace(cfg, values=values)
    else:
        cfg.values["backup"]["keep"] = 2
        cfg.values["broker"]["kind"] = "ib"
    assert cfg.backup.keep == 2 and cfg.broker.kind == "ib"
