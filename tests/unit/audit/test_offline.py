"""The offline verifier is a second implementation: it must agree with the ledger's hashing, and share no code."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from services.audit import offline
from shared.ledger import checkpoints as cp
from shared.ledger.hashing import HASHED_FIELDS, canonical, event_hash

SOURCE = Path(offline.__file__)

texts = st.text(st.characters(codec="utf-8"), max_size=12)  # orjson refuses lone surrogates
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4), max_leaves=12
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.sampled_from([UTC])
) | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))  # SQLite gives naive ones
hashes = st.text("0123456789abcdef", min_size=64, max_size=64)


@st.composite
def events(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "tenant": draw(texts),
        "customer_id": draw(texts),
        "version": draw(st.integers(min_value=1, max_value=2**31)),
        "event_id": draw(texts),
        "event_type": draw(texts),
        "data": draw(st.dictionaries(texts, values, max_size=5)),
        "metadata": draw(st.dictionaries(texts, values, max_size=3)),
        "occurred_at": draw(instants),
        "recorded_at": draw(instants),
        "prev_hash": draw(hashes),
    }


def exported_line(fields: dict[str, Any]) -> bytes:
    """An event as `relance audit export` writes it: the hashed fields (instants as text) plus its hash."""
    line = dict(fields)
    for name in ("occurred_at", "recorded_at"):
        moment = line[name] if line[name].tzinfo else line[name].replace(tzinfo=UTC)
        line[name] = moment.astimezone(UTC).isoformat(timespec="microseconds")
    line["hash"] = event_hash(**fields)
    return orjson.dumps(line, option=orjson.OPT_SORT_KEYS)


@settings(max_examples=400, deadline=None)
@given(events())
def test_the_offline_hash_of_an_exported_event_is_the_ledger_s_hash(fields: dict[str, Any]) -> None:
    line = offline.loads(exported_line(fields))

    assert offline.event_hash(line) == line["hash"] == event_hash(**fields)
    assert offline.canonical({name: line[name] for name in HASHED_FIELDS}) == canonical(**fields)


@settings(max_examples=300, deadline=None)
@given(events(), st.sampled_from(["data", "metadata", "event_type", "version", "recorded_at"]))
def test_an_exported_event_changed_in_any_field_no_longer_matches_its_hash(fields: dict[str, Any], name: str) -> None:
    line = offline.loads(exported_line(fields))
    line[name] = {"changed": True} if name in ("data", "metadata") else f"{line[name]}x"
    assert offline.event_hash(line) != line["hash"]


@settings(max_examples=200, deadline=None)
@given(st.recursive(scalars.filter(lambda v: not isinstance(v, float)), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(texts, inner, max_size=4), max_leaves=12))  # fmt: skip
def test_canonical_json_is_what_the_docstring_says_python_s_json_writes(value: Any) -> None:
    documented = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert offline.canonical(value) == documented == orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(texts, texts, st.integers(min_value=1, max_value=2**31), hashes), max_size=17))
def test_the_offline_merkle_root_is_the_checkpoints_one(leaves: list[tuple[str, str, int, str]]) -> None:
    ordered = sorted(leaves)
    assert offline.merkle_root([list(leaf) for leaf in ordered]) == cp.merkle_root(ordered)


def test_a_checkpoint_signature_verifies_offline_over_the_documented_signed_part() -> None:
    key = Ed25519PrivateKey.generate()
    leaves = (("acme-fr", "C-0042", 7, "a" * 64), ("acme-fr", "C-0043", 2, "b" * 64))
    unsigned = cp.Checkpoint(
        number=3,
        created_at=datetime(2026, 10, 5, 8, tzinfo=UTC),
        horizon=cp.Horizon(through_position=9),
        last=(None, 9),
        newest_recorded_at=datetime(2026, 10, 5, 7, 59, tzinfo=UTC) - timedelta(microseconds=1),
        streams=2,
        events=9,
        merkle_root=cp.merkle_root(leaves),
        order_hash="c" * 64,
        previous="d" * 64,
        key_id=cp.key_id(key.public_key()),
        signature="",
        leaves=leaves,
    )
    document = offline.loads(orjson.dumps(unsigned.to_json(), option=orjson.OPT_INDENT_2))
    signed_part = {name: document[name] for name in offline.CHECKPOINT_SIGNED}

    assert offline.canonical(signed_part) == unsigned.signed_bytes()
    signature = key.sign(unsigned.signed_bytes())
    key.public_key().verify(signature, offline.canonical(signed_part))
    assert base64.b64encode(signature)
    assert offline.key_id(key.public_key()) == cp.key_id(key.public_key())


def test_the_offline_verifier_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(SOURCE.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "a relative import"
            imported.add((node.module or "").split(".")[0])
    allowed = set(sys.stdlib_module_names) | {"__future__", "cryptography"}
    assert "json" in imported and "cryptography" in imported
    assert imported <= allowed, imported - allowed


def test_identifiers_become_file_names_that_cannot_leave_their_folder() -> None:
    assert offline.safe_name("<esc-cmd-1@mail.example.com>") == "esc-cmd-1@mail.example.com"
    assert offline.safe_name("C/../0042 é") == "C_.._0042__"
    assert offline.safe_name("..") == "__"
    assert offline.safe_name("") == "_"


def test_a_key_twice_in_an_object_is_refused() -> None:
    with pytest.raises(ValueError, match="the key 'a' appears twice in an object"):
        offline.loads(b'{"a":1,"a":2}')


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def _listed(files: dict[str, bytes], **manifest: Any) -> dict[str, bytes]:
    """The files with a manifest listing them (and its hash), as a forger who knows the format would write."""
    listed = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)} for name, data in files.items()}
    raw = json.dumps({"format": offline.FORMAT, "tenant": "acme-fr", "files": listed, **manifest}).encode()
    return {
        **files,
        "manifest.json": raw,
        "manifest.sha256": f"{hashlib.sha256(raw).hexdigest()}  manifest.json\n".encode(),
    }


HOSTILE = {
    "no manifest": {"report.txt": b"hello"},
    "manifest not JSON": {"manifest.json": b"{nope", "manifest.sha256": b""},
    "manifest too deep": {"manifest.json": b"[" * 100_000 + b"]" * 100_000},
    "manifest not an object": _listed({}) | {"manifest.json": b"[1, 2]"},
    "period of the wrong type": _listed({}, period=[1], streams=[]),
    "streams of the wrong type": _listed({}, streams={"a": 1}),
    "an events line too deep": _listed(
        {"events/C.jsonl": b"[" * 100_000 + b"]" * 100_000},
        streams=[{"customer_id": "C", "file": "events/C.jsonl", "versions": [1, 1], "in_period": None}],
    ),
    "an events line without its fields": _listed(
        {"events/C.jsonl": b'{"version": "1"}\n\n[]\n'},
        streams=[{"customer_id": "C", "file": "events/C.jsonl", "versions": [1, 0], "in_period": None}],
    ),
    "a checkpoint and a key that are junk": _listed(
        {"checkpoints/1.json": b'{"format": "relance-checkpoint/1", "number": 1, "leaves": 3}', "keys/x.pub": b"junk"},
        streams=[],
    ),
    "a name outside the bundle": _listed({"../evil": b"x"}, streams=[]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_a_hostile_or_damaged_bundle_is_not_valid_and_never_crashes_the_verifier(case: str, tmp_path: Path) -> None:
    verdict = offline.verify_bundle(_zip(tmp_path / "bundle.zip", HOSTILE[case]))
    assert not verdict.valid and verdict.headline().startswith("NOT VALID: ")
    assert all(finding.file and finding.problem for finding in verdict.findings)
