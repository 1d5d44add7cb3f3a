"""``relance letters``: the day's print batch, the letters and their PDFs, and their posting and delivery.

- ``letters batch --date D [--tenant T] --out FILE.pdf [--again]``: one PDF to print, an index page first (letter id,
  customer, level, pages, the page the letter starts at in the batch), then every letter of the day not yet printed,
  its stored pages unchanged, in the index's order. Each letter gets ``letter.handed_to_print`` in its customer's
  stream, with the batch's id (derived from the letters it holds) and the SHA-256 of the batch's bytes; a letter
  already printed is not batched again unless ``--again``.
- ``letters list`` and ``letters show --letter ID --out FILE.pdf`` (the stored bytes, checked against the hash
  ``letter.rendered`` recorded; refused if they differ).
- ``letters posted`` / ``delivered`` / ``returned``: the proof, recorded through the workspace's action layer
  (:func:`services.workspace.actions.perform`, source ``cli``) with its checks: no second posting, no delivery
  before the posting, no unknown letter. Posting closes the letter's ``send_letter`` task.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from services.cli.options import Commands, day, runs
from services.workspace import actions
from shared.config import Settings
from shared.ledger import letters as stored
from shared.ledger.dunning import LETTER_STATUSES, Letter
from shared.ledger.store import Ledger
from shared.runtime import open_ledger


def add_letters(commands: Commands) -> None:
    letters = commands.add_parser("letters", help="letters as evidence: the day's print batch, the PDFs, posting")
    actions_ = letters.add_subparsers(title="letters commands", metavar="ACTION")
    batch = actions_.add_parser("batch", help="the day's print batch: an index page, then each letter not yet printed")
    batch.add_argument("--date", type=day, required=True, help="the day the letters were rendered (UTC)")
    batch.add_argument("--tenant", help="one tenant's letters (default: every tenant's)")
    batch.add_argument("--out", type=Path, required=True, help="the PDF to write")
    batch.add_argument("--again", action="store_true", help="batch again the letters of the day already printed")
    runs(batch, letters_batch, database_url=True)
    listing = actions_.add_parser("list", help="the letters and their status (rendered, printed, posted...)")
    listing.add_argument("--tenant", help="one tenant's letters (default: every tenant's)")
    which = listing.add_mutually_exclusive_group()
    which.add_argument("--date", type=day, help="the letters rendered that day (UTC)")
    which.add_argument("--customer", help="one customer's letters")
    listing.add_argument("--status", choices=LETTER_STATUSES)
    runs(listing, letters_list, database_url=True)
    show = actions_.add_parser("show", help="write a letter's stored PDF, checked against the hash in the log")
    show.add_argument("--tenant", required=True)
    show.add_argument("--letter", required=True, help="its id (L-…), as its send_letter task names it")
    show.add_argument("--out", type=Path, required=True)
    runs(show, letters_show, database_url=True)
    posted = actions_.add_parser("posted", help="record that a letter was posted (and its tracking number)")
    posted.add_argument("--tenant", required=True)
    posted.add_argument("--letter", required=True)
    posted.add_argument("--posted-on", type=day, required=True)
    posted.add_argument("--tracking-number", help="a registered letter's number, from the posting receipt")
    posted.add_argument("--carrier", help="e.g. La Poste, Royal Mail")
    posted.add_argument("--author", required=True, help="who posted it (a login)")
    runs(posted, letters_posted, database_url=True)
    delivered = actions_.add_parser("delivered", help="record that a letter was delivered (acknowledgement of receipt)")
    delivered.add_argument("--tenant", required=True)
    delivered.add_argument("--letter", required=True)
    delivered.add_argument("--on", type=day, required=True, help="the day of delivery")
    delivered.add_argument("--note", help="e.g. who signed for it")
    delivered.add_argument("--author", required=True)
    runs(delivered, letters_delivered, database_url=True)
    returned = actions_.add_parser("returned", help="record that a letter came back undelivered, and why")
    returned.add_argument("--tenant", required=True)
    returned.add_argument("--letter", required=True)
    returned.add_argument("--on", type=day, required=True, help="the day it came back")
    returned.add_argument("--reason", required=True, help="the carrier's reason (unknown at this address, ...)")
    returned.add_argument("--author", required=True)
    runs(returned, letters_returned, database_url=True)


def letters_batch(args: argparse.Namespace, settings: Settings) -> int:
    from services.notifier.batch import BatchRefused, make_batch, record_batch

    with open_ledger(settings) as ledger:
        tenants = [args.tenant] if args.tenant else sorted({tenant for tenant, _ in ledger.streams()})
        try:
            made = make_batch(
                ledger, args.date, tenants, again=args.again, progress=lambda line: print(line, file=sys.stderr)
            )
            if made is None:
                hint = "" if args.again else " (a letter already printed goes into a batch again with --again)"
                print(f"no letter to print for {args.date}{' in ' + args.tenant if args.tenant else ''}{hint}")
                return 0
            # The file first: letters are marked handed to print only once their batch is on disk.
            args.out.write_bytes(made.pdf)
            record_batch(ledger, made, source="cli")
        except BatchRefused as exc:
            print(f"relance: {exc}", file=sys.stderr)
            return 1
    print(
        f"{args.out}: print batch {made.batch_id}, {len(made.entries)} letter(s), {made.pages} page(s) "
        f"(an index, then the letters), SHA-256 {made.sha256}"
    )
    return 0


# ------------------------------------------------------------------------------------------------------ listing
def _letters_of(
    ledger: Ledger, tenants: list[str], on: date | None, customer_id: str | None
) -> list[tuple[stored.StoredLetter, Letter | None]]:
    rows: list[tuple[stored.StoredLetter, Letter | None]] = []
    for tenant in tenants:
        found = stored.listed(ledger.engine, tenant, on=on, customer_id=customer_id)
        states = ledger.states(sorted({(tenant, letter.customer_id) for letter in found}))
        rows.extend((letter, states[tenant, letter.customer_id].letters.get(letter.letter_id)) for letter in found)
    return rows


def letters_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings) as ledger:
        tenants = [args.tenant] if args.tenant else sorted({tenant for tenant, _ in ledger.streams()})
        rows = _letters_of(ledger, tenants, args.date, args.customer)
    rows = [(letter, folded) for letter, folded in rows if folded is not None]
    if args.status:
        rows = [(letter, folded) for letter, folded in rows if folded is not None and folded["status"] == args.status]
    if not rows:
        print("no letters")
        return 0
    print(f"  {'letter':<20} {'tenant':<12} {'customer':<14} {'level':<14} {'pages':>5}  {'rendered':<10}  status")
    for letter, folded in rows:
        assert folded is not None
        print(
            f"  {letter.letter_id:<20} {letter.tenant[:12]:<12} {letter.customer_id[:14]:<14} "
            f"{str(folded.get('level') or letter.kind)[:14]:<14} {letter.pages:>5}  "
            f"{letter.created_at.date().isoformat():<10}  {stored.proof(folded)}"
        )
    return 0


def letters_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings) as ledger:
        letter = stored.get(ledger.engine, args.tenant, args.letter)
        if letter is None:
            print(_unknown(args.tenant, args.letter), file=sys.stderr)
            return 1
        folded = ledger.state(args.tenant, letter.customer_id).letters.get(letter.letter_id)
    if folded is None:
        print(
            f"relance: letter {args.letter} has no letter.rendered in the log: it was never handed out", file=sys.stderr
        )
        return 1
    if not stored.verify(letter, folded["sha256"]):
        print(
            f"relance: the stored PDF of letter {args.letter} does not match the SHA-256 the log recorded "
            f"({folded['sha256']}): not written; run `relance verify` and tell the auditor",
            file=sys.stderr,
        )
        return 1
    args.out.write_bytes(letter.pdf)
    print(
        f"{args.out}: letter {letter.letter_id} of {letter.customer_id}, {letter.pages} page(s), "
        f"SHA-256 {letter.sha256} (matches the log); {stored.proof(folded)}"
    )
    return 0


def _unknown(tenant: str, letter_id: str) -> str:
    return f"relance: tenant {tenant} has no letter {letter_id!r} (`relance letters list --tenant {tenant}` lists them)"


# ------------------------------------------------------------------------------------------------------ proof
def record(
    ledger: Ledger, settings: Settings, tenant: str, letter_id: str, action: str, payload: dict[str, Any], author: str
) -> actions.ActionResult:
    """Record a letter's posting, delivery or return through the action layer; :class:`LetterUnknown` or
    :class:`~services.workspace.actions.ActionRefused` saying why not."""
    letter = stored.get(ledger.engine, tenant, letter_id)
    if letter is None:
        raise LetterUnknown(_unknown(tenant, letter_id))
    given = {k: v for k, v in payload.items() if v is not None}
    digest = hashlib.sha256(repr(sorted(given.items())).encode()).hexdigest()[:12]
    return actions.perform(
        ledger,
        tenant,
        letter.customer_id,
        action,
        {"request_id": f"cli-{action}-{letter_id}-{digest}", "letter_id": letter_id, **given},
        author=author,
        source="cli",
        now=datetime.now(UTC),
        zone=ZoneInfo(settings.timezone),
    )


class LetterUnknown(LookupError):
    """No such letter in the tenant."""


def _recorded(args: argparse.Namespace, settings: Settings, action: str, payload: dict[str, Any]) -> int:
    with open_ledger(settings) as ledger:
        try:
            result = record(ledger, settings, args.tenant, args.letter, action, payload, args.author)
        except LetterUnknown as exc:
            print(str(exc), file=sys.stderr)
            return 1
        except actions.ActionRefused as exc:
            print(f"relance: {exc.reason}", file=sys.stderr)
            return 1
    done = " — already recorded: nothing more recorded" if result.status == "duplicate" else ""
    print(f"{args.tenant}: {result.summary} (by {args.author.strip()}){done}")
    return 0


def letters_posted(args: argparse.Namespace, settings: Settings) -> int:
    payload = {
        "posted_on": args.posted_on.isoformat(),
        "tracking_number": args.tracking_number,
        "carrier": args.carrier,
    }
    return _recorded(args, settings, "letter_posted", payload)


def letters_delivered(args: argparse.Namespace, settings: Settings) -> int:
    return _recorded(args, settings, "letter_delivered", {"delivered_on": args.on.isoformat(), "note": args.note})


def letters_returned(args: argparse.Namespace, settings: Settings) -> int:
    return _recorded(args, settings, "letter_returned", {"returned_on": args.on.isoformat(), "reason": args.reason})
