"""Policies as YAML: the shipped ladder, validation messages that say what to fix, versions, and who gets which."""

from __future__ import annotations

import warnings
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.escalation.policy import (
    PolicyBook,
    PolicyLibrary,
    PolicyWarning,
    load_policy,
    read_policy,
)
from shared.config import ConfigurationError

MINIMAL: dict[str, Any] = {
    "name": "minimal",
    "levels": [
        {"key": "reminder_1", "offset_days": 1, "channel": "email", "template": "reminder_1"},
        {"key": "formal_notice", "offset_days": 30, "channel": "letter", "template": "formal_notice"},
        {"key": "hand_over", "offset_days": 60, "channel": "none", "actions": ["hand_over"]},
    ],
}


def _write(path: Path, content: dict[str, Any] | str) -> Path:
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False), "utf-8")
    return path


def _minimal(**changes: Any) -> dict[str, Any]:
    content: dict[str, Any] = yaml.safe_load(yaml.safe_dump(MINIMAL))
    content.update(changes)
    return content


# --- the shipped book ---------------------------------------------------------------------------------------------


def test_the_shipped_ladder() -> None:
    # Given the shipped book
    book = PolicyBook.shipped()
    # Then it holds the English and French policies, French by default
    assert set(book.policies) == {"standard-en", "standard-fr"}
    assert book.for_customer(None).name == "standard-fr"
    english, french = book.policies["standard-en"], book.policies["standard-fr"]
    # And both climb the same ladder
    for policy in (english, french):
        assert [(lv.key, lv.offset_days, lv.channel, lv.template, sorted(lv.actions)) for lv in policy.levels] == [
            ("courtesy", -5, "email", "courtesy", []),
            ("reminder_1", 1, "email", "reminder_1", []),
            ("reminder_2", 15, "email", "reminder_2", []),
            ("phone_call", 20, "phone", "phone_call", []),
            ("formal_notice", 30, "letter", "formal_notice", ["charge_fee", "charge_interest"]),
            ("credit_block", 45, "email", "credit_block", ["block_credit"]),
            ("hand_over", 60, "letter", "hand_over", ["hand_over"]),
        ]
        assert policy.level("formal_notice").copy_channels == {"email"}
        assert policy.minimum_overdue["EUR"] == Decimal("10.00")
        assert policy.fixed_fee == {"EUR": Decimal("40.00")}
        # And both contact a customer at most once a week and four times in 30 days, from 08:00 local time
        assert (policy.cadence.min_days_between_contacts, policy.cadence.max_contacts) == (7, 4)
        assert (policy.cadence.window_days, policy.send_hour) == (30, 8)
    # And the French one follows French law (ECB + 10), the English one, the UK tenant's, English law (BoE + 8)
    assert (french.law, french.interest.basis, french.interest.reference, french.interest.margin) == (
        "fr",
        "reference",
        "ecb",
        Decimal("10"),
    )
    assert (english.law, english.interest.basis, english.interest.reference, english.interest.margin) == (
        "uk",
        "reference",
        "boe",
        Decimal("8"),
    )
    assert not french.interest.floor and not english.interest.floor  # the statutory rates, not agreed ones
    assert (english.timezone, french.timezone) == ("Europe/London", "Europe/Paris")
    # And they differ in law, language, holidays and time zone only
    assert (english.language, french.language) == ("en", "fr")
    assert not english.holidays
    assert {date(2026, 4, 6), date(2026, 5, 14), date(2026, 5, 25), date(2031, 7, 14)} <= french.holidays


# --- validation ---------------------------------------------------------------------------------------------------

LEVELS = MINIMAL["levels"]


@pytest.mark.parametrize(
    ("changes", "field", "fix"),
    [
        (
            {"levels": [LEVELS[0], {**LEVELS[1], "offset_days": 1}, LEVELS[2]]},
            "levels[1].offset_days",
            "strictly increasing offset_days",
        ),
        ({"levels": [LEVELS[0], {**LEVELS[1], "key": "reminder_1"}]}, "levels[1].key", "keys must be unique"),
        ({"levels": [LEVELS[0], {**LEVELS[1], "key": "claims"}]}, "levels[1].key", "the claims statement's"),
        ({"levels": [{**LEVELS[0], "template": None}]}, "levels[0].template", "name the notifier template"),
        ({"levels": [{**LEVELS[2], "template": "x"}]}, "levels[0].template", "remove the template"),
        ({"levels": [{**LEVELS[0], "actions": ["send_bailiff"]}]}, "levels[0].actions[0]", "'charge_interest'"),
        ({"levels": [{**LEVELS[0], "channel": "fax"}]}, "levels[0].channel", "'email'"),
        ({"levels": [{**LEVELS[0], "offset_days": "1"}]}, "levels[0].offset_days", "valid integer"),
        ({"levels": []}, "levels", "at least 1 item"),
        ({"fixed_fee": {"EURO": "40.00"}}, "fixed_fee.EURO", "ISO 4217"),
        ({"fixed_fee": {"EUR": 40.5}}, "fixed_fee.EUR", "quoted decimal string"),
        ({"fixed_fee": {"EUR": "forty"}}, "fixed_fee.EUR", "decimal string"),
        ({"fixed_fee": {"EUR": "0"}}, "fixed_fee.EUR", "above zero"),
        ({"minimum_overdue": {"JPY": "10.50"}}, "minimum_overdue.JPY", "more decimals than JPY has (0)"),
        ({"holidays": ["2026-02-30"]}, "holidays[0]", "neither an ISO date"),
        ({"holidays": "narnia"}, "holidays[0]", "france"),
        ({"holidays": 5}, "holidays", "a calendar name such as france, or a list"),
        ({"interest": {"margin": "60"}}, "interest.margin", "outside 0..50"),
        ({"interest": {"rate": "12"}}, "interest.rate", "set basis: contractual"),
        ({"interest": {"basis": "contractual"}}, "interest.rate", "required with basis contractual"),
        ({"interest": {"basis": "contractual", "rate": "12", "margin": "10"}}, "interest.margin", "remove it"),
        ({"interest": {"basis": "contractual", "rate": "0"}}, "interest.rate", "outside 0"),
        ({"grace_day": 3}, "grace_day", "unknown field"),
        ({"grace_days": -1}, "grace_days", "greater than or equal to 0"),
        ({"language": "French"}, "language", "pattern"),
        ({"name": None}, "name", "valid string"),
        ({"timezone": "Mars/Olympus"}, "timezone", "not a time zone name such as Europe/Paris"),
        ({"send_hour": 24}, "send_hour", "less than or equal to 23"),
        ({"cadence": {"min_days_between_contacts": -1}}, "cadence.min_days_between_contacts", "greater than or equal"),
        ({"cadence": {"max_contacts": 0}}, "cadence.max_contacts", "greater than or equal to 1"),
        ({"cadence": {"window": 30}}, "cadence.window", "unknown field"),
        ({"levels": [{**LEVELS[0], "min_days_since_contact": "7"}]}, "levels[0].min_days_since_contact", "integer"),
    ],
)
def test_an_invalid_policy_names_the_file_the_field_and_the_fix(
    tmp_path: Path, changes: dict[str, Any], field: str, fix: str
) -> None:
    # Given a policy file with one mistake
    path = _write(tmp_path / "policy.yaml", _minimal(**changes))
    # When it is loaded
    with pytest.raises(ConfigurationError) as caught:
        load_policy(path)
    # Then the message names the file, then the field with what to fix on the same line
    message = str(caught.value)
    assert str(path) in message.splitlines()[0]
    assert any(line.strip().startswith(f"{field}:") and fix in line for line in message.splitlines()), message


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "policy.yaml",
        _minimal(levels=[{**LEVELS[1]}, {**LEVELS[0], "template": None}], fixed_fee={"EUR": "-1"}),
    )
    with pytest.raises(ConfigurationError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "levels[1].offset_days" in message and "levels[1].template" in message and "fixed_fee.EUR" in message


def test_broken_yaml_says_where(tmp_path: Path) -> None:
    path = _write(tmp_path / "policy.yaml", "name: x\nlevels: [\n  - key: a\n")
    with pytest.raises(ConfigurationError, match=r"policy\.yaml: not valid YAML at line \d+"):
        load_policy(path)


def test_a_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read the policy file"):
        load_policy(tmp_path / "absent.yaml")


def test_a_contractual_rate_below_three_times_the_legal_rate_is_refused_under_french_law(tmp_path: Path) -> None:
    # Given a contractual 9 % while the legal interest rate given is 3.71 % (floor 3 x 3.71 = 11.13 %)
    interest = {"basis": "contractual", "rate": "9", "legal_rate": "3.71"}
    path = _write(tmp_path / "policy.yaml", _minimal(interest=interest))
    # When it is loaded, Then it is refused, naming the field, the floor and what to set
    with pytest.raises(ConfigurationError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "interest.rate: 9 percent is below 11.13, three times the French legal interest rate (3.71 " in message
    assert 'set a rate of at least "11.13", or basis: reference (ECB + 10)' in message
    # And at 12 % there is nothing to say, and the engine floors each day at its semester's legal rate
    _write(path, _minimal(interest={**interest, "rate": "12"}))
    policy, notes = read_policy(path)
    assert notes == [] and policy.interest.rate == Decimal("12") and policy.interest.floor


def test_without_a_legal_rate_the_floor_is_the_latest_semester_of_the_shipped_table(tmp_path: Path) -> None:
    # Given the shipped legal-rate table, whose latest semester (from 2026-01-01) is 2.62 %: floor 3 x 2.62 = 7.86 %
    path = _write(tmp_path / "policy.yaml", _minimal(interest={"basis": "contractual", "rate": "7.85"}))
    # When a contractual 7.85 % is loaded, Then it is refused, naming the semester
    with pytest.raises(ConfigurationError, match=r"below 7\.86, .* \(2\.62 percent, semester from 2026-01-01\)"):
        read_policy(path)
    # And 7.86 % exactly is the floor itself: it loads
    _write(path, _minimal(interest={"basis": "contractual", "rate": "7.86"}))
    assert read_policy(path)[0].interest.rate == Decimal("7.86")


def test_the_floor_is_french_law_only(tmp_path: Path) -> None:
    # Given the same contractual 5 % under the EU minimum and under English law
    for law in ("eu", "uk"):
        path = _write(tmp_path / f"{law}.yaml", _minimal(law=law, interest={"basis": "contractual", "rate": "5"}))
        # Then it loads (neither law floors an agreed rate at the French legal rate)
        policy, _ = read_policy(path)
        assert (policy.law, policy.interest.rate, policy.interest.floor) == (law, Decimal("5"), False)
        # But a legal_rate there is a mistake
        _write(path, _minimal(law=law, interest={"basis": "contractual", "rate": "5", "legal_rate": "2"}))
        with pytest.raises(ConfigurationError, match=r"interest\.legal_rate: only with law fr"):
            read_policy(path)


def test_the_margin_follows_the_law_unless_the_policy_states_its_own(tmp_path: Path) -> None:
    margins = {}
    for law in ("fr", "eu", "uk"):
        path = _write(tmp_path / f"{law}.yaml", _minimal(law=law))
        policy, notes = read_policy(path)
        margins[law] = (policy.interest.reference, policy.interest.margin)
        assert notes == []
    assert margins == {"fr": ("ecb", Decimal("10")), "eu": ("ecb", Decimal("8")), "uk": ("boe", Decimal("8"))}
    # And a policy's own margin is kept
    path = _write(tmp_path / "own.yaml", _minimal(law="uk", interest={"margin": "9"}))
    assert read_policy(path)[0].interest.margin == Decimal("9")


def test_a_margin_below_the_law_s_warns(tmp_path: Path) -> None:
    # Under French law, 9 points is an agreed rate: it loads, with a warning, and the engine floors it
    path = _write(tmp_path / "fr.yaml", _minimal(interest={"margin": "9"}))
    policy, notes = read_policy(path)
    assert notes == [
        "interest.margin: 9 points is below the 10 of the French Code de commerce L441-10 and D441-5 (law fr): "
        "an agreed rate, never applied below three times the legal interest rate"
    ]
    assert policy.interest.floor
    # Under English law, 7 points is below the Act's 8
    path = _write(tmp_path / "uk.yaml", _minimal(law="uk", interest={"margin": "7"}))
    assert read_policy(path)[1] == [
        "interest.margin: 7 points is below the 8 of the Late Payment of Commercial Debts (Interest) Act 1998 (law uk)"
    ]


def test_an_unknown_law_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "policy.yaml", _minimal(law="de"))
    with pytest.raises(ConfigurationError) as caught:
        read_policy(path)
    assert "  law: Input should be 'fr', 'eu' or 'uk' (got 'de')" in str(caught.value)


def test_fixed_fees_the_law_ignores_are_warned_about(tmp_path: Path) -> None:
    path = _write(tmp_path / "fr.yaml", _minimal(fixed_fee={"EUR": "40.00", "GBP": "35.00"}))
    assert read_policy(path)[1] == [
        "fixed_fee: GBP ignored under law fr, whose indemnity is EUR 40 whatever the invoice's currency (D441-5): "
        "remove them"
    ]
    path = _write(tmp_path / "uk.yaml", _minimal(law="uk", fixed_fee={"GBP": "40.00"}))
    assert read_policy(path)[1] == [
        "fixed_fee: ignored under law uk, whose fixed sums are the Act's (GBP 40 / 70 / 100 by the debt's size): "
        "remove it"
    ]


def test_the_law_changes_the_version(tmp_path: Path) -> None:
    french = read_policy(_write(tmp_path / "fr.yaml", _minimal()))[0]
    explicit = read_policy(_write(tmp_path / "fr2.yaml", _minimal(law="fr")))[0]
    english = read_policy(_write(tmp_path / "uk.yaml", _minimal(law="uk")))[0]
    assert french.version == explicit.version != english.version


def test_without_a_cadence_section_contacts_are_only_kept_a_day_apart_in_utc(tmp_path: Path) -> None:
    policy = load_policy(_write(tmp_path / "policy.yaml", _minimal()))
    assert (policy.timezone, policy.send_hour) == ("UTC", 0)
    assert (policy.cadence.min_days_between_contacts, policy.cadence.max_contacts) == (1, None)
    tuned = _minimal(cadence={"min_days_between_contacts": 5, "max_contacts": 3, "window_days": 21})
    tuned["levels"][1]["min_days_since_contact"] = 10
    loaded = load_policy(_write(tmp_path / "tuned.yaml", tuned))
    assert (loaded.cadence.min_days_between_contacts, loaded.cadence.max_contacts, loaded.cadence.window_days) == (
        5,
        3,
        21,
    )
    assert loaded.level("formal_notice").min_days_since_contact == 10 and loaded.version != policy.version


def test_a_margin_below_the_eu_minimum_warns(tmp_path: Path) -> None:
    path = _write(tmp_path / "policy.yaml", _minimal(interest={"margin": "7"}))
    _, notes = read_policy(path)
    assert notes == ["interest.margin: 7 points is below the EU minimum of 8 (Directive 2011/7/EU)"]


# --- versions -----------------------------------------------------------------------------------------------------


def test_the_version_ignores_key_order_whitespace_comments_and_spelling_of_numbers(tmp_path: Path) -> None:
    # Given the same policy written twice, differently
    first = _write(tmp_path / "a.yaml", _minimal(fixed_fee={"EUR": "40.00"}, interest={"margin": "10"}))
    second = _write(
        tmp_path / "b.yaml",
        "# the same rules\n"
        "fixed_fee: {EUR: 40}\n"
        "interest:\n    margin: '10.0'\n    basis: reference\n"
        "grace_days: 0\n"
        "levels:\n"
        "  - {template: reminder_1, channel: email, offset_days: 1, key: reminder_1, actions: []}\n"
        "  - {key: formal_notice, offset_days: 30, channel: letter, template: formal_notice}\n"
        "  - {key: hand_over, offset_days: 60, channel: none, actions: [hand_over]}\n"
        "name: minimal\n",
    )
    # Then both have one version, a SHA-256
    version = load_policy(first).version
    assert load_policy(second).version == version
    assert len(version) == 64 and int(version, 16) >= 0
    # And a change of substance changes it
    changed = _write(tmp_path / "c.yaml", _minimal(grace_days=1))
    assert load_policy(changed).version != version


def test_the_shipped_versions_are_stable() -> None:
    # A change to a shipped policy is a new version: in-flight decisions name the old one.
    book = PolicyBook.shipped()
    assert PolicyBook.shipped().policies["standard-fr"].version == book.policies["standard-fr"].version
    assert book.policies["standard-en"].version != book.policies["standard-fr"].version


# --- who gets which policy ----------------------------------------------------------------------------------------


@pytest.fixture
def book_dir(tmp_path: Path) -> Path:
    for name in ("standard", "gentle", "strict"):
        _write(tmp_path / f"{name}.yaml", _minimal(name=name))
    _write(tmp_path / "book.yaml", {"default": "standard", "segments": {"key-accounts": "gentle"}})
    return tmp_path


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        (None, "standard"),
        ({"name": "Acme"}, "standard"),
        ({"name": "Acme", "segment": "key-accounts"}, "gentle"),
        ({"name": "Acme", "segment": "smb"}, "standard"),  # a segment without a policy of its own
        ({"name": "Acme", "policy": "strict"}, "strict"),
        ({"name": "Acme", "policy": "strict", "segment": "key-accounts"}, "strict"),  # the customer's own wins
        ({"name": "Acme", "policy": "unknown", "segment": "key-accounts"}, "gentle"),  # an unknown name falls back
        ({"name": "Acme", "policy": None, "segment": None}, "standard"),
    ],
)
def test_the_customer_gets_its_own_policy_else_its_segments_else_the_default(
    book_dir: Path, profile: dict[str, Any] | None, expected: str
) -> None:
    assert PolicyBook.load(book_dir).for_customer(profile).name == expected


def test_a_book_naming_a_missing_policy_says_which(book_dir: Path) -> None:
    _write(book_dir / "book.yaml", {"default": "standard", "segments": {"public": "lenient"}})
    with pytest.raises(ConfigurationError) as caught:
        PolicyBook.load(book_dir)
    assert "book.yaml: segments.public: no policy is named 'lenient'" in str(caught.value)


def test_two_files_with_one_name_are_refused(book_dir: Path) -> None:
    _write(book_dir / "copy.yaml", _minimal(name="gentle"))
    with pytest.raises(ConfigurationError) as caught:
        PolicyBook.load(book_dir)
    message = str(caught.value)
    assert "name 'gentle' is also the name of" in message
    assert str(book_dir / "copy.yaml") in message and str(book_dir / "gentle.yaml") in message


def test_several_policies_need_a_book(book_dir: Path) -> None:
    (book_dir / "book.yaml").unlink()
    with pytest.raises(ConfigurationError, match=r"several policies and no book\.yaml"):
        PolicyBook.load(book_dir)


def test_tenants_get_their_own_book_or_the_common_one(tmp_path: Path) -> None:
    # Given a policy directory with a book for tenant "acme" and no common policy files
    (tmp_path / "acme").mkdir()
    _write(tmp_path / "acme" / "acme.yaml", _minimal(name="acme"))
    # When the library is loaded
    library = PolicyLibrary.load(tmp_path)
    # Then acme gets its own, any other tenant the shipped book
    assert library.for_tenant("acme").for_customer(None).name == "acme"
    assert library.for_tenant("globex").for_customer(None).name == "standard-fr"


def test_one_bad_tenant_stops_start_up_and_every_problem_is_listed(tmp_path: Path) -> None:
    for tenant in ("acme", "globex"):
        (tmp_path / tenant).mkdir()
        _write(tmp_path / tenant / "p.yaml", _minimal(name="p", grace_days=-1))
    with pytest.raises(ConfigurationError) as caught:
        PolicyLibrary.load(tmp_path)
    assert str(tmp_path / "acme" / "p.yaml") in str(caught.value)
    assert str(tmp_path / "globex" / "p.yaml") in str(caught.value)


def test_the_shipped_policies_load_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", PolicyWarning)
        PolicyLibrary.load(None)


# --- claims -------------------------------------------------------------------------------------------------------


def test_claims_allocation_is_principal_first_unless_the_policy_says_claims_first(tmp_path: Path) -> None:
    default = load_policy(_write(tmp_path / "default.yaml", _minimal()))
    explicit = load_policy(_write(tmp_path / "explicit.yaml", _minimal(claims={"allocation": "principal_first"})))
    civil = load_policy(_write(tmp_path / "civil.yaml", _minimal(claims={"allocation": "claims_first"})))
    assert (default.claims_allocation, civil.claims_allocation) == ("principal_first", "claims_first")
    # The default written out is the same policy, the other rule another version
    assert default.version == explicit.version != civil.version
    assert PolicyBook.shipped().for_customer(None).claims_allocation == "principal_first"


def test_an_unknown_claims_allocation_is_refused_saying_which_are_known(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_policy(_write(tmp_path / "odd.yaml", _minimal(claims={"allocation": "fees_last"})))
    assert "claims.allocation" in str(refused.value) and "'principal_first' or 'claims_first'" in str(refused.value)
