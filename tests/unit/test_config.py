"""config.yaml: validation with one-line errors naming the key, canonical hash, secrets."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import pytest
import yaml

from ops_runner.core.errors import ConfigError, SecretError, WorkbookError
from ops_runner.ledger.init import init_workbook
from ops_runner.workbook.config import (
    TEMPLATES,
    check_config,
    compute_config_hash,
    load_config,
    load_config_text,
    load_secret,
    mask_account,
    read_config_text,
)

TEMPLATE = yaml.safe_load((TEMPLATES / "config.yaml").read_text())


def _with(path: str, value: object) -> dict:
    raw = copy.deepcopy(TEMPLATE)
    *parents, leaf = path.split(".")
    node = raw
    for name in parents:
        node = node[name]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return raw


_DELETE = object()

# (dotted key, bad value, key named in the error, words the fix must contain)
BAD_CONFIGS = [
    ("universe.riks", ["SPY"], "universe.riks", "unknown key"),
    ("broker.acount", "DU1", "broker.acount", "unknown key"),
    ("strategy.lookback_months", "twelve", "strategy.lookback_months", "integer"),
    ("strategy.lookback_months", 0, "strategy.lookback_months", "minimum"),
    ("strategy.top_n", 1.5, "strategy.top_n", "integer"),
    ("strategy.absolute_momentum", "yes", "strategy.absolute_momentum", "true or false"),
    ("universe.risk", _DELETE, "universe.risk", "required"),
    ("universe.defensive", None, "universe.defensive", "required"),
    ("universe.defensive", "SPY", "universe.defensive", "risk universe"),
    ("universe.cash_proxy", "QQQ", "universe.cash_proxy", "risk universe"),
    ("universe.risk", ["SPY", "SPY"], "universe.risk", "twice"),
    ("universe.risk", ["spy"], "universe.risk[0]", "ticker"),
    ("strategy.top_n", 9, "strategy.top_n", "exceeds"),
    ("strategy.skip_months", 12, "strategy.skip_months", "smaller"),
    (
        "schedule.submission_window",
        {"start": "08:00", "end": "09:45"},
        "schedule.submission_window.end",
        "after the 09:30 open",
    ),
    (
        "schedule.submission_window",
        {"start": "08:00", "end": "09:29"},
        "schedule.submission_window.end",
        "09:28",
    ),
    (
        "schedule.submission_window",
        {"start": "09:20", "end": "09:10"},
        "schedule.submission_window.start",
        "before",
    ),
    (
        "schedule.submission_window",
        {"start": "8am", "end": "09:10"},
        "schedule.submission_window.start",
        "HH:MM",
    ),
    ("schedule.timezone", "Mars/Olympus", "schedule.timezone", "time zone"),
    ("broker.kind", "schwab", "broker.kind", "one of"),
    ("calendar.extra_closed", ["2025-13-01"], "calendar.extra_closed[0]", "YYYY-MM-DD"),
    ("risk.max_drawdown", 1.5, "risk.max_drawdown", "maximum"),
    ("data.secondary", None, "data.secondary", "differ"),  # the primary's own name, below
    ("broker.password", "hunter2", "broker.password", "OPS_RUNNER_PASSWORD"),
    ("strategy.blend", [{"lookback_months": 3}], "strategy.blend[0]", "weight"),
    ("strategy.blend", [{"lookback_months": 0, "weight": 1}], "strategy.blend[0]", "minimum"),
    ("strategy.blend", [{"lookback_months": 3, "weight": 0}], "strategy.blend[0]", "above 0"),
    ("strategy.blend", "3,6,12", "strategy.blend", "a list like"),
    ("costs.slippage_bps", -1, "costs.slippage_bps", "minimum"),
    ("alerts.smtp_token", "abc", "alerts.smtp_token", "secrets never go in config.yaml"),
    ("alerts.push.channels", "ntfy_phone", "alerts.push.channels", "a list of channel names"),
    ("alerts.push.channels", ["Ntfy-Phone"], "alerts.push.channels[0]", "lower-case letters"),
    ("alerts.push.channels", ["ntfy_phone", 7], "alerts.push.channels[1]", "not a channel name"),
    ("alerts.push.channels", ["ntfy_phone", "ntfy_phone"], "alerts.push.channels", "twice"),
    ("alerts.push.timeout_seconds", 0, "alerts.push.timeout_seconds", "minimum"),
]


@pytest.mark.parametrize(("path", "value", "key", "fix"), BAD_CONFIGS)
def test_check_config_when_value_is_bad_names_key_and_fix(path, value, key, fix):
    raw = _with(path, value)
    if path == "data.secondary":  # the same source as the primary
        raw["data"]["primary"] = raw["data"]["secondary"] = "av"
    with pytest.raises(ConfigError) as caught:
        check_config(raw)
    message = str(caught.value)
    assert caught.value.key == key
    assert key in message and fix in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_check_config_when_a_push_url_is_written_as_a_channel_refuses_without_echoing_it():
    url = "ntfys://ntfy.sh/ops-Zq7wK2mP9xLr4Tb"
    with pytest.raises(ConfigError) as caught:
        check_config(_with("alerts.push.channels", ["ntfy_phone", url]))
    message = str(caught.value)
    assert caught.value.key == "alerts.push.channels[1]" and "\n" not in message
    assert "a URL never goes in config.yaml" in message and "PUSH_NTFY_PHONE_URL" in message
    assert "Zq7wK2mP9xLr4Tb" not in message and "ntfy.sh" not in message


def test_check_config_when_push_channels_are_named_keeps_them_in_order():
    cfg = check_config(_with("alerts.push", {"channels": ["slack_ops", "ntfy_phone"]}))
    assert cfg["alerts"]["push"] == {"channels": ["slack_ops", "ntfy_phone"], "timeout_seconds": 10}


def test_check_config_when_ib_paper_account_is_live_id_refuses():
    raw = _with("broker.kind", "ib")
    raw["broker"]["account"] = "U1234567"
    with pytest.raises(ConfigError, match="DU"):
        check_config(raw)
    raw["broker"]["mode"] = "live"
    assert check_config(raw)["broker"]["mode"] == "live"


def test_check_config_when_template_fills_defaults_and_normalises():
    cfg = check_config({"universe": {"risk": ["SPY", "EFA"], "defensive": "AGG"}})
    assert cfg["strategy"]["lookback_months"] == 12
    assert cfg["universe"]["cash_proxy"] is None
    assert cfg["paths"]["kill_switch"] == "ops/KILL_SWITCH"
    assert cfg["schedule"]["submission_window"] == {"start": "08:00", "end": "09:20"}


def test_check_config_when_time_unquoted_reads_yaml_sexagesimal_correctly():
    # YAML 1.1 parses an unquoted 08:30 as 510 (minutes); it must still mean 08:30.
    raw = yaml.safe_load("start: 08:30\nend: 09:15\n")
    cfg = check_config(_with("schedule.submission_window", raw))
    assert cfg["schedule"]["submission_window"] == {"start": "08:30", "end": "09:15"}


def test_config_hash_when_key_order_whitespace_and_number_form_change_is_stable():
    text_a = (TEMPLATES / "config.yaml").read_text()
    raw = yaml.safe_load(text_a)
    raw["risk"]["max_drawdown"] = 0.250
    raw["qa"]["jump_band"] = 1.5e-1
    text_b = yaml.safe_dump(dict(reversed(list(raw.items()))), default_flow_style=True, indent=4)
    a = load_config_text(text_a, Path("/x")).hash
    b = load_config_text(text_b, Path("/y")).hash
    assert a == b
    assert len(a) == 64 and int(a, 16) >= 0


def test_config_hash_when_value_changes_differs_and_matches_independent_sha256():
    cfg = check_config(TEMPLATE)
    changed = check_config(_with("strategy.lookback_months", 6))
    assert compute_config_hash(cfg) != compute_config_hash(changed)
    # Independent computation of one canonical form: sorted keys, compact separators.
    small = {"b": 1, "a": [date_iso := "2025-01-09"]}
    expected = hashlib.sha256(b'{"a":["2025-01-09"],"b":1}').hexdigest()
    assert compute_config_hash(small) == expected, date_iso


def test_load_config_when_yaml_is_broken_reports_line(tmp_path):
    (tmp_path / "config.yaml").write_text("universe:\n  risk: [SPY\n  defensive: AGG\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert "line" in str(caught.value) and "\n" not in str(caught.value)


def test_load_config_when_no_workbook_says_run_init(tmp_path):
    with pytest.raises(WorkbookError, match="ops-runner init"):
        load_config(tmp_path / "nowhere")


def test_init_workbook_when_config_exists_never_overwrites(tmp_path):
    target = init_workbook(tmp_path)
    target.write_text(target.read_text().replace("workbook_name: demo", "workbook_name: mine"))
    init_workbook(tmp_path)
    assert load_config(tmp_path).values["workbook_name"] == "mine"
    assert (tmp_path / "ledger").is_dir() and (tmp_path / "ops").is_dir()


def test_load_config_when_env_home_set_uses_it(tmp_path, monkeypatch):
    init_workbook(tmp_path)
    monkeypatch.setenv("OPS_RUNNER_HOME", str(tmp_path))
    assert load_config().workbook == tmp_path.resolve()


def test_load_secret_when_env_set_returns_it_and_file_needs_0600(tmp_path):
    init_workbook(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(path.read_text().replace("  file: null", "  file: .secrets"))
    cfg = load_config(tmp_path)
    assert load_secret(cfg, "ib_password", {"OPS_RUNNER_IB_PASSWORD": "s3"}.get) == "s3"
    secrets = tmp_path / ".secrets"
    secrets.write_text("# broker\nIB_PASSWORD = from-file\n")
    os.chmod(secrets, 0o644)
    with pytest.raises(SecretError, match="chmod 600"):
        load_secret(cfg, "ib_password", {}.get)
    os.chmod(secrets, 0o600)
    assert load_secret(cfg, "ib_password", {}.get) == "from-file"
    with pytest.raises(SecretError, match="OPS_RUNNER_SMTP_PASSWORD"):
        load_secret(cfg, "smtp_password", {}.get)


@pytest.mark.parametrize(
    ("account", "shown"),
    [
        ("DU1234567", "DU*****67"),
        ("U7654321", "U7****21"),
        ("", "(none)"),
        (None, "(none)"),
        ("DU1", "***"),
    ],
)
def test_mask_account_when_shown_keeps_only_ends(account, shown):
    assert mask_account(account) == shown


def test_config_show_when_printed_masks_account(tmp_path, capsys):
    from ops_runner.cli import main

    init_workbook(tmp_path)
    assert main(["--workbook", str(tmp_path), "config", "show"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["broker"]["account"] == "DU*****00"


# -- numbers that are not numbers, and every mistake at once (issue 15, hole 3) ----------------

NON_FINITE = [
    ("risk.max_drawdown", ".nan"),  # passed every bound: the drawdown guard was off
    ("research.initial_cash", ".inf"),  # crashed broker check and the tick (InvalidOperation)
    ("costs.slippage_bps", "-.inf"),
    ("execution.min_trade_value", ".inf"),
    ("qa.jump_band", ".NaN"),
    ("broker.retry.wait_seconds", ".inf"),
    ("schedule.tick_deadline_minutes", ".nan"),
]


@pytest.mark.parametrize(("key", "text"), NON_FINITE)
def test_config_when_a_number_is_nan_or_infinite_refuses_it_naming_the_key(key, text):
    raw = copy.deepcopy(TEMPLATE)
    *parents, leaf = key.split(".")
    node = raw
    for name in parents:
        node = node[name]
    node[leaf] = yaml.safe_load(text)  # exactly what YAML makes of the text in a file
    with pytest.raises(ConfigError) as caught:
        check_config(raw)
    assert caught.value.key == key
    assert str(caught.value) == f"config error: {key}: {node[leaf]!r} is not a finite number"


def test_config_when_a_blend_weight_is_nan_refuses_it():
    raw = _with("strategy.blend", [{"lookback_months": 3, "weight": float("nan")}])
    with pytest.raises(ConfigError, match=r"strategy\.blend\[0\]\.weight: nan is not a finite"):
        check_config(raw)


def test_config_when_several_keys_are_wrong_reports_each_on_its_own_line_in_file_order():
    from ops_runner.workbook.config import ConfigProblems

    raw = _with("risk.max_drawdown", float("nan"))
    raw["research"]["initial_cash"] = float("inf")
    raw["broker"]["port"] = "4002"
    raw["strategy"]["lookbak_months"] = 12  # a typo: an unknown key
    with pytest.raises(ConfigProblems) as caught:
        check_config(raw)
    keys = [p.key for p in caught.value.problems]
    assert keys == ["strategy.lookbak_months", "broker.port", "research.initial_cash",
                    "risk.max_drawdown"]  # fmt: skip
    lines = str(caught.value).splitlines()
    assert len(lines) == 4 and all(line.startswith("config error: ") for line in lines)


@pytest.mark.subprocess
def test_config_check_cli_when_several_keys_are_wrong_prints_one_line_each(tmp_path):
    import subprocess
    import sys

    init_workbook(tmp_path)
    config = tmp_path / "config.yaml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("max_drawdown: 0.25", "max_drawdown: .nan")
    text = text.replace("initial_cash: 100000", "initial_cash: .inf")
    config.write_text(text, encoding="utf-8")
    exe = Path(sys.executable).with_name("ops-runner")
    for args in (["config", "check"], ["tick", "--now", "2025-11-26T15:00:00Z"],
                 ["broker", "check"]):  # fmt: skip
        done = subprocess.run([str(exe), "--workbook", str(tmp_path), *args],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.splitlines() == [
            "ops-runner: config error: research.initial_cash: inf is not a finite number",
            "ops-runner: config error: risk.max_drawdown: nan is not a finite number",
        ]


# -- strategy presets: small overlays of the base config --------------------------------------

PRESETS = ("gem", "topn", "gtaa5", "daa")


@pytest.mark.parametrize("name", PRESETS)
def test_preset_when_read_is_the_base_with_its_own_sections_in_place(name):
    preset = yaml.safe_load((TEMPLATES / f"{name}.yaml").read_text())
    assert preset.pop("extends") == "config.yaml"
    assert set(preset) == {"workbook_name", "universe", "strategy"}
    expected = check_config({**copy.deepcopy(TEMPLATE), **preset})
    text = read_config_text(TEMPLATES / f"{name}.yaml")
    assert load_config_text(text, Path("/x")).values == expected
    assert "extends" not in yaml.safe_load(text)
    base = (TEMPLATES / "config.yaml").read_text()
    kept = base[base.index("\ndata:") :]  # every base section after strategy, comments and all
    assert kept in text


@pytest.mark.parametrize("name", PRESETS)
def test_init_when_given_a_preset_writes_the_whole_config_without_extends(tmp_path, name):
    init_workbook(tmp_path, template=name)
    written = (tmp_path / "config.yaml").read_text()
    assert written == read_config_text(TEMPLATES / f"{name}.yaml")
    assert load_config(tmp_path).values["workbook_name"] == name
    assert "books:" in written and "backup:" in written  # sections the old copies had lost


def test_workbook_config_when_it_extends_a_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "config.yaml").write_text((TEMPLATES / "gem.yaml").read_text())
    (tmp_path / "base.yaml").write_text((TEMPLATES / "config.yaml").read_text())
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert "extends" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("preset", "words"),
    [
        ("extends: missing.yaml\nstrategy:\n  top_n: 1\n", "'missing.yaml' is not a config file"),
        ("extends: base.yaml\nnot_a_section:\n  x: 1\n", "'not_a_section' is not a section"),
        ("extends: [base.yaml]\n", "is not a config file"),
    ],
)
def test_preset_when_its_base_or_sections_are_wrong_fails_in_one_line(tmp_path, preset, words):
    (tmp_path / "base.yaml").write_text((TEMPLATES / "config.yaml").read_text())
    (tmp_path / "mine.yaml").write_text(preset)
    with pytest.raises(ConfigError) as caught:
        read_config_text(tmp_path / "mine.yaml")
    assert words in str(caught.value) and "\n" not in str(caught.value)


def test_preset_when_written_by_a_user_overlays_the_base_beside_it(tmp_path):
    (tmp_path / "base.yaml").write_text((TEMPLATES / "config.yaml").read_text())
    (tmp_path / "mine.yaml").write_text(
        "# my rotation\n\nextends: base.yaml\n\nuniverse:\n  risk: [SPY, EFA]\n"
        "  defensive: IEF\n  cash_proxy: BIL\n"
    )
    values = load_config_text(read_config_text(tmp_path / "mine.yaml"), tmp_path).values
    assert values["universe"]["risk"] == ["SPY", "EFA"] and values["universe"]["defensive"] == "IEF"
    assert values["strategy"] == check_config(copy.deepcopy(TEMPLATE))["strategy"]


# The daily Gateway restart against the 07:30-10:30 New York quiet hours, both ends included.
RESTART_TIMES = [
    ("07:29", True),
    ("07:30", False),
    ("08:15", False),
    ("10:30", False),
    ("10:31", True),
    ("23:45", True),
    ("03:00", True),
]


@pytest.mark.parametrize(("when", "accepted"), RESTART_TIMES)
def test_check_config_when_the_gateway_restarts_inside_the_quiet_hours_refuses_in_one_line(
    when, accepted
):
    raw = _with("broker.gateway.restart_time", when)
    if accepted:
        assert check_config(raw)["broker"]["gateway"]["restart_time"] == when
        return
    with pytest.raises(ConfigError) as caught:
        check_config(raw)
    message = str(caught.value)
    assert caught.value.key == "broker.gateway.restart_time" and "\n" not in message
    assert f"{when} is inside 07:30-10:30 New York" in message


def test_check_config_when_the_gateway_keeper_is_on_needs_ib_and_a_client_id_of_its_own():
    raw = _with("broker.gateway.enabled", True)
    raw["broker"]["gateway"]["client_id"] = raw["broker"]["client_ids"]["orders"]
    with pytest.raises(ConfigError) as caught:
        check_config(raw)
    lines = str(caught.value).splitlines()
    assert lines == [
        "config error: broker.gateway.enabled: keeps IB Gateway up, so it needs "
        "broker.kind: ib (it is sim)",
        "config error: broker.gateway.client_id: must differ from broker.client_ids (the "
        "keeper holds a session of its own beside the orders and read-only ones)",
    ]


def test_check_config_when_an_ib_password_is_written_under_the_gateway_refuses_it():
    raw = _with("broker.gateway.password", "hunter2")
    with pytest.raises(ConfigError) as caught:
        check_config(raw)
    assert "secrets never go in config.yaml" in str(caught.value)
    assert "hunter2" not in str(caught.value)
