"""Settings that do not lie: unknown variables, no default database, URLs relance can open, values from files."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from services.notifier.render import RenderSettings
from shared.config import (
    NO_DATABASE,
    READ_ELSEWHERE,
    ConfigurationError,
    known_variables,
    load_settings,
    with_application_name,
)

ROOT = Path(__file__).resolve().parents[2]
# A variable's name as the code, the docs and the deployment files spell it (not `RELANCE_*` or `RELANCE_<NAME>`).
_VARIABLE = re.compile(r"\bRELANCE_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_*<])")
TYPOS = {"RELANCE_DATABSE_URL", "RELANCE_ZZZ"}  # the typos these tests, the CLI's and the README make on purpose


@pytest.fixture(autouse=True)
def _no_relance_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.upper().startswith("RELANCE_")]:
        monkeypatch.delenv(name)


def _refusal(**overrides: object) -> str:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(**overrides)
    return str(refused.value)


# ------------------------------------------------------------------------------------------- unknown variables
def test_a_mistyped_variable_is_refused_with_the_closest_valid_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a typo in the database variable's name
    monkeypatch.setenv("RELANCE_DATABSE_URL", "postgresql://relance@db/relance")
    # When the settings are loaded, then they are refused, naming the variable and what was meant
    message = _refusal()
    assert "RELANCE_DATABSE_URL: unknown setting (did you mean RELANCE_DATABASE_URL?)" in message


def test_every_unknown_variable_is_listed_once_even_in_lower_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("relance_smtp_hots", "mail.example.com")
    monkeypatch.setenv("RELANCE_ZZZ", "1")
    message = _refusal()
    assert "relance_smtp_hots: unknown setting (did you mean RELANCE_SMTP_HOST?)" in message
    assert "RELANCE_ZZZ: unknown setting (no setting has a name close to it)" in message


def test_the_variables_read_outside_the_settings_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given the test servers' and the notifier's own variables
    for name in ("RELANCE_TEST_DATABASE_URL", "RELANCE_TEST_AMQP_URL", "RELANCE_TEMPLATE_DIR", "RELANCE_SENDER_FILE"):
        monkeypatch.setenv(name, "/somewhere")
    # Then they are no typo
    assert load_settings().database_url is None


def test_every_relance_variable_named_in_the_repository_is_one_relance_reads() -> None:
    # Given every RELANCE_* name in the code, the tests, the docs and the deployment files
    files = [p for p in (*ROOT.glob("*.md"), ROOT / "Makefile", ROOT / ".ci" / "run") if p.is_file()]
    for folder in ("shared", "services", "tests", "deploy"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in (".py", ".yaml", ".md", "")]
    named = {name for path in files for name in _VARIABLE.findall(path.read_text(encoding="utf-8", errors="replace"))}
    # Then each is a setting, a setting's _FILE variant or a variable listed as read elsewhere
    assert named, "no RELANCE_ variable found: the scan is broken"
    assert sorted(named - known_variables() - TYPOS) == []


def test_the_notifier_rendering_settings_are_listed_as_read_elsewhere() -> None:
    assert {f"RELANCE_{name.upper()}" for name in RenderSettings.model_fields} <= set(READ_ELSEWHERE)


# ------------------------------------------------------------------------------------------ the database URL
def test_there_is_no_default_database() -> None:
    # Given no database setting, the settings load (a publisher needs none) but asking for the URL says what to set
    settings = load_settings()
    with pytest.raises(ConfigurationError) as refused:
        settings.require_database_url()
    assert str(refused.value) == NO_DATABASE and "RELANCE_DATABASE_URL is not set" in NO_DATABASE


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg", "POSTGRES"])
def test_postgres_urls_open_with_psycopg_3(scheme: str) -> None:
    url = load_settings(database_url=f"{scheme}://relance:pw@db.example.com:5432/relance").database_url
    assert url == "postgresql+psycopg://relance:pw@db.example.com:5432/relance"


@pytest.mark.parametrize("driver", ["psycopg2", "asyncpg", "pg8000"])
def test_a_postgres_driver_relance_does_not_ship_is_refused_without_showing_the_password(driver: str) -> None:
    message = _refusal(database_url=f"postgresql+{driver}://relance:s3cret-pw@db/relance")
    assert f"relance ships the psycopg 3 driver, not {driver}: write postgresql://relance:***@db/relance" in message
    assert "s3cret-pw" not in message


@pytest.mark.parametrize("url", ["mysql://u@db/relance", "mysql+pymysql://u@db/r", "oracle://u@db/r", "mssql://db/r"])
def test_a_database_relance_does_not_run_on_is_refused(url: str) -> None:
    assert "relance runs on PostgreSQL or SQLite, not" in _refusal(database_url=url)


@pytest.mark.parametrize("url", ["relance.db", "", "   "])
def test_something_that_is_not_a_url_is_refused(url: str) -> None:
    assert "RELANCE_DATABASE_URL: must be a database URL" in _refusal(database_url=url)


def test_sqlite_urls_are_kept_as_written() -> None:
    assert load_settings(database_url="sqlite:////var/lib/relance/relance.db").database_url == (
        "sqlite:////var/lib/relance/relance.db"
    )


def test_each_process_names_itself_to_postgresql_unless_the_url_already_does() -> None:
    url = "postgresql+psycopg://relance:p%40ss@db/relance"
    named = with_application_name(url, "relance-ingest")
    assert named == "postgresql+psycopg://relance:p%40ss@db/relance?application_name=relance-ingest"
    assert with_application_name(url + "?application_name=mine", "relance-ingest").endswith("application_name=mine")
    assert with_application_name("sqlite:///x.db", "relance-ingest") == "sqlite:///x.db"


# ----------------------------------------------------------------------------------------- values from files
def test_a_secret_can_come_from_a_file_without_its_trailing_newline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given mounted secrets, written with a trailing newline as editors and `echo` do
    (tmp_path / "db").write_text("postgres://relance:pw@db/relance\n", encoding="utf-8")
    (tmp_path / "smtp").write_text("p@ss word\r\n", encoding="utf-8")
    (tmp_path / "amqp").write_text("amqp://relance:pw@mq:5672/%2F\n", encoding="utf-8")
    (tmp_path / "webhook").write_text("0123456789abcdef0123\n", encoding="utf-8")
    monkeypatch.setenv("RELANCE_DATABASE_URL_FILE", str(tmp_path / "db"))
    monkeypatch.setenv("RELANCE_SMTP_PASSWORD_FILE", str(tmp_path / "smtp"))
    monkeypatch.setenv("RELANCE_AMQP_URL_FILE", str(tmp_path / "amqp"))
    monkeypatch.setenv("RELANCE_WEBHOOK_SECRET_FILE", str(tmp_path / "webhook"))
    # When the settings are loaded
    settings = load_settings()
    # Then each value is the file's content, checked like the variable would be
    assert settings.database_url == "postgresql+psycopg://relance:pw@db/relance"
    assert settings.smtp_password is not None and settings.smtp_password.get_secret_value() == "p@ss word"
    assert settings.amqp_url == "amqp://relance:pw@mq:5672/%2F"
    assert settings.webhook_secret is not None and settings.webhook_secret.get_secret_value() == "0123456789abcdef0123"


def test_any_setting_can_come_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "size").write_text("42\n", encoding="utf-8")
    monkeypatch.setenv("RELANCE_INGEST_BATCH_SIZE_FILE", str(tmp_path / "size"))
    assert load_settings().ingest_batch_size == 42


def test_a_setting_given_both_as_a_file_and_a_variable_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "pw").write_text("from-the-file", encoding="utf-8")
    monkeypatch.setenv("RELANCE_SMTP_PASSWORD", "from-the-variable")
    monkeypatch.setenv("RELANCE_SMTP_PASSWORD_FILE", str(tmp_path / "pw"))
    assert _refusal() == "RELANCE_SMTP_PASSWORD and RELANCE_SMTP_PASSWORD_FILE are both set: keep one of them"


def test_an_unreadable_secret_file_is_refused_naming_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-secret"
    monkeypatch.setenv("RELANCE_DATABASE_URL_FILE", str(missing))
    assert _refusal() == f"RELANCE_DATABASE_URL_FILE: cannot read {missing}: No such file or directory"


def test_a_bad_value_from_a_file_is_reported_without_the_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "webhook").write_text("short\n", encoding="utf-8")
    monkeypatch.setenv("RELANCE_WEBHOOK_SECRET_FILE", str(tmp_path / "webhook"))
    message = _refusal()
    assert "RELANCE_WEBHOOK_SECRET: must be at least 16 characters" in message and "short" not in message
