"""``relance worker KIND``: run one of the services' workers until stopped.

Each worker is its service's composition root (the ``run(settings)`` function of the module named below), imported
only when asked for, so that starting one worker loads nothing of the others.
"""

from __future__ import annotations

import argparse
import importlib

from services.cli.options import Commands, runs
from shared.config import Settings

# kind -> (the module whose run(settings) it is, its help line)
WORKERS = {
    "ingest": ("services.ingest.worker", "consume ERP events from RabbitMQ into the ledger"),
    "escalation": (
        "services.escalation.worker",
        "fire due timers and evaluate customers whose ledger changed (any number of workers)",
    ),
    "webhook": (
        "services.webhook.worker",
        "POST the ERP's commands to RELANCE_WEBHOOK_URL, signed (RELANCE_ERP_TRANSPORT=webhook)",
    ),
    "relay": (
        "services.relay.worker",
        "publish outbox commands to the commands exchange with publisher confirms (any number)",
    ),
    "notifier": (
        "services.notifier.worker",
        "send the reminders of notifier.send_reminder commands over SMTP, with evidence (any number)",
    ),
    "jobs": (
        "services.jobs.worker",
        "run the background jobs (checkpoints, replays, re-sends…) from RabbitMQ with Dramatiq (any number)",
    ),
}


def add_worker(commands: Commands) -> None:
    worker = commands.add_parser("worker", help="run a worker until stopped (SIGTERM or Ctrl-C)")
    workers = worker.add_subparsers(title="workers", metavar="KIND")
    for kind, (module, help_line) in WORKERS.items():
        runner = workers.add_parser(kind, help=help_line)
        runner.set_defaults(worker_module=module)
        runs(runner, run_worker, database_url=True)


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    status: int = importlib.import_module(args.worker_module).run(settings)
    return status
