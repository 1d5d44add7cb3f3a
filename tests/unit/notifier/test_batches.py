"""Many commands handled at once (:meth:`Notifier.handle_all`): each ends as if it had been handled alone.

The commands are the escalation engine's, as in test_service.py; the transport is in memory, or slowed down to show
how many sends are in flight at once.
"""

from __future__ import annotations

import asyncio
import email
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email import policy as email_policy
from typing import Any

import pytest

from services.notifier.command import BadCommand
from services.notifier.delivery import SendDeferred, wave_size
from services.notifier.service import Notifier, NotNow
from services.notifier.smtp import Delivery, MemoryTransport, TemporaryFailure
from shared.config import ConfigurationError, load_settings
from tests.factories import customer, invoice, payment
from tests.unit.notifier import test_service
from tests.unit.notifier.test_service import DUE, REMIND, Desk

desk = test_service.desk  # the fixture: a ledger (SQLite and PostgreSQL), the engine on a clock, a notifier


def client(desk: Desk, n: int, *, emails: Sequence[str] | None = None, amount: str = "100.00") -> dict[str, Any]:
    """Customer C-n with one invoice due on DUE; the reminder command the engine decides for it on REMIND."""
    addresses = list(emails) if emails is not None else [f"ap@client{n}.example"]
    desk.erp(customer(f"Client {n}", emails=addresses), invoice(f"INV-{n}", amount, due_date=DUE), customer_id=f"C-{n}")
    return desk.escalate(REMIND, customer_id=f"C-{n}")[-1]


def handle_all(desk: Desk, commands: list[dict[str, Any]]) -> list[Any]:
    return asyncio.run(desk.notifier.handle_all(commands))


def sent_ids(desk: Desk) -> list[str]:
    return [
        str(email.message_from_bytes(data, policy=email_policy.default)["Message-ID"])
        for _, _, data in desk.transport.sent
    ]


def test_a_batch_where_one_is_no_longer_due_one_is_refused_and_one_comes_twice_ends_each_as_alone(desk: Desk) -> None:
    # Given four reminders: C-1 paid since, C-2 to an address the server refuses for good, C-3 and C-4 due
    paid, refused, due, other = (client(desk, n) for n in (1, 2, 3, 4))
    desk.erp(payment("PAY-1", "100.00", allocations={"INV-1": "100.00"}), customer_id="C-1")
    desk.transport.refuse = {"ap@client2.example": (550, "5.1.1 no such mailbox")}
    desk.clock.now = datetime(2026, 11, 2, 9, 5, tzinfo=UTC)
    # When they come in one batch, C-3's twice (the relay published it again), with a body that is no command
    results = handle_all(desk, [paid, refused, due, {"command": "nonsense"}, due, other])
    # Then each ends as it would alone, in the batch's order
    statuses = [getattr(r, "status", type(r).__name__) for r in results]
    assert statuses == ["skipped", "failed", "sent", "BadCommand", "already_sent", "sent"]
    assert isinstance(results[3], BadCommand)
    assert results[0].dropped == ("INV-1",)
    # C-3 and C-4 got one message each, C-1 and C-2 none
    assert sorted(sent_ids(desk)) == sorted(f"<{c['command_id']}@relance.invalid>" for c in (due, other))
    assert desk.types("C-1")[-1] == "reminder.skipped"
    assert desk.types("C-2")[-3:] == ["reminder.sending", "reminder.failed", "task.created"]
    assert [t["kind"] for t in desk.data("task.created", "C-2")] == ["send_letter"]
    assert desk.types("C-3").count("reminder.sent") == 1 and desk.types("C-3").count("reminder.sending") == 1
    # And the batch again (every copy redelivered) changes nothing
    again = handle_all(desk, [paid, refused, due, other])
    assert [r.status for r in again] == ["already_skipped", "already_failed", "already_sent", "already_sent"]
    assert len(desk.transport.sent) == 2


class Slow(MemoryTransport):
    """A server that takes a while to answer, and counts the sends it has in hand at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.02)
            return await super().send(sender, recipients, data)
        finally:
            self.in_flight -= 1


def test_the_sends_of_a_batch_are_in_flight_together_and_each_goes_out_once(desk: Desk) -> None:
    commands = [client(desk, n) for n in range(8)]
    desk.transport = slow = Slow()
    desk.notifier = Notifier(desk.settings, desk.engine, slow, now=desk.clock, sleep=desk.slept)
    results = handle_all(desk, commands)
    assert [r.status for r in results] == ["sent"] * 8
    assert slow.most == 8  # MemoryTransport has no pool: every claimed message was in the server's hands at once
    assert sorted(sent_ids(desk)) == sorted(f"<{c['command_id']}@relance.invalid>" for c in commands)


def test_quiet_hours_and_a_deferring_server_hold_back_only_their_own_commands(desk: Desk) -> None:
    commands = [client(desk, n) for n in range(3)]
    desk.transport.script = [TemporaryFailure("421 busy", "421 4.3.2 busy")] * 5  # the first send's five tries
    results = handle_all(desk, commands)
    assert [type(r).__name__ if isinstance(r, Exception) else r.status for r in results].count("SendDeferred") == 1
    assert sum(1 for r in results if not isinstance(r, Exception) and r.status == "sent") == 2
    deferred = next(c for c, r in zip(commands, results, strict=True) if isinstance(r, SendDeferred))
    assert [r.status for r in handle_all(desk, commands)].count("sent") == 1  # the deferred one, in a new round
    assert desk.types(deferred["customer_id"]).count("reminder.deferred") == 1
    quiet = load_settings(database_url=desk.settings.database_url, quiet_hours="00:00-23:59", timezone="UTC")
    desk.notifier = Notifier(quiet, desk.engine, desk.transport, now=desk.clock, sleep=desk.slept)
    later = client(desk, 9)
    [held] = handle_all(desk, [later])
    assert isinstance(held, NotNow)
    assert len(desk.transport.sent) == 3


def test_a_message_whose_turn_comes_past_half_its_claim_s_lease_is_deferred_unsent_and_goes_in_the_next_round(
    desk: Desk,
) -> None:
    # Given a server that takes one message at a time, and slowly: each send takes eight minutes of the clock
    class Sluggish(MemoryTransport):
        async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
            desk.clock.now += timedelta(minutes=8)
            return await super().send(sender, recipients, data)

    first, second = client(desk, 1), client(desk, 2)
    desk.transport = sluggish = Sluggish(capacity=1)
    desk.notifier = Notifier(desk.settings, desk.engine, sluggish, now=desk.clock, sleep=desk.slept)
    # When both come in one batch (claims leased for RELANCE_SMTP_LEASE_SECONDS, 15 minutes)
    sent, late = handle_all(desk, [first, second])
    # Then the second's turn came 8 minutes after its claim, past half the lease: it was not sent, its round closed
    assert sent.status == "sent" and isinstance(late, SendDeferred)
    assert sent_ids(desk) == [f"<{first['command_id']}@relance.invalid>"]
    assert desk.types("C-2")[-2:] == ["reminder.sending", "reminder.deferred"]
    # and the redelivery sends it in a new round, once
    [again] = handle_all(desk, [second])
    assert again.status == "sent" and len(desk.transport.sent) == 2
    assert desk.types("C-2").count("reminder.sending") == 2 and desk.types("C-2").count("reminder.sent") == 1


def test_a_batch_larger_than_the_prefetch_or_no_smtp_connection_stops_start_up_saying_what_to_fix() -> None:
    with pytest.raises(ConfigurationError) as bigger:
        load_settings(notifier_prefetch=50, notifier_batch_size=100)
    assert "RELANCE_NOTIFIER_BATCH_SIZE: must be at most RELANCE_NOTIFIER_PREFETCH (50)" in str(bigger.value)
    with pytest.raises(ConfigurationError) as none:
        load_settings(notifier_smtp_connections=0)
    assert "RELANCE_NOTIFIER_SMTP_CONNECTIONS" in str(none.value)
    settings = load_settings(notifier_prefetch=50, notifier_batch_size=50, notifier_smtp_connections=2)
    assert (settings.notifier_batch_size, settings.notifier_smtp_connections) == (50, 2)


class Hung(MemoryTransport):
    """A server that answers its first ``answered`` messages, then holds every message it gets without answering
    (a worker killed now has these in flight)."""

    def __init__(self, answered: int, capacity: int) -> None:
        super().__init__(capacity=capacity)
        self.answered = answered
        self.held = 0

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> Delivery:
        if len(self.sent) >= self.answered:
            self.held += 1
            await asyncio.Event().wait()  # never answered
        return await super().send(sender, recipients, data)


def test_a_worker_killed_mid_batch_leaves_open_only_the_claims_in_flight_and_one_wave_not_the_batch(
    desk: Desk,
) -> None:
    # Given a batch of 30 reminders and a server over two connections that stops answering after five messages
    commands = [client(desk, n) for n in range(30)]
    desk.transport = hung = Hung(answered=5, capacity=2)
    desk.notifier = Notifier(desk.settings, desk.engine, hung, now=desk.clock, sleep=desk.slept)

    async def killed_once_both_connections_hang() -> None:
        batch = asyncio.ensure_future(desk.notifier.handle_all(commands))
        while hung.held < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)  # whatever the worker would claim meanwhile, it claims now
        batch.cancel()  # the worker dies here: nothing more is recorded

    asyncio.run(killed_once_both_connections_hang())
    # Then the claims left open (unconfirmed after the lease) are the two in flight and at most one wave besides
    claimed = [c for c in commands if "reminder.sending" in desk.types(c["customer_id"])]
    ended = [c for c in claimed if "reminder.sent" in desk.types(c["customer_id"])]
    assert len(ended) == 5 == len(desk.transport.sent)
    assert 2 <= len(claimed) - len(ended) <= 2 + wave_size(2)
    # and the rest of the batch was never claimed: the next worker sends it
    assert len(commands) - len(claimed) >= 30 - 5 - 2 - wave_size(2)
