"""Matching the database's checkpoints with their exported copies, and checking each one's signature and links."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from shared.ledger.checkpoints.document import Checkpoint, Head, StreamKey, merkle_root
from shared.ledger.checkpoints.keys import key_id


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
