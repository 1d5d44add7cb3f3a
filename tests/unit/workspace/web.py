"""What the workspace's API and page tests share: a SQLite ledger of two tenants, the app on it, signed-in users.

Sign-in is the auth module's; here the FastAPI dependencies ``page_user`` / ``api_user`` are overridden with the
principal a test names, and the CSRF check with one that passes, so these tests exercise the pages and the API alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

from fastapi.testclient import TestClient

from services.cli.workspace import agenda_of, evidence
from services.notifier import evidence as kept
from services.workspace import auth
from services.workspace.app import create_app
from services.workspace.ports import Ports
from shared.config import load_settings
from shared.contracts import events
from shared.ledger.db import make_engine
from shared.ledger.store import Incoming, Ledger
from tests.factories import Ev, customer, invoice, promise

TENANT, OTHER = "acme-fr", "globex-de"
CUSTOMER, THEIRS = "C-0042", "G-0007"
NOW = datetime(2026, 11, 20, 9, tzinfo=UTC)
AT = datetime(2026, 11, 19, 8, tzinfo=UTC)
HOSTILE = "<script>alert(1)</script> {{ 7*7 }} \u202eevil\u202c Ltd"
COMMAND = "rem-C-0042-1"
META = {"policy": "standard", "policy_version": "v1", "as_of": "2026-11-19T08:00:00Z"}


def _level(invoice_id: str, level: str, offset: int, due: str) -> Ev:
    data = {
        "invoice_id": invoice_id,
        "currency": "EUR",
        "level": level,
        "offset_days": offset,
        "channel": "email",
        "due_date": due,
        "step_date": "2026-11-19",
        "reached_on": "2026-11-19",
        **META,
    }
    return Ev(events.LevelReached.TYPE, data, f"lvl-{invoice_id}-{level}")


def _task(task_id: str, kind: str, invoice_ids: list[str], note: str = "") -> Ev:
    data = {
        "task_id": task_id,
        "kind": kind,
        "due_on": "2026-11-19",
        "invoice_ids": invoice_ids,
        "currency": "EUR",
        "amount_at_risk": "1500.00",
        "note": note,
    }
    return Ev(events.TaskCreated.TYPE, data, f"task-{task_id}")


def mime() -> bytes:
    message = EmailMessage()
    message["From"] = "relance@acme.example"
    message["To"] = "compta@martin.fr"
    message["Subject"] = "Relance : facture <b>INV-1</b> échue"
    message["Message-ID"] = "<m1@acme.example>"
    message.set_content("Bonjour,\n\nla facture <script>x()</script> reste due.\n")
    return bytes(message)


def _sent(body: bytes) -> Ev:
    data = {
        "command_id": COMMAND,
        "reminder_id": "rem-1",
        "level": "first",
        "message_id": "<m1@acme.example>",
        "sha256": hashlib.sha256(body).hexdigest(),
        "recipients": ["compta@martin.fr"],
        "subject": "Relance",
        "accepted": ["compta@martin.fr"],
        "refused": [],
    }
    return Ev(events.ReminderSent.TYPE, data, f"sent-{COMMAND}")


def seed(ledger: Ledger) -> None:
    body = mime()
    ours: list[Ev] = [
        customer(HOSTILE),
        invoice("INV-1", "1000.00", issue_date="2026-09-01", due_date="2026-10-01", number="F-2026-<i>1</i>"),
        invoice("INV-2", "500.00", issue_date="2026-09-15", due_date="2026-10-15"),
        invoice("INV-3", "200.00", currency="USD", issue_date="2026-09-15", due_date="2026-10-15"),
        _level("INV-1", "first", 10, "2026-10-01"),
        _task("call-1", "phone_call", ["INV-1", "INV-2"], note="ask for {{ config }}"),
        promise("P-1", "2026-12-15", "500.00", ["INV-2"]),
        _sent(body),
    ]
    theirs: list[Ev] = [customer("Globex GmbH"), invoice("G-INV-1", "9000.00", due_date="2026-10-20")]
    items = [Incoming(TENANT, CUSTOMER, e.event_id, e.event_type, e.data, AT, e.metadata) for e in ours]
    items += [Incoming(OTHER, THEIRS, e.event_id, e.event_type, e.data, AT, e.metadata) for e in theirs]
    outcomes = ledger.record(items)
    assert [o.status for o in outcomes] == ["applied"] * len(items), outcomes
    kept.store(
        ledger.engine,
        tenant=TENANT,
        customer_id=CUSTOMER,
        command_id=COMMAND,
        message_id="<m1@acme.example>",
        mime=body,
    )


def principal(login: str, **roles: str) -> auth.Principal:
    """A user with roles by tenant: ``principal("ann", acme_fr="collector")`` (underscores for dashes)."""
    return auth.Principal(
        login=login,
        display_name=login.title(),
        roles={t.replace("_", "-"): frozenset(r.split(",")) for t, r in roles.items()},
    )


@dataclass
class Web:
    client: TestClient
    ledger: Ledger
    user: auth.Principal

    def sign_in(self, user: auth.Principal) -> None:
        self.user = user


def web(url: str, *, signed_in_as_test_user: bool = True) -> Iterator[Web]:
    """The app on a seeded ledger; unless told otherwise, the sign-in and CSRF checks replaced by ``Web.user``."""
    engine = make_engine(url)
    ledger = Ledger(engine)
    seed(ledger)
    settings = load_settings(database_url=url, workspace_insecure_cookies=True)
    ports = Ports(
        settings=settings,
        engine=engine,
        ledger=lambda: ledger,
        agenda=agenda_of(settings),
        now=lambda: NOW,
        evidence=evidence,
    )
    app = create_app(ports)
    holder = Web(TestClient(app, follow_redirects=False), ledger, principal("ann", acme_fr="collector"))

    def signed_in() -> auth.Principal:
        return holder.user

    async def no_check() -> None:
        return None

    if signed_in_as_test_user:
        app.dependency_overrides[auth.page_user] = signed_in
        app.dependency_overrides[auth.api_user] = signed_in
        app.dependency_overrides[auth.check_csrf] = no_check
    yield holder
    engine.dispose()


def json_of(response: Any) -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()
