"""The workspace's web application: the pages, the JSON API, the static files, the error pages.

:func:`create_app` is given its :class:`~services.workspace.ports.Ports` by the composer (``relance workspace``) or
by a test. Templates are Jinja2 with autoescape on for every template, so that ERP text (names, notes, invoice
numbers) is always data. A tenant the user holds no role in, and a customer that tenant does not have, answer the
same 404: nobody learns from a URL that another company's data exists.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.workspace import api, asof, auth, ingest, jobs, letters, pages
from services.workspace.i18n import Translator, choose
from services.workspace.ports import Ports
from shared.ledger.store import Ledger

log = structlog.get_logger(__name__)
HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"


# Bidirectional controls (embeddings, overrides, isolates) in ERP text would reorder what a reader sees ("SARL Evil"
# shown as "livE LRAS"): every value a template prints shows them as visible code points instead.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


def visible(value: Any) -> Any:
    """A printed value with its bidirectional controls written out (``[U+202E]``); other values as they are."""
    if not isinstance(value, str) or not BIDI_CONTROLS.search(value):
        return value
    shown = BIDI_CONTROLS.sub(lambda found: f"[U+{ord(found.group()):04X}]", value)
    return Markup(shown) if isinstance(value, Markup) else shown


def templates() -> Jinja2Templates:
    environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, auto_reload=False, finalize=visible)
    return Jinja2Templates(env=environment)


def create_app(ports: Ports) -> FastAPI:
    app = FastAPI(
        title="relance",
        summary="Accounts-receivable collections: customers, agenda, evidence and the actions of a credit team",
        version="1",
        openapi_url="/api/openapi.json",
        docs_url=None,  # Swagger UI loads scripts from a CDN and inline, which the workspace's CSP forbids
        redoc_url=None,
    )
    app.state.ports = ports
    app.state.templates = templates()
    app.state.templates.env.globals["as_of_words"] = asof.words
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    auth.install(app, ports)
    app.include_router(auth.router)
    app.include_router(api.router)
    app.include_router(asof.router)  # a customer's account at an instant, in the API and on a page
    app.include_router(jobs.router)
    app.include_router(ingest.router(ports))  # answers 503 itself while HTTP ingest is not configured
    app.include_router(pages.router)
    app.include_router(asof.pages)
    app.include_router(jobs.pages)
    app.include_router(letters.router)  # a letter's PDF
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _failed)
    return app


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code in (301, 302, 303, 307) and "Location" in headers:
        return Response(status_code=exc.status_code, headers=headers)
    if _is_api(request):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
    return error_page(request, exc.status_code, str(exc.detail), headers)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    if _is_api(request):
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return JSONResponse({"detail": errors}, status_code=422)
    return error_page(request, 422, "; ".join(str(e.get("msg", "")) for e in exc.errors()), {})


async def _failed(request: Request, exc: Exception) -> Response:
    log.exception("workspace.request_failed", path=request.url.path)
    if _is_api(request):
        return JSONResponse({"detail": "relance could not answer this request; see its log"}, status_code=500)
    return error_page(request, 500, "relance could not show this page; the error is in its log", {})


def error_page(request: Request, status: int, detail: str, headers: dict[str, str]) -> HTMLResponse:
    t = Translator(choose(request))
    title = t("not_found") if status == 404 else t("forbidden") if status == 403 else t("error")
    text = t("not_found_text") if status == 404 else detail
    environment: Jinja2Templates = request.app.state.templates
    return environment.TemplateResponse(
        request,
        "error.html",
        {"t": t, "status": status, "title": title, "text": text, "user": None, "tenant": None},
        status_code=status,
        headers=headers,
    )


def not_found() -> HTTPException:
    return HTTPException(status_code=404, detail="not found")


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI document, as ``/api/openapi.json`` serves it (built without opening any database)."""
    from sqlalchemy import create_engine

    from shared.config import Settings

    engine = create_engine("sqlite://")
    ports = Ports(settings=Settings(), engine=engine, ledger=lambda: Ledger(engine), agenda=lambda states, on: [])
    document: dict[str, Any] = create_app(ports).openapi()
    engine.dispose()
    return document


def write_openapi(path: Path) -> Path:
    path.write_text(json.dumps(openapi_document(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
