"""The committee page's charts as SVG geometry computed here: stacked bars (the aging trend) and lines (DSO).

The template draws what these classes place (rectangles, polylines, ticks, labels); nothing is computed in the page
and nothing runs in it. Values are ``Decimal``; positions are floats (pixels of the SVG's own box), rounded to a
tenth. The scale starts at zero and ends at a round number (1, 2, 2.5 or 5 times a power of ten) above the largest
value, in four or five ticks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

WIDTH = 520.0
HEIGHT = 230.0
LEFT, RIGHT, TOP, BOTTOM = 64.0, 12.0, 14.0, 34.0
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    color: str
    label: str  # the tooltip (SVG <title>): what the rectangle stands for


@dataclass(frozen=True, slots=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True, slots=True)
class Line:
    label: str
    color: str
    points: list[tuple[float, float]]  # polyline, None values left out (the line is broken there)
    dots: list[tuple[float, float, str, float]]  # each value's dot, its text, and where the text goes (its y)


@dataclass
class Chart:
    key: str
    title: str
    kind: str  # "bars" or "lines"
    legend: list[tuple[str, str]]  # (label, color)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    rects: list[Rect] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    note: str = ""
    width: float = WIDTH
    height: float = HEIGHT
    left: float = LEFT
    plot_bottom: float = HEIGHT - BOTTOM
    plot_right: float = WIDTH - RIGHT


def nice_top(largest: Decimal) -> tuple[Decimal, Decimal]:
    """A round top of the scale above ``largest`` and its step (four or five steps)."""
    if largest <= 0:
        return Decimal(1), Decimal("0.25")
    raw = largest / 4
    power = Decimal(10) ** (raw.adjusted())
    for factor in (Decimal(1), Decimal(2), Decimal("2.5"), Decimal(5), Decimal(10)):
        step = factor * power
        if step * 5 >= largest:
            top = step * ((largest / step).to_integral_value(rounding="ROUND_CEILING"))
            return top, step
    return largest, largest / 4  # pragma: no cover - the factors above always reach it


def compact(value: Decimal) -> str:
    """An axis label: 1.2M, 350k, 12.5, 0."""
    magnitude = abs(value)
    if magnitude >= 1_000_000:
        return f"{(value / 1_000_000).normalize():f}M"
    if magnitude >= 1_000:
        return f"{(value / 1_000).quantize(Decimal('0.1')).normalize():f}k"
    return f"{value.normalize():f}"


def _y(value: Decimal, top: Decimal) -> float:
    span = HEIGHT - BOTTOM - TOP
    return round(HEIGHT - BOTTOM - float(value / top) * span, 1)


def _y_ticks(top: Decimal, step: Decimal) -> list[Tick]:
    ticks, value = [], ZERO
    while value <= top:
        ticks.append(Tick(_y(value, top), compact(value)))
        value += step
    return ticks


def stacked_bars(
    key: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, str]],
    values: Sequence[Sequence[Decimal]],
    *,
    note: str = "",
) -> Chart:
    """One bar per category, stacked from the bottom in the order of ``series`` (label, color)."""
    totals = [sum((v for v in column if v > 0), ZERO) for column in values]
    top, step = nice_top(max(totals, default=ZERO))
    slot = (WIDTH - LEFT - RIGHT) / max(len(categories), 1)
    bar = min(56.0, slot * 0.62)
    chart = Chart(key, title, "bars", list(series), _y_ticks(top, step), note=note)
    for index, (category, column) in enumerate(zip(categories, values, strict=True)):
        x = LEFT + slot * index + (slot - bar) / 2
        chart.x_ticks.append(Tick(round(LEFT + slot * index + slot / 2, 1), category))
        base = ZERO
        for (label, color), value in zip(series, column, strict=True):
            if value <= 0:
                continue
            y_top, y_base = _y(base + value, top), _y(base, top)
            chart.rects.append(
                Rect(round(x, 1), y_top, round(bar, 1), round(y_base - y_top, 1), color, f"{category} {label}: {value}")
            )
            base += value
    return chart


def line_chart(
    key: str,
    title: str,
    categories: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[Decimal | None]]],
    *,
    note: str = "",
) -> Chart:
    """One line per series (label, color, a value or None per category)."""
    present = [v for _, _, values in series for v in values if v is not None]
    top, step = nice_top(max(present, default=ZERO))
    slot = (WIDTH - LEFT - RIGHT) / max(len(categories), 1)
    chart = Chart(key, title, "lines", [(label, color) for label, color, _ in series], _y_ticks(top, step), note=note)
    xs = [round(LEFT + slot * index + slot / 2, 1) for index in range(len(categories))]
    chart.x_ticks = [Tick(x, category) for x, category in zip(xs, categories, strict=True)]
    # At each category, the highest value's text goes above its dot (the first series' of equal ones), the others'
    # below, so that close values stay apart
    above: list[int | None] = []
    for i in range(len(xs)):
        candidates = [(v, -number) for number, (_, _, values) in enumerate(series) if (v := values[i]) is not None]
        above.append(-max(candidates)[1] if candidates else None)
    for number, (label, color, values) in enumerate(series):
        points = [(x, _y(v, top)) for x, v in zip(xs, values, strict=True) if v is not None]
        dots = [
            (x, _y(v, top), f"{v}", _y(v, top) + (-7 if first == number else 15))
            for x, v, first in zip(xs, values, above, strict=True)
            if v is not None
        ]
        chart.lines.append(Line(label, color, points, dots))
    return chart
