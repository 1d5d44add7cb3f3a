"""``relance demo`` end to end: SQLite and the in-process queue, no server needed."""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from dataclasses import dataclass, replace
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

import services.cli.demo.answers as demo_answers
import services.cli.demo.cadence as demo_cadence
import services.cli.demo.escalation as demo_escalation
import services.cli.demo.run as demo_run
import services.cli.demo.summary as demo_summary
from services.cli import main
from services.cli.demo import AS_OF, generate, run_demo
from services.escalation.agenda import build_agenda
from services.escalation.interest import RateTable
from services.escalation.policy import PolicyLibrary
from services.ingest.service import Delivery, Ingestor
from shared.contracts.erp import EVENT_TYPES
from shared.ledger import migrate
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger
from tests import factories


@dataclass
class DemoRun:
    code: int
    output: str
    out: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.out / demo_run.DATABASE_FILE}"


RAN = (demo_run.EXIT_OK, demo_run.EXIT_RULES_BROKEN)  # the run itself went as expected, the rules held or not


def ran_as_expected(code: int, output: str) -> bool:
    """The run went as expected, and its exit status and last lines say whether the policies' rules held."""
    rules_held = code == demo_run.EXIT_OK
    return (
        code in RAN
        and "UNEXPECTED" not in output
        and ("POLICY RULES BROKEN" in output) != rules_held
        and ("Everything as expected" in output) == rules_held
    )


def _balances(ledger: Ledger) -> dict[tuple[str, str], dict[str, Decimal]]:
    return {(t, c): ledger.state(t, c).balances() for t, c in ledger.streams()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo")
    screen = io.StringIO()
    code = run_demo(customers=300, months=4, seed=7, out=out, database_url=None, stdout=screen)
    return DemoRun(code, screen.getvalue(), out)


def test_the_demo_succeeds_and_its_counts_add_up(demo: DemoRun) -> None:
    assert ran_as_expected(demo.code, demo.output), demo.output
    match = re.search(
        r"published = applied \+ duplicates \+ rejected: ([\d,]+) = ([\d,]+) \+ ([\d,]+) \+ ([\d,]+) \(ok\)",
        demo.output,
    )
    assert match, demo.output
    published, applied, duplicates, rejected = (int(g.replace(",", "")) for g in match.groups())
    assert published == applied + duplicates + rejected
    # What was published is the sample, less the messages withheld (their invoices paid in answer to a formal
    # notice), plus those answers; the JSONL file holds exactly that
    sample = generate(customers=300, months=4, seed=7)
    answers = re.search(r"([\d,]+) paying a formal notice in full, ([\d,]+) generated messages withheld", demo.output)
    assert answers, demo.output
    answered, withheld = (_number(g) for g in answers.groups())
    assert answered > 0 and withheld > 0
    assert published == len(sample.messages) - withheld + answered
    assert published == len((demo.out / demo_summary.EVENTS_FILE).read_bytes().splitlines())
    assert rejected == sample.expected()["rejected"]
    assert applied + duplicates == sample.expected()["applied"] + sample.expected()["duplicate"] - withheld + answered
    assert "UNEXPECTED" not in demo.output


def test_the_summary_shows_what_a_credit_manager_needs(demo: DemoRun) -> None:
    for heading in (
        "Rejected messages by kind",
        "Receivables as of 2026-11-20",
        "Claims as of 2026-11-20",
        "Aged balance as of 2026-11-20",
        "Top 5 overdue customers",
        "all chains verified, intact",
        "events/s",
        "relance ledger show --tenant ",
        f"--database-url {demo.url}",
    ):
        assert heading in demo.output
    for bucket in ("not yet due", "1-30 days", "31-60 days", "61-90 days", "> 90 days"):
        assert bucket in demo.output
    assert re.search(r"acme-fr  C-\d{4}  .+  [\d,]+\.\d\d EUR", demo.output)
    assert not re.search(r"\d\.\d{3,}", demo.output.split("Timing")[0])  # money with its two decimals, no floats


def test_the_demo_writes_the_committee_pack_with_the_aged_balance_it_prints(demo: DemoRun) -> None:
    # Given the demo's files
    pack = json.loads((demo.out / "committee.json").read_text(encoding="utf-8"))
    assert (demo.out / "committee.csv").read_text(encoding="utf-8").startswith("aged_balance\n")
    assert "<svg" in (demo.out / "committee.html").read_text(encoding="utf-8")
    assert "committee.html" in demo.output and "relance report committee --tenant " in demo.output
    # Then the pack's net per currency is the balance of the first tenant's customers, summed here from the ledger
    ledger = Ledger(make_engine(demo.url))
    net: dict[str, Decimal] = {}
    for tenant, customer in ledger.streams():
        if tenant == pack["tenant"]:
            for currency, amount in ledger.state(tenant, customer).balances().items():
                net[currency] = net.get(currency, Decimal(0)) + amount
    totals = pack["tables"]["aged_balance"]["totals"]
    assert {row["key"]: Decimal(row["net"]) for row in totals} == {c: v for c, v in net.items() if v}
    # And the printed aged balance shows the same net, on the tenant's line of each currency
    for row in totals:
        line = f"{pack['tenant']}  {row['key']}"
        printed = [text for text in demo.output.splitlines() if text.strip().startswith(line)]
        assert any(text.rstrip().endswith(f"{Decimal(row['net']):,}") for text in printed), (row, printed)


def test_rejections_are_dead_lettered_with_their_reason(demo: DemoRun) -> None:
    dead = [json.loads(line) for line in (demo.out / demo_summary.DEAD_LETTERS_FILE).read_text().splitlines()]
    sample = generate(customers=300, months=4, seed=7)
    planned = [m for m in sample.messages if m.expect == "rejected"]
    assert sorted(d["body"].encode() for d in dead) == sorted(m.body for m in planned)
    assert {d["kind"] for d in dead} == {"not_json", "schema", "unknown_event_type", "business_rule"}
    reasons = " | ".join(d["reason"] for d in dead)
    for expected in (
        "body is not JSON",
        "JSON number",
        "unknown event_type 'invoice.paid'",
        "ISO 4217",
        "already issued with different content",
        "is allocated to invoice",
    ):
        assert expected in reasons
    assert all(d["reason"] for d in dead)


def test_the_ledger_is_intact_and_customers_are_overdue(demo: DemoRun) -> None:
    ledger = Ledger(make_engine(demo.url))
    report = ledger.verify()
    assert report.ok, report.problems
    assert report.streams == 300
    overdue = Decimal(0)
    tenants = set()
    for tenant, customer in ledger.streams():
        tenants.add(tenant)
        overdue += sum(ledger.state(tenant, customer).overdue(AS_OF).values(), Decimal(0))
    assert tenants == {"acme-fr", "acme-uk"}
    assert overdue > 0


def test_replaying_the_jsonl_gives_the_same_balances(demo: DemoRun, tmp_path: Path) -> None:
    # Given the JSONL file the demo wrote, and a fresh ledger
    url = f"sqlite:///{tmp_path / 'replay.db'}"
    migrate.upgrade(url)
    replay = Ledger(make_engine(url))
    ingestor = Ingestor(replay)
    lines = (demo.out / demo_summary.EVENTS_FILE).read_bytes().splitlines()
    # When the lines go through the ingest in other batch sizes
    applied = 0
    for start in range(0, len(lines), 97):
        applied += ingestor.process([Delivery(body=line) for line in lines[start : start + 97]]).applied
    # Then every ERP event is there again, and every customer's balances are the demo's, currency by currency, less
    # the money the demo's claims took: the engine's decisions (interest, fees, blocks) never change what an invoice
    # owes, only where money the ERP left unallocated goes
    original = Ledger(make_engine(demo.url))
    assert applied == sum(1 for e in original.iter_all() if e.event_type in EVENT_TYPES)
    expected = {}
    took = Decimal(0)
    for (tenant, customer), balances in _balances(original).items():
        paid = {c: f.paid for c, f in original.state(tenant, customer).claims.figures().items()}
        took += sum(paid.values(), Decimal(0))
        expected[(tenant, customer)] = {c: b - paid.get(c, Decimal(0)) for c, b in balances.items()}
    assert _balances(replay) == expected
    assert took > 0


def test_a_second_run_starts_from_a_fresh_database(demo: DemoRun, tmp_path: Path) -> None:
    # Given a demo that already ran in a folder
    out = tmp_path / "again"
    assert run_demo(customers=20, months=2, seed=5, out=out, database_url=None, stdout=io.StringIO()) in RAN
    first = (out / demo_summary.EVENTS_FILE).read_bytes()
    # When it runs again in the same folder
    screen = io.StringIO()
    code = run_demo(customers=20, months=2, seed=5, out=out, database_url=None, stdout=screen)
    # Then it starts over (no duplicates of the first run) and writes the same sample
    assert (out / demo_summary.EVENTS_FILE).read_bytes() == first
    assert ran_as_expected(code, screen.getvalue())


def test_an_existing_ledger_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    assert run_demo(customers=10, months=1, seed=1, out=tmp_path / "a", database_url=url, stdout=io.StringIO()) in RAN
    assert run_demo(customers=10, months=1, seed=1, out=tmp_path / "b", database_url=url, stdout=io.StringIO()) == 1
    assert "already holds" in capsys.readouterr().err


def test_a_surprise_makes_the_demo_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a sample that wrongly plans one invalid message as applied
    def mislabelled(**kwargs: object) -> object:
        sample = generate(**kwargs)  # type: ignore[arg-type]
        messages = list(sample.messages)
        index = next(n for n, m in enumerate(messages) if m.kind == "not_json")
        messages[index] = replace(messages[index], expect="applied", kind="")
        return replace(sample, messages=tuple(messages))

    monkeypatch.setattr(demo_run, "generate", mislabelled)
    screen = io.StringIO()
    # When the demo runs, then it notices and exits non-zero
    assert run_demo(customers=10, months=1, seed=1, out=tmp_path, database_url=None, stdout=screen) == 1
    assert "UNEXPECTED" in screen.getvalue()
    assert "rejected (not_json" in screen.getvalue()


def test_the_command_line_runs_the_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["demo", "--customers", "12", "--months", "1", "--seed", "3", "--out", str(tmp_path)])
    assert ran_as_expected(code, capsys.readouterr().out)
    assert (tmp_path / demo_summary.EVENTS_FILE).exists()
    assert (tmp_path / demo_run.DATABASE_FILE).exists()


# ---------------------------------------------------------------------------------------------------- escalation
def _section(output: str, heading: str) -> str:
    start = output.index(heading)
    end = output.find("\n\n", start)
    return output[start : end if end > 0 else None]


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def test_escalation_runs_over_the_simulated_months(demo: DemoRun) -> None:
    assert demo.code in RAN, demo.output
    assert re.search(r"Escalation over the \d+ simulated days", demo.output)
    # Reminders went out at several levels of the ladder, in both languages
    lines = _section(demo.output, "Reminders requested per level").splitlines()
    assert "in en" in lines[1] and "in fr" in lines[1]
    sent = {row.split()[0]: _number(row.split()[2]) for row in lines[3:11]}
    ladder = ["courtesy", "reminder_1", "reminder_2", "phone_call", "formal_notice", "credit_block", "hand_over"]
    assert list(sent) == [*ladder, "claims"]  # and the claims statements, after the ladder
    assert all(sent[level] > 0 for level in ("courtesy", "reminder_1", "reminder_2", "formal_notice", "credit_block"))
    assert sent["phone_call"] == 0  # a phone level makes a collector task, not a message
    # Interest and fixed fees were charged in euros
    money_rows = _section(demo.output, "Late interest and fixed recovery fees").splitlines()
    (eur,) = [row for row in money_rows if row.strip().startswith("EUR")]
    _, interest_invoices, interest, _, fee_invoices, fees, _ = eur.split()
    assert _number(interest_invoices) > 0 and Decimal(interest.replace(",", "")) > 0
    assert _number(fee_invoices) > 0 and Decimal(fees.replace(",", "")) == 40 * _number(fee_invoices)
    # Blocks and unblocks, paired one to one
    blocks = re.search(r"(\d+) blocked \(.*\), (\d+) unblocked when cleared, (\d+) still blocked", demo.output)
    assert blocks, demo.output
    blocked, unblocked, still = (int(g) for g in blocks.groups())
    assert blocked >= 1 and unblocked >= 1 and blocked == unblocked + still
    assert "each block lifted at most once, each unblock naming the open block: ok" in demo.output
    # The outbox holds one command per block, unblock and reminder; the ERP's wait for the relay, the reminders
    # were handed to the notifier
    outbox = _section(demo.output, "Commands written to the outbox")
    assert f"erp.credit_block {blocked}" in outbox and f"erp.credit_unblock {unblocked}" in outbox
    assert f"notifier.send_reminder {sum(sent.values()):,}" in outbox
    waiting = outbox.split("waiting for", 1)[1]
    assert "notifier.send_reminder" not in waiting and f"erp.credit_block {blocked}" in waiting
    assert "phone_call" in _section(demo.output, "Collector tasks by kind")


def test_one_customers_timeline_is_printed(demo: DemoRun) -> None:
    timeline = _section(demo.output, "Timeline of one late payer")
    lines = timeline.splitlines()[1:]
    assert all(re.match(r"  \d{4}-\d\d-\d\d \d\d:\d\d  (ERP|relance|mail|credit) ", line) for line in lines), timeline
    assert [line[2:18] for line in lines] == sorted(line[2:18] for line in lines)  # in time order
    assert any("invoice FA" in line or "invoice INV" in line for line in lines)
    levels = {m.group(1) for line in lines if (m := re.search(r"reaches (\w+)", line))}
    assert len(levels) >= 3
    assert any("payment of" in line for line in lines) or any("CREDIT BLOCKED" in line for line in lines)
    assert re.search(r"reminder \w+ by (email|letter)", timeline)


def test_the_ledger_holds_the_decisions_the_summary_reports(demo: DemoRun) -> None:
    # Given the demo's ledger, read back independently of the demo's audit
    ledger = Ledger(make_engine(demo.url))
    types = Counter(e.event_type for e in ledger.iter_all())
    # Then the counts printed are the events in the log
    reminders = re.search(r"([\d,]+) reminders; ", demo.output)
    assert reminders and _number(reminders.group(1)) == types["reminder.requested"] > 0
    assert types["credit.blocked"] >= types["credit.unblocked"] >= 1
    assert types["escalation.clock_ticked"] > 0
    # And no reminder ever listed an invoice already settled, cancelled or disputed when it was requested
    assert demo_escalation.audit(ledger, AS_OF).problems == []


def test_a_missing_reference_rate_makes_the_demo_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a rate table with no rate at all: every late-interest computation fails
    monkeypatch.setattr(demo_run, "demo_rates", lambda extra, until: (RateTable({}), []))
    screen = io.StringIO()
    # When the demo runs, then the invoices held for it are reported and it exits non-zero
    assert run_demo(customers=30, months=3, seed=2, out=tmp_path, database_url=None, stdout=screen) == 1
    assert re.search(
        r"escalation: \d+ invoice\(s\) held, their interest or dates cannot be computed", screen.getvalue()
    )


def test_the_audit_catches_what_must_never_happen(sqlite_url: str) -> None:
    # Given a customer whose invoice was paid, then a reminder listing it anyway, and an unblock without a block
    ledger = Ledger(make_engine(sqlite_url))
    paid = factories.payment("P-1", "100.00", received_on="2026-09-05", allocations={"I-1": "100.00"})
    reminder = {
        "reminder_id": "R-1",
        "level": "reminder_1",
        "channel": "email",
        "language": "fr",
        "currency": "EUR",
        "invoice_ids": ["I-1"],
        "totals": {"outstanding": "100.00", "interest": "0", "fees": "0"},
        "as_of": "2026-09-06T00:00:00Z",
    }
    unblock = {"block_id": "B-9", "reason": "cleared", "overdue": {}, "as_of": "2026-09-06T00:00:00Z"}
    ledger.record(
        [
            factories.incoming(factories.customer()),
            factories.incoming(factories.invoice("I-1", "100.00", issue_date="2026-08-01", due_date="2026-08-31")),
            factories.incoming(paid),
            factories.incoming(factories.Ev("reminder.requested", reminder, "esc-r1")),
            factories.incoming(factories.Ev("credit.unblocked", unblock, "esc-u1")),
        ]
    )
    # When the demo's audit reads the stream
    problems = demo_escalation.audit(ledger, date(2026, 9, 30)).problems
    # Then both are reported
    assert any("reminder reminder_1 of 2026-09-06 lists invoice I-1 (paid)" in p for p in problems), problems
    assert any("unblock of B-9, which is not the open block" in p for p in problems), problems


# ---------------------------------------------------------------------------------------------------- cadence
def _measured(demo: DemoRun) -> demo_cadence.Cadence:
    ledger = Ledger(make_engine(demo.url))
    try:
        return demo_cadence.measure_ledger(ledger, PolicyLibrary.load(None))
    finally:
        ledger.engine.dispose()


def test_the_demo_exits_as_its_policy_checks_say(demo: DemoRun) -> None:
    # Given the demo's ledger measured again, apart from the run
    measured = _measured(demo)
    breaches = measured.breaches()
    # Then the demo exits 3 exactly when a rule of the policies broke, and names each broken rule with an example
    assert demo.code == (demo_run.EXIT_RULES_BROKEN if breaches else demo_run.EXIT_OK), demo.output
    assert ran_as_expected(demo.code, demo.output)
    verdict = demo.output.split("POLICY RULES BROKEN", 1)[-1]
    for breach in breaches:
        assert f"  - {breach}\n" in verdict
    # And the summary prints the contact figures it measured
    section = _section(demo.output, "Cadence and tone")
    assert (
        f"contact days in any 30 days: max {measured.contacts_max}, 95th percentile {measured.contacts_p95}" in section
    )
    assert f"fewest days between two contact days of a customer: {measured.min_gap} " in section


def test_the_written_levels_printed_are_the_logs(demo: DemoRun) -> None:
    # Given the reminders of the log, read one by one apart from the demo's measurement
    ledger = Ledger(make_engine(demo.url))
    demanded: Counter[tuple[str, str, str]] = Counter()  # (customer, invoice, level) -> messages demanding it
    messages: Counter[str] = Counter()
    for event in ledger.iter_all():
        if event.event_type != "reminder.requested":
            continue
        levels = {line.get("level") or event.data["level"] for line in event.data["lines"]}
        messages.update(levels)
        for line in event.data["lines"]:
            demanded[(event.customer_id, line["invoice_id"], line.get("level") or event.data["level"])] += 1
    ledger.engine.dispose()
    # Then each written level's row says how many messages demanded it and at most how often for one invoice
    rows = _section(demo.output, "Written levels per invoice").splitlines()[3:]
    assert rows, demo.output
    for row in rows:
        level, sent, _, invoices, most, again = row.split()
        of_level = [n for (_, _, at), n in demanded.items() if at == level]
        assert _number(sent) == messages[level]
        assert (_number(invoices), _number(most)) == (len(of_level), max(of_level))
        assert _number(again) == sum(1 for n in of_level if n > 1)


def test_the_demos_dunning_keeps_its_policies_rules(demo: DemoRun) -> None:
    assert _measured(demo).breaches() == []
    assert demo.code == demo_run.EXIT_OK


# ---------------------------------------------------------------------------------------------------- e-mail
def test_the_reminders_are_sent_as_real_emails_with_evidence(demo: DemoRun) -> None:
    import email
    import hashlib
    from email import policy

    assert demo.code in RAN, demo.output
    section = _section(demo.output, "Reminders sent by the notifier over SMTP")
    folder = demo.out / demo_run.MAIL_DIR
    files = sorted(folder.glob("*.eml"))
    assert f"({len(files)} e-mails in {folder}/)" in section
    assert "in en" in section and "in fr" in section
    assert re.search(r"\n  formal_notice +[\d,]+ ", section)  # levels that sent something, with their counts
    assert "each Message-ID received once: ok" in section
    # Each file is exactly what the ledger's evidence hashed, for a recipient of the customer
    ledger = Ledger(make_engine(demo.url))
    sent = {
        e.data["message_id"]: e
        for t, c in ledger.streams()
        for e in ledger.read_stream(t, c)
        if e.event_type == "reminder.sent"
    }
    assert len(sent) == len(files) > 100
    for path in files[:: max(1, len(files) // 40)]:
        data = path.read_bytes()
        message = email.message_from_bytes(data, policy=policy.default)
        event = sent[message["Message-ID"]]
        assert hashlib.sha256(data).hexdigest() == event.data["sha256"]
        assert message.get_content_type() == "multipart/alternative"
        assert {part.get_content_type() for part in message.iter_parts()} == {"text/plain", "text/html"}
        assert [str(a.addr_spec) for a in message["To"].addresses] == event.data["recipients"]
    # Nothing was sent for a reminder whose invoices were all settled or disputed by then
    skipped = [
        e.data for t, c in ledger.streams() for e in ledger.read_stream(t, c) if e.event_type == "reminder.skipped"
    ]
    assert all(d["dropped"] for d in skipped)
    ledger.engine.dispose()


# ---------------------------------------------------------------------------------------------------- claims
def test_claims_are_paid_and_waived_and_what_is_owed_adds_up(demo: DemoRun) -> None:
    # Given the claims table of the summary
    section = _section(demo.output, "Claims as of 2026-11-20")
    rows = [row.split() for row in section.splitlines()[3:] if row.startswith("  acme-")]
    assert {(r[0], r[1]) for r in rows} == {("acme-fr", "EUR"), ("acme-fr", "USD"), ("acme-uk", "GBP")}
    figures = {(r[0], r[1]): [Decimal(v.replace(",", "")) for v in r[2:7]] for r in rows}
    # Then claims were paid and waived, in both tenants, and still owed = charged - paid - waived everywhere
    assert all(paid > 0 for _, paid, _, _, _ in figures.values())
    assert figures[("acme-fr", "EUR")][2] > 0 and figures[("acme-uk", "GBP")][2] > 0
    for charged, paid, given_up, owed, _ in figures.values():
        assert owed == charged - paid - given_up
    assert "still owed = charged - paid - waived, per currency: holds" in section
    # And the figures are the ledger's: the waivers on record, with their reason and author, as printed
    ledger = Ledger(make_engine(demo.url))
    waivers = [e for e in ledger.iter_all() if e.event_type == "claim.waived"]
    printed = re.search(r"; ([\d,]+) indemnities waived by a collector", section)
    assert printed and _number(printed.group(1)) == len(waivers) >= 3
    assert all(e.data["reason"] and e.data["author"] and e.metadata["source"] == "demo" for e in waivers)
    waived: dict[tuple[str, str], Decimal] = {}
    for e in waivers:
        key = (e.tenant, e.data["currency"])
        waived[key] = waived.get(key, Decimal(0)) + Decimal(e.data["amount"])
    assert waived == {k: f[2] for k, f in figures.items() if f[2]}
    # And each transfer answering a formal notice alone pays exactly the total the notice demanded
    answered = 0
    for tenant, customer in ledger.streams():
        demand = None
        for event in ledger.read_stream(tenant, customer):
            if event.event_type == "reminder.requested" and event.data["level"] == "formal_notice":
                demand = demo_answers.demanded(tenant, customer, event.data)
            elif event.event_type == "payment.received" and "-MED-" in event.data["payment_id"]:
                allocated = {a["invoice_id"] for a in event.data["allocations"]}
                if demand is not None and allocated == set(demand.principal):
                    assert Decimal(event.data["amount"]) == demand.total
                    answered += 1
    assert answered > 0
    ledger.engine.dispose()


def test_the_last_days_agenda_holds_only_open_work_one_line_per_customer_and_kind(demo: DemoRun) -> None:
    assert demo.code in RAN, demo.output
    agenda = _section(demo.output, "The collectors' agenda on 2026-11-20")
    figures = dict(re.findall(r"  (acme-\w+): ([\d,]+) line\(s\)", agenda))
    assert set(figures) == {"acme-fr", "acme-uk"} and all(_number(n) > 0 for n in figures.values()), agenda
    assert "invoice paid" in agenda  # tasks closed by themselves, with their cause
    # the demo's own checks (one line per customer and kind, open tasks only, numbers) found nothing
    assert "agenda of acme" not in demo.output
    # and the agenda says invoice numbers, never relance's internal ids
    ledger = Ledger(make_engine(demo.url))
    items = build_agenda([ledger.state(t, c) for t, c in ledger.streams("acme-fr")], AS_OF)
    assert items and all(not re.match(r"fr-C-\d{4}-\d{3}$", n) for i in items for n in i.numbers)
    assert any(i.numbers for i in items)


def test_the_late_payers_evidence_bundle_verifies_offline(demo: DemoRun) -> None:
    from services.audit.offline import verify_bundle

    [line] = [line for line in demo.output.splitlines() if "evidence bundle of this customer:" in line]
    found = re.search(r"customer: (\S+\.zip) \((\d+) events, (\d+) e-mail", line)
    assert found, line
    path = Path(found.group(1))
    assert path.parent == demo.out and path.name.startswith("audit-") and path.is_file()
    verdict = verify_bundle(path, (demo.out / "checkpoint.pub").read_bytes())
    assert verdict.valid, verdict.text()
    assert verdict.counts["events"] == int(found.group(2)) and verdict.counts["messages"] == int(found.group(3)) >= 1
    assert verdict.counts["checkpoints"] == 1
    assert f"verifies offline: relance audit verify {path} --key {demo.out / 'checkpoint.pub'}" in demo.output


def test_the_letters_are_rendered_stored_and_counted(demo: DemoRun, tmp_path: Path) -> None:
    import shutil

    from pypdf import PdfReader

    from services.cli import main
    from shared.ledger import letters

    section = _section(demo.output, "Letters rendered to PDF by the notifier")
    ledger = Ledger(make_engine(demo.url))
    stored = [letter for tenant in ("acme-fr", "acme-uk") for letter in letters.listed(ledger.engine, tenant)]
    assert stored and f"{len(stored):,} letters, {sum(letter.pages for letter in stored):,} pages" in section
    missing = re.search(r"\n  ([\d,]+) letters not printed: the customer has no postal address", section)
    assert missing and int(missing.group(1).replace(",", "")) > 0  # a few customers have no address
    # Every stored letter is the one its letter.rendered names
    for letter in stored[:20]:
        folded = ledger.state(letter.tenant, letter.customer_id).letters[letter.letter_id]
        kept = letters.get(ledger.engine, letter.tenant, letter.letter_id)
        assert kept is not None and letters.verify(kept, folded["sha256"])
    # And the batch the summary names can be made (on a copy: the demo's ledger stays as the other tests read it)
    command = re.search(r"relance letters batch --tenant (\S+) --date (\S+)", section)
    assert command
    copy = tmp_path / "copy.db"
    shutil.copyfile(demo.out / demo_run.DATABASE_FILE, copy)
    out = tmp_path / "batch.pdf"
    args = ["letters", "batch", "--tenant", command.group(1), "--date", command.group(2), "--out", str(out)]
    assert main([*args, "--database-url", f"sqlite:///{copy}"]) == 0
    assert len(PdfReader(str(out)).pages) > 1
