"""Checkpoint documents without a database: the Merkle root, the signature, the keys, and reconciling copies."""

from __future__ import annotations

import base64
import stat
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.ledger import checkpoints as cp

LEAVES = (("acme-fr", "C-1", 3, "a" * 64), ("acme-fr", "C-2", 1, "b" * 64), ("acme-fr", "C-3", 7, "c" * 64))
KEY = Ed25519PrivateKey.generate()


def signed(number: int = 1, previous: str | None = None, leaves: tuple[cp.Leaf, ...] = LEAVES) -> cp.Checkpoint:
    unsigned = cp.Checkpoint(
        number=number,
        created_at=datetime(2026, 12, 1, 8, number, tzinfo=UTC),
        horizon=cp.Horizon(below_tx_id=1000 + number),
        last=(999 + number, 40 + number),
        newest_recorded_at=datetime(2026, 12, 1, 7, number, tzinfo=UTC),
        streams=len(leaves),
        events=11,
        merkle_root=cp.merkle_root(leaves),
        order_hash="d" * 64,
        previous=previous,
        key_id=cp.key_id(KEY.public_key()),
        signature="",
        leaves=leaves,
    )
    return replace(unsigned, signature=base64.b64encode(KEY.sign(unsigned.signed_bytes())).decode())


# ---------------------------------------------------------------------------------------------------- merkle
def test_the_merkle_root_changes_with_any_field_of_any_leaf() -> None:
    root = cp.merkle_root(LEAVES)
    for index in range(len(LEAVES)):
        for field in range(4):
            changed: list[Any] = list(LEAVES[index])
            changed[field] = changed[field] + 1 if isinstance(changed[field], int) else changed[field] + "x"
            leaves = [*LEAVES[:index], tuple(changed), *LEAVES[index + 1 :]]
            assert cp.merkle_root(leaves) != root, (index, field)  # type: ignore[arg-type]


def test_an_odd_leaf_is_carried_up_so_a_duplicated_leaf_does_not_give_the_same_root() -> None:
    assert cp.merkle_root(LEAVES) != cp.merkle_root((*LEAVES, LEAVES[-1]))
    assert cp.merkle_root(LEAVES[:1]) != cp.merkle_root(LEAVES[:2])
    assert cp.merkle_root(()) == cp.EMPTY_ROOT


def test_leaves_are_sorted_by_tenant_then_customer_in_code_point_order() -> None:
    heads = {("b", "1"): (1, "x"), ("a", "é"): (2, "y"), ("a", "Z"): (3, "z")}
    assert [leaf[:2] for leaf in cp.sorted_leaves(heads)] == [("a", "Z"), ("a", "é"), ("b", "1")]


# ---------------------------------------------------------------------------------------------------- documents
def test_a_document_read_back_from_json_is_the_same_checkpoint_and_its_signature_holds() -> None:
    checkpoint = signed()
    again = cp.Checkpoint.from_json(orjson.loads(orjson.dumps(checkpoint.to_json())), "file.json")
    assert again == checkpoint and again.digest == checkpoint.digest
    assert again.signature_valid(KEY.public_key())


@pytest.mark.parametrize(
    "change",
    [
        {"events": 12},
        {"order_hash": "e" * 64},
        {"newest_recorded_at": None},
        {"horizon": cp.Horizon(below_tx_id=5000)},
        {"previous": "f"},
    ],
)
def test_any_change_to_the_signed_part_breaks_the_signature(change: dict[str, object]) -> None:
    assert not replace(signed(), **change).signature_valid(KEY.public_key())  # type: ignore[arg-type]


def test_another_key_does_not_verify_the_signature() -> None:
    assert not signed().signature_valid(Ed25519PrivateKey.generate().public_key())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"format": "something else"}, "not a relance-checkpoint/1 document"),
        ({**signed().to_json(), "number": "1"}, "expected an integer, got '1'"),
        ({k: v for k, v in signed().to_json().items() if k != "leaves"}, "missing field 'leaves'"),
        ({**signed().to_json(), "horizon": {"below_tx_id": 1, "through_position": 2}}, "horizon must be"),
    ],
)
def test_a_malformed_document_is_refused_saying_what_is_wrong(document: object, message: str) -> None:
    with pytest.raises(cp.CheckpointError, match=r"x\.json is not a valid relance checkpoint: ") as refused:
        cp.Checkpoint.from_json(document, "x.json")
    assert message in str(refused.value)


# ---------------------------------------------------------------------------------------------------- keys
def test_keygen_writes_a_private_key_only_its_owner_can_read_and_never_overwrites(tmp_path: Path) -> None:
    private, public = cp.generate_keys(tmp_path / "keys")
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    key = cp.load_private_key(private)
    assert cp.key_id(cp.load_public_key(public)) == cp.key_id(key.public_key())
    with pytest.raises(cp.CheckpointError, match="exists already; relance never overwrites a key"):
        cp.generate_keys(tmp_path / "keys")


def test_a_signing_key_that_others_can_read_is_refused(tmp_path: Path) -> None:
    private, public = cp.generate_keys(tmp_path)
    private.chmod(0o644)
    with pytest.raises(cp.CheckpointError, match="can be read by other users: `chmod 600"):
        cp.load_private_key(private)
    with pytest.raises(cp.CheckpointError, match="is not an unencrypted PEM private key"):
        public.chmod(0o600)
        cp.load_private_key(public)
    with pytest.raises(cp.CheckpointError, match="cannot read the checkpoint public key"):
        cp.load_public_key(tmp_path / "missing.pub")


# ---------------------------------------------------------------------------------------------------- reconciling
def test_copies_that_match_the_database_and_link_up_raise_nothing() -> None:
    one = signed(1)
    two = signed(2, previous=one.digest)
    result = cp.reconcile([one, two], [replace(one, source="a.json"), replace(two, source="b.json")], KEY.public_key())
    assert (result.problems, result.warnings) == ([], [])
    assert [c.number for c in result.checkpoints] == [1, 2]


def test_a_checkpoint_missing_from_the_database_or_differing_from_its_copy_is_named() -> None:
    one = signed(1)
    two = signed(2, previous=one.digest)
    forged = signed(1, leaves=LEAVES[:2])
    result = cp.reconcile([forged], [replace(one, source="1.json"), replace(two, source="2.json")], KEY.public_key())
    assert result.problems == [
        "checkpoint 1 in the database differs from the exported copy 1.json",
        "checkpoint 2 (2.json) is missing from the database",
    ]
    assert [c.source for c in result.checkpoints] == ["1.json", "2.json"]  # the copies are what count


def test_a_gap_in_the_numbers_and_a_broken_link_are_named() -> None:
    one, three = signed(1), signed(3, previous="0" * 64)
    two = signed(2, previous="1" * 64)
    assert cp.reconcile([one, three], [], KEY.public_key()).problems == [
        "checkpoint 2 is missing (neither in the database nor in the exported files)"
    ]
    assert cp.reconcile([one, two], [], KEY.public_key()).problems == [
        "checkpoint 2 (database) does not follow checkpoint 1 (its link to the previous one differs)"
    ]


def test_leaves_that_do_not_hash_to_the_signed_root_are_refused() -> None:
    tampered = replace(signed(), leaves=LEAVES[:2])
    result = cp.reconcile([tampered], [], None)
    assert result.problems == [
        "checkpoint 1 (database): its list of streams does not match its signed Merkle root (altered)"
    ]
    assert result.checkpoints == [] and "NOT checked" in result.warnings[0]
