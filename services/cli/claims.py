"""``relance claims list`` and ``claims waive``: the late interest and indemnities customers owe, and giving them up.

A waiver is a credit manager's decision, recorded as ``claim.waived`` in the customer's stream with its reason and
its author, appended at the stream's version the command read (so it is checked against what is owed at that
instant, and a waiver racing with a payment is checked again). ``claims waive`` records it through the workspace's
action layer (:func:`services.workspace.actions.perform`, action ``waive_claim``, source ``cli``), as the workspace
and the API do; :func:`waiver` says what a waiver would record, or why not (the action layer's rules, with the
CLI's words for its options).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from services.cli.options import Commands, runs
from services.workspace import actions
from shared.config import Settings
from shared.contracts import events
from shared.ledger.claims import KINDS
from shared.ledger.state import CustomerState
from shared.runtime import open_ledger

if TYPE_CHECKING:
    from shared.ledger.store import Ledger

ATTEMPTS = 5  # the stream moved under the waiver this many times: give up and say so


class WaiverRefused(ValueError):
    """The waiver cannot be recorded: the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Waiver:
    event: events.ClaimWaived
    owed_after: Decimal


def add_claims(commands: Commands) -> None:
    claims = commands.add_parser("claims", help="late interest and indemnities owed besides principal; waivers")
    claims_commands = claims.add_subparsers(title="claims commands", metavar="ACTION")
    listing = claims_commands.add_parser("list", help="the claims still owed, per customer and invoice")
    listing.add_argument("--tenant", required=True)
    listing.add_argument("--customer", help="only this customer")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    runs(listing, claims_list, database_url=True)
    waive = claims_commands.add_parser(
        "waive", help="give up a claim (all that is owed, or --amount of it), with a reason, on record"
    )
    waive.add_argument("--tenant", required=True)
    waive.add_argument("--customer", required=True)
    waive.add_argument("--invoice", required=True, help="the invoice id the claim is on")
    waive.add_argument("--kind", required=True, choices=KINDS)
    waive.add_argument("--reason", required=True, help="why, in words an auditor will read")
    waive.add_argument("--author", required=True, help="who decides the waiver")
    waive.add_argument("--amount", help="part of what is owed, e.g. 12.50 (default: all of it)")
    waive.add_argument(
        "--request-id",
        help="an id of your own for this waiver: the command run again with it records nothing more "
        "(default: one per invoice, kind and state of the account)",
    )
    runs(waive, claims_waive, database_url=True)


def waiver(
    state: CustomerState, invoice_id: str, kind: str, reason: str, author: str, amount: str | None = None
) -> Waiver:
    """The ``claim.waived`` a waiver records on this state, or :class:`WaiverRefused` saying why not."""
    _check_words(reason, author)
    value = None if amount is None else _amount(amount)
    try:
        found = actions.waiver(state, invoice_id, kind, reason, author, value)
    except actions.ActionRefused as exc:
        raise WaiverRefused(exc.reason) from None
    return Waiver(found.event, found.owed_after)


def _check_words(reason: str, author: str) -> None:
    if not reason.strip():
        raise WaiverRefused("give the reason of the waiver (--reason): an auditor will read it")
    if not author.strip():
        raise WaiverRefused("say who decides the waiver (--author)")
    _plain_text(reason, "--reason", REASON_MAX)
    _plain_text(author, "--author", AUTHOR_MAX)


REASON_MAX = actions.REASON_MAX  # characters: a sentence or two an auditor reads in `ledger show`
AUTHOR_MAX = actions.AUTHOR_MAX


def _plain_text(text: str, option: str, longest: int) -> None:
    """Refuse text that is too long or carries control characters (a terminal escape, a line break in a log line)."""
    if len(text) > longest:
        raise WaiverRefused(f"{option} is {len(text)} characters long; keep it to {longest}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in text):
        raise WaiverRefused(f"{option} contains a control character or a line break: write it on one plain line")


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise WaiverRefused(f"--amount {text!r} is not a decimal amount such as 12.50") from None
    if not value.is_finite() or value <= 0:
        raise WaiverRefused(f"--amount {text!r} must be above zero")
    return value


def waiver_id(state: CustomerState, invoice_id: str, kind: str) -> str:
    """The waiver's event id: the same waiver asked twice at the same version of the stream is recorded once."""
    key = "\x1f".join((state.tenant, state.customer_id, invoice_id, kind, str(state.version)))
    return f"waiver-{hashlib.sha256(key.encode()).hexdigest()[:32]}"


def record_waiver(
    ledger: Ledger,
    tenant: str,
    customer_id: str,
    invoice_id: str,
    kind: str,
    reason: str,
    author: str,
    amount: str | None = None,
    *,
    occurred_at: datetime | None = None,
    source: str = "cli",
) -> Waiver:
    """Record a waiver in the customer's stream, checked on the state it is appended to; :class:`WaiverRefused`
    saying why when it cannot be (a payment or a decision racing with it is checked again, ``ATTEMPTS`` times)."""
    from shared.ledger.store import Incoming

    for _ in range(ATTEMPTS):
        state = ledger.state(tenant, customer_id)
        if state.version == 0:
            raise WaiverRefused(f"no events for customer {customer_id!r} of tenant {tenant!r}")
        found = waiver(state, invoice_id, kind, reason, author, amount)
        item = Incoming.of(
            found.event,
            stream=(tenant, customer_id),
            event_id=waiver_id(state, invoice_id, kind),
            occurred_at=occurred_at or datetime.now(UTC),
            metadata={"source": source, "author": found.event.author},
            expected_version=state.version,
        )
        (outcome,) = ledger.record([item])
        if outcome.status == "conflict":
            continue  # a payment or a decision came in meanwhile: check the waiver again on the new state
        if outcome.status == "rejected":
            raise WaiverRefused(f"the ledger refused the waiver: {outcome.reason}")
        return found
    raise WaiverRefused(f"the stream of {tenant}/{customer_id} kept moving; run the command again")


def claims_waive(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings) as ledger:
        try:
            _check_words(args.reason, args.author)
            amount = None if args.amount is None else _amount(args.amount)
            state = ledger.state(args.tenant, args.customer)
            payload: dict[str, Any] = {
                "request_id": args.request_id or waiver_id(state, args.invoice, args.kind),
                "invoice_id": args.invoice,
                "kind": args.kind,
                "reason": args.reason,
            }
            if amount is not None:
                payload["amount"] = _amount_text(amount)
            result = actions.perform(
                ledger,
                args.tenant,
                args.customer,
                "waive_claim",
                payload,
                author=args.author,
                source="cli",
                now=datetime.now(UTC),
            )
        except WaiverRefused as exc:
            print(f"relance: {exc}", file=sys.stderr)
            return 1
        except actions.ActionRefused as exc:
            print(f"relance: {exc.reason}", file=sys.stderr)
            return 1
        claim = ledger.state(args.tenant, args.customer).claims.get(args.invoice, args.kind)
    line = f"{args.tenant}/{args.customer}: {result.summary} ({args.reason.strip()}, by {args.author.strip()})"
    if result.status == "duplicate":
        owed = "" if claim is None else f"; still owed {claim.owed} {claim.currency}"
        line += f"{owed} — already recorded under this request id: nothing more recorded"
    print(line)
    return 0


def _amount_text(amount: Decimal) -> str:
    """An amount as the action layer reads it: a plain decimal string (``1E+1`` written ``10``)."""
    return f"{amount:f}"


def claims_list(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings) as ledger:
        keys = [args.customer] if args.customer else [c for _, c in ledger.streams(args.tenant)]
        states = [ledger.state(args.tenant, customer) for customer in keys]
    rows: list[dict[str, Any]] = []
    for state in states:
        for claim in state.claims.all():
            if claim.owed <= 0:
                continue
            invoice = state.invoices.get(claim.invoice_id)
            rows.append(
                {
                    "customer_id": state.customer_id,
                    "invoice_id": claim.invoice_id,
                    "number": invoice.number if invoice else claim.invoice_id,
                    "principal": "settled" if invoice is not None and invoice.status == "paid" else "open",
                    "kind": claim.kind,
                    "currency": claim.currency,
                    "charged": str(claim.charged),
                    "paid": str(claim.allocated),
                    "waived": str(claim.waived),
                    "owed": str(claim.owed),
                    "claimed": claim.claimed,
                }
            )
    if args.json:
        print(json.dumps({"tenant": args.tenant, "claims": rows}, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print(f"no claims owed in {args.tenant}" + (f" by {args.customer}" if args.customer else ""))
        return 0
    print(
        f"  {'customer':<14} {'invoice':<16} {'kind':<10} {'charged':>12} {'paid':>12} {'waived':>12} {'owed':>12}"
        "  currency  principal  claimed"
    )
    totals: dict[str, Decimal] = {}
    for row in rows:
        print(
            f"  {row['customer_id'][:14]:<14} {row['number'][:16]:<16} {row['kind']:<10} {row['charged']:>12} "
            f"{row['paid']:>12} {row['waived']:>12} {row['owed']:>12}  {row['currency']:<8}  {row['principal']:<9}  "
            + ("yes" if row["claimed"] else "not yet")
        )
        totals[row["currency"]] = totals.get(row["currency"], Decimal(0)) + Decimal(row["owed"])
    print("claims owed: " + ", ".join(f"{amount:,} {currency}" for currency, amount in sorted(totals.items())))
    return 0
