"""What every stage's benchmark shares: servers of its own, the machine it ran on, and one way to report a figure.

Each benchmark measures relance next to a baseline in the same run (the machine is shared and noisy; the ratio is
what counts), then calls :func:`report` once per figure it is judged on. ``report`` prints a readable line and one
JSON line, the one ``make bench`` collects::

    {"stage": "notifier", "value": 312.4, "unit": "e-mails/s", "baseline": 1100.0, "ratio": 0.28,
     "target": ">= 300 e-mails/s and >= 0.25 of the baseline", "met": true}
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pika
import psycopg

LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_AMQP = "amqp://guest:guest@127.0.0.1:5672/%2F"

# The figures in the README were measured on classic queues, and the baselines declare classic queues beside
# relance's: relance declares the same, here and in the worker processes a benchmark starts. RELANCE_QUEUE_TYPE=quorum
# in the environment measures quorum queues instead (the baselines' declarations must then match).
os.environ.setdefault("RELANCE_QUEUE_TYPE", "classic")


def database_server() -> str:
    """The PostgreSQL server where a benchmark may create and drop databases."""
    return os.environ.get("RELANCE_BENCH_DATABASE_URL") or os.environ.get("RELANCE_TEST_DATABASE_URL") or LOCAL_PG


def broker_server() -> str:
    return os.environ.get("RELANCE_BENCH_AMQP_URL") or os.environ.get("RELANCE_TEST_AMQP_URL") or LOCAL_AMQP


def plain(url: str) -> str:
    """psycopg wants postgresql://; relance's settings take either form."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def sqlalchemy_url(url: str) -> str:
    return plain(url).replace("postgresql://", "postgresql+psycopg://", 1)


def with_database(url: str, name: str) -> str:
    base, _, _ = plain(url).rpartition("/")
    return f"{base}/{name}"


@contextlib.contextmanager
def temp_database(admin_url: str, label: str, *, migrate: bool = True) -> Iterator[str]:
    """A fresh database (relance's schema unless ``migrate=False``), synchronous_commit forced on; dropped after.

    Yields a ``postgresql://`` URL; :func:`sqlalchemy_url` gives the form relance's settings and engines take.
    """
    name = f"relance_bench_{uuid.uuid4().hex[:8]}_{label}"
    with psycopg.connect(plain(admin_url), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        admin.execute(f'ALTER DATABASE "{name}" SET synchronous_commit = on')
    url = with_database(admin_url, name)
    try:
        if migrate:
            from shared.ledger.migrate import upgrade

            upgrade(sqlalchemy_url(url))
        check_durable(url)
        yield url
    finally:
        with psycopg.connect(plain(admin_url), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def check_durable(url: str) -> None:
    """Refuse to measure with synchronous_commit or fsync off: every figure is taken with durability on."""
    with psycopg.connect(plain(url)) as conn:
        sync = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
        fsync = conn.execute("SHOW fsync").fetchone()[0]  # type: ignore[index]
    if sync != "on" or fsync != "on":
        raise SystemExit(f"synchronous_commit={sync!r}, fsync={fsync!r} on the benchmark database; refusing to measure")


def bench_names() -> str:
    """A prefix for the exchanges and queues of one run: ``relance.bench.<8 hex>``."""
    return f"relance.bench.{uuid.uuid4().hex[:8]}"


def on_broker(amqp_url: str, action: Callable[[Any], Any]) -> Any:
    """Run ``action(channel)`` on a connection of its own."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:
        return action(connection.channel())
    finally:
        connection.close()


def delete_broker_names(amqp_url: str, queues: list[str], exchanges: list[str]) -> None:
    def delete(channel: Any) -> None:
        for name in queues:
            channel.queue_delete(name)
        for name in exchanges:
            channel.exchange_delete(name)

    on_broker(amqp_url, delete)


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def machine_facts(admin_url: str | None = None, amqp_url: str | None = None) -> dict[str, str]:
    facts = {
        "cores": str(os.cpu_count()),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
    }
    if admin_url:
        with psycopg.connect(plain(admin_url)) as conn:
            facts["postgresql"] = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
            facts["synchronous_commit (server default)"] = str(conn.execute("SHOW synchronous_commit").fetchone()[0])  # type: ignore[index]
            facts["fsync"] = str(conn.execute("SHOW fsync").fetchone()[0])  # type: ignore[index]
    if amqp_url:
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        try:
            server = connection._impl.server_properties or {}
            rabbit = server.get("version", "?")
            facts["rabbitmq"] = rabbit.decode() if isinstance(rabbit, bytes) else str(rabbit)
        finally:
            connection.close()
    facts["load average (1, 5, 15 min)"] = load_average()
    return facts


def print_machine(facts: dict[str, str]) -> None:
    print("machine:")
    for key, value in facts.items():
        print(f"  {key:38} {value}")


@dataclass(frozen=True)
class Figure:
    """One figure a stage is judged on, with its baseline from the same run."""

    stage: str
    value: float
    unit: str
    baseline: float | None
    target: str
    met: bool
    detail: dict[str, Any] | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or not self.baseline:
            return None
        return self.value / self.baseline

    def as_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {
            "stage": self.stage,
            "value": round(self.value, 3),
            "unit": self.unit,
            "baseline": None if self.baseline is None else round(self.baseline, 3),
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": self.target,
            "met": self.met,
        }
        if self.detail:
            line["detail"] = self.detail
        return line


def report(figure: Figure) -> Figure:
    """Print the figure for a reader, then its JSON line (``make bench`` collects the lines starting with ``{``)."""
    ratio = "" if figure.ratio is None else f", ratio {figure.ratio:.2f}"
    baseline = "" if figure.baseline is None else f" (baseline {figure.baseline:,.1f}{ratio})"
    verdict = "met" if figure.met else "NOT met"
    print(f"{figure.stage}: {figure.value:,.1f} {figure.unit}{baseline}; target {figure.target}: {verdict}")
    print(json.dumps(figure.as_json(), sort_keys=False), flush=True)
    return figure


def sizing(parser: Any, *, customers: int, invoices: int) -> None:
    """The workload size every stage takes, so that ``make bench BENCH_ARGS="--customers 20000 --invoices 100000"``
    sizes them all. A stage adds its own options beside these; unknown ones are refused by argparse as usual."""
    parser.add_argument("--customers", type=int, default=customers, help=f"customers in the workload ({customers:,})")
    parser.add_argument("--invoices", type=int, default=invoices, help=f"invoices in the workload ({invoices:,})")


def stop_processes(processes: list[subprocess.Popen[Any]]) -> None:
    """SIGTERM every worker, then wait for each (a minute at most, then kill): they stop gracefully together."""
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
