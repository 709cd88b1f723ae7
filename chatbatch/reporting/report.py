"""``chatbatch report``: one self-contained HTML file (inline CSS, charts as inline SVG drawn
here) rendered from ``report_data`` with Jinja2, autoescaped: user text is escaped."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from jinja2 import BaseLoader, ChoiceLoader, Environment, PackageLoader, StrictUndefined

from chatbatch.reporting.report_data import BUCKET_WIDTHS, Latency, ReportData, Timeline, nice_step
from chatbatch.rules.states import SCHEMA_INVALID, RequestStatus

TEMPLATE = "report.html.j2"
# Final states in the order the report stacks and lists them, with their chart colours.
STATE_COLOURS = {
    RequestStatus.SUCCEEDED.value: "#2f9e61",
    RequestStatus.REUSED.value: "#3b82c4",
    RequestStatus.FAILED.value: "#d9483b",
    RequestStatus.EXPIRED.value: "#e8912d",
    RequestStatus.CANCELLED.value: "#9aa1ab",
    RequestStatus.SUBMITTED.value: "#a98bd6",
    RequestStatus.SUBMITTING.value: "#c8b6e8",
    RequestStatus.QUEUED.value: "#d5d9df",
}
MAX_MESSAGE = 400
CHART_WIDTH = 960
CHART_HEIGHT = 260
MARGIN = {"left": 56, "right": 16, "top": 14, "bottom": 38}
X_LABELS = 7


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Marker:
    """A vertical line across the plot (a percentile), labelled at the top."""

    x: float
    label: str


@dataclass(frozen=True)
class BarChart:
    """An SVG bar chart laid out in ``width`` × ``height`` user units; the template draws it."""

    label: str
    bars: list[Bar]
    y_ticks: list[tuple[float, str]]
    x_labels: list[tuple[float, str]]
    markers: list[Marker] = field(default_factory=list)
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    left: int = MARGIN["left"]
    right: int = CHART_WIDTH - MARGIN["right"]
    top: int = MARGIN["top"]
    bottom: int = CHART_HEIGHT - MARGIN["bottom"]


def render_report(data: ReportData, comparison: dict[str, Any] | None = None) -> str:
    """The report as one HTML document; with ``comparison`` (``compare_batches``' JSON
    object), a section comparing the batch with another."""
    template = report_environment().get_template(TEMPLATE)
    context = report_context(data)
    if comparison is not None:
        context["comparison"] = comparison
        context["comparison_heat"] = heat_map(comparison["confusion"])
    return template.render(**context)


def report_context(data: ReportData) -> dict[str, Any]:
    """What the template needs: the data, formatted figures and laid-out charts."""
    usage = data.usage.as_dict()
    places = max(
        (_places(row.get("cost") or row.get("cost_priced_part")) for row in usage["rows"]),
        default=0,
    )
    counts = data.counts
    total = max(data.batch["total"], sum(counts.values()))
    states = [
        {
            "name": name,
            "count": counts.get(name, 0),
            "share": counts.get(name, 0) / total if total else 0.0,
            "colour": colour,
        }
        for name, colour in STATE_COLOURS.items()
    ]
    return {
        "batch": data.batch,
        "states": states,
        "counts": counts,
        "total": total,
        "finished": data.finished,
        "timeline": timeline_chart(data.timeline),
        "timeline_data": data.timeline,
        "latency": data.latency,
        "latency_chart": latency_chart(data.latency),
        "errors": [
            {
                "code": group.code,
                "count": group.count,
                "examples": [
                    {
                        "custom_id": e.custom_id,
                        "status": e.status,
                        "message": _shorten(e.message or ""),
                    }
                    for e in group.examples
                ],
            }
            for group in data.errors
        ],
        "error_total": sum(g.count for g in data.errors if g.code != SCHEMA_INVALID),
        "usage": usage,
        "priced": data.usage.prices is not None,
        "schema": data.schema,
        "quality": data.quality,
        "comparison": None,
        "heat": heat_map(data.quality["confusion"]) if data.quality else None,
        "providers": data.providers,
        "reused": counts.get(RequestStatus.REUSED.value, 0),
        "generated_at": data.generated_at,
        "fmt_money": lambda amount: _padded(amount, places),
        "fmt_seconds": format_seconds,
        "fmt_time": format_time,
        "fmt_int": format_count,
        "fmt_pct": format_percent,
    }


@dataclass(frozen=True)
class HeatCell:
    """One cell of the confusion heat map: rows of that gold label answered so, their share
    of the gold label's answered rows, and the cell's colour (green on the diagonal)."""

    answer: str
    count: int
    share: float
    colour: str


def heat_map(confusion: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The confusion table laid out for the report: every answer label a column, every gold
    label a row, each cell shaded by its share of the row (agreement green, the rest red)."""
    answers = sorted({answer for row in confusion.values() for answer in row})
    rows = []
    for gold, counts in confusion.items():
        answered = sum(counts.values())
        cells = []
        for answer in answers:
            count = counts.get(answer, 0)
            share = count / answered if answered else 0.0
            rgb = "47, 158, 97" if answer == gold else "217, 72, 59"
            cells.append(HeatCell(answer, count, share, f"rgba({rgb}, {0.08 + 0.8 * share:.3f})"))
        rows.append({"gold": gold, "cells": cells})
    return {"answers": answers, "rows": rows}


def timeline_chart(timeline: Timeline) -> BarChart | None:
    """Stacked bars of finished requests per bucket, coloured by final state."""
    if timeline.start is None or not timeline.counts:
        return None
    n = len(timeline.counts)
    peak = max(sum(bucket.values()) for bucket in timeline.counts)
    top, ticks = _y_axis(peak)
    plot = _plot_box()
    slot = plot["width"] / n
    gap = min(slot * 0.15, 4.0) if n > 1 else slot * 0.3
    bars = []
    for i, bucket in enumerate(timeline.counts):
        base = plot["bottom"]
        begins = timeline.start + timedelta(seconds=i * timeline.width_seconds)
        for state, colour in STATE_COLOURS.items():
            count = bucket.get(state, 0)
            if not count:
                continue
            height = count / top * plot["height"]
            base -= height
            title = f"{format_time(begins)} +{format_seconds(timeline.width_seconds)}: "
            bars.append(
                Bar(
                    x=plot["left"] + i * slot + gap / 2,
                    y=base,
                    width=max(slot - gap, 1.0),
                    height=height,
                    colour=colour,
                    title=f"{title}{count:,} {state}",
                )
            )
    same_day = (timeline.start + timedelta(seconds=n * timeline.width_seconds)).date() == (
        timeline.start.date()
    )
    labels = []
    for i in _time_label_positions(timeline, n + 1):
        when = timeline.start + timedelta(seconds=i * timeline.width_seconds)
        pattern = "%H:%M" if timeline.width_seconds >= 60 else "%H:%M:%S"
        if not same_day:
            pattern = "%m-%d " + pattern
        labels.append((plot["left"] + i * slot, when.strftime(pattern)))
    return BarChart(
        f"finished requests per {format_seconds(timeline.width_seconds)} (UTC)",
        bars,
        [(plot["bottom"] - v / top * plot["height"], f"{v:,}") for v in ticks],
        labels,
    )


def latency_chart(latency: Latency) -> BarChart | None:
    """A histogram of completion latency up to about p99 (the last bar holds the rest), with
    the p50, p90 and p99 marked."""
    if not latency.count or not latency.bins:
        return None
    bins = [*latency.bins, *([latency.overflow] if latency.overflow else [])]
    top, ticks = _y_axis(max(bins))
    plot = _plot_box()
    slot = plot["width"] / len(bins)
    gap = min(slot * 0.12, 3.0)
    bars = []
    for i, count in enumerate(bins):
        low = i * latency.bin_width
        if i == len(latency.bins):
            span, colour = f"≥ {format_seconds(low)}", "#b7791f"
        else:
            span = f"{format_seconds(low)}–{format_seconds(low + latency.bin_width)}"
            colour = "#3b82c4"
        height = count / top * plot["height"]
        bars.append(
            Bar(
                x=plot["left"] + i * slot + gap / 2,
                y=plot["bottom"] - height,
                width=max(slot - gap, 1.0),
                height=height,
                colour=colour,
                title=f"{span}: {count:,} requests",
            )
        )
    edges = len(latency.bins)
    labels = [
        (plot["left"] + i * slot, format_seconds(i * latency.bin_width))
        for i in _label_positions(edges + 1)
    ]
    markers = [
        Marker(plot["left"] + min(value / latency.bin_width, edges) * slot, name)
        for name, value in (
            ("p50", latency.percentiles["0.5"]),
            ("p90", latency.percentiles["0.9"]),
            ("p99", latency.percentiles["0.99"]),
        )
    ]
    return BarChart(
        "succeeded requests by seconds from submission to completion",
        bars,
        [(plot["bottom"] - v / top * plot["height"], f"{v:,}") for v in ticks],
        labels,
        markers,
    )


def format_seconds(value: float | None) -> str:
    """A duration for people: ``0.35 s``, ``12.3 s``, ``4 min 05 s``, ``2 h 03 min``."""
    if value is None:
        return "–"
    if value < 10:
        return f"{value:.2f}".rstrip("0").rstrip(".") + " s"
    if value < 60:
        return f"{value:.1f}".rstrip("0").rstrip(".") + " s"
    if value < 3600:
        minutes, seconds = divmod(round(value), 60)
        return f"{minutes} min {seconds:02d} s" if seconds else f"{minutes} min"
    if value < 86400 * 2:
        hours, minutes = divmod(round(value / 60), 60)
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    return f"{value / 86400:.1f}".rstrip("0").rstrip(".") + " days"


def format_time(value: datetime | None) -> str:
    """A UTC timestamp to the second, or a dash."""
    if value is None:
        return "–"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def format_count(n: int) -> str:
    """A whole number with thousands separators: 1,000,000."""
    return f"{n:,}"


def format_percent(share: float | None) -> str:
    """A share as a percentage with one decimal (``99.9%``), never rounded up to 100."""
    if share is None:
        return "–"
    return f"{math.floor(share * 1000) / 10:.1f}%"


def report_environment(*loaders: BaseLoader) -> Environment:
    """The report's templates (``chatbatch/templates``), autoescaped, undefined names an error;
    ``loaders`` come first (the dashboard's pages, which include the report's sections)."""
    return Environment(
        loader=ChoiceLoader([*loaders, PackageLoader("chatbatch", "templates")]),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
    )


def _plot_box() -> dict[str, float]:
    left, right = MARGIN["left"], CHART_WIDTH - MARGIN["right"]
    top, bottom = MARGIN["top"], CHART_HEIGHT - MARGIN["bottom"]
    return {"left": left, "bottom": bottom, "width": right - left, "height": bottom - top}


def _y_axis(peak: int) -> tuple[float, list[int]]:
    """The top of the y axis and its ticks: whole numbers, a nice step, about four of them."""
    step = max(1, math.ceil(nice_step(max(peak, 1) / 4)))
    top = step * max(1, math.ceil(peak / step))
    return float(top), list(range(0, top + 1, step))


def _label_positions(edges: int) -> list[int]:
    """About ``X_LABELS`` evenly spread indexes among ``edges`` bucket edges, both ends included."""
    if edges <= X_LABELS:
        return list(range(edges))
    step = math.ceil((edges - 1) / (X_LABELS - 1))
    return list(range(0, edges, step))


def _time_label_positions(timeline: Timeline, edges: int) -> list[int]:
    """Bucket edges to label: at most ``X_LABELS``, on round clock times (every minute, every
    5 minutes, …) so the labels read like a clock."""
    assert timeline.start is not None
    width = timeline.width_seconds
    first = round(timeline.start.timestamp()) // width
    for every in (*BUCKET_WIDTHS, *(86400 * d for d in (2, 5, 10, 20, 50, 100))):
        if every % width or (edges - 1) * width / every > X_LABELS - 1:
            continue
        step = every // width
        return [i for i in range(edges) if (first + i) % step == 0]
    return _label_positions(edges)


def _places(amount: str | None) -> int:
    return len((amount or "").partition(".")[2])


def _padded(amount: str | None, places: int) -> str:
    """Decimal text zero-padded to ``places`` decimals, so a column of amounts lines up."""
    if amount is None:
        return "unknown"
    whole, _, fraction = amount.partition(".")
    return f"{whole}.{fraction.ljust(places, '0')}" if places else whole


def _shorten(text: str) -> str:
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
