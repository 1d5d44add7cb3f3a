"""Who may do what in a tenant: the four roles of a credit team and the permissions each one holds.

A user holds roles per tenant (``user_roles``); a user with no role in a tenant does not see that the tenant exists
(its URLs answer 404, like an unknown customer's). Least privilege: the auditor reads everything and changes nothing,
the administrator runs the installation (users, outbox, dead letters) and acts on no customer's account.
"""

from __future__ import annotations

from typing import Literal

Role = Literal["collector", "credit_manager", "auditor", "administrator"]
ROLES: tuple[Role, ...] = ("collector", "credit_manager", "auditor", "administrator")

READ = "read"  # the agenda, customers, timelines, evidence
ADMIN = "admin"  # users, the outbox and the dead letters

_WORK: frozenset[Role] = frozenset({"collector", "credit_manager"})
_MANAGE: frozenset[Role] = frozenset({"credit_manager"})
_REVIEW: frozenset[Role] = frozenset({"credit_manager", "auditor"})

PERMISSIONS: dict[str, frozenset[Role]] = {
    READ: frozenset(ROLES),
    ADMIN: frozenset({"administrator"}),
    # a collector's day
    "complete_task": _WORK,
    "snooze_task": _WORK,
    "assign_task": _WORK,
    "log_call": _WORK,
    "add_note": _WORK,
    "record_promise": _WORK,
    "open_dispute": _WORK,
    "resolve_dispute": _WORK,
    "propose_credit_limit": _WORK,
    "letter_posted": _WORK,  # the proof of a letter: its posting, its delivery or its return
    "letter_delivered": _WORK,
    "letter_returned": _WORK,
    # what commits the company: a credit manager's
    "agree_plan": _MANAGE,
    "waive_claim": _MANAGE,
    "pause": _MANAGE,
    "resume": _MANAGE,
    "decide_credit_limit": _MANAGE,
    # background jobs (services/jobs/registry.py), "job:<kind>": what reads, a credit manager or an auditor may
    # start; what changes something, a credit manager alone
    "job:escalation.replay": _REVIEW,
    "job:audit.export": _REVIEW,
    "job:reports.committee": _REVIEW,
    "job:ledger.checkpoint": _MANAGE,
    "job:relay.retry_dead": _MANAGE,
    "job:notifier.letters_batch": _MANAGE,
}
"""Permission (an action's name, or READ / ADMIN) -> the roles that hold it."""


def may_start(roles: frozenset[str], kind: str) -> bool:
    """Whether ``roles`` may start a background job of ``kind`` (a kind no line names: nobody)."""
    return allowed(roles, f"job:{kind}")


def allowed(roles: frozenset[str], permission: str) -> bool:
    """Whether any of ``roles`` (a user's roles in one tenant) holds ``permission``; unknown permissions: nobody."""
    return bool(roles & PERMISSIONS.get(permission, frozenset()))
