"""The demo's evidence bundle: the late payer of the timeline, as an auditor would receive it.

The demo signs one checkpoint over its ledger with a key made for the run (the private half is thrown away with
the run; the public one is written as ``checkpoint.pub`` beside the bundle), exports the customer's bundle with the
code of ``relance audit export`` and checks it with the offline verifier, so the summary can say it verifies.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine

from services.audit.export import Exported, export_bundle
from services.audit.offline import safe_name, verify_bundle
from services.cli.demo.escalation import Timeline
from shared.ledger import checkpoints as cp

PUBLIC_KEY_FILE = "checkpoint.pub"


@dataclass(frozen=True, slots=True)
class DemoBundle:
    exported: Exported
    public_key: Path
    verdict: str  # the offline verifier's first line
    valid: bool


def write_bundle(engine: Engine, timeline: Timeline | None, out: Path) -> DemoBundle | None:
    """Sign a checkpoint, export the timeline customer's bundle to ``out/audit-<customer>.zip`` and check it."""
    if timeline is None:
        return None
    key = Ed25519PrivateKey.generate()
    cp.write(engine, key)
    public = out / PUBLIC_KEY_FILE
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    path = out / f"audit-{safe_name(timeline.customer_id)}.zip"
    exported = export_bundle(
        engine,
        timeline.tenant,
        path,
        customer_id=timeline.customer_id,
        created_at=datetime.now(UTC),
        exported_by="relance demo",
        public_keys=[key.public_key()],
    )
    verdict = verify_bundle(path, public.read_bytes())
    return DemoBundle(exported, public, verdict.headline(), verdict.valid)


def bundle_section(bundle: DemoBundle | None) -> list[str]:
    if bundle is None:
        return []
    exported = bundle.exported
    return [
        "",
        "Audit bundle of this late payer",
        f"  evidence bundle of this customer: {exported.path} ({exported.events} events, {exported.messages} "
        f"e-mail(s), {exported.letters} letter(s), checkpoint {', '.join(map(str, exported.checkpoints))})",
        f"    {'verifies offline' if bundle.valid else 'DOES NOT VERIFY'}: relance audit verify {exported.path} "
        f"--key {bundle.public_key}",
    ]
