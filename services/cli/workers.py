"""``relance worker KIND``: run one of the services' workers until stopped.

Each worker is its service's composition root (the ``run(settings)`` function of the module named below), imported
only when asked for, so that starting one worker loads nothing of the others. ``--metrics-address`` overrides
``RELANCE_METRICS_ADDRESS``: where the worker serves ``/metrics``, ``/livez`` and ``/readyz``.
"""

from __future__ import annotations

import argparse
import importlib

from services.cli.options import Commands, runs
from shared.config import Settings, listen_address

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
        runner.add_argument(
            "--metrics-address",
            type=metrics_address,
            metavar="HOST:PORT",
            help="serve /metrics, /livez and /readyz there (overrides RELANCE_METRICS_ADDRESS), e.g. 0.0.0.0:9100",
        )
        runs(runner, run_worker, database_url=True)


def metrics_address(value: str) -> str:
    try:
        listen_address(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} {exc}") from None
    return value.strip()


def run_worker(args: argparse.Namespace, settings: Settings) -> int:
    if args.metrics_address:
        settings = settings.model_copy(update={"metrics_address": args.metrics_address})
    status: int = importlib.import_module(args.worker_module).run(settings)
    return status
