"""``relance clock``, ``rates`` and ``agenda``: escalation's clock driven by hand, its rate table, a collector's day."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime

from services.cli.options import Commands, day, days, instant, runs
from shared.config import Settings
from shared.runtime import open_ledger


def add_clock(commands: Commands) -> None:
    clock = commands.add_parser("clock", help="drive escalation's clock by hand (backfills, tests)")
    clock_commands = clock.add_subparsers(title="clock commands", metavar="ACTION")
    tick = clock_commands.add_parser(
        "tick",
        help="evaluate every customer at an instant (skipping those for whom nothing changed since their last "
        "evaluation), record the decisions, set the timers, print a summary",
    )
    tick.add_argument("--at", required=True, type=instant, help="ISO 8601 instant, e.g. 2026-12-01T08:00:00Z")
    tick.add_argument("--tenant", help="only this tenant's customers")
    tick.add_argument("--due-only", action="store_true", help="only the customers whose timer is due at that instant")
    runs(tick, clock_tick, database_url=True)


def add_rates(commands: Commands) -> None:
    rates = commands.add_parser(
        "rates", help="the rate tables late interest is computed with (ECB, Bank of England, French legal rate)"
    )
    rates_commands = rates.add_subparsers(title="rates commands", metavar="ACTION")
    show = rates_commands.add_parser(
        "show", help="the table in effect: the shipped rates and RELANCE_RATES_FILE's, with the source of each row"
    )
    runs(show, rates_show)
    check = rates_commands.add_parser(
        "check", help="exit 1 if a semester in effect or beginning within DAYS has no rate, with the line to add"
    )
    check.add_argument("--at", type=day, help="the day to check from (default: today, UTC)")
    check.add_argument(
        "--within", type=days, default=None, metavar="DAYS", help="how far ahead to look (default 45 days)"
    )
    check.add_argument(
        "--table",
        action="append",
        choices=["ecb", "boe", "legal-fr"],
        help="only this table (repeatable; default: every table: ecb, boe, legal-fr)",
    )
    runs(check, rates_check)


def add_agenda(commands: Commands) -> None:
    agenda = commands.add_parser(
        "agenda", help="a collector's day: tasks, calls, promises due, blocked accounts; largest amount at risk first"
    )
    agenda.add_argument("--tenant", required=True)
    agenda.add_argument("--date", required=True, type=day, help="the day, e.g. 2026-12-01")
    agenda.add_argument("--assignee", help="only the lines with a task of this person (a user's login)")
    agenda.add_argument("--json", action="store_true", help="machine-readable output")
    runs(agenda, collector_agenda, database_url=True)


def clock_tick(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.worker import policy_books, real_rules, tick

    with open_ledger(settings) as ledger:
        summary = tick(
            ledger,
            policy_books(settings),
            real_rules(settings),
            args.at,
            tenant=args.tenant,
            due_only=args.due_only,
            batch_size=settings.escalation_batch_size,
        )
    unchanged = f" ({summary.unchanged} unchanged since their last evaluation)" if summary.unchanged else ""
    print(f"clock tick at {args.at.isoformat()}: {summary.customers} customer(s) evaluated{unchanged}")
    for event_type, count in sorted(summary.decisions.items()):
        print(f"  {event_type:<28} {count}")
    total = sum(summary.decisions.values())
    print(f"{total} decision(s) recorded, {summary.duplicates} already recorded, {summary.timers_set} timer(s) set")
    if not summary.failed:
        return 0
    print(f"{summary.failures} customer(s) could not be evaluated (see escalation.evaluation_failed in the log):")
    for failure in summary.failed:
        print(f"  {failure.tenant}/{failure.customer_id}: {failure.reason}")
    return 1


def rates_show(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.interest import SERIES, RateTable

    table = RateTable.default(settings.rates_file)
    override = str(settings.rates_file) if settings.rates_file else "(RELANCE_RATES_FILE unset)"
    print(f"reference rates in effect (annual percent, in force on each semester's first day); overrides: {override}")
    for name in table.tables():
        series = SERIES[name]
        if name != "ecb":
            dated = "the reference day before the semester" if series.dated_by_reference_day else "its first day"
            print("")
            print(f"{name}: {series.title} (annual percent, in force on {dated}; rows {name},<date>,<rate>)")
        print(f"  {'reference' if series.dated_by_reference_day else 'semester':<10}  {'rate':>7}  source")
        for row in table.rows(name):
            replaced = f" (replaces {row.replaces[0]} from {row.replaces[1]})" if row.replaces else ""
            print(f"  {row.dated.isoformat():<10}  {row.rate:>7}  {row.source}{replaced}")
    return 0


def rates_check(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.interest import RATES_WARNING_DAYS, SERIES, RateTable, rate_line

    table = RateTable.default(settings.rates_file)
    on: date = args.at or datetime.now(UTC).date()
    within: int = RATES_WARNING_DAYS if args.within is None else args.within
    names: list[str] = args.table or table.tables()
    gaps = table.gaps(on, within, names)
    if not gaps:
        print(
            f"ok: every semester from {on.isoformat()} through the next {within} day(s) has a reference rate "
            f"({', '.join(names)})"
        )
        return 0
    target = settings.rates_file or "a CSV file named by RELANCE_RATES_FILE (create it, header semester_start,rate)"
    for gap in gaps:
        when = (
            f"began {-gap.days_left} day(s) ago: interest on its days cannot be computed"
            if gap.begun
            else f"begins in {gap.days_left} day(s): add its rate by then"
        )
        what = "reference rate" if gap.series == "ecb" else SERIES[gap.series].title
        print(f"missing: no {what} for the semester starting {gap.semester.isoformat()}, which {when}")
    print(f'add to {target}, with the official rate in force on that day (see the README, "Reference rates"):')
    for gap in gaps:
        print(f"  {rate_line(gap.semester, gap.series)}")
    return 1


def collector_agenda(args: argparse.Namespace, settings: Settings) -> int:
    from services.escalation.agenda import build_agenda, render_agenda
    from services.escalation.interest import RateTable

    rates = RateTable.default(settings.rates_file)
    with open_ledger(settings) as ledger:
        keys = ledger.streams(args.tenant)
        if not keys:
            print(f"relance: tenant {args.tenant!r} has no customers in this ledger", file=sys.stderr)
            return 1
        states = (ledger.state(tenant, customer) for tenant, customer in keys)
        items = build_agenda(states, args.date, rates, assignee=args.assignee)
    if args.json:
        document = {
            "tenant": args.tenant,
            "date": args.date.isoformat(),
            "assignee": args.assignee,
            "items": [i.to_json() for i in items],
        }
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render_agenda(items, args.tenant, args.date, args.assignee))
    return 0
