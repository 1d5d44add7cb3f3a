"""Reminder rendering: Jinja2 templates per level and language, in a sandbox, with Babel formatting.

Everything the customer reads comes from here, and a judge may read it later, so the rules are strict:

- The environment is an immutable sandbox with ``StrictUndefined``: a template cannot reach Python internals, and a
  variable it names but the context lacks is an error, never an empty string.
- ERP data (names, invoice numbers) is only ever a *value* in the context, never template source: ``{{ 7*7 }}`` in a
  customer's name stays those nine characters. HTML parts are autoescaped.
- Any ERP text a template can put in the subject is checked before it enters the context: a control character, a
  Unicode line break or an RFC 2047 encoded word (``=?utf-8?q?=0D=0ABcc:…?=``) is refused with
  :class:`~services.notifier.mime.UnsafeHeaderText`, never cleaned into something else; the reminder is then not
  sent (services/notifier/service.py records why). The rendered subject is put on one line (a template's own line
  breaks are folded) and checked again as a whole, so text pieced together from several values is caught too.
- Templates are looked up in ``RELANCE_TEMPLATE_DIR/<tenant>/``, then ``RELANCE_TEMPLATE_DIR/``, then the shipped
  ``templates/`` folder: a tenant overrides any file by giving one with the same path. :func:`load_templates`
  compiles every file and renders every level in every language once with sample data, so a broken template stops
  the start-up with a :class:`~shared.config.ConfigurationError` naming the file and line.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from babel.dates import format_date
from babel.numbers import format_currency, format_decimal
from jinja2 import (
    ChoiceLoader,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    select_autoescape,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.notifier import mime
from services.notifier.sender import Sender
from shared.config import ConfigurationError

log = structlog.get_logger()

SHIPPED_DIR = Path(__file__).parent / "templates"
LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "en"
LOCALES = {"fr": "fr_FR", "en": "en_GB"}
TEMPLATES = ("courtesy", "reminder_1", "reminder_2", "formal_notice", "credit_block", "hand_over")
PARTS = ("subject.txt", "txt", "html")


class RenderSettings(BaseSettings):
    """The rendering side of the notifier's settings."""

    model_config = SettingsConfigDict(env_prefix="RELANCE_", extra="ignore", frozen=True)

    template_dir: Path | None = Field(
        default=None,
        description="Template overrides: files under <dir>/<tenant>/ or <dir>/ replace the shipped ones by path.",
    )
    sender_file: Path | None = Field(
        default=None, description="YAML of the sender company's details (default and per tenant); see the README."
    )


@dataclass(frozen=True, slots=True)
class RenderedReminder:
    subject: str
    text: str
    html: str
    template_name: str
    template_version: str  # SHA-256 (hex) of the sources of every template file used, names included
    language: str


class TemplateSet:
    """The compiled templates one tenant's reminders are rendered with."""

    def __init__(self, directories: list[Path]) -> None:
        self.directories = directories
        self._versions: dict[tuple[str, ...], str] = {}
        self.env = ImmutableSandboxedEnvironment(
            loader=ChoiceLoader([FileSystemLoader(str(d)) for d in directories]),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
            auto_reload=False,
        )

    def get(self, name: str) -> Template:
        try:
            return self.env.get_template(name)
        except TemplateSyntaxError as exc:
            raise ConfigurationError(
                f"{exc.filename or exc.name}:{exc.lineno}: template syntax error: {exc.message}"
            ) from None

    def version(self, names: list[str]) -> str:
        """SHA-256 of every template these names use, following ``extends``, ``include`` and ``import``."""
        key = tuple(names)
        known = self._versions.get(key)
        if known is None:  # templates are loaded once (no auto-reload): a set's version never changes
            known = self._versions[key] = self._version(names)
        return known

    def _version(self, names: list[str]) -> str:
        seen: dict[str, str] = {}
        pending = list(names)
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            source, _, _ = self.env.loader.get_source(self.env, name)  # type: ignore[union-attr]
            seen[name] = source
            pending.extend(n for n in meta.find_referenced_templates(self.env.parse(source)) if n is not None)
        digest = hashlib.sha256()
        for name in sorted(seen):
            digest.update(name.encode() + b"\0" + seen[name].encode() + b"\0")
        return digest.hexdigest()


def template_dirs(template_dir: Path | None, tenant: str | None) -> list[Path]:
    dirs: list[Path] = []
    if template_dir is not None:
        if tenant is not None and (template_dir / tenant).is_dir():
            dirs.append(template_dir / tenant)
        dirs.append(template_dir)
    dirs.append(SHIPPED_DIR)
    return dirs


def load_templates(template_dir: Path | None = None, tenant: str | None = None) -> TemplateSet:
    """Compile and try every template a tenant's reminders use; raise ConfigurationError naming file and line."""
    if template_dir is not None and not template_dir.is_dir():
        raise ConfigurationError(f"RELANCE_TEMPLATE_DIR: {template_dir} is not a directory")
    templates = TemplateSet(template_dirs(template_dir, tenant))
    for directory in templates.directories:
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in (".txt", ".html")):
            try:
                templates.env.parse(path.read_text(encoding="utf-8"), path.name, str(path))
            except TemplateSyntaxError as exc:
                raise ConfigurationError(f"{path}:{exc.lineno}: template syntax error: {exc.message}") from None
            except UnicodeDecodeError as exc:
                raise ConfigurationError(f"{path}: not UTF-8 text ({exc.reason})") from None
    sample_sender = Sender(
        company="Sample SAS", address=("1 rue de l'Exemple", "75001 Paris"), pay_url="https://p/{customer}"
    )
    for language in LANGUAGES:
        for name in TEMPLATES:
            for data in (sample_reminder(name), sample_reminder(name, charges=False)):
                try:
                    render(data, SAMPLE_PROFILE, sample_sender, language, templates)
                except mime.MimeError as exc:  # the sample data is safe: the template itself makes the subject unsafe
                    raise ConfigurationError(f"template {language}/{name}.subject.txt: {exc}") from None
    return templates


# -------------------------------------------------------------------------------------------------- rendering
def render(
    reminder_data: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    sender: Sender,
    language: str | None = None,
    templates: TemplateSet | None = None,
) -> RenderedReminder:
    """Render a ``reminder.requested`` event's data for a customer in a language (falling back to English)."""
    templates = templates or _shipped()
    language = _language(language or reminder_data.get("language"))
    name = str(reminder_data["template"])
    names = [f"{language}/{name}.{part}" for part in PARTS]
    context = _context(reminder_data, profile or {}, sender, language)
    parts: list[str] = []
    for template_name in names:
        template = _get(templates, template_name)
        try:
            parts.append(template.render(context))
        except TemplateError as exc:
            raise ConfigurationError(_where(exc, template_name, templates)) from None
    subject, text, html = parts
    return RenderedReminder(
        subject=one_line(subject, "the subject"),
        text=text,
        html=html,
        template_name=name,
        template_version=templates.version(names),
        language=language,
    )


def one_line(value: str, what: str) -> str:
    """A template's output on one line (its own line breaks folded), refused if it is not safe in a header.

    Only for text that templates produce: ERP values are checked by :func:`_text` before they reach a template, so
    nothing they carry is folded away here.
    """
    return mime.check_header_text(" ".join(value.split()), what)


def _get(templates: TemplateSet, name: str) -> Template:
    try:
        return templates.get(name)
    except TemplateNotFound:
        raise ConfigurationError(f"template {name} not found in {', '.join(map(str, templates.directories))}") from None


def _where(exc: TemplateError, name: str, templates: TemplateSet) -> str:
    """``file:line: message`` from the template frames Jinja puts in the traceback."""
    roots = [str(d.resolve()) for d in templates.directories]
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if any(str(Path(frame.filename).resolve()).startswith(root) for root in roots):
            return f"{frame.filename}:{frame.lineno}: {type(exc).__name__}: {exc}"
    return f"{name}: {type(exc).__name__}: {exc}"


_SHIPPED: list[TemplateSet] = []


def _shipped() -> TemplateSet:
    if not _SHIPPED:
        _SHIPPED.append(TemplateSet([SHIPPED_DIR]))
    return _SHIPPED[0]


def _language(value: Any) -> str:
    code = str(value or "").replace("_", "-").split("-")[0].lower()
    return code if code in LANGUAGES else DEFAULT_LANGUAGE


def _text(value: Any, what: str) -> str:
    """ERP text as a template value (escaped in HTML, literal in text), refused if it could not go in a header.

    Any of these values can reach the subject (a tenant's template may use it there), so the check is the header's,
    applied before anything is folded: a name with U+2028 or an encoded word is refused, not tidied up.
    """
    text = mime.check_header_text("" if value is None else str(value), what)
    return " ".join(text.split())


def _context(data: Mapping[str, Any], profile: Mapping[str, Any], sender: Sender, language: str) -> dict[str, Any]:
    locale = LOCALES[language]
    currency = str(data["currency"])

    def money(value: Any) -> str:
        return str(format_currency(Decimal(str(value)), currency, locale=locale))

    def day(value: Any) -> str:
        return str(format_date(date.fromisoformat(str(value)), "d MMMM y", locale=locale))

    lines = []
    for line in data["lines"]:
        interest, fee = Decimal(str(line["interest"])), Decimal(str(line["fee"]))
        lines.append(
            {
                "number": _text(line["number"], f"the number of invoice {line.get('invoice_id', '?')}"),
                "issue_date": day(line["issue_date"]),
                "due_date": day(line["due_date"]),
                "amount": money(line["amount"]),
                "outstanding": money(line["outstanding"]),
                "days_late": str(format_decimal(int(line["days_late"]), locale=locale)),
                "interest": money(interest) if interest else "",
                "fee": money(fee) if fee else "",
            }
        )
    totals = data["totals"]
    outstanding, interest, fees = (Decimal(str(totals[k])) for k in ("outstanding", "interest", "fees"))
    customer_id = _text(data.get("customer_id") or profile.get("customer_id") or "", "the customer id")
    pay_link = None
    if sender.pay_url:
        pay_link = sender.pay_url.format(
            customer=quote(customer_id, safe=""),
            reminder=quote(str(data.get("reminder_id", "")), safe=""),
            currency=quote(currency, safe=""),
            amount=quote(str(outstanding + interest + fees), safe=""),
        )
    return {
        "level": str(data["level"]),
        "reminder_id": str(data.get("reminder_id", "")),
        "as_of": day(str(data["as_of"])[:10]) if data.get("as_of") else "",
        "customer": {
            "name": _text(profile.get("name"), "the customer's name") or customer_id,
            "contact_name": _text(profile.get("contact_name"), "the customer's contact name"),
        },
        "currency": currency,
        "lines": lines,
        "with_interest": any(line["interest"] for line in lines),
        "with_fee": any(line["fee"] for line in lines),
        "totals": {
            "outstanding": money(outstanding),
            "interest": money(interest) if interest else "",
            "fees": money(fees) if fees else "",
            "due": money(outstanding + interest + fees),
        },
        "sender": sender.to_context(),
        "pay_link": pay_link,
    }


# ------------------------------------------------------------------------------------------------- samples
SAMPLE_PROFILE: dict[str, Any] = {"name": "Exemple SARL", "contact_name": "Claire Martin", "language": "fr"}


def sample_reminder(template: str, *, charges: bool = True) -> dict[str, Any]:
    """A plausible ``reminder.requested`` payload, to try templates at start-up and in tests."""
    interest, fee = ("12.34", "40.00") if charges else ("0", "0")
    return {
        "reminder_id": "sample",
        "level": template,
        "channel": "email",
        "copy_channels": [],
        "template": template,
        "language": "fr",
        "currency": "EUR",
        "invoice_ids": ["INV-1"],
        "lines": [
            {
                "invoice_id": "INV-1",
                "number": "F-2026-0001",
                "issue_date": "2026-10-01",
                "due_date": "2026-10-31",
                "amount": "1234.56",
                "outstanding": "1234.56",
                "days_late": 20,
                "interest": interest,
                "fee": fee,
            }
        ],
        "totals": {"outstanding": "1234.56", "interest": interest, "fees": fee},
        "policy": "standard-fr",
        "policy_version": "0" * 64,
        "as_of": "2026-11-20T08:00:00Z",
    }
