"""pip-audit's answers read into the dependency scan's record, from literal outputs of
pip-audit 2.10.1 (its JSON on stdout, its last words on stderr) and the record each must give."""

from __future__ import annotations

import json

import pytest

from ops_runner.ops.dependency_scan import compute_scan

PINS = ["pyyaml==6.0.4", "six==1.17.0", "tqdm==4.70.1"]
VULNERABLE = {
    "dependencies": [
        {"name": "pyyaml", "version": "6.0.4", "vulns": [
            {"id": "PYSEC-2099-1", "fix_versions": ["6.0.99", "7.0"],
             "aliases": ["GHSA-test-test-test", "CVE-2099-0001"],
             "description": "Made-up:\nthe loader runs code"}]},
        {"name": "six", "version": "1.17.0", "vulns": []},
        {"name": "tqdm", "skip_reason": "Dependency not found on PyPI and could not be "
                                        "audited: tqdm (4.70.1)"},
    ],
    "fixes": [],
}  # fmt: skip
CLEAN = {"dependencies": [{"name": n, "version": v, "vulns": []}
                          for n, v in (p.split("==") for p in PINS)], "fixes": []}  # fmt: skip
# What pip-audit answered on a machine whose pypi.org serves no release JSON (a 404 for each).
NONE_KNOWN = {"dependencies": [
    {"name": n, "skip_reason": f"Dependency not found on PyPI and could not be audited: {n} ({v})"}
    for n, v in (p.split("==") for p in PINS)], "fixes": []}  # fmt: skip
PROXY_REFUSED = (
    "WARNING:pip_audit._cli:--no-deps is supported, but users are encouraged to fully hash their "
    "pinned dependencies\nTraceback (most recent call last):\n  ...\n"
    "requests.exceptions.ProxyError: HTTPSConnectionPool(host='pypi.org', port=443): Max retries "
    "exceeded with url: /pypi/pyyaml/6.0.4/json (Caused by ProxyError('Unable to connect to "
    "proxy', NewConnectionError('Failed to establish a new connection: [Errno 111] Connection "
    "refused')))\n"
)
NO_MODULE = "/srv/venv/bin/python: No module named pip_audit\n"

CASES = [
    # (exit code, stdout, stderr) -> result, audited, advisories, skipped, reason starts with
    ("vulnerable", 1, json.dumps(VULNERABLE), "Found 1 known vulnerability in 1 package\n",
     "VULNERABLE", 2, ["PYSEC-2099-1"], ["tqdm"], None),
    ("clean", 0, json.dumps(CLEAN), "No known vulnerabilities found\n",
     "CLEAN", 3, [], [], None),
    ("none known", 0, json.dumps(NONE_KNOWN), "No known vulnerabilities found\n",
     "NOT_SCANNED", 0, [], ["pyyaml", "six", "tqdm"],
     "the advisory service (pypi) audited none of 3 packages: Dependency not found on PyPI"),
    ("refused", 1, "", PROXY_REFUSED, "NOT_SCANNED", 0, [], [],
     "the advisory service (pypi) could not be reached: requests.exceptions.ProxyError: "),
    ("timed out", -1, "", "Timeout: pip-audit did not finish within 600 s", "NOT_SCANNED", 0,
     [], [], "the advisory service (pypi) could not be reached: Timeout: pip-audit did not"),
    ("no pip-audit", 1, "", NO_MODULE, "NOT_SCANNED", 0, [], [],
     "pip-audit failed (exit 1) without a report: /srv/venv/bin/python: No module named"),
    ("garbage", 0, "<html>proxy login</html>", "", "NOT_SCANNED", 0, [], [],
     "pip-audit failed (exit 0) without a report: no message"),
]  # fmt: skip


@pytest.mark.parametrize(
    "code, stdout, stderr, result, audited, advisories, skipped, reason",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_compute_scan_when_pip_audit_answers_records_what_it_said(
    code, stdout, stderr, result, audited, advisories, skipped, reason
):
    payload = compute_scan(PINS, code, stdout, stderr)
    assert payload["result"] == result and payload["packages"] == PINS
    assert payload["audited"] == audited and payload["service"] == "pypi"
    assert [f["advisory"] for f in payload["findings"]] == advisories
    assert [s["package"] for s in payload["skipped"]] == skipped
    if reason is None:
        assert payload["reason"] is None
    else:
        assert payload["reason"].startswith(reason) and "\n" not in payload["reason"]


def test_compute_scan_when_vulnerable_keeps_each_finding_in_one_sorted_form():
    (finding,) = compute_scan(PINS, 1, json.dumps(VULNERABLE), "")["findings"]
    assert finding == {
        "package": "pyyaml",
        "version": "6.0.4",
        "advisory": "PYSEC-2099-1",
        "aliases": ["CVE-2099-0001", "GHSA-test-test-test"],  # pip-audit's set, sorted
        "fix_versions": ["6.0.99", "7.0"],
        "service": "pypi",
        "summary": "Made-up: the loader runs code",
    }
