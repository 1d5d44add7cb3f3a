"""The ledger's errors: one root, and a subclass for each thing a caller can do about a refused write.

:class:`LedgerUnavailable` (and :class:`LedgerNeedsAttention`) may pass: keep the work and retry it.
:class:`LedgerRefused` never will: set the item aside. :class:`LedgerConflict` means the retry budget was spent.
"""

from __future__ import annotations

from shared.ledger.refusal import Refusal


class LedgerError(Exception):
    """Base of the ledger's errors."""


class LedgerUnavailable(LedgerError):
    """The database cannot be reached or refused the work for a reason a retry may cure."""


class LedgerNeedsAttention(LedgerUnavailable):
    """The database refused the work for a reason that is neither the data nor an outage: a person must act.

    A schema out of step with the code (SQLSTATE 42P01 undefined table), a role without its grants (42501), a damaged
    database (XX001). Waiting alone does not cure it, but it is no message's fault either: the work is kept and
    retried with backoff, so it goes through once someone fixed the database.
    """


class LedgerRefused(LedgerError):
    """The database refused the data itself (a data exception, an integrity violation): retrying the same rows can
    never succeed, the caller must find the item that causes it and set it aside."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.describe())
        self.refusal = refusal


class LedgerConflict(LedgerError):
    """Concurrent writers kept colliding past the retry budget (should not happen with row locks)."""
