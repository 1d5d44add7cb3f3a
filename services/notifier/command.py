"""Reading the notifier's commands: the contract's model decides, the refusal says why in plain words.

:func:`read` takes either command the notifier's queue is bound to: ``notifier.send_confirmation`` (the written
confirmation of a payment plan, :func:`parse_confirmation`) or ``notifier.send_reminder`` (:func:`parse`).

:func:`parse` validates the body with :class:`shared.contracts.commands.SendReminder`, the model the published
schema is written from, so the notifier accepts exactly the contract. A body it refuses raises :class:`BadCommand`
with one reason, for the dead-letter header and the log, written for the person who reads them: the first problem
in the order a reader checks a command (is it one at all, which fields are missing, then the lines one by one, then
the totals), in the notifier's words (``missing field(s): level, template``, ``lines[0].interest must be a decimal
string such as "1234.56", got 'lots'``) rather than pydantic's. A body without ``command`` is taken as one: the
queue is bound to this routing key alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from services.notifier.errors import NotifierError
from shared.contracts.commands import SendConfirmation, SendReminder
from shared.contracts.events import SEND_CONFIRMATION, SEND_REMINDER

KIND = SEND_REMINDER
CONFIRMATION_KIND = SEND_CONFIRMATION
KINDS = (KIND, CONFIRMATION_KIND)  # the routing keys the notifier's queue is bound to
CONFIRMATION_REQUIRED = ("command_id", "tenant", "customer_id", "confirmation_id", "plan_id", "currency")
REQUIRED = ("command_id", "tenant", "customer_id", "reminder_id", "level", "template", "currency", "lines", "totals")
LINE_FIELDS = ("number", "issue_date", "due_date", "amount", "outstanding", "days_late", "interest", "fee")
_LINE_MONEY = ("amount", "outstanding", "interest", "fee")
_LINE_DATES = ("issue_date", "due_date")
_TOTALS = ("outstanding", "interest", "fees")


class BadCommand(NotifierError, ValueError):
    """The message is not a usable ``notifier.send_reminder`` command; it goes to the dead-letter queue."""


def parse(body: object) -> SendReminder:
    """The command as the contract's model, or :class:`BadCommand` naming what is missing or wrong."""
    if isinstance(body, Mapping) and "command" not in body:
        body = {**body, "command": KIND}
    try:
        return SendReminder.model_validate(dict(body) if isinstance(body, Mapping) else body)
    except ValidationError as exc:
        raise BadCommand(reason(body, exc.errors())) from None


def read(body: object) -> SendReminder | SendConfirmation:
    """Either command of the notifier's queue, by its ``command`` (a body without one is a reminder command)."""
    if isinstance(body, Mapping) and body.get("command") == CONFIRMATION_KIND:
        return parse_confirmation(body)
    return parse(body)


def parse_confirmation(body: Mapping[str, Any]) -> SendConfirmation:
    """The ``notifier.send_confirmation`` command as the contract's model, or :class:`BadCommand` saying why not."""
    try:
        return SendConfirmation.model_validate(dict(body))
    except ValidationError as exc:
        raise BadCommand(confirmation_reason(exc.errors())) from None


def confirmation_reason(errors: Sequence[ErrorDetails]) -> str:
    """The first problem of a confirmation command: missing fields, then the invoices, then each instalment."""
    at = {tuple(error["loc"]): error for error in errors}
    missing = [key for key in CONFIRMATION_REQUIRED if _empty(at.get((key,)))]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    if ("invoice_ids",) in at:
        return "`invoice_ids` must be a non-empty list of invoice ids"
    if ("instalments",) in at:
        return "`instalments` must be a non-empty list of objects with a due_date and an amount"
    for loc, error in at.items():
        if loc[:1] == ("instalments",) and len(loc) == 3 and isinstance(loc[1], int):
            n, key = loc[1], loc[2]
            if key == "amount":
                return f'instalments[{n}].amount must be a decimal string such as "1234.56", got {_value(error)!r}'
            if key == "due_date":
                return f"instalments[{n}].due_date must be an ISO 8601 date, got {_value(error)!r}"
    first = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    return f"{where}: {first['msg']}"


def reason(body: object, errors: Sequence[ErrorDetails]) -> str:
    """The first of the model's errors in a reader's order, said the way a person fixing the message reads it."""
    at = {tuple(error["loc"]): error for error in errors}
    if () in at:
        return "the message body is not a JSON object"
    if ("command",) in at:
        return f"not a {KIND} command: {at['command',]['input']!r}"
    missing = [key for key in REQUIRED if _empty(at.get((key,)))]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    lines = [loc[1] for loc in at if loc[:1] == ("lines",) and len(loc) > 1 and isinstance(loc[1], int)]
    shape = ("lines",) in at or any((("lines", n) in at or _falsy(at.get(("lines", n, "invoice_id")))) for n in lines)
    if shape:
        return "`lines` must be a list of objects with an invoice_id"
    if ("totals",) in at:
        return "`totals` must be an object"
    for n in sorted(set(lines)):
        found = {loc[2]: error for loc, error in at.items() if loc[:2] == ("lines", n) and len(loc) == 3}
        assert isinstance(body, Mapping)  # else the model's first error is at the root
        problem = _line_problem(n, body["lines"][n]["invoice_id"], found)
        if problem:
            return problem
    for key in _TOTALS:
        if ("totals", key) in at:
            return f'totals.{key} must be a decimal string such as "1234.56", got {_value(at["totals", key])!r}'
    first = errors[0]
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    return f"{where}: {first['msg']}"


def _line_problem(n: int, invoice_id: Any, found: Mapping[Any, ErrorDetails]) -> str | None:
    missing = [key for key in LINE_FIELDS if _empty(found.get(key))]
    if missing:
        return f"lines[{n}] ({invoice_id}): missing field(s): {', '.join(missing)}"
    for key in _LINE_MONEY:
        if key in found:
            return f'lines[{n}].{key} must be a decimal string such as "1234.56", got {_value(found[key])!r}'
    for key in _LINE_DATES:
        if key in found:
            return f"lines[{n}].{key} must be an ISO 8601 date, got {_value(found[key])!r}"
    if "days_late" in found:
        return f"lines[{n}].days_late must be a whole number >= 0, got {_value(found['days_late'])!r}"
    return None


def _empty(error: ErrorDetails | None) -> bool:
    """The field is absent, null or an empty string."""
    return error is not None and (error["type"] == "missing" or error["input"] in (None, ""))


def _falsy(error: ErrorDetails | None) -> bool:
    return error is not None and (error["type"] == "missing" or not error["input"])


def _value(error: ErrorDetails) -> Any:
    """The refused value itself (None when it is absent: pydantic then reports the object that lacks it)."""
    return None if error["type"] == "missing" else error["input"]
