"""A collector's day in the workspace, in a real browser: sign in, work the agenda, log a call with a promise, see the
reminders stop and the promise on the timeline, open an e-mail as it was sent, sign out; and what must never happen:
another tenant's customer reached, a form accepted without its CSRF token, a customer's name run as code."""

from __future__ import annotations

import re
from datetime import timedelta

from playwright.sync_api import Dialog, Page, Response, expect
from sqlalchemy import func, select

from shared.ledger.schema import outbox
from tests.browser.conftest import (
    COLLECTOR,
    CONTROL,
    HOSTILE,
    HOSTILE_NAME,
    PROMISING,
    SECRET_B,
    TENANT_A,
    TENANT_B,
    Shots,
    Workspace,
    log_in,
)

REMINDER = "notifier.send_reminder"


def reminders(workspace: Workspace, customer: str) -> int:
    """The reminder commands relance issued for a customer so far (sent or not)."""
    ledger = workspace.ledger()
    try:
        with ledger.engine.connect() as conn:
            query = select(func.count()).where(
                outbox.c.tenant == TENANT_A, outbox.c.customer_id == customer, outbox.c.kind == REMINDER
            )
            return int(conn.execute(query).scalar_one())
    finally:
        ledger.engine.dispose()


def test_a_collector_logs_a_call_with_a_promise_and_the_reminders_stop(
    page: Page, workspace: Workspace, shot: Shots
) -> None:
    # Given a collector signed in
    log_in(page, workspace)
    shot("signed-in")
    # When she opens the agenda, the customer to call is on it
    page.goto(f"{workspace.url}/t/{TENANT_A}/agenda")
    row = page.locator(f"[data-testid=agenda-item][data-customer={PROMISING}]").first
    expect(row).to_be_visible()
    shot("agenda")
    # and from it the customer's page, with the open invoices
    page.locator(f"a[href$='/t/{TENANT_A}/customers/{PROMISING}']").first.click()
    page.wait_for_load_state("networkidle")
    assert page.url.endswith(f"/customers/{PROMISING}")
    expect(page.locator("[data-testid=open-invoices]")).to_contain_text("FA-PROMISE-001")
    shot("customer")
    # When she logs the call: promised, with a note, 2,000.00 EUR in ten days for both invoices
    page.locator("[data-action=log_call]").first.click()
    form = page.locator("form:has([data-testid=action-submit])").first
    expect(form.locator("[name=outcome]")).to_be_visible()
    promised = workspace.today + timedelta(days=10)
    form.locator("[name=outcome]").select_option("promised")
    form.locator("[name=note]").fill("Spoke to Claire Martin: cheque for both invoices posted on Friday.")
    form.locator("[name=with_promise]").check()
    form.locator("[name=promised_date]").fill(promised.isoformat())
    form.locator("[name=promise_amount]").fill("2000.00")
    currency = form.locator("[name=promise_currency]")
    if currency.evaluate("e => e.tagName") == "SELECT":
        currency.select_option("EUR")
    else:
        currency.fill("EUR")
    for box in form.locator("input[name=promise_invoice_ids]").all():
        box.check()
    shot("log-call-form")
    with page.expect_response(lambda r: r.request.method == "POST" and "/actions/log_call" in r.url) as posted:
        form.locator("[data-testid=action-submit]").click()
    assert posted.value.status in (204, 303), f"the call was not recorded: {posted.value.status}"
    page.wait_for_url(re.compile(rf"/customers/{PROMISING}\?done=log_call"))  # back on the customer's page
    page.wait_for_load_state("networkidle")
    # Then the call and the promise are on the customer's timeline, with their author
    timeline = page.locator("[data-testid=timeline]")
    expect(timeline.locator("[data-testid=timeline-entry][data-type='call.logged']").first).to_be_visible()
    promise = timeline.locator("[data-testid=timeline-entry][data-type='promise_to_pay.recorded']").first
    expect(promise).to_be_visible()
    expect(promise).to_contain_text(re.compile(r"2[ ,.\u202f\u00a0]?000[.,]00"))
    expect(promise).to_contain_text(COLLECTOR)  # its author
    # and the promised invoices' next step is the promise, no longer the next reminder
    expect(page.locator("[data-testid=open-invoices]")).to_contain_text(re.compile("promised", re.IGNORECASE))
    shot("timeline-with-promise")
    # When the clock moves on a week, past the formal-notice level of both customers
    before = {customer: reminders(workspace, customer) for customer in (PROMISING, CONTROL)}
    workspace.relance("clock", "tick", "--at", f"{workspace.today + timedelta(days=7)}T08:00:00Z")
    # Then the customer who promised gets no reminder for the promised invoices, the other one does
    assert reminders(workspace, PROMISING) == before[PROMISING]
    assert reminders(workspace, CONTROL) > before[CONTROL]
    account = page.request.get(f"{workspace.url}/api/v1/tenants/{TENANT_A}/customers/{PROMISING}")
    assert account.status == 200
    assert promised.isoformat() in account.text()
    page.reload()
    expect(page.locator("[data-testid=timeline-entry][data-type='promise_to_pay.recorded']").first).to_be_visible()
    shot("after-tick")


def test_a_collector_opens_an_email_as_it_was_sent_and_signs_out(page: Page, workspace: Workspace, shot: Shots) -> None:
    tenant, customer, command_id = workspace.sent_email
    log_in(page, workspace)
    # From the customer's timeline, the e-mail opens as sent
    page.goto(f"{workspace.url}/t/{tenant}/customers/{customer}")
    link = page.locator(f"[data-testid=timeline] a[href*='/evidence/{command_id}']").first
    expect(link).to_be_visible()
    shot("timeline-with-email")
    link.click()
    page.wait_for_load_state("networkidle")
    assert f"/t/{tenant}/evidence/{command_id}" in page.url
    expect(page.locator("[data-testid=email-subject]")).not_to_be_empty()
    expect(page.locator("[data-testid=email-body]")).not_to_be_empty()
    shot("email")
    # and the .eml is the message as the SMTP server received it
    eml = page.request.get(f"{workspace.url}/t/{tenant}/evidence/{command_id}.eml")
    assert eml.status == 200
    assert b"Message-ID:" in eml.body() or b"Message-Id:" in eml.body()
    # When she signs out, Then her pages are behind the login page again
    page.click("[data-testid=logout]")
    page.wait_for_load_state("networkidle")
    assert "/login" in page.url
    page.goto(f"{workspace.url}/t/{tenant}/agenda")
    assert "/login" in page.url
    shot("signed-out")


def test_a_collector_of_one_tenant_cannot_reach_another_tenants_customer(
    page: Page, workspace: Workspace, shot: Shots
) -> None:
    log_in(page, workspace, COLLECTOR)
    pages = [
        f"/t/{TENANT_B}/agenda",
        f"/t/{TENANT_B}/customers",
        f"/t/{TENANT_B}/customers/{SECRET_B}",
        f"/t/{TENANT_B}/customers/{SECRET_B}/actions/log_call",
    ]
    for path in pages:
        answer = page.goto(workspace.url + path)
        assert answer is not None
        assert answer.status == 404, path
        expect(page.locator("body")).not_to_contain_text("Secret Holdings")
    shot("other-tenant-404")
    # the same customer in her own tenant does not exist either: the same answer, nothing told apart
    unknown = page.goto(f"{workspace.url}/t/{TENANT_A}/customers/{SECRET_B}")
    assert unknown is not None
    assert unknown.status == 404
    # and the API answers 404 the same way, with her session
    for path in (
        f"/api/v1/tenants/{TENANT_B}/customers",
        f"/api/v1/tenants/{TENANT_B}/customers/{SECRET_B}",
        f"/api/v1/tenants/{TENANT_B}/customers/{SECRET_B}/timeline",
        f"/api/v1/tenants/{TENANT_B}/agenda",
    ):
        answer_api = page.request.get(workspace.url + path)
        assert answer_api.status == 404, path
        assert "Secret Holdings" not in answer_api.text()
    own = page.request.get(f"{workspace.url}/api/v1/tenants/{TENANT_A}/customers/{PROMISING}")
    assert own.status == 200
    # and an action on the other tenant's customer is refused the same way, nothing recorded
    before = len(ledger_stream(workspace, TENANT_B, SECRET_B))
    page.goto(f"{workspace.url}/t/{TENANT_A}/customers/{PROMISING}/actions/add_note")
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    action = page.request.post(
        f"{workspace.url}/api/v1/tenants/{TENANT_B}/customers/{SECRET_B}/actions/add_note",
        data={"request_id": "cross-tenant-1", "text": "should never land"},
        headers={"X-CSRF-Token": csrf or ""},
    )
    assert action.status == 404
    assert len(ledger_stream(workspace, TENANT_B, SECRET_B)) == before


def ledger_stream(workspace: Workspace, tenant: str, customer: str) -> list[object]:
    ledger = workspace.ledger()
    try:
        return list(ledger.read_stream(tenant, customer))
    finally:
        ledger.engine.dispose()


def test_a_form_without_its_csrf_token_is_refused(page: Page, workspace: Workspace, shot: Shots) -> None:
    log_in(page, workspace)
    page.goto(f"{workspace.url}/t/{TENANT_A}/customers/{CONTROL}/actions/add_note")
    form = page.locator("form:has([data-testid=action-submit])").first
    expect(form.locator("input[name=csrf_token]")).to_have_count(1)
    before = len(ledger_stream(workspace, TENANT_A, CONTROL))
    form.locator("[name=text]").fill("a note from a forged form")
    # a form as another site would post it: no token, a plain HTML submission (form.submit() bypasses htmx, whose
    # requests carry headers of their own)
    form.locator("input[name=csrf_token]").evaluate("e => e.remove()")

    def is_the_post(response: Response) -> bool:
        return response.request.method == "POST" and "/actions/add_note" in response.url

    with page.expect_response(is_the_post) as posted:
        form.evaluate("f => f.submit()")
    assert posted.value.status == 403
    page.wait_for_load_state("networkidle")
    expect(page.locator("body")).to_contain_text("reload the page")
    shot("csrf-refused")
    assert len(ledger_stream(workspace, TENANT_A, CONTROL)) == before
    # and the API refuses the session's unsafe request without X-CSRF-Token
    api = page.request.post(
        f"{workspace.url}/api/v1/tenants/{TENANT_A}/customers/{CONTROL}/actions/add_note",
        data={"request_id": "no-csrf-1", "text": "forged"},
    )
    assert api.status == 403
    assert len(ledger_stream(workspace, TENANT_A, CONTROL)) == before


def test_a_hostile_customer_name_renders_inert(page: Page, workspace: Workspace, shot: Shots) -> None:
    dialogs: list[str] = []

    def dismissed(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismissed)
    log_in(page, workspace)
    for path in (f"/t/{TENANT_A}/customers/{HOSTILE}", f"/t/{TENANT_A}/customers", f"/t/{TENANT_A}/agenda"):
        page.goto(workspace.url + path)
        page.wait_for_load_state("networkidle")
        text = page.locator("body").inner_text()
        where = path.rsplit("/", 1)[-1]
        shot(f"hostile-{where}")  # before judging it: the picture shows what a reader sees
        if where != "agenda" or HOSTILE in page.content():
            # shown as text, braces and all: not run, not evaluated as a template
            assert "<script>window.__pwned=1</script>" in text, path
            assert "{{7*7}}" in text, path
            assert "49SARL" not in text.replace(" ", "")
        assert page.evaluate("window.__pwned") is None, path
        assert page.evaluate("[...document.scripts].every(s => !s.textContent.includes('__pwned'))"), (
            f"{path}: the name became a script element"
        )
        # the right-to-left override reorders nothing: it does not reach the page's text as a control character
        # (isolating it in <bdi> is not enough: "SARL Evil" would still read "livE LRAS")
        overridden = page.evaluate(
            """() => {
                const controls = /[\\u202a-\\u202e\\u2066-\\u2069]/;
                const walker = document.createTreeWalker(document.documentElement, NodeFilter.SHOW_TEXT);
                const found = controls.test(document.title) ? [document.title] : [];
                for (let node = walker.nextNode(); node; node = walker.nextNode()) {
                    if (controls.test(node.textContent)) found.push(node.textContent.slice(0, 80));
                }
                return found;
            }"""
        )
        assert overridden == [], f"{path}: a bidirectional control reorders the text shown: {overridden}"
    assert dialogs == []
    assert HOSTILE_NAME in hostile_names(workspace)  # the ledger keeps the name as the ERP sent it


def hostile_names(workspace: Workspace) -> list[str]:
    ledger = workspace.ledger()
    try:
        return [
            str(e.data.get("name"))
            for e in ledger.read_stream(TENANT_A, HOSTILE)
            if e.event_type == "customer.upserted"
        ]
    finally:
        ledger.engine.dispose()
