"""The demo's last day seen from a collector's agenda (``relance agenda``): its figures, and what it must hold.

The agenda of the demo's last day must hold only open work: one line per customer and kind, each line's tasks
still open that day (none done, snoozed past it or whose cause has gone: see :mod:`shared.ledger.tasks`), and the
invoices said by their numbers, never by relance's internal ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from services.escalation.agenda import AgendaItem, build_agenda
from services.escalation.interest import RateTable
from shared.ledger.state import CustomerState
from shared.ledger.tasks import open_tasks, task_views

OLD_DAYS = 30  # a line whose oldest task is older than this is "old" in the figures


@dataclass
class AgendaFigures:
    """Per tenant: the lines of the last day's agenda, the old ones, the tasks closed by themselves (by cause)."""

    lines: Counter[str] = field(default_factory=Counter)
    old: Counter[str] = field(default_factory=Counter)
    open_tasks: Counter[str] = field(default_factory=Counter)
    causes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)


def check_agenda(states: Iterable[CustomerState], on: date, rates: RateTable | None) -> AgendaFigures:
    figures = AgendaFigures()
    by_tenant: dict[str, list[CustomerState]] = {}
    for state in states:
        by_tenant.setdefault(state.tenant, []).append(state)
        for view in task_views(state, on):
            if view.status == "closed" and view.cause:
                figures.causes[view.cause] += 1
        figures.open_tasks[state.tenant] += len(open_tasks(state, on))
    for tenant, tenant_states in sorted(by_tenant.items()):
        known = {s.customer_id: s for s in tenant_states}
        items = build_agenda(tenant_states, on, rates)
        figures.lines[tenant] = len(items)
        figures.old[tenant] = sum(1 for i in items if i.age_days > OLD_DAYS)
        figures.problems += _problems(tenant, items, known, on)
    return figures


def _problems(tenant: str, items: list[AgendaItem], known: dict[str, CustomerState], on: date) -> list[str]:
    problems: list[str] = []
    twice = [key for key, n in Counter((i.customer_id, i.kind) for i in items if i.customer_id).items() if n > 1]
    if twice:
        problems.append(f"agenda of {tenant}: {len(twice)} customer(s) with two lines of one kind, e.g. {twice[0]}")
    for item in items:
        state = known.get(item.customer_id)
        if state is None:
            continue
        still = {v.task_id for v in open_tasks(state, on)}
        gone = [t for t in item.task_ids if t not in still]
        if gone:
            problems.append(f"agenda of {tenant}: {item.customer_id} {item.kind} names task {gone[0]}, not open")
        numbers = tuple(state.invoices[i].number if i in state.invoices else i for i in item.invoices)
        if item.numbers != numbers:
            problems.append(f"agenda of {tenant}: {item.customer_id} {item.kind} does not say its invoices' numbers")
    return problems[:20]


def agenda_section(figures: AgendaFigures, on: date) -> list[str]:
    lines = [
        "",
        f"The collectors' agenda on {on.isoformat()} (`relance agenda`): open work only, one line per customer "
        "and kind",
    ]
    for tenant in sorted(figures.lines):
        lines.append(
            f"  {tenant}: {figures.lines[tenant]} line(s), {figures.old[tenant]} opened more than {OLD_DAYS} days "
            f"before; {figures.open_tasks[tenant]} open task(s)"
        )
    if figures.causes:
        closed = ", ".join(f"{cause} {n}" for cause, n in sorted(figures.causes.items(), key=lambda c: (-c[1], c[0])))
        lines.append(f"  tasks closed by themselves, their cause gone: {closed}")
    return lines
