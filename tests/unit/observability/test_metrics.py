"""The metric names and labels are a contract with the dashboards and alert rules: each worker exposes its own."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.observability.metrics import (
    EscalationMetrics,
    IngestMetrics,
    NotifierMetrics,
    RelayMetrics,
    WebhookMetrics,
    WorkerMetrics,
)

COMMON = {
    "relance_worker_info": ("gauge", {"service", "version"}),
    "relance_heartbeat_timestamp_seconds": ("gauge", {"service"}),
    "relance_batch_size": ("histogram", {"service"}),
    "relance_commit_seconds": ("histogram", {"service"}),
    "relance_dead_letters": ("counter", {"service", "reason"}),
    "relance_queue_depth": ("gauge", {"queue"}),
}
OWN: dict[type[WorkerMetrics], dict[str, tuple[str, set[str]]]] = {
    IngestMetrics: {"relance_events": ("counter", {"service", "kind", "outcome"})},
    EscalationMetrics: {
        "relance_evaluations": ("counter", {"outcome"}),
        "relance_decisions": ("counter", {"type"}),
        "relance_consumer_lag_events": ("gauge", {"service"}),
        "relance_timers_due": ("gauge", set()),
        "relance_timers_overdue": ("gauge", set()),
        "relance_checkpoint_age_seconds": ("gauge", set()),
        "relance_rate_table_days_left": ("gauge", {"table"}),
    },
    RelayMetrics: {
        "relance_commands_published": ("counter", {"transport"}),
        "relance_outbox_pending": ("gauge", {"transport"}),
        "relance_outbox_oldest_age_seconds": ("gauge", {"transport"}),
        "relance_outbox_dead": ("gauge", {"transport"}),
    },
    NotifierMetrics: {"relance_reminders": ("counter", {"outcome"}), "relance_smtp_seconds": ("histogram", set())},
}
OWN[WebhookMetrics] = {**OWN[RelayMetrics], "relance_webhook_deliveries": ("counter", {"outcome"})}


def families(metrics: WorkerMetrics) -> dict[str, tuple[str, set[str]]]:
    """Each family's type and label names, as a scrape shows them (labels of its samples; `le` left out)."""
    found: dict[str, tuple[str, set[str]]] = {}
    for collector in metrics.registry.collect():
        labels: set[str] = set()
        for sample in collector.samples:
            labels |= set(sample.labels) - {"le"}
        found[collector.name] = (collector.type, labels)
    return found


def exercise(metrics: WorkerMetrics) -> None:
    """Give every family with labels a child, so that its label names show in a scrape."""
    metrics.dead_lettered("schema")
    metrics.queue_depth.labels("q").set(1)
    if isinstance(metrics, IngestMetrics):
        metrics.events("invoice.issued", "applied")
    if isinstance(metrics, EscalationMetrics):
        metrics.decisions("reminder.requested")
        metrics.rate_days_left.labels("ecb").set(30)


@pytest.mark.parametrize("kind", list(OWN))
def test_each_worker_exposes_the_common_metrics_and_its_own_with_the_agreed_labels(kind: type[WorkerMetrics]) -> None:
    metrics = kind()  # type: ignore[call-arg]  # each worker's class names its service itself
    exercise(metrics)
    assert families(metrics) == {**COMMON, **OWN[kind]}
    text = generate_latest(metrics.registry).decode()
    assert f'relance_worker_info{{service="{metrics.service}",version="' in text
    assert "_created" not in text  # no doubled series


def test_a_counter_child_is_made_once_and_counts_what_it_is_told() -> None:
    metrics = IngestMetrics()
    metrics.events("invoice.issued", "applied", 3)
    child = metrics._events_by[("invoice.issued", "applied")]
    metrics.events("invoice.issued", "applied", 2)
    assert metrics._events_by[("invoice.issued", "applied")] is child
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    key = (("kind", "invoice.issued"), ("outcome", "applied"), ("service", "ingest"))
    assert samples[("relance_events_total", key)] == 5


def test_a_notifier_outcome_of_a_command_handled_before_counts_as_skipped() -> None:
    metrics = NotifierMetrics()
    for status in ("sent", "already_sent", "letter", "skipped"):
        metrics.reminder(status)
    assert metrics.reminders["sent"]._value.get() == 1
    assert metrics.reminders["skipped"]._value.get() == 2
    assert metrics.reminders["letter"]._value.get() == 1


def test_the_checkpoint_age_is_not_a_number_until_a_checkpoint_is_found() -> None:
    text = generate_latest(EscalationMetrics().registry).decode()
    assert "relance_checkpoint_age_seconds NaN" in text
