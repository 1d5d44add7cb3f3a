"""Reading a reminder command: the contract's model decides, and a refusal names the first problem plainly."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.notifier.command import BadCommand, parse
from shared.contracts.examples import COMMAND_EXAMPLES

EXAMPLE = COMMAND_EXAMPLES["notifier.send_reminder"]


def changed(path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    body = copy.deepcopy(EXAMPLE)
    target = body
    for part in path[:-1]:
        target = target[part]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return body


def test_the_contract_example_is_read_as_the_model() -> None:
    reminder = parse(EXAMPLE)
    assert reminder.command_id == EXAMPLE["command_id"] and reminder.channel == EXAMPLE["channel"]


def test_a_body_without_its_command_kind_is_taken_as_a_reminder_command() -> None:
    assert parse(changed(("command",), KeyError)).command == "notifier.send_reminder"


@pytest.mark.parametrize(
    ("path", "value", "reason"),
    [
        (("level",), "", "missing field(s): level"),
        (("template",), None, "missing field(s): template"),
        (("lines", 0, "number"), "", "lines[0] ({id}): missing field(s): number"),
        (("lines", 0, "fee"), 0.5, 'lines[0].fee must be a decimal string such as "1234.56", got 0.5'),
        (("lines", 0, "amount"), "1E+3", "lines[0].amount must be a decimal string such as \"1234.56\", got '1E+3'"),
        (("lines", 0, "due_date"), 1730505600, "lines[0].due_date must be an ISO 8601 date, got 1730505600"),
        (("lines", 0, "days_late"), True, "lines[0].days_late must be a whole number >= 0, got True"),
        (("lines", 0, "days_late"), -1, "lines[0].days_late must be a whole number >= 0, got -1"),
        (("lines", 0), "INV-1", "`lines` must be a list of objects with an invoice_id"),
        (("totals", "fees"), KeyError, 'totals.fees must be a decimal string such as "1234.56", got None'),
        (("occurred_at",), KeyError, "occurred_at: Field required"),
    ],
)
def test_a_refusal_names_the_first_problem_in_plain_words(path: tuple[Any, ...], value: Any, reason: str) -> None:
    with pytest.raises(BadCommand) as refused:
        parse(changed(path, value))
    assert str(refused.value) == reason.format(id=EXAMPLE["lines"][0]["invoice_id"])


def test_what_is_missing_is_named_before_what_is_wrong() -> None:
    body = changed(("lines", 0, "interest"), "lots")
    del body["currency"]
    with pytest.raises(BadCommand, match=r"^missing field\(s\): currency$"):
        parse(body)
