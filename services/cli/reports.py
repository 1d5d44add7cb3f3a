"""``relance report aged-balance``, ``report dso`` and ``report committee``: the receivables as of a day.

Each report folds the tenant's streams as of the end of the day (``--as-of``, default today in UTC) in the
``occurred`` reading (:mod:`services.reports`), and writes one of four formats: an aligned table, CSV, JSON or one
self-contained HTML page. ``--tenant`` may be left out when the database holds a single tenant. Amounts are per
currency, never summed across currencies.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime
from pathlib import Path

from services.cli.options import Commands, day, runs
from services.reports import aging, dso
from services.reports.formats import COMMITTEE_FILES, FORMATS, Format, Report, render, write_committee
from shared.config import Settings
from shared.ledger.store import Ledger
from shared.runtime import open_ledger

AGED_EPILOG = """\
Each open invoice's outstanding principal goes to a bucket by its days past due at the end of the day
(as-of - due date): not yet due (0 or less), 1-30, 31-60, 61-90, > 90. Invoices under an open dispute are in the
"disputed" column, not in the buckets. Unapplied credit (payments and credit notes not allocated) is shown apart.
  principal = the buckets' sum;  net = principal + disputed - unapplied credit
Interest and fees are the claims still owed besides principal. Every currency has its totals row."""

DSO_EPILOG = """\
receivables = open principal at the end of the as-of day, net of unapplied credit (claims not included)
sales       = invoices issued in the span (tax included, not cancelled) less credit notes issued in it
period      = Nm: the N calendar months ending on the as-of day (whole months when it is a month's last day);
              Nd: the N days ending on it
simple:    DSO = receivables / sales of the period x days of the period
countback: remaining = receivables; walk back from the as-of day month by month (the last month cut at the
           period's start); while a month's sales do not cover what remains, count its days and take its sales
           off; the month that covers the rest counts remaining / its sales x its days (prorated). If the period's
           sales do not cover the receivables the DSO is ">= the period's days".
No sales in the period: n/a. Receivables of zero or less: 0. Rounded to a tenth of a day."""


def add_report(commands: Commands) -> None:
    report = commands.add_parser("report", help="aged balance, DSO and the credit committee's pack, as of a day")
    reports = report.add_subparsers(title="report commands", metavar="REPORT")

    aged = reports.add_parser(
        "aged-balance",
        help="principal by days past due, disputed and unapplied credit apart, claims apart",
        epilog=AGED_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(aged)
    aged.add_argument("--by", choices=aging.GROUPINGS, default="customer", help="one row per (default: customer)")
    _output(aged)
    runs(aged, aged_balance, database_url=True)

    days = reports.add_parser(
        "dso",
        help="days sales outstanding, simple or countback",
        epilog=DSO_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _common(days)
    days.add_argument("--method", choices=dso.METHODS, default="simple", help="default: simple")
    days.add_argument(
        "--period", type=period, default=dso.PeriodLength(3, "m"), help="3m, 6m, 12m, 90d... (default 3m)"
    )
    days.add_argument("--by", choices=dso.GROUPINGS, default="tenant", help="one row per (default: tenant)")
    _output(days)
    runs(days, days_sales_outstanding, database_url=True)

    committee = reports.add_parser(
        "committee",
        help="the credit committee's pack: aging and DSO trends, accounts to discuss (HTML, CSV and JSON)",
    )
    _common(committee)
    committee.add_argument("--months", type=months, default=6, help="month ends in the trends (default 6)")
    committee.add_argument(
        "--period",
        type=period,
        default=dso.PeriodLength(3, "m"),
        help="the DSO's period at each month end (default 3m)",
    )
    committee.add_argument("--out-dir", required=True, type=Path, help="where committee.html, .csv and .json go")
    committee.add_argument("--format", choices=tuple(COMMITTEE_FILES), help="only this file (default: all three)")
    runs(committee, committee_pack, database_url=True)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", help="the tenant (may be left out when the database holds one)")
    parser.add_argument("--as-of", type=day, help="the day, e.g. 2026-11-30 (default: today, UTC)")


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default="table", help="default: table")
    parser.add_argument("--out", type=Path, help="write to this file (default: standard output)")


def period(value: str) -> dso.PeriodLength:
    try:
        return dso.PeriodLength.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def months(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 36:
        raise argparse.ArgumentTypeError(f"not a number of months from 1 to 36: {value!r}")
    return int(value)


class TenantUnknown(LookupError):
    """The tenant to report on cannot be told: the message says which to give."""


def tenant_of(ledger: Ledger, given: str | None) -> str:
    """The tenant asked for, or the only one the database holds; :class:`TenantUnknown` saying what to give."""
    tenants = sorted({tenant for tenant, _ in ledger.streams()})
    if given is not None:
        if given not in tenants:
            known = ", ".join(tenants) or "none yet"
            raise TenantUnknown(f"tenant {given!r} has no events in this ledger (tenants: {known})")
        return given
    if len(tenants) == 1:
        return tenants[0]
    if not tenants:
        raise TenantUnknown("the ledger holds no events yet: nothing to report on")
    raise TenantUnknown(f"give --tenant: the ledger holds {len(tenants)} tenants ({', '.join(tenants)})")


def _tenant(ledger: Ledger, given: str | None) -> str | None:
    """:func:`tenant_of`, or None once the reason it cannot be told is on stderr."""
    try:
        return tenant_of(ledger, given)
    except TenantUnknown as exc:
        print(f"relance: {exc}", file=sys.stderr)
        return None


def _as_of(args: argparse.Namespace) -> date:
    return args.as_of if args.as_of is not None else datetime.now(UTC).date()


def _write(report: Report, form: Format, out: Path | None) -> None:
    text = render(report, form)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        print(f"{report.title} of {report.tenant} as of {report.as_of} -> {out}", file=sys.stderr)


def aged_balance(args: argparse.Namespace, settings: Settings) -> int:
    from services.reports.tables import aged_page
    from services.reports.walk import tenant_states

    with open_ledger(settings) as ledger:
        tenant = _tenant(ledger, args.tenant)
        if tenant is None:
            return 1
        as_of = _as_of(args)
        balance = aging.aged_balance(tenant, tenant_states(ledger, tenant, as_of), as_of, args.by)
    _write(aged_page(balance), args.format, args.out)
    return 0


def days_sales_outstanding(args: argparse.Namespace, settings: Settings) -> int:
    from services.reports.tables import dso_page
    from services.reports.walk import tenant_states

    with open_ledger(settings) as ledger:
        tenant = _tenant(ledger, args.tenant)
        if tenant is None:
            return 1
        as_of = _as_of(args)
        found = dso.dso_report(tenant, tenant_states(ledger, tenant, as_of), as_of, args.period, args.method, args.by)
    _write(dso_page(found), args.format, args.out)
    return 0


def committee_pack(args: argparse.Namespace, settings: Settings) -> int:
    from services.reports.committee import committee_pack as pack

    with open_ledger(settings) as ledger:
        tenant = _tenant(ledger, args.tenant)
        if tenant is None:
            return 1
        report = pack(ledger, tenant, _as_of(args), args.months, args.period)
    written = write_committee(report, args.out_dir, [args.format] if args.format else list(COMMITTEE_FILES))
    for path in written:
        print(path)
    return 0
