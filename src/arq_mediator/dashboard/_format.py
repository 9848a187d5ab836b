"""How values read on the pages: times, durations, counts and JSON, as template filters."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any


def when(moment: datetime | None) -> str:
    """Format *moment* as UTC to the second (``2026-12-03 05:53:06``), or a dash when unknown."""
    if moment is None:
        return "—"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def iso(moment: datetime | None) -> str:
    """Format *moment* for a ``<time datetime>`` attribute."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")


def duration(span: timedelta | None) -> str:
    """Format *span* the way a person reads it: ``840 ms``, ``3.2 s``, ``4 min 5 s``, ``2 h 10 min``."""
    if span is None:
        return "—"
    seconds = span.total_seconds()
    if seconds < 0:
        seconds = 0.0
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min"
    return f"{hours // 24} d {hours % 24} h"


def count(number: int) -> str:
    """Format *number* with thin groups of thousands (``100 000``)."""
    return f"{number:,}".replace(",", "\u202f")


def pretty_json(value: Any) -> str:
    """Format *value* as indented JSON; what JSON cannot hold is shown by its ``str``."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def percent(fraction: float | None) -> str:
    """Format a progress *fraction* (0..1) as a whole percentage."""
    if fraction is None:
        return "—"
    return f"{max(0.0, min(1.0, fraction)) * 100:.0f}%"


FILTERS = {
    "when": when,
    "iso": iso,
    "duration": duration,
    "count": count,
    "pretty_json": pretty_json,
    "percent": percent,
}
