"""Parse five-field cron expressions and find their fire times with arq's own ``next_cron``."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from arq.cron import next_cron

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# Field name, lowest and highest value, and names accepted in place of numbers.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day-of-month", 1, 31, {}),
    ("month", 1, 12, {name: i for i, name in enumerate(_MONTHS, start=1)}),
    # 7 is accepted because classic cron allows it as a second spelling of Sunday.
    ("day-of-week", 0, 7, {name: i for i, name in enumerate(_DAYS)}),
)
_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# Longest each month can be (February in leap years): arq would search forever for a date that never occurs.
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_Field = frozenset[int] | None


def _error(expression: str, detail: str) -> ValueError:
    """Build the error for ``expression``, quoting it so the caller can find it in their configuration."""
    return ValueError(f"cron expression {expression!r}: {detail}")


def _parse_field(expression: str, spec: tuple[str, int, int, dict[str, int]], text: str) -> set[int]:
    """Expand one field's comma list of ``*``, ``N``, ``A-B`` items (each optionally ``/step``) into values.

    Raises:
        ValueError: If an item is empty, malformed, out of range, reversed, or has a step of 0.
    """
    name, low, high, names = spec

    def number(token: str, item: str) -> int:
        """Read one number or name, checking it against the field's range."""
        if token.lower() in names:
            return names[token.lower()]
        # isascii() too, because isdigit() accepts characters such as "²" that int() rejects.
        if not (token.isascii() and token.isdigit()):
            raise _error(expression, f"{name} field has an invalid item {item!r}")
        if not low <= int(token) <= high:
            raise _error(expression, f"{name} value {int(token)} is outside {low}-{high}")
        return int(token)

    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise _error(expression, f"{name} field has an empty list item")
        span, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()):
                raise _error(expression, f"{name} step in {item!r} is not a number")
            step = int(step_text)
            if step == 0:
                raise _error(expression, f"{name} step in {item!r} must be at least 1")
        if span == "*":
            start, stop = low, high
        elif "-" in span:
            first, _, last = span.partition("-")
            start, stop = number(first, item), number(last, item)
            if start > stop:
                raise _error(expression, f"{name} range {span!r} is reversed")
        else:
            start = number(span, item)
            # "N/S" is cron shorthand for "N-<highest>/S".
            stop = high if slash else start
        values.update(range(start, stop + 1, step))
    return values


def _parse(expression: str) -> tuple[_Field, ...]:
    """Turn ``expression`` into arq's minute, hour, day, month and weekday selections (None means any).

    Raises:
        ValueError: If the expression is malformed or describes a schedule that cannot be honoured.
    """
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise _error(expression, f"unknown macro {text!r}; use one of {', '.join(_MACROS)}")
        text = _MACROS[text.lower()]
    texts = text.split()
    if len(texts) != len(_FIELDS):
        names = " ".join(spec[0] for spec in _FIELDS)
        raise _error(expression, f"expected 5 fields ({names}), got {len(texts)}")
    minute, hour, day, month, cron_weekday = (
        _parse_field(expression, spec, part) for spec, part in zip(_FIELDS, texts, strict=True)
    )
    if texts[2] != "*" and texts[4] != "*":
        # Classic cron fires when EITHER field matches, arq only when BOTH do: refuse rather than guess.
        raise _error(
            expression,
            "day-of-month and day-of-week are both restricted; cron would fire when either matches but arq "
            "requires both, so use two schedules, one restricting each field",
        )
    if not any(d <= _MONTH_DAYS[m - 1] for m in month for d in day):
        raise _error(expression, "day-of-month never occurs in the selected month(s)")
    # Cron counts weekdays from Sunday = 0 (and 7); arq uses Python's Monday = 0.
    weekday = {(d - 1) % 7 for d in cron_weekday}
    selections = (minute, hour, day, month, weekday)
    # A full range collapses to None so arq skips the field instead of testing every value.
    return tuple(
        None if len(values) == size else frozenset(values)
        for values, size in zip(selections, (60, 24, 31, 12, 7), strict=True)
    )


def _arq(values: _Field) -> int | set[int] | None:
    """Convert a selection to arq's form: arq accepts set, not frozenset, and a single value as an int."""
    if values is None:
        return None
    return next(iter(values)) if len(values) == 1 else set(values)


@dataclass(frozen=True, slots=True, init=False)
class CronSchedule:
    """A five-field cron expression read in one time zone; equal when both select the same instants."""

    expression: str = field(compare=False)
    tz: dt.tzinfo
    _fields: tuple[_Field, ...] = field(repr=False)

    def __init__(self, expression: str, tz: str | dt.tzinfo = "UTC") -> None:
        """Parse ``expression`` and resolve ``tz``.

        Args:
            expression: "minute hour day-of-month month day-of-week", or a macro such as ``@daily``.
            tz: IANA zone name or tzinfo in which the fields are read.

        Raises:
            ValueError: If the expression is invalid or the zone name is unknown.
        """
        if isinstance(tz, str):
            try:
                tz = ZoneInfo(tz)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError(f"unknown time zone {tz!r} for cron expression {expression!r}") from exc
        # Frozen dataclass: assign through object, once, here.
        object.__setattr__(self, "expression", expression)
        object.__setattr__(self, "tz", tz)
        object.__setattr__(self, "_fields", _parse(expression))

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """Return the first fire time strictly after ``moment``, in the schedule's time zone.

        A wall-clock time repeated when clocks go back fires once, at its first occurrence; one skipped
        when clocks go forward fires that many minutes later (02:30 in a one-hour gap fires at 03:30).

        Args:
            moment: Timezone-aware instant to search from.

        Raises:
            ValueError: If ``moment`` is naive.
        """
        if moment.utcoffset() is None:
            raise ValueError(f"cron expression {self.expression!r}: moment {moment!r} must be timezone-aware")
        minute, hour, day, month, weekday = (_arq(values) for values in self._fields)
        after = moment.astimezone(dt.UTC)
        # arq walks naive wall-clock time; tz-aware arithmetic in Python is wall-clock anyway, so this is
        # the same walk, made explicit so the zone is applied once, to the answer.
        local = moment.astimezone(self.tz).replace(tzinfo=None)
        while True:
            local = next_cron(
                local,
                month=month,
                day=day,
                weekday=weekday,
                hour=hour,
                minute=minute,
                second=0,
                microsecond=0,
            )
            # fold=0 picks the first of a repeated wall-clock time, and the pre-transition offset in a gap.
            fire = local.replace(tzinfo=self.tz, fold=0).astimezone(dt.UTC)
            # Only false when ``moment`` is in the second pass of a repeated hour: keep walking past it.
            if fire > after:
                return fire.astimezone(self.tz)
