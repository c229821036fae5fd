"""The production run end to end: `ops-runner demo` walks three months of real ticks.

One walk (about 90 s: sixteen notebooks) is shared by the tests below; each asserts one thing
a user relies on: the ledger verifies, every job left its executed notebook, each tick run
twice changed nothing, the incident took the runbook's path, and no secret reached any file.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
from collections import Counter
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from advisory_world import Advisories, make_authority, point_at, serve_advisories

from ops_runner.core.events import EventKind
from ops_runner.ledger import open_ledger
from ops_runner.ops.backup import verify_archive
from ops_runner.workbook.config import load_config

pytestmark = pytest.mark.slow  # the demo walked month by month

EXE = Path(sys.executable).with_name("ops-runner")
HMAC_KEY = "demo-hmac-key-5f1c0e9a7b2d4c6e8f0a1b2c3d4e5f60"
ACCOUNT = "DU7654321"
JOBS = ("data_qa", "decision", "execution", "reconciliation", "slippage_report")
CYCLES = ("2025-09", "2025-10", "2025-11")
# The last session of each week the walk spans (2025-09-29 after the close to 2025-12-01 noon):
# each gets a weekly audit and backup. Read off a calendar by hand: no holiday ends a week early.
WEEKS = ("2025-10-03", "2025-10-10", "2025-10-17", "2025-10-24", "2025-10-31", "2025-11-07",
         "2025-11-14", "2025-11-21", "2025-11-28")  # fmt: skip


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """The quarter walked once, with the weekly dependency scan on: its pip-audit asks the
    local pypi.org (``advisory_world``), which knows no advisory for any pin."""
    from ops_runner.demo import run_demo

    root = tmp_path_factory.mktemp("demo") / "wb"
    tls, pem = make_authority(tmp_path_factory.mktemp("ca"))
    patch = pytest.MonkeyPatch()
    patch.setenv("OPS_RUNNER_APPROVAL_KEY", HMAC_KEY)
    try:
        with serve_advisories(tls, Advisories(vulnerable=False)) as advisories:
            environ = dict(os.environ)
            point_at(environ, advisories.proxy, pem)
            for name in set(os.environ) - set(environ):
                patch.delenv(name)
            for name, value in environ.items():
                patch.setenv(name, value)
            result = run_demo(root, months=3, quiet=True, account=ACCOUNT, scan=True)
    finally:
        patch.undo()
    cfg = load_config(root)
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        events = list(ledger.events())
    return result, cfg, events, advisories


def _of(events, kind):
    return [e.payload for e in events if e.kind == str(kind)]


@pytest.mark.subprocess
def test_demo_when_walked_three_months_ledger_and_artifacts_verify(walk):
    _, cfg, _, _ = walk
    done = subprocess.run([str(EXE), "--workbook", str(cfg.workbook), "ledger", "verify"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # the cycles' jobs, the audits, one investigation, the two drills' reports
    registered = 16 + len(WEEKS) + 1 + 2
    assert "ledger ok" in done.stdout
    assert f"artifacts ok: {registered} registered notebooks" in done.stdout


def test_demo_when_walked_every_job_of_every_cycle_left_a_completed_notebook(walk):
    _, cfg, events, _ = walk
    runs = _of(events, EventKind.ARTIFACT_RECORDED)
    completed = Counter((r["cycle"], r["job"]) for r in runs if r["outcome"] == "completed")
    assert {(c, j) for c in CYCLES for j in JOBS} <= set(completed)
    # 3 cycles x 5 jobs, and the incident month ran data QA twice (blocked, then clean)
    assert sum(n for (cycle, _), n in completed.items() if cycle) == 16
    assert completed[("2025-10", "data_qa")] == 2
    # each week's audit, the investigation of October's one incident, the two drills
    jobs = Counter(r["job"] for r in runs if r["outcome"] == "completed")
    assert (jobs["audit"], jobs["incident"], jobs["dr_drill"]) == (len(WEEKS), 1, 2)
    assert len(runs) == 16 + len(WEEKS) + 1 + 2
    for run in runs:  # each run its own file, and the file still has its recorded hash
        path = cfg.workbook / run["path"]
        assert path.name == f"{run['job']}-{run['run_id']}.ipynb"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == run["sha256"]


def test_demo_when_each_week_closed_the_ticks_audited_and_backed_up_once(walk):
    _, cfg, events, _ = walk
    audits = _of(events, EventKind.AUDIT_RECORDED)
    assert [(a["session"], a["status"]) for a in audits] == [(w, "CLEAN") for w in WEEKS]
    backups = _of(events, EventKind.BACKUP_RECORDED)
    weekly = [b for b in backups if b["reason"].startswith("weekly")]
    assert [b["reason"] for b in weekly] == [f"weekly (backup:{w})" for w in WEEKS]
    assert len(backups) == len(WEEKS) + 1  # and one before the drill
    kept = sorted(cfg.path("backups").glob("*.tar.gz"))
    assert len(kept) == min(len(backups), cfg.values["backup"]["keep"])  # retention
    assert [k.name for k in kept] == [Path(b["archive"]).name for b in backups][-len(kept) :]
    assert all(verify_archive(k).ok for k in kept)


def test_demo_when_each_week_closed_the_ticks_scanned_the_dependencies_once(walk):
    _, _, events, advisories = walk
    scans = _of(events, EventKind.DEPENDENCY_SCAN_RECORDED)
    assert [(s["slot"], s["result"]) for s in scans] == [
        (f"dependency_scan:{week}", "CLEAN") for week in WEEKS
    ]
    # Each week's pins are this environment's distributions (but the workbook's own package),
    # each asked of the service once per scan, at the version installed here.
    installed = {
        f"{_canonical(d.metadata['Name'])}=={d.version}"
        for d in importlib.metadata.distributions()
        if _canonical(d.metadata["Name"]) != "ops-runner"
    }
    asked = Counter(f"{_canonical(name)}=={version}" for name, version in advisories.asked)
    assert set(asked) == installed and set(asked.values()) == {len(WEEKS)}
    assert all(s["audited"] == len(installed) and s["findings"] == [] for s in scans)
    subjects = [a["subject"] for a in _of(events, EventKind.ALERT_SENT)]
    assert not [s for s in subjects if "dependency" in s.lower()]  # clean: no alert


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_demo_when_drilled_the_backup_passes_and_a_truncated_copy_fails_with_the_reason(walk):
    result, cfg, events, _ = walk
    drills = _of(events, EventKind.DRILL_RECORDED)
    assert [(d["status"], d["passed"]) for d in drills] == [("PASS", True), ("FAIL", False)]
    good, damaged = drills
    assert good["cycle"] == "2025-11" and good["reasons"] == []  # the last cycle, re-run
    assert "archive truncated" in damaged["reason"] and damaged["scratch"] is None
    assert [d["status"] for d in result.drills] == ["PASS", "FAIL"]
    reports = [r for r in _of(events, EventKind.ARTIFACT_RECORDED) if r["job"] == "dr_drill"]
    assert len(reports) == 2 and all((cfg.workbook / r["path"]).is_file() for r in reports)
    alerts = _of(events, EventKind.ALERT_SENT)
    assert sum("drill" in a["subject"].lower() for a in alerts) == 1  # the failed one only
    last = [p for p in _of(events, EventKind.STATE_CHANGED)][-1]
    assert last["to"] == "RUN"  # a failed drill is loud, and leaves trading as it was


def test_demo_when_each_tick_ran_twice_nothing_was_done_twice(walk):
    result, _, events, _ = walk
    assert result.ticks >= 50 and result.repeats_identical == result.ticks
    submitted = _of(events, EventKind.ORDER_SUBMITTED)
    refs = [s["client_ref"] for s in submitted]
    assert len(refs) == len(set(refs)) > 0  # no order twice
    decisions = _of(events, EventKind.DECISION_RECORDED)
    assert sorted(d["cycle_id"] for d in decisions) == list(CYCLES)
    fills = _of(events, EventKind.FILL_RECORDED)
    assert len({f["exec_id"] for f in fills}) == len(fills)
    slots = [p["slot"] for p in _of(events, EventKind.JOB_COMPLETED) if p["done"]]
    assert len(slots) == len(set(slots))  # a job done is never done again


def test_demo_when_each_cycle_filled_its_quotes_were_recorded_and_its_spread_judged(walk):
    _, cfg, events, _ = walk
    quotes = {(p["cycle_id"], p["moment"]): p for p in _of(events, EventKind.QUOTES_RECORDED)}
    assert set(quotes) == {(c, m) for c in CYCLES for m in ("submission", "open")}
    fills = {f["exec_id"]: f for f in _of(events, EventKind.FILL_RECORDED)}
    for cycle in CYCLES:
        intents = [i for i in _of(events, EventKind.ORDER_INTENT_RECORDED)
                   if i["client_ref"].split(":")[1] == cycle]  # fmt: skip
        for moment in ("submission", "open"):
            recorded = quotes[cycle, moment]
            assert recorded["unquoted"] == {}  # the simulated broker quotes every symbol
            assert set(recorded["quotes"]) == {i["client_ref"].split(":")[2] for i in intents}
        # Each order against the mid just after the open, computed here from the records.
        flagged = 0
        for intent in intents:
            _, _, symbol, side = intent["client_ref"].split(":")[:4]
            mine = [f for f in fills.values() if f["client_ref"] == intent["client_ref"]]
            paid = sum(int(f["quantity"]) * Decimal(f["price"]) for f in mine)
            average = paid / sum(int(f["quantity"]) for f in mine)
            quote = quotes[cycle, "open"]["quotes"][symbol]
            bid, ask = Decimal(quote["bid"]), Decimal(quote["ask"])
            assert bid < ask
            mid = (bid + ask) / 2
            vs_mid = (average - mid if side == "BUY" else mid - average) / mid * 10_000
            half = (ask - bid) / 2 / mid * 10_000
            flagged += abs(vs_mid) > 10 or half > 5  # the template's bands, in bps
        (done,) = [p for p in _of(events, EventKind.JOB_COMPLETED)
                   if p["slot"] == f"slippage_report:{cycle}"]  # fmt: skip
        assert done["done"]
        page = cfg.workbook / "reports" / "slippage" / f"{cycle}.html"
        text = page.read_text(encoding="utf-8")
        assert "fill vs mid" in text.lower() and "half-spread" in text.lower(), cycle
        checks = [e.payload for e in events if e.kind == str(EventKind.CHECK_RECORDED)
                  and e.key == f"CheckRecorded:spread_bands:{cycle}"]  # fmt: skip
        assert len(checks) == 1 and checks[0]["passed"] is (flagged == 0), (cycle, checks)


def test_demo_when_each_cycle_reconciled_the_tick_replayed_it_once_and_it_matched(walk):
    _, _, events, _ = walk
    replays = _of(events, EventKind.REPLAY_RECORDED)
    assert [(r["cycle"], r["result"], r["changed"]) for r in replays] == [
        (cycle, "MATCH", []) for cycle in CYCLES
    ]  # October's stale SPY was repaired before its decision: nothing changed since
    done = [p for p in _of(events, EventKind.JOB_COMPLETED) if p["job"] == "replay"]
    assert [(p["slot"], p["outcome"]) for p in done] == [(f"replay:{c}", "MATCH") for c in CYCLES]


def test_demo_when_feed_went_stale_took_the_runbooks_path_and_alerted(walk):
    _, cfg, events, _ = walk
    path = [(p["from"], p["to"], p["trigger"]) for p in _of(events, EventKind.STATE_CHANGED)]
    assert path == [
        ("RUN", "DEGRADED_DATA", "data_fault"),  # pre-rebalance: SPY not fresh
        ("DEGRADED_DATA", "SAFE_MODE", "incident"),  # QA deadline passed
        ("SAFE_MODE", "RUN", "approved_exit_safe_mode"),  # repaired, QA clean, approved
    ]
    missed = _of(events, EventKind.JOB_MISSED)
    assert [m["slot"] for m in missed] == ["data_qa:2025-10"]
    opened = [i["incident_id"] for i in _of(events, EventKind.INCIDENT_OPENED)]
    closed = [i["incident_id"] for i in _of(events, EventKind.INCIDENT_CLOSED)]
    assert opened == closed == ["missed-data_qa-2025-10"]  # investigated, then closed
    alerts = _of(events, EventKind.ALERT_SENT)
    assert any("SAFE_MODE" in a["subject"] for a in alerts)
    log = (cfg.path("kill_switch").parent / "alerts.log").read_text()
    assert "SAFE_MODE" in log and "data_qa:2025-10" in log
    assert (cfg.path("reports") / "index.html").is_file()


def test_demo_when_known_secrets_set_no_notebook_report_or_log_contains_them(walk):
    _, cfg, _, _ = walk
    needles = {HMAC_KEY.encode(), ACCOUNT.encode(), HMAC_KEY[:16].encode()}
    scanned = 0
    for path in cfg.workbook.rglob("*"):
        if not path.is_file() or path.parent.name == "broker" or path.name == "config.yaml":
            continue  # the broker's own books and the config name the account by design
        data = path.read_bytes()
        scanned += 1
        for needle in needles:
            assert needle not in data, f"{needle.decode()[:4]}... found in {path}"
    assert scanned > 40
    masked = json.dumps(_banner_rows(cfg))
    assert "DU*****21" in masked  # the account shows masked


def _banner_rows(cfg):
    from ops_runner.reports.pages import compute_banner

    return compute_banner(cfg).astype(str).to_dict("records")


@pytest.mark.subprocess
def test_demo_when_ticked_again_later_by_the_cli_stays_idempotent(walk):
    _, cfg, _, _ = walk

    def tick() -> str:
        done = subprocess.run(
            [str(EXE), "--workbook", str(cfg.workbook), "tick", "--now", "2025-12-01T17:30:00Z"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout

    tick()
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        head = ledger.head()
    assert "ran" not in tick()
    with open_ledger(cfg, create=False, readonly=True) as ledger:
        assert ledger.head() == head


# What each job's run must say on the index, from the ledger's own record of it (JobCompleted's
# outcome; a drill's DrillRecorded status): the words of the job, never "completed".
SAID = {
    ("data_qa", "clean"): "CLEAN",
    ("data_qa", "blocking"): "BLOCKED",
    ("decision", "completed"): "DECIDED",
    ("execution", "SUBMITTED"): "SUBMITTED",
    ("reconciliation", "CLEAN"): "CLEAN",
    ("slippage_report", "WITHIN_BANDS"): "WITHIN_BANDS",
    ("audit", "CLEAN"): "CLEAN",
    ("incident", "completed"): "INVESTIGATED",
}


def test_demo_when_walked_the_ledger_and_every_page_speak_the_walks_clock(walk):
    import re

    _, cfg, events, _ = walk
    stamps = [e.recorded_at for e in events]
    assert stamps == sorted(stamps)  # never backwards, the operator's steps included
    assert "2025-09-29T20" <= stamps[0] and stamps[-1] < "2025-12-01T16"  # the walk's span
    started = [e for e in events if e.kind == EventKind.JOB_STARTED]
    assert started and all(e.recorded_at[:16] == e.payload["at"][:16] for e in started)
    runs_at: dict[str, set] = {}
    for e in events:
        if e.run_id:
            runs_at.setdefault(e.recorded_at, set()).add(e.run_id)
    assert all(len(runs) == 1 for runs in runs_at.values())  # a transaction, an instant
    opened = next(e for e in events if e.kind == EventKind.INCIDENT_OPENED)
    assert opened.recorded_at.startswith("2025-10-31T21:05")  # the tick that found it missed
    resumed = [e for e in events if e.kind == EventKind.STATE_CHANGED and e.payload["to"] == "RUN"
               and e.payload["from"] == "SAFE_MODE"]  # fmt: skip
    assert len(resumed) == 1 and resumed[0].recorded_at.startswith("2025-10-31T21:15")
    index = (cfg.path("reports") / "index.html").read_text(encoding="utf-8")
    row = re.search(rf'<tr data-seq="{resumed[0].seq}"><td>([^<]+)</td>', index)
    assert row and row.group(1) == "2025-10-31 21:15 UTC"  # the operator's resume, when it was
    for page in cfg.path("reports").rglob("*.html"):
        text = _visible_text(page.read_text(encoding="utf-8"))
        assert max(re.findall(r"\b20\d\d-\d\d-\d\d\b", text), default="") <= "2025-12-01", page
        assert not re.search(r"\d\d:\d\d:\d\d\.\d", text), page  # no microseconds


def _visible_text(dom: str) -> str:
    import re

    dom = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom, flags=re.S)
    dom = re.sub(r'<pre id="page-check">.*?</pre>', " ", dom, flags=re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", dom).split())


def test_demo_when_its_pages_open_in_a_browser_each_says_its_result_first_and_fits(walk, tmp_path):
    import re

    from conftest import broken_links, inspect_in_browser

    _, cfg, events, _ = walk
    reports = cfg.path("reports")
    index = reports / "index.html"
    outcomes = {p["run_id"]: (p["job"], p["outcome"]) for p in _of(events, EventKind.JOB_COMPLETED)}
    drills = {d["notebook"]: d["status"] for d in _of(events, EventKind.DRILL_RECORDED)}
    runs = _of(events, EventKind.ARTIFACT_RECORDED)
    expected = {
        r["run_id"]: drills[r["path"]] if r["job"] == "dr_drill" else SAID[outcomes[r["run_id"]]]
        for r in runs
    }
    assert sorted(set(expected.values())) == sorted(
        {"BLOCKED", "CLEAN", "DECIDED", "FAIL", "INVESTIGATED", "PASS", "SUBMITTED", "WITHIN_BANDS"}
    )
    shots = {}

    seen = inspect_in_browser(
        index, tmp_path / "index", shots.setdefault("index", tmp_path / "index.png")
    )
    said = dict(re.findall(r'<tr class="tone-\w+" data-run-id="([^"]+)" data-seq="\d+" '
                           r'data-outcome="\w+" data-result="([^"]+)"', seen["dom"]))  # fmt: skip
    assert said == expected  # every run in its job's words; the failed and blocked ones too
    attention = seen["dom"][
        seen["dom"].index('id="attention"') : seen["dom"].index('id="headline"')
    ]
    bad = {r["run_id"] for r in runs if expected[r["run_id"]] in ("FAIL", "BLOCKED")}
    assert set(re.findall(r'<li data-run-id="([^"]+)"', attention)) == bad and len(bad) == 2
    assert "archive truncated" in attention  # and why, before anything else
    text = _visible_text(seen["dom"])
    assert not re.search(r"\d\d:\d\d:\d\d\.\d", text)  # no microseconds anywhere
    assert max(re.findall(r"\b20\d\d-\d\d-\d\d\b", text)) <= "2025-12-01"  # the walk's clock
    assert re.search(r"generated at 2025-12-01 \d\d:\d\d UTC", text)
    holdings = re.search(r'id="holdings">([^<]*)<', seen["dom"]).group(1)
    decided = _of(events, EventKind.DECISION_RECORDED)[-1]["decision"]["targets"]
    assert [h.split()[0] for h in holdings.split(", ")] == sorted(decided)  # what it holds now
    explained = _of(events, EventKind.DECISION_RECORDED)[-1]["decision"]["explanation"]
    assert explained in text  # the last decision, with its explanation
    assert "<svg" in seen["dom"] and "slippage 2025-11" in text  # sparkline, latest slippage
    marks = {m["session"]: Decimal(m["net_liquidation"]) for m in _of(events, "EquityMarked")}
    values = [marks[day] for day in sorted(marks)]
    peak = max(values)  # no HALT in the walk: the peak never restarts
    below = ((peak - values[-1]) / peak * 100).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert f"{below}% below the peak of ${peak:,.2f}" in text
    assert not [link for link in seen["links"] if link["href"].endswith(".ipynb")]  # pages
    checks = [(index, seen, None)]

    failed_drill = next(r for r in runs if expected[r["run_id"]] == "FAIL")
    blocked_qa = next(r for r in runs if expected[r["run_id"]] == "BLOCKED")
    pages = {
        "dr_drill-FAIL": (reports / "runs" / Path(failed_drill["path"]).relative_to("ledger/runs")
                          .with_suffix(".html"), "FAIL", "archive truncated"),
        "data_qa-BLOCKED": (reports / "runs" / Path(blocked_qa["path"]).relative_to("ledger/runs")
                            .with_suffix(".html"), "BLOCKED", "SPY"),
        "slippage-2025-11": (reports / "slippage" / "2025-11.html", "WITHIN_BANDS", "2025-11"),
    }  # fmt: skip
    for name, (page, word, why) in pages.items():
        shot = shots.setdefault(name, tmp_path / f"{name}.png")
        seen = inspect_in_browser(page, tmp_path / name, shot)
        verdict = seen["verdict"]
        assert verdict and verdict["bottom"] <= seen["height"], (name, verdict)  # no scrolling
        assert word in verdict["text"] and why in verdict["text"], (name, verdict["text"])
        shown = _visible_text(seen["dom"])
        assert "open_workbook(" not in shown  # the code is in the .ipynb only
        assert not re.search(r"\d\d:\d\d:\d\d\.\d", shown), name  # no microseconds
        assert any(link["href"].endswith(".ipynb") for link in seen["links"])  # linked, though
        assert "<table" in seen["dom"], name  # its tables, as the kernel showed them
        if name != "dr_drill-FAIL":  # the findings' chart; the slippage and cost charts
            assert seen["images"], name
        checks.append((page, seen, name))
    for page, seen, name in checks:
        assert seen["wide"] == [], (name, seen["wide"])  # nothing past the right edge
        assert seen["scroll_width"] <= seen["width"], name
        assert broken_links(page, seen) == [], name
        assert all(image["ok"] for image in seen["images"]), name
    for name, shot in shots.items():
        assert shot.stat().st_size > 10_000
        print(f"screenshot {name}: {shot}")
