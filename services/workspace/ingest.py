"""``POST /api/v1/ingest``: ERP events over HTTP, for ERPs without AMQP.

The same contract v1, validation, dedupe and refusal reasons as AMQP ingest: the messages go to the one
``Ingestor`` of :mod:`services.ingest.service`, handed over by the composer (``services/cli/ingest_http.py``) as the
callable ``ingest(ledger, bodies, received_at) -> IngestAnswer`` of the ports; this module never imports it.

- Body: one envelope, or a JSON array of up to :data:`MAX_MESSAGES` envelopes. Each element is handed over as the
  bytes it was written with, so a message is judged exactly as the same bytes published to RabbitMQ would be (a body
  that is not an array is one message, even when it is not JSON: it is refused ``not_json`` like on AMQP).
- Authentication, per tenant, with the secrets of ``RELANCE_INGEST_SECRETS`` (YAML ``tenant: secret``):
  ``Authorization: Bearer <secret>``, or the webhook's own signature scheme (:mod:`services.webhook.worker`):
  ``X-Relance-Timestamp: <unix seconds>`` and ``X-Relance-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." +
  body>``, the timestamp within five minutes of relance's clock. Every comparison takes constant time and every
  tenant's secret is tried, so neither the answer nor its timing says which tenants exist.
- A message whose ``tenant`` is not the authenticated one is refused (kind ``wrong_tenant``), never applied.
- Answer 200 ``{"applied": [event ids], "duplicates": [event ids], "refused": [{"index", "event_id", "kind",
  "reason"}]}``; ``index`` is the message's place in the array (0 for a lone envelope). 401 without valid
  credentials, 413 over ``RELANCE_INGEST_MAX_BODY_BYTES``, 400 for an array that cannot be read, 503 while the ledger
  is unreachable (nothing was applied: send the same body again).

Refused messages are not kept in a store of their own: the AMQP dead-letter queue belongs to a broker this endpoint
does not need, and the ledger has no table for messages it never accepted. The answer itself carries each refusal
with its reason to the sender, synchronously (an AMQP publisher never learns it), and each refusal is logged
(``ingest.rejected`` by the ingestor, with its kind, reason and ids, as on AMQP).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Protocol

import structlog
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, SecretStr

from shared.config import Settings, read_ingest_secrets
from shared.contracts.erp import InvalidMessage, parse_event
from shared.ledger.store import Ledger, LedgerUnavailable
from shared.signing import signature

log = structlog.get_logger()

PATH = "/api/v1/ingest"
MAX_MESSAGES = 500
SIGNATURE_TOLERANCE_SECONDS = 300
WRONG_TENANT = "wrong_tenant"
RETRY_AFTER_SECONDS = 5


class Refused(BaseModel):
    index: int
    event_id: str | None
    kind: str  # not_json | schema | unknown_event_type | oversize | business_rule | storage | wrong_tenant
    reason: str


class IngestAnswer(BaseModel):
    applied: list[str]
    duplicates: list[str]
    refused: list[Refused]


IngestPort = Callable[[Ledger, Sequence[bytes], datetime], IngestAnswer]
"""What the composer hands over: apply these message bodies, received at that instant, with the AMQP ingestor."""


class IngestPorts(Protocol):
    """The part of the workspace's ports this router uses (``services/workspace/ports.py``'s ``Ports`` has it)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def ledger(self) -> Callable[[], Ledger]: ...
    @property
    def ingest(self) -> IngestPort | None: ...
    @property
    def now(self) -> Callable[[], datetime]: ...


class _Problem(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return JSONResponse({"detail": self.message}, status_code=self.status, headers=self.headers)


_HOW = (
    "send `Authorization: Bearer <the tenant's ingest secret>`, or sign the body: `X-Relance-Timestamp: <unix "
    'seconds>` and `X-Relance-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>." followed by the body>`'
)
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="relance ingest"'}


def router(ports: IngestPorts) -> APIRouter:
    """The route, reading the secrets now (the settings already checked the file at start-up)."""
    path = ports.settings.ingest_secrets
    secrets = read_ingest_secrets(path) if path is not None else {}
    return make_router(
        secrets=secrets,
        ingest=ports.ingest,
        ledger=ports.ledger,
        now=ports.now,
        max_body_bytes=ports.settings.ingest_max_body_bytes,
    )


def make_router(
    *,
    secrets: Mapping[str, SecretStr],
    ingest: IngestPort | None,
    ledger: Callable[[], Ledger],
    now: Callable[[], datetime],
    max_body_bytes: int,
) -> APIRouter:
    keys = {tenant: secret.get_secret_value().encode() for tenant, secret in secrets.items()}
    api = APIRouter()

    @api.post(
        PATH,
        response_model=IngestAnswer,
        tags=["ingest"],
        summary="Send ERP events (contract v1) over HTTP",
        description="One envelope or a JSON array of up to 500; authenticated per tenant by `Authorization: Bearer "
        '<secret>` or `X-Relance-Timestamp` + `X-Relance-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`'
        " (the webhook's scheme). Each message is validated, deduplicated and refused exactly as on AMQP.",
        responses={
            400: {"description": "An array relance cannot read, or an empty body"},
            401: {"description": "No valid credentials"},
            413: {"description": "Body over RELANCE_INGEST_MAX_BODY_BYTES"},
            503: {"description": "Ledger unreachable, or HTTP ingest not configured: nothing applied"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"type": "object", "description": "One envelope of contract v1"},
                                {"type": "array", "maxItems": MAX_MESSAGES, "items": {"type": "object"}},
                            ]
                        }
                    }
                },
            }
        },
    )
    async def ingest_events(request: Request) -> JSONResponse:
        try:
            if ingest is None or not keys:
                raise _Problem(
                    503,
                    "HTTP ingest is not configured here: set RELANCE_INGEST_SECRETS to a YAML file of "
                    "`tenant: secret` lines and restart",
                )
            bearer = _bearer(request.headers.get("authorization"))
            if bearer is None and "x-relance-signature" not in request.headers:
                raise _Problem(401, f"no credentials: {_HOW}", _CHALLENGE)
            tenant = _tenant_of_token(keys, bearer) if bearer is not None else None
            if bearer is not None and tenant is None:
                raise _Problem(401, "the Bearer token is no tenant's ingest secret", _CHALLENGE)
            if bearer is None:
                _fresh(request.headers.get("x-relance-timestamp"), now())
            body = await _body(request, max_body_bytes)
            if tenant is None:
                tenant = _tenant_of_signature(keys, request.headers, body)
            bodies = split(body)
            received_at = now()
            answer = await run_in_threadpool(_apply, ingest, ledger, tenant, bodies, received_at)
        except _Problem as problem:
            return problem.response()
        log.info(
            "ingest.http",
            tenant=tenant,
            messages=len(bodies),
            applied=len(answer.applied),
            duplicates=len(answer.duplicates),
            refused=len(answer.refused),
        )
        return JSONResponse(answer.model_dump(mode="json"))

    return api


# ------------------------------------------------------------------------------------------------ credentials
def _bearer(header: str | None) -> str | None:
    if header is None:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _Problem(401, f"the Authorization header is not `Bearer <secret>`: {_HOW}", _CHALLENGE)
    return token.strip()


def _tenant_of_token(keys: Mapping[str, bytes], token: str) -> str | None:
    """The tenant whose secret this is; every secret is compared, each in constant time."""
    given = token.encode("utf-8", "surrogateescape")
    found = None
    for tenant, key in keys.items():
        if hmac.compare_digest(key, given):
            found = tenant
    return found


def _fresh(timestamp: str | None, now: datetime) -> None:
    if timestamp is None:
        raise _Problem(401, f"X-Relance-Signature needs X-Relance-Timestamp (unix seconds): {_HOW}", _CHALLENGE)
    try:
        moment = int(timestamp.strip())
    except ValueError:
        raise _Problem(401, "X-Relance-Timestamp must be unix seconds, e.g. 1767225600", _CHALLENGE) from None
    skew = abs(now.timestamp() - moment)
    if skew > SIGNATURE_TOLERANCE_SECONDS:
        raise _Problem(
            401,
            f"X-Relance-Timestamp is {skew:.0f} seconds away from relance's clock; a signature is accepted within "
            f"{SIGNATURE_TOLERANCE_SECONDS} seconds: sign each request when sending it (and check the sender's clock)",
            _CHALLENGE,
        )


def _tenant_of_signature(keys: Mapping[str, bytes], headers: Mapping[str, str], body: bytes) -> str:
    given = headers.get("x-relance-signature", "").strip().encode("utf-8", "surrogateescape")
    timestamp = int(headers.get("x-relance-timestamp", "").strip())  # _fresh checked it
    found = None
    for tenant, key in keys.items():
        if hmac.compare_digest(signature(key, timestamp, body).encode(), given):
            found = tenant
    if found is None:
        raise _Problem(
            401,
            "X-Relance-Signature is not the HMAC of this body by any tenant's ingest secret: sign "
            '"<X-Relance-Timestamp>." followed by the exact bytes sent, as `sha256=<hex>`',
            _CHALLENGE,
        )
    return found


# ------------------------------------------------------------------------------------------------ the body
async def _body(request: Request, limit: int) -> bytes:
    too_large = _Problem(
        413,
        f"the body is over {limit} bytes (RELANCE_INGEST_MAX_BODY_BYTES): send fewer messages per request",
    )
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        raise _Problem(400, "the body is empty: send one envelope (a JSON object) or a JSON array of envelopes")
    return body


def split(body: bytes) -> list[bytes]:
    """The messages of a body: the elements of a JSON array, each as the bytes it was written with, or the body.

    A body that is not an array (even one that is not JSON) is one message, judged by the ingestor as on AMQP.
    """
    if not body.lstrip().startswith(b"["):
        return [body]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _Problem(400, f"the array is not UTF-8 text: {exc}") from None
    decoder = json.JSONDecoder()
    spans: list[bytes] = []
    position = _skip(text, text.index("[") + 1)
    if position < len(text) and text[position] == "]":
        return _checked_end(text, position, spans)
    while True:
        try:
            _, end = decoder.raw_decode(text, position)
        except (ValueError, RecursionError) as exc:
            raise _Problem(400, f"the array is not JSON, element {len(spans)}: {str(exc)[:200]}") from None
        spans.append(text[position:end].encode("utf-8"))
        if len(spans) > MAX_MESSAGES:
            raise _Problem(400, f"the array holds more than {MAX_MESSAGES} messages: send them in several requests")
        position = _skip(text, end)
        if position < len(text) and text[position] == ",":
            position = _skip(text, position + 1)
            continue
        if position < len(text) and text[position] == "]":
            return _checked_end(text, position, spans)
        raise _Problem(400, f"the array is not JSON: expected ',' or ']' after element {len(spans) - 1}")


def _skip(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _checked_end(text: str, position: int, spans: list[bytes]) -> list[bytes]:
    if _skip(text, position + 1) != len(text):
        raise _Problem(400, "the array is not JSON: something follows its closing ']'")
    if not spans:
        raise _Problem(400, "the array is empty: send at least one envelope")
    return spans


# ------------------------------------------------------------------------------------------------ applying
def _apply(
    ingest: IngestPort, ledger: Callable[[], Ledger], tenant: str, bodies: list[bytes], received_at: datetime
) -> IngestAnswer:
    """Refuse the messages of another tenant, hand the others over, put the refusals back at their index."""
    refused: list[Refused] = []
    passed: list[int] = []
    for index, body in enumerate(bodies):
        other = _other_tenant(body, tenant, received_at)
        if other is None:
            passed.append(index)
            continue
        event_id, named = other
        reason = (
            f"the message is for tenant {named!r}, the credentials are {tenant!r}'s: send each tenant's messages "
            "with its own secret"
        )
        log.warning("ingest.rejected", kind=WRONG_TENANT, reason=reason, event_id=event_id, tenant=tenant)
        refused.append(Refused(index=index, event_id=event_id, kind=WRONG_TENANT, reason=reason))
    if not passed:
        return IngestAnswer(applied=[], duplicates=[], refused=refused)
    try:
        answer = ingest(ledger(), [bodies[i] for i in passed], received_at)
    except LedgerUnavailable as exc:
        raise _Problem(
            503,
            f"the ledger cannot be reached ({exc}); nothing was applied: send the same body again",
            {"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from None
    for refusal in answer.refused:
        refused.append(refusal.model_copy(update={"index": passed[refusal.index]}))
    refused.sort(key=lambda r: r.index)
    return IngestAnswer(applied=answer.applied, duplicates=answer.duplicates, refused=refused)


def _other_tenant(body: bytes, tenant: str, received_at: datetime) -> tuple[str, str] | None:
    """``(event_id, tenant)`` of a valid message for another tenant; None for this tenant's or an invalid one (the
    ingestor refuses that with its own reason)."""
    try:
        event = parse_event(body, len(body), received_at=received_at)
    except InvalidMessage:
        return None
    return None if event.tenant == tenant else (event.event_id, event.tenant)
