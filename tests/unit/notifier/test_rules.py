"""Quiet hours and days in the tenant's time zone, and sending rules from settings and the sender file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from services.notifier.rules import load_rules
from shared.config import ConfigurationError, load_settings
from shared.quiet import Quiet


def paris(day: int, hour: int, minute: int = 0) -> datetime:
    """A November 2026 instant given in Paris time (UTC+1)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("Europe/Paris")).astimezone(UTC)


def test_a_range_across_midnight_is_quiet_at_night_only() -> None:
    quiet = Quiet.parse("20:00-08:00", "", "Europe/Paris")
    assert quiet.is_quiet(paris(23, 21)) and quiet.is_quiet(paris(23, 7, 59))
    assert not quiet.is_quiet(paris(23, 8)) and not quiet.is_quiet(paris(23, 19, 59))
    assert quiet.next_open(paris(23, 22)) == paris(24, 8)


def test_a_daytime_range_and_quiet_days() -> None:
    quiet = Quiet.parse("12:00-14:00", "sat,sun", "Europe/Paris")
    assert quiet.is_quiet(paris(23, 12, 30)) and not quiet.is_quiet(paris(23, 14))
    assert quiet.is_quiet(paris(28, 10))  # Saturday
    assert quiet.next_open(paris(28, 10)) == paris(30, 0)  # Monday, midnight in Paris


def test_the_time_zone_decides_the_local_hour() -> None:
    quiet = Quiet.parse("20:00-08:00", "", "America/New_York")
    assert quiet.is_quiet(datetime(2026, 11, 23, 12, tzinfo=UTC))  # 07:00 in New York
    assert not quiet.is_quiet(datetime(2026, 11, 23, 14, tzinfo=UTC))


@pytest.mark.parametrize(
    ("hours", "days", "zone", "message"),
    [
        ("8-20", "", "UTC", "not a range of local times"),
        ("08:00-08:00", "", "UTC", "starts and ends at the same time"),
        ("", "sam", "UTC", "unknown day(s) sam"),
        ("", "mon,tue,wed,thu,fri,sat,sun", "UTC", "every day is quiet"),
        ("", "", "Paris", "not an IANA time zone"),
    ],
)
def test_wrong_values_say_what_is_expected(hours: str, days: str, zone: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Quiet.parse(hours, days, zone)


def test_settings_refuse_wrong_quiet_hours_naming_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="RELANCE_QUIET_HOURS"):
        load_settings(quiet_hours="25:00-3")


def test_a_tenant_overrides_the_defaults_in_the_sender_file(tmp_path: Path) -> None:
    sender = tmp_path / "sender.yaml"
    sender.write_text(
        "default:\n  company: X SAS\n  sending: {rate_per_minute: 100, quiet_hours: '20:00-08:00'}\n"
        "tenants:\n  acme-de:\n    sending: {timezone: Europe/Berlin, rate_per_minute: 5}\n",
        encoding="utf-8",
    )
    settings = load_settings(notifier_rate_per_minute=7, timezone="Europe/Paris")
    default, german = load_rules(settings, sender), load_rules(settings, sender, "acme-de")
    assert (default.rate_per_minute, str(default.quiet.zone)) == (100, "Europe/Paris")
    assert (german.rate_per_minute, str(german.quiet.zone)) == (5, "Europe/Berlin")
    assert german.quiet.start is not None  # inherited from the default entry
    assert load_rules(settings).rate_per_minute == 7  # the shipped sender file sets nothing


@pytest.mark.parametrize(
    ("sending", "message"),
    [
        ("{rate: 5}", "unknown key(s) ['rate']"),
        ("{rate_per_minute: -1}", "rate_per_minute must be a whole number"),
        ("{quiet_days: 'dim'}", "unknown day(s) dim"),
        ("[1, 2]", "sending must be a mapping"),
    ],
)
def test_a_wrong_sending_entry_names_the_file_and_the_fix(tmp_path: Path, sending: str, message: str) -> None:
    sender = tmp_path / "sender.yaml"
    sender.write_text(f"default:\n  company: X SAS\n  sending: {sending}\n", encoding="utf-8")
    with pytest.raises(ConfigurationError) as error:
        load_rules(load_settings(), sender)
    assert str(sender) in str(error.value) and message in str(error.value)
