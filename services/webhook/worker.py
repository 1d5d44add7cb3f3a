"""``relance worker webhook``: deliver the ERP's commands as signed HTTP POSTs, for ERPs without AMQP.

Used instead of the AMQP relay for the ``erp`` family when ``RELANCE_ERP_TRANSPORT=webhook`` (the relay then leaves
``erp.*`` commands alone, so a command never goes out both ways). One delivery, in one database transaction:

1. lock the oldest due ``erp.*`` command with :func:`shared.ledger.outbox.claim` (a customer's oldest pending one
   only, so a customer's commands go out in order; rows waiting for their ``next_attempt_at`` are left alone);
2. POST its JSON (the bytes the relay would publish) to ``RELANCE_WEBHOOK_URL``, signed (see :func:`signature`);
3. a 2xx answer marks the command published. Anything else counts an attempt, keeps the error in ``last_error`` and
   sets ``next_attempt_at`` after an exponential, capped backoff; the ``RELANCE_WEBHOOK_MAX_ATTEMPTS``-th failure
   dead-letters the row (``dead_at``) and, in the same transaction, appends ``command.dead_lettered`` and a
   ``task.created`` (kind ``erp_command_failed``, shown on the collector's agenda) to the customer's stream.

A round repeats this for up to ``RELANCE_RELAY_BATCH_SIZE`` commands.

Delivery is at least once, like the relay's: a worker that dies after the receiver answered 2xx but before the commit
sends the command again, with the same ``X-Relance-Command-Id``; receivers deduplicate on it. Redirects are not
followed (a POST must not turn into a GET). A round stops at the first receiver it cannot reach, so a receiver that
is down costs one timeout per round rather than one per command. SIGTERM or SIGINT ends after the current round.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import structlog
from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import DBAPIError

from shared.config import ConfigurationError, Settings
from shared.contracts.events import (
    COLLECTION_HANDOVER,
    CREDIT_BLOCK,
    CREDIT_LIMIT_CHANGE,
    CREDIT_UNBLOCK,
    CommandDeadLettered,
    RelanceEvent,
    TaskCreated,
)
from shared.ledger.outbox import KINDS as ALL_KINDS
from shared.ledger.outbox import Command, claim, family, mark_dead, mark_published, retry_later
from shared.ledger.schema import events
from shared.ledger.store import Incoming, Ledger
from shared.logging import DATABASE_AVAILABLE
from shared.observability.gauges import outbox_gauges
from shared.observability.metrics import WebhookMetrics
from shared.observability.telemetry import Telemetry
from shared.runtime import Backoff, run_worker, wait_beating, wait_out_database
from shared.signing import signature

log = structlog.get_logger()

KINDS = tuple(kind for kind in ALL_KINDS if family(kind) == "erp")
DEAD_LETTERED = CommandDeadLettered.TYPE
TASK_KIND = "erp_command_failed"
_ERROR_CHARS = 300  # of a receiver's answer kept in last_error


# ------------------------------------------------------------------------------------------------------ signing
def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: bytes,
    signature_header: str,
    tolerance_seconds: int = 300,
    *,
    now: float | None = None,
) -> bool:
    """For receivers: True if ``X-Relance-Signature`` is the secret's over this timestamp and body, and is fresh.

    ``timestamp`` is the ``X-Relance-Timestamp`` header (unix seconds); a request older or newer than
    ``tolerance_seconds`` is refused, so a captured request cannot be replayed later. The comparison takes the same
    time whatever the signature, so it reveals nothing about the expected one.
    """
    try:
        moment = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - moment) > tolerance_seconds:
        return False
    return hmac.compare_digest(signature(secret, moment, body).encode(), str(signature_header).encode())


# ------------------------------------------------------------------------------------------------------ posting
@dataclass(frozen=True, slots=True)
class Attempt:
    """What one POST of a command came to."""

    delivered: bool
    status: int | None = None  # the receiver's HTTP status; None when it did not answer
    error: str = ""

    @property
    def unreachable(self) -> bool:
        return not self.delivered and self.status is None

    @property
    def refused(self) -> bool:
        """The receiver answered that it will not take the command (a 3xx or 4xx other than 429)."""
        return self.status is not None and 300 <= self.status < 500 and self.status != 429


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx is reported as an error: set RELANCE_WEBHOOK_URL to the final address


_opener = urllib.request.build_opener(_NoRedirect)


def request_for(command: Command, url: str, secret: str, now: float | None = None) -> urllib.request.Request:
    body = orjson.dumps(command.payload)
    timestamp = int(time.time() if now is None else now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "relance-webhook",
        "X-Relance-Command-Id": command.command_id,
        "X-Relance-Command": command.kind,
        "X-Relance-Timestamp": str(timestamp),
        "X-Relance-Signature": signature(secret, timestamp, body),
    }
    return urllib.request.Request(url, data=body, headers=headers, method="POST")


def post(command: Command, url: str, secret: str, timeout: float) -> Attempt:
    """POST one command; never raises for what the network or the receiver does."""
    try:
        with _opener.open(request_for(command, url, secret), timeout=timeout) as response:
            response.read(65536)
            return Attempt(True, response.status)
    except urllib.error.HTTPError as exc:
        with exc:
            answer = _one_line(exc.read(_ERROR_CHARS).decode("utf-8", "replace"))
        where = f" to {exc.headers.get('Location', '?')}" if 300 <= exc.code < 400 and exc.headers else ""
        return Attempt(False, exc.code, f"HTTP {exc.code}{where}" + (f": {answer}" if answer else ""))
    except urllib.error.URLError as exc:
        return Attempt(False, None, f"unreachable: {exc.reason}")
    except (OSError, ValueError, http.client.HTTPException) as exc:  # timeouts, resets, malformed answers
        return Attempt(False, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _one_line(text: str) -> str:
    return " ".join(text.split())[:_ERROR_CHARS]


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds before the next try after ``attempts`` failures: base, 2 * base, … up to the maximum, jittered."""
    backoff = Backoff(settings.webhook_backoff_max_seconds, initial=settings.webhook_backoff_seconds)
    backoff.attempts = max(attempts - 1, 0)
    return backoff.next()


# ------------------------------------------------------------------------------------------------------ the worker
@dataclass(slots=True)
class WebhookTotals:
    rounds: int = 0
    delivered: int = 0
    failed: int = 0
    dead_lettered: int = 0


def run(settings: Settings, *, stop: threading.Event | None = None) -> int:
    """Run one webhook worker until SIGTERM/SIGINT (or until ``stop`` is set); returns the exit status."""
    if settings.erp_transport != "webhook":
        raise ConfigurationError(
            "RELANCE_ERP_TRANSPORT is amqp, so `relance worker relay` delivers the ERP's commands: set "
            "RELANCE_ERP_TRANSPORT=webhook (with RELANCE_WEBHOOK_URL and RELANCE_WEBHOOK_SECRET) for every relance "
            "process to deliver them over HTTP instead"
        )
    telemetry = Telemetry.of(settings, WebhookMetrics(), broker=False)

    def start(engine: Engine, stop: threading.Event) -> int:
        if telemetry.side is not None:
            telemetry.refresh(outbox_gauges(telemetry.side, telemetry.metrics, KINDS))
        return WebhookWorker(settings, engine, stop, telemetry=telemetry).run()

    return run_worker(settings, "webhook", stop, start, telemetry)


class WebhookWorker:
    """The claim → POST → mark loop; several may run side by side (they lock different rows)."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        stop: threading.Event,
        *,
        telemetry: Telemetry[WebhookMetrics] | None = None,
    ) -> None:
        if settings.webhook_url is None or settings.webhook_secret is None:
            raise ConfigurationError("RELANCE_WEBHOOK_URL and RELANCE_WEBHOOK_SECRET are required for the webhook")
        self.settings = settings
        self.url = settings.webhook_url
        self._secret = settings.webhook_secret.get_secret_value()
        self.engine = engine
        self.stop = stop
        self.ledger = Ledger(engine)
        self.totals = WebhookTotals()
        telemetry = telemetry or Telemetry.offline(WebhookMetrics())
        self.metrics = telemetry.metrics
        self.health = telemetry.health
        self.health.totals = lambda: {
            "rounds": self.totals.rounds,
            "delivered": self.totals.delivered,
            "failed": self.totals.failed,
            "dead_lettered": self.totals.dead_lettered,
        }

    def run(self) -> int:
        log.info("webhook.started", url=self.url, batch_size=self.settings.relay_batch_size)
        database_backoff = Backoff(self.settings.retry_max_seconds)
        while not self.stop.is_set():
            self.health.beat()
            try:
                delivered = self.deliver_round()
                if database_backoff.attempts:
                    log.info(DATABASE_AVAILABLE, service="webhook", retries=database_backoff.attempts)
                database_backoff.reset()
                if not delivered:
                    wait_beating(self.stop, self.settings.relay_poll_ms / 1000, self.health)
            except DBAPIError as exc:
                wait_out_database("webhook", exc, database_backoff, self.stop, self.health)
        log.info("webhook.stopped", delivered=self.totals.delivered, rounds=self.totals.rounds)
        return 0

    def deliver_round(self) -> int:
        """POST what is due, up to a batch; returns how many commands the receiver accepted."""
        delivered = 0
        for _ in range(self.settings.relay_batch_size):
            if self.stop.is_set():
                break
            attempt = self.deliver_one()
            if attempt is None:
                break  # nothing due
            delivered += attempt.delivered
            if attempt.unreachable:
                break  # the receiver is down: the others wait for the next round
        self.totals.rounds += 1
        return delivered

    def deliver_one(self) -> Attempt | None:
        """Claim the oldest due command, POST it and record the outcome, in one transaction; None if none is due.

        One command per transaction: the row stays locked while it is in flight (other workers skip it, and
        ``relance outbox retry`` waits for it), and no transaction outlasts one POST, so the log's global readers,
        which wait for every transaction older than them, are never held back for more than that.
        """
        started = time.monotonic()
        with self.engine.begin() as conn:
            claimed = claim(conn, 1, KINDS, datetime.now(UTC))
            if not claimed:
                return None
            command = claimed[0]
            attempt = post(command, self.url, self._secret, self.settings.webhook_timeout)
            now = datetime.now(UTC)
            attempts = command.attempts + 1
            delay: float | None = None
            if attempt.delivered:
                mark_published(conn, [command.id], now)
            elif attempts >= self.settings.webhook_max_attempts:
                self._dead_letter(conn, command, attempts, attempt.error, now)
            else:
                delay = retry_delay(self.settings, attempts)
                retry_later(conn, command.id, attempt.error, now + timedelta(seconds=delay))
        self.metrics.batch(1, time.monotonic() - started)
        self._log(command, attempt, delay)
        return attempt

    def _dead_letter(self, conn: Connection, command: Command, attempts: int, error: str, now: datetime) -> None:
        """Give up on the command and say so in the customer's stream, in the caller's transaction."""
        mark_dead(conn, command.id, error, now)
        rounds = _dead_letters(conn, command)
        fact = CommandDeadLettered(
            command_id=command.command_id, command=command.kind, attempts=attempts, last_error=error
        )
        task = TaskCreated(**task_data(command, now))
        items = [
            self._incoming(command, fact_id(command.command_id, f"dead/{rounds + 1}"), fact, now),
            self._incoming(command, fact_id(command.command_id, "task"), task, now),
        ]
        outcomes = self.ledger.record(items, conn=conn)
        if outcomes[0].status != "applied":
            raise RuntimeError(f"cannot record {DEAD_LETTERED} for {command.command_id}: {outcomes[0].reason}")

    @staticmethod
    def _incoming(command: Command, event_id: str, event: RelanceEvent, at: datetime) -> Incoming:
        metadata = {"source": "webhook", "command_id": command.command_id}
        stream = (command.tenant, command.customer_id)
        return Incoming.of(event, stream=stream, event_id=event_id, occurred_at=at, metadata=metadata)

    def _log(self, command: Command, attempt: Attempt, delay: float | None) -> None:
        """After the commit: what became of the command (``delay``: until the next try; None: not retried)."""
        about: dict[str, Any] = {"command_id": command.command_id, "kind": command.kind, "tenant": command.tenant}
        about |= {"customer": command.customer_id, "attempts": command.attempts + 1}
        if attempt.delivered:
            self.totals.delivered += 1
            self.metrics.deliveries["delivered"].inc()
            self.metrics.published.inc()
            log.info("webhook.delivered", **about, status=attempt.status)
        elif delay is None:
            self.totals.dead_lettered += 1
            self.metrics.deliveries["dead"].inc()
            self.metrics.dead_lettered("max_attempts")
            log.error(
                "webhook.dead_lettered", **about, error=attempt.error, hint="a collector's task asks for it by hand"
            )
        else:
            self.totals.failed += 1
            self.metrics.deliveries["retried"].inc()
            if attempt.refused:
                log.warning(
                    "webhook.refused",
                    **about,
                    error=attempt.error,
                    retry_in=round(delay, 2),
                    hint="the receiver refused the command: check RELANCE_WEBHOOK_URL, the shared secret and the "
                    "receiver's logs",
                )
            else:
                log.warning("webhook.failed", **about, error=attempt.error, retry_in=round(delay, 2))


# ------------------------------------------------------------------------------------------------------ ledger facts
def fact_id(command_id: str, fact: str) -> str:
    """Deterministic event id of a fact about a command (``task``, ``dead/1``, ...)."""
    return "whk-" + hashlib.sha256(f"{command_id}\x1f{fact}".encode()).hexdigest()[:40]


_BY_HAND = {
    COLLECTION_HANDOVER: "hand the invoices over to collection in the ERP by hand",
    "erp.promise_to_pay": "record the customer's promise in the ERP by hand",
    "erp.dispute_opened": "record the dispute in the ERP by hand",
    "erp.dispute_resolved": "record the dispute's resolution in the ERP by hand",
    "erp.payment_plan": "record the payment plan in the ERP by hand",
    CREDIT_LIMIT_CHANGE: "change the customer's credit limit in the ERP by hand",
}


def task_data(command: Command, at: datetime) -> dict[str, Any]:
    """The collector's task for a command the ERP never received: one per command, whatever the dead letters."""
    payload = command.payload
    overdue: dict[str, str] = payload.get("overdue") or {}
    currency = max(overdue, key=lambda c: Decimal(overdue[c])) if overdue else ""
    if command.kind in (CREDIT_BLOCK, CREDIT_UNBLOCK):
        action = "block" if command.kind == CREDIT_BLOCK else "unblock"
        about = f" (block {payload.get('block_id', '-')})"
        by_hand = f"{action} the customer's credit in the ERP by hand"
    else:
        about, by_hand = "", _BY_HAND.get(command.kind, "do in the ERP by hand what it says")
    return {
        "task_id": fact_id(command.command_id, "task"),
        "kind": TASK_KIND,
        "due_on": at.date().isoformat(),
        "invoice_ids": [],
        "currency": currency,
        "amount_at_risk": overdue.get(currency, "0"),
        "note": (
            f"the ERP did not receive {command.kind} {command.command_id}{about}: "
            f"{by_hand}, or fix the receiver and run "
            f"`relance outbox retry --command-id {command.command_id}`"
        ),
        "command": command.kind,
        "command_id": command.command_id,
    }


def _dead_letters(conn: Connection, command: Command) -> int:
    """How many times this command was dead-lettered before (it may have been re-armed since)."""
    query = select(events.c.data).where(
        events.c.tenant == command.tenant,
        events.c.customer_id == command.customer_id,
        events.c.event_type == DEAD_LETTERED,
    )
    return sum(1 for (data,) in conn.execute(query) if data.get("command_id") == command.command_id)
