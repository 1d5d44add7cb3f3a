"""A checkpoint as a signed document: its fields, its canonical bytes, its Merkle root and how it is read back.

The signed part serialises with sorted keys (``Checkpoint.signed_bytes``); a document read with ``Checkpoint.from_json``
is checked field by field and a malformed one raises :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.ledger.hashing import utc

FORMAT = "relance-checkpoint/1"
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
