"""``relance audit export``: one tenant's (or customer's) evidence as one ZIP an auditor can check offline.

What the bundle holds and how :mod:`services.audit.offline` checks it is written in that module's docstring. What
this side guarantees:

- **Whole chains.** A stream's chain starts at version 1, so every stream in scope is exported from version 1 up to
  the last event recorded by the end of the period (``--to``), whatever its start (``--from``); the manifest says
  which versions were recorded within the period. When a checkpoint signed the stream at a later version, the
  events up to that version are exported too, so that a signed checkpoint anchors every event of the period.
- **Evidence of the period.** Every e-mail (``sent_messages``) and letter (``letters``) whose SHA-256 an event of
  the period records is in the bundle, byte for byte as stored; one whose bytes are missing is left out and the
  bundle does not verify, which is the truth of it.
- **Checkpoints.** For each stream, the first checkpoint that covers its last event of the period and the latest one
  that still records the same head, or, when none covers it yet, the latest that records the stream at all; with
  the public key of each, when relance was given it (``--public-key``, or the checkpoint settings).
- **Reproducible.** Entries sorted, fixed timestamps and permissions, JSON with sorted keys: two exports of the
  same log at the same ``--at`` instant by the same person are byte-identical.
- The report carries what ``relance verify`` said over the same scope at export time.

Every query is scoped to the tenant. Files are written to a temporary folder first (a large tenant's log never sits
in memory), then zipped into ``out`` through a temporary name, so a failed export leaves no half-written bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Engine, func, select

from services.audit import report
from services.audit.offline import FORMAT, MANIFEST, MANIFEST_HASH, safe_name
from shared.config import Settings
from shared.ledger import checkpoints as cp
from shared.ledger.hashing import HASHED_FIELDS, utc
from shared.ledger.scan import STREAMED, read_only
from shared.ledger.schema import events, letters, sent_messages
from shared.ledger.verify import CheckpointSources, VerifyReport, verify

Progress = Callable[[str, int, int], None]  # (phase, done, in all)
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a ZIP can say: no entry carries the time of the export
CHUNK = 500  # ids per IN (...) when the evidence is fetched


class AuditError(Exception):
    """Base of the audit bundle's errors; the message says what to fix."""


class UnknownScope(AuditError, LookupError):
    """The tenant or customer asked for has no event in this ledger (or none recorded by the end of the period)."""


@dataclass(frozen=True, slots=True)
class Period:
    """Events recorded from ``start`` to ``end``, both included; None: from the first, up to the export."""

    start: datetime | None = None
    end: datetime | None = None

    def holds(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (self.end is None or moment <= self.end)

    def to_json(self) -> dict[str, str | None]:
        return {"from": _iso(self.start), "to": _iso(self.end)}


@dataclass(slots=True)
class StreamPlan:
    customer_id: str
    file: str
    head_by_end: int  # the last version recorded by the end of the period
    last: int  # the last version exported (≥ head_by_end when a checkpoint signed a later one)
    in_period: list[int] = field(default_factory=list)  # first and last version recorded within the period
    anchored: int = 0  # the highest version a checkpoint of the bundle signs
    anchored_by: int | None = None  # that checkpoint's number


@dataclass(slots=True)
class Exported:
    """What an export wrote, for the command's summary."""

    path: Path
    tenant: str
    streams: list[StreamPlan]
    events: int
    messages: int
    letters: int
    checkpoints: list[int]
    keys: list[str]
    missing_keys: list[str]
    missing_evidence: list[str]
    verify_ok: bool
    bytes: int


def export_bundle(
    engine: Engine,
    tenant: str,
    out: Path,
    *,
    customer_id: str | None = None,
    period: Period = Period(),
    created_at: datetime,
    exported_by: str,
    public_keys: Sequence[Ed25519PublicKey] = (),
    relance_version: str = "",
    progress: Progress | None = None,
) -> Exported:
    """Write the evidence bundle of ``tenant`` (or of one of its customers) over ``period`` to ``out``."""
    if not out.parent.is_dir():
        raise AuditError(f"cannot write {out}: {out.parent} is not a folder")
    keys = {cp.key_id(key): key for key in public_keys}
    with read_only(engine) as conn:
        heads = _heads(conn, tenant, customer_id, period)
        checkpoints = cp.stored(conn)
    plans, chosen = _plan(tenant, heads, checkpoints)
    verified = verify(
        engine, tenant, customer_id, sources=CheckpointSources(public_key=next(iter(keys.values()), None))
    )
    with tempfile.TemporaryDirectory(prefix="relance-audit-") as folder:
        root = Path(folder)
        for sub in ("events", "messages", "letters", "checkpoints", "keys"):
            (root / sub).mkdir()
        total = sum(plan.last for plan in plans.values())
        wanted_messages, wanted_letters, written = _write_events(engine, tenant, plans, period, root, total, progress)
        missing = _write_evidence(engine, tenant, wanted_messages, wanted_letters, root)
        documents = [c for c in checkpoints if c.number in chosen]
        for checkpoint in documents:
            (root / "checkpoints" / f"{checkpoint.number}.json").write_bytes(
                orjson.dumps(checkpoint.to_json(), option=orjson.OPT_INDENT_2) + b"\n"
            )
        signers = sorted({c.key_id for c in documents})
        for signer in signers:
            if signer in keys:
                pem = keys[signer].public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                (root / "keys" / f"{signer}.pub").write_bytes(pem)
        missing_keys = [signer for signer in signers if signer not in keys]
        _anchor(plans, documents, tenant)
        facts = report.Facts(
            tenant=tenant,
            customer_id=customer_id,
            period=period.to_json(),
            created_at=_iso(created_at) or "",
            exported_by=exported_by,
            relance_version=relance_version,
            streams=[_stream_json(plan) for plan in sorted(plans.values(), key=lambda p: p.customer_id)],
            events=written,
            messages=len(wanted_messages) - sum(1 for m in missing if m.startswith("messages/")),
            letters=len(wanted_letters) - sum(1 for m in missing if m.startswith("letters/")),
            checkpoints=[c.number for c in documents],
            keys=[s for s in signers if s in keys],
            missing_keys=missing_keys,
            missing_evidence=missing,
            verify=_verify_json(verified),
        )
        (root / "report.txt").write_text(report.text(facts), encoding="utf-8")
        (root / "report.json").write_bytes(_json(report.as_json(facts)))
        _manifest(root, facts)
        size = _zip(root, out)
    return Exported(
        path=out,
        tenant=tenant,
        streams=sorted(plans.values(), key=lambda p: p.customer_id),
        events=written,
        messages=facts.messages,
        letters=facts.letters,
        checkpoints=facts.checkpoints,
        keys=facts.keys,
        missing_keys=missing_keys,
        missing_evidence=missing,
        verify_ok=verified.ok,
        bytes=size,
    )


# ---------------------------------------------------------------------------------------------------- planning
def _heads(conn: Any, tenant: str, customer_id: str | None, period: Period) -> dict[str, int]:
    """Each stream in scope with its last version recorded by the end of the period."""
    scope = [events.c.tenant == tenant]
    if customer_id is not None:
        scope.append(events.c.customer_id == customer_id)
    if conn.execute(select(events.c.position).where(*scope).limit(1)).first() is None:
        if customer_id is None:
            raise UnknownScope(f"tenant {tenant!r} has no event in this ledger (check the tenant's name)")
        raise UnknownScope(f"tenant {tenant!r} has no customer {customer_id!r} in this ledger (check both names)")
    if period.end is not None:
        scope.append(events.c.recorded_at <= period.end)
    query = select(events.c.customer_id, func.max(events.c.version)).where(*scope).group_by(events.c.customer_id)
    heads = {customer: int(version) for customer, version in conn.execute(query)}
    if not heads:
        raise UnknownScope(f"nothing in scope was recorded by {_iso(period.end)}: choose a later --to")
    return heads


def _plan(
    tenant: str, heads: dict[str, int], checkpoints: list[cp.Checkpoint]
) -> tuple[dict[str, StreamPlan], set[int]]:
    """Which versions of each stream to export, and which checkpoints anchor them (see the module docstring)."""
    signed: list[tuple[int, dict[str, cp.Head]]] = [
        (c.number, {customer: (version, head) for t, customer, version, head in c.leaves if t == tenant})
        for c in checkpoints
    ]
    chosen: set[int] = set()
    names: set[str] = set()
    plans: dict[str, StreamPlan] = {}
    for customer in sorted(heads):
        head = heads[customer]
        covering = [(number, leaves[customer]) for number, leaves in signed if leaves.get(customer, (0, ""))[0] >= head]
        if covering:
            first_number, first_leaf = covering[0]
            chosen.add(first_number)
            chosen.add(max(number for number, leaves in signed if leaves.get(customer) == first_leaf))
        else:
            recording = [number for number, leaves in signed if customer in leaves]
            if recording:
                chosen.add(recording[-1])
        file = f"events/{safe_name(customer)}.jsonl"
        suffix = 2
        while file in names:
            file = f"events/{safe_name(customer)}-{suffix}.jsonl"
            suffix += 1
        names.add(file)
        plans[customer] = StreamPlan(customer, file, head, head)
    for number, leaves in signed:
        if number in chosen:
            for customer, (version, _) in leaves.items():
                if customer in plans:
                    plans[customer].last = max(plans[customer].last, version)
    return plans, chosen


def _anchor(plans: dict[str, StreamPlan], documents: Iterable[cp.Checkpoint], tenant: str) -> None:
    for checkpoint in documents:
        for t, customer, version, _ in checkpoint.leaves:
            plan = plans.get(customer) if t == tenant else None
            if plan is not None and version >= plan.anchored:
                plan.anchored, plan.anchored_by = version, checkpoint.number


# ---------------------------------------------------------------------------------------------------- writing
def _write_events(
    engine: Engine,
    tenant: str,
    plans: dict[str, StreamPlan],
    period: Period,
    root: Path,
    total: int,
    progress: Progress | None,
) -> tuple[dict[str, str], dict[str, str], int]:
    """Each stream's lines; returns the Message-IDs and letter ids the period's events record, by file name."""
    messages: dict[str, str] = {}
    letter_ids: dict[str, str] = {}
    written = 0
    columns = [events.c[name] for name in (*HASHED_FIELDS, "hash")]
    query = select(*columns).where(events.c.tenant == tenant)
    if len(plans) == 1:
        query = query.where(events.c.customer_id == next(iter(plans)))
    query = query.order_by(events.c.customer_id, events.c.version)
    files = _StreamFiles(root)
    try:
        with read_only(engine) as conn:
            for row in conn.execute(query, execution_options=STREAMED):
                line = dict(zip((*HASHED_FIELDS, "hash"), row, strict=True))
                plan = plans.get(line["customer_id"])
                if plan is None or line["version"] > plan.last:
                    continue
                recorded = utc(line["recorded_at"])
                line["occurred_at"] = utc(line["occurred_at"]).isoformat(timespec="microseconds")
                line["recorded_at"] = recorded.isoformat(timespec="microseconds")
                files.write(plan.file, orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n")
                written += 1
                if period.holds(recorded):
                    plan.in_period = [plan.in_period[0] if plan.in_period else line["version"], line["version"]]
                    _wanted(line, messages, letter_ids)
                if progress is not None and written % 5000 == 0:
                    progress("events", written, total)
    finally:
        files.close()
    if progress is not None:
        progress("events", written, total)
    return messages, letter_ids, written


class _StreamFiles:
    """The events files, written one after the other as the streamed rows come (one stream's rows follow each other)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = ""
        self.file: BinaryIO | None = None

    def write(self, name: str, line: bytes) -> None:
        if self.file is None or name != self.name:
            self.close()
            self.file, self.name = (self.root / name).open("ab"), name
        self.file.write(line)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _wanted(line: dict[str, Any], messages: dict[str, str], letter_ids: dict[str, str]) -> None:
    data, kind = line["data"], str(line["event_type"])
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str) or not data["sha256"]:
        return
    if kind.startswith("reminder.") and isinstance(data.get("message_id"), str):
        _claim(messages, f"messages/{safe_name(data['message_id'])}.eml", data["message_id"])
    elif kind == "letter.rendered" and isinstance(data.get("letter_id"), str):
        _claim(letter_ids, f"letters/{safe_name(data['letter_id'])}.pdf", data["letter_id"])


def _claim(files: dict[str, str], name: str, identifier: str) -> None:
    held = files.setdefault(name, identifier)
    if _bare(held) != _bare(identifier):
        raise AuditError(f"{identifier!r} and {held!r} would both be written as {name}; the bundle cannot hold both")


def _bare(identifier: str) -> str:
    return identifier.strip().removeprefix("<").removesuffix(">")


def _write_evidence(
    engine: Engine, tenant: str, messages: dict[str, str], letter_ids: dict[str, str], root: Path
) -> list[str]:
    """The stored bytes of the e-mails and letters the period records; the files whose bytes are not stored."""
    by_id = {_bare(identifier): name for name, identifier in messages.items()}
    found: set[str] = set()
    with engine.connect() as conn:
        wanted = sorted({form for bare in by_id for form in (bare, f"<{bare}>")})
        for chunk in _chunks(wanted):
            query = select(sent_messages.c.message_id, sent_messages.c.mime).where(
                sent_messages.c.tenant == tenant, sent_messages.c.message_id.in_(chunk)
            )
            for message_id, mime in conn.execute(query):
                name = by_id[_bare(message_id)]
                (root / name).write_bytes(bytes(mime))
                found.add(name)
        by_letter = {identifier: name for name, identifier in letter_ids.items()}
        for chunk in _chunks(sorted(by_letter)):
            query = select(letters.c.letter_id, letters.c.pdf).where(
                letters.c.tenant == tenant, letters.c.letter_id.in_(chunk)
            )
            for letter_id, pdf in conn.execute(query):
                name = by_letter[letter_id]
                (root / name).write_bytes(bytes(pdf))
                found.add(name)
    return sorted((set(messages) | set(letter_ids)) - found)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _manifest(root: Path, facts: report.Facts) -> None:
    files = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = path.relative_to(root).as_posix()
        digest = hashlib.sha256()
        with path.open("rb") as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
        files[name] = {"sha256": digest.hexdigest(), "size": path.stat().st_size}
    manifest = {
        "format": FORMAT,
        "tenant": facts.tenant,
        "customers": [stream["customer_id"] for stream in facts.streams],
        "customer": facts.customer_id,  # None: every customer of the tenant
        "period": facts.period,
        "created_at": facts.created_at,
        "exported_by": facts.exported_by,
        "relance_version": facts.relance_version,
        "streams": [
            {key: stream[key] for key in ("customer_id", "file", "versions", "in_period")} for stream in facts.streams
        ],
        "files": files,
    }
    raw = _json(manifest)
    (root / MANIFEST).write_bytes(raw)
    (root / MANIFEST_HASH).write_text(f"{hashlib.sha256(raw).hexdigest()}  {MANIFEST}\n", encoding="ascii")


def _zip(root: Path, out: Path) -> int:
    """Zip the folder into ``out``, entries sorted, every entry's time and mode fixed; the archive's size."""
    partial = out.with_name(out.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for path in sorted(
                (p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix()
            ):
                info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=ZIP_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                size = path.stat().st_size
                with path.open("rb") as source, archive.open(info, "w", force_zip64=size >= 1 << 31) as target:
                    shutil.copyfileobj(source, target, 1 << 20)
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise AuditError(f"cannot write {out}: {exc.strerror or exc}") from None
    return out.stat().st_size


# ---------------------------------------------------------------------------------------------------- helpers
def _stream_json(plan: StreamPlan) -> dict[str, Any]:
    return {
        "customer_id": plan.customer_id,
        "file": plan.file,
        "versions": [1, plan.last],
        "in_period": plan.in_period or None,
        "recorded_by_end": plan.head_by_end,
        "anchored": None if plan.anchored_by is None else {"through": plan.anchored, "checkpoint": plan.anchored_by},
    }


def _verify_json(verified: VerifyReport) -> dict[str, Any]:
    return {
        "ok": verified.ok,
        "streams": verified.streams,
        "events": verified.events,
        "checkpoints": verified.checkpoints,
        "problems": verified.problems,
        "warnings": verified.warnings,
        "since": verified.since,
    }


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc(moment).isoformat(timespec="microseconds")


def public_keys(given: Sequence[Path], settings: Settings) -> list[Ed25519PublicKey]:
    """The keys a bundle's checkpoints are verified with: those given, else the settings' public or private key."""
    if given:
        return [cp.load_public_key(path) for path in given]
    if settings.checkpoint_public_key_file is not None:
        return [cp.load_public_key(settings.checkpoint_public_key_file)]
    if settings.checkpoint_key_file is not None:
        return [cp.load_private_key(settings.checkpoint_key_file).public_key()]
    return []
