"""Signed checkpoints against the careful attacker, who recomputes chains, heads and projections with relance's code.

Each test writes a checkpoint of a verified ledger, lets the attacker change history, and checks what verify says
against the checkpoint (and its exported copy, when the attacker also goes after the ``checkpoints`` table). The
last tests run the real ``relance`` command in subprocesses. PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import delete, select, update

from shared.ledger import checkpoints as cp
from shared.ledger.db import make_engine
from shared.ledger.schema import checkpoints, customer_state, events
from shared.ledger.store import Ledger
from shared.ledger.verify import CheckpointSources, VerifyReport, verify
from tests.factories import CUSTOMER, TENANT, incoming, invoice, payment
from tests.integration.ledger.tamper import (
    OTHER,
    THIRD,
    append,
    attacker,
    books,
    of_stream,
    rechain,
    recompute_projections,
    remove_stream,
    rows,
)

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.generate()
PUBLIC = KEY.public_key()
# The PostgreSQL server is shared with other test runs, whose transactions (a DROP DATABASE takes seconds) hold back
# the horizon of a checkpoint: wait for them rather than sign a checkpoint that leaves the newest events out.
SETTLE = 180.0
WAIT = ("--wait", str(SETTLE))


@pytest.fixture
def ledger(ledger_url: str) -> Iterator[Ledger]:
    """The tamper suite's three customers, verified, and checkpoint 1 written over them."""
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    books(ledger)
    cp.write(engine, KEY, settle_seconds=SETTLE)
    assert checked(ledger).ok
    yield ledger
    engine.dispose()


def checked(ledger: Ledger, *exported: cp.Checkpoint, key: Ed25519PublicKey | None = PUBLIC) -> VerifyReport:
    return verify(ledger.engine, sources=CheckpointSources(exported=exported, public_key=key))


def problems_of(ledger: Ledger, *exported: cp.Checkpoint) -> list[str]:
    report = checked(ledger, *exported)
    assert not report.ok, "verify found nothing"
    return report.problems


def first(ledger: Ledger) -> cp.Checkpoint:
    with ledger.engine.connect() as conn:
        return cp.stored(conn)[0]


# ---------------------------------------------------------------------------------------------------- honest work
def test_a_checkpoint_covers_every_stream_and_the_log_matches_it(ledger: Ledger) -> None:
    checkpoint = first(ledger)
    assert (checkpoint.number, checkpoint.streams, checkpoint.events) == (1, 3, 11)
    assert checkpoint.signature_valid(PUBLIC) and checkpoint.previous is None
    assert [leaf[:3] for leaf in checkpoint.leaves] == [(TENANT, CUSTOMER, 7), (TENANT, OTHER, 3), (TENANT, THIRD, 1)]
    report = checked(ledger)
    assert report.checkpoints == 1 and not report.warnings
    assert report.since == [f"since {checkpoint.label}: 0 event(s) appended to 0 stream(s), 0 of them new"]


def test_appends_after_the_newest_checkpoint_are_listed_stream_by_stream(ledger: Ledger) -> None:
    ledger.record([incoming(invoice("INV-3", "30.00"))])
    ledger.record([incoming(invoice("INV-N", "5.00"), customer_id="C-NEW")])
    report = checked(ledger)
    assert report.ok, report.problems
    assert report.since[0].endswith("2 event(s) appended to 2 stream(s), 1 of them new:")
    assert report.since[1:] == [f"  {TENANT}/{CUSTOMER}: v7 -> v8", f"  {TENANT}/C-NEW: new, v1..v1"]


def test_each_checkpoint_links_to_the_previous_one_and_the_log_is_checked_against_all(ledger: Ledger) -> None:
    ledger.record([incoming(invoice("INV-3", "30.00"))])
    second = cp.write(ledger.engine, KEY, settle_seconds=SETTLE)
    assert second.previous == first(ledger).digest and (second.number, second.events) == (2, 12)
    report = checked(ledger)
    assert report.ok and report.checkpoints == 2


# ---------------------------------------------------------------------------------------------- the careful attacker
def test_a_tail_rewritten_in_place_with_a_recomputed_chain_is_caught(ledger: Ledger) -> None:
    # When the attacker halves the payment of v4 and recomputes every hash after it, and every projection
    with attacker(ledger.engine) as conn:
        data = rows(conn, TENANT, CUSTOMER)[3]["data"]
        rechain(conn, TENANT, CUSTOMER, {4: {"data": {**data, "amount": "50.00"}}})
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
    # Then the chain and the projections agree with the forged log (see test_verify.py), the checkpoint does not
    problems = problems_of(ledger)
    assert any(p.startswith(f"{TENANT}/{CUSTOMER} v7: history rewritten since checkpoint 1") for p in problems)
    assert any("global order of the events it covers changed" in p for p in problems), problems
    assert all(CUSTOMER in p or "global order" in p for p in problems), problems


def test_a_tail_replaced_by_new_events_with_a_recomputed_chain_is_caught(ledger: Ledger) -> None:
    # When the attacker deletes v5..v7 and appends other events in their place, chain and head recomputed
    with attacker(ledger.engine) as conn:
        conn.execute(delete(events).where(of_stream(events, TENANT, CUSTOMER) & (events.c.version >= 5)))
        append(conn, TENANT, CUSTOMER, "payment.received", payment("P-F", "200.00").data)
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
    problems = problems_of(ledger)
    expected = f"{TENANT}/{CUSTOMER}: checkpoint 1 ("
    [named] = [p for p in problems if p.startswith(expected)]
    # (PostgreSQL gives the new event a new position; SQLite reuses the freed one, which the checkpoint covered)
    assert "recorded it at version 7; the log now has version " in named and named.endswith("(events removed)")


def test_a_forged_append_with_a_backdated_time_is_caught(ledger: Ledger) -> None:
    checkpoint = first(ledger)
    with attacker(ledger.engine) as conn:
        backdated = checkpoint.created_at - timedelta(hours=2)
        append(conn, TENANT, CUSTOMER, "payment.received", payment("P-F", "200.00").data, recorded_at=backdated)
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
    [problem] = problems_of(ledger)
    assert problem.startswith(f"events {TENANT}/{CUSTOMER} v8: recorded at ")
    assert checkpoint.newest_recorded_at is not None
    newest = checkpoint.newest_recorded_at.isoformat(timespec="seconds")
    assert problem.endswith(
        f"before events that {checkpoint.label} covers (up to {newest}), yet not covered by it: inserted afterwards "
        "with a backdated time"
    )


def test_a_forged_append_placed_inside_the_checkpointed_range_is_caught(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        early = rows(conn, TENANT, CUSTOMER)[0]
        placement = {"position": 0, "tx_id": early["tx_id"]}  # before the checkpoint in replay order
        append(conn, TENANT, CUSTOMER, "payment.received", payment("P-F", "200.00").data, **placement)
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
    problems = problems_of(ledger)
    assert any(
        p.startswith(f"{TENANT}/{CUSTOMER}: ") and p.endswith("(events inserted into checkpointed history)")
        for p in problems
    ), problems


def test_a_forged_append_at_the_time_it_is_made_is_only_listed_as_appended_since_the_checkpoint(
    ledger: Ledger,
) -> None:
    """The limit of every checkpoint scheme, as the README states: after the newest checkpoint, the database is all
    there is. verify lists the appended events for an auditor to match against the ERP."""
    with attacker(ledger.engine) as conn:
        append(conn, TENANT, CUSTOMER, "payment.received", payment("P-F", "200.00").data)
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
    report = checked(ledger)
    assert report.ok and report.since[1:] == [f"  {TENANT}/{CUSTOMER}: v7 -> v8"]


def test_a_stream_removed_with_all_its_projections_is_caught(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        remove_stream(conn, TENANT, OTHER)
    problems = problems_of(ledger)
    assert any(p.startswith(f"{TENANT}/{OTHER}: checkpoint 1 (") and "the log now has none" in p for p in problems)


def test_a_ghost_stream_slipped_into_the_checkpointed_range_is_caught(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        early = rows(conn, TENANT, CUSTOMER)[0]
        placement = {"position": 0, "tx_id": early["tx_id"]}
        append(conn, TENANT, "C-GHOST", "invoice.issued", invoice("INV-G", "9.00").data, **placement)
        recompute_projections(ledger, conn, TENANT, "C-GHOST")
    problems = problems_of(ledger)
    assert any(p.startswith(f"{TENANT}/C-GHOST: 1 event(s) inside the range of checkpoint 1") for p in problems)


def test_events_of_two_streams_swapped_in_the_global_order_are_caught(ledger: Ledger) -> None:
    # When C-0044's credit note and C-0043's credit block swap positions and transaction ids (each stream's own
    # order is unchanged, so no chain or position check of a stream can see it)
    with attacker(ledger.engine) as conn:
        [credit_note] = rows(conn, TENANT, THIRD)
        block = rows(conn, TENANT, OTHER)[2]
        conn.execute(update(events).where(events.c.position == credit_note["position"]).values(position=-1))
        conn.execute(
            update(events)
            .where(events.c.position == block["position"])
            .values(position=credit_note["position"], tx_id=credit_note["tx_id"])
        )
        conn.execute(
            update(events).where(events.c.position == -1).values(position=block["position"], tx_id=block["tx_id"])
        )
    [problem] = problems_of(ledger)
    assert problem.startswith("checkpoint 1 (") and "the global order of the events it covers changed" in problem


def test_no_checkpoint_is_signed_over_changed_history(ledger: Ledger) -> None:
    with attacker(ledger.engine) as conn:
        data = rows(conn, TENANT, CUSTOMER)[3]["data"]
        rechain(conn, TENANT, CUSTOMER, {4: {"data": {**data, "amount": "50.00"}}})
    with pytest.raises(cp.CheckpointRefused) as refused:
        cp.write(ledger.engine, KEY, settle_seconds=SETTLE)
    assert any("history rewritten since checkpoint 1" in p for p in refused.value.problems)
    with ledger.engine.connect() as conn:
        assert len(cp.stored(conn)) == 1


# -------------------------------------------------------------------------------------------------- the checkpoints
def test_a_checkpoint_deleted_from_the_database_is_named_by_its_exported_copy(ledger: Ledger, tmp_path: Path) -> None:
    # Given two checkpoints, both exported
    ledger.record([incoming(invoice("INV-3", "30.00"))])
    for checkpoint in (first(ledger), cp.write(ledger.engine, KEY, settle_seconds=SETTLE)):
        cp.export(checkpoint, tmp_path)
    # When the attacker deletes the newest from the database
    with attacker(ledger.engine) as conn:
        conn.execute(delete(checkpoints).where(checkpoints.c.number == 2))
    # Then the database alone cannot tell, the exported copies can
    assert checked(ledger).ok
    problems = problems_of(ledger, *cp.read_files(tmp_path))
    assert problems == [f"checkpoint 2 ({tmp_path / 'checkpoint-000002.json'}) is missing from the database"]


def test_a_checkpoint_rewritten_to_match_a_forged_history_fails_its_signature(ledger: Ledger) -> None:
    # When the attacker rewrites history and the checkpoint's leaves and root to match it
    with attacker(ledger.engine) as conn:
        data = rows(conn, TENANT, CUSTOMER)[3]["data"]
        rechain(conn, TENANT, CUSTOMER, {4: {"data": {**data, "amount": "50.00"}}})
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
        [(number, document)] = conn.execute(select(checkpoints.c.number, checkpoints.c.document)).all()
        head = rows(conn, TENANT, CUSTOMER)[-1]["hash"]
        document["leaves"][0][3] = head
        document["merkle_root"] = cp.merkle_root(tuple(tuple(leaf) for leaf in document["leaves"]))  # type: ignore[misc]
        conn.execute(update(checkpoints).where(checkpoints.c.number == number).values(document=document))
    problems = problems_of(ledger)
    assert any(
        p.startswith("checkpoint 1 (checkpoint 1 in the database): the signature does not match") for p in problems
    )


def test_checkpoints_signed_with_another_key_are_refused(ledger: Ledger) -> None:
    intruder = Ed25519PrivateKey.generate().public_key()
    problems = verify(ledger.engine, sources=CheckpointSources(public_key=intruder)).problems
    assert problems == [f"checkpoint 1 (checkpoint 1 in the database) was signed with another key "
                        f"({cp.key_id(PUBLIC)}, expected {cp.key_id(intruder)})"]  # fmt: skip


def test_without_a_public_key_verify_says_the_signatures_were_not_checked(ledger: Ledger) -> None:
    report = checked(ledger, key=None)
    assert report.ok and report.warnings[0].startswith("1 checkpoint signature(s) NOT checked: no public key")


# ---------------------------------------------------------------------------------------------------- the commands
def relance(*argv: str, url: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "RELANCE_DATABASE_URL": url, "RELANCE_LOG_LEVEL": "warning", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *argv], env=environment, capture_output=True, text=True, timeout=120
    )


def test_the_commands_make_keys_sign_export_list_and_verify(ledger_url: str, tmp_path: Path) -> None:
    engine = make_engine(ledger_url)
    books(Ledger(engine))
    keys, exported = tmp_path / "keys", tmp_path / "exported"
    exported.mkdir()
    # Given a key pair made by relance
    made = relance("checkpoint", "keygen", "--out", str(keys), url=ledger_url)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((keys / "checkpoint.key").stat().st_mode) == 0o600
    env = {"RELANCE_CHECKPOINT_KEY_FILE": str(keys / "checkpoint.key"), "RELANCE_CHECKPOINT_DIR": str(exported)}
    # When a checkpoint is written, then listed
    written = relance("checkpoint", "write", *WAIT, url=ledger_url, env=env)
    assert written.returncode == 0, written.stderr
    assert written.stdout.startswith("checkpoint 1: 3 stream(s), 11 event(s), Merkle root ")
    assert (exported / "checkpoint-000001.json").is_file()
    listed = relance("checkpoint", "list", url=ledger_url)
    assert listed.returncode == 0 and "3 stream(s)" in listed.stdout and "11 event(s)" in listed.stdout
    # Then verify checks the log against it with the public key only
    public = ["--public-key", str(keys / "checkpoint.pub")]
    ok = relance("verify", "--checkpoints", str(exported), *public, url=ledger_url)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[-2:] == ["1 checkpoint(s) checked (signatures checked)",
                                           "3 stream(s), 11 event(s) checked: intact"]  # fmt: skip
    # And when the attacker rewrites the tail, recomputes everything and deletes the checkpoint from the database
    ledger = Ledger(engine)
    with attacker(engine) as conn:
        data = rows(conn, TENANT, CUSTOMER)[3]["data"]
        rechain(conn, TENANT, CUSTOMER, {4: {"data": {**data, "amount": "50.00"}}})
        recompute_projections(ledger, conn, TENANT, CUSTOMER)
        conn.execute(delete(checkpoints))
    caught = relance("verify", *public, url=ledger_url, env={"RELANCE_CHECKPOINT_DIR": str(exported)})
    assert caught.returncode == 1, caught.stdout + caught.stderr
    lines = caught.stdout.splitlines()
    assert f"PROBLEM  checkpoint 1 ({exported / 'checkpoint-000001.json'}) is missing from the database" in lines
    assert any(
        line.startswith(f"PROBLEM  {TENANT}/{CUSTOMER} v7: history rewritten since checkpoint 1") for line in lines
    )
    assert lines[-1].startswith("3 stream(s), 11 event(s) checked: ") and "problem(s) found" in lines[-1]
    engine.dispose()


def test_the_verify_command_names_projection_differences_and_exits_1(ledger_url: str) -> None:
    engine = make_engine(ledger_url)
    books(Ledger(engine))
    with attacker(engine) as conn:
        stream = of_stream(customer_state, TENANT, CUSTOMER)
        state = conn.execute(select(customer_state.c.state).where(stream)).scalar_one()
        state["invoices"]["INV-2"]["status"] = "paid"
        conn.execute(update(customer_state).where(stream).values(state=state))
    engine.dispose()
    result = relance("verify", url=ledger_url)
    assert result.returncode == 1
    assert f"PROBLEM  customer_state {TENANT}/{CUSTOMER} snapshot at v" in result.stdout
    assert "state.invoices.INV-2.status stored 'paid', rebuilt from the log 'open'" in result.stdout


def test_the_write_command_needs_a_key_and_refuses_to_sign_over_changed_history(
    ledger_url: str, tmp_path: Path
) -> None:
    engine = make_engine(ledger_url)
    books(Ledger(engine))
    missing = relance("checkpoint", "write", url=ledger_url)
    assert missing.returncode == 78 and "RELANCE_CHECKPOINT_KEY_FILE" in missing.stderr
    key_file = tmp_path / "k" / "checkpoint.key"
    cp.generate_keys(key_file.parent)
    assert relance("checkpoint", "write", *WAIT, "--key-file", str(key_file), url=ledger_url).returncode == 0
    with attacker(engine) as conn:
        conn.execute(delete(events).where(of_stream(events, TENANT, THIRD)))
    engine.dispose()
    refused = relance("checkpoint", "write", *WAIT, "--key-file", str(key_file), "--out", "-", url=ledger_url)
    assert refused.returncode == 1 and refused.stdout == ""
    assert "the log no longer matches checkpoint 1" in refused.stderr and f"{TENANT}/{THIRD}" in refused.stderr
    to_stdout = orjson.loads(relance("checkpoint", "list", "--json", url=ledger_url).stdout)
    assert [row["number"] for row in to_stdout] == [1]


# ---------------------------------------------------------------------------------------------------- migrations
def test_a_schema_holding_checkpoints_is_not_migrated_below_them(ledger: Ledger, ledger_url: str) -> None:
    from alembic import command

    from shared.ledger.migrate import alembic_config, current

    # Given a database where checkpoint 1 was written
    ledger.engine.dispose()
    # When someone tries to take the schema back below the checkpoints revision
    with pytest.raises(RuntimeError, match="checkpoints are evidence: relance does not drop the 1 written"):
        command.downgrade(alembic_config(ledger_url), "0005")
    # Then the table and its checkpoint are still there
    assert (current(ledger_url) or "") >= "0006"  # (SQLite migrates without a transaction: those above went down)
    with ledger.engine.connect() as conn:
        assert [c.number for c in cp.stored(conn)] == [1]
