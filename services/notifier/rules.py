"""When and how fast a tenant's reminders may leave: quiet hours and days, and a rate limit per minute.

Defaults come from the settings (``RELANCE_NOTIFIER_RATE_PER_MINUTE``, ``RELANCE_QUIET_HOURS``,
``RELANCE_QUIET_DAYS``, ``RELANCE_TIMEZONE``); a tenant can override any of them in the sender file, under
``sending`` in its entry (or in ``default``)::

    default:
      company: ...
      sending: {rate_per_minute: 120, quiet_hours: "20:00-08:00", quiet_days: "sat,sun", timezone: Europe/Paris}
    tenants:
      acme-de:
        sending: {timezone: Europe/Berlin}

The rate limit is shared by every notifier worker: :func:`services.notifier.evidence.take_slot` counts each message
against the tenant's budget of the current minute in the ledger database, and a worker that finds the budget spent
waits for the next minute; quiet hours send the command to the retry queue until they end. The rules themselves are
pure: read once, asked without any I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.notifier.sender import SHIPPED_SENDER
from shared.config import ConfigurationError, Settings
from shared.quiet import Quiet

KEYS = ("rate_per_minute", "quiet_hours", "quiet_days", "timezone")


@dataclass(frozen=True, slots=True)
class SendingRules:
    rate_per_minute: int = 0  # 0: no limit
    quiet: Quiet = field(default_factory=Quiet)


def load_rules(settings: Settings, path: Path | None = None, tenant: str | None = None) -> SendingRules:
    """The tenant's rules: the settings, overridden by ``sending`` in the sender file; errors name file and field."""
    values: dict[str, Any] = {
        "rate_per_minute": settings.notifier_rate_per_minute,
        "quiet_hours": settings.quiet_hours,
        "quiet_days": settings.quiet_days,
        "timezone": settings.timezone,
    }
    path = path or SHIPPED_SENDER
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read the sender file: {exc}") from None
    entries = [("default", (document.get("default") or {}))]
    tenants = document.get("tenants") or {}
    if tenant is not None and isinstance(tenants, dict) and isinstance(tenants.get(tenant), dict):
        entries.append((f"tenants.{tenant}", tenants[tenant]))
    for where, entry in entries:
        sending = entry.get("sending") if isinstance(entry, dict) else None
        if sending is None:
            continue
        if not isinstance(sending, dict):
            raise ConfigurationError(f"{path}: {where}.sending must be a mapping of {', '.join(KEYS)}")
        unknown = sorted(set(sending) - set(KEYS))
        if unknown:
            raise ConfigurationError(f"{path}: {where}.sending: unknown key(s) {unknown}; known: {list(KEYS)}")
        values.update({key: value for key, value in sending.items() if value is not None})
    rate = values["rate_per_minute"]
    if not isinstance(rate, int) or isinstance(rate, bool) or rate < 0:
        raise ConfigurationError(f"{path}: sending.rate_per_minute must be a whole number >= 0 (0: no limit)")
    try:
        quiet = Quiet.parse(str(values["quiet_hours"]), str(values["quiet_days"]), str(values["timezone"]))
    except ValueError as exc:
        raise ConfigurationError(f"{path}: sending (tenant {tenant or 'default'}): {exc}") from None
    return SendingRules(rate_per_minute=rate, quiet=quiet)
