"""The event store: one append-only, hash-chained stream per (tenant, customer), projections kept in step.

:class:`Ledger` is what a process holds: a :class:`~shared.ledger.writer.Writer` that records events (how a batch is
appended, locked and retried is told there) and a :class:`~shared.ledger.reader.Reader` for states, streams and the
whole log in commit order, over one engine and sharing the states this process committed (within a bound in bytes,
:mod:`shared.ledger.cache`); and ``verify``
(:mod:`shared.ledger.verify`). The projection rows are written by :mod:`shared.ledger.projections`. What goes in and
comes out (:mod:`shared.ledger.records`) and the errors (:mod:`shared.ledger.errors`) are importable from here too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from sqlalchemy import Connection, Engine

from shared.ledger.cache import StateCache
from shared.ledger.errors import LedgerConflict, LedgerError, LedgerNeedsAttention, LedgerRefused, LedgerUnavailable
from shared.ledger.reader import Reader
from shared.ledger.records import LOG_START, Cursor, EventKey, Incoming, Outcome, RecordedEvent, Status, StreamKey
from shared.ledger.state import CustomerState
from shared.ledger.verify import VerifyReport, verify
from shared.ledger.writer import Writer

__all__ = [
    "Cursor",
    "EventKey",
    "Incoming",
    "Ledger",
    "LedgerConflict",
    "LedgerError",
    "LedgerNeedsAttention",
    "LedgerRefused",
    "LedgerUnavailable",
    "Outcome",
    "RecordedEvent",
    "Status",
    "StreamKey",
]


DEFAULT_CACHE_BYTES = 96 * 1024 * 1024  # the default of ``RELANCE_STATE_CACHE_MB``


class Ledger:
    """One process's event store (a Ledger belongs to one thread: one per worker process)."""

    def __init__(self, engine: Engine, *, max_attempts: int = 50, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.engine = engine
        cache = StateCache(cache_bytes)  # committed states by stream, within cache_bytes
        self.writer = Writer(engine, cache, max_attempts=max_attempts)
        self.reader = Reader(engine, cache)

    def record(self, items: Sequence[Incoming], *, conn: Connection | None = None) -> list[Outcome]:
        """Apply the items in one transaction (or in ``conn``'s); see :meth:`Writer.record`."""
        return self.writer.record(items, conn=conn)

    def state(self, tenant: str, customer_id: str) -> CustomerState:
        """The customer's projected state as committed; see :meth:`Reader.state`."""
        return self.reader.state(tenant, customer_id)

    def states(self, keys: Sequence[StreamKey]) -> dict[StreamKey, CustomerState]:
        """Many customers' states in one round trip of three queries; see :meth:`Reader.states`."""
        return self.reader.states(keys)

    def known_event_ids(self, tenant: str, event_ids: Iterable[str]) -> set[str]:
        """Which of these event ids the tenant's log already holds."""
        return self.reader.known_event_ids(tenant, event_ids)

    def read_stream(self, tenant: str, customer_id: str, from_version: int = 1) -> list[RecordedEvent]:
        return self.reader.read_stream(tenant, customer_id, from_version)

    def fold(self, tenant: str, customer_id: str) -> CustomerState:
        """Rebuild a customer's state from the log alone (what an auditor's replay computes)."""
        return self.reader.fold(tenant, customer_id)

    def read_all(self, after: Cursor = LOG_START, limit: int = 1000) -> tuple[list[RecordedEvent], Cursor]:
        """Events after the cursor in an order no later commit can insert into; see :meth:`Reader.read_all`."""
        return self.reader.read_all(after, limit)

    def iter_all(self, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        return self.reader.iter_all(batch_size)

    def streams(self, tenant: str | None = None) -> list[StreamKey]:
        return self.reader.streams(tenant)

    def verify(self, tenant: str | None = None, customer_id: str | None = None) -> VerifyReport:
        """Check the log, the projections and the checkpoints (see :mod:`shared.ledger.verify`)."""
        return verify(self.engine, tenant, customer_id)


def remember(ledger: Ledger, states: Iterable[CustomerState]) -> None:
    """Keep states the caller just read as committed in ``ledger``'s cache, so its next append to their streams
    does not load them again (the writer still compares each one's version with the stream's under its lock, and
    loads a state anew if anyone appended since). The caller must not use them once it appends to their streams:
    the writer folds the new events into them."""
    ledger.writer._remember(states)
