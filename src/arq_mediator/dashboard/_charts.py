"""Throughput graphs drawn on the server as SVG coordinates, so the pages need no chart library."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC

from ._model import ThroughputPoint

WIDTH = 720
HEIGHT = 160
# Room for the y-axis labels on the left and the x-axis labels below.
LEFT = 44
BOTTOM = 20
TOP = 8


@dataclass(frozen=True, slots=True)
class Bar:
    """One interval's two bars (succeeded, failed), ready to draw."""

    x: float
    width: float
    succeeded_y: float
    succeeded_height: float
    failed_y: float
    failed_height: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A bar chart of succeeded and failed jobs per interval, in SVG user units."""

    title: str
    width: int
    height: int
    left: int
    top: int
    bottom: int
    peak: int
    bars: list[Bar]
    labels: list[tuple[float, str]]
    succeeded_total: int
    failed_total: int

    @property
    def baseline(self) -> int:
        """The y of the x axis."""
        return self.height - self.bottom


def throughput_chart(title: str, points: list[ThroughputPoint], label_format: str) -> Chart:
    """Lay out *points* (oldest first) as side-by-side bars with about six x-axis labels."""
    plot_height = HEIGHT - BOTTOM - TOP
    peak = max((max(point.succeeded, point.failed) for point in points), default=0)
    scale = plot_height / peak if peak else 0.0
    slot = (WIDTH - LEFT) / max(len(points), 1)
    bar_width = max(slot / 2 - 0.5, 0.5)
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    step = max(len(points) // 6, 1)
    baseline = HEIGHT - BOTTOM
    for index, point in enumerate(points):
        x = LEFT + index * slot
        succeeded = point.succeeded * scale
        failed = point.failed * scale
        start = point.start.astimezone(UTC) if point.start.tzinfo else point.start
        bars.append(
            Bar(
                x=round(x, 2),
                width=round(bar_width, 2),
                succeeded_y=round(baseline - succeeded, 2),
                succeeded_height=round(succeeded, 2),
                failed_y=round(baseline - failed, 2),
                failed_height=round(failed, 2),
                title=f"{start.strftime(label_format)}: {point.succeeded} succeeded, {point.failed} failed",
            )
        )
        if index % step == 0:
            labels.append((round(x, 2), start.strftime(label_format)))
    return Chart(
        title=title,
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        bottom=BOTTOM,
        peak=peak,
        bars=bars,
        labels=labels,
        succeeded_total=sum(point.succeeded for point in points),
        failed_total=sum(point.failed for point in points),
    )
