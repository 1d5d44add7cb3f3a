"""The credit committee's pack: where the receivables stand as of a day, how they moved, and which accounts to discuss.

Read from each customer's stream once, folded as of the end of every month of the trend (:mod:`services.reports.
walk`), in the ``occurred`` reading. As of the day D, over the trend's months (the ``months`` month ends through D,
and the month end before them as its start):

* **aged balance** at D by currency, and its **trend**: the buckets and the disputed amount at each month end;
* **DSO trend**: simple and countback (:mod:`services.reports.dso`) at each month end, over ``period``;
* **top overdue accounts**: the 10 customers owing most past due in each currency;
* **blocked and over-limit accounts**: a credit block in force at D (relance's decision, its reason and day), or a
  balance above the credit limit of the customer's profile (same currency);
* **payment habits**: per customer and currency, the average days late of the payments received in the trend's
  recent half against its earlier half (weighted by the amounts each payment settled: ``payment day - due date``
  of each invoice it was applied to; negative is early), and the ``payment_behaviour_changed`` tasks relance created
  in the trend; shown when either says the customer pays later (by :data:`DRIFT_DAYS` or more);
* **disputes** open at D by reason and age (days since the dispute's latest statement);
* **promises to pay** recorded in the trend: kept (the payments since cover them, or nothing they cover is open),
  broken (relance's ``promise_broken`` task names them), pending (neither yet);
* **claims**: late interest and fees charged, collected and waived during the trend (the difference between the
  month end before the trend and D), and still owed at D;
* **hand-overs** to collection during the trend: invoices that reached a level whose actions hand them over.

Amounts are per currency, never summed across currencies; every figure of the page is in the CSV and JSON too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from services.reports import charts
from services.reports.aging import BUCKETS, AgedBalance, AgedRow, aged_balance
from services.reports.dso import Dso, DsoReport, Method, PeriodLength, dso_report
from services.reports.formats import Cell, Column, Fact, Report, Table, money
from services.reports.tables import aged_cells, aged_columns
from services.reports.walk import month_end, month_ends, months_back, tenant_states_at
from shared.ledger.claims import Figures
from shared.ledger.state import CustomerState
from shared.ledger.store import Ledger
from shared.ledger.tasks import promise_kept

ZERO = Decimal(0)
TOP = 10
DRIFT_DAYS = Decimal(10)
DRIFT_ROWS = 15
DEFAULT_PERIOD = PeriodLength(3, "m")
OVERDUE_ALARM = Decimal(30)  # percent of principal past due from which the overdue card is marked
BEHAVIOUR_TASK = "payment_behaviour_changed"
BROKEN_TASK = "promise_broken"
BUCKET_COLORS = ("#8fb8de", "#f3d27a", "#f0a35e", "#dc6b43", "#a33a32")
DISPUTED_COLOR = "#8e7cc3"
SIMPLE_COLOR, COUNTBACK_COLOR = "#1f5f99", "#c8553d"


@dataclass(frozen=True, slots=True)
class Timeline:
    """The days the pack reads: the month end before the trend (``start``), then the trend's month ends through D."""

    start: date
    ends: list[date]

    @classmethod
    def of(cls, as_of: date, months: int) -> Timeline:
        ends = month_ends(as_of, months)
        return cls(month_end(months_back(ends[0].replace(day=1), 1)), ends)

    @property
    def days(self) -> list[date]:
        return [self.start, *self.ends]

    @property
    def as_of(self) -> date:
        return self.ends[-1]

    @property
    def split(self) -> date:
        """The last day of the trend's earlier half (payment habits compare the halves)."""
        return self.ends[(len(self.ends) - 1) // 2] if len(self.ends) > 1 else self.start

    def holds(self, day: date) -> bool:
        return self.start < day <= self.as_of


def committee_pack(
    ledger: Ledger, tenant: str, as_of: date, months: int = 6, period: PeriodLength = DEFAULT_PERIOD
) -> Report:
    """The pack of ``tenant`` as of ``as_of``: each stream read once, folded at each of the trend's month ends."""
    timeline = Timeline.of(as_of, months)
    histories = [states for _, states in tenant_states_at(ledger, tenant, timeline.days)]
    return build(tenant, timeline, histories, period)


def build(
    tenant: str, timeline: Timeline, histories: Sequence[Sequence[CustomerState]], period: PeriodLength = DEFAULT_PERIOD
) -> Report:
    """The pack from each customer's states at ``timeline.days`` (one list per customer, in the timeline's order)."""
    at = [[h[i] for h in histories if h[i].version] for i in range(len(timeline.days))]
    now, before = at[-1], {s.customer_id: s for s in at[0]}
    as_of = timeline.as_of
    balance = aged_balance(tenant, now, as_of, "currency")
    trend = [aged_balance(tenant, states, day, "currency") for states, day in zip(at[1:], timeline.ends, strict=True)]
    methods: tuple[Method, ...] = ("simple", "countback")
    dso = {
        method: [
            dso_report(tenant, states, day, period, method) for states, day in zip(at[1:], timeline.ends, strict=True)
        ]
        for method in methods
    }
    currencies = sorted(set(balance.totals) | {c for r in dso["simple"] for c in r.totals})
    labels = [day.strftime("%b %Y") if day == month_end(day) else day.isoformat() for day in timeline.ends]

    tables = [
        _aged_now(balance),
        _aging_trend(trend, timeline.ends),
        _dso_trend(dso, timeline.ends, period),
        _top_overdue(now, as_of),
        _blocked(now, as_of),
        _habits(now, timeline),
        _disputes(now, as_of),
        _promises(now, timeline),
        _claims(now, before, timeline),
        _handovers(now, before, timeline),
    ]
    report = Report(
        "committee",
        "Credit committee pack",
        tenant,
        as_of,
        tables,
        [
            f"trend: {len(timeline.ends)} month ends from {timeline.ends[0]} to {as_of}; DSO over {period}",
            "amounts per currency, never summed across currencies; as of the end of each day, with everything "
            "known today",
        ],
    )
    report.facts = _facts(balance.totals, trend, dso, currencies)
    for currency in currencies:
        report.charts.append(
            charts.stacked_bars(
                f"aging_{currency}",
                f"Aged balance, {currency}",
                labels,
                [*zip(BUCKETS, BUCKET_COLORS, strict=True), ("disputed", DISPUTED_COLOR)],
                [_stack(r.totals.get(currency)) for r in trend],
                note="principal by days past due at each month end; disputed on top",
            )
        )
        report.charts.append(
            charts.line_chart(
                f"dso_{currency}",
                f"DSO, {currency} (days, {period})",
                labels,
                [
                    ("simple", SIMPLE_COLOR, [_days(r, currency) for r in dso["simple"]]),
                    ("countback", COUNTBACK_COLOR, [_days(r, currency) for r in dso["countback"]]),
                ],
            )
        )
    report.sections = [
        ("Aged balance", [f"aging_{c}" for c in currencies] + ["aged_balance", "aging_trend"]),
        ("Days sales outstanding", [f"dso_{c}" for c in currencies] + ["dso_trend"]),
        ("Top overdue accounts", ["top_overdue"]),
        ("Blocked and over-limit accounts", ["blocked"]),
        ("Payment habits", ["habits"]),
        ("Disputes", ["disputes"]),
        ("Promises to pay", ["promises"]),
        ("Claims (interest and fees)", ["claims"]),
        ("Hand-overs to collection", ["handovers"]),
    ]
    return report


# --------------------------------------------------------------------------------------------------- figures
def _stack(row: AgedRow | None) -> list[Decimal]:
    if row is None:
        return [ZERO] * (len(BUCKETS) + 1)
    return [*row.buckets, row.disputed]


def _dso_of(report: DsoReport, currency: str) -> Dso:
    row = report.totals.get(currency)
    return Dso(None) if row is None else report.dso(row)


def _days(report: DsoReport, currency: str) -> Decimal | None:
    return _dso_of(report, currency).days


def _facts(
    totals: dict[str, AgedRow], trend: list[AgedBalance], dso: dict[Method, list[DsoReport]], currencies: list[str]
) -> list[Fact]:
    """Four cards per currency: receivables (and their change on the previous month end), overdue (its share of
    principal, what is over 60 days), DSO by both methods, disputed and claims owed."""
    facts = []
    for currency in currencies:
        row = totals.get(currency) or AgedRow("total", "total", currency)
        previous = trend[-2].totals.get(currency) if len(trend) > 1 else None
        change = ""
        if previous is not None:
            delta = row.net - previous.net
            change = f"{'+' if delta >= 0 else ''}{money(delta, currency)} on the previous month end"
        facts.append(Fact(f"Receivables {currency}", f"{money(row.net, currency)} {currency}", change))
        share = _share(row.overdue, row.principal)
        over_60 = row.buckets[3] + row.buckets[4]
        facts.append(
            Fact(
                f"Overdue {currency}",
                f"{money(row.overdue, currency)} {currency}",
                ("" if share is None else f"{share}% of principal; ") + f"over 60 days {money(over_60, currency)}",
                "bad" if share is not None and share >= OVERDUE_ALARM else "good",
            )
        )
        simple, countback = _dso_of(dso["simple"][-1], currency), _dso_of(dso["countback"][-1], currency)
        facts.append(Fact(f"DSO {currency}", f"{simple} days", f"countback {countback} days"))
        facts.append(
            Fact(
                f"Disputed and claims {currency}",
                f"{money(row.disputed, currency)} {currency}",
                f"claims owed {money(row.claims, currency)} {currency}",
            )
        )
    return facts


def _share(part: Decimal, whole: Decimal) -> Decimal | None:
    if whole <= 0:
        return None
    return (part / whole * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)


def _name(state: CustomerState) -> str:
    return str((state.profile or {}).get("name") or state.customer_id)


def _tenth(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------------------- tables
def _aged_now(balance: AgedBalance) -> Table:
    return Table(
        "aged_balance",
        f"Aged balance as of {balance.as_of}",
        aged_columns("currency"),
        [],
        [aged_cells(balance.totals[c], c) for c in balance.currencies()],
        note="principal by days past due; disputed apart; net = principal + disputed - unapplied credit",
    )


def _aging_trend(trend: Sequence[AgedBalance], ends: list[date]) -> Table:
    columns = [Column("month_end", "month end"), *aged_columns("currency")]
    rows: list[dict[str, Cell]] = []
    for report, day in zip(trend, ends, strict=True):
        for currency in report.currencies():
            rows.append({"month_end": day.isoformat(), **aged_cells(report.totals[currency], currency)})
    rows.sort(key=lambda r: (str(r["key"]), str(r["month_end"])))
    return Table("aging_trend", "Aged balance at each month end", columns, rows)


def _dso_trend(dso: dict[Method, list[DsoReport]], ends: list[date], period: PeriodLength) -> Table:
    columns = [
        Column("month_end", "month end"),
        Column("currency", "currency"),
        Column("receivables", "receivables", "money"),
        Column("sales", f"sales of {period}", "money"),
        Column("simple", "DSO simple", "days"),
        Column("countback", "DSO countback", "days"),
    ]
    rows: list[dict[str, Cell]] = []
    for simple, countback, day in zip(dso["simple"], dso["countback"], ends, strict=True):
        for currency, row in sorted(simple.totals.items()):
            rows.append(
                {
                    "month_end": day.isoformat(),
                    "currency": currency,
                    "receivables": row.receivables,
                    "sales": row.sales,
                    "simple": simple.dso(row),
                    "countback": countback.dso(countback.totals[currency]),
                }
            )
    rows.sort(key=lambda r: (str(r["currency"]), str(r["month_end"])))
    return Table(
        "dso_trend",
        f"DSO at each month end, over {period}",
        columns,
        rows,
        note="simple: receivables / sales x days; countback: months walked back until their sales cover what is owed",
    )


def _flags(state: CustomerState, currency: str) -> str:
    flags = []
    if state.credit_block is not None:
        flags.append("blocked")
    if any(i in state.disputes for i in state.invoices if state.invoices[i].currency == currency):
        flags.append("dispute")
    if any(p.get("currency") == currency for p in state.promises.values()):
        flags.append("promise")
    if any(p.get("currency") == currency for p in state.plans.values()):
        flags.append("plan")
    if any(e.currency == currency and "hand_over" in e.actions for e in state.escalations.values()):
        flags.append("handed over")
    return ", ".join(flags)


def _top_overdue(states: Iterable[CustomerState], as_of: date) -> Table:
    found: list[dict[str, Cell]] = []
    for state in states:
        late: dict[str, list[tuple[Decimal, int]]] = {}
        for invoice in state.open_invoices():
            days = (as_of - invoice.due_date).days
            if days > 0 and invoice.invoice_id not in state.disputes and invoice.outstanding > 0:
                late.setdefault(invoice.currency, []).append((invoice.outstanding, days))
        for currency, items in late.items():
            owed = state.claims_owed().get(currency, ZERO)
            found.append(
                {
                    "key": state.customer_id,
                    "name": _name(state),
                    "currency": currency,
                    "overdue": sum((a for a, _ in items), ZERO),
                    "over_90": sum((a for a, d in items if d > 90), ZERO),
                    "invoices": len(items),
                    "oldest": max(d for _, d in items),
                    "claims": owed,
                    "flags": _flags(state, currency),
                }
            )
    found.sort(key=lambda r: (str(r["currency"]), -_decimal(r["overdue"]), str(r["key"])))
    rows: list[dict[str, Cell]] = []
    for currency in sorted({str(r["currency"]) for r in found}):
        rows += [r for r in found if r["currency"] == currency][:TOP]
    columns = [
        Column("key", "customer"),
        Column("name", "name"),
        Column("currency", "currency"),
        Column("overdue", "overdue", "money"),
        Column("over_90", "> 90 days", "money"),
        Column("invoices", "invoices", "count"),
        Column("oldest", "oldest (days late)", "count"),
        Column("claims", "claims owed", "money"),
        Column("flags", "notes"),
    ]
    return Table(
        "top_overdue", f"The {TOP} largest overdue accounts per currency (disputed invoices apart)", columns, rows
    )


def _decimal(value: Cell) -> Decimal:
    return value if isinstance(value, Decimal) else ZERO


def _limit(state: CustomerState) -> tuple[Decimal, str] | None:
    raw = (state.profile or {}).get("credit_limit")
    if not isinstance(raw, dict) or "amount" not in raw or "currency" not in raw:
        return None
    return Decimal(str(raw["amount"])), str(raw["currency"])


def _blocked(states: Iterable[CustomerState], as_of: date) -> Table:
    rows: list[dict[str, Cell]] = []
    for state in states:
        balances, overdue = state.balances(), state.overdue(as_of)
        limit = _limit(state)
        over = limit is not None and balances.get(limit[1], ZERO) > limit[0]
        block = state.credit_block
        if block is None and not over:
            continue
        currencies = sorted(balances) or [limit[1] if limit else ""]
        for currency in currencies:
            status = []
            if block is not None:
                status.append(f"blocked since {block['blocked_on']} ({block['reason']})")
            if over and limit is not None and limit[1] == currency:
                status.append("over its credit limit")
            rows.append(
                {
                    "key": state.customer_id,
                    "name": _name(state),
                    "currency": currency,
                    "balance": balances.get(currency, ZERO),
                    "overdue": overdue.get(currency, ZERO),
                    "limit": limit[0] if limit is not None and limit[1] == currency else None,
                    "over_by": balances.get(currency, ZERO) - limit[0]
                    if over and limit and limit[1] == currency
                    else None,
                    "status": "; ".join(status) or "blocked",
                }
            )
    rows.sort(key=lambda r: (str(r["currency"]), -_decimal(r["balance"]), str(r["key"])))
    columns = [
        Column("key", "customer"),
        Column("name", "name"),
        Column("currency", "currency"),
        Column("balance", "balance", "money"),
        Column("overdue", "overdue", "money"),
        Column("limit", "credit limit", "money"),
        Column("over_by", "over the limit by", "money"),
        Column("status", "status"),
    ]
    return Table("blocked", "Accounts blocked or over their credit limit", columns, rows)


def days_late(state: CustomerState, first: date, last: date) -> dict[str, tuple[Decimal, int]]:
    """Per currency: the amount-weighted average days late of the payments received from ``first`` to ``last``
    (``payment day - due date`` of each invoice a payment was applied to), and how many payments."""
    weighted: dict[str, Decimal] = {}
    amounts: dict[str, Decimal] = {}
    counts: dict[str, int] = {}
    for credit in state.credits.values():
        if credit.kind != "payment" or not first <= credit.on <= last or not credit.applied:
            continue
        for invoice_id, amount in credit.applied.items():
            invoice = state.invoices.get(invoice_id)
            if invoice is None:
                continue
            weighted[credit.currency] = (
                weighted.get(credit.currency, ZERO) + amount * (credit.on - invoice.due_date).days
            )
            amounts[credit.currency] = amounts.get(credit.currency, ZERO) + amount
        counts[credit.currency] = counts.get(credit.currency, 0) + 1
    return {c: (_tenth(weighted[c] / amounts[c]), counts[c]) for c in amounts if amounts[c] > 0}


def _habits(states: Iterable[CustomerState], timeline: Timeline) -> Table:
    rows: list[dict[str, Cell]] = []
    earlier = (date.fromordinal(timeline.start.toordinal() + 1), timeline.split)
    recent = (date.fromordinal(timeline.split.toordinal() + 1), timeline.as_of)
    for state in states:
        before, after = days_late(state, *earlier), days_late(state, *recent)
        flagged: dict[str, str] = {}
        for task in state.tasks.values():
            due = str(task.get("due_on", ""))[:10]
            if task.get("kind") == BEHAVIOUR_TASK and due and timeline.holds(date.fromisoformat(due)):
                flagged[str(task.get("currency", ""))] = due
        for currency in sorted(set(after) | set(flagged)):
            previous, now = before.get(currency), after.get(currency)
            change = now[0] - previous[0] if now is not None and previous is not None else None
            if currency not in flagged and (change is None or change < DRIFT_DAYS):
                continue
            rows.append(
                {
                    "key": state.customer_id,
                    "name": _name(state),
                    "currency": currency,
                    "before": None if previous is None else previous[0],
                    "payments_before": None if previous is None else previous[1],
                    "recent": None if now is None else now[0],
                    "payments_recent": None if now is None else now[1],
                    "change": change,
                    "flagged": flagged.get(currency, ""),
                }
            )
    rows.sort(key=lambda r: (-_decimal(r["change"]), str(r["key"])))
    columns = [
        Column("key", "customer"),
        Column("name", "name"),
        Column("currency", "currency"),
        Column("before", f"days late {earlier[0]} to {earlier[1]}", "days"),
        Column("payments_before", "payments then", "count"),
        Column("recent", f"days late {recent[0]} to {recent[1]}", "days"),
        Column("payments_recent", "payments lately", "count"),
        Column("change", "change (days)", "days"),
        Column("flagged", "relance's task (day)"),
    ]
    return Table(
        "habits",
        "Customers paying later than they used to",
        columns,
        rows[:DRIFT_ROWS],
        note=f"average days late, weighted by the amounts settled; shown from +{DRIFT_DAYS} days, or when relance "
        "created a payment_behaviour_changed task in the trend",
    )


def _disputes(states: Iterable[CustomerState], as_of: date) -> Table:
    grouped: dict[tuple[str, str], dict[str, Decimal | int]] = {}
    for state in states:
        for invoice_id, reason in state.disputes.items():
            invoice = state.invoices.get(invoice_id)
            if invoice is None or not invoice.is_open:
                continue
            latest = state.dispute_latest.get(invoice_id)
            since = date.fromisoformat(latest[0][:10]) if latest else as_of
            age = max((as_of - since).days, 0)
            entry = grouped.setdefault((reason or "(no reason given)", invoice.currency), {})
            bucket = "age_30" if age <= 30 else "age_60" if age <= 60 else "age_over_60"
            entry["count"] = int(entry.get("count", 0)) + 1
            entry["amount"] = _decimal_of(entry.get("amount")) + invoice.outstanding
            entry[bucket] = _decimal_of(entry.get(bucket)) + invoice.outstanding
            entry["oldest"] = max(int(entry.get("oldest", 0)), age)
    rows: list[dict[str, Cell]] = []
    for (reason, currency), entry in grouped.items():
        rows.append(
            {
                "reason": reason,
                "currency": currency,
                "count": int(entry["count"]),
                "amount": _decimal_of(entry["amount"]),
                "age_30": _decimal_of(entry.get("age_30")),
                "age_60": _decimal_of(entry.get("age_60")),
                "age_over_60": _decimal_of(entry.get("age_over_60")),
                "oldest": int(entry["oldest"]),
            }
        )
    rows.sort(key=lambda r: (str(r["currency"]), -_decimal(r["amount"]), str(r["reason"])))
    columns = [
        Column("reason", "reason"),
        Column("currency", "currency"),
        Column("count", "invoices", "count"),
        Column("amount", "disputed", "money"),
        Column("age_30", "up to 30 days", "money"),
        Column("age_60", "31-60 days", "money"),
        Column("age_over_60", "> 60 days", "money"),
        Column("oldest", "oldest (days)", "count"),
    ]
    return Table("disputes", "Open disputes by reason and age (days since the dispute was raised)", columns, rows)


def _decimal_of(value: Decimal | int | None) -> Decimal:
    return value if isinstance(value, Decimal) else ZERO


def _promise_status(state: CustomerState, promise_id: str) -> str:
    if promise_kept(state, promise_id):
        return "kept"
    for task in state.tasks.values():
        if task.get("kind") == BROKEN_TASK and str(task.get("note", "")).startswith(f"promise {promise_id} "):
            return "broken"
    return "pending"


def _promises(states: Iterable[CustomerState], timeline: Timeline) -> Table:
    counts: dict[tuple[str, str], tuple[int, Decimal]] = {}
    for state in states:
        for promise_id, raw in state.promises.items():
            recorded = state.promise_recorded.get(promise_id)
            if recorded is None or not timeline.holds(date.fromisoformat(recorded[:10])):
                continue
            key = (str(raw.get("currency", "")), _promise_status(state, promise_id))
            number, amount = counts.get(key, (0, ZERO))
            counts[key] = (number + 1, amount + Decimal(str(raw.get("amount", "0"))))
    rows: list[dict[str, Cell]] = []
    for currency in sorted({c for c, _ in counts}):
        row: dict[str, Cell] = {"currency": currency}
        for status in ("kept", "broken", "pending"):
            number, amount = counts.get((currency, status), (0, ZERO))
            row[status] = number
            row[f"{status}_amount"] = amount
        rows.append(row)
    columns = [Column("currency", "currency")]
    for status in ("kept", "broken", "pending"):
        columns += [Column(status, status, "count"), Column(f"{status}_amount", f"{status} (amount)", "money")]
    return Table(
        "promises",
        "Promises to pay recorded during the trend",
        columns,
        rows,
        note="kept: the payments since cover them; broken: past their grace unpaid (relance's promise_broken task)",
    )


def _claims(now: Iterable[CustomerState], before: dict[str, CustomerState], timeline: Timeline) -> Table:
    at_end: dict[str, Figures] = {}
    at_start: dict[str, Figures] = {}
    for state in now:
        for currency, figures in state.claims.figures().items():
            total = at_end.setdefault(currency, Figures())
            total += figures
        earlier = before.get(state.customer_id)
        if earlier is not None:
            for currency, figures in earlier.claims.figures().items():
                total = at_start.setdefault(currency, Figures())
                total += figures
    rows: list[dict[str, Cell]] = []
    for currency in sorted(set(at_end) | set(at_start)):
        end, start = at_end.get(currency, Figures()), at_start.get(currency, Figures())
        rows.append(
            {
                "currency": currency,
                "charged": end.charged - start.charged,
                "collected": end.paid - start.paid,
                "waived": end.waived - start.waived,
                "owed": end.owed,
                "owed_before": start.owed,
            }
        )
    columns = [
        Column("currency", "currency"),
        Column("charged", "charged", "money"),
        Column("collected", "collected", "money"),
        Column("waived", "waived", "money"),
        Column("owed_before", f"owed on {timeline.start}", "money"),
        Column("owed", f"owed on {timeline.as_of}", "money"),
    ]
    return Table(
        "claims",
        f"Late interest and fees from {date.fromordinal(timeline.start.toordinal() + 1)} to {timeline.as_of}",
        columns,
        rows,
        note="charged, collected and waived during the trend; interest is recomputed until its invoice is settled",
    )


def _handovers(now: Iterable[CustomerState], before: dict[str, CustomerState], timeline: Timeline) -> Table:
    rows: list[dict[str, Cell]] = []
    for state in now:
        earlier = before.get(state.customer_id)
        handed: dict[str, list[tuple[str, date | None]]] = {}
        for invoice_id, escalation in state.escalations.items():
            if "hand_over" not in escalation.actions:
                continue
            previous = earlier.escalations.get(invoice_id) if earlier is not None else None
            if previous is not None and "hand_over" in previous.actions:
                continue
            handed.setdefault(escalation.currency, []).append((invoice_id, escalation.reached_on))
        for currency, items in handed.items():
            invoices = [state.invoices[i] for i, _ in items if i in state.invoices]
            days = [d for _, d in items if d is not None]
            rows.append(
                {
                    "key": state.customer_id,
                    "name": _name(state),
                    "currency": currency,
                    "invoices": len(items),
                    "amount": sum((i.amount for i in invoices), ZERO),
                    "outstanding": sum((i.outstanding for i in invoices if i.is_open), ZERO),
                    "on": max(days).isoformat() if days else "",
                }
            )
    rows.sort(key=lambda r: (str(r["currency"]), str(r["on"]), str(r["key"])))
    columns = [
        Column("key", "customer"),
        Column("name", "name"),
        Column("currency", "currency"),
        Column("invoices", "invoices", "count"),
        Column("amount", "invoiced", "money"),
        Column("outstanding", f"still open on {timeline.as_of}", "money"),
        Column("on", "handed over on"),
    ]
    return Table("handovers", "Invoices handed over to collection during the trend", columns, rows)
