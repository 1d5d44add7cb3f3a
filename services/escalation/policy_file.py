"""One dunning policy file: its schema, the checks beyond it, the :class:`~services.escalation.model.Policy` it
builds and its version.

Every error names the file and the field, and says what to fix; a wrong file stops start-up with
:class:`~shared.config.ConfigurationError`. Doubtful but legal settings (a margin below the law's, a fixed fee the
law ignores) load with a :class:`PolicyWarning`. Under French law (``law: fr``, the default) a contractual rate below
three times the legal interest rate is refused: the legal rate is ``interest.legal_rate`` when given, else the
latest semester of the shipped table (``rates/legal-fr.csv``); the engine also floors every day at its own
semester's rate (:mod:`services.escalation.law`).

The version is the SHA-256 of the canonical JSON of the validated content: every field with its default made
explicit, keys sorted, amounts at their currency's minor unit and rates without trailing zeros, so neither key order,
whitespace, comments nor ``40`` versus ``"40.00"`` change it.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Mapping
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import structlog
import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from services.escalation.calendar import CALENDAR_YEARS, HOLIDAY_CALENDARS, holiday_calendar
from services.escalation.interest import FLOOR_TIMES_LEGAL_RATE, LEGAL_FR, SERIES, RateTable
from services.escalation.law import LAWS
from services.escalation.model import Cadence, InterestRule, Level, Policy
from shared.config import ConfigurationError
from shared.contracts.erp import Currency, minor_units
from shared.contracts.events import CLAIMS_STATEMENT

log = structlog.get_logger()

SHIPPED_POLICIES = Path(__file__).with_name("policies")
BOOK_FILE = "book.yaml"
EU_MINIMUM_MARGIN = Decimal("8")  # Directive 2011/7/EU: reference rate + at least 8 points

_DECIMAL = re.compile(r"^-?\d{1,15}(\.\d{1,6})?$")
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_KEY = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_UNION_BRANCHES = frozenset({"str", "int", "date", "bool", "decimal"})


class PolicyWarning(UserWarning):
    """A policy that loads but deserves a second look."""


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool | float):
        raise ValueError(
            f'write it as a quoted decimal string, e.g. "{value}" (a bare YAML number with a point is a binary float)'
        )
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str) and _DECIMAL.match(value.strip()):
        return Decimal(value.strip())
    raise ValueError(f'must be a decimal string such as "40.00", got {value!r}')


DecimalText = Annotated[Decimal, BeforeValidator(_decimal)]


def _holiday_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise ValueError("must be a calendar name such as france, or a list of ISO dates and calendar names")
    return value


Holidays = Annotated[list[date | str], BeforeValidator(_holiday_list)]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _LevelSpec(_Spec):
    key: Annotated[str, Field(pattern=_KEY)]
    offset_days: Annotated[StrictInt, Field(ge=-90, le=3650)]
    channel: Literal["email", "letter", "phone", "none"]
    copy_channels: list[Literal["email", "letter"]] = Field(default_factory=list)
    template: Annotated[str, Field(pattern=_KEY)] | None = None
    actions: list[Literal["charge_interest", "charge_fee", "block_credit", "hand_over"]] = Field(default_factory=list)
    min_days_since_contact: Annotated[StrictInt, Field(ge=0, le=365)] | None = None


class _CadenceSpec(_Spec):
    min_days_between_contacts: Annotated[StrictInt, Field(ge=0, le=365)] = 1
    max_contacts: Annotated[StrictInt, Field(ge=1, le=366)] | None = None
    window_days: Annotated[StrictInt, Field(ge=1, le=366)] = 30


class _InterestSpec(_Spec):
    basis: Literal["reference", "contractual"] = "reference"
    margin: DecimalText | None = None  # default: the law's (fr 10, eu 8, uk 8) with basis reference
    rate: DecimalText | None = None
    legal_rate: DecimalText | None = None  # French legal interest rate, for the 3x floor check on a contractual rate


class _ClaimsSpec(_Spec):
    # What money a payment leaves unallocated settles first (see shared.ledger.claims and the README).
    allocation: Literal["principal_first", "claims_first"] = "principal_first"


class _PolicySpec(_Spec):
    name: Annotated[str, Field(pattern=_NAME)]
    language: Annotated[str, Field(pattern=r"^[a-z]{2}(-[A-Z]{2})?$")] = "en"
    levels: Annotated[list[_LevelSpec], Field(min_length=1)]
    minimum_overdue: dict[Currency, DecimalText] = Field(default_factory=dict)
    grace_days: Annotated[StrictInt, Field(ge=0, le=60)] = 0
    business_days: StrictBool = True
    holidays: Holidays = Field(default_factory=list)
    interest: _InterestSpec = Field(default_factory=_InterestSpec)
    fixed_fee: dict[Currency, DecimalText] = Field(default_factory=lambda: {"EUR": Decimal("40.00")})
    promise_grace_days: Annotated[StrictInt, Field(ge=0, le=60)] = 2
    block_over_credit_limit: StrictBool = True
    law: Literal["fr", "eu", "uk"] = "fr"
    timezone: Annotated[str, Field(min_length=1, max_length=64)] = "UTC"
    send_hour: Annotated[StrictInt, Field(ge=0, le=23)] = 0
    cadence: _CadenceSpec = Field(default_factory=_CadenceSpec)
    claims: _ClaimsSpec = Field(default_factory=_ClaimsSpec)


class _BookSpec(_Spec):
    default: Annotated[str, Field(pattern=_NAME)]
    segments: dict[Annotated[str, Field(min_length=1, max_length=128)], Annotated[str, Field(pattern=_NAME)]] = Field(
        default_factory=dict
    )


def load_policy(path: Path) -> Policy:
    """Load and validate one policy file; raise :class:`ConfigurationError` saying what to fix."""
    policy, notes = read_policy(path)
    for note in notes:
        log.warning("escalation.policy_warning", file=str(path), warning=note)
        warnings.warn(f"{path}: {note}", PolicyWarning, stacklevel=2)
    return policy


def read_policy(path: Path) -> tuple[Policy, list[str]]:
    """The policy in ``path`` and its warnings (``field: message``), or :class:`ConfigurationError`."""
    raw = _read_yaml(path)
    try:
        spec = _PolicySpec.model_validate(raw)
    except ValidationError as exc:
        raise _invalid(path, _pydantic_problems(exc)) from None
    problems, notes = _check(spec)
    if problems:
        raise _invalid(path, problems)
    return _build(spec), notes


def _canonical_content(spec: _PolicySpec) -> dict[str, Any]:
    """The validated content with every default explicit and every number in one spelling."""
    interest = spec.interest
    margin = _margin(spec)
    return {
        "name": spec.name,
        "law": spec.law,
        "language": spec.language,
        "levels": [
            {
                "key": level.key,
                "offset_days": level.offset_days,
                "channel": level.channel,
                "copy_channels": sorted(set(level.copy_channels)),
                "template": level.template,
                "actions": sorted(set(level.actions)),
                "min_days_since_contact": level.min_days_since_contact,
            }
            for level in spec.levels
        ],
        "minimum_overdue": {cur: _money(amount, cur) for cur, amount in spec.minimum_overdue.items()},
        "grace_days": spec.grace_days,
        "business_days": spec.business_days,
        "holidays": sorted({_holiday_text(item) for item in spec.holidays}),
        "interest": {
            "basis": interest.basis,
            "margin": _plain(margin) if interest.basis == "reference" else None,
            "rate": _plain(interest.rate) if interest.rate is not None else None,
            "legal_rate": _plain(interest.legal_rate) if interest.legal_rate is not None else None,
        },
        "fixed_fee": {cur: _money(amount, cur) for cur, amount in spec.fixed_fee.items()},
        "promise_grace_days": spec.promise_grace_days,
        "block_over_credit_limit": spec.block_over_credit_limit,
        "timezone": spec.timezone,
        "send_hour": spec.send_hour,
        "cadence": spec.cadence.model_dump(),
        "claims": {"allocation": spec.claims.allocation},
    }


def policy_version(content: Mapping[str, Any]) -> str:
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read the policy file ({exc.strerror or exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise ConfigurationError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None


def _invalid(path: Path, problems: list[tuple[str, str]]) -> ConfigurationError:
    lines = "\n".join(f"  {where}: {message}" for where, message in problems)
    return ConfigurationError(f"invalid policy file {path}, fix:\n{lines}")


def _pydantic_problems(exc: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        where = ""
        for part in error["loc"]:
            if isinstance(part, int):
                where += f"[{part}]"
            elif part == "[key]":
                continue
            elif part in _UNION_BRANCHES or str(part).startswith(("function-", "list[", "dict[", "union[")):
                continue  # the branch of a union pydantic tried, not a field
            else:
                where += f".{part}" if where else str(part)
        kind = error["type"]
        if kind == "extra_forbidden":
            message = "unknown field: remove it or check its spelling"
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "model_type":
            message = "must be a mapping of fields"
        else:
            message = str(error["msg"]).removeprefix("Value error, ")
            if "input" in error and kind != "model_type":
                message += f" (got {error['input']!r})"
        problems.append((where or "(top level)", message))
    # A union reports one error per branch it tried: say each field once.
    return list(dict.fromkeys(problems))


def _check(spec: _PolicySpec) -> tuple[list[tuple[str, str]], list[str]]:
    """Rules across fields: errors as (field, message) and warnings as 'field: message'."""
    problems: list[tuple[str, str]] = []
    notes: list[str] = []
    seen: dict[str, int] = {}
    for i, level in enumerate(spec.levels):
        at = f"levels[{i}]"
        if level.key in seen:
            problems.append(
                (f"{at}.key", f"{level.key!r} is already the key of levels[{seen[level.key]}]: keys must be unique")
            )
        seen.setdefault(level.key, i)
        if level.key == CLAIMS_STATEMENT:
            problems.append(
                (f"{at}.key", f"{level.key!r} is the claims statement's, not a level's: choose another key")
            )
        if i > 0 and level.offset_days <= spec.levels[i - 1].offset_days:
            previous = spec.levels[i - 1]
            problems.append(
                (
                    f"{at}.offset_days",
                    f"{level.offset_days} is not after {previous.offset_days} ({previous.key!r}, levels[{i - 1}]): "
                    "list the levels by strictly increasing offset_days",
                )
            )
        if level.channel == "none":
            if level.template is not None:
                problems.append((f"{at}.template", "a level with channel none sends nothing: remove the template"))
            if level.copy_channels:
                problems.append((f"{at}.copy_channels", "a level with channel none sends nothing: remove the copies"))
        elif level.template is None:
            problems.append((f"{at}.template", f"required with channel {level.channel}: name the notifier template"))
        if len(set(level.actions)) != len(level.actions):
            problems.append((f"{at}.actions", "an action is listed twice: list each once"))
        if level.channel in level.copy_channels:
            problems.append((f"{at}.copy_channels", f"{level.channel} is already the level's channel: remove it"))

    amounts_by_field = (("minimum_overdue", spec.minimum_overdue, False), ("fixed_fee", spec.fixed_fee, True))
    for name, amounts, positive in amounts_by_field:
        for currency, amount in amounts.items():
            places = minor_units(currency)
            if amount < 0 or (positive and amount == 0):
                problems.append((f"{name}.{currency}", f"must be {'above' if positive else 'at least'} zero"))
            exponent = amount.as_tuple().exponent
            if isinstance(exponent, int) and -exponent > places:
                problems.append((f"{name}.{currency}", f"{amount} has more decimals than {currency} has ({places})"))

    for i, item in enumerate(spec.holidays):
        if isinstance(item, str):
            where = f"holidays[{i}]"
            try:
                date.fromisoformat(item)
            except ValueError:
                if item not in HOLIDAY_CALENDARS:
                    known = ", ".join(sorted(HOLIDAY_CALENDARS))
                    problems.append((where, f"{item!r} is neither an ISO date (2026-12-26) nor a calendar ({known})"))

    interest = spec.interest
    law = LAWS[spec.law]
    if interest.basis == "reference":
        if interest.rate is not None:
            problems.append(("interest.rate", "only with basis contractual: remove it, or set basis: contractual"))
        margin = _margin(spec)
        if not Decimal(0) <= margin <= Decimal(50):
            problems.append(("interest.margin", f"{margin} points is outside 0..50"))
        elif margin < EU_MINIMUM_MARGIN and spec.law != "uk":
            notes.append(f"interest.margin: {margin} points is below the EU minimum of 8 (Directive 2011/7/EU)")
        elif margin < law.margin:
            floored = ": an agreed rate, never applied below three times the legal interest rate" if law.floor else ""
            notes.append(
                f"interest.margin: {margin} points is below the {law.margin} of the {law.title} (law {spec.law})"
                + floored
            )
    else:
        if interest.margin is not None:
            problems.append(("interest.margin", "only with basis reference: remove it (the rate is the whole rate)"))
        if interest.rate is None:
            problems.append(("interest.rate", "required with basis contractual: the agreed annual rate in percent"))
        elif not Decimal(0) < interest.rate <= Decimal(100):
            problems.append(("interest.rate", f"{interest.rate} percent is outside 0 (excluded)..100"))
        elif law.floor and (legal := _legal_rate(interest.legal_rate)) is not None:
            floor = FLOOR_TIMES_LEGAL_RATE * legal[0]
            if interest.rate < floor:
                problems.append(
                    (
                        "interest.rate",
                        f"{interest.rate} percent is below {floor}, three times the French legal interest rate "
                        f"({legal[0]} percent, {legal[1]}), the floor L441-10 sets for an agreed rate: set a rate "
                        f'of at least "{floor}", or basis: reference (ECB + 10)',
                    )
                )
    if interest.legal_rate is not None:
        if not Decimal(0) <= interest.legal_rate <= Decimal(100):
            problems.append(("interest.legal_rate", f"{interest.legal_rate} percent is outside 0..100"))
        elif not law.floor:
            problems.append(("interest.legal_rate", f"only with law fr (the 3x floor): remove it under law {spec.law}"))
    _check_law_fees(spec, notes)

    try:
        ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        problems.append(("timezone", f"{spec.timezone!r} is not a time zone name such as Europe/Paris or UTC"))
    cadence = spec.cadence
    if cadence.max_contacts is not None and cadence.min_days_between_contacts * (cadence.max_contacts - 1) >= (
        cadence.window_days
    ):
        notes.append(
            f"cadence.max_contacts: {cadence.max_contacts} contacts at least {cadence.min_days_between_contacts} "
            f"days apart never fit in {cadence.window_days} days, so the window never limits anything"
        )

    if any("charge_fee" in level.actions for level in spec.levels) and not spec.fixed_fee:
        notes.append("fixed_fee: a level charges the fee but no currency has one, so none will be charged")
    return problems, notes


def _build(spec: _PolicySpec) -> Policy:
    content = _canonical_content(spec)
    holidays: set[date] = set()
    for item in spec.holidays:
        if isinstance(item, date):
            holidays.add(item)
        elif item in HOLIDAY_CALENDARS:
            holidays |= holiday_calendar(item, CALENDAR_YEARS)
        else:
            holidays.add(date.fromisoformat(item))
    interest = spec.interest
    return Policy(
        name=spec.name,
        version=policy_version(content),
        levels=tuple(
            Level(
                key=level.key,
                offset_days=level.offset_days,
                channel=level.channel,
                template=level.template,
                actions=frozenset(level.actions),
                copy_channels=frozenset(level.copy_channels),
                min_days_since_contact=level.min_days_since_contact,
            )
            for level in spec.levels
        ),
        minimum_overdue={cur: Decimal(amount) for cur, amount in content["minimum_overdue"].items()},
        grace_days=spec.grace_days,
        business_days=spec.business_days,
        holidays=frozenset(holidays),
        interest=InterestRule(
            basis=interest.basis,
            margin=_margin(spec),
            rate=interest.rate,
            reference=LAWS[spec.law].reference,
            floor=LAWS[spec.law].floor and (interest.basis == "contractual" or _margin(spec) != LAWS[spec.law].margin),
        ),
        fixed_fee={cur: Decimal(amount) for cur, amount in content["fixed_fee"].items()},
        promise_grace_days=spec.promise_grace_days,
        block_over_credit_limit=spec.block_over_credit_limit,
        language=spec.language,
        law=spec.law,
        timezone=spec.timezone,
        send_hour=spec.send_hour,
        cadence=Cadence(
            min_days_between_contacts=spec.cadence.min_days_between_contacts,
            max_contacts=spec.cadence.max_contacts,
            window_days=spec.cadence.window_days,
        ),
        claims_allocation=spec.claims.allocation,
    )


def _margin(spec: _PolicySpec) -> Decimal:
    """The policy's own margin, else its law's."""
    return spec.interest.margin if spec.interest.margin is not None else LAWS[spec.law].margin


def _legal_rate(given: Decimal | None) -> tuple[Decimal, str] | None:
    """The French legal interest rate the floor is checked against at load, and where it comes from."""
    if given is not None:
        return given, "interest.legal_rate"
    shipped = RateTable.load(SERIES[LEGAL_FR].file, series=LEGAL_FR).rows(LEGAL_FR)
    if not shipped:
        return None
    latest = shipped[-1]
    return latest.rate, f"semester from {latest.semester.isoformat()}"


def _check_law_fees(spec: _PolicySpec, notes: list[str]) -> None:
    """Warn about the fixed fees the policy's law ignores (see :func:`services.escalation.law.fixed_fee`)."""
    if "fixed_fee" not in spec.model_fields_set:
        return
    if spec.law == "uk" and spec.fixed_fee:
        notes.append(
            "fixed_fee: ignored under law uk, whose fixed sums are the Act's (GBP 40 / 70 / 100 by the debt's size): "
            "remove it"
        )
    elif spec.law == "fr":
        others = sorted(c for c in spec.fixed_fee if c != "EUR")
        if others:
            notes.append(
                f"fixed_fee: {', '.join(others)} ignored under law fr, whose indemnity is EUR 40 whatever the "
                "invoice's currency (D441-5): remove them"
            )


def _holiday_text(item: date | str) -> str:
    return item.isoformat() if isinstance(item, date) else item


def _money(amount: Decimal, currency: str) -> str:
    return str(amount.quantize(Decimal(1).scaleb(-minor_units(currency))))


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def read_book(path: Path) -> tuple[str, dict[str, str]]:
    """The default policy and the segments' policies named in a ``book.yaml``, or :class:`ConfigurationError`."""
    try:
        spec = _BookSpec.model_validate(_read_yaml(path))
    except ValidationError as exc:
        raise _invalid(path, _pydantic_problems(exc)) from None
    return spec.default, dict(spec.segments)
