"""The bundle's ``report.txt`` and ``report.json``: what was exported, over which period, by whom, and what
``relance verify`` said over the same scope when the bundle was made.

Written for a reader who is not a developer: one fact per line, the checks that follow named in words. Nothing in
it changes with the wall clock but ``created_at``, which the export is given.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SHOWN = 50  # problems and streams listed by name in report.txt (report.json lists them all)


@dataclass(frozen=True, slots=True)
class Facts:
    tenant: str
    customer_id: str | None
    period: dict[str, str | None]
    created_at: str
    exported_by: str
    relance_version: str
    streams: list[dict[str, Any]]
    events: int
    messages: int
    letters: int
    checkpoints: list[int]
    keys: list[str]
    missing_keys: list[str]
    missing_evidence: list[str]
    verify: dict[str, Any]


def as_json(facts: Facts) -> dict[str, Any]:
    return asdict(facts)


def text(facts: Facts) -> str:
    start, end = facts.period.get("from"), facts.period.get("to")
    scope = f"customer {facts.customer_id}" if facts.customer_id else f"{len(facts.streams)} customer(s)"
    in_period = sum(s["in_period"][1] - s["in_period"][0] + 1 for s in facts.streams if s["in_period"])
    lines = [
        "relance audit bundle",
        "",
        f"tenant            {facts.tenant}, {scope}",
        f"period            events recorded from {start or 'the first one'} to {end or 'the export'} (both included)",
        f"exported          {facts.created_at} by {facts.exported_by}, relance {facts.relance_version or 'unknown'}",
        f"events            {facts.events} in {len(facts.streams)} stream(s), each from its first event (version 1), "
        f"{in_period} of them recorded within the period",
        f"e-mails           {facts.messages} (messages/), the exact bytes sent",
        f"letters           {facts.letters} (letters/), the exact PDFs",
        f"checkpoints       {', '.join(map(str, facts.checkpoints)) or 'none'} (checkpoints/)",
    ]
    if facts.keys:
        lines.append(
            f"signing key(s)    {', '.join(facts.keys)} (keys/): compare each with the public key the company "
            "published; `relance audit verify BUNDLE --key PUBLISHED.pub` checks the signatures with that key instead"
        )
    if facts.missing_keys:
        lines.append(
            f"keys not bundled  {', '.join(facts.missing_keys)}: relance was not given them at export; verify with "
            "--key FILE"
        )
    if facts.missing_evidence:
        lines.append(
            f"MISSING evidence  {len(facts.missing_evidence)} file(s) the log records but the database no longer "
            "holds: " + ", ".join(facts.missing_evidence[:SHOWN])
        )
    lines += ["", "Anchoring by signed checkpoints"]
    for stream in facts.streams[:SHOWN]:
        last = stream["versions"][1]
        anchored = stream["anchored"]
        if anchored is None:
            what = "not signed by any checkpoint yet: its chain alone vouches for it"
        elif anchored["through"] >= last:
            what = f"events 1 to {last} signed by checkpoint {anchored['checkpoint']}"
        else:
            what = (
                f"events 1 to {anchored['through']} signed by checkpoint {anchored['checkpoint']}, "
                f"{anchored['through'] + 1} to {last} recorded after it"
            )
        lines.append(f"  {stream['customer_id']}: {what}")
    if len(facts.streams) > SHOWN:
        lines.append(f"  … and {len(facts.streams) - SHOWN} more stream(s) (report.json lists them all)")
    verified = facts.verify
    verdict = "intact" if verified["ok"] else f"{len(verified['problems'])} problem(s) found"
    lines += [
        "",
        "relance verify at export time (the same scope, against the database)",
        f"  {verified['streams']} stream(s), {verified['events']} event(s) checked: {verdict}",
    ]
    lines += [f"  PROBLEM  {problem}" for problem in verified["problems"][:SHOWN]]
    lines += [f"  WARNING  {warning}" for warning in verified["warnings"][:SHOWN]]
    lines += [f"  {line}" for line in verified["since"]]
    lines += [
        "",
        "What `relance audit verify` checks, with no database",
        "  - the manifest: every file present with the size and SHA-256 it lists, no file added;",
        "  - each customer's hash chain: versions 1, 2, 3… without a gap, each event pointing to the one before,",
        "    each event's hash recomputed from its content (a changed, removed or inserted event breaks it);",
        "  - each checkpoint's Ed25519 signature, its Merkle root, and that every exported stream it signed is in",
        "    the bundle at the version and hash it signed (a rewritten or cut history breaks it);",
        "  - each e-mail's and letter's SHA-256 against the hash the log recorded when it was sent or rendered.",
    ]
    return "\n".join(lines) + "\n"
