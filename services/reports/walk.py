"""A customer's state at several instants from one pass over its stream, with the ledger's own fold.

:func:`states_at` gives what :func:`shared.ledger.asof.fold_as_of` gives at each instant, from one read of the
stream: an event belongs to the account as of every instant from some point on (:func:`shared.ledger.asof.included`
holds for ``at`` once it holds for an earlier one), so the instants that have taken the same events so far share one
state, and a group splits (its state copied) only when an event belongs to its later instants and not yet to its
earlier ones. Each event is folded with :meth:`CustomerState.apply` exactly as ``fold_as_of`` folds it, in version
order, so the state at each instant is the same as a fold as of that instant alone would give. Events usually come
in the order they occurred, so a stream folded for six month ends costs little more than one fold.

Days are closed at their end: a report "as of 2026-11-30" takes every event of that day (:func:`end_of`).
"""

from __future__ import annotations

import calendar
import copy
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, date, datetime, time

from shared.contracts.events import parse
from shared.ledger.asof import Reading, included, states_as_of
from shared.ledger.hashing import utc
from shared.ledger.records import RecordedEvent
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger

READING: Reading = "occurred"  # reports show the business view of a day, with everything known today


def end_of(day: date) -> datetime:
    """The last instant of ``day`` in UTC: the instant a report as of that day is folded at."""
    return datetime.combine(day, time.max, UTC)


def month_end(day: date) -> date:
    return day.replace(day=calendar.monthrange(day.year, day.month)[1])


def months_back(day: date, months: int) -> date:
    """The same day ``months`` calendar months earlier, the month's last day where it is shorter (31 March less one
    month is 28 or 29 February)."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return date(year, month + 1, min(day.day, last))


def month_ends(as_of: date, months: int) -> list[date]:
    """The ``months`` closing days of a trend ending on ``as_of``, oldest first: the previous months' last days, and
    ``as_of`` itself (a month end or not)."""
    if months < 1:
        raise ValueError(f"a trend needs at least one month, not {months}")
    ends = [month_end(months_back(as_of.replace(day=1), back)) for back in range(months - 1, 0, -1)]
    return [*ends, as_of]


def states_at(
    stream: Sequence[RecordedEvent],
    instants: Sequence[datetime],
    reading: Reading = READING,
    *,
    tenant: str,
    customer_id: str,
) -> list[CustomerState]:
    """The state of the customer as of each of ``instants`` (any order), in one pass over ``stream`` (version order).

    A state with ``version == 0`` means the customer had no event yet as of that instant.
    """
    wanted = [utc(at) for at in instants]
    order = sorted(range(len(wanted)), key=lambda i: wanted[i])
    ats = [wanted[i] for i in order]
    # groups[k] = (first index into ats, state shared by ats[first:next group's first])
    groups: list[tuple[int, CustomerState]] = (
        [(0, CustomerState(tenant=tenant, customer_id=customer_id))] if ats else []
    )
    for event in stream:
        first = _first_including(event, ats, reading)
        if first is None:
            continue
        typed = parse(event.event_type, event.data)
        k = 0
        while k < len(groups):
            start, state = groups[k]
            end = groups[k + 1][0] if k + 1 < len(groups) else len(ats)
            k += 1
            if end <= first:
                continue
            if start < first:  # the group's earlier instants do not take this event: they keep a copy of the state
                groups[k - 1] = (start, copy.deepcopy(state))
                groups.insert(k, (first, state))
                continue  # the later half, next in the loop, takes it
            state.apply(typed, event.occurred_at, event.event_id, recorded_at=event.recorded_at)
            state.version = event.version
            state.head_hash = event.hash
    result: list[CustomerState | None] = [None] * len(wanted)
    for k, (start, state) in enumerate(groups):
        end = groups[k + 1][0] if k + 1 < len(groups) else len(ats)
        for position in range(start, end):
            result[order[position]] = state
    return [state for state in result if state is not None]


def _first_including(event: RecordedEvent, ats: list[datetime], reading: Reading) -> int | None:
    """The first of the sorted instants whose account includes the event (all later ones do too), or None."""
    low, high = 0, len(ats)
    while low < high:
        middle = (low + high) // 2
        if included(event, ats[middle], reading):
            high = middle
        else:
            low = middle + 1
    return low if low < len(ats) else None


def tenant_states_at(
    ledger: Ledger, tenant: str, days: Sequence[date], customers: Iterable[str] | None = None
) -> Iterator[tuple[str, list[CustomerState]]]:
    """Each customer of ``tenant`` with its states at the end of each of ``days``: one read of each stream."""
    wanted = sorted(set(customers)) if customers is not None else [c for _, c in ledger.streams(tenant)]
    instants = [end_of(day) for day in days]
    for customer_id in wanted:
        stream = ledger.read_stream(tenant, customer_id)
        yield customer_id, states_at(stream, instants, tenant=tenant, customer_id=customer_id)


def tenant_states(ledger: Ledger, tenant: str, day: date) -> list[CustomerState]:
    """Each customer's state of ``tenant`` at the end of ``day`` (those with no event by then left out)."""
    return list(states_as_of(ledger, tenant, end_of(day), READING))
