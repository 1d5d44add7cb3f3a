"""Browser tests: `relance workspace` as a subprocess on a seeded ledger, driven by Playwright with Debian's chromium.

Playwright cannot download its own browsers here: the tests launch the system's ``chromium`` (``apt-get install
chromium``; ``.ci/run`` installs it). Without it they fail saying so; they are never skipped. The ledger is the
demo's (so that e-mails were really sent and kept as evidence) plus a few customers of the tests' own, ingested
with the AMQP ingestor; users are made with ``relance user add``. Screenshots land in ``.browser-screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page

from services.ingest.service import Delivery, Ingestor
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".browser-screenshots"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")

TENANT_A = "acme-fr"  # the demo's French tenant, plus the tests' customers
TENANT_B = "acme-uk"  # the demo's British tenant: the collector of TENANT_A has no role there
PASSWORD = "correct horse battery staple 42"
COLLECTOR = "alice"  # collector of TENANT_A only
MANAGER_B = "bob"  # collector of TENANT_B only

PROMISING = "C-PROMISE"  # will promise to pay on the phone
CONTROL = "C-CONTROL"  # same invoices, no promise: the tick that spares PROMISING reminds it
HOSTILE = "C-HOSTILE"
SECRET_B = "C-SECRET"  # TENANT_B's
RATES = """semester_start,rate
2026-07-01,2.15
2027-01-01,2.15
boe,2026-06-30,3.75
boe,2026-12-31,3.75
legal-fr,2026-07-01,6.65
legal-fr,2027-01-01,6.65
"""
HOSTILE_NAME = "<script>window.__pwned=1</script>{{7*7}} \u202eSARL Evil"


def chromium() -> str:
    for candidate in (shutil.which("chromium"), *CHROMIUM_PATHS):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(
        "the browser tests drive Debian's chromium, which is not installed: `sudo apt-get install chromium` "
        "(Playwright cannot download its own browser here)",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_type_launch_args, "executable_path": chromium(), "args": ["--no-sandbox"]}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}, "locale": "en-GB"}


# ------------------------------------------------------------------------------------------------ the server
@dataclass
class Workspace:
    url: str
    database_url: str
    env: dict[str, str]
    log: Path
    today: date
    sent_email: tuple[str, str, str] = ("", "", "")  # tenant, customer, command id of an e-mail the demo sent
    facts: dict[str, Any] = field(default_factory=dict)

    def relance(self, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        return relance(self.env, *args, stdin=stdin, check=check)

    def ledger(self) -> Ledger:
        return Ledger(make_engine(self.database_url))


def relance(
    env: dict[str, str], *args: str, stdin: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if check and done.returncode != 0:
        pytest.fail(f"relance {' '.join(args)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def add_user(env: dict[str, str], login: str, tenant: str, role: str) -> None:
    """``relance user add`` with the password on stdin, then ``relance user grant`` the role in the tenant."""
    relance(env, "user", "add", login, "--name", login.title(), "--password-stdin", stdin=PASSWORD + "\n")
    relance(env, "user", "grant", login, "--tenant", tenant, "--role", role)


def envelope(tenant: str, customer: str, event_id: str, event_type: str, data: dict[str, Any], at: datetime) -> bytes:
    message = {
        "event_id": event_id,
        "event_type": event_type,
        "tenant": tenant,
        "customer_id": customer,
        "occurred_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": data,
    }
    return json.dumps(message).encode()


def customer_events(tenant: str, customer: str, name: str, today: date, amounts: list[str]) -> list[bytes]:
    """A customer whose invoices fell due 25 days ago: at the phone-call level, a formal notice a week later."""
    due = today - timedelta(days=25)
    issued = due - timedelta(days=30)
    at = datetime.combine(issued, datetime.min.time(), UTC) + timedelta(hours=9)
    language, policy, currency = ("fr", "standard-fr", "EUR") if tenant == TENANT_A else ("en", "standard-en", "GBP")
    bodies = [
        envelope(
            tenant,
            customer,
            f"{customer}-up",
            "customer.upserted",
            {
                "name": name,
                "emails": [f"ap@{customer.lower()}.example"],
                "language": language,
                "segment": "sme",
                "policy": policy,
                "contact_name": "Claire Martin",
            },
            at,
        )
    ]
    for n, amount in enumerate(amounts, start=1):
        invoice_id = f"{customer}-INV-{n}"
        data = {
            "invoice_id": invoice_id,
            "number": f"FA-{customer[2:]}-{n:03}",
            "issue_date": issued.isoformat(),
            "due_date": due.isoformat(),
            "currency": currency,
            "amount": amount,
        }
        bodies.append(envelope(tenant, customer, f"{invoice_id}-issued", "invoice.issued", data, at))
    return bodies


def seed(database_url: str, today: date) -> None:
    bodies = [
        *customer_events(TENANT_A, PROMISING, "Martin & Fils", today, ["1200.00", "800.00"]),
        *customer_events(TENANT_A, CONTROL, "Durand Frères", today, ["1200.00", "800.00"]),
        *customer_events(TENANT_A, HOSTILE, HOSTILE_NAME, today, ["450.00"]),
        *customer_events(TENANT_B, SECRET_B, "Secret Holdings Ltd", today, ["9999.00"]),
    ]
    ledger = Ledger(make_engine(database_url))
    try:
        result = Ingestor(ledger).process([Delivery(body=body) for body in bodies])
    finally:
        ledger.engine.dispose()
    assert not result.rejections, [(r.kind, r.reason) for r in result.rejections]


def sent_email(database_url: str) -> tuple[str, str, str]:
    """A reminder the demo's notifier sent by e-mail: (tenant, customer, command id)."""
    ledger = Ledger(make_engine(database_url))
    try:
        with ledger.engine.connect() as conn:
            from sqlalchemy import select

            from shared.ledger.schema import events

            row = conn.execute(
                select(events.c.tenant, events.c.customer_id, events.c.data)
                .where(events.c.event_type == "reminder.sent", events.c.tenant == TENANT_A)
                .order_by(events.c.position)
                .limit(1)
            ).one()
    finally:
        ledger.engine.dispose()
    data = row.data if isinstance(row.data, dict) else json.loads(row.data)
    return str(row.tenant), str(row.customer_id), str(data["command_id"])


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"relance workspace exited ({process.returncode}):\n{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(url + "/login", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    pytest.fail(f"relance workspace did not answer on {url} in {timeout} s:\n{log.read_text(errors='replace')[-4000:]}")


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workspace]:
    chromium()  # before a minute of seeding: say at once what is missing
    folder = tmp_path_factory.mktemp("workspace")
    database_url = f"sqlite:///{folder / 'ledger.db'}"
    rates = folder / "rates.csv"  # the semesters the shipped tables do not have yet: interest can be computed
    rates.write_text(RATES, encoding="utf-8")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELANCE_")},
        "RELANCE_DATABASE_URL": database_url,
        "RELANCE_LOG_FORMAT": "json",
        "RELANCE_RATES_FILE": str(rates),
    }
    demo = relance(
        env,
        "demo",
        "--customers",
        "12",
        "--months",
        "3",
        "--database-url",
        database_url,
        "--out",
        str(folder / "demo"),
        check=False,
    )
    if demo.returncode not in (0, 3):  # 3: ran as expected, a cadence remark; the ledger is whole either way
        pytest.fail(f"relance demo exited {demo.returncode}:\n{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}")
    today = datetime.now(UTC).date()
    seed(database_url, today)
    # the tests' customers reach the phone-call level two days ago: their call task is on today's agenda
    relance(env, "clock", "tick", "--at", f"{today - timedelta(days=2)}T08:00:00Z")
    for login, tenant in ((COLLECTOR, TENANT_A), (MANAGER_B, TENANT_B)):
        add_user(env, login, tenant, "collector")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "workspace.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "workspace", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "RELANCE_WORKSPACE_INSECURE_COOKIES": "1"},  # plain http on loopback
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(url, process, log)
        yield Workspace(url, database_url, env, log, today, sent_email(database_url))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# ------------------------------------------------------------------------------------------------ pages
class Shots:
    """Screenshots of one test, numbered in the order taken: .browser-screenshots/<test>-<n>-<step>.png."""

    def __init__(self, page: Page, test: str) -> None:
        self.page = page
        self.test = test
        self.taken: list[Path] = []

    def __call__(self, step: str) -> Path:
        SCREENSHOTS.mkdir(exist_ok=True)
        path = SCREENSHOTS / f"{self.test}-{len(self.taken) + 1:02}-{step}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.taken.append(path)
        return path


@pytest.fixture
def shot(page: Page, request: pytest.FixtureRequest) -> Shots:
    name = getattr(request.node, "originalname", request.node.name)
    return Shots(page, "-".join(name.removeprefix("test_").split("_")[:7]))


def log_in(page: Page, workspace: Workspace, login: str = COLLECTOR) -> None:
    page.goto(workspace.url + "/login")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", PASSWORD)
    page.click("[data-testid=login-submit]")
    page.wait_for_load_state("networkidle")
    assert "/login" not in page.url, f"still on the login page after signing in as {login}: {page.content()[:2000]}"
