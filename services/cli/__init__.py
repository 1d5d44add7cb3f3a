"""The `relance` command line: one entry point that composes the services; it is not deployed as a service."""

from services.cli.app import main

__all__ = ["main"]
