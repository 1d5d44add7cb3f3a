"""``relance demo``: the whole pipeline on SQLite and an in-process queue, with a generated ERP sample.

It is a command of the CLI, not a service: nothing deploys it, and it needs the ``demo`` extra (aiosmtpd, its SMTP
server on loopback). It composes the real pieces as the workers do, minus the network: the ingest's
:class:`~services.ingest.service.Ingestor` fed from :class:`shared.broker.memory.MemoryQueue`, the real
:class:`~services.escalation.worker.EscalationWorker` on a simulated clock, the outbox's own ``claim`` and
``mark_published`` standing in for the relay, and the real :class:`~services.notifier.service.Notifier` sending
over SMTP. Its modules: :mod:`~services.cli.demo.generator` (the ERP sample), :mod:`~services.cli.demo.run` (the
composition root and the printout), :mod:`~services.cli.demo.escalation` (days of delivery and the audit of
every stream), :mod:`~services.cli.demo.mail` (the SMTP server and the notifier), :mod:`~services.cli.demo.report`
(the receivables summary and its tables), :mod:`~services.cli.demo.cadence` (the cadence and tone figures, and the
policies' rules they are checked against: the demo exits 3 when one breaks).
"""

from services.cli.demo.generator import AS_OF, Sample, generate
from services.cli.demo.run import run_demo

__all__ = ["AS_OF", "Sample", "generate", "run_demo"]
