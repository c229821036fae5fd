"""Scheduler templates (cron, systemd, Airflow): every 5 minutes, the same tick, and it runs."""

from __future__ import annotations

import ast
import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import make_sample_workbook

from ops_runner.ops.ticklock import hold_tick_lock
from ops_runner.workbook.config import load_config

SCHEDULER = Path(__file__).resolve().parents[2] / "templates" / "scheduler"
CRONTAB = SCHEDULER / "ops-runner.crontab"
SERVICE = SCHEDULER / "ops-runner-tick.service"
TIMER = SCHEDULER / "ops-runner-tick.timer"
DAG = SCHEDULER / "ops_runner_dag.py"
TEMPLATES = [CRONTAB, SERVICE, TIMER, DAG]

BIN_PLACEHOLDER = "/path/to/ops-runner-project/.venv/bin/ops-runner"
WORKBOOK_PLACEHOLDER = "/path/to/workbook"
# This venv's ops-runner, beside the interpreter running the tests (not resolved: a venv's
# python is often a symlink out of the venv).
OPS_RUNNER = Path(sys.executable).parent / "ops-runner"

EVERY_FIVE_MINUTES = set(range(0, 60, 5))
# field name -> (lowest, highest) value cron accepts
CRON_FIELDS = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "month": (1, 12), "dow": (0, 7)}


def _expand_cron_field(field: str, lo: int, hi: int) -> set[int]:
    """The values one numeric cron field matches (lists, ranges, steps, `*`)."""
    values: set[int] = set()
    for part in field.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            start, stop = lo, hi
        elif "-" in span:
            start, stop = (int(x) for x in span.split("-"))
        else:
            start = stop = int(span)
            if step:
                stop = hi
        if not lo <= start <= stop <= hi:
            raise ValueError(f"cron field {field!r} leaves {lo}..{hi}")
        values.update(range(start, stop + 1, int(step) if step else 1))
    return values


def _cron_entries() -> list[str]:
    lines = CRONTAB.read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _cron_schedule_and_command() -> tuple[list[str], str]:
    (entry,) = _cron_entries()
    fields = entry.split(maxsplit=5)
    return fields[:5], fields[5]


def _tick_words(command: str) -> list[str]:
    """The tick's argv with the placeholders (or the DAG's variables) named, redirection cut."""
    names = {
        BIN_PLACEHOLDER: "<bin>",
        "$OPS_RUNNER_BIN": "<bin>",
        WORKBOOK_PLACEHOLDER: "<workbook>",
        "$OPS_RUNNER_WORKBOOK": "<workbook>",
    }
    words = shlex.split(command.split(">>")[0], posix=False)
    return [names.get(word.strip('"'), word) for word in words]


def _read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
    return parser


def _fill_placeholders(text: str, workbook: Path, quote: bool) -> str:
    fill = shlex.quote if quote else str
    text = text.replace(BIN_PLACEHOLDER, fill(str(OPS_RUNNER)))
    return text.replace(WORKBOOK_PLACEHOLDER, fill(str(workbook)))


def _dag_tree() -> ast.Module:
    return ast.parse(DAG.read_text(encoding="utf-8"), filename=str(DAG))


def _dag_keywords() -> dict[str, ast.expr]:
    """Keyword arguments of every call in the DAG file, by name (DAG and operator alike)."""
    found: dict[str, ast.expr] = {}
    for node in ast.walk(_dag_tree()):
        if isinstance(node, ast.Call):
            found.update({kw.arg: kw.value for kw in node.keywords if kw.arg})
    return found


def _dag_tick_command() -> str:
    value = _dag_keywords()["bash_command"]
    if isinstance(value, ast.Name):  # a module constant
        for node in _dag_tree().body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == value.id for t in node.targets
            ):
                value = node.value
    return ast.literal_eval(value)


def _dag_env_defaults() -> dict[str, str]:
    """`os.environ.get(NAME, default)` calls in the DAG file: NAME -> default."""
    found = {}
    for node in ast.walk(_dag_tree()):
        if (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) == "os.environ.get"
            and len(node.args) == 2
        ):
            found[ast.literal_eval(node.args[0])] = ast.literal_eval(node.args[1])
    return found


@pytest.fixture
def workbook(tmp_path: Path) -> Path:
    return make_sample_workbook(tmp_path / "workbook")  # a demo workbook with its sample


@pytest.mark.parametrize(
    ("field", "lo", "hi", "expected"),
    [
        ("*/5", 0, 59, EVERY_FIVE_MINUTES),
        ("0-59/5", 0, 59, EVERY_FIVE_MINUTES),
        ("5", 0, 59, {5}),
        ("1,2,10-12", 0, 59, {1, 2, 10, 11, 12}),
        ("*", 1, 12, set(range(1, 13))),
        ("9-16", 0, 23, set(range(9, 17))),
        ("1-5", 0, 7, {1, 2, 3, 4, 5}),
    ],
)
def test_expand_cron_field_when_known_field_matches_table(
    field: str, lo: int, hi: int, expected: set[int]
) -> None:
    assert _expand_cron_field(field, lo, hi) == expected


def test_crontab_when_parsed_has_one_entry_every_five_minutes_every_day() -> None:
    schedule, _ = _cron_schedule_and_command()
    expanded = {
        name: _expand_cron_field(field, lo, hi)
        for field, (name, (lo, hi)) in zip(schedule, CRON_FIELDS.items(), strict=True)
    }
    assert expanded["minute"] == EVERY_FIVE_MINUTES
    # No market hours and no weekdays: every hour, every day; the tick knows the calendar.
    for name in ("hour", "dom", "month", "dow"):
        lo, hi = CRON_FIELDS[name]
        assert expanded[name] == set(range(lo, hi + 1)), name


def test_crontab_when_parsed_runs_tick_on_the_workbook_and_appends_to_its_log() -> None:
    _, command = _cron_schedule_and_command()
    assert _tick_words(command) == ["<bin>", "--workbook", "<workbook>", "tick"]
    assert command.endswith(f">> {WORKBOOK_PLACEHOLDER}/ops/tick.log 2>&1")
    assert "%" not in command  # cron turns % into a newline


def test_crontab_when_saved_ends_with_a_newline() -> None:
    # cron ignores (or rejects) a last line without one.
    assert CRONTAB.read_text(encoding="utf-8").endswith("\n")


def test_service_when_parsed_is_a_oneshot_tick_on_the_workbook() -> None:
    service = _read_unit(SERVICE)["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"].split()[-1] == "tick"
    assert _tick_words(service["ExecStart"]) == ["<bin>", "--workbook", "<workbook>", "tick"]
    assert service["WorkingDirectory"] == WORKBOOK_PLACEHOLDER
    assert service["TimeoutStartSec"] == "45min"
    assert service["EnvironmentFile"].startswith("-")  # optional: secrets.file works as well
    # the tick stops itself first, recording what it ran; systemd's kill records nothing
    template = yaml.safe_load((SCHEDULER.parent / "config.yaml").read_text(encoding="utf-8"))
    assert template["schedule"]["tick_deadline_minutes"] < 45


def test_timer_when_parsed_starts_the_service_every_five_minutes() -> None:
    timer = _read_unit(TIMER)
    assert timer["Timer"]["OnCalendar"] == "*:0/5"
    assert timer["Timer"]["Unit"] == SERVICE.name
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["AccuracySec"] == "30s"
    assert timer["Install"]["WantedBy"] == "timers.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not on PATH")
def test_units_when_placeholders_filled_pass_systemd_analyze_verify(
    tmp_path: Path, workbook: Path
) -> None:
    for unit in (SERVICE, TIMER):
        text = _fill_placeholders(unit.read_text(encoding="utf-8"), workbook, quote=False)
        (tmp_path / unit.name).write_text(text, encoding="utf-8")
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", tmp_path / SERVICE.name, tmp_path / TIMER.name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # verify exits 0 on parse warnings (an unknown Type=, say); those name the unit file.
    assert "ops-runner-tick" not in output, output


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not on PATH")
def test_timer_when_calendar_expanded_elapses_five_minutes_apart() -> None:
    spec = _read_unit(TIMER)["Timer"]["OnCalendar"]
    result = subprocess.run(
        ["systemd-analyze", "calendar", "--iterations=3", spec],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    minutes = [int(m) for m in re.findall(r"\d{2}:(\d{2}):00", result.stdout)]
    assert len(minutes) == 3, result.stdout
    assert all(m % 5 == 0 for m in minutes)
    assert [(b - a) % 60 for a, b in zip(minutes, minutes[1:], strict=False)] == [5, 5]


def test_dag_when_parsed_compiles_without_airflow() -> None:
    code = compile(DAG.read_text(encoding="utf-8"), str(DAG), "exec")
    assert "DAG" in code.co_names and "BashOperator" in code.co_names


def test_dag_when_parsed_schedules_one_run_every_five_minutes_without_catchup() -> None:
    keywords = _dag_keywords()
    assert ast.literal_eval(keywords["dag_id"]) == "ops_runner_tick"
    assert ast.literal_eval(keywords["schedule"]) == "*/5 * * * *"
    assert ast.literal_eval(keywords["catchup"]) is False
    assert ast.literal_eval(keywords["max_active_runs"]) == 1
    assert ast.literal_eval(keywords["retries"]) == 0
    assert "pendulum.datetime(2025, 1, 1" in ast.unparse(keywords["start_date"])
    operators = [
        node
        for node in ast.walk(_dag_tree())
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "BashOperator"
    ]
    assert len(operators) == 1


def test_dag_when_parsed_runs_the_crontab_command() -> None:
    _, cron_command = _cron_schedule_and_command()
    assert _tick_words(_dag_tick_command()) == _tick_words(cron_command)
    # The variables the command reads are the ones the task's environment sets...
    env = ast.literal_eval(_dag_keywords()["env"])
    assert set(env) == {"OPS_RUNNER_BIN", "OPS_RUNNER_WORKBOOK"}
    for name, value in env.items():
        assert f"var.value.get('{name}'" in value
    # ...and their last-resort defaults are the crontab's placeholders.
    assert _dag_env_defaults() == {
        "OPS_RUNNER_BIN": BIN_PLACEHOLDER,
        "OPS_RUNNER_WORKBOOK": WORKBOOK_PLACEHOLDER,
    }


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_when_read_assigns_no_secret(path: Path) -> None:
    assigns_secret = re.compile(
        r"OPS_RUNNER_\w*(KEY|PASSWORD|TOKEN|URL)\b[\"']?\s*[=:]", re.IGNORECASE
    )
    offending = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if assigns_secret.search(line)
    ]
    assert offending == []


# The instant the ticks below run at (OPS_RUNNER_NOW stands for --now where the command line
# is the template's): Wednesday 2025-11-26 10:00 New York, when no job is open. On the real
# clock these tests passed or hung depending on the day they ran (issue 15, hole 6).
IDLE_INSTANT = "2025-11-26T15:00:00Z"


def _cron_like_env(home: Path, now: str = IDLE_INSTANT) -> dict[str, str]:
    # What cron gives a job: next to nothing.
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "SHELL": "/bin/sh", "LANG": "C",
            "OPS_RUNNER_NOW": now}  # fmt: skip


@pytest.mark.parametrize("shell", ["bash", "sh"])
@pytest.mark.slow
def test_crontab_command_when_run_as_written_appends_tick_outcome_to_log(
    shell: str, tmp_path: Path, workbook: Path
) -> None:
    _, command = _cron_schedule_and_command()
    line = _fill_placeholders(command, workbook, quote=True)
    log_path = workbook / "ops" / "tick.log"
    logs = []
    for _ in range(2):
        result = subprocess.run(
            [shell, "-c", line],
            cwd=tmp_path,
            env=_cron_like_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == result.stderr == ""  # everything went to the log
        logs.append(log_path.read_text(encoding="utf-8"))
    first, second = logs
    assert second.startswith(first) and len(second) > len(first)  # appended, not replaced
    # The tick's outcome line, one per run; warnings (stderr) may sit between them.
    outcomes = [line for line in second.splitlines() if line.startswith("state ")]
    assert len(outcomes) == 2, second


@pytest.mark.slow
def test_crontab_command_when_home_is_deep_and_the_weekly_audit_is_due_runs_it(
    tmp_path: Path, workbook: Path
) -> None:
    # Sunday after the week's last session (Friday 2025-11-21): the audit's notebook is due.
    # With HOME this deep, jupyter's runtime folder is past a Unix socket path's limit: the
    # kernel could not start, and the tick hung for good (2026-12-06).
    home = tmp_path / ("h" * 60)
    runtime = home / ".local" / "share" / "jupyter" / "runtime"
    assert len(str(runtime)) > 100
    _, command = _cron_schedule_and_command()
    line = _fill_placeholders(command, workbook, quote=True)
    result = subprocess.run(
        ["bash", "-c", line],
        cwd=tmp_path,
        env=_cron_like_env(home, now="2025-11-23T15:00:00Z"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    log = (workbook / "ops" / "tick.log").read_text(encoding="utf-8")
    (outcome,) = [line for line in log.splitlines() if line.startswith("state ")]
    assert "audit:2025-11-21 CLEAN" in outcome, log
    assert "FAILED" not in outcome, log
    assert not runtime.exists() or not any(runtime.glob("opsr-*"))  # no socket left behind


def test_crontab_command_when_another_tick_holds_the_lock_logs_busy_and_exits_0(
    tmp_path: Path, workbook: Path
) -> None:
    _, command = _cron_schedule_and_command()
    line = _fill_placeholders(command, workbook, quote=True)
    with hold_tick_lock(load_config(workbook)) as held:
        assert held
        result = subprocess.run(
            ["bash", "-c", line],
            cwd=tmp_path,
            env=_cron_like_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert result.returncode == 0, result.stderr
    log = (workbook / "ops" / "tick.log").read_text(encoding="utf-8").splitlines()
    outcomes = [line for line in log if line.startswith(("busy:", "state "))]
    assert len(outcomes) == 1 and outcomes[0].startswith("busy:"), log


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
@pytest.mark.subprocess
def test_service_exec_start_when_run_as_written_ticks(workbook: Path) -> None:
    service = _read_unit(SERVICE)["Service"]
    argv = shlex.split(_fill_placeholders(service["ExecStart"], workbook, quote=True))
    cwd = _fill_placeholders(service["WorkingDirectory"], workbook, quote=False)
    result = subprocess.run(
        argv, cwd=cwd, env=_cron_like_env(workbook), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("state "), result.stdout


@pytest.mark.slow  # 1.5 s or more: left out of make test-fast
def test_dag_command_when_run_with_its_environment_ticks(tmp_path: Path, workbook: Path) -> None:
    env = _cron_like_env(tmp_path) | {
        "OPS_RUNNER_BIN": str(OPS_RUNNER),
        "OPS_RUNNER_WORKBOOK": str(workbook),
    }
    result = subprocess.run(
        ["bash", "-c", _dag_tick_command()],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("state "), result.stdout


def test_ops_runner_when_tests_run_is_this_venvs_executable() -> None:
    # The run-as-written tests above are only proof if they ran the real entry point.
    assert OPS_RUNNER.is_file() and os.access(OPS_RUNNER, os.X_OK)
