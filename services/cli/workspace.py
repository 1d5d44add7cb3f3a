"""``relance workspace``: the web workspace and the JSON API, served by uvicorn.

The composer of :class:`services.workspace.ports.Ports`: one :class:`~shared.ledger.store.Ledger` per thread on the
settings' database, the agenda of :mod:`services.escalation.agenda`, the sent e-mails of
:mod:`services.notifier.evidence`, the HTTP ingest on :class:`services.ingest.service.Ingestor` and the background
jobs of :mod:`services.jobs` (run in this process on the embedded default). Without a
database URL it opens the ledger ``relance demo`` left in ``demo-output/`` (run ``make demo`` first).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

from services.cli.options import Commands, runs
from shared.config import Settings
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger

DEMO_DATABASE = Path("demo-output") / "relance-demo.db"  # where ``relance demo`` keeps its ledger by default
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000


def add_workspace(commands: Commands) -> None:
    workspace = commands.add_parser("workspace", help="serve the web workspace and the JSON API (uvicorn)")
    workspace.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    workspace.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    workspace.add_argument("--database-url", help="override RELANCE_DATABASE_URL (default: the demo's ledger)")
    runs(workspace, serve)
    workspace.set_defaults(own_database=True)


def demo_url() -> str | None:
    return f"sqlite:///{DEMO_DATABASE.resolve()}" if DEMO_DATABASE.exists() else None


def serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from shared.config import ConfigurationError

    url = args.database_url or settings.database_url or demo_url()
    if url is None:
        raise ConfigurationError(
            "no ledger to open: set RELANCE_DATABASE_URL, pass --database-url, or run `make demo` first "
            f"(its ledger is {DEMO_DATABASE})"
        )
    update: dict[str, object] = {"database_url": url}
    if url == demo_url():
        update["workspace_insecure_cookies"] = True  # the demo's ledger, served on plain http
    from services.workspace.app import create_app

    app = create_app(compose(settings.model_copy(update=update)))
    print(f"relance workspace on http://{args.host}:{args.port}/ (ledger {url})", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", proxy_headers=False)
    return 0


def compose(settings: Settings) -> Any:
    """The workspace's ports on the settings' database."""
    from services.cli.ingest_http import http_ingest_port
    from services.cli.jobs import JobsForWorkspace
    from services.workspace.ports import Ports
    from shared.runtime import migrated_engine

    engine = migrated_engine(settings)
    local = threading.local()

    def ledger() -> Ledger:
        found: Ledger | None = getattr(local, "ledger", None)
        if found is None:
            found = local.ledger = Ledger(engine)
        return found

    return Ports(
        settings=settings,
        engine=engine,
        ledger=ledger,
        agenda=agenda_of(settings),
        ingest=http_ingest_port(settings.max_message_bytes),
        evidence=evidence,
        jobs=JobsForWorkspace(settings, engine),
    )


def agenda_of(settings: Settings) -> Any:
    from services.escalation.agenda import build_agenda
    from services.escalation.interest import RateTable

    rates = RateTable.default(settings.rates_file)

    def agenda(states: Sequence[CustomerState], on: date) -> list[Any]:
        return [item for item in build_agenda(states, on, rates) if item.customer_id]

    return agenda


def evidence(ledger: Ledger, tenant: str, command_id: str) -> Any:
    """A sent e-mail's bytes, checked against the SHA-256 its customer's stream recorded (None if not kept)."""
    from services.notifier import audit
    from services.notifier import evidence as store
    from services.workspace.ports import Evidence

    kept = store.by_command(ledger.engine, tenant, command_id)
    if kept is None:
        return None
    facts = audit.command_events(ledger.read_stream(tenant, kept.customer_id), command_id)
    outcome = next((e for e in reversed(facts) if e.event_type in audit.OUTCOMES), None)
    hashed = [e for e in facts if e.data.get("sha256")]
    recorded_in = outcome if outcome is not None and outcome.data.get("sha256") else (hashed[-1] if hashed else None)
    return Evidence(
        tenant=kept.tenant,
        customer_id=kept.customer_id,
        command_id=kept.command_id,
        message_id=kept.message_id,
        mime=kept.mime,
        kept_at=kept.created_at,
        recorded_sha256="" if recorded_in is None else str(recorded_in.data.get("sha256", "")),
        recomputed_sha256=hashlib.sha256(kept.mime).hexdigest(),
        outcome="" if outcome is None else outcome.event_type,
    )
