"""The command line's own errors: one root, :class:`CliError`.

A command reports an expected failure in one line on stderr and a non-zero exit status; invalid settings and
files are :class:`shared.config.ConfigurationError` (exit 78), as in every service.
"""

from __future__ import annotations


class CliError(Exception):
    """Base of the command line's own errors."""
