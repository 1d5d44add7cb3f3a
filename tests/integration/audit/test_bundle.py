"""``relance audit export`` and ``relance audit verify``: a bundle written from a real ledger (e-mails sent through the
notifier's code, a letter, a signed checkpoint), checked offline in a process with no settings, then tampered with
one byte at a time. PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import insert

from services.audit.offline import Verdict, verify_bundle
from services.cli import main
from services.notifier.delivery import MailSettings, deliver
from services.notifier.render import RenderedReminder
from services.notifier.smtp import MemoryTransport
from shared.ledger import checkpoints as cp
from shared.ledger.db import make_engine
from shared.ledger.schema import letters
from shared.ledger.store import Incoming, Ledger
from tests.factories import CUSTOMER, TENANT, customer, incoming, invoice, payment

pytestmark = pytest.mark.integration

KEY = Ed25519PrivateKey.generate()
OTHER_KEY = Ed25519PrivateKey.generate()
SETTLE = 180.0  # as tests/integration/ledger/test_checkpoints.py: other runs' transactions hold the horizon back
MAIL = MailSettings(sender="billing@example.com", domain="mail.example.com", backoff_seconds=0.0)
RENDERED = RenderedReminder(
    "Rappel : facture INV-2 impayée", "Montant dû : 200,00 €\n", "<p>Montant dû : 200,00&nbsp;€</p>", "reminder_1",
    "3f9a0c1d", "fr",
)  # fmt: skip
PDF = b"%PDF-1.7\n% a formal notice\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
AT = "2026-12-01T09:00:00Z"


@dataclass
class Books:
    ledger: Ledger
    url: str
    public_key: Path
    middle: datetime  # between the first e-mail and the second one
    first_message: str
    second_message: str


@pytest.fixture
def books(ledger_url: str, tmp_path: Path) -> Iterator[Books]:
    """C-0042 with two invoices, a payment, two reminders sent by e-mail and a formal notice as a letter; C-0043
    with one invoice; checkpoint 1 signed over all of it."""
    engine = make_engine(ledger_url)
    ledger = Ledger(engine)
    history = [customer("Boulangeries Martin SAS"), invoice("INV-1", "100.00"), invoice("INV-2", "200.00")]
    ledger.record([incoming(ev) for ev in history])
    ledger.record([incoming(invoice("INV-9", "50.00"), customer_id="C-0043")])
    first = send(ledger, 1)
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    ledger.record([incoming(payment("P1", "100.00", allocations={"INV-1": "100.00"}))])
    second = send(ledger, 2)
    letter(ledger)
    cp.write(engine, KEY, settle_seconds=SETTLE)
    public = tmp_path / "checkpoint.pub"
    public.write_bytes(
        KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    yield Books(ledger, ledger_url, public, middle, first, second)
    engine.dispose()


def send(ledger: Ledger, n: int) -> str:
    """A reminder requested, then sent through the notifier's own delivery code (its bytes kept as evidence)."""
    totals = {"outstanding": "200.00", "interest": "0", "fees": "0"}
    data = {"reminder_id": f"R-{n}", "level": "reminder_1", "currency": "EUR", "invoice_ids": ["INV-2"],
            "as_of": "2026-11-23T08:00:00Z", "totals": totals}  # fmt: skip
    command_id = f"esc-cmd-{n}"
    ledger.record([Incoming(TENANT, CUSTOMER, command_id, "reminder.requested", data, datetime.now(UTC))])
    command: dict[str, Any] = {"command_id": command_id, "command": "notifier.send_reminder", "tenant": TENANT,
                               "customer_id": CUSTOMER, "sequence": n, **data}  # fmt: skip
    result = asyncio.run(deliver(ledger, command, RENDERED, ("compta@martin.fr",), MemoryTransport(), MAIL))
    assert result.status == "sent"
    return f"{command_id}@mail.example.com"


def letter(ledger: Ledger) -> None:
    """A formal notice's PDF in ``letters`` and its ``letter.rendered`` event, as the letter code records them."""
    digest = hashlib.sha256(PDF).hexdigest()
    with ledger.engine.begin() as conn:
        conn.execute(
            insert(letters).values(
                tenant=TENANT, letter_id="L-1", customer_id=CUSTOMER, command_id="esc-cmd-3", kind="reminder",
                sha256=digest, pdf=PDF, pages=1, created_at=datetime.now(UTC),
            )
        )  # fmt: skip
    data = {"letter_id": "L-1", "command_id": "esc-cmd-3", "kind": "reminder", "sha256": digest, "pages": 1,
            "level": "formal_notice"}  # fmt: skip
    ledger.record([Incoming(TENANT, CUSTOMER, "letter-L-1", "letter.rendered", data, datetime.now(UTC))])


def export(books: Books, out: Path, *extra: str) -> int:
    argv = ["audit", "export", "--tenant", TENANT, "--out", str(out), "--public-key", str(books.public_key)]
    return main([*argv, "--at", AT, *extra, "--database-url", books.url])


def offline(bundle: Path, *extra: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``relance audit verify`` in a process of its own: a fresh folder, no RELANCE_* variable, no database."""
    environment = {name: value for name, value in os.environ.items() if not name.upper().startswith("RELANCE_")}
    cwd.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", "verify", str(bundle), *extra],
        env=environment, cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def entries(bundle: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(bundle) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def rewritten(bundle: Path, target: Path, files: Mapping[str, bytes | None], *, manifest: bool = False) -> Path:
    """A copy of the bundle with files replaced, added or (None) removed; ``manifest``: the manifest and its hash
    recomputed to match, as a careful forger would."""
    content = entries(bundle)
    for name, data in files.items():
        if data is None:
            content.pop(name, None)
        else:
            content[name] = data
    if manifest:
        listed = json.loads(content["manifest.json"])
        listed["files"] = {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            for name, data in content.items()
            if name not in ("manifest.json", "manifest.sha256")
        }
        content["manifest.json"] = json.dumps(listed, indent=2, sort_keys=True).encode()
        content["manifest.sha256"] = f"{hashlib.sha256(content['manifest.json']).hexdigest()}  manifest.json\n".encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in sorted(content.items()):
            archive.writestr(name, data)
    target.write_bytes(buffer.getvalue())
    return target


def one_byte(data: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new) and data.count(old) >= 1, old
    return data.replace(old, new, 1)


def named(verdict: Verdict, file: str) -> list[str]:
    return [finding.problem for finding in verdict.findings if finding.file == file]


@pytest.fixture
def bundle(books: Books, tmp_path: Path) -> Path:
    out = tmp_path / "audit.zip"
    assert export(books, out) == 0
    return out


# ---------------------------------------------------------------------------------------------------- honest bundle
def test_a_bundle_with_e_mails_a_letter_and_a_checkpoint_verifies_offline_with_no_settings(
    books: Books, bundle: Path, tmp_path: Path
) -> None:
    content = entries(bundle)
    first, second = (f"messages/{m}.eml" for m in (books.first_message, books.second_message))
    assert {first, second, "letters/L-1.pdf", "checkpoints/1.json", "events/C-0042.jsonl", "events/C-0043.jsonl",
            "manifest.json", "manifest.sha256", "report.txt", "report.json"} <= set(content)  # fmt: skip
    assert content["letters/L-1.pdf"] == PDF
    assert [name for name in content if name.startswith("keys/")] == [f"keys/{cp.key_id(KEY.public_key())}.pub"]
    manifest = json.loads(content["manifest.json"])
    assert manifest["format"] == "relance-audit-bundle/1" and manifest["tenant"] == TENANT
    assert manifest["customers"] == ["C-0042", "C-0043"] and manifest["created_at"].startswith("2026-12-01T09:00:00")
    assert content["manifest.sha256"].split()[0].decode() == hashlib.sha256(content["manifest.json"]).hexdigest()
    lines = content["events/C-0042.jsonl"].splitlines()
    assert [json.loads(line)["version"] for line in lines] == list(range(1, len(lines) + 1))
    report = content["report.txt"].decode()
    assert "compare each with the public key the company published" in report and "intact" in report

    checked = offline(bundle, cwd=tmp_path / "elsewhere")

    assert checked.returncode == 0, checked.stdout + checked.stderr
    headline = checked.stdout.splitlines()[0]
    assert headline.startswith("VALID: audit.zip of tenant acme-fr")
    assert "2 e-mail(s) and 1 letter(s)" in headline and "1 signed checkpoint(s)" in headline
    assert "compare" in checked.stdout  # the bundle's own key is no proof: the auditor is told to compare it
    with_key = offline(bundle, "--key", str(books.public_key), "--json", cwd=tmp_path / "elsewhere")
    assert with_key.returncode == 0 and json.loads(with_key.stdout)["valid"] is True


def test_two_exports_of_the_same_log_are_byte_identical(books: Books, bundle: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.zip"
    assert export(books, again) == 0
    assert again.read_bytes() == bundle.read_bytes()


def test_the_period_scopes_the_evidence_and_every_chain_still_starts_at_version_1(books: Books, tmp_path: Path) -> None:
    before, after = tmp_path / "before.zip", tmp_path / "after.zip"
    middle = books.middle.isoformat()
    assert export(books, before, "--to", middle) == 0
    assert export(books, after, "--from", middle) == 0

    early, late = entries(before), entries(after)
    assert f"messages/{books.first_message}.eml" in early and f"messages/{books.second_message}.eml" not in early
    assert "letters/L-1.pdf" not in early
    assert f"messages/{books.first_message}.eml" not in late and f"messages/{books.second_message}.eml" in late
    assert "letters/L-1.pdf" in late
    assert json.loads(late["events/C-0042.jsonl"].splitlines()[0])["version"] == 1
    streams = {s["customer_id"]: s for s in json.loads(early["manifest.json"])["streams"]}
    recorded = [json.loads(line) for line in early["events/C-0042.jsonl"].splitlines()]
    inside = [e["version"] for e in recorded if datetime.fromisoformat(e["recorded_at"]) <= books.middle]
    assert streams["C-0042"]["in_period"] == [1, inside[-1]]
    # the chain goes on past the period up to the version checkpoint 1 signed, so the period is anchored by it
    whole = entries(after)["events/C-0042.jsonl"].splitlines()
    assert len(recorded) == len(whole) > inside[-1] and streams["C-0042"]["versions"] == [1, len(whole)]
    assert f"C-0042: events 1 to {len(whole)} signed by checkpoint 1" in early["report.txt"].decode()
    assert verify_bundle(before).valid and verify_bundle(after).valid


def test_one_customer_s_bundle_holds_its_stream_only(books: Books, tmp_path: Path) -> None:
    out = tmp_path / "one.zip"
    assert export(books, out, "--customer", "C-0043") == 0
    names = set(entries(out))
    assert "events/C-0043.jsonl" in names and "events/C-0042.jsonl" not in names
    assert not any(name.startswith(("messages/", "letters/")) for name in names)
    assert verify_bundle(out).valid


def test_an_unknown_tenant_or_customer_exits_1_saying_so(
    books: Books, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "none.zip"
    code = main(["audit", "export", "--tenant", "nobody", "--out", str(out), "--database-url", books.url])
    assert code == 1 and "tenant 'nobody' has no event in this ledger" in capsys.readouterr().err
    code = main(["audit", "export", "--tenant", TENANT, "--customer", "C-9", "--out", str(out), "--database-url",
                 books.url])  # fmt: skip
    assert code == 1 and "tenant 'acme-fr' has no customer 'C-9'" in capsys.readouterr().err
    assert not out.exists()
    code = main(["audit", "export", "--tenant", TENANT, "--out", str(tmp_path / "nowhere" / "a.zip"), "--database-url",
                 books.url])  # fmt: skip
    assert code == 1 and "nowhere is not a folder" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- tampering
def test_one_byte_changed_in_an_event_line_is_not_valid_and_names_the_file(bundle: Path, tmp_path: Path) -> None:
    events = entries(bundle)["events/C-0042.jsonl"]
    changed = one_byte(events, b'"amount":"200.00"', b'"amount":"900.00"')
    naive = rewritten(bundle, tmp_path / "naive.zip", {"events/C-0042.jsonl": changed})
    careful = rewritten(bundle, tmp_path / "careful.zip", {"events/C-0042.jsonl": changed}, manifest=True)

    assert main(["audit", "verify", str(naive)]) == 1
    verdict = verify_bundle(careful)
    assert not verdict.valid and verdict.headline().startswith("NOT VALID: ")
    assert any(
        p.endswith("(invoice.issued) does not match its hash: the log was changed after it was written")
        for p in named(verdict, "events/C-0042.jsonl")
    ), verdict.text()
    assert "events/C-0042.jsonl: its SHA-256 differs from the one in the manifest" in verify_bundle(naive).text()


def test_an_event_removed_from_a_chain_is_not_valid(bundle: Path, tmp_path: Path) -> None:
    lines = entries(bundle)["events/C-0042.jsonl"].splitlines(keepends=True)
    cut = rewritten(bundle, tmp_path / "cut.zip", {"events/C-0042.jsonl": b"".join(lines[:2] + lines[3:])},
                    manifest=True)  # fmt: skip
    problems = named(verify_bundle(cut), "events/C-0042.jsonl")
    assert any("event 3 missing before event 4" in p for p in problems), problems
    # and the tail cut off: the checkpoint signed the stream further than the file goes
    tail = rewritten(bundle, tmp_path / "tail.zip", {"events/C-0042.jsonl": b"".join(lines[:-1])}, manifest=True)
    text = verify_bundle(tail).text()
    assert f"but checkpoint 1 signed this customer at event {len(lines)}: events were removed" in text


def test_one_byte_changed_in_an_e_mail_is_not_valid_and_names_the_file(
    books: Books, bundle: Path, tmp_path: Path
) -> None:
    name = f"messages/{books.first_message}.eml"
    changed = one_byte(entries(bundle)[name], b"200,00", b"900,00")
    careful = rewritten(bundle, tmp_path / "careful.zip", {name: changed}, manifest=True)

    checked = offline(careful, cwd=tmp_path / "elsewhere")

    assert checked.returncode == 1
    lines = checked.stdout.splitlines()
    assert lines[0].startswith("NOT VALID: 1 problem(s)")
    assert lines[1].startswith(f"{name}: its SHA-256 differs from the one the log recorded on ")
    assert " in event " in lines[1]


def test_one_byte_changed_in_a_letter_is_not_valid_and_names_the_file(bundle: Path, tmp_path: Path) -> None:
    changed = one_byte(PDF, b"formal", b"Formal")
    naive = rewritten(bundle, tmp_path / "naive.zip", {"letters/L-1.pdf": changed})
    assert main(["audit", "verify", str(naive)]) == 1
    problems = named(verify_bundle(naive), "letters/L-1.pdf")
    assert "its SHA-256 differs from the one in the manifest: it was changed" in problems
    assert any(p.startswith("its SHA-256 differs from the one the log recorded on ") for p in problems)


def test_one_byte_changed_in_a_checkpoint_breaks_its_signature(bundle: Path, tmp_path: Path) -> None:
    document = entries(bundle)["checkpoints/1.json"]
    root = json.loads(document)["merkle_root"].encode()
    changed = one_byte(document, root, (b"0" if root[:1] != b"0" else b"1") + root[1:])
    careful = rewritten(bundle, tmp_path / "careful.zip", {"checkpoints/1.json": changed}, manifest=True)
    signer = cp.key_id(KEY.public_key())

    assert main(["audit", "verify", str(careful)]) == 1
    assert named(verify_bundle(careful), "checkpoints/1.json") == [
        f"the signature does not verify with key {signer}: the checkpoint was changed after it was signed"
    ]


def test_a_checkpoint_re_signed_with_another_key_is_refused_with_the_published_key(
    books: Books, bundle: Path, tmp_path: Path
) -> None:
    # Given a forger who re-signs with a key of his own and puts that key in the bundle
    other = OTHER_KEY.public_key()
    document = json.loads(entries(bundle)["checkpoints/1.json"])
    checkpoint = cp.Checkpoint.from_json({**document, "key_id": cp.key_id(other)}, "forged")
    forged = checkpoint.to_json() | {"signature": _sign(checkpoint.signed_bytes())}
    pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    files = {"checkpoints/1.json": json.dumps(forged).encode(), f"keys/{cp.key_id(other)}.pub": pem}
    copy = rewritten(bundle, tmp_path / "forged.zip", files, manifest=True)

    assert verify_bundle(copy).valid  # the bundle's own key vouches for nothing: hence the note to compare it
    refused = offline(copy, "--key", str(books.public_key), cwd=tmp_path / "elsewhere")
    assert refused.returncode == 1
    assert (
        f"checkpoints/1.json: is signed with key {cp.key_id(other)}, not with the key you gave "
        f"({cp.key_id(KEY.public_key())})" in refused.stdout
    )


def _sign(signed: bytes) -> str:
    import base64

    return base64.b64encode(OTHER_KEY.sign(signed)).decode()


def test_a_file_removed_or_added_is_not_valid(books: Books, bundle: Path, tmp_path: Path) -> None:
    name = f"messages/{books.second_message}.eml"
    naive = rewritten(bundle, tmp_path / "naive.zip", {name: None})
    careful = rewritten(bundle, tmp_path / "careful.zip", {name: None}, manifest=True)
    added = rewritten(bundle, tmp_path / "added.zip", {"messages/extra@mail.example.com.eml": b"Subject: hi\r\n"})

    assert main(["audit", "verify", str(naive)]) == 1
    assert named(verify_bundle(naive), name) == [
        "is listed in the manifest but missing from the bundle: it was removed"
    ]
    [missing] = named(verify_bundle(careful), name)
    assert missing.startswith("is missing: the log recorded its SHA-256 on ") and "events/C-0042.jsonl" in missing
    assert main(["audit", "verify", str(added)]) == 1
    assert named(verify_bundle(added), "messages/extra@mail.example.com.eml") == [
        "is in the bundle but not in its manifest: it was added after the export",
        "no event of the period records this file's hash: it is not evidence of this log",
    ]


def test_a_file_that_is_not_a_zip_is_not_valid(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    verdict = verify_bundle(junk)
    assert not verdict.valid and str(verdict.findings[0]).startswith("junk.zip: cannot be read as a ZIP archive")


def test_the_period_is_shown_in_the_report(books: Books, tmp_path: Path) -> None:
    out = tmp_path / "october.zip"
    start = (books.middle - timedelta(days=30)).date().isoformat()
    assert export(books, out, "--from", start) == 0
    assert f"events recorded from {start}T00:00:00.000000+00:00 to the export" in entries(out)["report.txt"].decode()


def test_a_customer_left_out_of_a_whole_tenant_s_bundle_is_caught_by_the_checkpoint(
    bundle: Path, tmp_path: Path
) -> None:
    manifest = json.loads(entries(bundle)["manifest.json"])
    manifest["customers"].remove("C-0043")
    manifest["streams"] = [s for s in manifest["streams"] if s["customer_id"] != "C-0043"]
    files = {"events/C-0043.jsonl": None, "manifest.json": json.dumps(manifest).encode()}
    copy = rewritten(bundle, tmp_path / "partial.zip", files, manifest=True)

    assert named(verify_bundle(copy), "checkpoints/1.json") == [
        "signed customer C-0043 of this tenant, whose events are not in the bundle: a customer was left out of it"
    ]


def test_events_after_the_newest_checkpoint_are_exported_and_reported_as_not_yet_signed(
    books: Books, tmp_path: Path
) -> None:
    before = len(books.ledger.read_stream(TENANT, CUSTOMER))
    books.ledger.record([incoming(payment("P2", "200.00", allocations={"INV-2": "200.00"}))])
    out = tmp_path / "later.zip"
    assert export(books, out) == 0

    content = entries(out)
    assert len(content["events/C-0042.jsonl"].splitlines()) == before + 1
    report = content["report.txt"].decode()
    assert (
        f"C-0042: events 1 to {before} signed by checkpoint 1, {before + 1} to {before + 1} recorded after it" in report
    )
    assert verify_bundle(out).valid


def test_without_the_public_key_the_bundle_says_so_and_verifies_with_the_published_one(
    books: Books, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "keyless.zip"
    argv = ["audit", "export", "--tenant", TENANT, "--out", str(out), "--database-url", books.url]
    assert main(argv) == 0
    signer = cp.key_id(KEY.public_key())
    assert f"key(s) {signer} not bundled" in capsys.readouterr().out
    assert not any(name.startswith("keys/") for name in entries(out))

    assert named(verify_bundle(out), "checkpoints/1.json") == [
        f"is signed with key {signer}, and the bundle holds no keys/{signer}.pub"
    ]
    assert verify_bundle(out, books.public_key.read_bytes()).valid
