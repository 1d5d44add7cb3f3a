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
  compiles every file and renders every level in every language with sample data (a reminder as the previous version
  wrote it, and one with every field under each law), so a broken template stops the start-up with a
  :class:`~shared.config.ConfigurationError` naming the file and line.
- The letter follows the law the reminder names (``law``: fr, eu, uk; none means French, as reminders were before):
  its legal mentions, the names of the charges, the registered-letter mention. Amounts in another currency than the
  reminder's (the EUR 40 indemnity on a USD invoice under French law) are shown in their currency and totalled
  apart, never added to the reminder's total.
"""

from __future__ import annotations

import functools
import hashlib
import traceback
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from babel import Locale
from babel.dates import format_date
from babel.lists import format_list
from babel.numbers import format_currency, format_decimal, format_percent
from babel.units import format_unit
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
from services.notifier.sender import Sender, Signatory
from shared.config import ConfigurationError
from shared.contracts.events import CLAIMS_STATEMENT

ZERO = Decimal(0)

log = structlog.get_logger()

SHIPPED_DIR = Path(__file__).parent / "templates"
LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "en"
LOCALES = {"fr": "fr_FR", "en": "en_GB"}
_LOCALES = {language: Locale.parse(code) for language, code in LOCALES.items()}  # parsed once, not per amount
_BY_CODE = {str(locale): locale for locale in _LOCALES.values()}
LEVEL_TEMPLATES = ("courtesy", "reminder_1", "reminder_2", "formal_notice", "credit_block", "hand_over")
TEMPLATES = (*LEVEL_TEMPLATES, CLAIMS_STATEMENT)  # and the claims statement's, which demands no invoice
CONFIRMATION = "payment_plan_confirmation"  # the written confirmation of a payment plan (notifier.send_confirmation)
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
    team = Sender(company="Sample SAS", address=("1 rue de l'Exemple", "75001 Paris"), pay_url="https://p/{customer}")
    signed = replace(team, signatory=Signatory("Camille Exemple", titles=(("fr", "Responsable"), ("en", "Manager"))))
    for language in LANGUAGES:
        for name in TEMPLATES:
            samples = [(sample_reminder(name), team), (sample_reminder(name, charges=False), team)]
            samples += [(sample_reminder(name, law=law, currency="USD"), signed) for law in LAWS]
            samples += [(sample_reminder(name, law=law), signed) for law in LAWS]
            samples += [(sample_reminder(name, law=law, charges=False), team) for law in LAWS]
            for data, sample_sender in samples:
                try:
                    render(data, SAMPLE_PROFILE, sample_sender, language, templates)
                except mime.MimeError as exc:  # the sample data is safe: the template itself makes the subject unsafe
                    raise ConfigurationError(f"template {language}/{name}.subject.txt: {exc}") from None
        for name in TEMPLATES:  # and the letters, for the levels a policy may send by post
            for law in (None, *LAWS):
                try:
                    render_letter(sample_reminder(name, law=law), SAMPLE_PROFILE, signed, language, templates,
                                  letter=SAMPLE_LETTER)  # fmt: skip
                except mime.MimeError as exc:
                    raise ConfigurationError(f"template {language}/{name}.subject.txt: {exc}") from None
        for sample_sender in (team, signed):
            try:
                render_confirmation(sample_confirmation(), SAMPLE_PROFILE, sample_sender, language, templates)
            except mime.MimeError as exc:
                raise ConfigurationError(f"template {language}/{CONFIRMATION}.subject.txt: {exc}") from None
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
    return _rendered(templates, language, name, _context(reminder_data, profile or {}, sender, language))


def render_confirmation(
    data: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    sender: Sender,
    language: str | None = None,
    templates: TemplateSet | None = None,
) -> RenderedReminder:
    """Render the written confirmation of a payment plan (:data:`CONFIRMATION`) for a customer in a language.

    ``data`` is the ``notifier.send_confirmation`` command with ``invoices``: the invoices the plan covers as the
    ledger shows them (invoice_id, number, issue_date, due_date, amount, outstanding), added by the notifier. The
    same sandbox, checks and Babel formatting as a reminder's; the letter states the invoices, each instalment with
    its date and amount, their total, and what happens if an instalment is missed.
    """
    templates = templates or _shipped()
    language = _language(language or data.get("language"))
    return _rendered(templates, language, CONFIRMATION, _confirmation_context(data, profile or {}, sender, language))


def render_letter(
    reminder_data: Mapping[str, Any],
    profile: Mapping[str, Any] | None,
    sender: Sender,
    language: str | None,
    templates: TemplateSet | None,
    *,
    letter: Mapping[str, Any],
) -> RenderedReminder:
    """The HTML of a reminder's letter (``html``; ``text`` is empty): the e-mail of its level with the letter's own
    heading (``letters/<language>/letter.html``, which extends the level's HTML template and replaces its heading).

    ``letter`` is what only the letter has: ``letter_id``, ``address`` (lines, postal_code, city, country_name and
    abroad), ``place`` and ``date`` (already written as the letter prints them). The subject line is the e-mail's.
    Everything else is the e-mail's context, so the letter states exactly the same facts.
    """
    templates = templates or _shipped()
    language = _language(language or reminder_data.get("language"))
    name = str(reminder_data["template"])
    context = _context(reminder_data, profile or {}, sender, language)
    subject_name, page_name, level_name = (
        f"{language}/{name}.subject.txt",
        f"letters/{language}/letter.html",
        f"{language}/{name}.html",
    )
    try:
        subject = one_line(_get(templates, subject_name).render(context), "the subject")
    except TemplateError as exc:
        raise ConfigurationError(_where(exc, subject_name, templates)) from None
    address = letter["address"]
    given = {
        **letter,
        "subject": subject,
        "address": {
            **address,
            "lines": [_letter_text(line) for line in address["lines"]],
            "postal_code": _letter_text(address["postal_code"]),
            "city": _letter_text(address["city"]),
            "locality": [
                _letter_text(line)
                for line in address.get("locality") or [f"{address['postal_code']} {address['city']}"]
            ],
        },
    }
    page = _get(templates, page_name)
    try:
        html = page.render({**context, "email_template": level_name, "letter": given})
    except TemplateError as exc:
        raise ConfigurationError(_where(exc, page_name, templates)) from None
    return RenderedReminder(
        subject=subject,
        text="",
        html=html,
        template_name=name,
        template_version=templates.version([subject_name, page_name, level_name]),
        language=language,
    )


LETTER_LINE_MAX = 100  # characters of an address line the window shows (the contract's limit)


def _letter_text(value: Any) -> str:
    """ERP text for the envelope's window: on one line (control characters and line breaks folded into spaces, which
    the contract refuses anyway), cut at :data:`LETTER_LINE_MAX`. It is a value in the context, escaped as HTML."""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in str(value or ""))
    return " ".join(text.split())[:LETTER_LINE_MAX]


def _rendered(templates: TemplateSet, language: str, name: str, context: Mapping[str, Any]) -> RenderedReminder:
    """The template ``name``'s subject, text and HTML in ``language``, rendered with ``context``."""
    names = [f"{language}/{name}.{part}" for part in PARTS]
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


def _confirmation_context(
    data: Mapping[str, Any], profile: Mapping[str, Any], sender: Sender, language: str
) -> dict[str, Any]:
    locale = _LOCALES[language]
    currency = str(data["currency"])

    def money(value: Any) -> str:
        return _money(value, currency, locale)

    invoices = []
    owed = ZERO
    for invoice in data["invoices"]:
        outstanding = Decimal(str(invoice["outstanding"]))
        owed += outstanding
        invoices.append(
            {
                "number": _text(invoice["number"], f"the number of invoice {invoice.get('invoice_id', '?')}"),
                "issue_date": format_day(invoice["issue_date"], language),
                "due_date": format_day(invoice["due_date"], language),
                "amount": money(invoice["amount"]),
                "outstanding": money(outstanding),
            }
        )
    instalments = []
    total = ZERO
    for number, instalment in enumerate(data["instalments"], start=1):
        amount = Decimal(str(instalment["amount"]))
        total += amount
        instalments.append(
            {"number": number, "due_date": format_day(instalment["due_date"], language), "amount": money(amount)}
        )
    customer_id = _text(data.get("customer_id") or profile.get("customer_id") or "", "the customer id")
    return {
        "reference": _text(data.get("plan_id"), "the plan's reference"),
        "confirmation_id": str(data.get("confirmation_id", "")),
        "agreed_on": format_day(str(data["occurred_at"])[:10], language) if data.get("occurred_at") else "",
        "customer": {
            "name": _text(profile.get("name"), "the customer's name") or customer_id,
            "contact_name": _text(profile.get("contact_name"), "the customer's contact name"),
        },
        "currency": currency,
        "invoices": invoices,
        "owed": money(owed),
        "instalments": instalments,
        "count": len(instalments),
        "total": money(total),
        "sender": sender.to_context(language),
    }


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


LAWS = ("fr", "eu", "uk")  # the law a reminder's legal mentions follow; a reminder without one is French (as before)
LEVEL_NAMES = {
    "fr": {
        "courtesy": "avis d'échéance",
        "reminder_1": "rappel",
        "reminder_2": "second rappel",
        "formal_notice": "mise en demeure",
        "credit_block": "avis de suspension de compte",
        "hand_over": "avis de transmission au recouvrement",
        "claims": "relevé des sommes dues",
    },
    "en": {
        "courtesy": "advance notice",
        "reminder_1": "reminder",
        "reminder_2": "second reminder",
        "formal_notice": "formal notice",
        "credit_block": "notice of account suspension",
        "hand_over": "notice of hand-over for collection",
        "claims": "statement of sums due",
    },
}
OTHER_LEVEL_NAME = {"fr": "courrier", "en": "letter"}  # a tenant's own level: named plainly


def format_day(value: Any, language: str) -> str:
    """A date as a letter writes it: "1er octobre 2026" (the first of a month is "1er" in French), "1 October 2026"."""
    return _format_day(value if isinstance(value, date) else date.fromisoformat(str(value)[:10]), language)


@functools.lru_cache(maxsize=4096)
def _format_day(day: date, language: str) -> str:
    """:func:`format_day`, kept: a batch's reminders write the same few dates again and again."""
    pattern = "d'er' MMMM y" if language == "fr" and day.day == 1 else "d MMMM y"
    return str(format_date(day, pattern, locale=_LOCALES[language]))


def format_days(count: int, language: str) -> str:
    """A number of days with its plural from Babel's CLDR data: "0 jour", "1 jour", "2 jours"; "1 day", "2 days"."""
    return str(format_unit(count, "duration-day", length="long", locale=_LOCALES[language]))


def format_rate(value: Any, language: str) -> str:
    """An annual rate given in percent, with the digits it has: "12,15 %", "12.15%"."""
    fraction = (Decimal(str(value)) / 100).normalize()
    return str(format_percent(fraction, locale=_LOCALES[language], decimal_quantization=False))


def format_points(value: Any, language: str) -> str:
    """Percentage points, singular or plural by the language's CLDR rule: "1 point", "10 points"."""
    number = Decimal(str(value)).normalize()
    one = _LOCALES[language].plural_form(number) == "one"
    return f"{format_decimal(number, locale=_LOCALES[language])} {'point' if one else 'points'}"


def _number(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _money(value: Any, currency: str, locale: Locale) -> str:
    return _money_text(str(value), currency, str(locale))


@functools.lru_cache(maxsize=8192)
def _money_text(value: str, currency: str, locale: str) -> str:
    """An amount (its exact decimal text) in a currency as the locale writes it, kept: Babel parses its pattern
    anew at each call, and a batch's reminders show many equal amounts (fees, totals, the same invoice's lines)."""
    return str(format_currency(Decimal(value), currency, locale=_BY_CODE[locale]))


def _context(data: Mapping[str, Any], profile: Mapping[str, Any], sender: Sender, language: str) -> dict[str, Any]:
    """What the templates see. Every field the ``reminder.requested`` event gained is optional: a reminder written
    before them renders as a French-law reminder with only its demanded lines, as it always did."""
    locale = _LOCALES[language]
    currency = str(data["currency"])
    law = str(data.get("law") or "fr")
    if law not in LAWS:
        raise ConfigurationError(f"reminder {data.get('reminder_id', '?')}: unknown law {law!r}; known: {LAWS}")
    names = LEVEL_NAMES[language]

    def money(value: Any, in_currency: str = currency) -> str:
        return _money(value, in_currency, locale)

    def day(value: Any) -> str:
        return format_day(value, language)

    def notice(item: Mapping[str, Any]) -> dict[str, str]:
        level = str(item["level"])
        return {
            "level": level,
            "level_name": names.get(level, OTHER_LEVEL_NAME[language]),
            "on": day(item["on"]),
            "reference": _text(item["reminder_id"], "the reference of an earlier reminder"),
        }

    apart: dict[str, dict[str, Decimal]] = {}  # money owed in another currency than the reminder's: totalled apart

    def line_context(line: Mapping[str, Any]) -> dict[str, Any]:
        interest, fee = Decimal(str(line.get("interest", "0"))), Decimal(str(line.get("fee", "0")))
        fee_currency = str(line.get("fee_currency") or currency)
        level = str(line.get("level") or data["level"])
        notices = [notice(item) for item in line.get("notices") or []]
        days_late = int(line["days_late"])
        return {
            "number": _text(line["number"], f"the number of invoice {line.get('invoice_id', '?')}"),
            "issue_date": day(line["issue_date"]),
            "due_date": day(line["due_date"]),
            "amount": money(line["amount"]),
            "outstanding": money(line["outstanding"]),
            "days_late": str(format_decimal(days_late, locale=locale)),
            "days_late_text": format_days(days_late, language) if days_late > 0 else "",
            "interest": money(interest) if interest else "",
            "fee": money(fee, fee_currency) if fee else "",
            "fee_currency": fee_currency if fee_currency != currency else "",
            "level": level,
            "level_name": names.get(level, OTHER_LEVEL_NAME[language]),
            "notices": notices,
            # the latest written level that asked for payment (an advance notice asked for nothing)
            "last_notice": next((n for n in reversed(notices) if n["level"] != "courtesy"), None),
        }

    lines = [line_context(line) for line in data["lines"]]
    fees_here = ZERO
    for line in data["lines"]:
        fee, fee_currency = Decimal(str(line.get("fee", "0"))), str(line.get("fee_currency") or currency)
        if fee_currency == currency:
            fees_here += fee
        elif fee:
            apart.setdefault(fee_currency, {"fees": ZERO, "claims": ZERO})["fees"] += fee
    also = [line_context(line) for line in data.get("also") or []]
    claims, claims_here, interest_claims = [], ZERO, ZERO
    for claim in data.get("claims") or []:
        amount, claim_currency = Decimal(str(claim["amount"])), str(claim["currency"])
        if claim_currency == currency:
            claims_here += amount
        else:
            apart.setdefault(claim_currency, {"fees": ZERO, "claims": ZERO})["claims"] += amount
        if claim["kind"] == "interest":
            interest_claims += amount
        days_late = claim.get("days_late")
        claims.append(
            {
                "invoice_id": str(claim.get("invoice_id", "")),
                "number": _text(claim["number"], f"the number of invoice {claim.get('invoice_id', '?')}"),
                "kind": str(claim["kind"]),
                "currency": claim_currency,
                "amount": money(amount, claim_currency),
                "paid_on": day(claim["paid_on"]) if claim.get("paid_on") else "",
                "days_late_text": format_days(int(days_late), language) if days_late else "",
            }
        )
    paid_invoices: dict[str, dict[str, Any]] = {}  # the claims per invoice, as a claims statement words them
    for claim in claims:
        paid = paid_invoices.setdefault(
            claim["invoice_id"] or claim["number"],
            {"number": claim["number"], "paid_on": claim["paid_on"], "days_late_text": claim["days_late_text"]},
        )
        paid[claim["kind"]] = claim["amount"]
    totals = data["totals"]
    outstanding, interest = (Decimal(str(totals[k])) for k in ("outstanding", "interest"))
    # the fees of the reminder's currency: the lines say which fee is in another currency, whatever totals hold
    fees = fees_here if any(line.get("fee_currency") for line in data["lines"]) else Decimal(str(totals["fees"]))
    claimed = Decimal(str(totals["claims"])) if totals.get("claims") is not None else claims_here
    due = outstanding + interest + fees + claimed
    others = [
        {
            "currency": other,
            "amount": money(parts["fees"] + parts["claims"], other),
            "fees": money(parts["fees"], other) if parts["fees"] else "",
            "claims": money(parts["claims"], other) if parts["claims"] else "",
        }
        for other, parts in sorted(apart.items())
        if parts["fees"] + parts["claims"]
    ]
    customer_id = _text(data.get("customer_id") or profile.get("customer_id") or "", "the customer id")
    pay_link = None
    if sender.pay_url:
        pay_link = sender.pay_url.format(
            customer=quote(customer_id, safe=""),
            reminder=quote(str(data.get("reminder_id", "")), safe=""),
            currency=quote(currency, safe=""),
            amount=quote(str(due), safe=""),
        )
    rates: list[Mapping[str, Any]] = []
    for rate in data.get("rates") or []:  # consecutive periods at the same rate are stated once
        same = ("reference", "margin", "rate")
        if rates and all(_number(rates[-1].get(k)) == _number(rate.get(k)) for k in same):
            continue
        rates.append(rate)
    periods = []
    for index, rate in enumerate(rates):
        following = rates[index + 1]["from_date"] if index + 1 < len(rates) else None
        until = date.fromisoformat(str(following)[:10]) - timedelta(days=1) if following is not None else None
        reference, margin = rate.get("reference"), rate.get("margin")
        periods.append(
            {
                "from_date": day(rate["from_date"]),
                "until": day(until) if until is not None else "",
                "reference": format_rate(reference, language) if reference is not None else "",
                "margin": format_points(margin, language) if margin is not None else "",
                "rate": format_rate(rate["rate"], language),
            }
        )
    return {
        "level": str(data["level"]),
        "level_name": names.get(str(data["level"]), OTHER_LEVEL_NAME[language]),
        "reminder_id": str(data.get("reminder_id", "")),
        "as_of": day(str(data["as_of"])[:10]) if data.get("as_of") else "",
        "law": law,
        "registered": data.get("channel") == "letter",
        "customer": {
            "name": _text(profile.get("name"), "the customer's name") or customer_id,
            "contact_name": _text(profile.get("contact_name"), "the customer's contact name"),
        },
        "currency": currency,
        "lines": lines,
        "also": also,
        "claims": claims,
        "paid_invoices": [{"interest": "", "indemnity": "", **paid} for paid in paid_invoices.values()],
        "with_interest": any(line["interest"] for line in lines),
        "with_fee": any(line["fee"] for line in lines),
        "interest_claimed": bool(interest or interest_claims),
        "rates": periods,
        "totals": {
            "outstanding": money(outstanding),
            "interest": money(interest) if interest else "",
            "fees": money(fees) if fees else "",
            "claims": money(claimed) if claimed else "",
            "charged": bool(interest or fees or claimed),  # something beside the principal: the total adds it up
            "due": money(due),
            "apart": others,  # owed in another currency, never added to ``due``
            "due_all": str(format_list([money(due), *(o["amount"] for o in others)], locale=locale)),
        },
        "sender": sender.to_context(language),
        "pay_link": pay_link,
    }


# ------------------------------------------------------------------------------------------------- samples
SAMPLE_PROFILE: dict[str, Any] = {"name": "Exemple SARL", "contact_name": "Claire Martin", "language": "fr"}
SAMPLE_LETTER: dict[str, Any] = {
    "letter_id": "L-0123456789ABCDEF",
    "address": {
        "lines": ["Exemple SARL", "Service comptabilité", "4 avenue de l'Exemple"],
        "postal_code": "75008",
        "city": "Paris",
        "country": "BE",
        "locality": ["75008 Paris"],
        "abroad": True,
        "country_name": "BELGIQUE",
    },
    "place": "Lyon",
    "date": "2 décembre 2026",
}


def sample_confirmation() -> dict[str, Any]:
    """A plausible ``notifier.send_confirmation`` command with its invoices, to try the templates."""
    return {
        "command_id": "act-sample-1",
        "command": "notifier.send_confirmation",
        "tenant": "sample",
        "customer_id": "C-0001",
        "occurred_at": "2026-12-20T10:30:00+00:00",
        "sequence": 1,
        "confirmation_id": "act-sample-1",
        "plan_id": "plan-sample",
        "language": "fr",
        "currency": "EUR",
        "invoice_ids": ["INV-1", "INV-2"],
        "invoices": [
            {
                "invoice_id": "INV-1",
                "number": "F-2026-0001",
                "issue_date": "2026-09-15",
                "due_date": "2026-10-15",
                "amount": "2400.00",
                "outstanding": "2400.00",
            },
            {
                "invoice_id": "INV-2",
                "number": "F-2026-0002",
                "issue_date": "2026-10-01",
                "due_date": "2026-10-31",
                "amount": "1200.00",
                "outstanding": "1200.00",
            },
        ],
        "instalments": [
            {"due_date": "2027-01-15", "amount": "1200.00"},
            {"due_date": "2027-02-15", "amount": "1200.00"},
            {"due_date": "2027-03-15", "amount": "1200.00"},
        ],
    }


def sample_reminder(
    template: str, *, charges: bool = True, law: str | None = None, currency: str | None = None
) -> dict[str, Any]:
    """A plausible ``reminder.requested`` payload, to try templates at start-up and in tests; for the template
    ``claims``, a claims statement (no lines, the claims of a paid invoice: see :func:`_statement`)."""
    data = _sample(template, charges=charges, law=law, currency=currency)
    return _statement(data) if template == CLAIMS_STATEMENT else data


def _statement(data: dict[str, Any]) -> dict[str, Any]:
    """A sample made a claims statement: no invoice demanded, the claims of a paid invoice (with the day it was paid
    and its days late when the sample has every field; as a reminder that carried claims may say it, without)."""
    currency = str(data["currency"])
    claims = [dict(c) for c in data.get("claims") or []] or [
        {"invoice_id": "INV-2", "number": "F-2026-0002", "kind": "interest", "currency": currency, "amount": "8.10"}
    ]
    if "law" in data:
        for claim in claims:
            claim.update(paid_on="2026-11-12", days_late=12)
    data.pop("also", None)
    data.update(channel="email", invoice_ids=[], lines=[], claims=claims)
    summed = sum((Decimal(c["amount"]) for c in claims if c["currency"] == currency), ZERO)
    data["totals"] = {"outstanding": "0", "interest": "0", "fees": "0", "claims": str(summed)}
    return data


def _sample(template: str, *, charges: bool, law: str | None, currency: str | None) -> dict[str, Any]:
    """A plausible ``reminder.requested`` payload of a level.

    Without ``law`` it is a reminder as the previous version wrote them (no level per line, no notices, no "also",
    no claims, no law, no rates). With a ``law`` it has every field: a registered letter whose invoice was reminded
    before, another overdue invoice already sent a formal notice, claims left on a paid invoice, the rates applied
    over two periods, and (French law, a currency other than the euro) the EUR 40 indemnity in euros.
    """
    interest, fee = ("12.34", "40.00") if charges else ("0", "0")
    data: dict[str, Any] = {
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
    if law is None:
        return data
    currency = currency or ("GBP" if law == "uk" else "EUR")
    fee_currency = "EUR" if law != "uk" else currency  # French and EU law: EUR 40 whatever the invoice's currency
    if charges and law == "uk":
        fee = "70.00"  # the fixed sum for a debt from £1,000 to £9,999.99
    line = data["lines"][0]
    line.update(level=template, fee=fee)
    line["notices"] = [{"level": "reminder_1", "reminder_id": "esc-sample-r1", "on": "2026-11-05"}]
    if fee_currency != currency and charges:
        line["fee_currency"] = fee_currency
    claims = [
        {"invoice_id": "INV-2", "number": "F-2026-0002", "kind": "interest", "currency": currency, "amount": "8.10"},
        {"invoice_id": "INV-2", "number": "F-2026-0002", "kind": "indemnity", "currency": fee_currency,
         "amount": "40.00"},
    ]  # fmt: skip
    margin = Decimal(8) if law in ("eu", "uk") else Decimal(10)
    references = (
        [("2026-01-01", Decimal("4.00")), ("2026-07-01", Decimal("3.75"))]
        if law == "uk"
        else [("2026-01-01", Decimal("2.15")), ("2026-07-01", Decimal("2.15"))]
    )  # fmt: skip  (the ECB's: stated once)
    data.update(
        channel="letter",
        currency=currency,
        law=law,
        policy="standard-en" if law == "uk" else "standard-fr",
        also=[
            {
                "invoice_id": "INV-3",
                "number": "F-2026-0003",
                "issue_date": "2026-08-01",
                "due_date": "2026-09-01",
                "amount": "500.00",
                "outstanding": "500.00",
                "days_late": 80,
                "interest": "0",
                "fee": "0",
                "level": "formal_notice",
                "notices": [
                    {"level": "reminder_1", "reminder_id": "esc-sample-r0", "on": "2026-09-08"},
                    {"level": "formal_notice", "reminder_id": "esc-sample-fn", "on": "2026-10-03"},
                ],
            }
        ],
        claims=claims,
        rates=[
            {"from_date": start, "reference": str(rate), "margin": str(margin), "rate": str(rate + margin)}
            for start, rate in references
        ],
    )
    data["totals"] = {
        "outstanding": "1234.56",
        "interest": interest,
        "fees": fee if fee_currency == currency else "0",
        "claims": str(sum((Decimal(c["amount"]) for c in claims if c["currency"] == currency), ZERO)),
    }
    return data
