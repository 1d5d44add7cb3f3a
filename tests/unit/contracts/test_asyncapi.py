"""The AsyncAPI document passes the official AsyncAPI parser (JavaScript), the one AsyncAPI's own tools use.

This check needs Node.js and npm; it is never skipped. The parser is installed once, at a pinned version, into a
cache folder outside the repository (``RELANCE_NODE_CACHE``, default ``~/.cache/relance/node``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCUMENT = ROOT / "shared" / "contracts" / "schema" / "asyncapi.yaml"
SCRIPT = Path(__file__).with_name("asyncapi_parse.mjs")
PARSER = "@asyncapi/parser@3.6.6"
HOW_TO_GET_NODE = (
    "Node.js 18 or newer and npm are needed to check the AsyncAPI document with the official parser: install them "
    "(Debian/Ubuntu: `apt-get install nodejs npm`; otherwise https://nodejs.org), then run the tests again. "
    "`.ci/run` installs them on a fresh machine."
)


def parser_folder() -> tuple[str, Path]:
    """Node, and the folder holding node_modules/@asyncapi/parser (installed there on first use)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(f"{'node' if node is None else 'npm'} not found. {HOW_TO_GET_NODE}")
    base = Path(os.environ.get("RELANCE_NODE_CACHE", Path.home() / ".cache" / "relance" / "node"))
    folder = base / PARSER.replace("/", "+").replace("@", "")
    if not (folder / "node_modules" / "@asyncapi" / "parser" / "package.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        installed = subprocess.run(
            [
                npm,
                "install",
                "--prefix",
                str(folder),
                "--no-save",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                PARSER,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "SCARF_ANALYTICS": "false"},
        )
        if installed.returncode != 0:
            pytest.fail(f"npm could not install {PARSER} into {folder}:\n{installed.stderr[-2000:]}")
    return node, folder


def test_the_asyncapi_document_passes_the_official_parser() -> None:
    # Given the checked-in AsyncAPI document (its payloads are the JSON Schema files beside it)
    node, folder = parser_folder()
    # When the official parser reads it, resolving every reference
    parsed = subprocess.run(
        [node, str(SCRIPT), str(folder), str(DOCUMENT)], capture_output=True, text=True, timeout=120
    )
    # Then it reports no error
    assert parsed.returncode == 0, parsed.stdout + parsed.stderr
    assert "AsyncAPI document valid" in parsed.stdout
