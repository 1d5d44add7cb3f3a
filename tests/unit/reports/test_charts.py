"""The committee page's SVG geometry: a round scale above the largest value, bars stacked in order, readable DSO
figures."""

from __future__ import annotations

from decimal import Decimal

from services.reports.charts import HEIGHT, compact, line_chart, nice_top, stacked_bars


def test_the_scale_ends_on_a_round_number_above_the_largest_value() -> None:
    assert nice_top(Decimal("1766235.62")) == (Decimal("2000000"), Decimal("500000"))
    assert nice_top(Decimal("92")) == (Decimal("100"), Decimal("20"))
    assert nice_top(Decimal(0)) == (Decimal(1), Decimal("0.25"))
    assert [compact(Decimal(v)) for v in ("0", "12.5", "350000", "1500000")] == ["0", "12.5", "350k", "1.5M"]


def test_bars_stack_from_the_bottom_in_the_series_order_and_skip_zeros() -> None:
    chart = stacked_bars(
        "k",
        "t",
        ["Oct", "Nov"],
        [("due", "#1"), ("late", "#2")],
        [[Decimal(50), Decimal(0)], [Decimal(60), Decimal(40)]],
    )
    # Oct: one rectangle (nothing late); Nov: "due" at the bottom, "late" on top of it
    assert [(r.color, r.label) for r in chart.rects] == [
        ("#1", "Oct due: 50"),
        ("#1", "Nov due: 60"),
        ("#2", "Nov late: 40"),
    ]
    nov_due, nov_late = chart.rects[1], chart.rects[2]
    assert nov_late.y + nov_late.height == nov_due.y  # stacked
    assert nov_due.y + nov_due.height < HEIGHT  # on the axis, inside the box
    assert nov_due.height / nov_late.height == 1.5  # 60 / 40


def test_the_higher_dso_s_figure_goes_above_its_dot_the_lower_s_below() -> None:
    chart = line_chart(
        "k",
        "t",
        ["Oct", "Nov"],
        [("simple", "#1", [Decimal(50), None]), ("countback", "#2", [Decimal(50), Decimal(4)])],
    )
    simple, countback = chart.lines
    assert [text_y < y for _, y, _, text_y in simple.dots] == [True]  # equal values: the first series above
    assert [text_y < y for _, y, _, text_y in countback.dots] == [False, True]
    assert len(simple.points) == 1  # no value in November: the line stops
