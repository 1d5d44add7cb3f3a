"""``relance contract`` and ``relance publish``: the ERP message contract, and ERP events put on RabbitMQ by hand."""

from __future__ import annotations

import argparse
from pathlib import Path

from services.cli.options import Commands, runs
from shared.config import Settings

OPENAPI_FILE = "openapi.json"


def add_publish(commands: Commands) -> None:
    publish = commands.add_parser(
        "publish", help="publish ERP events from a JSON Lines file to RabbitMQ, with publisher confirms"
    )
    publish.add_argument("file", type=Path, help="one v1 message per line ('-' for standard input)")
    runs(publish, publish_events)


def add_contract(commands: Commands) -> None:
    contract = commands.add_parser("contract", help="the ERP message contract")
    contract_commands = contract.add_subparsers(title="contract commands", metavar="ACTION")
    export = contract_commands.add_parser(
        "export", help="write the JSON Schema files, the AsyncAPI document and the HTTP API's OpenAPI document"
    )
    export.add_argument("--out", type=Path, default=Path("shared/contracts/schema"))
    runs(export, contract_export)


def publish_events(args: argparse.Namespace, settings: Settings) -> int:
    from services.ingest.publish import publish_file

    return publish_file(settings, args.file)


def contract_export(args: argparse.Namespace, settings: Settings) -> int:
    from services.workspace.app import write_openapi
    from shared.contracts.export import write_contract

    for path in write_contract(args.out):
        print(path)
    print(write_openapi(args.out / OPENAPI_FILE))  # the workspace's HTTP API, beside the AsyncAPI document
    return 0
