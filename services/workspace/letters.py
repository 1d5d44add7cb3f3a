"""A letter's PDF in the workspace: the stored bytes, streamed as an attachment to whoever may read the customer.

Tenant-scoped and role-gated like the customer page (a tenant the user holds no role in, another customer's letter
or an unknown one: 404); the bytes are checked against the SHA-256 ``letter.rendered`` recorded before they are
served, so the PDF a person downloads is the one the log proves (a mismatch answers 409 and is logged as an error).
Posting, delivery and return are the action layer's (``letter_posted``, ``letter_delivered``, ``letter_returned``),
offered beside each letter on the customer page.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from services.workspace.api import customer_state, ports_of, require_tenant
from services.workspace.pages import User
from shared.ledger import letters

router = APIRouter(include_in_schema=False)
log = structlog.get_logger()


@router.get("/t/{tenant}/customers/{customer_id}/letters/{letter_id}.pdf")
def letter_pdf(request: Request, tenant: str, customer_id: str, letter_id: str, user: User) -> Response:
    require_tenant(user, tenant)
    ports = ports_of(request)
    state = customer_state(ports.ledger(), tenant, customer_id)
    folded = state.letters.get(letter_id)
    found = letters.get(ports.engine, tenant, letter_id) if folded is not None else None
    if folded is None or found is None or found.customer_id != customer_id:
        raise HTTPException(status_code=404, detail="not found")
    if not letters.verify(found, folded["sha256"]):
        log.error("workspace.letter_mismatch", tenant=tenant, letter_id=letter_id, recorded=folded["sha256"])
        raise HTTPException(status_code=409, detail="the stored PDF does not match the hash the log recorded")
    safe = "".join(c for c in letter_id if c.isalnum() or c in "-_")[:64] or "letter"
    return Response(
        content=found.pdf,
        media_type="application/pdf",
        headers={
            "Content-Disposition": f'attachment; filename="{safe}.pdf"',
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
        },
    )
