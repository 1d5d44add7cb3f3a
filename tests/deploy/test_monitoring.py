"""deploy/grafana/relance.json and deploy/prometheus/alerts.yaml: shaped as Grafana and Prometheus read them, and
watching only series that exist (the metric names relance's workers and Dramatiq export, tests/deploy/metrics.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.metrics import RELANCE, metric_names, series

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "relance.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yaml"
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
SEVERITIES = {"critical", "warning", "info"}


@cache
def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return document


@cache
def alerts() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return document


def rules() -> list[dict[str, Any]]:
    return [rule for group in alerts()["groups"] for rule in group["rules"]]


def expressions() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def balanced(expression: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for char in re.sub(r'"(?:\\.|[^"\\])*"', '""', expression):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


# ---------------------------------------------------------------------------------------------------- the extractor
@pytest.mark.parametrize(
    ("expression", "names"),
    [
        (
            'sum by (service, le) (rate(relance_commit_seconds_bucket{service="ingest"}[5m]))',
            {"relance_commit_seconds_bucket"},
        ),
        (
            "time() - max by (service) (relance_heartbeat_timestamp_seconds) > 120",
            {"relance_heartbeat_timestamp_seconds"},
        ),
        ("a_total / ignoring (x) b offset 5m > 1e3 and on (y) c", {"a_total", "b", "c"}),
    ],
)
def test_the_metric_names_of_an_expression_leave_out_functions_labels_and_durations(
    expression: str, names: set[str]
) -> None:
    assert metric_names(expression) == names


# ---------------------------------------------------------------------------------------------------- dashboard
def test_the_dashboard_is_a_grafana_dashboard_whose_panels_query_real_metrics() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    assert [v["type"] for v in board["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names and names <= series(), (panel["title"], names - series())
            assert balanced(target["expr"]), target["expr"]


def test_the_dashboard_shows_every_metric_relance_exports() -> None:
    shown = {name.removesuffix("_bucket") for expression in expressions() for name in metric_names(expression)}
    assert set(RELANCE) - shown == set()
    assert any(name.startswith("dramatiq_") for name in shown)


# ---------------------------------------------------------------------------------------------------- alerts
def test_the_alerting_rules_are_shaped_as_prometheus_reads_them() -> None:
    assert set(alerts()) == {"groups"}
    groups = [group["name"] for group in alerts()["groups"]]
    assert len(groups) == len(set(groups))
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert set(rule) <= RULE_KEYS and {"alert", "expr", "labels", "annotations"} <= set(rule), rule["alert"]
        assert re.fullmatch(r"Relance[A-Z][A-Za-z]+", rule["alert"])
        assert DURATION.match(rule.get("for", "0m")), rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        names_used = metric_names(rule["expr"])
        assert names_used and names_used <= series(), (rule["alert"], names_used - series())
        assert balanced(rule["expr"]), rule["alert"]


def test_the_alerts_cover_what_an_operator_must_hear_about() -> None:
    watched = {rule["alert"]: metric_names(rule["expr"]) for rule in rules()}
    every = set().union(*watched.values())
    assert {
        "relance_consumer_lag_events",  # lag growing
        "relance_dead_letters_total",  # dead letters arriving
        "relance_outbox_oldest_age_seconds",  # outbox stuck
        "relance_rate_table_days_left",  # rate table running out
        "relance_checkpoint_age_seconds",  # checkpoint too old
        "relance_heartbeat_timestamp_seconds",  # a worker stalled
        "relance_worker_info",  # a worker down
    } <= every
    [rate_table] = [rule for rule in rules() if rule["alert"] == "RelanceRateTableRunningOut"]
    assert rate_table["expr"].endswith("< 30")
    [outbox] = [rule for rule in rules() if rule["alert"] == "RelanceOutboxStuck"]
    assert int(outbox["expr"].rpartition(">")[2]) <= 900


def test_a_broken_rule_fails_the_checks() -> None:
    # An alert on a metric nobody exports, which would never fire
    assert not metric_names("rate(relance_event_total[5m]) > 0") <= series()
    assert not balanced("sum(rate(relance_events_total[5m]) > 0")


def test_promtool_accepts_the_rules_where_it_is_installed() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed: the checks above stand for it")
    done = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------------- alerts firing
# (alert, input series {series: values}, evaluation time, the labels of the firing alert, its summary); a case whose
# labels are None expects no alert at that time. promtool's notation: '0+60x30' is 0, 60, …, 1800, a minute apart.
FIRING: list[tuple[str, dict[str, str], str, dict[str, str] | None, str]] = [
    (
        "RelanceOutboxStuck",
        {'relance_outbox_oldest_age_seconds{transport="amqp"}': "0+60x30"},
        "30m",
        {"transport": "amqp"},
        "relance outbox (amqp): a command has waited 30m 0s",
    ),
    ("RelanceOutboxStuck", {'relance_outbox_oldest_age_seconds{transport="amqp"}': "0+60x30"}, "14m", None, ""),
    (
        "RelanceRateTableRunningOut",
        {'relance_rate_table_days_left{table="ecb"}': "29x120"},
        "90m",
        {"table": "ecb"},
        "relance: the ecb reference rates run out in 29 days",
    ),
    ("RelanceRateTableRunningOut", {'relance_rate_table_days_left{table="ecb"}': "45x120"}, "90m", None, ""),
    (
        "RelanceWorkerStalled",
        {'relance_heartbeat_timestamp_seconds{service="ingest"}': "0x10"},
        "6m",
        {"service": "ingest"},
        "relance ingest: no heartbeat for 6m 0s",
    ),
    ("RelanceWorkerStalled", {'relance_heartbeat_timestamp_seconds{service="ingest"}': "0+60x10"}, "6m", None, ""),
    (
        "RelanceDeadLetters",
        {'relance_dead_letters_total{service="ingest",reason="schema"}': "0 0 0 3 3 3"},
        "4m",
        {"service": "ingest", "reason": "schema"},
        "relance ingest: messages dead-lettered (schema)",
    ),
    ("RelanceDeadLetters", {'relance_dead_letters_total{service="ingest",reason="schema"}': "3x10"}, "8m", None, ""),
    (
        "RelanceWorkerDown",
        {f'relance_worker_info{{service="{s}",version="1"}}': "1x10" for s in ("ingest", "escalation", "relay")},
        "8m",
        {"service": "notifier"},
        "relance notifier: no worker running",
    ),
    (
        "RelanceCheckpointTooOld",
        {"relance_checkpoint_age_seconds": "172800+60x60"},
        "40m",
        {},
        "relance: the last signed checkpoint is 2d 0h 40m 0s old",
    ),
    (
        "RelanceLagGrowing",
        {'relance_consumer_lag_events{service="ingest"}': "10000+100x30"},
        "25m",
        {"service": "ingest"},
        "relance ingest: 12500 events behind, and growing",
    ),
    ("RelanceLagGrowing", {'relance_consumer_lag_events{service="ingest"}': "12000-100x30"}, "25m", None, ""),
]


def test_the_alerts_fire_on_the_series_they_watch_and_not_otherwise(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package has it)")
    by_name = {rule["alert"]: rule for rule in rules()}
    tests = []
    for alert, series_values, at, labels, summary in FIRING:
        expected = []
        if labels is not None:
            rule = by_name[alert]
            description = " ".join(rule["annotations"]["description"].split())
            for name, value in labels.items():
                description = description.replace(f"{{{{ $labels.{name} }}}}", value)
            assert "{{" not in description, alert
            expected = [
                {
                    "exp_labels": {**rule["labels"], **labels},
                    "exp_annotations": {"summary": summary, "description": description},
                }
            ]
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": name, "values": values} for name, values in series_values.items()],
                "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
            }
        )
    cases = tmp_path / "alerts_test.yaml"
    cases.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests}))
    done = subprocess.run([promtool, "test", "rules", str(cases)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
