"""What the demo prints after its run: one section per part of the pipeline, from the ingest to the files it wrote.

Every figure is read back from what the run produced (the queue's counters, the ledger's streams, the audit, the
mail folder), so the printout shows what relance did, not what the demo meant it to do. The same sample prints the
same sections, line for line; only the timings differ from run to run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

from services.cli.demo.cadence import FIGURE_WINDOW, Breach, Cadence
from services.cli.demo.escalation import Audit, Timeline
from services.cli.demo.generator import Sample
from services.cli.demo.mail import Letters, Mailed
from services.cli.demo.report import ZERO, Book, count, money, table
from services.escalation.policy import PolicyLibrary
from services.reports.aging import BUCKETS, AgedBalance
from shared.broker.memory import MemoryQueue
from shared.contracts.events import CLAIMS_STATEMENT
from shared.ledger.claims import Figures

if TYPE_CHECKING:
    from services.cli.demo.answers import Answers
    from services.cli.demo.run import Ingested, Simulated

# the files the demo writes into its folder, as the printout names them
EVENTS_FILE = "erp-events.jsonl"
DEAD_LETTERS_FILE = "dead-letters.jsonl"
LOG_FILE = "relance-demo.log"


def ingest_section(sample: Sample, queue: MemoryQueue, ingested: Ingested, withheld: int = 0) -> list[str]:
    """``sample``: the messages as published; ``withheld``: the generated ones not sent (their invoices paid in
    answer to a formal notice, see :mod:`services.cli.demo.answers`)."""
    result, notes, mix = ingested.result, sample.notes(), sample.event_types()
    rejected = len(result.rejections)
    balanced = queue.published == result.applied + result.duplicates + rejected
    rows = [
        ["published", count(queue.published), "messages put on the in-process queue"],
        ["applied", count(result.applied), "appended to customer ledgers"],
        [
            "duplicates",
            count(result.duplicates),
            f"{notes['redelivered']} redelivered (same event_id), {notes['re-sent']} re-sent with a new event_id",
        ],
        ["rejected", count(rejected), f"dead-lettered with their reason ({DEAD_LETTERS_FILE})"],
    ]
    lines = ["", "Ingest", *table(["", "messages", ""], rows, "lrl")]
    lines.append(
        f"  published = applied + duplicates + rejected: "
        f"{count(queue.published)} = {count(result.applied)} + {count(result.duplicates)} + {count(rejected)} "
        + ("(ok)" if balanced else "(MISMATCH)")
    )
    payments = mix["payment.received"]
    lines += [
        "",
        "What the ERP sent (applied events by type)",
        f"  {count(mix['customer.upserted'])} customer records, {count(mix['invoice.issued'])} invoices, "
        f"{count(payments)} payments ({notes['out_of_order']} published before their invoice, {notes['answer']} "
        f"paying a formal notice in full, {withheld} generated messages withheld as those paid them), "
        f"{mix['credit_note.issued']} credit notes,",
        f"  {count(mix['invoice.due_date_passed'])} due-date notices, {mix['invoice.cancelled']} cancellations, "
        f"{mix['invoice.disputed']} disputes ({mix['invoice.dispute_resolved']} resolved), "
        f"{mix['promise_to_pay.recorded']} promises to pay, {mix['payment_plan.agreed']} payment plans",
    ]
    return lines


def rejection_section(queue: MemoryQueue) -> list[str]:
    kinds = Counter(d.kind for d in queue.dead_letters)
    if not kinds:
        return ["", "Rejections: none"]
    rows = []
    for kind, number in kinds.most_common():
        example = next(d for d in queue.dead_letters if d.kind == kind)
        rows.append([kind, str(number), _clip(example.reason, 92)])
    headers = ["kind", "count", "example reason"]
    return ["", "Rejected messages by kind (one example reason each)", *table(headers, rows, "lrl")]


def ledger_section(book: Book, events_checked: int, streams: int, intact: bool) -> list[str]:
    tenants = ", ".join(f"{t} {n}" for t, n in sorted(book.customers_by_tenant.items()))
    return [
        "",
        "Ledger",
        f"  tenants    {len(book.customers_by_tenant)} ({', '.join(sorted(book.customers_by_tenant))})",
        f"  customers  {count(sum(book.customers_by_tenant.values()))} ({tenants})",
        f"  events     {count(events_checked)} in {count(streams)} hash-chained streams: "
        + ("all chains verified, intact" if intact else "ALTERED, see below"),
    ]


def receivables_section(book: Book) -> list[str]:
    rows = []
    for (tenant, currency), r in sorted(book.receivables.items()):
        rows.append(
            [
                tenant,
                currency,
                count(r.customers),
                money(r.open),
                money(r.overdue),
                count(r.overdue_customers),
                money(r.disputed),
                money(r.unapplied),
            ]
        )
    headers = ["tenant", "currency", "customers", "open", "overdue", "with overdue", "in dispute", "unapplied credit"]
    return [
        "",
        f"Receivables as of {book.as_of} (open = open invoices less unapplied credit)",
        *table(headers, rows, "llrrrrrr"),
    ]


def claims_section(book: Book, answers: Answers | None = None) -> list[str]:
    """Late interest and indemnities, apart from principal: charged, paid, waived, still owed (and asked for)."""
    rows = [
        [
            tenant,
            currency,
            money(f.charged),
            money(f.paid),
            money(f.waived),
            money(f.owed),
            money(book.claimed_owed.get((tenant, currency), ZERO)),
        ]
        for (tenant, currency), f in sorted(book.claims.items())
    ]
    headers = ["tenant", "currency", "charged", "paid", "waived", "still owed", "of which claimed"]
    lines = [
        "",
        f"Claims as of {book.as_of} (late interest and indemnities, apart from principal; see relance claims list)",
        *table(headers, rows, "llrrrrr"),
    ]
    broken = claims_identity(book)
    held = ", ".join(f"{currency} {money(f.owed)}" for currency, f in sorted(claims_by_currency(book).items()))
    lines.append(
        "  still owed = charged - paid - waived, per currency: "
        + (f"holds ({held})" if not broken else f"BROKEN ({'; '.join(broken)})")
    )
    if answers is not None:
        surplus: dict[str, Decimal] = {}
        for demand in answers.answered:
            surplus[demand.currency] = surplus.get(demand.currency, ZERO) + demand.surplus
        waived: dict[str, Decimal] = {}
        for waiver in answers.waived:
            waived[waiver.currency] = waived.get(waiver.currency, ZERO) + waiver.amount
        lines.append(
            f"  {count(len(answers.answered))} formal notices paid in full by "
            f"{count(len({(d.tenant, d.customer_id) for d in answers.answered}))} customers, "
            f"{count(sum(1 for d in answers.answered if d.rest))} with the rest of their account (principal allocated "
            "by the ERP, the surplus of "
            + (", ".join(f"{money(v)} {c}" for c, v in sorted(surplus.items())) or "0.00")
            + f" left unallocated); {count(len(answers.waived))} indemnities waived by a collector ("
            + (", ".join(f"{money(v)} {c}" for c, v in sorted(waived.items())) or "0.00")
            + ")"
        )
    return lines


def claims_by_currency(book: Book) -> dict[str, Figures]:
    total: dict[str, Figures] = {}
    for (_, currency), figures in book.claims.items():
        summed = total.setdefault(currency, Figures())
        summed += figures
    return total


def claims_identity(book: Book) -> list[str]:
    """The currencies whose claims still owed differ from charged - paid - waived (a surprise: exit 1)."""
    return [
        f"{currency}: owed {f.owed} != {f.charged} - {f.paid} - {f.waived}"
        for currency, f in sorted(claims_by_currency(book).items())
        if f.owed != f.charged - f.paid - f.waived
    ]


def aging_section(aged: dict[str, AgedBalance], as_of: date) -> list[str]:
    """The aged balance per tenant and currency, as ``relance report aged-balance --by currency`` gives it."""
    rows = []
    for tenant, balance in sorted(aged.items()):
        for currency in balance.currencies():
            row = balance.totals[currency]
            rows.append(
                [
                    tenant,
                    currency,
                    *(money(b) for b in row.buckets),
                    money(row.disputed),
                    money(row.unapplied),
                    money(row.net),
                ]
            )
    headers = ["tenant", "currency", *BUCKETS, "disputed", "unapplied", "net"]
    return [
        "",
        f"Aged balance as of {as_of} (open invoices by days past due; disputed apart; net = buckets + disputed - "
        "unapplied credit; relance report aged-balance)",
        *table(headers, rows, "ll" + "r" * (len(headers) - 2)),
    ]


def aging_problems(book: Book, aged: dict[str, AgedBalance]) -> list[str]:
    """The aged balance (folded as of the day) must give each tenant's open amount per currency (the current state)."""
    problems = []
    for (tenant, currency), receivables in sorted(book.receivables.items()):
        balance = aged.get(tenant)
        net = balance.totals[currency].net if balance is not None and currency in balance.totals else ZERO
        if net != receivables.open:
            problems.append(f"{tenant} {currency}: the aged balance's net {net} differs from the open amount")
    return problems


def debtors_section(book: Book) -> list[str]:
    lines = ["", "Top 5 overdue customers per currency"]
    rows = []
    for currency in book.currencies():
        for d in book.top_debtors(currency):
            rows.append(
                [
                    d.tenant,
                    d.customer_id,
                    _clip(d.name, 32),
                    money(d.overdue, currency),
                    str(d.invoices),
                    str(d.oldest_days),
                    ", ".join(d.flags),
                ]
            )
    headers = ["tenant", "customer", "name", "overdue", "invoices", "oldest (days)", "notes"]
    lines += table(headers, rows, "lllrrrl")
    return [line.rstrip() for line in lines]


def escalation_section(escalated: Audit, simulated: Simulated, as_of: date) -> list[str]:
    reminders = escalated.reminders
    languages = sorted({language for _, language in reminders.by_level_language})
    rows = []
    for key, channel in _ladder():
        rows.append(
            [
                key,
                reminders.channels.get(key, channel),
                count(reminders.by_level[key]),
                *(count(reminders.by_level_language[(key, language)]) for language in languages),
                count(reminders.invoices_listed[key]),
                count(escalated.levels_reached[key]),
            ]
        )
    headers = ["level", "channel", "reminders", *(f"in {lang}" for lang in languages), "invoices listed", "reached"]
    lines = [
        "",
        f"Escalation over the {simulated.days} simulated days (shipped policies standard-fr / standard-en)",
        f"  {count(simulated.evaluations)} evaluations by the escalation worker (its timers, and the customers the "
        f"day's messages touched): {count(escalated.decisions)} decisions, {count(escalated.ticks)} clock ticks",
        "",
        "Reminders requested per level (on a contact day, one per customer and currency, at the firmest level "
        "waiting to be told; 'reached': invoices)",
        *table(headers, rows, "ll" + "r" * (len(headers) - 2)),
        f"  {count(sum(reminders.by_level.values()))} reminders; {count(escalated.caught_up)} invoices caught up "
        "several levels at once (levels passed over are recorded as skipped, not sent)",
    ]
    currencies = sorted(set(escalated.interest) | set(escalated.fees))
    money_rows = []
    for currency in currencies:
        interest, fees = escalated.interest.get(currency), escalated.fees.get(currency)
        money_rows.append(
            [
                currency,
                count(interest.invoices) if interest else "0",
                money(interest.total, currency) if interest else "-",
                count(fees.invoices) if fees else "0",
                money(fees.total, currency) if fees else "-",
            ]
        )
    lines += [
        "",
        f"Late interest and fixed recovery fees charged (interest owed through {as_of} or payment; fees once per "
        "invoice)",
        *table(["currency", "invoices", "late interest", "invoices", "recovery fees"], money_rows),
    ]
    reasons = ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(escalated.block_reasons.items()))
    lines += [
        "",
        "Credit blocks",
        f"  {escalated.blocks} blocked ({reasons or 'none'}), {escalated.unblocks} unblocked when cleared, "
        f"{escalated.still_blocked} still blocked on {as_of} (all with overdue invoices)",
        "  each block lifted at most once, each unblock naming the open block: "
        + ("ok" if not any("block" in p for p in escalated.problems) else "NO, see below"),
        "",
        "Collector tasks by kind (see `relance agenda`)",
        "  "
        + (
            ", ".join(f"{kind} {count(n)}" for kind, n in sorted(escalated.tasks.items(), key=lambda kv: -kv[1]))
            or "  none"
        ),
        "",
        "Commands written to the outbox with the decisions that caused them",
        "  " + (", ".join(f"{kind} {count(n)}" for kind, n in sorted(escalated.outbox.items())) or "none"),
        "  waiting for `relance worker relay` (the demo has no broker): "
        + (", ".join(f"{kind} {count(n)}" for kind, n in sorted(escalated.pending.items())) or "none"),
    ]
    return lines


def cadence_section(cadence: Cadence) -> list[str]:
    """The figures a credit manager checks before switching dunning on, read back from every stream."""
    contacted = cadence.contacted
    gap = cadence.min_gap
    lines = [
        "",
        "Cadence and tone, as the customers received them (contact day: a local day with a written reminder or a "
        "phone_call task)",
        f"  {count(len(contacted))} customers contacted, {count(cadence.contacted_twice)} on two days or more; "
        f"contact days in any {FIGURE_WINDOW} days: max {cadence.contacts_max}, 95th percentile "
        f"{cadence.contacts_p95}",
        "  fewest days between two contact days of a customer: "
        + (f"{gap} ({count(cadence.within(2))} customers contacted twice within 2 days)" if gap is not None else "-"),
    ]
    rows = [
        [
            level,
            count(written.messages),
            count(len(written.customers)),
            count(written.invoices),
            count(written.most),
            count(written.repeated),
        ]
        for level in cadence.levels()
        for written in (cadence.written[level],)
    ]
    headers = ["written level", "messages", "customers", "invoices", "most per invoice", "invoices sent it again"]
    lines += ["", "Written levels per invoice (the invoices each message demands; at most 1 each)"]
    lines += table(headers, rows, "lrrrrr")
    not_yet_due = ", ".join(f"{level} {count(n)}" for level, n in _by_ladder(cadence, cadence.not_yet_due))
    lines += [
        "",
        "Tone and demands (the lines of every reminder)",
        f"  lines softer than a level their invoice had reached (phone calls included): {count(cadence.softer_lines)}"
        f" in {count(cadence.softer_messages)} messages",
        f"  demands for invoices not yet due: {count(sum(cadence.not_yet_due.values()))} lines"
        + (f" ({not_yet_due})" if not_yet_due else ""),
        f"  demands for invoices already handed over: {count(cadence.handed_over_lines)} lines",
    ]
    rows = [
        [
            currency,
            money(claims.interest, currency),
            money(claims.fees, currency),
            money(claims.charged, currency),
            money(claims.paid, currency),
            money(claims.waived, currency),
            money(claims.owed, currency),
        ]
        for currency, claims in sorted(cadence.claims.items())
    ]
    headers = ["currency", "interest", "fees", "charged", "paid", "waived", "still owed"]
    lines += ["", "Claims per currency (interest: the latest figure of each invoice)", *table(headers, rows)]
    broken = len(cadence.breaches())
    rules = "all held" if not broken else f"{broken} broken (listed at the end)"
    lines += [
        "",
        f"The policies' own rules (cadence when a policy sets one; each written level once per invoice; no softer "
        f"line; no demand for an invoice not yet due or handed over): {rules}",
    ]
    return lines


def _by_ladder(cadence: Cadence, counts: Counter[str]) -> list[tuple[str, int]]:
    order = cadence.levels()
    return sorted(counts.items(), key=lambda kv: (order.index(kv[0]) if kv[0] in order else len(order), kv[0]))


def _ladder() -> list[tuple[str, str]]:
    """Every level of the shipped policies, in ladder order, with its channel (and copies), then the claims
    statement (no level of a ladder: the claims still owed on invoices already paid, asked once)."""
    seen: dict[str, tuple[int, str]] = {}
    for policy in PolicyLibrary.load(None).common.policies.values():
        for level in policy.levels:
            channel = level.channel + "".join(f"+{c}" for c in sorted(level.copy_channels))
            seen.setdefault(level.key, (level.offset_days, channel))
    ladder = [(key, channel) for key, (_, channel) in sorted(seen.items(), key=lambda kv: kv[1][0])]
    return [*ladder, (CLAIMS_STATEMENT, "email")]


def mail_section(mailed: Mailed, hashes_ok: bool) -> list[str]:
    languages = sorted({language for _, language in mailed.sent})
    levels = [key for key, _ in _ladder()]
    rows = []
    for level in levels:
        sent = [mailed.sent[(level, language)] for language in languages]
        if sum(sent) or mailed.letters[level]:
            rows.append([level, count(sum(sent)), *(count(n) for n in sent), count(mailed.letters[level])])
    headers = ["level", "e-mails sent", *(f"in {language}" for language in languages), "letters to post"]
    outcomes = mailed.outcomes
    skipped = outcomes["skipped"]
    return [
        "",
        f"Reminders sent by the notifier over SMTP to the demo's mail server ({len(mailed.received)} e-mails in "
        f"{mailed.folder}/)",
        *table(headers, rows, "l" + "r" * (len(headers) - 1)),
        f"  {count(sum(outcomes.values()))} reminder commands: {count(outcomes['sent'])} e-mailed, "
        f"{count(outcomes['letter'])} by letter only, {count(sum(mailed.letters.values()))} letters to print and post "
        f"in all (a send_letter task each), {count(skipped)} not sent because "
        f"everything they listed was paid, disputed or superseded by a firmer reminder by the time they were sent, "
        f"{count(outcomes['failed'])} failed (no usable address: a letter task instead)",
        f"  {count(mailed.dropped)} invoices left out of reminders that still went, paid or disputed since the "
        "decision",
        "  every e-mail's SHA-256 equals the one its reminder.sent event recorded, each Message-ID received once: "
        + ("ok" if hashes_ok else "NO, see below"),
    ]


def letters_section(letters: Letters, url: str) -> list[str]:
    """How many letters were rendered to PDF (pages, bytes), and the command that makes a day's print batch."""
    if not letters.rendered and not letters.without_address:
        return ["", "Letters: none rendered in this sample"]
    latest = max(letters.days) if letters.days else None
    lines = [
        "",
        f"Letters rendered to PDF by the notifier: {count(letters.rendered)} letters, {count(letters.pages)} pages, "
        f"{letters.size / 1_000_000:.1f} MB in the letters table (each one's SHA-256 in its letter.rendered), over "
        f"{len(letters.days)} day(s)",
        f"  {count(letters.without_address)} letters not printed: the customer has no postal address "
        "(a postal_address_missing item on the agenda each)",
    ]
    if latest is not None:
        tenant = letters.tenants[0] if letters.tenants else "acme-fr"
        lines.append(
            f"  the print batch of {latest} ({count(letters.days[latest])} letters): relance letters batch --tenant "
            f"{tenant} --date {latest} --out batch.pdf --database-url {url}"
        )
    return lines


def timeline_section(timeline: Timeline | None) -> list[str]:
    if timeline is None:
        return ["", "Timeline: no customer went up several levels in this sample"]
    lines = [
        "",
        f"Timeline of one late payer: {timeline.tenant} {timeline.customer_id} {timeline.name} "
        f"(policy {timeline.policy}, language {timeline.language})",
    ]
    for moment, source, what in timeline.lines:
        lines.append(f"  {moment:%Y-%m-%d %H:%M}  {source:<7}  {what}")
    return lines


def files_section(
    out: Path,
    url: str,
    book: Book,
    messages: int,
    dead: int,
    mailed: Mailed,
    committee: tuple[str, Sequence[Path]] = ("", ()),
) -> list[str]:
    eur = book.top_debtors("EUR", 1) or book.debtors[:1]
    tenant, customer = (eur[0].tenant, eur[0].customer_id) if eur else ("acme-fr", "C-0001")
    files = [
        (str(out / EVENTS_FILE), f"the {count(messages)} messages, one JSON body per line"),
        (str(out / DEAD_LETTERS_FILE), f"the {dead} rejected messages with their kind and reason"),
        (f"{mailed.folder}/", f"the {count(len(mailed.received))} e-mails as the SMTP server received them (.eml)"),
        (str(out / LOG_FILE), "structured log of the ingest, the escalation worker and the notifier (JSON lines)"),
        (url, "the ledger"),
        *((str(path), f"the credit committee's pack of {committee[0]} ({path.suffix[1:]})") for path in committee[1]),
    ]
    width = max(len(name) for name, _ in files)
    return [
        "",
        "Files",
        *(f"  {name.ljust(width)}  {what}" for name, what in files),
        "",
        "Next steps",
        f"  relance ledger show --tenant {tenant} --customer {customer} --database-url {url}",
        f"  relance agenda --tenant {tenant} --date {book.as_of} --database-url {url}",
        f"  relance verify --database-url {url}",
        f"  relance report committee --tenant {tenant} --as-of {book.as_of} --out-dir {out} --database-url {url}",
        f"  relance evidence list --tenant {tenant} --customer {customer} --database-url {url}",
        f"  relance publish {out / EVENTS_FILE}   # replay on RabbitMQ (RELANCE_AMQP_URL) for `relance worker ingest`",
    ]


WORKSPACE_URL = "http://127.0.0.1:8000/"  # where ``relance workspace`` listens by default


def workspace_section(url: str, default_url: str, login: tuple[str, str] | None) -> list[str]:
    """How to open the demo's ledger in the web workspace, and whom to sign in as."""
    command = "relance workspace" + ("" if url == default_url else f" --database-url {url}")
    checkout = " (from a checkout: make workspace)" if url == default_url else ""
    lines = [
        "",
        "Workspace (the web pages and the JSON API on this ledger)",
        f"  {command}   # then open {WORKSPACE_URL}{checkout}",
    ]
    if login is not None:
        lines.append(f"  sign in as {login[0]}, password {login[1]} (collector and credit manager in each demo tenant)")
    return lines


def verdict_section(problems: list[str], breaches: list[Breach], code: int) -> list[str]:
    """The printout's last lines: what went wrong, or that nothing did."""
    lines: list[str] = []
    if problems:
        lines += ["", f"UNEXPECTED (the demo exits with status {code})"] + [f"  - {p}" for p in problems]
    if breaches:
        lines += ["", f"POLICY RULES BROKEN (the demo exits with status {code})"] + [f"  - {b}" for b in breaches]
    if not problems and not breaches:
        lines += [
            "",
            "Everything as expected: every message accounted for, every chain intact, every reminder listing only "
            "invoices due at the time, every block lifted once when cleared, and the policies' cadence and tone "
            "rules held.",
        ]
    elif not problems:
        lines += [
            "",
            "The run itself went as expected (every message accounted for, every chain intact, every block lifted "
            "once when cleared); the dunning it decided did not keep its policy's rules above.",
        ]
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
