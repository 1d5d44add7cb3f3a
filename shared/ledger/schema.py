"""Tables of the ledger. The event log is append-only: triggers in the database refuse UPDATE and DELETE.

Migrations (``shared/ledger/migrations``) create these tables; the metadata here is what the code reads and writes.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData()

Json = JSON().with_variant(JSONB(), "postgresql")


class DecimalText(TypeDecorator[Decimal]):
    """Money on SQLite: kept as text, since SQLite's NUMERIC goes through a binary float and rounds large amounts."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


Money = Numeric(24, 6, asdecimal=True).with_variant(DecimalText(), "sqlite")
Position = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: an alias of the rowid

events = Table(
    "events",
    metadata,
    Column("position", Position, primary_key=True, autoincrement=True),
    # PostgreSQL: pg_current_xact_id() of the appending transaction (see EventStore.read_all). SQLite: NULL.
    Column("tx_id", BigInteger, nullable=True),
    Column("tenant", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("version", Integer, nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("data", Json, nullable=False),
    Column("metadata", Json, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("tenant", "customer_id", "version", name="uq_events_stream_version"),
    UniqueConstraint("tenant", "event_id", name="uq_events_tenant_event_id"),
)

# What each event says (shared/ledger/hashing.py: fingerprint), by event id: an event_id seen again with another
# fingerprint is an id reused for another event, not a redelivery. Written with the event, never changed.
event_fingerprints = Table(
    "event_fingerprints",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("event_id", String(128), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
)

customer_state = Table(
    "customer_state",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("customer_id", String(128), primary_key=True),
    Column("version", Integer, nullable=False),  # the stream's version: the row is locked to append
    Column("head_hash", String(64), nullable=False),  # hash of the stream's last event
    Column("snapshot_version", Integer, nullable=False),  # the version ``state`` was folded up to
    Column("state", Json, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

customer_balances = Table(
    "customer_balances",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("customer_id", String(128), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("balance", Money, nullable=False),  # open invoices less unallocated credit
    Column("unallocated", Money, nullable=False),
    Column("open_invoices", Integer, nullable=False),
    Column("version", Integer, nullable=False),
)

credits = Table(
    "credits",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("customer_id", String(128), primary_key=True),
    Column("credit_key", String(160), primary_key=True),  # payment:<id> or credit_note:<id>
    Column("kind", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", Money, nullable=False),
    Column("received_on", Date, nullable=False),
    Column("unallocated", Money, nullable=False),
    Column("applied", Json, nullable=False),  # invoice_id -> amount (decimal string)
)

invoice_balances = Table(
    "invoice_balances",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("customer_id", String(128), primary_key=True),
    Column("invoice_id", String(128), primary_key=True),
    Column("number", String(128), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("amount", Money, nullable=False),
    Column("outstanding", Money, nullable=False),
    Column("issue_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("status", String(16), nullable=False),
    Column("disputed", Boolean, nullable=False),
    Index("ix_invoice_balances_due", "tenant", "status", "due_date"),
)

# Commands to other services and to the ERP, written in the transaction of the events that cause them and relayed
# to RabbitMQ afterwards (services/relay/). Not the log: the relay marks rows published (UPDATE is allowed here).
outbox = Table(
    "outbox",
    metadata,
    Column("id", Position, primary_key=True, autoincrement=True),
    Column("tx_id", BigInteger, nullable=True),  # PostgreSQL: pg_current_xact_id() of the writing transaction
    Column("tenant", String(64), nullable=False),
    Column("customer_id", String(128), nullable=False),
    Column("command_id", String(128), nullable=False),  # the event_id of the causing event
    Column("kind", String(64), nullable=False),  # routing key, e.g. erp.credit_block
    Column("payload", Json, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=True),  # webhook backoff: not before this instant
    Column("dead_at", DateTime(timezone=True), nullable=True),  # an adapter gave up: no longer pending
    Column("last_error", Text, nullable=True),
    UniqueConstraint("tenant", "command_id", name="uq_outbox_tenant_command_id"),
)

# The next instant something is due for a customer (escalation's durable timers). ``version`` is the stream version
# the due time was computed from: an older evaluation never overwrites a newer one's timer.
timers = Table(
    "timers",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("customer_id", String(128), primary_key=True),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_timers_due_at", "due_at"),
)

# Where each global reader of the log stands, and which process holds it (a lease, so a crashed holder is replaced).
cursors = Table(
    "cursors",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("tx_id", BigInteger, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("holder", String(128), nullable=True),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The exact MIME bytes of every reminder handed to SMTP (services/notifier/evidence.py): the log's reminder.sending
# and reminder.sent events carry their SHA-256, this table the bytes themselves. Written once, never changed.
sent_messages = Table(
    "sent_messages",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("message_id", String(255), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("command_id", String(128), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("mime", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "command_id", name="uq_sent_messages_tenant_command_id"),
)

# The exact PDF of every letter relance rendered (a reminder letter, a formal notice, a plan's confirmation): the log's
# letter event carries its SHA-256, this table the bytes. Written once, never changed; posting and delivery are events.
letters = Table(
    "letters",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("letter_id", String(128), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("command_id", String(128), nullable=False),
    Column("kind", String(32), nullable=False),  # reminder | confirmation
    Column("sha256", String(64), nullable=False),
    Column("pdf", LargeBinary, nullable=False),
    Column("pages", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("tenant", "command_id", name="uq_letters_tenant_command_id"),
    Index("ix_letters_tenant_created_at", "tenant", "created_at"),
)

# The notifier's rate limit per tenant: messages sent in the current one-minute window, shared by every worker.
send_budget = Table(
    "send_budget",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("window_start", DateTime(timezone=True), nullable=False),
    Column("sent", Integer, nullable=False),
)

# Signed checkpoints of the log (shared/ledger/checkpoints.py): each one anchors every stream's head and the global
# order up to a point, signed with a key the database never holds. Written once, never changed; the copies exported
# outside the database are what makes deleting or rewriting these rows detectable.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("digest", String(64), nullable=False, unique=True),  # SHA-256 of the signed part
    Column("streams", Integer, nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("merkle_root", String(64), nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("document", Json, nullable=False),  # the whole checkpoint, as exported: signed part, signature, leaves
)

# What each customer's last complete evaluation saw (services/escalation/evaluations.py): the stream version its next
# due instant was computed from, the instant, and a digest of what else the decisions depend on (the tenant's policy
# book, the rate table, the engine's code). A sweep skips the customers for whom none of it changed.
evaluations = Table(
    "evaluations",
    metadata,
    Column("tenant", String(64), primary_key=True),
    Column("customer_id", String(128), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("as_of", DateTime(timezone=True), nullable=False),
    Column("next_due", DateTime(timezone=True), nullable=True),
    Column("basis", String(64), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# The workspace's people (services/workspace/users.py): users are global, their roles are per tenant. Passwords are
# Argon2 hashes (none for a user who signs in with OIDC only); sessions and personal API tokens are kept as the
# SHA-256 of the secret the browser or the client holds, so the database never holds a usable credential.
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("login", String(254), nullable=False, unique=True),
    Column("display_name", String(200), nullable=False),
    Column("password_hash", String(512), nullable=True),
    Column("oidc_subject", String(255), nullable=True, unique=True),
    Column("disabled_at", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# A role granted, or once granted then revoked (revoked_at): revoking never deletes, so who held what stays known.
user_roles = Table(
    "user_roles",
    metadata,
    Column("user_id", Integer, primary_key=True),
    Column("tenant", String(64), primary_key=True),
    Column("role", String(32), primary_key=True),
    Column("granted_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

sessions = Table(
    "sessions",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("csrf_secret", String(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),  # moves forward with use: the idle timeout
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("sessions_user", "user_id"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_sha256", String(64), primary_key=True),
    Column("user_id", Integer, nullable=False),
    Column("label", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Index("api_tokens_user", "user_id"),
)

# Failed sign-ins, counted per login and per client address over a window to slow guessing down.
login_failures = Table(
    "login_failures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("login", String(254), nullable=False),
    Column("address", String(64), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("login_failures_login", "login", "at"),
    Index("login_failures_address", "address", "at"),
)

# Background jobs (services/jobs/store.py): who asked for what, how far it is, and what came of it. The id is chosen
# by whoever enqueues (deterministic, so asking twice is one job); a worker claims the row before running it and
# touches heartbeat_at while it runs, so a job whose worker died is taken over once the heartbeat is old.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(128), primary_key=True),
    Column("tenant", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("args", Json, nullable=False),
    Column("status", String(16), nullable=False),  # queued | running | done | failed
    Column("progress_done", BigInteger, nullable=False, default=0),
    Column("progress_total", BigInteger, nullable=True),
    Column("progress_note", String(500), nullable=False, default=""),
    Column("result", Json, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("requested_by", String(254), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    Index("ix_jobs_tenant_created_at", "tenant", "created_at"),
)
