"""``relance audit verify``: an evidence bundle checked offline, by a second implementation of relance's rules.

This module imports only Python's standard library and ``cryptography`` (for Ed25519): no database, no settings, no
other relance module. It re-implements, from the rules written below, what relance's ledger computes, so that a
bundle is checked by code that shares nothing with the code that wrote the log. An auditor can implement these
rules again in any language.

**The bundle** is a ZIP archive (``relance-audit-bundle/1``)::

    manifest.json          tenant, customers, period, created_at, relance version, and for every other file
                           (manifest.sha256 apart) its SHA-256 and size; ``streams`` says, per customer, which
                           file holds its events, the versions exported and those recorded within the period
    manifest.sha256        "<SHA-256 of manifest.json>  manifest.json" (the format of ``sha256sum -c``)
    events/<name>.jsonl    one customer's events from version 1, one JSON object per line, in version order
    messages/<name>.eml    the exact bytes of each e-mail the log records within the period
    letters/<name>.pdf     the exact bytes of each letter the log records within the period
    checkpoints/<n>.json   the signed checkpoints that anchor the exported events, as relance exports them
    keys/<key id>.pub      the public key(s) the checkpoints are signed with (PEM)
    report.txt, .json      what relance's own verification said at export time, counts, period, who and when

``<name>`` is the identifier (customer id, Message-ID without its angle brackets, letter id) with every character
other than ``A-Z a-z 0-9 . _ @ + = -`` replaced by ``_``.

**Canonical JSON** (what every hash and signature covers): UTF-8; objects with their keys sorted by Unicode code
point; no white space at all; strings with only ``"``, ``\\`` and the control characters U+0000 to U+001F escaped
(``\\b \\t \\n \\f \\r``, the others as ``\\u00XX`` with lower-case hex digits), every other character as itself;
integers in decimal; ``true``, ``false``, ``null``. A number with a fraction or an exponent is written exactly as it
appears in the bundle's line (relance writes its amounts as decimal strings; its events hold no such number).

**An event's hash** is the lower-case hex SHA-256 of the canonical JSON of the object made of the event's ten fields
``tenant, customer_id, version, event_id, event_type, data, metadata, occurred_at, recorded_at, prev_hash`` (the two
instants as ISO 8601 in UTC with microseconds, e.g. ``2026-10-05T08:00:00.000000+00:00``). A stream's events have
versions 1, 2, 3... without a gap; the first one's ``prev_hash`` is 64 zeros, each later one's is the ``hash`` of
the event before it. Each line of an events file is that object plus ``hash``.

**A checkpoint** is signed with Ed25519 over the canonical JSON of its signed part: every field of its document but
``signature`` (base64) and ``leaves``. Its ``merkle_root`` is computed from its ``leaves``, the list of every
stream's ``[tenant, customer, version, head hash]`` sorted by (tenant, customer): each leaf is hashed as SHA-256 of
the byte 0x00 followed by the leaf's compact JSON (``["acme-fr","C-0042",17,"ab…"]``, UTF-8, no white space); then,
level by level, each pair of neighbours is hashed as SHA-256 of 0x01 followed by both 32-byte digests, and an odd
last node goes up unchanged, until one digest is left (hex). An empty list's root is the SHA-256 of nothing. A key's
id is the first 16 hex digits of the SHA-256 of its raw 32 bytes. ``previous`` is the SHA-256 (hex) of the previous
checkpoint's signed part.

**What is checked.** The manifest (every file listed is there with its size and hash, nothing is there unlisted,
manifest.sha256 matches); each stream's chain (contiguous versions from 1, each ``prev_hash``, each hash
recomputed); each checkpoint's signature, Merkle root and link to the previous one, and that every stream of the
bundle it records is in the bundle at the version and hash it signed (and, for a whole tenant's bundle up to the
export, that every stream of the tenant it records is in the bundle); every e-mail's and letter's SHA-256 against
the hash the log recorded for it, and that every such hash recorded within the period has its file in the bundle.
The manifest only shows that the bundle is complete as written: anyone can rewrite a manifest. What proves the
events were not changed is their chain anchored by checkpoints signed with a key the company published.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "relance-audit-bundle/1"
CHECKPOINT_FORMAT = "relance-checkpoint/1"
MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
GENESIS = "0" * 64
HASHED_FIELDS = (
    "tenant",
    "customer_id",
    "version",
    "event_id",
    "event_type",
    "data",
    "metadata",
    "occurred_at",
    "recorded_at",
    "prev_hash",
)
CHECKPOINT_SIGNED = (
    "format",
    "number",
    "created_at",
    "horizon",
    "last",
    "newest_recorded_at",
    "streams",
    "events",
    "merkle_root",
    "order_hash",
    "previous",
    "key_id",
)
# What reading a damaged or hostile archive can raise.
_UNREADABLE = (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError, EOFError, zlib.error)
_UNSAFE = re.compile(r"[^A-Za-z0-9._@+=-]")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def safe_name(identifier: str) -> str:
    """The file name an identifier gets in the bundle (see the module docstring)."""
    name = _UNSAFE.sub("_", identifier.strip().removeprefix("<").removesuffix(">"))
    return name if name not in ("", ".", "..") else name.replace(".", "_") or "_"


# ---------------------------------------------------------------------------------------------------- canonical JSON
class Number(str):
    """A number with a fraction or an exponent, kept as written (see "Canonical JSON")."""


def canonical(value: Any) -> bytes:
    """The canonical JSON of a value read with :func:`loads`."""
    out: list[str] = []
    _write(value, out)
    return "".join(out).encode("utf-8")


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Number):
        out.append(str.__str__(value))
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(str(int(value)))
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        for index, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise TypeError(f"object key {key!r} is not a string")
            if index:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


def _string(text: str) -> str:
    parts = ['"']
    for char in text:
        if char in _ESCAPES:
            parts.append(_ESCAPES[char])
        elif char < " ":
            parts.append(f"\\u{ord(char):04x}")
        else:
            parts.append(char)
    parts.append('"')
    return "".join(parts)


class DuplicateKey(ValueError):
    pass


def loads(raw: bytes | str) -> Any:
    """JSON as the bundle holds it: a key twice in an object is an error, numbers with a fraction stay as written."""

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, value in items:
            if key in found:
                raise DuplicateKey(f"the key {key!r} appears twice in an object")
            found[key] = value
        return found

    def constant(name: str) -> Any:
        raise ValueError(f"{name} is not a JSON number")

    return json.loads(raw, object_pairs_hook=pairs, parse_float=Number, parse_constant=constant)


def event_hash(event: Mapping[str, Any]) -> str:
    """The hash of an event (its ten hashed fields; see "An event's hash")."""
    return hashlib.sha256(canonical({name: event[name] for name in HASHED_FIELDS})).hexdigest()


def merkle_root(leaves: Iterable[list[Any]]) -> str:
    level = [
        hashlib.sha256(b"\x00" + json.dumps(list(leaf), separators=(",", ":"), ensure_ascii=False).encode()).digest()
        for leaf in leaves
    ]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


def key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_key(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


# ---------------------------------------------------------------------------------------------------- the verdict
@dataclass(frozen=True, slots=True)
class Finding:
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


@dataclass(slots=True)
class Verdict:
    bundle: str
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    tenant: str = ""
    period: str = ""
    keys: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.findings

    def add(self, file: str, problem: str) -> None:
        self.findings.append(Finding(file, problem))

    def named(self) -> set[str]:
        """The files some finding names already."""
        return {finding.file for finding in self.findings}

    def headline(self) -> str:
        if not self.valid:
            return (
                f"NOT VALID: {len(self.findings)} problem(s) found in {self.bundle}; "
                "the evidence below cannot be relied on as it is"
            )
        c = self.counts
        signed = f"{c.get('checkpoints', 0)} signed checkpoint(s)"
        if self.keys:
            signed += f" (key {', '.join(self.keys)})"
        return (
            f"VALID: {self.bundle} of tenant {self.tenant} ({self.period}) is complete and unchanged: "
            f"{c.get('streams', 0)} customer(s), {c.get('events', 0)} event(s) whose hash chains hold, "
            f"{c.get('messages', 0)} e-mail(s) and {c.get('letters', 0)} letter(s) matching the hashes the log "
            f"recorded, {signed}"
        )

    def text(self) -> str:
        lines = [self.headline(), *(str(finding) for finding in self.findings)]
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "verdict": self.headline(),
            "bundle": self.bundle,
            "tenant": self.tenant,
            "findings": [{"file": f.file, "problem": f.problem} for f in self.findings],
            "notes": self.notes,
            "counts": self.counts,
            "keys": self.keys,
        }


# ---------------------------------------------------------------------------------------------------- verify
@dataclass(slots=True)
class _Event:
    version: int
    event_type: str
    hash: str
    recorded_at: datetime | None
    data: Any


@dataclass(slots=True)
class _Stream:
    customer_id: str
    file: str
    events: dict[int, _Event] = field(default_factory=dict)
    last: int = 0


def verify_bundle(path: Path, trusted_key: bytes | None = None) -> Verdict:
    """Check the bundle at ``path``; ``trusted_key`` (PEM) replaces the keys the bundle carries."""
    verdict = Verdict(bundle=path.name)
    try:
        archive = zipfile.ZipFile(path)
    except _UNREADABLE as exc:
        verdict.add(path.name, f"cannot be read as a ZIP archive ({exc})")
        return verdict
    with archive:
        _Check(archive, verdict, trusted_key).run()
    return verdict


class _Check:
    def __init__(self, archive: zipfile.ZipFile, verdict: Verdict, trusted_key: bytes | None) -> None:
        self.archive = archive
        self.verdict = verdict
        self.trusted_key = trusted_key
        self.files: dict[str, zipfile.ZipInfo] = {}
        self.unreadable: set[str] = set()
        self.streams: dict[str, _Stream] = {}
        self.tenant = ""
        self.period: tuple[datetime | None, datetime | None] = (None, None)
        self.whole_tenant = False

    def add(self, file: str, problem: str) -> None:
        self.verdict.add(file, problem)

    def run(self) -> None:
        if not self._read_entries():
            return
        manifest = self._manifest()
        if manifest is None:
            return
        self._streams(manifest)
        self._checkpoints()
        self._evidence()
        self.verdict.counts["streams"] = len(self.streams)
        self.verdict.counts["events"] = sum(len(s.events) for s in self.streams.values())

    # -------------------------------------------------------------------------------------------- entries, manifest
    def _read_entries(self) -> bool:
        for info in self.archive.infolist():
            name = info.filename
            if info.is_dir():
                continue
            pure = PurePosixPath(name)
            if name.startswith("/") or "\\" in name or ".." in pure.parts:
                self.add(name, "a file name that points outside the bundle; the bundle was not written by relance")
                continue
            if name in self.files:
                self.add(name, "appears twice in the archive: which copy is the evidence cannot be told")
                continue
            self.files[name] = info
        if MANIFEST not in self.files:
            self.add(MANIFEST, "is missing: without it the bundle cannot be checked")
            return False
        return True

    def _read(self, name: str) -> bytes | None:
        """A file's bytes (None if it is not in the archive, or cannot be read: then a finding says so)."""
        info = self.files.get(name)
        if info is None or name in self.unreadable:
            return None
        try:
            return self.archive.read(info)
        except _UNREADABLE as exc:
            self._unreadable(name, exc)
            return None

    def _lines(self, name: str) -> Iterator[bytes]:
        """A file's lines without their line feed, read as they come (an events file can be large)."""
        try:
            with self.archive.open(self.files[name]) as source:
                for line in source:
                    yield line.removesuffix(b"\n")
        except _UNREADABLE as exc:
            self._unreadable(name, exc)

    def _digest(self, name: str) -> tuple[str, int] | None:
        digest, size = hashlib.sha256(), 0
        try:
            with self.archive.open(self.files[name]) as source:
                for block in iter(lambda: source.read(1 << 20), b""):
                    digest.update(block)
                    size += len(block)
        except _UNREADABLE as exc:
            self._unreadable(name, exc)
            return None
        return digest.hexdigest(), size

    def _unreadable(self, name: str, exc: BaseException) -> None:
        if name not in self.unreadable:
            self.unreadable.add(name)
            self.add(name, f"cannot be read from the archive ({exc}): the archive is damaged")

    def _manifest(self) -> dict[str, Any] | None:
        raw = self._read(MANIFEST)
        if raw is None:
            return None
        recorded = self._read(MANIFEST_HASH)
        if recorded is None:
            self.add(MANIFEST_HASH, "is missing")
        else:
            given = recorded.decode("ascii", "replace").split()[:1]
            if given != [hashlib.sha256(raw).hexdigest()]:
                self.add(MANIFEST, f"its SHA-256 differs from the one {MANIFEST_HASH} gives: the manifest was changed")
        try:
            manifest = loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            self.add(MANIFEST, f"is not valid JSON ({exc})")
            return None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            self.add(MANIFEST, f"is not a {FORMAT} manifest")
            return None
        self.tenant = str(manifest.get("tenant", ""))
        self.verdict.tenant = self.tenant
        period = manifest.get("period")
        if not isinstance(period, dict):
            self.add(MANIFEST, "its period is not an object with 'from' and 'to'")
            period = {}
        self.period = (_instant(period.get("from")), _instant(period.get("to")))
        # A whole tenant up to the export: every stream of the tenant a checkpoint signed must be in the bundle.
        self.whole_tenant = manifest.get("customer") is None and self.period[1] is None
        start, end = self.period
        self.verdict.period = (
            f"events recorded from {start.isoformat() if start else 'the beginning'} "
            f"to {end.isoformat() if end else 'the export'}"
        )
        listed = manifest.get("files")
        if not isinstance(listed, dict):
            self.add(MANIFEST, "lists no files")
            return None
        for name, entry in sorted(listed.items()):
            if name not in self.files:
                self.add(name, "is listed in the manifest but missing from the bundle: it was removed")
                continue
            if not isinstance(entry, dict):
                self.add(MANIFEST, f"its entry for {name} is not an object")
                continue
            found = self._digest(name)
            if found is None:
                continue
            digest, size = found
            if entry.get("size") != size:
                self.add(name, f"has {size} bytes, the manifest says {entry.get('size')}: it was changed")
            elif entry.get("sha256") != digest:
                self.add(name, "its SHA-256 differs from the one in the manifest: it was changed")
        for name in sorted(self.files):
            if name not in listed and name not in (MANIFEST, MANIFEST_HASH):
                self.add(name, "is in the bundle but not in its manifest: it was added after the export")
        return manifest

    # -------------------------------------------------------------------------------------------- event chains
    def _streams(self, manifest: dict[str, Any]) -> None:
        declared = manifest.get("streams")
        if not isinstance(declared, list):
            self.add(MANIFEST, "lists no streams")
            return
        if not declared:
            self.add(MANIFEST, "names no customer's events: there is nothing to check")
        named = set()
        for entry in declared:
            if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
                self.add(MANIFEST, f"a stream entry is malformed: {entry!r}")
                continue
            stream = _Stream(str(entry.get("customer_id", "")), entry["file"])
            named.add(stream.file)
            self.streams[stream.customer_id] = stream
            present = stream.file in self.files
            if present:
                self._chain(stream)
            versions = entry.get("versions")
            if present and versions != [1, stream.last]:
                self.add(stream.file, f"holds events 1 to {stream.last}, the manifest says {versions}")
            in_period = self._in_period(stream)
            expected = [in_period[0], in_period[-1]] if in_period else None
            if present and entry.get("in_period") != expected:
                self.add(
                    MANIFEST,
                    f"says events {entry.get('in_period')} of {stream.file} fall within the period; "
                    f"their recorded times say {expected}",
                )
        for name in sorted(self.files):
            if name.startswith("events/") and name not in named:
                self.add(name, "is not the events file of any stream the manifest names")

    def _chain(self, stream: _Stream) -> None:
        where = stream.file
        previous = GENESIS
        expected = 1
        for number, line in enumerate(self._lines(stream.file), start=1):
            try:
                event = loads(line)
                if not isinstance(event, dict):
                    raise ValueError("not a JSON object")
                missing = [name for name in (*HASHED_FIELDS, "hash") if name not in event]
                if missing:
                    raise ValueError(f"no {', '.join(missing)}")
                version = event["version"]
                if not isinstance(version, int) or isinstance(version, bool):
                    raise ValueError("its version is not an integer")
                computed = event_hash(event)
            except (ValueError, TypeError, UnicodeDecodeError, RecursionError) as exc:
                self.add(where, f"line {number} is not an event relance wrote ({exc})")
                previous, expected = "", expected + 1
                continue
            label = f"event {version} ({event['event_type']})"
            if version != expected:
                if version > expected:
                    gap = f"{expected}" if version == expected + 1 else f"{expected} to {version - 1}"
                    self.add(where, f"event {gap} missing before {label}: events were removed")
                else:
                    self.add(where, f"{label} comes again or out of order after event {expected - 1}")
            elif event["prev_hash"] != previous:
                self.add(
                    where,
                    f"{label} does not follow from the event before it (its prev_hash differs): an event was "
                    "removed, inserted or changed before it",
                )
            if computed != event["hash"]:
                self.add(where, f"{label} does not match its hash: the log was changed after it was written")
            if event["tenant"] != self.tenant or event["customer_id"] != stream.customer_id:
                self.add(where, f"{label} belongs to {event['tenant']}/{event['customer_id']}, not to this stream")
            data = event["data"]
            evidence = isinstance(data, dict) and isinstance(data.get("sha256"), str)  # only these are kept whole
            stream.events[version] = _Event(
                version, str(event["event_type"]), str(event["hash"]), _instant(event["recorded_at"]),
                data if evidence else None,
            )  # fmt: skip
            stream.last = max(stream.last, version)
            previous, expected = str(event["hash"]), max(expected, version) + 1

    def _in_period(self, stream: _Stream) -> list[int]:
        start, end = self.period
        return [
            e.version
            for e in sorted(stream.events.values(), key=lambda e: e.version)
            if e.recorded_at is not None
            and (start is None or e.recorded_at >= start)
            and (end is None or e.recorded_at <= end)
        ]

    # -------------------------------------------------------------------------------------------- checkpoints
    def _keys(self) -> dict[str, Ed25519PublicKey]:
        keys: dict[str, Ed25519PublicKey] = {}
        for name in sorted(self.files):
            content = self._read(name) if name.startswith("keys/") else None
            if content is None:
                continue
            try:
                key = load_key(content)
            except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
                self.add(name, f"is not an Ed25519 public key in PEM ({exc})")
                continue
            if PurePosixPath(name).stem != key_id(key):
                self.add(name, f"holds the key {key_id(key)}, not the one its name says")
                continue
            keys[key_id(key)] = key
        return keys

    def _checkpoints(self) -> None:
        bundled = self._keys()
        trusted: Ed25519PublicKey | None = None
        if self.trusted_key is not None:
            trusted = load_key(self.trusted_key)
            self.verdict.notes.append(f"signatures checked with the key you gave ({key_id(trusted)})")
        documents: dict[int, tuple[str, dict[str, Any]]] = {}
        for name in sorted(self.files):
            content = self._read(name) if name.startswith("checkpoints/") else None
            if content is None:
                continue
            try:
                document = loads(content)
                if not isinstance(document, dict) or document.get("format") != CHECKPOINT_FORMAT:
                    raise ValueError(f"not a {CHECKPOINT_FORMAT} document")
                number = document["number"]
                if not isinstance(number, int) or PurePosixPath(name).stem != str(number):
                    raise ValueError(f"its number is {number!r}, its file name says {PurePosixPath(name).stem}")
            except (ValueError, KeyError, UnicodeDecodeError, RecursionError) as exc:
                self.add(name, f"is not a checkpoint relance wrote ({exc})")
                continue
            if self._checkpoint(name, document, trusted, bundled):
                documents[number] = (name, document)
        for number, (name, document) in sorted(documents.items()):
            if number - 1 in documents:
                before = documents[number - 1][1]
                if document.get("previous") != hashlib.sha256(canonical(_signed_part(before))).hexdigest():
                    self.add(name, f"does not follow from checkpoint {number - 1} (its 'previous' digest differs)")
        self.verdict.counts["checkpoints"] = len(documents)
        if trusted is None and self.verdict.keys:
            self.verdict.notes.append(
                "the checkpoints were checked with the public key(s) the bundle carries (keys/); compare "
                f"{', '.join(self.verdict.keys)} with the key the company published, or run again with --key FILE"
            )
        if not documents:
            self.verdict.notes.append(
                "no checkpoint in the bundle: the hash chains show the events are consistent, but not that the log "
                "was not rewritten as a whole"
            )

    def _checkpoint(
        self,
        name: str,
        document: dict[str, Any],
        trusted: Ed25519PublicKey | None,
        bundled: dict[str, Ed25519PublicKey],
    ) -> bool:
        signer = str(document.get("key_id", ""))
        unknown = sorted(set(document) - {*CHECKPOINT_SIGNED, "signature", "leaves"})
        if unknown:
            self.add(name, f"has fields a checkpoint does not have ({', '.join(unknown)}): it was changed")
        if trusted is not None:
            if signer != key_id(trusted):
                self.add(name, f"is signed with key {signer}, not with the key you gave ({key_id(trusted)})")
                return False
            key = trusted
        else:
            found = bundled.get(signer)
            if found is None:
                self.add(name, f"is signed with key {signer}, and the bundle holds no keys/{signer}.pub")
                return False
            key = found
        try:
            signature = base64.b64decode(str(document.get("signature", "")), validate=True)
            key.verify(signature, canonical(_signed_part(document)))
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            self.add(
                name,
                f"the signature does not verify with key {signer}: the checkpoint was changed after it was signed",
            )
            return False
        if signer not in self.verdict.keys:
            self.verdict.keys.append(signer)
        leaves = document.get("leaves")
        if not isinstance(leaves, list) or not all(_is_leaf(leaf) for leaf in leaves):
            self.add(name, "its leaves are not a list of [tenant, customer, version, hash]")
            return False
        if [leaf[:2] for leaf in leaves] != sorted(leaf[:2] for leaf in leaves):
            self.add(name, "its leaves are not sorted by tenant and customer")
        if merkle_root(leaves) != document.get("merkle_root") or len(leaves) != document.get("streams"):
            self.add(name, "its leaves do not give its signed Merkle root: the list of streams was changed")
            return False
        number = document["number"]
        for tenant, customer, version, head in leaves:
            stream = self.streams.get(customer) if tenant == self.tenant else None
            if stream is None and tenant == self.tenant and self.whole_tenant:
                self.add(
                    name,
                    f"signed customer {customer} of this tenant, whose events are not in the bundle: a customer was "
                    "left out of it",
                )
            if stream is None or stream.file not in self.files:
                continue
            if version > stream.last:
                self.add(
                    stream.file,
                    f"ends at event {stream.last}, but checkpoint {number} signed this customer at event {version}: "
                    "events were removed",
                )
            elif version in stream.events and stream.events[version].hash != head:
                self.add(
                    stream.file,
                    f"event {version} has another hash than the one checkpoint {number} signed: the log was "
                    "rewritten after the checkpoint",
                )
        return True

    # -------------------------------------------------------------------------------------------- e-mails, letters
    def _evidence(self) -> None:
        # file name -> [(version, recorded on, hash, events file)] of every event in the period that records its hash
        wanted: dict[str, list[tuple[int, str, str, str]]] = {}
        for stream in self.streams.values():
            for version in self._in_period(stream):
                event = stream.events[version]
                data = event.data if isinstance(event.data, dict) else {}
                recorded = event.recorded_at.date().isoformat() if event.recorded_at else "?"
                digest = data.get("sha256")
                if not isinstance(digest, str) or not digest:
                    continue
                if event.event_type.startswith("reminder.") and isinstance(data.get("message_id"), str):
                    file = f"messages/{safe_name(data['message_id'])}.eml"
                elif event.event_type == "letter.rendered" and isinstance(data.get("letter_id"), str):
                    file = f"letters/{safe_name(data['letter_id'])}.pdf"
                else:
                    continue
                wanted.setdefault(file, []).append((version, recorded, digest, stream.file))
        for file, records in sorted(wanted.items()):
            if file not in self.files:
                version, recorded, _, events_file = records[0]
                if file not in self.verdict.named():
                    self.add(
                        file,
                        f"is missing: the log recorded its SHA-256 on {recorded} in event {version} of {events_file}",
                    )
                continue
            found = self._digest(file)
            if found is None:
                continue
            digest = found[0]
            for version, recorded, expected, events_file in records:
                if digest != expected:
                    self.add(
                        file,
                        f"its SHA-256 differs from the one the log recorded on {recorded} in event {version} "
                        f"({events_file}): the file was changed",
                    )
                    break
        self.verdict.counts["messages"] = sum(1 for f in wanted if f.startswith("messages/") and f in self.files)
        self.verdict.counts["letters"] = sum(1 for f in wanted if f.startswith("letters/") and f in self.files)
        for name in sorted(self.files):
            if name.startswith(("messages/", "letters/")) and name not in wanted:
                self.add(name, "no event of the period records this file's hash: it is not evidence of this log")


def _signed_part(document: Mapping[str, Any]) -> dict[str, Any]:
    return {name: document.get(name) for name in CHECKPOINT_SIGNED}


def _is_leaf(leaf: Any) -> bool:
    return (
        isinstance(leaf, list)
        and len(leaf) == 4
        and isinstance(leaf[0], str)
        and isinstance(leaf[1], str)
        and isinstance(leaf[2], int)
        and isinstance(leaf[3], str)
    )


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 instant with its offset (relance writes UTC); None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


# ---------------------------------------------------------------------------------------------------- command
def main(argv: list[str] | None = None) -> int:
    """``python -m services.audit.offline BUNDLE [--key FILE] [--json]``: what ``relance audit verify`` runs."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="relance audit verify", description="Check a relance evidence bundle offline: exit 0 if valid, 1 if not."
    )
    parser.add_argument("bundle", type=Path, help="the bundle (.zip) `relance audit export` wrote")
    parser.add_argument("--key", type=Path, help="the public key the company published (PEM), instead of the bundle's")
    parser.add_argument("--json", action="store_true", help="the verdict as JSON")
    args = parser.parse_args(argv)
    return run(args.bundle, args.key, as_json=args.json, out=sys.stdout, err=sys.stderr)


def run(bundle: Path, key: Path | None, *, as_json: bool, out: Any, err: Any) -> int:
    """Verify and print the verdict; 0 if valid, 1 if not, 2 if the key given cannot be used."""
    trusted = None
    if key is not None:
        try:
            trusted = key.read_bytes()
            load_key(trusted)
        except (OSError, ValueError, TypeError, UnsupportedAlgorithm) as exc:
            print(f"relance audit verify: cannot use the key {key}: {exc}", file=err)
            return 2
    verdict = verify_bundle(bundle, trusted)
    if as_json:
        out.write(json.dumps(verdict.to_json(), indent=2, ensure_ascii=False) + "\n")
    else:
        out.write(verdict.text() + "\n")
    return 0 if verdict.valid else 1


if __name__ == "__main__":
    raise SystemExit(main())
