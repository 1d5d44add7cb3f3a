"""A report as data (tables of typed cells, figures, charts), and the four ways it is written: table, CSV, JSON, HTML.

One :class:`Report` is written by every format from the same cells, so the figures are the same in each: money is
a ``Decimal`` written with its currency's decimals at least (never rounded to fewer than it holds), thousands
separated by commas in the table and the HTML page, plain in CSV and JSON (a decimal string, never a float); a DSO
is its text (``45.2``, ``>= 91.0``, ``n/a``; JSON ``null`` for ``n/a``).

* **table** — aligned columns for a terminal, one block per table;
* **csv** — one table: its header and rows (totals rows last, their first column ``total``); several tables (the
  committee pack): each as a block — a row with the table's key, its header, its rows, an empty row — which
  :mod:`csv` reads back as it is;
* **json** — ``{"report", "tenant", "as_of", "facts", "tables": {key: {"title", "columns", "rows", "totals"}}}``;
* **html** — one self-contained page (inline CSS and SVG, no script, no external resource, printable on A4
  landscape), rendered by Jinja2 with autoescape on: every ERP text (a customer's name, a dispute's reason) is data.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

from jinja2 import Environment, FileSystemLoader

from services.reports.charts import Chart
from services.reports.dso import Dso
from shared.contracts.erp import minor_units

Format = Literal["table", "csv", "json", "html"]
FORMATS: tuple[Format, ...] = ("table", "csv", "json", "html")
Kind = Literal["text", "money", "count", "days"]
Cell = str | int | Decimal | Dso | None
TEMPLATES = Path(__file__).parent / "templates"
NA = "n/a"


@dataclass(frozen=True, slots=True)
class Column:
    key: str
    label: str
    kind: Kind = "text"

    @property
    def numeric(self) -> bool:
        return self.kind != "text"


@dataclass
class Table:
    """Rows of cells by column key; a money cell takes its row's ``currency`` for its decimals."""

    key: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Cell]]
    totals: list[dict[str, Cell]] = field(default_factory=list)
    note: str = ""

    def text(self, row: dict[str, Cell], column: Column) -> str:
        """A cell as the table and the page show it."""
        return shown(row.get(column.key), column.kind, _currency(row))


@dataclass(frozen=True, slots=True)
class Fact:
    """A headline figure of the page (a card): ``value`` already written, ``note`` under it."""

    label: str
    value: str
    note: str = ""
    tone: Literal["", "good", "bad"] = ""


@dataclass
class Report:
    kind: str  # aged_balance, dso, committee
    title: str
    tenant: str
    as_of: date
    tables: list[Table]
    lines: list[str] = field(default_factory=list)  # what the figures mean, under the title
    facts: list[Fact] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)  # the page's order: (heading, table keys)

    def table(self, key: str) -> Table:
        for table in self.tables:
            if table.key == key:
                return table
        raise KeyError(key)


# --------------------------------------------------------------------------------------------------- cells
def money(amount: Decimal, currency: str | None = None, *, grouped: bool = True) -> str:
    """``1,234.50``: the currency's decimals at least, all the amount holds if more; thousands grouped or not."""
    places = minor_units(currency) if currency else 2
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < places:
        amount = amount.quantize(Decimal(1).scaleb(-places))
    return f"{amount:,f}" if grouped else f"{amount:f}"


def shown(value: Cell, kind: Kind, currency: str | None = None) -> str:
    if value is None:
        return NA if kind == "days" else ""
    if isinstance(value, Dso):
        return str(value)
    if kind == "money" and isinstance(value, Decimal):
        return money(value, currency)
    if kind == "count" and isinstance(value, int):
        return f"{value:,}"
    return str(value)


def plain(value: Cell, kind: Kind, currency: str | None = None) -> str:
    """A cell as CSV writes it: money without grouping."""
    if kind == "money" and isinstance(value, Decimal):
        return money(value, currency, grouped=False)
    if kind == "count" and isinstance(value, int):
        return str(value)
    return shown(value, kind, currency)


def _json_cell(value: Cell, kind: Kind, currency: str | None) -> Any:
    if value is None:
        return None
    if isinstance(value, Dso):
        return None if value.days is None else str(value)
    if isinstance(value, Decimal):
        return money(value, currency, grouped=False) if kind == "money" else str(value)
    return value


def _currency(row: dict[str, Cell]) -> str | None:
    currency = row.get("currency")
    return currency if isinstance(currency, str) and len(currency) == 3 else None


# --------------------------------------------------------------------------------------------------- writers
def render(report: Report, form: Format) -> str:
    if form == "table":
        return as_table(report)
    if form == "csv":
        return as_csv(report)
    if form == "json":
        return as_json(report)
    if form == "html":
        return as_html(report)
    raise ValueError(f"unknown format {form!r}: one of {', '.join(FORMATS)}")


def as_table(report: Report) -> str:
    lines = [f"{report.title} — {report.tenant}, as of {report.as_of}", *(f"  {line}" for line in report.lines)]
    for fact in report.facts:
        lines.append(f"  {fact.label}: {fact.value}" + (f" ({fact.note})" if fact.note else ""))
    for table in report.tables:
        lines += ["", table.title]
        if table.note:
            lines.append(f"  {table.note}")
        if not table.rows and not table.totals:
            lines.append("  (none)")
            continue
        lines += _aligned(table)
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _aligned(table: Table) -> list[str]:
    headers = [c.label for c in table.columns]
    body = [[table.text(row, c) for c in table.columns] for row in table.rows]
    foot = [[table.text(row, c) for c in table.columns] for row in table.totals]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *body, *foot, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if column.numeric else cell.ljust(width)
            for cell, width, column in zip(cells, widths, table.columns, strict=True)
        ]
        return "  " + "  ".join(parts)

    rule = "  " + "  ".join("-" * w for w in widths)
    out = [line(headers), rule, *(line(cells) for cells in body)]
    if foot:
        out += [*([rule] if body else []), *(line(cells) for cells in foot)]
    return out


def _csv_rows(table: Table) -> list[list[str]]:
    rows = [[c.label for c in table.columns]]
    for row in [*table.rows, *table.totals]:
        rows.append([plain(row.get(c.key), c.kind, _currency(row)) for c in table.columns])
    return rows


def as_csv(report: Report) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if len(report.tables) == 1:
        writer.writerows(_csv_rows(report.tables[0]))
        return buffer.getvalue()
    for table in report.tables:
        writer.writerow([table.key])
        writer.writerows(_csv_rows(table))
        writer.writerow([])
    return buffer.getvalue()


def read_csv_blocks(text: str) -> dict[str, list[dict[str, str]]]:
    """A committee pack's CSV read back: table key -> its rows as {label: cell} (what a spreadsheet user sees)."""
    blocks: dict[str, list[dict[str, str]]] = {}
    rows = list(csv.reader(io.StringIO(text)))
    position = 0
    while position < len(rows):
        if not rows[position]:
            position += 1
            continue
        key, header = rows[position][0], rows[position + 1]
        position += 2
        found: list[dict[str, str]] = []
        while position < len(rows) and rows[position]:
            found.append(dict(zip(header, rows[position], strict=True)))
            position += 1
        blocks[key] = found
    return blocks


def as_json(report: Report) -> str:
    tables: dict[str, Any] = {}
    for table in report.tables:

        def cells(row: dict[str, Cell], table: Table = table) -> dict[str, Any]:
            return {c.key: _json_cell(row.get(c.key), c.kind, _currency(row)) for c in table.columns}

        tables[table.key] = {
            "title": table.title,
            "columns": [{"key": c.key, "label": c.label, "kind": c.kind} for c in table.columns],
            "rows": [cells(row) for row in table.rows],
            "totals": [cells(row) for row in table.totals],
        }
    document = {
        "report": report.kind,
        "title": report.title,
        "tenant": report.tenant,
        "as_of": report.as_of.isoformat(),
        "notes": report.lines,
        "facts": [{"label": f.label, "value": f.value, "note": f.note} for f in report.facts],
        "tables": tables,
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


_environment: Environment | None = None


def environment() -> Environment:
    """The reports' Jinja2 environment: autoescape on for every template (ERP text is data)."""
    global _environment
    if _environment is None:
        _environment = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=True, auto_reload=False, keep_trailing_newline=True
        )
    return _environment


def as_html(report: Report) -> str:
    sections = report.sections or [("", [table.key for table in report.tables])]
    charts = {chart.key: chart for chart in report.charts}
    return (
        environment()
        .get_template("report.html.j2")
        .render(report=report, sections=sections, charts=charts, tables={t.key: t for t in report.tables})
    )


COMMITTEE_FILES: dict[Format, str] = {"html": "committee.html", "csv": "committee.csv", "json": "committee.json"}


def write_committee(report: Report, out_dir: Path, forms: list[Format]) -> list[Path]:
    """Write the pack's files into ``out_dir`` (made if missing); the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for form in forms:
        path = out_dir / COMMITTEE_FILES[form]
        path.write_text(render(report, form), encoding="utf-8")
        written.append(path)
    return written
