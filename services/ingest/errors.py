"""The ingest service's errors: one root, :class:`IngestError`, for what the service itself raises.

A message the contract refuses is not an error but an outcome (a rejection, dead-lettered with its reason); a
ledger that refuses or loses a batch raises the ledger's own errors; invalid settings are
:class:`shared.config.ConfigurationError`, as in every service.
"""

from __future__ import annotations


class IngestError(Exception):
    """Base of the ingest service's errors."""
