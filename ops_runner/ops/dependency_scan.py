"""The weekly dependency scan (runbook 6, weekly, optional): pip-audit over the workbook's
environment, its answer recorded in the ledger.

With ``schedule.weekly_dependency_scan`` on, the tick runs it after each week's last close, in
the slot of the audit and the backup; ``ops-runner run dependency_scan`` runs it by hand under
the same gates. The scan lists the distributions installed in the running environment (the
workbook's own package left out: a PyPI project of that name would be someone else's), hands
them to pip-audit pinned and unresolved (``--no-deps --disable-pip``: nothing is installed and
pip is not run) in a child process, and reads its JSON. pip-audit asks PyPI's vulnerability
service (``https://pypi.org/pypi/<name>/<version>/json``) through ``requests``, so the
environment's ``HTTPS_PROXY`` and ``REQUESTS_CA_BUNDLE`` apply to it as to pip.

One ``DependencyScanRecorded`` per slot and answer:
- VULNERABLE: a pinned version with a known advisory; each one a finding (package, version,
  advisory, fix versions, the service). A warning alert and no state change, unless
  ``schedule.dependency_scan_safe_mode`` says so: then an incident and SAFE_MODE, alerted by
  the tick's pending alerts.
- NOT_SCANNED: the advisory service did not answer (refused, timed out, an error) or knew
  none of the packages: a warning record and a warning alert, never a clean pass.
- CLEAN: packages audited and no advisory; those the service does not know are named.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from ops_runner.core.canonical import canonical_json
from ops_runner.core.errors import OpsError
from ops_runner.core.events import EventKind, Trigger
from ops_runner.core.hashing import compute_sha256
from ops_runner.core.text import compute_one_line
from ops_runner.ledger import Ledger
from ops_runner.ledger.states import apply_trigger, incident_event
from ops_runner.runtime.alerts import Alert, Severity, send_alert
from ops_runner.workbook.config import Config

log = logging.getLogger(__name__)

SERVICE = "pypi"  # pip-audit's PyPI vulnerability service (osv.dev is the other)
TOOL = "pip-audit"
OWN_DISTRIBUTION = "ops-runner"  # the workbook's package: not a PyPI project of ours
REQUEST_TIMEOUT_SECONDS = 15  # one answer of the service
SCAN_TIMEOUT_SECONDS = 600  # the whole scan; the tick's deadline is 40 minutes
REASON_LIMIT = 300  # characters of pip-audit's last word kept in a NOT_SCANNED reason
SUMMARY_LIMIT = 200  # characters of an advisory's summary kept in a finding
ALERT_LIMIT = 20  # findings listed in an alert's body; the count says how many in all
# What requests and urllib3 say when a service cannot be reached or does not answer in time.
_UNREACHABLE = re.compile(
    r"ConnectionError|ProxyError|Timeout|timed out|Could not connect|Max retries exceeded|"
    r"Connection refused|Name or service not known|network may be blocking",
    re.IGNORECASE,
)


class ScanResult(StrEnum):
    """What a dependency scan found."""

    CLEAN = "CLEAN"
    VULNERABLE = "VULNERABLE"
    NOT_SCANNED = "NOT_SCANNED"


class DependencyScanError(OpsError):
    """A scan's record that the ledger did not keep."""


@dataclass(frozen=True)
class ScanOutcome:
    """The DependencyScanRecorded payload, its event's sequence number, the incident it opened
    (None: no safe mode, or recorded before) and whether this call recorded it."""

    payload: dict[str, Any]
    seq: int
    incident_id: str | None
    created: bool

    @property
    def line(self) -> str:
        """The job's outcome line: what was scanned and what it led to."""
        payload = self.payload
        result = payload["result"]
        if result == ScanResult.NOT_SCANNED:
            head = f"NOT SCANNED, not clean: {payload['reason']}"
        elif result == ScanResult.CLEAN:
            head = f"CLEAN: {payload['audited']} packages audited, no known vulnerability"
            if skipped := len(payload["skipped"]):
                head += f" ({skipped} unknown to the service, not audited)"
        else:
            named = ", ".join(_finding_words(f) for f in payload["findings"][:3])
            more = len(payload["findings"]) - 3
            head = f"VULNERABLE: {named}" + (f" (+{more} more)" if more > 0 else "")
        if not self.created:
            return f"{head}; recorded before at event {self.seq}"
        if self.incident_id is not None:
            return f"{head}: incident {self.incident_id}, SAFE_MODE"
        return head + ("" if result == ScanResult.CLEAN else "; alerted")


def _finding_words(finding: dict[str, Any]) -> str:
    fixes = ", ".join(finding["fix_versions"]) or "no fix yet"
    return f"{finding['package']} {finding['version']} {finding['advisory']} (fixed in {fixes})"


def _canonical_name(name: str) -> str:
    """PEP 503: lower case, runs of -, _ and . as one -."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_installed_pins() -> list[str]:
    """Return ``name==version`` for each distribution of the running environment, sorted,
    once per name (the first on sys.path, the one imports find), without the workbook's own."""
    found: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"]
        if not name:  # a broken install without metadata: nothing to ask about
            continue
        canonical = _canonical_name(name)
        if canonical != OWN_DISTRIBUTION and canonical not in found:
            found[canonical] = f"{canonical}=={dist.version}"
    return sorted(found.values())


def compute_scan_command(requirements: Path, cache: Path, timeout: int) -> list[str]:
    """Return pip-audit's command line for the pinned ``requirements`` file: no resolution and
    no pip (nothing installed), JSON out, its HTTP cache in ``cache``."""
    return [
        sys.executable, "-m", "pip_audit",
        "--requirement", str(requirements), "--no-deps", "--disable-pip",
        "--vulnerability-service", SERVICE, "--format", "json", "--progress-spinner", "off",
        "--timeout", str(timeout), "--cache-dir", str(cache),
    ]  # fmt: skip


def _tool_version() -> str:
    try:
        return f"{TOOL} {importlib.metadata.version(TOOL)}"
    except importlib.metadata.PackageNotFoundError:
        return f"{TOOL} (not installed)"


def compute_not_scanned_reason(returncode: int, stderr: str) -> str:
    """Return why pip-audit gave no report, in one line, from its exit code and last words."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    last = compute_one_line(lines[-1], REASON_LIMIT) if lines else "no message"
    if _UNREACHABLE.search(stderr):
        return f"the advisory service ({SERVICE}) could not be reached: {last}"
    return f"{TOOL} failed (exit {returncode}) without a report: {last}"


def compute_scan(pins: list[str], returncode: int, stdout: str, stderr: str) -> dict[str, Any]:
    """Return the DependencyScanRecorded payload (without its slot) of pip-audit's answer for
    ``pins``: its JSON on ``stdout`` (exit 1 with a report means vulnerabilities), or no
    report, which is NOT_SCANNED with ``stderr``'s reason."""
    base: dict[str, Any] = {
        "service": SERVICE, "tool": _tool_version(), "packages": pins,
        "audited": 0, "skipped": [], "findings": [], "reason": None,
    }  # fmt: skip
    try:
        dependencies = json.loads(stdout)["dependencies"]
        if not isinstance(dependencies, list):
            raise TypeError("dependencies is not a list")
    except (ValueError, KeyError, TypeError):
        reason = compute_not_scanned_reason(returncode, stderr)
        return {**base, "result": str(ScanResult.NOT_SCANNED), "reason": reason}
    skipped = [
        {"package": str(d.get("name")), "reason": compute_one_line(d["skip_reason"], REASON_LIMIT)}
        for d in dependencies
        if "skip_reason" in d
    ]
    findings = [
        {"package": str(d["name"]), "version": str(d["version"]), "advisory": str(v["id"]),
         "aliases": sorted(str(a) for a in v.get("aliases", [])),  # a set in pip-audit
         "fix_versions": [str(f) for f in v.get("fix_versions", [])], "service": SERVICE,
         "summary": compute_one_line(v.get("description") or "", SUMMARY_LIMIT)}
        for d in dependencies if "skip_reason" not in d for v in d.get("vulns", [])
    ]  # fmt: skip
    audited = len(dependencies) - len(skipped)
    payload = {**base, "audited": audited, "skipped": skipped, "findings": findings}
    if findings:
        return {**payload, "result": str(ScanResult.VULNERABLE)}
    if audited == 0:  # a service that knows nothing (a mirror without the JSON API) is no pass
        first = skipped[0]["reason"] if skipped else "the report listed no package"
        reason = f"the advisory service ({SERVICE}) audited none of {len(pins)} packages: {first}"
        return {**payload, "result": str(ScanResult.NOT_SCANNED), "reason": reason}
    return {**payload, "result": str(ScanResult.CLEAN)}


def run_scan(pins: list[str], timeout: int = SCAN_TIMEOUT_SECONDS) -> dict[str, Any]:
    """Run pip-audit over ``pins`` in a child process and return ``compute_scan``'s payload.
    A scan that does not finish within ``timeout`` seconds is NOT_SCANNED; never raises for
    pip-audit's own failures."""
    with tempfile.TemporaryDirectory(prefix="ops-dependency-scan-") as scratch:
        folder = Path(scratch)
        requirements = folder / "requirements.txt"
        requirements.write_text("".join(f"{pin}\n" for pin in pins), encoding="utf-8")
        # A cache of its own, gone after the scan: a week-old answer is no answer.
        command = compute_scan_command(requirements, folder / "cache", REQUEST_TIMEOUT_SECONDS)
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL, check=False)  # fmt: skip
        except subprocess.TimeoutExpired:
            return compute_scan(pins, -1, "", f"Timeout: {TOOL} did not finish within {timeout} s")
        except OSError as exc:
            return compute_scan(pins, -1, "", f"{TOOL} could not start: {exc}")
    return compute_scan(pins, done.returncode, done.stdout, done.stderr)


def _alert(payload: dict[str, Any], slot: str) -> Alert:
    """The warning alert of a VULNERABLE or NOT_SCANNED record."""
    if payload["result"] == ScanResult.NOT_SCANNED:
        return Alert(
            f"dependency scan {slot} did not happen: nothing was audited",
            f"{payload['reason']}\nNothing was audited: this is not a clean scan. Run "
            f"`ops-runner run dependency_scan` once the service answers.",
            Severity.WARNING,
        )
    findings = payload["findings"]
    lines = [_finding_words(f) + (f": {f['summary']}" if f["summary"] else "")
             for f in findings[:ALERT_LIMIT]]  # fmt: skip
    if len(findings) > ALERT_LIMIT:
        lines.append(f"(+{len(findings) - ALERT_LIMIT} more findings)")
    lines.append(f"service {payload['service']}, {payload['tool']}; upgrade the pins in "
                 "pyproject.toml and reinstall")  # fmt: skip
    packages = len({f["package"] for f in findings})
    return Alert(
        f"dependency scan {slot}: {len(findings)} known vulnerabilities in {packages} package(s)",
        "\n".join(lines),
        Severity.WARNING,
    )


def record_dependency_scan(
    cfg: Config,
    ledger: Ledger,
    slot: str,
    run_id: str | None = None,
    *,
    timeout: int = SCAN_TIMEOUT_SECONDS,
) -> ScanOutcome:
    """Scan the running environment for ``slot`` and record its DependencyScanRecorded once;
    return the outcome.

    The same answer again (a run by hand) records and alerts nothing. A new VULNERABLE or
    NOT_SCANNED sends a warning alert; with ``schedule.dependency_scan_safe_mode`` a new
    VULNERABLE opens an incident and moves to SAFE_MODE in the same transaction instead (the
    tick's pending alerts send it). Raises LedgerError only when the ledger cannot record it.
    """
    payload = {"slot": slot, **run_scan(read_installed_pins(), timeout)}
    digest = compute_sha256(canonical_json(payload))[:12]
    key = f"{EventKind.DEPENDENCY_SCAN_RECORDED}:{slot}:{digest}"
    if (existing := ledger.get(key)) is not None:
        return ScanOutcome(existing.payload, existing.seq, None, created=False)
    recorded = (str(EventKind.DEPENDENCY_SCAN_RECORDED), key, payload)
    vulnerable = payload["result"] == ScanResult.VULNERABLE
    if vulnerable and cfg.schedule.dependency_scan_safe_mode:
        incident_id = f"dependency-scan-{slot.replace(':', '-')}-{digest}"
        alert = _alert(payload, slot)
        evidence = alert.body.splitlines()
        opened = incident_event(incident_id, "scheduler", alert.subject, evidence)
        apply_trigger(ledger, Trigger.INCIDENT, alert.subject, evidence, run_id=run_id,
                      extra_events=[recorded, opened])  # fmt: skip
        written = ledger.get(key)
        if written is None:  # apply_trigger writes the extras or raises: never reached
            raise DependencyScanError(f"dependency scan {slot}: {key} not recorded; run it again")
        return ScanOutcome(written.payload, written.seq, incident_id, created=True)
    appended = ledger.append(*recorded, run_id=run_id)
    if payload["result"] != ScanResult.CLEAN:
        log.warning("dependency scan %s: %s", slot, payload["result"])
        send_alert(cfg, _alert(payload, slot), ledger=ledger, key=key, events=(appended.seq,))
    return ScanOutcome(appended.payload, appended.seq, None, created=True)
