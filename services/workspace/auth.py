"""Who is signed in to the workspace, and how: password or OIDC sign-in, sessions, CSRF, personal API tokens.

- A browser signs in at ``/login`` (or through the company's OIDC provider at ``/login/oidc`` when
  ``RELANCE_OIDC_*`` is set) and gets the cookie ``relance_session``: a random token whose SHA-256 names a row of
  ``sessions`` (HttpOnly, SameSite=Lax, Secure unless ``RELANCE_WORKSPACE_INSECURE_COOKIES=1``). A new session is
  opened at every sign-in (the session id is never carried over), it ends after 8 hours without use, after 24
  hours in any case, at ``POST /logout``, and when the user is disabled.
- Every form carries ``csrf_token`` (:func:`csrf_field`): an HMAC of the page's purpose by the session's own secret;
  an unsafe API call made with the session cookie carries the same value in ``X-CSRF-Token``. The sign-in form,
  which comes before any session, is protected the same way by a pre-session cookie (double submit).
- API clients may instead send ``Authorization: Bearer <personal token>`` (``relance user token add``).
- Failed sign-ins are counted per login (5 per 15 minutes) and per client address (20 per 15 minutes); past either,
  ``POST /login`` answers 429 with ``Retry-After`` and says when to try again.
- :func:`install` adds the security headers to every answer: a Content-Security-Policy without inline scripts (htmx
  is served from ``/static``), ``X-Frame-Options: DENY``, ``Referrer-Policy``, ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Protocol
from urllib.parse import quote, urlsplit

import authlib.deprecate  # noqa: F401 - first, so that its own warning filter is set before ours
import httpx
import structlog
from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from sqlalchemy import Engine

from services.workspace.roles import allowed
from services.workspace.users import SessionInfo, User, UserStore
from shared.config import Settings

with warnings.catch_warnings():  # authlib announces joserfc; its JOSE module stays supported until 2.0
    warnings.simplefilter("ignore")
    from authlib.integrations.httpx_client import OAuth2Client
    from authlib.jose import JsonWebKey, JsonWebToken
    from authlib.oidc.core import CodeIDToken

COOKIE = "relance_session"
LOGIN_COOKIE = "relance_login"  # the sign-in form's pre-session CSRF value
OIDC_COOKIE = "relance_oidc"  # state, nonce and PKCE verifier of a sign-in in progress at the provider
CSRF_HEADER = "X-CSRF-Token"
CSRF_REFUSED = "the form has expired or did not come from relance: reload the page"
WINDOW = timedelta(minutes=15)
MAX_PER_LOGIN = 5
MAX_PER_ADDRESS = 20
OIDC_FLOW_SECONDS = 600
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
TEMPLATES = Path(__file__).parent / "templates"

log = structlog.get_logger()
router = APIRouter()


# ---------------------------------------------------------------------------------------------------- principal
@dataclass(frozen=True)
class Principal:
    """The signed-in user and the roles it holds, per tenant."""

    login: str
    display_name: str
    roles: dict[str, frozenset[str]] = field(default_factory=dict)

    def tenants(self) -> list[str]:
        return sorted(t for t, r in self.roles.items() if r)

    def roles_in(self, tenant: str) -> frozenset[str]:
        return self.roles.get(tenant, frozenset())

    def can(self, tenant: str, permission: str) -> bool:
        return allowed(self.roles_in(tenant), permission)


def principal_of(user: User) -> Principal:
    return Principal(user.login, user.display_name, dict(user.roles))


# ---------------------------------------------------------------------------------------------------- set-up
class AuthPorts(Protocol):
    """What :func:`install` reads of the workspace's ports."""

    @property
    def settings(self) -> Settings: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def now(self) -> Callable[[], datetime]: ...


@dataclass
class AuthState:
    store: UserStore
    secure_cookies: bool
    now: Callable[[], datetime]
    oidc: OidcClient | None = None


def install(app: FastAPI, ports: AuthPorts) -> None:
    """Give ``app`` its user store, session settings, OIDC client (when configured) and security headers."""
    settings = ports.settings
    oidc = None
    if settings.oidc_issuer and settings.oidc_client_id and settings.oidc_client_secret:
        oidc = OidcClient(settings.oidc_issuer, settings.oidc_client_id, settings.oidc_client_secret.get_secret_value())
    app.state.auth = AuthState(
        store=UserStore(ports.engine, now=ports.now),
        secure_cookies=not settings.workspace_insecure_cookies,
        now=ports.now,
        oidc=oidc,
    )
    app.add_middleware(SecurityHeaders, hsts=not settings.workspace_insecure_cookies)


def _state(request: Request) -> AuthState:
    state: AuthState = request.app.state.auth
    return state


class SecurityHeaders:
    """Adds :data:`SECURITY_HEADERS` to every HTTP answer, ``Cache-Control: no-store`` outside ``/static`` (pages
    hold customers' data), and ``Strict-Transport-Security`` when the workspace is served over https."""

    def __init__(self, app: Callable[..., Awaitable[None]], hsts: bool = True) -> None:
        self.app = app
        self.extra = ((b"strict-transport-security", b"max-age=31536000"),) if hsts else ()

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def sending(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in SECURITY_HEADERS + self.extra if name not in present]
                if not static and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


# ---------------------------------------------------------------------------------------------------- who is it
def _session(request: Request) -> SessionInfo | None:
    if hasattr(request.state, "relance_session"):
        found: SessionInfo | None = request.state.relance_session
        return found
    token = request.cookies.get(COOKIE, "")
    found = _state(request).store.session(token) if token else None
    request.state.relance_session = found
    return found


def page_user(request: Request) -> Principal:
    """The signed-in user of a page; anyone else is sent to ``/login`` (and back here after signing in)."""
    found = _session(request)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        location = "/login" if target == "/" else f"/login?next={quote(target, safe='')}"
        raise HTTPException(status_code=303, detail="sign in first", headers={"Location": location})
    return principal_of(found.user)


def api_user(request: Request) -> Principal:
    """The caller of the API: a personal token (``Authorization: Bearer``) or the session cookie, whose unsafe
    requests must carry ``X-CSRF-Token``. Anyone else: 401."""
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        user = _state(request).store.token_user(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise HTTPException(
                status_code=401,
                detail="the token is unknown, revoked or its user disabled",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return principal_of(user)
    found = _session(request)
    if found is None:
        raise HTTPException(
            status_code=401,
            detail="sign in first: a session cookie or Authorization: Bearer <personal token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.method not in SAFE_METHODS and not _csrf_ok(request, found, request.headers.get(CSRF_HEADER, "")):
        raise HTTPException(status_code=403, detail=f"{CSRF_HEADER} is missing or wrong: {CSRF_REFUSED}")
    return principal_of(found.user)


# ---------------------------------------------------------------------------------------------------- CSRF
def _hmac(key: str, purpose: str) -> str:
    return hmac.new(key.encode(), b"relance-csrf\x00" + purpose.encode(), hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The value a form's ``csrf_token`` (or an API call's ``X-CSRF-Token``) must carry in this session; before
    sign-in, the sign-in form's."""
    found = _session(request)
    if found is not None:
        return _hmac(found.csrf_secret, "session")
    return _login_csrf(request)


def csrf_field(request: Request) -> Markup:
    """The hidden ``csrf_token`` input every form of the workspace carries."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(csrf_token(request))


def _login_csrf(request: Request) -> str:
    value = getattr(request.state, "relance_login_csrf", None) or request.cookies.get(LOGIN_COOKIE, "")
    if not value or len(value) > 100:
        value = secrets.token_urlsafe(32)
    request.state.relance_login_csrf = value
    return _hmac(value, "login")


def _csrf_ok(request: Request, found: SessionInfo, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), _hmac(found.csrf_secret, "session").encode())


async def check_csrf(request: Request) -> None:
    """Refuse (403) an unsafe request whose form field ``csrf_token`` (or ``X-CSRF-Token`` header) is not this
    session's."""
    if request.method in SAFE_METHODS:
        return
    found = await run_in_threadpool(_session, request)
    given = request.headers.get(CSRF_HEADER, "")
    if not given:
        form = await request.form()
        value = form.get("csrf_token")
        given = value if isinstance(value, str) else ""
    if found is None or not _csrf_ok(request, found, given):
        raise HTTPException(status_code=403, detail=CSRF_REFUSED)


# ---------------------------------------------------------------------------------------------------- pages
MESSAGES: dict[str, dict[str, str]] = {
    "sign_in": {"fr": "Se connecter", "en": "Sign in"},
    "sign_in_title": {"fr": "Connexion à relance", "en": "Sign in to relance"},
    "login": {"fr": "Identifiant", "en": "Login"},
    "password": {"fr": "Mot de passe", "en": "Password"},
    "sign_in_oidc": {"fr": "Se connecter avec l'authentification unique", "en": "Sign in with single sign-on"},
    "or": {"fr": "ou", "en": "or"},
    "wrong": {"fr": "Identifiant ou mot de passe incorrect.", "en": "Wrong login or password."},
    "too_many": {
        "fr": "Trop de tentatives de connexion échouées : réessayez après {at} UTC (dans {minutes} min).",
        "en": "Too many failed sign-ins: try again after {at} UTC (in {minutes} min).",
    },
    "no_account": {
        "fr": "Aucun compte relance ne correspond à cette connexion : demandez à un administrateur de vous créer.",
        "en": "No relance account matches this sign-in: ask an administrator to add you.",
    },
    "oidc_failed": {
        "fr": "La connexion par le fournisseur d'identité a échoué : {reason}. Réessayez.",
        "en": "Signing in with the identity provider failed: {reason}. Try again.",
    },
    "expired": {
        "fr": "Le formulaire a expiré ou ne vient pas de relance : rechargez la page.",
        "en": "The form has expired or did not come from relance: reload the page.",
    },
    "language": {"fr": "English", "en": "Français"},
    "sign_out": {"fr": "Se déconnecter", "en": "Sign out"},
}


def language(request: Request) -> str:
    """``?lang=``, then the ``relance_lang`` cookie, then ``Accept-Language``; English by default."""
    for given in (request.query_params.get("lang"), request.cookies.get("relance_lang")):
        if given in ("fr", "en"):
            return given
    for part in request.headers.get("accept-language", "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in ("fr", "en"):
            return code
    return "en"


class Strings:
    """The sign-in page's strings in one language, called like the workspace's translator: ``t("sign_in")``."""

    def __init__(self, lang: str) -> None:
        self.lang = lang

    def __call__(self, key: str, **values: object) -> str:
        text = MESSAGES.get(key, {}).get(self.lang, key)
        return text.format(**values) if values else text


def _templates(request: Request) -> Jinja2Templates:
    found = getattr(request.app.state, "templates", None)
    if isinstance(found, Jinja2Templates):
        return found
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, auto_reload=False)
    templates = Jinja2Templates(env=environment)
    request.app.state.templates = templates
    return templates


def _local(target: str | None) -> str:
    """Where to go after signing in: a path of this site only (never ``//elsewhere`` nor ``/\\elsewhere``)."""
    if not target or len(target) > 2000 or not target.startswith("/") or target.startswith(("//", "/\\")):
        return "/"
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in target) or urlsplit(target).netloc:
        return "/"
    return target


def _login_page(
    request: Request,
    *,
    status: int = 200,
    error: str = "",
    login: str = "",
    target: str = "/",
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    lang = language(request)
    state = _state(request)
    request.state.relance_session = None  # the sign-in form is always the pre-session one
    csrf = _login_csrf(request)
    response = _templates(request).TemplateResponse(
        request,
        "login.html",
        {
            "t": Strings(lang),
            "lang": lang,
            "other_lang": "en" if lang == "fr" else "fr",
            "user": None,
            "tenant": None,
            "csrf": Markup('<input type="hidden" name="csrf_token" value="{}">').format(csrf),
            "error": error,
            "login": login[:254],
            "next": _local(target),
            "oidc": state.oidc is not None,
        },
        status_code=status,
        headers=headers,
    )
    response.set_cookie(
        LOGIN_COOKIE,
        request.state.relance_login_csrf,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=state.secure_cookies,
        path="/login",
    )
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_form(request: Request, next: str = "/") -> Response:
    if _session(request) is not None:
        return RedirectResponse(_local(next), status_code=303)
    return _login_page(request, target=next)


@router.post("/login", response_class=HTMLResponse, include_in_schema=False)
def login_submit(
    request: Request,
    login: Annotated[str, Form(max_length=1000)] = "",
    password: Annotated[str, Form(max_length=4096)] = "",
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    state = _state(request)
    t = Strings(language(request))
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not csrf_token or not hmac.compare_digest(csrf_token.encode(), _hmac(cookie, "login").encode()):
        return _login_page(request, status=403, error=t("expired"), login=login, target=next)
    address = (request.client.host if request.client else "") or "unknown"
    failures = state.store.failures(login, address, WINDOW)
    oldest = [
        when
        for count, limit, when in (
            (failures.by_login, MAX_PER_LOGIN, failures.login_oldest),
            (failures.by_address, MAX_PER_ADDRESS, failures.address_oldest),
        )
        if count >= limit and when is not None
    ]
    if oldest:
        free_at = max(when + WINDOW for when in oldest)
        wait = max(1, math.ceil((free_at - state.now()).total_seconds()))
        message = t("too_many", at=free_at.strftime("%H:%M"), minutes=max(1, math.ceil(wait / 60)))
        log.warning("workspace.sign_in_throttled", login=login[:254], address=address, retry_after=wait)
        return _login_page(
            request, status=429, error=message, login=login, target=next, headers={"Retry-After": str(wait)}
        )
    user = state.store.authenticate(login, password)
    if user is None:
        state.store.record_failure(login, address)
        log.info("workspace.sign_in_failed", login=login[:254], address=address)
        return _login_page(request, status=401, error=t("wrong"), login=login, target=next)
    state.store.clear_failures(login)
    return _signed_in(request, user, _local(next))


def _signed_in(request: Request, user: User, target: str) -> Response:
    """Open a new session (the old one, if any, is revoked: the session id changes at every sign-in)."""
    state = _state(request)
    old = request.cookies.get(COOKIE)
    if old:
        state.store.revoke_session(old)
    token, _ = state.store.open_session(user.id)
    log.info("workspace.signed_in", login=user.login, address=request.client.host if request.client else "")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="lax", secure=state.secure_cookies, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout", include_in_schema=False)
async def logout(request: Request) -> Response:
    found = await run_in_threadpool(_session, request)
    if found is not None:
        await check_csrf(request)
        await run_in_threadpool(_state(request).store.revoke_session, request.cookies.get(COOKIE, ""))
        log.info("workspace.signed_out", login=found.user.login)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# ---------------------------------------------------------------------------------------------------- OIDC
class OidcError(Exception):
    """The provider's answer cannot be trusted or used; the message says why (shown to the user)."""


class OidcClient:
    """Sign-in with an OpenID Connect provider: discovery, authorization code with PKCE (S256), state and nonce,
    the ID token's signature checked against the provider's published keys."""

    ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384")

    def __init__(self, issuer: str, client_id: str, client_secret: str, *, timeout: float = 10.0) -> None:
        self.issuer, self.client_id, self.client_secret = issuer.rstrip("/"), client_id, client_secret
        self.timeout = timeout
        self._lock = threading.Lock()
        self._metadata: dict[str, Any] | None = None
        self._keys: Any = None
        self._state_key = hashlib.sha256(b"relance-oidc-state\x00" + client_secret.encode()).digest()

    def metadata(self) -> dict[str, Any]:
        with self._lock:
            if self._metadata is None:
                url = self.issuer + "/.well-known/openid-configuration"
                document = self._get(url)
                if document.get("issuer", "").rstrip("/") != self.issuer:
                    raise OidcError(f"the provider at {url} names another issuer ({document.get('issuer')!r})")
                for key in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
                    if not isinstance(document.get(key), str):
                        raise OidcError(f"the provider's discovery document has no {key}")
                self._metadata = document
            return self._metadata

    def keys(self, refresh: bool = False) -> Any:
        with self._lock:
            if self._keys is None or refresh:
                assert self._metadata is not None
                self._keys = JsonWebKey.import_key_set(self._get(self._metadata["jwks_uri"]))
            return self._keys

    def _get(self, url: str) -> dict[str, Any]:
        try:
            answer = httpx.get(url, timeout=self.timeout, follow_redirects=False)
            answer.raise_for_status()
            document = answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise OidcError(f"the identity provider did not answer {url} ({exc})") from None
        if not isinstance(document, dict):
            raise OidcError(f"the identity provider's {url} is not a JSON object")
        return document

    def _client(self, redirect_uri: str) -> OAuth2Client:
        return OAuth2Client(
            client_id=self.client_id,
            client_secret=self.client_secret,
            scope="openid email profile",
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=self.timeout,
        )

    def start(self, redirect_uri: str, target: str) -> tuple[str, str]:
        """(the provider's authorization URL, the signed cookie value that remembers this attempt)."""
        endpoint = self.metadata()["authorization_endpoint"]
        flow = {
            "state": secrets.token_urlsafe(24),
            "nonce": secrets.token_urlsafe(24),
            "verifier": secrets.token_urlsafe(48),
            "next": target,
            "at": int(time.time()),
        }
        with self._client(redirect_uri) as client:
            url, _ = client.create_authorization_url(
                endpoint, state=flow["state"], nonce=flow["nonce"], code_verifier=flow["verifier"]
            )
        return url, self._sign(flow)

    def finish(self, redirect_uri: str, cookie: str, state: str, code: str) -> tuple[dict[str, Any], str]:
        """The ID token's verified claims and where to go next, for the provider's answer to :meth:`start`."""
        flow = self._unsign(cookie)
        if flow is None or time.time() - int(flow.get("at", 0)) > OIDC_FLOW_SECONDS:
            raise OidcError("the sign-in took too long or did not start here")
        if not state or not hmac.compare_digest(state.encode(), str(flow["state"]).encode()):
            raise OidcError("the provider's answer does not belong to this sign-in (state)")
        metadata = self.metadata()
        try:
            with self._client(redirect_uri) as client:
                token = client.fetch_token(
                    metadata["token_endpoint"], code=code, code_verifier=flow["verifier"], state=state
                )
        except Exception as exc:  # authlib raises its own errors and httpx's
            raise OidcError(f"the provider refused the code ({str(exc)[:200]})") from None
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise OidcError("the provider sent no ID token")
        return self.verify(id_token, str(flow["nonce"]), token.get("access_token")), str(flow["next"])

    def verify(self, id_token: str, nonce: str, access_token: object = None) -> dict[str, Any]:
        jwt = JsonWebToken(list(self.ALGORITHMS))
        options = {"iss": {"essential": True, "value": self.issuer}, "sub": {"essential": True}}
        params: dict[str, Any] = {"nonce": nonce, "client_id": self.client_id}
        if isinstance(access_token, str):
            params["access_token"] = access_token
        for attempt in (False, True):
            try:
                claims = jwt.decode(
                    id_token, self.keys(refresh=attempt), claims_cls=CodeIDToken, claims_options=options,
                    claims_params=params,
                )  # fmt: skip
                claims.validate(leeway=60)
                return dict(claims)
            except Exception as exc:  # authlib's errors, or joserfc's under it: any doubt refuses the token
                if attempt or "key" not in str(exc).lower():  # a new signing key: read the key set once more
                    raise OidcError(f"the ID token is not valid ({str(exc)[:200]})") from None
        raise OidcError("the ID token is not valid")  # pragma: no cover - the loop returns or raises

    def _sign(self, flow: dict[str, Any]) -> str:
        body = base64.urlsafe_b64encode(json.dumps(flow, separators=(",", ":")).encode()).decode()
        mac = hmac.new(self._state_key, body.encode(), hashlib.sha256).hexdigest()
        return f"{body}.{mac}"

    def _unsign(self, value: str) -> dict[str, Any] | None:
        body, _, mac = value.rpartition(".")
        expected = hmac.new(self._state_key, body.encode(), hashlib.sha256).hexdigest()
        if not body or not hmac.compare_digest(mac.encode(), expected.encode()):
            return None
        try:
            flow = json.loads(base64.urlsafe_b64decode(body.encode()))
        except ValueError:
            return None
        return flow if isinstance(flow, dict) else None


def _oidc(request: Request) -> OidcClient:
    client = _state(request).oidc
    if client is None:
        raise HTTPException(status_code=404, detail="single sign-on is not configured")
    return client


@router.get("/login/oidc", include_in_schema=False)
def oidc_start(request: Request, next: str = "/") -> Response:
    client = _oidc(request)
    t = Strings(language(request))
    try:
        url, cookie = client.start(str(request.url_for("oidc_callback")), _local(next))
    except OidcError as exc:
        return _login_page(request, status=502, error=t("oidc_failed", reason=str(exc)), target=next)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        OIDC_COOKIE,
        cookie,
        max_age=OIDC_FLOW_SECONDS,
        httponly=True,
        samesite="lax",  # the provider sends the browser back with a top-level GET: a Lax cookie comes with it
        secure=_state(request).secure_cookies,
        path="/login/oidc",
    )
    return response


@router.get("/login/oidc/callback", name="oidc_callback", include_in_schema=False)
def oidc_callback(
    request: Request, code: str = "", state: str = "", error: str = "", error_description: str = ""
) -> Response:
    client = _oidc(request)
    store = _state(request).store
    t = Strings(language(request))
    try:
        if error:
            raise OidcError(f"{error[:100]} {error_description[:200]}".strip())
        claims, target = client.finish(
            str(request.url_for("oidc_callback")), request.cookies.get(OIDC_COOKIE, ""), state, code
        )
    except OidcError as exc:
        log.warning("workspace.oidc_refused", reason=str(exc))
        return _login_page(request, status=401, error=t("oidc_failed", reason=str(exc)))
    user = _oidc_user(store, claims)
    if user is None:
        log.warning("workspace.oidc_no_account", subject=str(claims.get("sub", ""))[:255])
        return _login_page(request, status=403, error=t("no_account"))
    response = _signed_in(request, user, _local(target))
    response.delete_cookie(OIDC_COOKIE, path="/login/oidc")
    return response


def _oidc_user(store: UserStore, claims: dict[str, Any]) -> User | None:
    """The user a provider's claims name: by subject, else by a verified e-mail equal to the login of a user an
    administrator created (then the subject is remembered). Nobody is created, no role is given."""
    subject = str(claims.get("sub", ""))[:255]
    if not subject:
        return None
    user = store.by_oidc(subject)
    if user is None:
        email = claims.get("email")
        if isinstance(email, str) and claims.get("email_verified") is True:
            found = store.get(email)
            if found is not None and found.oidc_subject is None:
                store.link_oidc(found.id, subject)
                user = store.by_oidc(subject)
    if user is None or user.disabled:
        return None
    return user
