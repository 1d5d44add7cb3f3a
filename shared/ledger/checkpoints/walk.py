"""One streamed pass over the log in replay order, and the comparison of what it sees with a checkpoint."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select

from shared.ledger.checkpoints.document import (
    Checkpoint,
    Head,
    Horizon,
    StreamKey,
    merkle_root,
    order_line,
    sorted_leaves,
)
from shared.ledger.db import is_postgres
from shared.ledger.hashing import utc
from shared.ledger.schema import events


@dataclass(frozen=True, slots=True)
class Seen:
    """An event as the walk reads it."""

    tenant: str
    customer_id: str
    version: int
    tx_id: int | None
    position: int
    recorded_at: datetime


@dataclass
class Cut:
    """The log as a checkpoint at some horizon sees it, computed now."""

    events: int
    last: tuple[int | None, int] | None
    newest_recorded_at: datetime | None
    order_hash: str
    heads: dict[StreamKey, Head]  # live view during the walk: use it inside the callback only


def walk(
    conn: Connection,
    horizons: Sequence[Horizon],
    at_horizon: Callable[[int, Cut], None],
    *,
    scope: tuple[str | None, str | None] = (None, None),
    on_event: Callable[[Seen, int], None] | None = None,
) -> Cut:
    """Read the log once in replay order and call ``at_horizon(i, cut)`` as each horizon is passed.

    ``horizons`` must be sorted by coverage (each covers what the previous one does). ``on_event(seen, passed)``
    sees every event with the number of horizons already passed, i.e. of those that do not cover it.
    Only light columns are read, in one streamed SELECT. Returns the cut of the whole log (its heads: the streams'
    latest versions). ``scope`` restricts the walk to a tenant or a stream; the order hash then means nothing.
    """
    postgres = is_postgres(conn)
    query = select(
        events.c.position,
        events.c.tx_id,
        events.c.tenant,
        events.c.customer_id,
        events.c.version,
        events.c.hash,
        events.c.recorded_at,
    )
    tenant, customer = scope
    if tenant is not None:
        query = query.where(events.c.tenant == tenant)
    if customer is not None:
        query = query.where(events.c.customer_id == customer)
    query = query.order_by(events.c.tx_id, events.c.position) if postgres else query.order_by(events.c.position)
    hasher = hashlib.sha256()
    heads: dict[StreamKey, Head] = {}
    count = 0
    last: tuple[int | None, int] | None = None
    newest: datetime | None = None
    passed = 0

    def cut() -> Cut:
        return Cut(count, last, newest, hasher.hexdigest(), heads)

    result = conn.execute(query, execution_options={"stream_results": True, "yield_per": 5000})
    for position, tx_id, row_tenant, row_customer, version, hash_, recorded_at in result:
        while passed < len(horizons) and not horizons[passed].covers(tx_id, position):
            at_horizon(passed, cut())
            passed += 1
        recorded_at = utc(recorded_at)
        if on_event is not None:
            on_event(Seen(row_tenant, row_customer, version, tx_id, position, recorded_at), passed)
        newest = recorded_at if newest is None else max(newest, recorded_at)
        hasher.update(order_line(position, tx_id, row_tenant, row_customer, version, hash_))
        key = (row_tenant, row_customer)
        known = heads.get(key)
        if known is None or version > known[0]:
            heads[key] = (version, hash_)
        count += 1
        last = (tx_id, position)
    while passed < len(horizons):
        at_horizon(passed, cut())
        passed += 1
    return cut()


def compare_cut(checkpoint: Checkpoint, cut: Cut, *, scope: tuple[str | None, str | None] = (None, None)) -> list[str]:
    """What differs between a checkpoint and the log as it covers it now; empty if the covered history is intact."""
    problems: list[str] = []
    label = checkpoint.label
    tenant, customer = scope
    whole = tenant is None and customer is None

    def in_scope(key: StreamKey) -> bool:
        return (tenant is None or key[0] == tenant) and (customer is None or key[1] == customer)

    recorded = {(t, c): (v, h) for t, c, v, h in checkpoint.leaves if in_scope((t, c))}
    for key, (version, head) in recorded.items():
        where = f"{key[0]}/{key[1]}"
        now = cut.heads.get(key)
        if now is None:
            problems.append(
                f"{where}: {label} recorded it at version {version}; the log now has none of its events in that "
                "range (stream removed, or its events moved out of the checkpointed range)"
            )
        elif now[0] != version:
            problems.append(
                f"{where}: {label} recorded it at version {version}; the log now has version {now[0]} in that range "
                f"({'events removed' if now[0] < version else 'events inserted into checkpointed history'})"
            )
        elif now[1] != head:
            problems.append(
                f"{where} v{version}: history rewritten since {label} (head hash {head[:12]}… then, {now[1][:12]}… now)"
            )
    for key in sorted(k for k in cut.heads if k not in recorded and in_scope(k)):
        problems.append(
            f"{key[0]}/{key[1]}: {cut.heads[key][0]} event(s) inside the range of {label}, which did not cover this "
            "stream (events inserted into checkpointed history)"
        )
    if whole:
        if cut.events != checkpoint.events:
            problems.append(f"{label} covered {checkpoint.events} event(s); the log now has {cut.events} in its range")
        if cut.order_hash != checkpoint.order_hash:
            problems.append(
                f"{label}: the global order of the events it covers changed (positions or transaction ids moved, "
                "or events inserted or removed)"
            )
        if not problems and merkle_root(sorted_leaves(cut.heads)) != checkpoint.merkle_root:
            problems.append(f"{label}: the Merkle root of the streams' heads differs")
    return problems
