"""The HTTP ingest endpoint's port: the AMQP ingestor, applied to the bodies of one request.

The composer of ``relance workspace`` puts :func:`http_ingest_port` in the workspace's ports; the route
(:mod:`services.workspace.ingest`) never imports :mod:`services.ingest`, which it reaches only through this callable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from services.ingest.service import Delivery, Ingestor
from services.workspace.ingest import IngestAnswer, IngestPort, Refused
from shared.ledger.store import Ledger


def http_ingest_port(max_message_bytes: int) -> IngestPort:
    """``ingest(ledger, bodies, received_at) -> IngestAnswer``: one transaction for the bodies, as one AMQP batch."""

    def ingest(ledger: Ledger, bodies: Sequence[bytes], received_at: datetime) -> IngestAnswer:
        deliveries = [Delivery(body=body, received_at=received_at) for body in bodies]
        result = Ingestor(ledger, max_message_bytes=max_message_bytes).process(deliveries)
        index = {id(delivery): n for n, delivery in enumerate(deliveries)}
        refused = [
            Refused(index=index[id(r.delivery)], event_id=r.event_id, kind=r.kind, reason=r.reason)
            for r in result.rejections
        ]
        refused.sort(key=lambda r: r.index)
        return IngestAnswer(applied=result.applied_ids, duplicates=result.duplicate_ids, refused=refused)

    return ingest
