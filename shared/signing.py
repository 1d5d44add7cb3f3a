"""The signature relance's HTTP messages carry: the webhook's commands to the ERP, and the ERP's events posted to
``POST /api/v1/ingest``. One scheme both ways, so an ERP signs what it sends as it checks what it receives."""

from __future__ import annotations

import hashlib
import hmac


def signature(secret: str | bytes, timestamp: int | str, body: bytes) -> str:
    """``sha256=`` + hex HMAC-SHA256 of ``f"{timestamp}."`` followed by the body, keyed with the shared secret."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
