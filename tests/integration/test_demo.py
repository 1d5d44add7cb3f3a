"""``relance demo`` end to end: SQLite and the in-process queue, no server needed."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path

import pytest

import services.demo.run as demo_run
from services.cli import main
from services.demo import AS_OF, generate, run_demo
from services.ingest.core import Delivery, Ingestor
from shared.ledger import migrate
from shared.ledger.db import make_engine
from shared.ledger.store import Ledger


@dataclass
class DemoRun:
    code: int
    output: str
    out: Path

    @property
    def url(self) -> str:
        return f"sqlite:///{self.out / demo_run.DATABASE_FILE}"


def _balances(ledger: Ledger) -> dict[tuple[str, str], dict[str, Decimal]]:
    return {(t, c): ledger.state(t, c).balances() for t, c in ledger.streams()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    out = tmp_path_factory.mktemp("demo")
    screen = io.StringIO()
    code = run_demo(customers=300, months=4, seed=7, out=out, database_url=None, stdout=screen)
    return DemoRun(code, screen.getvalue(), out)


def test_the_demo_succeeds_and_its_counts_add_up(demo: DemoRun) -> None:
    assert demo.code == 0, demo.output
    match = re.search(
        r"published = applied \+ duplicates \+ rejected: ([\d,]+) = ([\d,]+) \+ ([\d,]+) \+ ([\d,]+) \(ok\)",
        demo.output,
    )
    assert match, demo.output
    published, applied, duplicates, rejected = (int(g.replace(",", "")) for g in match.groups())
    assert published == applied + duplicates + rejected
    sample = generate(customers=300, months=4, seed=7)
    assert published == len(sample.messages)
    assert (applied, duplicates, rejected) == (
        sample.expected()["applied"],
        sample.expected()["duplicate"],
        sample.expected()["rejected"],
    )
    assert "Everything as expected" in demo.output
    assert "UNEXPECTED" not in demo.output


def test_the_summary_shows_what_a_credit_manager_needs(demo: DemoRun) -> None:
    for heading in (
        "Rejected messages by kind",
        "Receivables as of 2026-11-20",
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


def test_rejections_are_dead_lettered_with_their_reason(demo: DemoRun) -> None:
    dead = [json.loads(line) for line in (demo.out / demo_run.DEAD_LETTERS_FILE).read_text().splitlines()]
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
    lines = (demo.out / demo_run.EVENTS_FILE).read_bytes().splitlines()
    # When the lines go through the ingest in other batch sizes
    applied = 0
    for start in range(0, len(lines), 97):
        applied += ingestor.process([Delivery(body=line) for line in lines[start : start + 97]]).applied
    # Then every customer's balances are the demo's, currency by currency
    original = Ledger(make_engine(demo.url))
    assert applied == sum(1 for _ in original.iter_all())
    assert _balances(replay) == _balances(original)


def test_a_second_run_starts_from_a_fresh_database(demo: DemoRun, tmp_path: Path) -> None:
    # Given a demo that already ran in a folder
    out = tmp_path / "again"
    assert run_demo(customers=20, months=2, seed=5, out=out, database_url=None, stdout=io.StringIO()) == 0
    first = (out / demo_run.EVENTS_FILE).read_bytes()
    # When it runs again in the same folder
    screen = io.StringIO()
    assert run_demo(customers=20, months=2, seed=5, out=out, database_url=None, stdout=screen) == 0
    # Then it starts over (no duplicates of the first run) and writes the same sample
    assert (out / demo_run.EVENTS_FILE).read_bytes() == first
    assert "Everything as expected" in screen.getvalue()


def test_an_existing_ledger_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    assert run_demo(customers=10, months=1, seed=1, out=tmp_path / "a", database_url=url, stdout=io.StringIO()) == 0
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
    assert code == 0
    assert "Everything as expected" in capsys.readouterr().out
    assert (tmp_path / demo_run.EVENTS_FILE).exists()
    assert (tmp_path / demo_run.DATABASE_FILE).exists()
