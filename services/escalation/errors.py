"""The escalation service's errors: one root, :class:`EscalationError`, for what the service itself raises.

An error also derives from the builtin a caller would catch it as (:class:`MissingReferenceRate` is a
:class:`LookupError`), so ``except`` clauses written for the builtin keep working. Invalid configuration (a policy
file, the rate table's file) is :class:`shared.config.ConfigurationError`, as in every service; a ledger that
refuses or loses a write raises the ledger's own errors.
"""

from __future__ import annotations


class EscalationError(Exception):
    """Base of the escalation service's errors."""
