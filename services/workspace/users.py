"""The workspace's people: users, their roles per tenant, sessions, personal API tokens and failed sign-ins.

Users are global (one ``users`` table) and hold roles per tenant (:data:`services.workspace.roles.ROLES`). Passwords
are hashed with Argon2id (argon2-cffi's :class:`PasswordHasher`); a hash made with older parameters is replaced at the
next successful sign-in. An unknown login costs the same time as a known one (a dummy hash is verified), so timing
does not tell which logins exist. A session or a personal token is a random secret the browser or client holds; the
database keeps only its SHA-256. Every query is built by SQLAlchemy with bound parameters.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import Engine, and_, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.workspace.roles import ROLES
from shared.ledger.schema import api_tokens, login_failures, sessions, user_roles, users

MIN_PASSWORD = 12
MAX_PASSWORD = 1024  # Argon2 takes any length; a megabyte "password" would only cost the server time
SESSION_IDLE = timedelta(hours=8)
SESSION_MAX = timedelta(hours=24)  # a session used all day still ends: sign in again the next morning
TOKEN_PREFIX = "rlc_"
_LOGIN = re.compile(r"^[a-z0-9][a-z0-9._@+-]{0,253}$")
_TENANT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # the contract's tenant
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:-]{0,99}$")


class UserError(ValueError):
    """What was asked cannot be done (an unknown or existing login, a weak password, an unknown role); says why."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def normal_login(login: str) -> str:
    """The login as stored (lower case, spaces around removed); :class:`UserError` unless it is a plain login."""
    value = login.strip().lower()
    if not _LOGIN.fullmatch(value):
        raise UserError(
            "a login is 1 to 254 characters: lower-case letters, digits and . _ @ + - (an e-mail address works), "
            "starting with a letter or digit"
        )
    return value


def check_display_name(name: str) -> str:
    value = name.strip()
    if not value or len(value) > 200:
        raise UserError("a display name is 1 to 200 characters")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in value):
        raise UserError("a display name holds no control or formatting characters")
    return value


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password is too weak: at least {MIN_PASSWORD} characters (a few words make a good one)")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password is longer than {MAX_PASSWORD} characters")
    if password.strip() != password or len(set(password)) < 4:
        raise UserError("the password is too weak: no spaces around it, and more than three different characters")
    return password


def check_role(tenant: str, role: str) -> tuple[str, str]:
    if not _TENANT.fullmatch(tenant):
        raise UserError(f"{tenant[:64]!r} is not a tenant (lower-case letters, digits, '.', '_', '-'; up to 64)")
    if role not in ROLES:
        raise UserError(f"{role[:40]!r} is not a role: one of {', '.join(ROLES)}")
    return tenant, role


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class User:
    id: int
    login: str
    display_name: str
    has_password: bool
    oidc_subject: str | None
    disabled_at: datetime | None
    created_at: datetime
    roles: dict[str, frozenset[str]] = field(default_factory=dict)

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


@dataclass(frozen=True)
class SessionInfo:
    user: User
    csrf_secret: str
    expires_at: datetime


@dataclass(frozen=True)
class Failures:
    """Failed sign-ins within the window: for the login, for the address, and when the oldest of each leaves it."""

    by_login: int
    by_address: int
    login_oldest: datetime | None
    address_oldest: datetime | None


def _aware(value: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes: they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class UserStore:
    """Users, roles, sessions, tokens and failed sign-ins in the ledger's database (SQLite or PostgreSQL)."""

    def __init__(
        self, engine: Engine, *, hasher: PasswordHasher | None = None, now: Callable[[], datetime] = utc_now
    ) -> None:
        self.engine = engine
        self.hasher = hasher or PasswordHasher()
        self.now = now
        self._dummy = self.hasher.hash(secrets.token_urlsafe(16))

    # ------------------------------------------------------------------------------------------------ users
    def add(
        self, login: str, display_name: str, *, password: str | None = None, oidc_subject: str | None = None
    ) -> User:
        name = normal_login(login)
        values: dict[str, Any] = {
            "login": name,
            "display_name": check_display_name(display_name),
            "password_hash": None if password is None else self.hasher.hash(check_password(password)),
            "oidc_subject": oidc_subject,
            "created_at": self.now(),
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users).values(**values))
        except IntegrityError:
            raise UserError(f"a user {name} already exists") from None
        return self._require(name)

    def get(self, login: str) -> User | None:
        try:
            value = normal_login(login)
        except UserError:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.login == value)).mappings().one_or_none()
            return None if row is None else self._user(conn, row)

    def by_id(self, user_id: int) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).mappings().one_or_none()
            return None if row is None else self._user(conn, row)

    def all(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(users).order_by(users.c.login)).mappings().all()
            return [self._user(conn, row) for row in rows]

    def set_password(self, login: str, password: str) -> None:
        user = self._require(login)
        hashed = self.hasher.hash(check_password(password))
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user.id).values(password_hash=hashed))

    def set_display_name(self, login: str, display_name: str) -> None:
        user = self._require(login)
        with self.engine.begin() as conn:
            conn.execute(
                update(users).where(users.c.id == user.id).values(display_name=check_display_name(display_name))
            )

    def disable(self, login: str) -> User:
        """Disable the user and revoke every session and token it holds, in one transaction."""
        user = self._require(login)
        at = self.now()
        with self.engine.begin() as conn:
            conn.execute(
                update(users).where(users.c.id == user.id, users.c.disabled_at.is_(None)).values(disabled_at=at)
            )
            conn.execute(
                update(sessions)
                .where(sessions.c.user_id == user.id, sessions.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
            conn.execute(
                update(api_tokens)
                .where(api_tokens.c.user_id == user.id, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=at)
            )
        return self._require(login)

    def enable(self, login: str) -> None:
        user = self._require(login)
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user.id).values(disabled_at=None))

    def link_oidc(self, user_id: int, subject: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user_id).values(oidc_subject=subject))

    def by_oidc(self, subject: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.oidc_subject == subject)).mappings().one_or_none()
            return None if row is None else self._user(conn, row)

    # ------------------------------------------------------------------------------------------------ roles
    def grant(self, login: str, tenant: str, role: str) -> bool:
        """Grant ``role`` in ``tenant``; False if the user held it already."""
        user = self._require(login)
        check_role(tenant, role)
        key = and_(user_roles.c.user_id == user.id, user_roles.c.tenant == tenant, user_roles.c.role == role)
        with self.engine.begin() as conn:
            found = conn.execute(select(user_roles.c.revoked_at).where(key)).one_or_none()
            if found is None:
                conn.execute(
                    insert(user_roles).values(user_id=user.id, tenant=tenant, role=role, granted_at=self.now())
                )
                return True
            if found.revoked_at is None:
                return False
            conn.execute(update(user_roles).where(key).values(granted_at=self.now(), revoked_at=None))
            return True

    def revoke(self, login: str, tenant: str, role: str) -> bool:
        """Revoke ``role`` in ``tenant``; False if the user did not hold it."""
        user = self._require(login)
        check_role(tenant, role)
        with self.engine.begin() as conn:
            result = conn.execute(
                update(user_roles)
                .where(
                    user_roles.c.user_id == user.id,
                    user_roles.c.tenant == tenant,
                    user_roles.c.role == role,
                    user_roles.c.revoked_at.is_(None),
                )
                .values(revoked_at=self.now())
            )
            return bool(result.rowcount)

    # ------------------------------------------------------------------------------------------------ sign-in
    def authenticate(self, login: str, password: str) -> User | None:
        """The user whose login and password these are, enabled; else None, in about the same time either way."""
        try:
            value = normal_login(login)
        except UserError:
            value = None
        row = None
        if value is not None and len(password) <= MAX_PASSWORD:
            with self.engine.connect() as conn:
                row = conn.execute(select(users).where(users.c.login == value)).mappings().one_or_none()
        stored = row["password_hash"] if row is not None else None
        try:
            self.hasher.verify(stored or self._dummy, password[:MAX_PASSWORD])
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return None
        if row is None or stored is None or row["disabled_at"] is not None:
            return None
        if self.hasher.check_needs_rehash(stored):
            with self.engine.begin() as conn:
                conn.execute(
                    update(users)
                    .where(users.c.id == row["id"], users.c.password_hash == stored)
                    .values(password_hash=self.hasher.hash(password))
                )
        return self.by_id(row["id"])

    def record_failure(self, login: str, address: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(login_failures).values(login=login.strip().lower()[:254], address=address[:64], at=self.now())
            )

    def failures(self, login: str, address: str, window: timedelta) -> Failures:
        since = self.now() - window
        key = login.strip().lower()[:254]
        with self.engine.begin() as conn:
            conn.execute(delete(login_failures).where(login_failures.c.at < since))  # out of every window
            by_login = conn.execute(
                select(func.count(), func.min(login_failures.c.at)).where(
                    login_failures.c.login == key, login_failures.c.at >= since
                )
            ).one()
            by_address = conn.execute(
                select(func.count(), func.min(login_failures.c.at)).where(
                    login_failures.c.address == address[:64], login_failures.c.at >= since
                )
            ).one()
        return Failures(by_login[0], by_address[0], _aware(by_login[1]), _aware(by_address[1]))

    def clear_failures(self, login: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(login_failures).where(login_failures.c.login == login.strip().lower()[:254]))

    # ------------------------------------------------------------------------------------------------ sessions
    def open_session(self, user_id: int) -> tuple[str, str]:
        """A new session of the user: (the token for the cookie, the session's CSRF secret)."""
        token, csrf = secrets.token_urlsafe(32), secrets.token_hex(32)
        at = self.now()
        with self.engine.begin() as conn:
            conn.execute(delete(sessions).where(sessions.c.expires_at < at - SESSION_MAX))  # ended a day ago
            conn.execute(
                insert(sessions).values(
                    token_sha256=digest(token),
                    user_id=user_id,
                    csrf_secret=csrf,
                    created_at=at,
                    expires_at=at + SESSION_IDLE,
                )
            )
        return token, csrf

    def session(self, token: str) -> SessionInfo | None:
        """The session of this token if it is valid (not revoked, not idle too long, not too old, user enabled);
        its idle timeout starts again."""
        if not token or len(token) > 200:
            return None
        at = self.now()
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(sessions).where(sessions.c.token_sha256 == digest(token))).mappings().one_or_none()
            )
        if row is None or row["revoked_at"] is not None:
            return None
        expires, created = _aware(row["expires_at"]), _aware(row["created_at"])
        assert expires is not None and created is not None
        if expires <= at or created + SESSION_MAX <= at:
            return None
        user = self.by_id(row["user_id"])
        if user is None or user.disabled:
            return None
        renewed = min(at + SESSION_IDLE, created + SESSION_MAX)
        if renewed - expires > timedelta(minutes=1):  # not one write per request
            with self.engine.begin() as conn:
                conn.execute(
                    update(sessions).where(sessions.c.token_sha256 == row["token_sha256"]).values(expires_at=renewed)
                )
            expires = renewed
        return SessionInfo(user, row["csrf_secret"], expires)

    def revoke_session(self, token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(sessions)
                .where(sessions.c.token_sha256 == digest(token), sessions.c.revoked_at.is_(None))
                .values(revoked_at=self.now())
            )

    # ------------------------------------------------------------------------------------------------ tokens
    def add_token(self, login: str, label: str) -> str:
        """A new personal API token of the user, returned once (only its SHA-256 is kept)."""
        user = self._require(login)
        if not _LABEL.fullmatch(label):
            raise UserError("a token's label is 1 to 100 letters, digits, spaces and . _ : -")
        if user.disabled:
            raise UserError(f"{user.login} is disabled: enable it before giving it a token")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            taken = conn.execute(
                select(api_tokens.c.label).where(
                    api_tokens.c.user_id == user.id, api_tokens.c.label == label, api_tokens.c.revoked_at.is_(None)
                )
            ).first()
            if taken is not None:
                raise UserError(f"{user.login} already has a token labelled {label!r}: revoke it or choose another")
            conn.execute(
                insert(api_tokens).values(
                    token_sha256=digest(token), user_id=user.id, label=label, created_at=self.now()
                )
            )
        return token

    def revoke_token(self, login: str, label: str) -> bool:
        user = self._require(login)
        with self.engine.begin() as conn:
            result = conn.execute(
                update(api_tokens)
                .where(api_tokens.c.user_id == user.id, api_tokens.c.label == label, api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.now())
            )
            return bool(result.rowcount)

    def tokens(self, login: str) -> list[dict[str, Any]]:
        user = self._require(login)
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(api_tokens.c.label, api_tokens.c.created_at, api_tokens.c.revoked_at)
                .where(api_tokens.c.user_id == user.id)
                .order_by(api_tokens.c.created_at)
            ).mappings()
            return [
                {"label": r["label"], "created_at": _aware(r["created_at"]), "revoked_at": _aware(r["revoked_at"])}
                for r in rows
            ]

    def token_user(self, token: str) -> User | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(
                select(api_tokens.c.user_id).where(
                    api_tokens.c.token_sha256 == digest(token), api_tokens.c.revoked_at.is_(None)
                )
            ).one_or_none()
        if row is None:
            return None
        user = self.by_id(row.user_id)
        return None if user is None or user.disabled else user

    # ------------------------------------------------------------------------------------------------ helpers
    def _require(self, login: str) -> User:
        user = self.get(login)
        if user is None:
            raise UserError(f"no user {login.strip().lower()[:254]!r}")
        return user

    def _user(self, conn: Any, row: Any) -> User:
        held: dict[str, set[str]] = {}
        for tenant, role in conn.execute(
            select(user_roles.c.tenant, user_roles.c.role).where(
                user_roles.c.user_id == row["id"], user_roles.c.revoked_at.is_(None)
            )
        ):
            held.setdefault(tenant, set()).add(role)
        return User(
            id=row["id"],
            login=row["login"],
            display_name=row["display_name"],
            has_password=row["password_hash"] is not None,
            oidc_subject=row["oidc_subject"],
            disabled_at=_aware(row["disabled_at"]),
            created_at=_aware(row["created_at"]) or row["created_at"],
            roles={tenant: frozenset(roles) for tenant, roles in sorted(held.items())},
        )


def role_pairs(tenants: Sequence[str], roles: Sequence[str]) -> list[tuple[str, str]]:
    """``--tenant T --role R`` given in pairs, checked."""
    if len(tenants) != len(roles):
        raise UserError("give --tenant and --role in pairs: --tenant acme-fr --role collector")
    return [check_role(t, r) for t, r in zip(tenants, roles, strict=True)]
