"""The metric names relance's workers export, and Dramatiq's, against which dashboards, alerts and autoscalers are
checked: an expression naming anything else would watch a series that never exists.

relance's names are the workers' contract (README, "Metrics and health"); Dramatiq's are those of its Prometheus
middleware (``dramatiq.middleware.prometheus``), which the jobs worker serves on its own port.
"""

from __future__ import annotations

import re

RELANCE = {
    "relance_worker_info": "gauge",
    "relance_events_total": "counter",
    "relance_dead_letters_total": "counter",
    "relance_batch_size": "histogram",
    "relance_commit_seconds": "histogram",
    "relance_queue_depth": "gauge",
    "relance_consumer_lag_events": "gauge",
    "relance_outbox_pending": "gauge",
    "relance_outbox_oldest_age_seconds": "gauge",
    "relance_outbox_dead": "gauge",
    "relance_timers_due": "gauge",
    "relance_timers_overdue": "gauge",
    "relance_evaluations_total": "counter",
    "relance_decisions_total": "counter",
    "relance_reminders_total": "counter",
    "relance_smtp_seconds": "histogram",
    "relance_commands_published_total": "counter",
    "relance_webhook_deliveries_total": "counter",
    "relance_checkpoint_age_seconds": "gauge",
    "relance_rate_table_days_left": "gauge",
    "relance_heartbeat_timestamp_seconds": "gauge",
}
DRAMATIQ = {
    "dramatiq_messages_total": "counter",
    "dramatiq_message_errors_total": "counter",
    "dramatiq_message_retries_total": "counter",
    "dramatiq_message_rejects_total": "counter",
    "dramatiq_messages_inprogress": "gauge",
    "dramatiq_delayed_messages_inprogress": "gauge",
    "dramatiq_message_duration_milliseconds": "histogram",
}


def series() -> set[str]:
    """Every series name a scrape of relance and Dramatiq yields (a histogram's _bucket, _sum and _count)."""
    names = set()
    for name, kind in {**RELANCE, **DRAMATIQ}.items():
        names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"} if kind == "histogram" else {name}
    return names


_STRING = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels and durations left out)."""
    text = _STRING.sub('""', expression)
    text = _MATCHERS.sub("", text)
    text = _RANGES.sub("", text)
    text = _LABEL_LISTS.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name in KEYWORDS or name in ("inf", "nan", "Inf", "NaN"):
            continue
        names.add(name)
    return names
