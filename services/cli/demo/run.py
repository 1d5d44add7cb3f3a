"""The demo's composition root: a fresh SQLite ledger, an in-process queue, the real ingest code, a summary.

Messages travel the same path as in production, minus the network: published to a queue, taken in micro-batches,
applied by :class:`services.ingest.service.Ingestor` in one transaction per batch, then acked, or dead-lettered with
their reason. Each message carries its index in the sample (header ``x-demo-seq``), so the demo can check every
outcome against what the generator expected and exit non-zero on any surprise (status 1), or when the run went as
expected but its dunning broke a rule of its policy (status 3, see :mod:`services.cli.demo.cadence`). What it prints
afterwards is :mod:`services.cli.demo.summary`; the run itself (generate, ingest, simulate the days, verify, audit)
stays in this one module, read from top to bottom, which is why it is a little under 500 lines.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from datetime import time as time_of_day
from pathlib import Path
from typing import Any, TextIO

import structlog
from sqlalchemy import Engine, event, func, select

from services.cli.demo import summary
from services.cli.demo.agenda import agenda_section, check_agenda
from services.cli.demo.answers import Answers
from services.cli.demo.bundle import bundle_section, write_bundle
from services.cli.demo.cadence import Cadence, measure_ledger
from services.cli.demo.escalation import (
    FOLLOW_AT,
    TIMERS_AT,
    audit,
    days_between,
    delivery_days,
    demo_rates,
)
from services.cli.demo.generator import AS_OF, Sample, generate
from services.cli.demo.mail import DemoMailer, Mailed, check_evidence, letter_figures
from services.cli.demo.report import Book, Progress, count
from services.cli.demo.sample import Message
from services.cli.demo.summary import DEAD_LETTERS_FILE, EVENTS_FILE, LOG_FILE
from services.cli.errors import CliError
from services.escalation.interest import RateTable
from services.escalation.policy import PolicyLibrary
from services.escalation.worker import EscalationWorker, real_rules
from services.ingest.service import BatchResult, Delivery, Ingestor
from services.reports.aging import AgedBalance, aged_balance
from services.reports.committee import committee_pack
from services.reports.formats import write_committee
from services.reports.walk import tenant_states
from shared.broker.memory import MemoryQueue
from shared.config import ConfigurationError, Settings, load_settings
from shared.ledger import migrate
from shared.ledger.schema import events
from shared.ledger.store import Ledger, LedgerUnavailable
from shared.runtime import ledger_engine

EXIT_OK = 0
EXIT_UNEXPECTED = 1  # the run itself went wrong: a message not accounted for, a broken chain, an audit problem
EXIT_RULES_BROKEN = 3  # the run went as expected, but the dunning broke its policy's own rules (cadence, tone)
SEQ_HEADER = "x-demo-seq"
DATABASE_FILE = "relance-demo.db"
MAIL_DIR = "mail"
BATCH_SIZE = 500
RETRIES = 5


class DemoFailed(CliError):
    """The demo could not run at all (as opposed to running and finding a surprise)."""


@dataclass
class Ingested:
    result: BatchResult
    batches: int
    seconds: float


@dataclass
class Simulated:
    """The months replayed: what the ingest did, and how much the escalation worker worked."""

    ingested: Ingested
    days: int
    evaluations: int
    failures: int
    seconds: float  # escalation time, ingest excluded
    mailed: Mailed
    answers: Answers
    sent: Sample  # the messages as published: the sample less those withheld, with the answers, in publish order
    audit_seconds: float = 0.0


class SimulatedClock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run_demo(
    customers: int = 300,
    months: int = 4,
    seed: int = 7,
    out: Path = Path("demo-output"),
    database_url: str | None = None,
    *,
    as_of: date = AS_OF,
    batch_size: int = BATCH_SIZE,
    stdout: TextIO | None = None,
    rates_file: Path | None = None,
) -> int:
    """Generate, ingest and escalate day by day, verify and summarise.

    0 if all went as expected and the policies' rules held; 1 if the demo could not run or something unexpected
    happened; 3 if the run went as expected but the dunning broke its policy's own rules (see
    :mod:`services.cli.demo.cadence`).
    """
    screen = stdout or sys.stdout
    try:
        return _run(customers, months, seed, Path(out), database_url, as_of, batch_size, screen, rates_file)
    except DemoFailed as exc:
        print(f"relance demo: {exc}", file=sys.stderr)
        return EXIT_UNEXPECTED


def _run(
    customers: int,
    months: int,
    seed: int,
    out: Path,
    database_url: str | None,
    as_of: date,
    batch_size: int,
    screen: TextIO,
    rates_file: Path | None,
) -> int:
    started = time.perf_counter()

    def say(line: str = "") -> None:
        screen.write(line + "\n")
        screen.flush()

    say(f"relance demo: {customers} customers, {months} months of activity up to {as_of}, seed {seed}")
    say()
    try:
        sample = generate(customers=customers, months=months, seed=seed, as_of=as_of)
    except ValueError as exc:
        raise DemoFailed(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    events_path = out / EVENTS_FILE
    events_path.write_bytes(sample.jsonl())
    say(f"  generated {count(len(sample.messages))} ERP messages (contract v1) -> {events_path}")

    url = _checked(database_url) if database_url else _fresh_sqlite(out / DATABASE_FILE)
    with _logs_to(out / LOG_FILE):
        migrate.upgrade(url)
        settings = load_settings(database_url=url)  # the demo's own database, whatever RELANCE_DATABASE_URL says
        engine = ledger_engine(settings)
        if not database_url:
            _throwaway(engine)
        try:
            held = _event_count(engine)
            if held:
                raise DemoFailed(
                    f"{url} already holds {held} events; give --database-url an empty database, "
                    "or leave it out to use a fresh SQLite file"
                )
            say(f"  ledger database ready (migrations applied): {url}")
            ledger = Ledger(engine)
            rates, assumptions = demo_rates(rates_file, as_of)
            for note in assumptions:
                say(f"  note: {note}")
            queue = MemoryQueue("relance.demo")
            library = PolicyLibrary.load(None)
            simulated = _simulate(sample, ledger, settings, library, rates, queue, batch_size, screen, out / MAIL_DIR)
            events_path.write_bytes(simulated.sent.jsonl())  # what the ERP sent, answers to the notices included
            ingested = simulated.ingested
            verifying = time.perf_counter()
            report = ledger.verify()
            seconds = time.perf_counter() - verifying
            say(f"  hash chains of {count(report.streams)} streams recomputed in {seconds:.1f} s")
            book = Book.of((ledger.state(t, c) for t, c in ledger.streams()), as_of)
            tenants = sorted({tenant for tenant, _ in ledger.streams()})
            aged: dict[str, AgedBalance] = {
                tenant: aged_balance(tenant, tenant_states(ledger, tenant, as_of), as_of, "currency")
                for tenant in tenants
            }
            committee = write_committee(committee_pack(ledger, tenants[0], as_of), out, ["html", "csv", "json"])
            agenda = check_agenda((ledger.state(t, c) for t, c in ledger.streams()), as_of, rates)
            auditing = time.perf_counter()
            escalated = audit(ledger, as_of)
            bundle = write_bundle(engine, escalated.timeline, out)
            measured = measure_ledger(ledger, library)
            evidence_problems = check_evidence(ledger, simulated.mailed)
            letters = letter_figures(ledger)
            simulated.audit_seconds = time.perf_counter() - auditing
            login = demo_login(engine, sorted({tenant for tenant, _ in ledger.streams()}))
        finally:
            engine.dispose()
    _write_dead_letters(out / DEAD_LETTERS_FILE, queue)

    problems = _surprises(sample, queue, ingested.result, simulated.answers)
    problems += simulated.answers.problems()
    problems += summary.claims_identity(book)
    problems += [f"hash chain: {p}" for p in report.problems[:10]]
    problems += agenda.problems
    problems += book.problems()
    problems += summary.aging_problems(book, aged)
    problems += [f"escalation: {p}" for p in escalated.problems[:20]]
    if len(escalated.problems) > 20:
        problems.append(f"escalation: {len(escalated.problems) - 20} more problem(s)")
    if simulated.failures:
        problems.append(f"escalation: {simulated.failures} evaluation(s) failed (see {LOG_FILE})")
    held = escalated.tasks["interest_unavailable"] + escalated.tasks["invoice_dates_invalid"]
    if held:  # a missing reference rate or impossible dates: the engine held these invoices, with a task each
        problems.append(f"escalation: {held} invoice(s) held, their interest or dates cannot be computed (agenda)")
    if not escalated.decisions:
        problems.append("escalation: the engine decided nothing over the simulated months")
    problems += [f"notifier: {p}" for p in (simulated.mailed.problems + evidence_problems)[:20]]
    if bundle is not None and not bundle.valid:
        problems.append(f"audit bundle: {bundle.verdict}")
    if not simulated.mailed.received:
        problems.append("notifier: no e-mail reached the SMTP server")
    elapsed = time.perf_counter() - started

    lines: list[str] = []
    lines += summary.ingest_section(simulated.sent, queue, ingested, len(simulated.answers.withheld))
    lines += summary.rejection_section(queue)
    lines += summary.ledger_section(book, report.events, report.streams, report.ok)
    lines += summary.receivables_section(book)
    lines += summary.claims_section(book, simulated.answers)
    lines += summary.aging_section(aged, as_of)
    lines += summary.debtors_section(book)
    lines += summary.escalation_section(escalated, simulated, as_of)
    lines += agenda_section(agenda, as_of)
    lines += summary.mail_section(simulated.mailed, not evidence_problems)
    lines += summary.letters_section(letters, url)
    lines += summary.cadence_section(measured)
    lines += summary.timeline_section(escalated.timeline)
    lines += bundle_section(bundle)
    lines += [
        "",
        "Timing",
        f"  total {elapsed:.1f} s; ingest {ingested.seconds:.1f} s for {count(len(sample.messages))} messages "
        f"in {ingested.batches} batches = {count(int(len(sample.messages) / max(ingested.seconds, 1e-9)))} events/s",
        f"  escalation {simulated.seconds:.1f} s for {count(simulated.evaluations)} evaluations over "
        f"{simulated.days} simulated days; notifier {simulated.mailed.seconds:.1f} s for "
        f"{count(sum(simulated.mailed.outcomes.values()))} reminder commands; audit of every stream "
        f"{simulated.audit_seconds:.1f} s",
    ]
    lines += summary.files_section(
        out, url, book, len(simulated.sent.messages), len(queue.dead_letters), simulated.mailed, (tenants[0], committee)
    )
    default_url = f"sqlite:///{(Path('demo-output') / DATABASE_FILE)}"
    lines += summary.workspace_section(url, default_url, login)
    code = exit_code(problems, measured)
    lines += summary.verdict_section(problems, measured.breaches(), code)
    say("\n".join(lines))
    return code


DEMO_LOGIN = "demo"


def demo_login(engine: Engine, tenants: list[str]) -> tuple[str, str]:
    """The workspace's demo user, collector and credit manager in every demo tenant, and its new password (the demo
    ledger is made afresh on each run; a ledger given with --database-url keeps its user, with a new password)."""
    import secrets

    from services.workspace.users import UserStore

    store = UserStore(engine)
    password = "-".join(secrets.token_hex(3) for _ in range(3))
    if store.get(DEMO_LOGIN) is None:
        store.add(DEMO_LOGIN, "Demo collector", password=password)
    else:
        store.set_password(DEMO_LOGIN, password)
    for tenant in tenants:
        for role in ("collector", "credit_manager"):
            store.grant(DEMO_LOGIN, tenant, role)
    return DEMO_LOGIN, password


def exit_code(problems: list[str], measured: Cadence) -> int:
    """1 for anything unexpected in the run, else 3 when the dunning broke its policy's rules, else 0."""
    if problems:
        return EXIT_UNEXPECTED
    return EXIT_RULES_BROKEN if measured.breaches() else EXIT_OK


# ------------------------------------------------------------------------------------------------- the pipeline
def _fresh_sqlite(path: Path) -> str:
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    return f"sqlite:///{path}"


def _throwaway(engine: Engine) -> None:
    """The demo's own SQLite file is rebuilt on every run: commits need not wait for the disk (WAL keeps it sound)."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def _checked(url: str) -> str:
    """The URL as every relance process reads it (``postgresql://`` means psycopg 3), or a clear error."""
    try:
        return load_settings(database_url=url).require_database_url()
    except ConfigurationError as exc:
        raise DemoFailed(str(exc)) from None


def _event_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(events)).scalar_one())


def _simulate(
    sample: Sample,
    ledger: Ledger,
    settings: Settings,
    library: PolicyLibrary,
    rates: RateTable,
    queue: MemoryQueue,
    batch_size: int,
    screen: TextIO,
    mail_dir: Path,
) -> Simulated:
    """Deliver each hour's messages, and run the escalation worker on a simulated clock, day after day.

    At midnight the worker fires the timers due that day (the steps falling due at the tenants' midnight), and again at
    09:00 UTC (the contacts waiting for the tenants' send hour); after each hour's messages it follows the log and
    evaluates the customers they touched, as a worker that never lags would.
    """
    delivered = delivery_days(sample)
    by_day: dict[date, list[int]] = {}
    for seq in sorted(range(len(delivered)), key=lambda n: (delivered[n], n)):
        by_day.setdefault(delivered[seq], []).append(seq)
    days = list(days_between(min(delivered), sample.as_of))
    clock = SimulatedClock(_at(days[0], time_of_day(0)))
    worker = EscalationWorker(
        settings,
        ledger,
        library.for_tenant,
        real_rules(settings, rates),
        threading.Event(),
        clock=clock,
        holder="relance-demo",
    )
    ingestor = Ingestor(ledger)
    answers = Answers(sample, ledger, delivered)
    sent: list[Message] = []
    mailer = DemoMailer(settings, ledger, mail_dir, clock)
    total, batches, ingest_seconds, escalation_seconds, mail_seconds = BatchResult(), 0, 0.0, 0.0, 0.0
    screen.write(
        f"  replaying {len(days)} days: each ERP message delivered on the day it happened, the escalation worker on "
        f"a simulated clock (timers at {', '.join(f'{t:%H:%M}' for t in TIMERS_AT)}, the day's changes at "
        f"{FOLLOW_AT:%H:%M} UTC)\n"
    )
    progress = Progress("simulating", len(days), screen)
    with mailer:
        for done, day in enumerate(days, start=1):
            began = time.perf_counter()
            for moment in TIMERS_AT:
                clock.now = _at(day, moment)
                while worker.fire_due_timers():
                    pass
            escalation_seconds += time.perf_counter() - began
            mail_seconds += _timed(mailer.deliver)
            for answer in answers.payments_on(day):  # before the day's messages: they may be withheld by it
                seq = len(sample.messages) + len(answers.published) - 1
                queue.publish(
                    answer.body, routing_key=answer.routing_key, message_id=answer.event_id, headers={SEQ_HEADER: seq}
                )
                sent.append(answer)
            for seq in by_day.get(day, []):
                if not answers.keeps(seq):
                    continue
                message = sample.messages[seq]
                queue.publish(
                    message.body,
                    routing_key=message.routing_key,
                    message_id=message.event_id,
                    headers={SEQ_HEADER: seq},
                )
                sent.append(message)
            ingested = _consume(queue, ingestor, batch_size, received_at=clock.now)
            total.merge(ingested.result)
            batches += ingested.batches
            ingest_seconds += ingested.seconds
            began = time.perf_counter()
            clock.now = _at(day, FOLLOW_AT)
            while worker.follow_log():
                pass
            escalation_seconds += time.perf_counter() - began
            mail_seconds += _timed(mailer.deliver)
            answers.read_log(clock.now)
            progress.update(done)
    mailer.mailed.seconds = mail_seconds
    evaluations = worker.totals.customers + worker.totals.failures
    return Simulated(
        Ingested(total, batches, ingest_seconds),
        len(days),
        evaluations,
        worker.totals.failures,
        escalation_seconds,
        mailer.mailed,
        answers,
        replace(sample, messages=tuple(sent)),
    )


def _timed(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def _at(day: date, moment: time_of_day) -> datetime:
    return datetime.combine(day, moment, tzinfo=UTC)


def _consume(
    queue: MemoryQueue,
    ingestor: Ingestor,
    batch_size: int,
    progress: Progress | None = None,
    *,
    received_at: datetime | None = None,
) -> Ingested:
    """Take micro-batches until the queue is empty; ack after commit, dead-letter rejections with their reason.

    ``received_at`` is the simulated moment of delivery (the ingestor refuses events dated over a day after it)."""
    total, batches, failures, done = BatchResult(), 0, 0, 0
    started = time.perf_counter()
    while messages := queue.get(batch_size):
        deliveries = [
            Delivery(
                body=m.body,
                routing_key=m.routing_key,
                message_id=m.message_id,
                correlation_id=m.correlation_id,
                headers=m.headers,
                tag=m.tag,
                received_at=received_at or datetime.now(UTC),
            )
            for m in messages
        ]
        try:
            result = ingestor.process(deliveries)
        except LedgerUnavailable as exc:
            failures += 1
            if failures > RETRIES:
                raise DemoFailed(f"the ledger database stayed unavailable: {exc}") from exc
            queue.recover()  # nothing was acked: the whole batch comes back
            time.sleep(0.1 * 2**failures)
            continue
        failures = 0
        rejected = {r.delivery.tag: r for r in result.rejections}
        for delivery in deliveries:
            rejection = rejected.get(delivery.tag)
            if rejection is None:
                queue.ack(delivery.tag)
            else:
                queue.dead_letter(delivery.tag, rejection.kind, rejection.reason)
        total.merge(result)
        batches += 1
        done += len(deliveries)
        if progress is not None:
            progress.update(done)
    return Ingested(total, batches, time.perf_counter() - started)


def _surprises(sample: Sample, queue: MemoryQueue, result: BatchResult, answers: Answers) -> list[str]:
    """Every way the outcome can differ from what the generator planned, one line each.

    The plan is the sample less the messages its customers no longer sent (withheld: they paid a formal notice in
    full instead), plus the transfers answering those notices (indexed after the sample's messages)."""
    problems: list[str] = []
    published, rejected = queue.published, len(result.rejections)
    if published != result.applied + result.duplicates + rejected:
        problems.append(
            f"published {published} != applied {result.applied} + duplicates {result.duplicates} + rejected {rejected}"
        )
    if queue.ready or queue.unacked:
        problems.append(f"{queue.ready} messages still queued and {queue.unacked} unacknowledged")
    if queue.acked + len(queue.dead_letters) != published:
        problems.append(f"acked {queue.acked} + dead-lettered {len(queue.dead_letters)} != published {published}")
    expected: Counter[str] = Counter(m.expect for seq, m in enumerate(sample.messages) if answers.keeps(seq))
    expected["applied"] += len(answers.published)
    for outcome, actual in (("applied", result.applied), ("duplicate", result.duplicates)):
        if actual != expected[outcome]:
            problems.append(f"{actual} messages {outcome}, the sample planned {expected[outcome]}")
    seen: set[int] = set()
    for dead in queue.dead_letters:
        seq = int(dead.message.headers[SEQ_HEADER])
        seen.add(seq)
        if seq >= len(sample.messages):
            problems.append(f"answer {dead.message.message_id} rejected ({dead.kind}: {dead.reason}); planned: applied")
            continue
        planned = sample.messages[seq]
        if planned.expect != "rejected" or planned.kind != dead.kind:
            what = f"a {planned.kind} rejection" if planned.expect == "rejected" else planned.expect
            problems.append(f"message {planned.event_id or seq} rejected ({dead.kind}: {dead.reason}); planned: {what}")
    for seq, planned in enumerate(sample.messages):
        if planned.expect == "rejected" and seq not in seen:
            problems.append(f"message {planned.event_id or seq} ({planned.note}) was not rejected")
    return problems


def _write_dead_letters(path: Path, queue: MemoryQueue) -> None:
    with path.open("w", encoding="utf-8") as file:
        for dead in queue.dead_letters:
            record = {
                "kind": dead.kind,
                "reason": dead.reason,
                "message_id": dead.message.message_id,
                "routing_key": dead.message.routing_key,
                "body": dead.message.body.decode("utf-8", errors="replace"),
            }
            file.write(json.dumps(record, ensure_ascii=False) + "\n")


@contextlib.contextmanager
def _logs_to(path: Path) -> Iterator[None]:
    """Send the ingest's structured log lines to a file while the demo runs, so the terminal shows the summary."""
    previous = structlog.get_config()
    with path.open("w", encoding="utf-8") as file:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(ensure_ascii=False),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(20),
            logger_factory=structlog.PrintLoggerFactory(file=file),
            cache_logger_on_first_use=False,
        )
        try:
            yield
        finally:
            structlog.configure(**previous)
