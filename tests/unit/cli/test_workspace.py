"""``relance workspace``: the composer of the workspace's ports, and where it finds a ledger."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.cli import main
from services.cli.workspace import DEMO_DATABASE, compose, demo_url, evidence
from services.workspace.app import create_app
from shared.config import load_settings


def test_the_composed_app_serves_the_api_document_and_finds_no_unknown_evidence(sqlite_url: str) -> None:
    ports = compose(load_settings(database_url=sqlite_url))
    try:
        client = TestClient(create_app(ports))
        assert client.get("/api/openapi.json").status_code == 200
        assert client.get("/api/v1/me").status_code == 401  # not signed in
        assert evidence(ports.ledger(), "acme-fr", "no-such-command") is None
        assert ports.ledger() is ports.ledger()  # one ledger per thread
    finally:
        ports.engine.dispose()


def test_without_a_database_it_opens_the_demos_ledger_or_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RELANCE_DATABASE_URL", raising=False)
    assert demo_url() is None
    assert main(["workspace"]) == 78
    assert "make demo" in capsys.readouterr().err
    (tmp_path / DEMO_DATABASE).parent.mkdir()
    (tmp_path / DEMO_DATABASE).touch()
    assert demo_url() == f"sqlite:///{tmp_path / DEMO_DATABASE}"
