"""Settings for every relance process, read from ``RELANCE_*`` environment variables.

Settings are validated once at start-up; :func:`load_settings` turns a validation failure into a
:class:`ConfigurationError` whose message names each variable to fix, so a process never starts half-configured.
Configuration must not lie:

- an unknown ``RELANCE_*`` variable (a typo such as ``RELANCE_DATABSE_URL``) stops start-up with the closest valid
  name, instead of being ignored while a default takes its place;
- there is no default database: outside ``relance demo`` the ledger's URL is given, or nothing starts;
- any setting can come from a file (``RELANCE_<NAME>_FILE``, e.g. a mounted secret), never from both a file and the
  variable itself.

One module on purpose: most of its length is the one :class:`Settings` model, the single list of every variable
with its default, bounds and description, which reads best whole.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import yaml
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from shared import quiet

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")
_QUEUE = re.compile(r"[a-zA-Z_][a-zA-Z0-9._-]*")  # a Dramatiq queue name
_DOMAIN = re.compile(r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}@[A-Za-z0-9.-]{1,253}")
# never echoed in an error message
_SECRETS = frozenset({"smtp_password", "webhook_secret", "runtime_role_password", "oidc_client_secret"})
_URLS = frozenset({"database_url", "amqp_url"})  # echoed with their password hidden
PREFIX = "RELANCE_"
FILE_SUFFIX = "_FILE"

# ``RELANCE_*`` variables read outside :class:`Settings`, with who reads them: the unknown-variable check accepts
# them. A new variable read anywhere else belongs here (tests/unit/test_config.py finds every name in the repository).
READ_ELSEWHERE: Mapping[str, str] = {
    "RELANCE_TEMPLATE_DIR": "services/notifier/render.py (RenderSettings)",
    "RELANCE_SENDER_FILE": "services/notifier/render.py (RenderSettings)",
    "RELANCE_TEST_DATABASE_URL": "tests/conftest.py: the PostgreSQL server of the tests",
    "RELANCE_TEST_AMQP_URL": "tests/conftest.py: the RabbitMQ server of the tests",
    "RELANCE_TEST_DATABASE_ROLE": "tests/conftest.py: `runtime` runs every PostgreSQL test as the runtime role",
    "RELANCE_NODE_CACHE": "tests/unit/contracts/test_asyncapi.py: where the AsyncAPI parser is installed",
    "RELANCE_BENCH_DATABASE_URL": "tests/benchmarks/bench_ingest.py",
    "RELANCE_BENCH_AMQP_URL": "tests/benchmarks/bench_ingest.py",
    "RELANCE_E2E_EVENTS": "tests/e2e/test_three_workers.py",
    "RELANCE_E2E_TIMEOUT": "tests/e2e/test_three_workers.py",
}

NO_DATABASE = (
    "RELANCE_DATABASE_URL is not set: relance needs the URL of its ledger database, e.g. "
    "postgresql://relance@db.example.com:5432/relance or, for a local trial, sqlite:////var/lib/relance/relance.db "
    "(or pass --database-url; only `relance demo` makes its own database)"
)


class ConfigurationError(Exception):
    """Invalid configuration: the process must not start."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="ignore", frozen=True)

    database_url: str | None = Field(
        default=None,
        description="URL of the ledger database: postgresql://… (psycopg 3) or sqlite:///…; no default outside the "
        "demo.",
    )
    runtime_role: str | None = Field(
        default=None,
        description="PostgreSQL role the workers connect as: `relance db upgrade` creates it if missing and grants it "
        "exactly what it needs (read and append on the log); unset, no runtime role is managed.",
    )
    runtime_role_password: SecretStr | None = Field(
        default=None, description="Password `relance db upgrade` gives the runtime role (when creating it, or anew)."
    )
    amqp_url: str = Field(
        default="amqp://guest:guest@127.0.0.1:5672/%2F",
        description="RabbitMQ URL used by the ingest worker and `relance publish`.",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info")
    log_format: Literal["auto", "json", "console"] = Field(
        default="auto", description="json for production, console for a terminal; auto picks by TTY."
    )
    policy_dir: Path | None = Field(
        default=None,
        description="Dunning policies: a sub-directory of YAML files per tenant; unset, the shipped standard book.",
    )
    rates_file: Path | None = Field(
        default=None,
        description="CSV of rates extending or correcting the shipped ECB, Bank of England, French legal-rate tables.",
    )
    events_exchange: str = Field(default="relance.events", description="Topic exchange the ERP publishes to.")
    ingest_queue: str = Field(default="relance.ingest", description="Durable queue the ingest workers consume.")
    dead_letter_queue: str = Field(
        default="relance.ingest.dead", description="Queue receiving rejected messages, reason in headers."
    )
    queue_type: Literal["quorum", "classic"] = Field(
        default="quorum",
        description="Type of the queues relance declares: quorum (replicated, the default) or classic (queues made "
        "by a relance before quorum queues; move them with deploy/rabbitmq/MIGRATION.md).",
    )
    ingest_prefetch: int = Field(default=2000, ge=1, le=65535, description="Unacked messages per worker.")
    ingest_batch_size: int = Field(default=1000, ge=1, le=10000, description="Messages applied per transaction.")
    ingest_batch_ms: int = Field(
        default=100, ge=1, le=60000, description="Longest wait (ms) to fill a batch before applying it."
    )
    ingest_partitions: int = Field(
        default=1,
        ge=1,
        le=1024,
        description="Partition queues the ingest work is spread over by customer (1: the single ingest queue).",
    )
    state_cache_mb: int = Field(
        default=96, ge=1, description="Memory (MB) an ingest worker may hold in recently committed customer states."
    )
    max_message_bytes: int = Field(default=262144, ge=1024, description="Larger messages are dead-lettered.")
    retry_max_seconds: float = Field(
        default=30.0, gt=0, description="Ceiling of the backoff between retries of a transient failure."
    )
    commands_exchange: str = Field(
        default="relance.commands",
        description="Topic exchange relance publishes commands to (routing key = command kind, e.g. erp.credit_block).",
    )
    publish_window: int = Field(
        default=1000,
        ge=1,
        le=65535,
        description="Messages `relance publish` and the relay have in flight awaiting RabbitMQ's confirm; the next "
        "waits for a confirm when the window is full.",
    )
    relay_batch_size: int = Field(
        default=500,
        ge=1,
        le=10000,
        description="Outbox commands a relay claims per transaction (two such batches in flight), a webhook worker "
        "per round.",
    )
    relay_poll_ms: int = Field(
        default=500, ge=10, le=60000, description="Pause (ms) of the relay when the outbox has nothing to publish."
    )
    escalation_batch_size: int = Field(
        default=200,
        ge=1,
        le=10000,
        description="Due timers, or log events, an escalation worker takes per round; also the customers evaluated "
        "together (their decisions in one transaction, their timers in another), by the workers and `clock tick`.",
    )
    escalation_poll_ms: int = Field(
        default=1000, ge=10, le=600000, description="Pause (ms) of an escalation worker when nothing is due."
    )
    escalation_lease_seconds: int = Field(
        default=300, ge=5, le=86400, description="How long a claimed timer or the log cursor stays with one worker."
    )
    erp_transport: Literal["amqp", "webhook"] = Field(
        default="amqp",
        description="How ERP commands leave: amqp (the relay) or webhook (`relance worker webhook`; the relay then "
        "leaves the erp.* commands alone).",
    )
    webhook_url: str | None = Field(
        default=None, validate_default=True, description="http(s) URL the webhook worker POSTs ERP commands to."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, validate_default=True, description="HMAC-SHA256 key of X-Relance-Signature (16+ characters)."
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds to wait for the receiver to accept the connection and answer."
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, le=1000, description="Failed deliveries of a command before it is dead-lettered."
    )
    webhook_backoff_seconds: float = Field(
        default=30.0, gt=0, le=86400, description="Wait after a command's first failed delivery; doubles each time."
    )
    webhook_backoff_max_seconds: float = Field(
        default=3600.0, gt=0, le=604800, description="Ceiling of the wait between two deliveries of a command."
    )

    smtp_host: str = Field(default="127.0.0.1", description="SMTP server the notifier sends reminders through.")
    smtp_port: int = Field(
        default=587, ge=1, le=65535, description="SMTP port: 587 for STARTTLS, 465 for implicit TLS."
    )
    smtp_tls: Literal["starttls", "implicit", "none"] = Field(
        default="starttls", description="starttls (upgrade after connecting), implicit (TLS from the start) or none."
    )
    smtp_username: str | None = Field(default=None, description="SMTP AUTH user; unset, no authentication.")
    smtp_password: SecretStr | None = Field(default=None, description="SMTP AUTH password.")
    smtp_ca_file: Path | None = Field(
        default=None, description="PEM bundle to verify the SMTP server's certificate with; unset, the system store."
    )
    smtp_timeout: float = Field(default=30.0, gt=0, le=600, description="Seconds to wait for each SMTP reply.")
    smtp_attempts: int = Field(
        default=5, ge=1, le=100, description="Tries of a temporarily refused message before it is deferred."
    )
    smtp_lease_seconds: int = Field(
        default=900, ge=10, le=86400, description="How long a worker that started a send owns it before it is unknown."
    )
    mail_domain: str = Field(
        default="relance.invalid", description="Right-hand side of the Message-IDs: <command_id@domain>."
    )
    mail_from: str = Field(default="relance@relance.invalid", description="From address of the reminders.")
    notifier_queue: str = Field(
        default="relance.notifier",
        description=(
            "Durable queue of the notifier's commands (reminders, plan confirmations); <name>.retry and <name>.dead"
            " go with it."
        ),
    )
    notifier_prefetch: int = Field(default=200, ge=1, le=1000, description="Unacked commands per notifier worker.")
    notifier_batch_size: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="Commands a notifier worker takes at once: read together, their sends claimed in waves of a few "
        "more than RELANCE_NOTIFIER_SMTP_CONNECTIONS and sent concurrently; at most RELANCE_NOTIFIER_PREFETCH.",
    )
    notifier_smtp_connections: int = Field(
        default=8,
        ge=1,
        le=100,
        description="SMTP connections a notifier worker keeps open and reuses: its sends in flight at once.",
    )
    notifier_retry_seconds: int = Field(
        default=60, ge=1, le=86400, description="How long a deferred reminder waits in <queue>.retry before retrying."
    )
    notifier_rate_per_minute: int = Field(
        default=0,
        ge=0,
        le=1_000_000,
        description="Reminders sent per tenant per minute, all workers together (0: no limit).",
    )
    quiet_hours: str = Field(
        default="", description="Local time range with no sending, e.g. 20:00-08:00 (empty: none)."
    )
    quiet_days: str = Field(default="", description="Days with no sending, e.g. sat,sun (empty: none).")
    timezone: str = Field(default="Europe/Paris", description="IANA time zone of quiet hours and quiet days.")

    # Signed checkpoints of the log (shared/ledger/checkpoints.py): keys and exported copies live outside the database.
    checkpoint_key_file: Path | None = Field(
        default=None,
        description="Ed25519 private key (PEM, mode 0600) that `relance checkpoint write` signs with; not in the DB.",
    )
    checkpoint_public_key_file: Path | None = Field(
        default=None,
        description="Public key `relance verify` checks checkpoint signatures with; unset, derived from the key file.",
    )
    checkpoint_dir: Path | None = Field(
        default=None,
        description="Folder outside the database where `relance checkpoint write` exports each checkpoint and "
        "`relance verify` reads them back; unset, none.",
    )

    ingest_secrets: Path | None = Field(
        default=None,
        description="YAML file of `tenant: secret` lines (secrets of 16+ characters, one per tenant) that "
        "authenticate POST /api/v1/ingest (Bearer token or X-Relance-Signature HMAC); unset, HTTP ingest is off.",
    )
    ingest_max_body_bytes: int = Field(
        default=16_777_216,
        ge=1024,
        le=1_073_741_824,
        description="Largest request body POST /api/v1/ingest reads (a larger one is answered 413).",
    )
    # The workspace's sign-in (services/workspace/auth.py): session cookies and the optional OIDC single sign-on.
    workspace_insecure_cookies: bool = Field(
        default=False,
        description="Send the session cookie without Secure, for plain http on loopback (the demo, tests); never in "
        "production, where the workspace is served over https.",
    )
    oidc_issuer: str | None = Field(
        default=None,
        description="OIDC single sign-on: the provider's issuer URL (its /.well-known/openid-configuration is read); "
        "set with RELANCE_OIDC_CLIENT_ID and RELANCE_OIDC_CLIENT_SECRET, or none of the three.",
    )
    oidc_client_id: str | None = Field(default=None, description="OIDC: relance's client id at the provider.")
    oidc_client_secret: SecretStr | None = Field(
        default=None, validate_default=True, description="OIDC: relance's client secret at the provider."
    )

    metrics_address: str | None = Field(
        default=None,
        description="host:port where each worker serves /metrics, /livez and /readyz (e.g. 0.0.0.0:9100; port 0: "
        "any free port, logged); unset, no HTTP server.",
    )
    liveness_seconds: float = Field(
        default=120.0,
        gt=0,
        le=86400,
        description="/livez answers 503 once the worker's loop has not gone round for this long.",
    )

    # Background jobs (services/jobs/): Dramatiq actors on RabbitMQ, their rows in the jobs table.
    jobs_broker: Literal["auto", "rabbitmq", "inprocess"] = Field(
        default="auto",
        description="Where background jobs run: rabbitmq (`relance worker jobs` consumes RELANCE_JOBS_QUEUE), "
        "inprocess (in the process that enqueues them: the embedded default), or auto: inprocess on SQLite, "
        "rabbitmq on PostgreSQL.",
    )
    jobs_queue: str = Field(
        default="relance.jobs",
        description="Dramatiq queue of the background jobs on RabbitMQ (with <name>.DQ and <name>.XQ beside it).",
    )
    jobs_threads: int = Field(default=2, ge=1, le=64, description="Jobs a `relance worker jobs` runs at once.")
    jobs_lease_seconds: int = Field(
        default=30,
        ge=2,
        le=120,  # also the longest broker delay a job's message waits: seconds, never more
        description="A running job's worker touches its heartbeat every quarter of this; a job whose heartbeat is "
        "older is taken over by the next delivery of its message.",
    )
    jobs_max_attempts: int = Field(
        default=5, ge=1, le=100, description="Runs of a job that failed for a transient reason before it is failed."
    )
    jobs_metrics_port: int = Field(
        default=9191,
        ge=0,
        le=65535,
        description="Port of the Prometheus metrics of `relance worker jobs` (Dramatiq's middleware); 0: none.",
    )
    jobs_output_dir: Path = Field(
        default=Path("relance-jobs"),
        description="Where the jobs that make files (audit bundles, committee packs, print batches) write them, one "
        "folder per job id; shared by the jobs workers and the workspace that hands the files out.",
    )

    allow_placeholder_sender: bool = Field(
        default=False,
        description="Let the notifier sign real e-mails with the shipped placeholder sender company (trials only).",
    )

    def require_database_url(self) -> str:
        """The ledger database's URL; there is no default, so a typo cannot quietly create a ``./relance.db``."""
        if self.database_url is None:
            raise ConfigurationError(NO_DATABASE)
        return self.database_url

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        return None if value is None else database_url(value)

    @field_validator("amqp_url")
    @classmethod
    def _amqp_url(cls, value: str) -> str:
        if not value.startswith(("amqp://", "amqps://")):
            raise ValueError("must be an AMQP URL, e.g. amqp://guest:guest@127.0.0.1:5672/%2F")
        return value

    @field_validator("events_exchange", "ingest_queue", "dead_letter_queue", "commands_exchange", "notifier_queue")
    @classmethod
    def _amqp_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-200 characters of letters, digits, '.', '_', ':' or '-'")
        return value

    @field_validator("jobs_queue")
    @classmethod
    def _jobs_queue(cls, value: str) -> str:
        if not _QUEUE.fullmatch(value) or len(value) > 200:
            raise ValueError("must start with a letter or '_', then letters, digits, '.', '_' or '-' (Dramatiq's rule)")
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or not value.strip():
            if info.data.get("erp_transport") == "webhook":
                raise ValueError("required when RELANCE_ERP_TRANSPORT is webhook, e.g. https://erp.example.com/relance")
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. https://erp.example.com/relance")
        return value.strip()

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            if info.data.get("erp_transport") == "webhook":
                raise ValueError("required when RELANCE_ERP_TRANSPORT is webhook: the key receivers verify with")
            return None
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters (a random string, e.g. from `openssl rand -hex 32`)")
        return value

    @field_validator("webhook_backoff_max_seconds")
    @classmethod
    def _webhook_backoff_max(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("webhook_backoff_seconds")
        if base is not None and value < base:
            raise ValueError(f"must be at least RELANCE_WEBHOOK_BACKOFF_SECONDS ({base})")
        return value

    @field_validator("notifier_batch_size")
    @classmethod
    def _notifier_batch_size(cls, value: int, info: ValidationInfo) -> int:
        prefetch = info.data.get("notifier_prefetch")
        if prefetch is not None and value > prefetch:
            raise ValueError(
                f"must be at most RELANCE_NOTIFIER_PREFETCH ({prefetch}): a batch is made of the commands a worker "
                "holds; lower the batch size or raise the prefetch"
            )
        return value

    @field_validator("mail_domain")
    @classmethod
    def _mail_domain(cls, value: str) -> str:
        if len(value) > 253 or not _DOMAIN.fullmatch(value):
            raise ValueError("must be a domain name, e.g. mail.example.com")
        return value.lower()

    @field_validator("mail_from")
    @classmethod
    def _mail_from(cls, value: str) -> str:
        if not _ADDRESS.fullmatch(value):
            raise ValueError("must be a bare email address, e.g. billing@example.com")
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _quiet_hours(cls, value: str) -> str:
        quiet.parse_hours(value)
        return value.strip()

    @field_validator("quiet_days")
    @classmethod
    def _quiet_days(cls, value: str) -> str:
        quiet.parse_days(value)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        quiet.parse_zone(value)
        return value

    @field_validator("ingest_secrets")
    @classmethod
    def _ingest_secrets(cls, value: Path | None) -> Path | None:
        if value is not None:
            read_ingest_secrets(value)  # at start-up: a process never serves with a file it cannot use
        return value

    @field_validator("oidc_issuer")
    @classmethod
    def _oidc_issuer(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be the provider's issuer URL, e.g. https://login.example.com/realms/acme")
        return value.strip().rstrip("/")

    @field_validator("oidc_client_id")
    @classmethod
    def _oidc_client_id(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("oidc_client_secret")
    @classmethod
    def _oidc_client_secret(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        secret = None if value is None or not value.get_secret_value() else value
        given = {
            "RELANCE_OIDC_ISSUER": info.data.get("oidc_issuer"),
            "RELANCE_OIDC_CLIENT_ID": info.data.get("oidc_client_id"),
            "RELANCE_OIDC_CLIENT_SECRET": secret,
        }
        missing = [name for name, found in given.items() if not found]
        if missing and len(missing) < len(given):
            raise ValueError(
                "OIDC sign-in is half-configured: set RELANCE_OIDC_ISSUER, RELANCE_OIDC_CLIENT_ID and "
                f"RELANCE_OIDC_CLIENT_SECRET together (missing: {', '.join(missing)}), or none of them"
            )
        return secret

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        listen_address(value)
        return value.strip()

    @field_validator("smtp_host")
    @classmethod
    def _smtp_host(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("must be a host name or IP address")
        return value


def listen_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[::]:9100`` for IPv6) as the (host, port) a server binds; ValueError saying what to write."""
    host, colon, port = value.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535 or any(c.isspace() for c in host):
        raise ValueError("must be host:port, e.g. 0.0.0.0:9100, 127.0.0.1:9100 or [::]:9100 (port 0: any free port)")
    return host, int(port)


INGEST_SECRET_CHARS = 16
_TENANT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # the contract's tenant (shared/contracts/erp.py, Envelope)


def read_ingest_secrets(path: Path) -> dict[str, SecretStr]:
    """The tenants' HTTP ingest secrets from ``RELANCE_INGEST_SECRETS``: a YAML mapping ``tenant: secret``.

    Raises :class:`ValueError` saying what to fix: a missing or unreadable file, something other than a mapping of
    tenants to strings, a secret shorter than 16 characters, or one secret given to two tenants (a request is
    attributed to the tenant whose secret it carries, so each must be its own). Secrets never appear in a message.
    """
    hint = "e.g. a line `acme-fr: <secret>` per tenant, each secret from `openssl rand -hex 32`"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
        raise ValueError(f"cannot read {path}: {reason}; it must be a YAML file, {hint}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ValueError(f"{path} is not valid YAML{line}; {hint}") from None
    if not isinstance(document, dict) or not document:
        raise ValueError(f"{path} must be a YAML mapping of tenants to secrets, {hint}")
    secrets: dict[str, SecretStr] = {}
    owners: dict[str, str] = {}
    for tenant, secret in document.items():
        if not isinstance(tenant, str) or not _TENANT.match(tenant):
            raise ValueError(
                f"{path}: {str(tenant)[:64]!r} is not a tenant (lowercase letters, digits, '.', '_', '-'; up to 64)"
            )
        if not isinstance(secret, str):
            raise ValueError(f"{path}: the secret of {tenant} must be a string (quote it), {hint}")
        if len(secret) < INGEST_SECRET_CHARS:
            raise ValueError(f"{path}: the secret of {tenant} is shorter than {INGEST_SECRET_CHARS} characters; {hint}")
        if secret in owners:
            raise ValueError(f"{path}: {owners[secret]} and {tenant} have the same secret; give each its own")
        owners[secret] = tenant
        secrets[tenant] = SecretStr(secret)
    return secrets


def database_url(value: str) -> str:
    """The URL as relance opens it: ``postgres://`` and ``postgresql://`` mean psycopg 3, the driver relance ships.

    Refuses a driver or database relance does not ship, with the URL to write instead.
    """
    value = value.strip()
    scheme, separator, rest = value.partition("://")
    if not separator or not scheme:
        raise ValueError("must be a database URL, e.g. postgresql://relance@db.example.com:5432/relance")
    backend, _, driver = scheme.lower().partition("+")
    if backend in ("postgres", "postgresql"):
        if driver not in ("", "psycopg"):
            raise ValueError(
                f"relance ships the psycopg 3 driver, not {driver}: write postgresql://{_hidden(rest)} "
                f"(or postgresql+psycopg://…)"
            )
        value = "postgresql+psycopg://" + rest
    elif backend == "sqlite":
        if driver not in ("", "pysqlite"):
            raise ValueError(f"relance opens SQLite with Python's own sqlite3, not {driver}: write sqlite:///path")
    else:
        raise ValueError(
            f"relance runs on PostgreSQL or SQLite, not {backend}: e.g. postgresql://relance@db.example.com/relance "
            "or sqlite:////var/lib/relance/relance.db"
        )
    try:
        make_url(value)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"is not a valid database URL ({exc})") from None
    return value


def with_application_name(url: str, name: str) -> str:
    """The URL with ``application_name`` set (PostgreSQL), so pg_stat_activity says which relance process is which.

    A name already in the URL is the operator's and stays.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql" or "application_name" in parsed.query:
        return url
    return parsed.update_query_dict({"application_name": name}).render_as_string(hide_password=False)


def hide_password(url: str) -> str:
    """A URL fit for an error message or a log line."""
    scheme, separator, rest = url.partition("://")
    return scheme + separator + _hidden(rest) if separator else url


def _hidden(rest: str) -> str:
    credentials, at, location = rest.rpartition("@")
    user, colon, _ = credentials.partition(":")
    return f"{user}:***@{location}" if at and colon else rest


def known_variables() -> frozenset[str]:
    """Every ``RELANCE_*`` name relance reads: the settings, their ``_FILE`` variants and :data:`READ_ELSEWHERE`."""
    names = {PREFIX + field.upper() for field in Settings.model_fields}
    return frozenset({*names, *(name + FILE_SUFFIX for name in names), *READ_ELSEWHERE})


def check_environment(environ: Mapping[str, str]) -> None:
    """Refuse ``RELANCE_*`` variables that nothing reads: a typo must not leave a default silently in its place."""
    known = known_variables()
    unknown = sorted(name for name in environ if name.upper().startswith(PREFIX) and name.upper() not in known)
    if not unknown:
        return
    # Compared without the prefix they all share, which would make every name look close to every other.
    suffixes = [name.removeprefix(PREFIX) for name in sorted(known)]
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name.upper().removeprefix(PREFIX), suffixes, n=1, cutoff=0.6)
        hint = f"did you mean {PREFIX}{close[0]}?" if close else "no setting has a name close to it"
        lines.append(f"  {name}: unknown setting ({hint})")
    raise ConfigurationError(
        "unknown RELANCE_* environment variable(s), fix or unset them (the README lists every setting):\n"
        + "\n".join(lines)
    )


def values_from_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The settings given as ``RELANCE_<NAME>_FILE``: each file's content, trailing line breaks removed."""
    upper = {name.upper(): name for name in environ}
    values: dict[str, str] = {}
    for field in Settings.model_fields:
        variable = PREFIX + field.upper()
        file_variable = variable + FILE_SUFFIX
        if file_variable not in upper or field + FILE_SUFFIX.lower() in Settings.model_fields:
            continue  # not given, or a setting of its own (a path such as RELANCE_RATES_FILE), read as such
        if variable in upper:
            raise ConfigurationError(f"{variable} and {file_variable} are both set: keep one of them")
        path = Path(environ[upper[file_variable]])
        try:
            values[field] = path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
            raise ConfigurationError(f"{file_variable}: cannot read {path}: {reason}") from None
    return values


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (and explicit overrides, which win), or explain what to fix."""
    check_environment(os.environ)
    values = {**values_from_files(os.environ), **overrides}
    try:
        return Settings(**values)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            lines.append(f"  {PREFIX}{field.upper()}: {message} ({_shown(field, error.get('input'))})")
        raise ConfigurationError("invalid configuration, fix these settings:\n" + "\n".join(lines)) from None


def _shown(field: str, given: object) -> str:
    if given is None:
        return "unset"
    if field in _SECRETS:
        return "got a hidden value"
    if field in _URLS and isinstance(given, str):
        return f"got {hide_password(given)!r}"
    return f"got {given!r}"


@lru_cache(maxsize=1)
def settings() -> Settings:
    return load_settings()
