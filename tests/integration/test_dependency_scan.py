"""The weekly dependency scan from real ticks and by hand, with a real pip-audit child process
that never leaves this machine: pypi.org is a server on 127.0.0.1 (``advisory_world``).

Instants: Friday 2025-11-21 closes 16:00 ET = 21:00Z, the week's last session, so its weekly
slots open at 21:30Z; Thursday is not the week's last session.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import socket
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from advisory_world import (
    VULNERABLE,
    WITHDRAWN,
    Advisories,
    make_authority,
    point_at,
    serve_advisories,
)
from conftest import make_workbook as make_sample_world

from ops_runner.cli import main
from ops_runner.core.events import EventKind, State, Trigger
from ops_runner.ledger import open_ledger
from ops_runner.ledger.states import read_state
from ops_runner.ops import dependency_scan
from ops_runner.ops.checks import approve_baseline
from ops_runner.ops.tick import tick
from ops_runner.workbook.config import Config, load_config

pytestmark = pytest.mark.subprocess  # every scan is a pip-audit child process

FRIDAY = datetime(2025, 11, 21, 21, 35, tzinfo=UTC)  # the week's last close + 35 min
THURSDAY = datetime(2025, 11, 20, 21, 35, tzinfo=UTC)  # not the week's last session
SLOT = "dependency_scan:2025-11-21"
ON = {"schedule.weekly_dependency_scan": True}
# Only the jobs under test: no audit notebook, backup or investigation after them.
QUIET = {"schedule.weekly_audit": False, "schedule.weekly_backup": False,
         "schedule.investigate_incidents": False}  # fmt: skip


@pytest.fixture(scope="module")
def authority(tmp_path_factory) -> tuple[ssl.SSLContext, Path]:
    """A CA of the test's own and pypi.org's certificate from it; the CA's PEM file."""
    return make_authority(tmp_path_factory.mktemp("ca"))


def _point_at(monkeypatch: pytest.MonkeyPatch, proxy: str, pem: Path) -> None:
    """The environment pointed at ``proxy`` (advisory_world.point_at), undone after the test."""
    wanted: dict[str, str] = dict(os.environ)
    point_at(wanted, proxy, pem)
    for name in set(os.environ) - set(wanted):
        monkeypatch.delenv(name)
    for name, value in wanted.items():
        if os.environ.get(name) != value:
            monkeypatch.setenv(name, value)


@pytest.fixture
def advisories(authority, monkeypatch) -> Iterator[Advisories]:
    """pypi.org on 127.0.0.1 for this test, the environment pointed at it."""
    tls, pem = authority
    with serve_advisories(tls) as world:
        _point_at(monkeypatch, world.proxy, pem)
        yield world


@pytest.fixture
def refused(authority, monkeypatch) -> str:
    """A port on 127.0.0.1 that nothing listens on any more: the service unreachable."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    _point_at(monkeypatch, proxy, authority[1])
    return proxy


def make_workbook(root: Path, **changes) -> Config:
    """The sample workbook with ``changes`` (conftest's factory), its baseline approved."""
    made = make_sample_world(root, **changes)
    cfg = load_config(made)
    approve_baseline(cfg, "reviewed")
    return cfg


def events(cfg: Config, kind) -> list:
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return list(ledger.events(kind=str(kind)))


def head(cfg: Config):
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return ledger.head()


def state(cfg: Config) -> State:
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        return read_state(ledger).state


def scan_alerts(cfg: Config) -> list[dict]:
    """The AlertSent records the scan sent itself (keyed by its record)."""
    prefix = f"{EventKind.ALERT_SENT}:{EventKind.DEPENDENCY_SCAN_RECORDED}:"
    return [dict(e.payload) for e in events(cfg, EventKind.ALERT_SENT) if e.key.startswith(prefix)]


def completion(cfg: Config, slot: str = SLOT) -> dict:
    (done,) = [e.payload for e in events(cfg, EventKind.JOB_COMPLETED) if e.payload["slot"] == slot]
    return dict(done)


def installed(name: str) -> str:
    return importlib.metadata.version(name)


def asked_pins(world: Advisories) -> list[str]:
    return sorted(f"{name}=={version}" for name, version in world.asked)


# -- a vulnerable pin -----------------------------------------------------------------------


def test_dependency_scan_when_a_pin_is_vulnerable_records_the_finding_alerts_once_state_unchanged(
    tmp_path, advisories
):
    cfg = make_workbook(tmp_path, **ON, **QUIET)

    result = tick(cfg, now=FRIDAY)

    assert [line.split()[0] for line in result.ran] == ["daily_checks:2025-11-21", SLOT]
    (scan,) = [e.payload for e in events(cfg, EventKind.DEPENDENCY_SCAN_RECORDED)]
    assert scan["result"] == "VULNERABLE" and scan["slot"] == SLOT
    assert scan["findings"] == [
        {
            "package": VULNERABLE,
            "version": installed("PyYAML"),
            "advisory": "PYSEC-2099-1",
            "aliases": ["CVE-2099-0001", "GHSA-test-test-test"],
            "fix_versions": ["6.0.99", "7.0"],
            "service": "pypi",
            "summary": "Made-up: arbitrary code execution in the test's YAML loader",
        }
    ]  # the withdrawn advisory of six is not a finding
    # every package the scan names was asked about, once, and nothing else: not the workbook's
    assert scan["packages"] == asked_pins(advisories)
    assert len(set(advisories.asked)) == len(advisories.asked) == scan["audited"]
    assert f"{VULNERABLE}=={installed('PyYAML')}" in scan["packages"]
    assert f"{WITHDRAWN}=={installed('six')}" in scan["packages"]
    assert not any(pin.startswith("ops-runner==") for pin in scan["packages"])
    assert scan["service"] == "pypi" and scan["tool"] == f"pip-audit {installed('pip-audit')}"
    (alert,) = scan_alerts(cfg)
    assert alert["severity"] == "warning"
    assert alert["subject"] == f"dependency scan {SLOT}: 1 known vulnerabilities in 1 package(s)"
    assert alert["channels"]["log"] == "sent"
    log_text = (cfg.workbook / cfg.alerts.log_file).read_text()
    assert "PYSEC-2099-1" in log_text and "fixed in 6.0.99, 7.0" in log_text
    assert state(cfg) is State.RUN
    assert events(cfg, EventKind.STATE_CHANGED) == events(cfg, EventKind.INCIDENT_OPENED) == []
    done = completion(cfg)
    assert done["outcome"] == (
        f"VULNERABLE: pyyaml {installed('PyYAML')} PYSEC-2099-1 (fixed in 6.0.99, 7.0); alerted"
    )
    assert done["outputs"]["findings"] == 1 and done["outputs"]["incident"] is None


def test_dependency_scan_when_safe_mode_is_configured_a_vulnerable_pin_is_an_incident_and_safe_mode(
    tmp_path, advisories
):
    cfg = make_workbook(tmp_path, **ON, **QUIET, **{"schedule.dependency_scan_safe_mode": True})

    result = tick(cfg, now=FRIDAY)

    assert result.state is State.SAFE_MODE
    (scan,) = events(cfg, EventKind.DEPENDENCY_SCAN_RECORDED)
    assert scan.payload["result"] == "VULNERABLE"
    (opened,) = events(cfg, EventKind.INCIDENT_OPENED)
    digest = scan.key.rsplit(":", 1)[1]
    assert opened.payload["incident_id"] == f"dependency-scan-dependency_scan-2025-11-21-{digest}"
    assert any("PYSEC-2099-1" in line for line in opened.payload["evidence"])
    (changed,) = events(cfg, EventKind.STATE_CHANGED)
    assert (changed.payload["from"], changed.payload["to"], changed.payload["trigger"]) == (
        "RUN", "SAFE_MODE", str(Trigger.INCIDENT))  # fmt: skip
    # one alert: the tick's, for the incident and SAFE_MODE; no warning besides it
    assert scan_alerts(cfg) == []
    pumped = [e.payload for e in events(cfg, EventKind.ALERT_SENT)
              if opened.seq in e.payload["events"]]  # fmt: skip
    assert len(pumped) == 1 and changed.seq in pumped[0]["events"]
    assert pumped[0]["severity"] == "critical" and pumped[0]["subject"].startswith("SAFE_MODE: ")
    incident = opened.payload["incident_id"]
    assert completion(cfg)["outcome"].endswith(f"incident {incident}, SAFE_MODE")


# -- no answer ------------------------------------------------------------------------------


def test_dependency_scan_when_the_service_refuses_records_a_warning_and_alerts_not_clean(
    tmp_path, refused
):
    cfg = make_workbook(tmp_path, **ON, **QUIET)

    result = tick(cfg, now=FRIDAY)

    (line,) = [line for line in result.ran if line.startswith(SLOT)]
    assert line.startswith(f"{SLOT} NOT SCANNED, not clean: the advisory service (pypi) could not")
    (scan,) = [e.payload for e in events(cfg, EventKind.DEPENDENCY_SCAN_RECORDED)]
    assert (scan["result"], scan["audited"], scan["findings"]) == ("NOT_SCANNED", 0, [])
    assert scan["reason"].startswith("the advisory service (pypi) could not be reached: ")
    assert len(scan["packages"]) > 100  # what it meant to scan is on the record
    (alert,) = scan_alerts(cfg)
    assert alert["severity"] == "warning"
    assert alert["subject"] == f"dependency scan {SLOT} did not happen: nothing was audited"
    done = completion(cfg)
    assert done["done"] is True and done["outcome"].startswith("NOT SCANNED, not clean")
    assert "CLEAN" not in done["outcome"] and done["outputs"]["result"] == "NOT_SCANNED"
    assert state(cfg) is State.RUN


def test_dependency_scan_when_the_service_never_answers_is_not_scanned_after_the_timeout(
    tmp_path, authority, monkeypatch
):
    cfg = make_workbook(tmp_path, **ON, **QUIET)
    with socket.socket() as silent:  # accepts connections into its backlog, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        _point_at(monkeypatch, f"http://127.0.0.1:{silent.getsockname()[1]}", authority[1])
        monkeypatch.setattr(dependency_scan, "REQUEST_TIMEOUT_SECONDS", 1)
        with open_ledger(cfg) as ledger:
            outcome = dependency_scan.record_dependency_scan(cfg, ledger, SLOT, timeout=60)

    assert outcome.payload["result"] == "NOT_SCANNED" and outcome.created
    assert "could not be reached" in outcome.payload["reason"]
    assert re.search(r"time[d ]?out", outcome.payload["reason"], re.IGNORECASE)
    assert len(scan_alerts(cfg)) == 1


def test_dependency_scan_when_the_service_knows_no_package_is_not_scanned_not_clean(
    tmp_path, advisories
):
    advisories.known = False  # every release a 404: pip-audit skips each and says "no known"
    cfg = make_workbook(tmp_path, **ON, **QUIET)

    tick(cfg, now=FRIDAY)

    (scan,) = [e.payload for e in events(cfg, EventKind.DEPENDENCY_SCAN_RECORDED)]
    assert scan["result"] == "NOT_SCANNED" and scan["audited"] == 0
    assert len(scan["skipped"]) == len(scan["packages"]) == len(advisories.asked)
    assert scan["reason"].startswith(
        f"the advisory service (pypi) audited none of {len(scan['packages'])} packages: "
        "Dependency not found on PyPI"
    )
    assert len(scan_alerts(cfg)) == 1
    assert completion(cfg)["outcome"].startswith("NOT SCANNED, not clean")


# -- clean, once a week, only when on -------------------------------------------------------


def test_dependency_scan_when_clean_records_zero_findings_no_alert_once_per_week_slot(
    tmp_path, advisories
):
    advisories.vulnerable = False
    cfg = make_workbook(tmp_path, **ON, **QUIET)

    thursday = tick(cfg, now=THURSDAY)
    assert [line.split()[0] for line in thursday.ran] == ["daily_checks:2025-11-20"]
    assert advisories.asked == []

    result = tick(cfg, now=FRIDAY)

    (scan,) = [e.payload for e in events(cfg, EventKind.DEPENDENCY_SCAN_RECORDED)]
    assert (scan["result"], scan["findings"], scan["skipped"]) == ("CLEAN", [], [])
    assert scan["audited"] == len(scan["packages"]) == len(advisories.asked)
    assert scan_alerts(cfg) == []
    assert f"{SLOT} CLEAN: {scan['audited']} packages audited, no known vulnerability" in result.ran
    assert state(cfg) is State.RUN

    before, asked = head(cfg), len(advisories.asked)
    again = tick(cfg, now=FRIDAY)
    assert again.ran == () and head(cfg) == before  # the week's scan, once
    assert len(advisories.asked) == asked


def test_dependency_scan_when_not_switched_on_the_tick_never_runs_it(tmp_path, advisories):
    cfg = make_workbook(tmp_path, **QUIET)  # the template's default: off
    assert cfg.values["schedule"]["weekly_dependency_scan"] is False

    result = tick(cfg, now=FRIDAY)

    assert [line.split()[0] for line in result.ran] == ["daily_checks:2025-11-21"]
    assert events(cfg, EventKind.DEPENDENCY_SCAN_RECORDED) == []
    assert advisories.asked == []


# -- by hand --------------------------------------------------------------------------------


def test_run_dependency_scan_when_by_hand_obeys_the_tick_s_gates_and_records_once(
    tmp_path, advisories, capsys
):
    off = make_workbook(tmp_path / "off", **QUIET)
    wb = ["--workbook", str(off.workbook), "run", "dependency_scan", "--as-of", "2025-11-21"]
    before = head(off)
    assert main([*wb, "--now", "2025-11-21T21:35:00Z"]) == 1
    refusal = capsys.readouterr().err.strip()
    assert "schedule.weekly_dependency_scan is off" in refusal and len(refusal.splitlines()) == 1
    assert head(off) == before and advisories.asked == []

    cfg = make_workbook(tmp_path / "on", **ON, **QUIET)
    wb[1] = str(cfg.workbook)
    assert main([*wb, "--now", "2025-11-21T21:10:00Z"]) == 1  # before the slot opens
    assert f"{SLOT} opens at 2025-11-21T21:30:00Z" in capsys.readouterr().err
    assert advisories.asked == []

    assert main([*wb, "--now", "2025-11-21T21:35:00Z"]) == 0
    first = capsys.readouterr().out.strip()
    assert first.startswith(f"{SLOT} VULNERABLE: pyyaml ") and first.endswith("; alerted")
    # again by hand: the same answer is not recorded or alerted twice
    assert main([*wb, "--now", "2025-11-21T21:40:00Z"]) == 0
    assert "recorded before at event" in capsys.readouterr().out
    assert len(events(cfg, EventKind.DEPENDENCY_SCAN_RECORDED)) == 1
    assert len(scan_alerts(cfg)) == 1
    # and the tick, which sees the slot done, does not scan again
    asked = len(advisories.asked)
    later = tick(cfg, now=FRIDAY)
    assert not any(line.startswith(SLOT) for line in later.ran), later.ran
    assert len(advisories.asked) == asked
