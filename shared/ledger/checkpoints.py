"""Signed checkpoints: the log's state at an instant, anchored outside the database.

The hash chains prove that a stream was not changed *unless* whoever changed it recomputed the chain, which anyone
with write access to the database can do. A checkpoint closes that gap for everything recorded before it:

- a **Merkle root** over every stream's ``(tenant, customer, version, head hash)`` at that point, leaves sorted by
  (tenant, customer) in code-point order; the leaves travel with the checkpoint so verify can name the streams that
  changed;
- the **global order** up to that point: the SHA-256 of the ``(position, tx_id, tenant, customer, version, hash)``
  lines of every covered event in replay order, so moving an event in the global order (a swapped position or
  transaction id) is caught, not only a change inside a stream;
- a timestamp, the counts, the digest of the previous checkpoint, and an **Ed25519 signature** made with a private
  key that lives in a file the database never holds (``RELANCE_CHECKPOINT_KEY_FILE``).

What a checkpoint covers is fixed by its horizon. PostgreSQL: every event whose transaction id is below
``pg_snapshot_xmin`` of the writing transaction's snapshot, i.e. every transaction that had finished, so a commit
still in flight is never half covered. SQLite (one writer at a time): every event up to the highest position.

Each checkpoint is stored in the ``checkpoints`` table and can be exported as a JSON file; an attacker who deletes or
rewrites rows of that table is caught by the exported copies (``relance verify --checkpoints DIR``). Recomputing a
checkpoint's signature needs the private key, so rewriting history that a checkpoint covers cannot be hidden.
What happened after the newest checkpoint is only as trustworthy as the database: verify lists it ("appended
since checkpoint N") for an auditor to match against the ERP.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy.exc import IntegrityError

from shared.ledger.db import is_postgres
from shared.ledger.hashing import utc
from shared.ledger.schema import checkpoints, events

FORMAT = "relance-checkpoint/1"
PRIVATE_KEY_NAME = "checkpoint.key"
PUBLIC_KEY_NAME = "checkpoint.pub"
EMPTY_ROOT = hashlib.sha256(b"").hexdigest()

StreamKey = tuple[str, str]
Head = tuple[int, str]  # (version, hash) of a stream's last covered event
Leaf = tuple[str, str, int, str]  # (tenant, customer, version, head hash)


class CheckpointError(ValueError):
    """A checkpoint or a key cannot be used as given; the message says what to fix."""


class CheckpointRefused(CheckpointError):
    """The log no longer matches the previous checkpoint: signing on top of it would bless the change."""

    def __init__(self, number: int, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(
            f"the log no longer matches checkpoint {number}, so no new checkpoint was signed over it; "
            "run `relance verify` to see what changed"
        )


# ------------------------------------------------------------------------------------------------------ keys
def generate_keys(folder: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``folder``: the private key readable by its owner only (mode 0600).

    Existing files are never overwritten: a lost private key means new checkpoints need a new public key, which an
    auditor must be told about, and an overwritten one cannot be recovered.
    """
    folder.mkdir(parents=True, exist_ok=True)
    private_path, public_path = folder / PRIVATE_KEY_NAME, folder / PUBLIC_KEY_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise CheckpointError(f"{path} exists already; relance never overwrites a key (choose another folder)")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(private_pem)
    os.chmod(private_path, 0o600)  # whatever the umask
    public_path.write_bytes(_public_pem(key.public_key()))
    return private_path, public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    raw = _read_key(path, "signing key")
    if os.name == "posix" and stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise CheckpointError(
            f"the checkpoint signing key {path} can be read by other users: `chmod 600 {path}` (or mount it so)"
        )
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CheckpointError(f"{path} is not an Ed25519 key (`relance checkpoint keygen` makes one)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(_read_key(path, "public key"))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise CheckpointError(f"{path} is not an Ed25519 public key (`relance checkpoint keygen` makes one)")
    return key


def _read_key(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read the checkpoint {what} {path}: {exc.strerror}") from None


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its raw bytes."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


# ------------------------------------------------------------------------------------------------------ merkle
def merkle_root(leaves: Iterable[Leaf]) -> str:
    """Root of the Merkle tree over the leaves, in the order given (callers sort them: see :func:`sorted_leaves`).

    Leaves and inner nodes are hashed with different prefixes (0x00, 0x01), so a node can never pass for a leaf;
    an odd node is carried up unchanged rather than paired with itself, so two leaf lists never share a root.
    """
    level = [hashlib.sha256(b"\x00" + orjson.dumps(list(leaf))).digest() for leaf in leaves]
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


def sorted_leaves(heads: dict[StreamKey, Head]) -> list[Leaf]:
    return [(tenant, customer, version, head) for (tenant, customer), (version, head) in sorted(heads.items())]


def order_line(position: int, tx_id: int | None, tenant: str, customer: str, version: int, hash_: str) -> bytes:
    """One event's line of the global order hash."""
    return orjson.dumps([position, tx_id, tenant, customer, version, hash_]) + b"\n"


# ------------------------------------------------------------------------------------------------------ documents
@dataclass(frozen=True, slots=True)
class Horizon:
    """Which events a checkpoint covers: a prefix of the log in replay order."""

    below_tx_id: int | None = None  # PostgreSQL: events of transactions with a smaller id
    through_position: int | None = None  # SQLite: events up to this position

    def covers(self, tx_id: int | None, position: int) -> bool:
        if self.below_tx_id is not None:
            return tx_id is not None and tx_id < self.below_tx_id
        return self.through_position is not None and position <= self.through_position

    def to_json(self) -> dict[str, int]:
        if self.below_tx_id is not None:
            return {"below_tx_id": self.below_tx_id}
        return {"through_position": self.through_position or 0}

    @classmethod
    def from_json(cls, raw: Any) -> Horizon:
        if isinstance(raw, dict) and isinstance(raw.get("below_tx_id"), int) and len(raw) == 1:
            return cls(below_tx_id=raw["below_tx_id"])
        if isinstance(raw, dict) and isinstance(raw.get("through_position"), int) and len(raw) == 1:
            return cls(through_position=raw["through_position"])
        raise ValueError("horizon must be {'below_tx_id': N} or {'through_position': N}")

    @property
    def sort_key(self) -> int:
        return self.below_tx_id if self.below_tx_id is not None else (self.through_position or 0)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    number: int
    created_at: datetime
    horizon: Horizon
    last: tuple[int | None, int] | None  # (tx_id, position) of the last covered event
    newest_recorded_at: datetime | None  # the latest append time among the covered events
    streams: int
    events: int
    merkle_root: str
    order_hash: str
    previous: str | None  # digest of checkpoint number - 1
    key_id: str
    signature: str  # base64 Ed25519 signature of the canonical signed part
    leaves: tuple[Leaf, ...] = field(repr=False)
    source: str = field(default="database", compare=False)  # where it was read: "database" or a file path

    def signed_part(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "number": self.number,
            "created_at": _instant(self.created_at),
            "horizon": self.horizon.to_json(),
            "last": None if self.last is None else list(self.last),
            "newest_recorded_at": None if self.newest_recorded_at is None else _instant(self.newest_recorded_at),
            "streams": self.streams,
            "events": self.events,
            "merkle_root": self.merkle_root,
            "order_hash": self.order_hash,
            "previous": self.previous,
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        return orjson.dumps(self.signed_part(), option=orjson.OPT_SORT_KEYS)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.signed_bytes()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {**self.signed_part(), "signature": self.signature, "leaves": [list(leaf) for leaf in self.leaves]}

    def signature_valid(self, key: Ed25519PublicKey) -> bool:
        try:
            key.verify(base64.b64decode(self.signature, validate=True), self.signed_bytes())
        except (InvalidSignature, ValueError):
            return False
        return True

    @classmethod
    def from_json(cls, raw: Any, source: str) -> Checkpoint:
        """Read a checkpoint document, or raise :class:`CheckpointError` saying what is wrong with it."""
        try:
            if not isinstance(raw, dict) or raw.get("format") != FORMAT:
                raise ValueError(f"not a {FORMAT} document")
            last, newest = raw["last"], raw["newest_recorded_at"]
            leaves = tuple(_leaf(item) for item in raw["leaves"])
            return cls(
                number=_integer(raw["number"]),
                created_at=utc(datetime.fromisoformat(raw["created_at"])),
                horizon=Horizon.from_json(raw["horizon"]),
                last=None if last is None else (_optional_integer(last[0]), _integer(last[1])),
                newest_recorded_at=None if newest is None else utc(datetime.fromisoformat(_text(newest))),
                streams=_integer(raw["streams"]),
                events=_integer(raw["events"]),
                merkle_root=_text(raw["merkle_root"]),
                order_hash=_text(raw["order_hash"]),
                previous=None if raw["previous"] is None else _text(raw["previous"]),
                key_id=_text(raw["key_id"]),
                signature=_text(raw["signature"]),
                leaves=leaves,
                source=source,
            )
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            what = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
            raise CheckpointError(f"{source} is not a valid relance checkpoint: {what}") from None

    @property
    def label(self) -> str:
        return f"checkpoint {self.number} ({self.created_at.isoformat(timespec='seconds')})"


def _instant(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _integer(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _optional_integer(value: Any) -> int | None:
    return None if value is None else _integer(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _leaf(item: Any) -> Leaf:
    tenant, customer, version, head = item
    return (_text(tenant), _text(customer), _integer(version), _text(head))


# ------------------------------------------------------------------------------------------------------ the walk
@dataclass(frozen=True, slots=True)
class Seen:
    """An event as the walk reads it."""

    tenant: str
    customer_id: str
    version: int
    tx_id: int | None
    position: int
    recorded_at: datetime


@dataclass
class Cut:
    """The log as a checkpoint at some horizon sees it, computed now."""

    events: int
    last: tuple[int | None, int] | None
    newest_recorded_at: datetime | None
    order_hash: str
    heads: dict[StreamKey, Head]  # live view during the walk: use it inside the callback only


def walk(
    conn: Connection,
    horizons: Sequence[Horizon],
    at_horizon: Callable[[int, Cut], None],
    *,
    scope: tuple[str | None, str | None] = (None, None),
    on_event: Callable[[Seen, int], None] | None = None,
) -> Cut:
    """Read the log once in replay order and call ``at_horizon(i, cut)`` as each horizon is passed.

    ``horizons`` must be sorted by coverage (each covers what the previous one does). ``on_event(seen, passed)``
    sees every event with the number of horizons already passed, i.e. of those that do not cover it.
    Only light columns are read, in one streamed SELECT. Returns the cut of the whole log (its heads: the streams'
    latest versions). ``scope`` restricts the walk to a tenant or a stream; the order hash then means nothing.
    """
    postgres = is_postgres(conn)
    query = select(
        events.c.position,
        events.c.tx_id,
        events.c.tenant,
        events.c.customer_id,
        events.c.version,
        events.c.hash,
        events.c.recorded_at,
    )
    tenant, customer = scope
    if tenant is not None:
        query = query.where(events.c.tenant == tenant)
    if customer is not None:
        query = query.where(events.c.customer_id == customer)
    query = query.order_by(events.c.tx_id, events.c.position) if postgres else query.order_by(events.c.position)
    hasher = hashlib.sha256()
    heads: dict[StreamKey, Head] = {}
    count = 0
    last: tuple[int | None, int] | None = None
    newest: datetime | None = None
    passed = 0

    def cut() -> Cut:
        return Cut(count, last, newest, hasher.hexdigest(), heads)

    result = conn.execute(query, execution_options={"stream_results": True, "yield_per": 5000})
    for position, tx_id, row_tenant, row_customer, version, hash_, recorded_at in result:
        while passed < len(horizons) and not horizons[passed].covers(tx_id, position):
            at_horizon(passed, cut())
            passed += 1
        recorded_at = utc(recorded_at)
        if on_event is not None:
            on_event(Seen(row_tenant, row_customer, version, tx_id, position, recorded_at), passed)
        newest = recorded_at if newest is None else max(newest, recorded_at)
        hasher.update(order_line(position, tx_id, row_tenant, row_customer, version, hash_))
        key = (row_tenant, row_customer)
        known = heads.get(key)
        if known is None or version > known[0]:
            heads[key] = (version, hash_)
        count += 1
        last = (tx_id, position)
    while passed < len(horizons):
        at_horizon(passed, cut())
        passed += 1
    return cut()


def compare_cut(checkpoint: Checkpoint, cut: Cut, *, scope: tuple[str | None, str | None] = (None, None)) -> list[str]:
    """What differs between a checkpoint and the log as it covers it now; empty if the covered history is intact."""
    problems: list[str] = []
    label = checkpoint.label
    tenant, customer = scope
    whole = tenant is None and customer is None

    def in_scope(key: StreamKey) -> bool:
        return (tenant is None or key[0] == tenant) and (customer is None or key[1] == customer)

    recorded = {(t, c): (v, h) for t, c, v, h in checkpoint.leaves if in_scope((t, c))}
    for key, (version, head) in recorded.items():
        where = f"{key[0]}/{key[1]}"
        now = cut.heads.get(key)
        if now is None:
            problems.append(
                f"{where}: {label} recorded it at version {version}; the log now has none of its events in that "
                "range (stream removed, or its events moved out of the checkpointed range)"
            )
        elif now[0] != version:
            problems.append(
                f"{where}: {label} recorded it at version {version}; the log now has version {now[0]} in that range "
                f"({'events removed' if now[0] < version else 'events inserted into checkpointed history'})"
            )
        elif now[1] != head:
            problems.append(
                f"{where} v{version}: history rewritten since {label} (head hash {head[:12]}… then, {now[1][:12]}… now)"
            )
    for key in sorted(k for k in cut.heads if k not in recorded and in_scope(k)):
        problems.append(
            f"{key[0]}/{key[1]}: {cut.heads[key][0]} event(s) inside the range of {label}, which did not cover this "
            "stream (events inserted into checkpointed history)"
        )
    if whole:
        if cut.events != checkpoint.events:
            problems.append(f"{label} covered {checkpoint.events} event(s); the log now has {cut.events} in its range")
        if cut.order_hash != checkpoint.order_hash:
            problems.append(
                f"{label}: the global order of the events it covers changed (positions or transaction ids moved, "
                "or events inserted or removed)"
            )
        if not problems and merkle_root(sorted_leaves(cut.heads)) != checkpoint.merkle_root:
            problems.append(f"{label}: the Merkle root of the streams' heads differs")
    return problems


# ------------------------------------------------------------------------------------------------------ storage
def stored(conn: Connection) -> list[Checkpoint]:
    """Every checkpoint the database holds, oldest first."""
    rows = conn.execute(select(checkpoints.c.number, checkpoints.c.document).order_by(checkpoints.c.number))
    return [Checkpoint.from_json(document, f"checkpoint {number} in the database") for number, document in rows]


def summaries(engine: Engine) -> list[dict[str, Any]]:
    """The checkpoints of the database without their leaves (``relance checkpoint list``)."""
    columns = [c for c in checkpoints.c if c.name != "document"]
    with engine.connect() as conn:
        rows = conn.execute(select(*columns).order_by(checkpoints.c.number)).mappings()
        return [{**row, "created_at": utc(row["created_at"])} for row in rows]


def read_files(path: Path) -> list[Checkpoint]:
    """Checkpoints exported to a file, or to the ``*.json`` files of a folder."""
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise CheckpointError(f"{path} holds no checkpoint file (*.json)")
    elif path.is_file():
        files = [path]
    else:
        raise CheckpointError(f"{path}: no such file or folder of checkpoints")
    found = []
    for file in files:
        try:
            raw = orjson.loads(file.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise CheckpointError(f"{file} is not a readable JSON checkpoint: {exc}") from None
        found.append(Checkpoint.from_json(raw, str(file)))
    return found


def file_name(checkpoint: Checkpoint) -> str:
    return f"checkpoint-{checkpoint.number:06d}.json"


def export(checkpoint: Checkpoint, target: Path) -> Path:
    """Write the checkpoint as JSON to ``target`` (a folder: under its canonical name); refuses to overwrite."""
    path = target / file_name(checkpoint) if target.is_dir() else target
    try:
        with path.open("xb") as out:
            out.write(orjson.dumps(checkpoint.to_json(), option=orjson.OPT_INDENT_2) + b"\n")
    except FileExistsError:
        raise CheckpointError(f"{path} exists already; an exported checkpoint is never overwritten") from None
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc.strerror}") from None
    return path


def write(
    engine: Engine, key: Ed25519PrivateKey, *, now: datetime | None = None, settle_seconds: float = 10.0
) -> Checkpoint:
    """Compute, sign and store the next checkpoint, after checking the log still matches the previous one.

    One transaction (a repeatable-read snapshot on PostgreSQL): the horizon, the walk and the insert see the same
    log. The walk reads light columns only; it does not recompute the chain (that is ``relance verify``'s work), but
    it refuses to sign if the history the previous checkpoint covers changed.
    """
    postgres = is_postgres(engine)
    if postgres:
        _settle(engine, settle_seconds)
    with engine.connect() as conn:
        if postgres:
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin():
            if postgres:
                horizon = Horizon(below_tx_id=int(conn.execute(_XMIN).scalar_one()))
            else:
                through = conn.execute(select(func.max(events.c.position))).scalar_one()
                horizon = Horizon(through_position=int(through or 0))
            previous = _latest(conn)
            horizons = [horizon] if previous is None else [previous.horizon, horizon]
            if previous is not None and previous.horizon.sort_key > horizon.sort_key:
                raise CheckpointError(
                    f"{previous.label} covers more of the log than exists now: the log or the checkpoint was changed; "
                    "run `relance verify`"
                )
            taken: dict[str, Any] = {}

            def at_horizon(index: int, cut: Cut) -> None:
                if previous is not None and index == 0:
                    problems = compare_cut(previous, cut)
                    if problems:
                        raise CheckpointRefused(previous.number, problems)
                    return
                taken.update(
                    events=cut.events,
                    last=cut.last,
                    newest_recorded_at=cut.newest_recorded_at,
                    order_hash=cut.order_hash,
                    leaves=tuple(sorted_leaves(cut.heads)),
                )

            walk(conn, horizons, at_horizon)
            public = key.public_key()
            unsigned = Checkpoint(
                number=1 if previous is None else previous.number + 1,
                created_at=(now or datetime.now(UTC)).astimezone(UTC),
                horizon=horizon,
                last=taken["last"],
                newest_recorded_at=taken["newest_recorded_at"],
                streams=len(taken["leaves"]),
                events=taken["events"],
                merkle_root=merkle_root(taken["leaves"]),
                order_hash=taken["order_hash"],
                previous=None if previous is None else previous.digest,
                key_id=key_id(public),
                signature="",
                leaves=taken["leaves"],
            )
            signature = base64.b64encode(key.sign(unsigned.signed_bytes())).decode()
            checkpoint = replace(unsigned, signature=signature)
            try:
                conn.execute(
                    checkpoints.insert().values(
                        number=checkpoint.number,
                        created_at=checkpoint.created_at,
                        digest=checkpoint.digest,
                        streams=checkpoint.streams,
                        events=checkpoint.events,
                        merkle_root=checkpoint.merkle_root,
                        key_id=checkpoint.key_id,
                        document=checkpoint.to_json(),
                    )
                )
            except IntegrityError:
                raise CheckpointError(
                    f"another checkpoint {checkpoint.number} was written meanwhile; run the command again"
                ) from None
    return checkpoint


def _settle(engine: Engine, seconds: float) -> None:
    """Wait, up to ``seconds``, until every event committed so far lies below the server's oldest running transaction.

    The horizon of a PostgreSQL checkpoint is ``pg_snapshot_xmin``, which any transaction running anywhere on the
    server holds back; a short wait lets the transactions in flight when the command started finish, so the
    checkpoint covers everything committed before it. Past the wait, it covers less; the next one covers the rest.
    """
    deadline = time.monotonic() + seconds
    with engine.connect() as conn:
        newest = conn.execute(select(func.max(events.c.tx_id))).scalar()
        while newest is not None:
            conn.rollback()  # a fresh snapshot each time
            if conn.execute(_XMIN).scalar_one() > newest or time.monotonic() >= deadline:
                return
            time.sleep(0.05)


_XMIN = text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")


def _latest(conn: Connection) -> Checkpoint | None:
    row = conn.execute(
        select(checkpoints.c.number, checkpoints.c.document).order_by(checkpoints.c.number.desc()).limit(1)
    ).first()
    return None if row is None else Checkpoint.from_json(row.document, f"checkpoint {row.number} in the database")


# ------------------------------------------------------------------------------------------------------ reconciling
@dataclass
class Reconciled:
    """The checkpoints to check the log against, and what is wrong with the set itself."""

    checkpoints: list[Checkpoint]  # one per number, sorted, trusted as far as their signature goes
    problems: list[str]
    warnings: list[str]


def reconcile(
    in_database: Sequence[Checkpoint], exported: Sequence[Checkpoint], public_key: Ed25519PublicKey | None
) -> Reconciled:
    """Match the database's checkpoints with the exported copies and check each one's signature and leaves.

    An exported copy is what counts when both exist (it is outside the attacker's reach); a checkpoint missing from
    the database, a copy that differs, a number skipped or a broken link to the previous checkpoint are problems.
    """
    problems: list[str] = []
    warnings: list[str] = []
    by_number: dict[int, Checkpoint] = {}
    database = {c.number: c for c in in_database}
    files: dict[int, Checkpoint] = {}
    for copy in exported:
        other = files.get(copy.number)
        if other is not None and other.digest != copy.digest:
            problems.append(f"checkpoint {copy.number}: the exported copies {other.source} and {copy.source} differ")
        files.setdefault(copy.number, copy)
    for number, copy in files.items():
        kept = database.get(number)
        if kept is None:
            problems.append(f"checkpoint {number} ({copy.source}) is missing from the database")
        elif kept.to_json() != copy.to_json():
            problems.append(f"checkpoint {number} in the database differs from the exported copy {copy.source}")
        by_number[number] = copy
    for number, kept in database.items():
        by_number.setdefault(number, kept)
    numbers = sorted(by_number)
    if numbers:
        absent = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        for number in absent:
            problems.append(f"checkpoint {number} is missing (neither in the database nor in the exported files)")
    if public_key is None and numbers:
        warnings.append(
            f"{len(numbers)} checkpoint signature(s) NOT checked: no public key (give --public-key or set "
            "RELANCE_CHECKPOINT_PUBLIC_KEY_FILE); the checkpoints are only as trustworthy as the database"
        )
    trusted: list[Checkpoint] = []
    for number in numbers:
        checkpoint = by_number[number]
        where = f"checkpoint {number} ({checkpoint.source})"
        if public_key is not None:
            if checkpoint.key_id != key_id(public_key):
                problems.append(
                    f"{where} was signed with another key ({checkpoint.key_id}, expected {key_id(public_key)})"
                )
                continue
            if not checkpoint.signature_valid(public_key):
                problems.append(f"{where}: the signature does not match its content (the checkpoint was altered)")
                continue
        if merkle_root(checkpoint.leaves) != checkpoint.merkle_root or len(checkpoint.leaves) != checkpoint.streams:
            problems.append(f"{where}: its list of streams does not match its signed Merkle root (altered)")
            continue
        if list(checkpoint.leaves) != sorted(checkpoint.leaves):
            problems.append(f"{where}: its list of streams is not in canonical order (altered)")
            continue
        before = by_number.get(number - 1)
        if before is not None and checkpoint.previous != before.digest:
            problems.append(f"{where} does not follow checkpoint {number - 1} (its link to the previous one differs)")
        trusted.append(checkpoint)
    trusted.sort(key=lambda c: (c.horizon.sort_key, c.number))
    return Reconciled(trusted, problems, warnings)


def iter_since(latest: Checkpoint, heads: dict[StreamKey, Head]) -> Iterator[tuple[StreamKey, int, int]]:
    """(stream, version at the checkpoint, version now) of every stream appended to since the checkpoint."""
    recorded = {(t, c): v for t, c, v, _ in latest.leaves}
    for key in sorted(heads):
        then = recorded.get(key, 0)
        if heads[key][0] > then:
            yield key, then, heads[key][0]
