"""The ``relance_*`` Prometheus metrics of a worker, in a registry of its own (one per worker process).

The names and labels are part of the deployed contract (dashboards and alert rules are written against them):
rename none. Each worker has its class here, holding the metrics it moves and no others, so that a relay does not
expose a timers gauge stuck at zero.

Cost on the batch path: a counter's child (the metric with its label values) is made once, when the worker starts
for the labels known then (outcomes), the first time a value is seen for the others (event and decision types, a
closed list, so the number of series stays bounded), and kept; counting is then a dict lookup and an increment.
Gauges that need a query are not set here but by :mod:`shared.observability.gauges`, on a thread of their own.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

from shared.observability import relance_version

# No *_created series: Prometheus tells a restarted counter by its drop, and they would double the series.
disable_created_metrics()  # type: ignore[no-untyped-call]

BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

EVENT_OUTCOMES = ("applied", "duplicate", "rejected")
EVALUATION_OUTCOMES = ("ok", "failed")
REMINDER_OUTCOMES = ("sent", "failed", "unconfirmed", "skipped", "deferred", "letter")
DELIVERY_OUTCOMES = ("delivered", "retried", "dead")


class WorkerMetrics:
    """What every worker exposes: which worker and version runs, its heartbeat, its batches, its dead letters."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry or CollectorRegistry()
        r = self.registry
        info = Gauge(
            "relance_worker_info",
            "Which relance worker and version runs (always 1).",
            ["service", "version"],
            registry=r,
        )
        info.labels(service, relance_version()).set(1)
        self.heartbeat = Gauge(
            "relance_heartbeat_timestamp_seconds", "Unix time of the worker loop's last round.", ["service"], registry=r
        ).labels(service)
        self.batch_size = Histogram(
            "relance_batch_size", "Items per batch or transaction.", ["service"], buckets=BATCH_BUCKETS, registry=r
        ).labels(service)
        self.commit_seconds = Histogram(
            "relance_commit_seconds",
            "Time of a batch's transaction, up to its commit.",
            ["service"],
            buckets=SECONDS_BUCKETS,
            registry=r,
        ).labels(service)
        self._dead_letters = Counter(
            "relance_dead_letters",
            "Messages sent to a dead-letter queue, by reason.",
            ["service", "reason"],
            registry=r,
        )
        self._dead_by_reason: dict[str, Counter] = {}
        self.queue_depth = Gauge(
            "relance_queue_depth", "Messages ready in the worker's queue (refreshed every 15 s).", ["queue"], registry=r
        )

    def batch(self, size: int, seconds: float) -> None:
        """A batch of ``size`` items, whose transaction took ``seconds``."""
        self.batch_size.observe(size)
        self.commit_seconds.observe(seconds)

    def dead_lettered(self, reason: str, count: int = 1) -> None:
        child = self._dead_by_reason.get(reason)
        if child is None:
            child = self._dead_by_reason[reason] = self._dead_letters.labels(self.service, reason)
        child.inc(count)


class IngestMetrics(WorkerMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("ingest", registry)
        self._events = Counter(
            "relance_events",
            "ERP events taken in, by event type and outcome.",
            ["service", "kind", "outcome"],
            registry=self.registry,
        )
        self._events_by: dict[tuple[str, str], Counter] = {}

    def events(self, kind: str, outcome: str, count: int = 1) -> None:
        """``count`` events of type ``kind`` (``unknown`` for a message that is not one) ended as ``outcome``."""
        child = self._events_by.get((kind, outcome))
        if child is None:
            child = self._events_by[(kind, outcome)] = self._events.labels(self.service, kind, outcome)
        child.inc(count)


class EscalationMetrics(WorkerMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("escalation", registry)
        r = self.registry
        evaluations = Counter("relance_evaluations", "Customers evaluated, by outcome.", ["outcome"], registry=r)
        self.evaluations = {outcome: evaluations.labels(outcome) for outcome in EVALUATION_OUTCOMES}
        self._decisions = Counter("relance_decisions", "Decision events recorded, by type.", ["type"], registry=r)
        self._decisions_by: dict[str, Counter] = {}
        self.consumer_lag = Gauge(
            "relance_consumer_lag_events",
            "Events in the log after the log follower's cursor (refreshed every 15 s).",
            ["service"],
            registry=r,
        ).labels(self.service)
        self.timers_due = Gauge("relance_timers_due", "Timers due now (refreshed every 15 s).", registry=r)
        self.timers_overdue = Gauge(
            "relance_timers_overdue", "Timers due more than 5 minutes ago (refreshed every 15 s).", registry=r
        )
        self.checkpoint_age = Gauge(
            "relance_checkpoint_age_seconds",
            "Age of the last signed checkpoint (NaN if there is none; refreshed every 15 s).",
            registry=r,
        )
        self.checkpoint_age.set(math.nan)
        self.rate_days_left = Gauge(
            "relance_rate_table_days_left",
            "Days until the interest rate table has no rate for the semester (0 or less: missing now).",
            ["table"],
            registry=r,
        )

    def decisions(self, kind: str, count: int = 1) -> None:
        child = self._decisions_by.get(kind)
        if child is None:
            child = self._decisions_by[kind] = self._decisions.labels(kind)
        child.inc(count)


class OutboxMetrics(WorkerMetrics):
    """A worker that hands the outbox's commands over by one transport (``amqp``: the relay; ``webhook``)."""

    def __init__(self, service: str, transport: str, registry: CollectorRegistry | None = None) -> None:
        super().__init__(service, registry)
        r = self.registry
        self.transport = transport
        self.published = Counter(
            "relance_commands_published", "Commands handed over, by transport.", ["transport"], registry=r
        ).labels(transport)
        self.outbox_pending = Gauge(
            "relance_outbox_pending", "Outbox rows not yet published (refreshed every 15 s).", ["transport"], registry=r
        ).labels(transport)
        self.outbox_oldest_age = Gauge(
            "relance_outbox_oldest_age_seconds",
            "Age of the oldest pending outbox row, 0 if none (refreshed every 15 s).",
            ["transport"],
            registry=r,
        ).labels(transport)
        self.outbox_dead = Gauge(
            "relance_outbox_dead", "Dead-lettered commands (refreshed every 15 s).", ["transport"], registry=r
        ).labels(transport)


class RelayMetrics(OutboxMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("relay", "amqp", registry)


class WebhookMetrics(OutboxMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("webhook", "webhook", registry)
        deliveries = Counter(
            "relance_webhook_deliveries", "Webhook POSTs, by outcome.", ["outcome"], registry=self.registry
        )
        self.deliveries = {outcome: deliveries.labels(outcome) for outcome in DELIVERY_OUTCOMES}


class NotifierMetrics(WorkerMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__("notifier", registry)
        reminders = Counter("relance_reminders", "Notifier commands, by outcome.", ["outcome"], registry=self.registry)
        self.reminders = {outcome: reminders.labels(outcome) for outcome in REMINDER_OUTCOMES}
        self.smtp_seconds = Histogram(
            "relance_smtp_seconds", "One SMTP transaction.", buckets=SECONDS_BUCKETS, registry=self.registry
        )

    def reminder(self, status: str) -> None:
        """A command's outcome; ``already_*`` (the command was handled before) counts as ``skipped``."""
        self.reminders.get(status, self.reminders["skipped"]).inc()
