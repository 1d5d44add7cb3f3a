"""The sender company's details printed on every reminder, from a small YAML file.

The file holds a ``default`` sender and optional per-tenant ones under ``tenants`` (each a full or partial
override of the default). Unset, ``RELANCE_SENDER_FILE`` falls back to the shipped ``sender.yaml``, a placeholder
company to replace before anything is sent: the notifier worker refuses to start while any sender it may sign with
is still the placeholder (its company or its IBAN), unless ``RELANCE_ALLOW_PLACEHOLDER_SENDER`` says so for a trial.
The demo signs with it on purpose.

Every value of the file, for every tenant, is checked whenever it is loaded (so at start-up): the sender's details
are printed in every reminder and may be used in its headers, so a control character, a Unicode line break or an
RFC 2047 encoded word (``=?utf-8?q?…?=``) stops the start-up naming the file and the field
(:func:`services.notifier.mime.unsafe_reason`), rather than being sent to customers.

``signatory`` is the person who signs (``name``, and ``title`` as one text or one per language:
``{fr: Responsable du crédit clients, en: Credit Manager}``). Without one, a letter is signed by the team, as a
letter always was. A signatory left at the placeholder's name is refused with the placeholder company.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from services.notifier.mime import unsafe_reason
from shared.config import ConfigurationError

SHIPPED_SENDER = Path(__file__).parent / "sender.yaml"
_PAY_FIELDS = {"customer": "C", "reminder": "R", "currency": "EUR", "amount": "1.00"}


@dataclass(frozen=True, slots=True)
class Signatory:
    """Who signs the letters: a name and a title, the title possibly per language (``titles``)."""

    name: str
    title: str = ""
    titles: tuple[tuple[str, str], ...] = ()  # (language, title), when the title differs per language

    def title_in(self, language: str) -> str:
        return dict(self.titles).get(language) or self.title or next((t for _, t in self.titles), "")


@dataclass(frozen=True, slots=True)
class Sender:
    company: str
    address: tuple[str, ...] = ()
    email: str = ""
    phone: str = ""
    registration: str = ""  # e.g. "SIREN 123 456 789 — RCS Paris"
    vat_number: str = ""
    bank: str = ""
    iban: str = ""
    bic: str = ""
    # Optional pay link; {customer}, {reminder}, {currency} and {amount} are replaced (URL-encoded).
    pay_url: str = ""
    signatory: Signatory | None = None

    def to_context(self, language: str = "en") -> dict[str, Any]:
        signatory = self.signatory
        return {
            **{f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("address", "signatory")},
            "address": list(self.address),
            "signatory": None if signatory is None else {"name": signatory.name, "title": signatory.title_in(language)},
        }


def refuse_placeholder(path: Path | None) -> None:
    """Raise ConfigurationError if the default sender or a tenant's would sign with the shipped placeholder details.

    A copy of the shipped file, left unchanged or half edited, is caught too: the check is on the details themselves.
    """
    placeholder = load_sender(SHIPPED_SENDER)
    tenants = _read(path or SHIPPED_SENDER).get("tenants") or {}
    for tenant in (None, *sorted(str(t) for t in tenants)):
        sender = load_sender(path, tenant)
        same = [name for name in ("company", "iban") if getattr(sender, name) == getattr(placeholder, name)]
        mine, theirs = sender.signatory, placeholder.signatory
        if mine is not None and theirs is not None and mine.name == theirs.name:
            same.append("signatory")
        if same:
            whose = "the default sender" if tenant is None else f"the sender of tenant {tenant!r}"
            where = f"{path}" if path else f"the shipped placeholder {SHIPPED_SENDER} (RELANCE_SENDER_FILE is unset)"
            raise ConfigurationError(
                f"{whose} in {where} still has the placeholder {_and(same)}: reminders would be signed by "
                f"{placeholder.company!r}. Point RELANCE_SENDER_FILE to a YAML file with your company's details "
                "(see the README), or set RELANCE_ALLOW_PLACEHOLDER_SENDER=true for a trial that mails nobody real"
            )


def load_sender(path: Path | None = None, tenant: str | None = None) -> Sender:
    """The sender for a tenant; raise ConfigurationError naming the file and the field to fix."""
    path = path or SHIPPED_SENDER
    document = _read(path)
    merged = dict(document["default"])
    tenants = document.get("tenants") or {}
    if not isinstance(tenants, dict):
        raise ConfigurationError(f"{path}: `tenants` must map tenant ids to sender details")
    _check_text(path, "default", document["default"])
    for name, override in tenants.items():
        if isinstance(override, dict):
            _check_text(path, f"tenants.{name}", override)
    if tenant is not None and isinstance(tenants.get(tenant), dict):
        merged.update(tenants[tenant])
    merged.pop("sending", None)  # when and how fast to send: services/notifier/rules.py
    known = {f.name for f in fields(Sender)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigurationError(f"{path}: unknown sender field(s) {unknown}; known: {sorted(known)}")
    if not merged.get("company"):
        raise ConfigurationError(f"{path}: the sender needs a `company`")
    address = merged.get("address") or []
    lines = tuple(str(line) for line in ([address] if isinstance(address, str) else address))
    values = {k: str(v) for k, v in merged.items() if k not in ("address", "signatory")}
    sender = Sender(address=lines, signatory=_signatory(path, merged.get("signatory")), **values)
    if sender.pay_url:
        try:
            sender.pay_url.format(**_PAY_FIELDS)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigurationError(
                f"{path}: pay_url may only use {{customer}}, {{reminder}}, {{currency}}, {{amount}}: {exc!r}"
            ) from None
    return sender


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _signatory(path: Path, value: Any) -> Signatory | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value.get("name"):
        raise ConfigurationError(f"{path}: `signatory` needs a `name` (and a `title`, one text or one per language)")
    unknown = sorted(set(value) - {"name", "title"})
    if unknown:
        raise ConfigurationError(f"{path}: unknown signatory field(s) {unknown}; known: ['name', 'title']")
    title = value.get("title") or ""
    if isinstance(title, dict):
        return Signatory(str(value["name"]), titles=tuple((str(k), str(v)) for k, v in title.items()))
    return Signatory(str(value["name"]), str(title))


def _read(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read the sender file: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("default"), dict):
        raise ConfigurationError(f"{path}: expected a mapping with a `default` sender")
    return document


def _check_text(path: Path, where: str, details: dict[str, Any]) -> None:
    """Refuse a value that could not safely appear in an e-mail header, naming the file and the field."""
    for key, value in details.items():
        if key == "sending":  # sending rules: services/notifier/rules.py checks them
            continue
        if isinstance(value, dict):  # the signatory, its title per language
            _check_text(path, f"{where}.{key}", value)
            continue
        for item in value if isinstance(value, list) else [value]:
            reason = unsafe_reason(str(item))
            if reason is not None:
                raise ConfigurationError(
                    f"{path}: {where}.{key} {str(item)!r} {reason}; the sender's details go into every reminder "
                    "and may reach its headers, so relance refuses them: correct the sender file"
                )
