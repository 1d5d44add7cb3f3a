"""Notifier throughput: reminders sent to a loopback SMTP sink, next to raw aiosmtplib in the same run.

    python -m tests.benchmarks.bench_notifier [--customers 1000 --invoices 2000] [--reminders 1000] [--workers 1,2]

Every durability setting is on: PostgreSQL with ``synchronous_commit = on`` (checked), durable queues and persistent
messages. The sink is aiosmtpd on loopback in a process of its own, with STARTTLS required and AUTH (as
tests/smtp_server.py runs it); it stamps each message it accepts.

- **workload**: ``--customers`` customers in a fresh ledger, ``--invoices`` invoices among them, all overdue; the
  escalation engine decides for the first ``--reminders`` customers, which puts one ``notifier.send_reminder`` per
  customer in the outbox. That ledger is the template of every run's database, so each run starts from the same
  state. Before timing starts, ``relance worker relay``'s own code (:class:`services.relay.worker.Relay`) publishes
  the outbox to the run's commands exchange, where the notifier's queue is bound: the commands are exactly the
  relay's, with its message properties.
- **baseline**: raw aiosmtplib sends the same messages (the exact bytes relance stored as evidence in its run, to the
  same envelope) to the same sink over the same STARTTLS + AUTH, with the same concurrency relance is allowed: as many
  connections as ``RELANCE_NOTIFIER_SMTP_CONNECTIONS``, each reused message after message. No ledger, no rendering.
- **relance(n)**: n ``relance worker notifier`` processes (real subprocesses) drain the queue.

The figure is e-mails accepted by the sink per second, from the first accepted to the last, for both. The 2-worker
run (``--workers 1,2``) is quoted, the one-worker run is judged. The machine is shared, so the CPU time the relance
processes spent per e-mail (start-up included) is printed too: it moves much less with the neighbours' load than
the rate does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import resource
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import psycopg

from tests.benchmarks import common

TARGET = 300.0
MIN_RATIO = 0.25
USER, PASSWORD = "relance", "s3cret"
DUE = date(2026, 10, 30)
REMIND = datetime(2026, 11, 2, 9, tzinfo=UTC)  # a Monday: the first reminder of an invoice due on the Friday before
TENANT = "acme-fr"


# ---------------------------------------------------------------------------------------------------- the sink
class Stamps:
    """The sink's stamps (wall-clock time of each accepted message), read from its stdout on a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.times: list[float] = []
        self.sessions: set[str] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            kind, stamp, session = line.split()
            if kind == "msg":
                self.times.append(float(stamp))
                self.sessions.add(session)

    @property
    def connections(self) -> int:
        return len(self.sessions)

    def wait_for(self, count: int, timeout: float, alive: Any = None) -> None:
        deadline = time.monotonic() + timeout
        while len(self.times) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"the sink got {len(self.times)} of {count} messages in {timeout:.0f} s")
            if alive is not None:
                alive()
            time.sleep(0.05)

    def rate(self, since: int) -> float:
        stamps = self.times[since:]
        if len(stamps) < 2:
            return 0.0
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def serve_sink(port: int, cert: str, key: str) -> None:
    """The sink process: aiosmtpd with STARTTLS required and AUTH; prints ``msg <time>`` per accepted message."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP as Server
    from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

    class Handler:
        async def handle_DATA(self, server: Server, session: Session, envelope: Envelope) -> str:
            print(f"msg {time.time()} {id(session)}", flush=True)  # one session per connection
            return "250 2.0.0 Ok: queued"

    def authenticate(server: Server, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.login == USER.encode() and data.password == PASSWORD.encode()
        return AuthResult(success=ok)

    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd warns of its own login_data once per session
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticate,
        auth_required=True,
    )
    controller.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    controller.stop()


@contextlib.contextmanager
def sink(folder: Path) -> Iterator[tuple[int, Path, Stamps]]:
    """A sink process on a free port with a fresh self-signed certificate; yields its port, certificate and stamps."""
    from tests.smtp_server import free_port

    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    command = [sys.executable, "-m", "tests.benchmarks.bench_notifier", "--sink", str(port), str(cert), str(key)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError):
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the SMTP sink did not start")
            time.sleep(0.05)
        yield port, cert, Stamps(process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------------- workload
def build_workload(url: str, customers: int, invoices: int, reminders: int) -> int:
    """Customers and their overdue invoices, and the engine's decisions for the first ``reminders`` of them."""
    from services.escalation.policy import PolicyLibrary
    from services.escalation.service import evaluate
    from services.escalation.worker import real_rules
    from shared.config import load_settings
    from shared.ledger.db import make_engine
    from shared.ledger.store import Ledger
    from tests.factories import customer, incoming, invoice

    engine = make_engine(common.sqlalchemy_url(url), pool_size=2)
    ledger = Ledger(engine)
    items = []
    for n in range(customers):
        customer_id = f"C-{n:06d}"
        language = "fr" if n % 3 else "en"
        emails = [f"ap{n}@client{n}.example"] + ([f"boss{n}@client{n}.example"] if n % 4 == 0 else [])
        events = [customer(f"Client {n} SAS", emails=emails, language=language)]
        for k in range(n, invoices, customers):
            events.append(invoice(f"INV-{k:07d}", f"{100 + k % 900}.{k % 100:02d}", due_date=DUE))
        items += [incoming(ev.at(datetime(2026, 10, 1, 8, tzinfo=UTC)), customer_id=customer_id) for ev in events]
    for start in range(0, len(items), 1000):
        ledger.record(items[start : start + 1000])
    with tempfile.TemporaryDirectory() as folder:
        rates = Path(folder) / "rates.csv"
        rates.write_text("2026-07-01,2.15\n", encoding="utf-8")  # the shipped table stops at January 2026
        rules = real_rules(load_settings(database_url=common.sqlalchemy_url(url), rates_file=rates))
    books = PolicyLibrary.load(None).for_tenant(TENANT)
    for n in range(min(reminders, customers)):
        evaluate(ledger, books, TENANT, f"C-{n:06d}", REMIND, rules=rules)
    with engine.connect() as conn:
        from sqlalchemy import func, select

        from shared.ledger.schema import outbox

        query = select(func.count()).select_from(outbox).where(outbox.c.kind == "notifier.send_reminder")
        count = int(conn.execute(query).scalar_one())
    engine.dispose()
    return count


@contextlib.contextmanager
def copy_of(admin_url: str, template_url: str, label: str) -> Iterator[str]:
    """A database made from the workload's (``CREATE DATABASE … TEMPLATE``), dropped after."""
    template = common.plain(template_url).rpartition("/")[2]
    name = f"relance_bench_{uuid.uuid4().hex[:8]}_{label}"
    with psycopg.connect(common.plain(admin_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    try:
        url = common.with_database(admin_url, name)
        common.check_durable(url)
        yield url
    finally:
        with psycopg.connect(common.plain(admin_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---------------------------------------------------------------------------------------------------- runs
@dataclass
class Run:
    name: str
    rate: float
    messages: int
    connections: int
    cpu_ms: float | None = None  # CPU time (user + system) of the relance processes per e-mail


def overrides(url: str, amqp_url: str, names: str, port: int, cert: Path) -> dict[str, Any]:
    return {
        "database_url": common.sqlalchemy_url(url),
        "amqp_url": amqp_url,
        "commands_exchange": f"{names}.commands",
        "notifier_queue": f"{names}.notifier",
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_tls": "starttls",
        "smtp_username": USER,
        "smtp_password": PASSWORD,
        "smtp_ca_file": str(cert),
        "allow_placeholder_sender": "true",
        "log_format": "json",
    }


def run_relance(
    url: str,
    amqp_url: str,
    port: int,
    cert: Path,
    stamps: Stamps,
    workers: int,
    expected: int,
    logs: Path,
    profile: Path | None = None,
) -> Run:
    from services.notifier.worker import dead_queue, declare_notifier_topology, retry_queue
    from shared.config import load_settings
    from shared.ledger.db import make_engine
    from tests.servers import publish_outbox

    names = common.bench_names()
    values = overrides(url, amqp_url, names, port, cert)
    settings = load_settings(**values)
    queues = [settings.notifier_queue, retry_queue(settings), dead_queue(settings)]
    try:
        common.on_broker(amqp_url, lambda channel: declare_notifier_topology(channel, settings))
        engine = make_engine(settings.require_database_url(), pool_size=1)
        try:
            published = publish_outbox(settings, engine)  # the relay's own code, before timing starts
        finally:
            engine.dispose()
        if published != expected:
            raise SystemExit(f"the relay published {published} commands, {expected} expected")
        env = {**os.environ, **{f"RELANCE_{key.upper()}": str(value) for key, value in values.items()}}
        command = [str(Path(sys.executable).with_name("relance")), "worker", "notifier"]
        if profile is not None:
            command = [sys.executable, "-m", "cProfile", "-o", str(profile), *command]
        since, connections = len(stamps.times), stamps.connections
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers' CPU is counted once they are waited
        processes: list[subprocess.Popen[bytes]] = []
        paths = [logs / f"notifier-{workers}-{index}.log" for index in range(workers)]
        for path in paths:
            with path.open("wb") as out:
                processes.append(subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT))

        def alive() -> None:
            for path, process in zip(paths, processes, strict=True):
                if process.poll() is not None:
                    tail = path.read_text(errors="replace")[-3000:]
                    raise SystemExit(f"relance worker notifier exited with {process.returncode}:\n{tail}")

        try:
            stamps.wait_for(since + expected, timeout=600, alive=alive)
        finally:
            common.stop_processes(processes)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
        codes = [process.returncode for process in processes]
        if any(codes):
            raise SystemExit(f"relance workers exited with {codes} after SIGTERM; logs in {logs}")
        time.sleep(0.5)  # a duplicate would show up in the sink now
        sent = len(stamps.times) - since
        if sent != expected:
            raise SystemExit(f"the sink got {sent} messages for {expected} commands")
        with psycopg.connect(common.plain(url)) as conn:
            row = conn.execute("SELECT count(*) FROM events WHERE event_type = 'reminder.sent'").fetchone()
        if row is None or int(row[0]) != expected:
            raise SystemExit(f"{row} reminder.sent recorded for {expected} commands")
        label = f"relance ({workers} worker{'s' if workers > 1 else ''})"
        return Run(label, stamps.rate(since), sent, stamps.connections - connections, 1000 * cpu / sent)
    finally:
        common.delete_broker_names(amqp_url, queues, [settings.commands_exchange])


def run_baseline(url: str, port: int, cert: Path, stamps: Stamps, connections: int) -> Run:
    """Raw aiosmtplib: the messages relance stored, to their envelope, over ``connections`` reused connections."""
    import email
    from email import policy

    with psycopg.connect(common.plain(url)) as conn:
        rows = conn.execute("SELECT mime FROM sent_messages ORDER BY command_id").fetchall()
    messages = []
    for (raw,) in rows:
        parsed = email.message_from_bytes(bytes(raw), policy=policy.default)
        recipients = [address.strip() for address in str(parsed["To"]).split(",")]
        messages.append((str(parsed["From"]), recipients, bytes(raw)))
    since, opened = len(stamps.times), stamps.connections

    async def send_all() -> None:
        queue: asyncio.Queue[tuple[str, list[str], bytes]] = asyncio.Queue()
        for message in messages:
            queue.put_nowait(message)

        async def one_connection() -> None:
            context = ssl.create_default_context(cafile=str(cert))
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=port, username=USER, password=PASSWORD, start_tls=True, tls_context=context
            )
            await client.connect()
            while not queue.empty():
                sender, recipients, data = queue.get_nowait()
                await client.sendmail(sender, recipients, data)
            await client.quit()

        await asyncio.gather(*(one_connection() for _ in range(connections)))

    asyncio.run(send_all())
    stamps.wait_for(since + len(messages), timeout=60)
    return Run("raw aiosmtplib", stamps.rate(since), len(messages), stamps.connections - opened)


def show(run: Run) -> None:
    cpu = "" if run.cpu_ms is None else f", {run.cpu_ms:.1f} ms of CPU each, start-up included"
    over = f"{run.messages} messages over {run.connections} connections"
    print(f"  {run.name:28} {run.rate:9,.1f} e-mails/s   ({over}{cpu})")


# ---------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    common.sizing(parser, customers=1000, invoices=2000)
    parser.add_argument("--reminders", type=int, default=1000, help="customers reminded (1,000; at most --customers)")
    parser.add_argument("--workers", default="1", help="notifier processes of each relance run, e.g. 1,2 (1)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the one-worker relance run here")
    parser.add_argument("--logs", type=Path, help="keep the workers' logs in this folder (default: thrown away)")
    parser.add_argument("--sink", nargs=3, metavar=("PORT", "CERT", "KEY"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        serve_sink(int(args.sink[0]), args.sink[1], args.sink[2])
        return 0
    from shared.config import load_settings
    from shared.logging import configure_logging

    configure_logging("warning")  # the engine's and the relay's lines while the workload is built: not the figures
    admin, amqp_url = common.database_server(), common.broker_server()
    common.print_machine(common.machine_facts(admin, amqp_url))
    connections = load_settings().notifier_smtp_connections
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    with tempfile.TemporaryDirectory() as folder, common.temp_database(admin, "notifier_src") as template:
        started = time.monotonic()
        expected = build_workload(template, args.customers, args.invoices, args.reminders)
        print(f"workload: {args.customers:,} customers, {args.invoices:,} invoices, {expected:,} reminders to send")
        print(f"  built in {time.monotonic() - started:.1f} s; SMTP connections per process: {connections}")
        runs: dict[int, Run] = {}
        baselines: list[Run] = []
        with sink(Path(folder)) as (port, cert, stamps):
            for workers in counts:
                with copy_of(admin, template, f"notifier_{workers}") as url:
                    profile = args.profile if workers == 1 else None
                    logs = args.logs or Path(folder)
                    logs.mkdir(parents=True, exist_ok=True)
                    runs[workers] = run_relance(url, amqp_url, port, cert, stamps, workers, expected, logs, profile)
                    show(runs[workers])
                    baselines.append(run_baseline(url, port, cert, stamps, connections))
                    show(baselines[-1])
    baseline = max(baselines, key=lambda run: run.rate)
    judged = runs.get(1) or next(iter(runs.values()))
    met = judged.rate >= TARGET and judged.rate >= MIN_RATIO * baseline.rate
    detail = {name: round(run.rate, 1) for name, run in ((run.name, run) for run in runs.values())}
    detail["smtp_connections"] = connections
    detail["cpu_ms_per_email (1 worker)"] = round(judged.cpu_ms or 0.0, 2)
    common.report(
        common.Figure(
            stage="notifier",
            value=judged.rate,
            unit="e-mails/s",
            baseline=baseline.rate,
            target=f">= {TARGET:.0f} e-mails/s and >= {MIN_RATIO} of raw aiosmtplib",
            met=met,
            detail=detail,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
