"""Cron expressions: parsing, fire times computed through arq's `next_cron`, and every refusal."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from arq_mediator._cron import CronSchedule

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, micro: int = 0
) -> dt.datetime:
    """Build an aware UTC datetime tersely."""
    return dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        pytest.param("0 2 * * *", utc(2026, 11, 28, 3), utc(2026, 11, 29, 2), id="daily-already-passed"),
        pytest.param("0 2 * * *", utc(2026, 11, 28, 1, 59, 59), utc(2026, 11, 28, 2), id="daily-later-today"),
        pytest.param("*/2 * * * *", utc(2026, 1, 1, 10, 3), utc(2026, 1, 1, 10, 4), id="every-2-min"),
        pytest.param("*/2 * * * *", utc(2026, 1, 1, 23, 59), utc(2026, 1, 2), id="every-2-min-day-end"),
        pytest.param("0 * * * *", utc(2026, 1, 1, 10, 0, 1), utc(2026, 1, 1, 11), id="hourly"),
        pytest.param("0 * * * *", utc(2026, 12, 31, 23, 30), utc(2027, 1, 1), id="hourly-year-end"),
        pytest.param("30 9 * * mon-fri", utc(2026, 11, 27, 10), utc(2026, 11, 30, 9, 30), id="weekend-skip"),
        pytest.param("30 9 * * 1-5", utc(2026, 11, 26, 9, 31), utc(2026, 11, 27, 9, 30), id="weekday-next"),
        pytest.param("0 0 1 * *", utc(2026, 11, 15), utc(2026, 12, 1), id="month-start"),
        pytest.param("0 0 1 * *", utc(2026, 12, 15), utc(2027, 1, 1), id="month-start-year-end"),
        pytest.param("0 0 29 2 *", utc(2026, 3, 1), utc(2028, 2, 29), id="leap-day"),
        pytest.param("0 0 29 2 *", utc(2028, 2, 29), utc(2032, 2, 29), id="leap-day-from-leap-day"),
        pytest.param("0 0 31 * *", utc(2026, 4, 1), utc(2026, 5, 31), id="skips-30-day-months"),
        pytest.param("0 12 * * 0", utc(2026, 11, 25), utc(2026, 11, 29, 12), id="sunday-as-0"),
        pytest.param("0 12 * * 7", utc(2026, 11, 25), utc(2026, 11, 29, 12), id="sunday-as-7"),
        pytest.param("0 12 * * SUN", utc(2026, 11, 25), utc(2026, 11, 29, 12), id="sunday-by-name"),
        pytest.param("0 12 * * 5-7", utc(2026, 11, 29, 13), utc(2026, 12, 4, 12), id="fri-to-sun-range"),
        pytest.param("0 0 1 Jan *", utc(2026, 6, 1), utc(2027, 1, 1), id="month-by-name"),
        pytest.param("0 0 1 feb,MAR *", utc(2026, 2, 1), utc(2026, 3, 1), id="month-name-list"),
        pytest.param("0 0 1 jun-aug/2 *", utc(2026, 6, 2), utc(2026, 8, 1), id="month-name-range-step"),
        pytest.param("0,30 * * * *", utc(2026, 1, 1, 10, 15), utc(2026, 1, 1, 10, 30), id="list"),
        pytest.param("5-10/2 * * * *", utc(2026, 1, 1, 10, 6), utc(2026, 1, 1, 10, 7), id="range-step"),
        pytest.param("5-10/2 * * * *", utc(2026, 1, 1, 10, 9), utc(2026, 1, 1, 11, 5), id="range-step-wrap"),
        pytest.param("50/5 * * * *", utc(2026, 1, 1, 10, 56), utc(2026, 1, 1, 11, 50), id="start-step"),
        pytest.param("0 */6 * * *", utc(2026, 1, 1, 13), utc(2026, 1, 1, 18), id="hour-step"),
        pytest.param("* * * * *", utc(2026, 1, 1, 10), utc(2026, 1, 1, 10, 1), id="every-minute"),
        pytest.param("0 0 * * 0-6", utc(2026, 1, 1, 10), utc(2026, 1, 2), id="full-weekday-range"),
        pytest.param("  0 2 * * *  ", utc(2026, 1, 1), utc(2026, 1, 1, 2), id="surrounding-space"),
        pytest.param("@yearly", utc(2026, 6, 1), utc(2027, 1, 1), id="yearly"),
        pytest.param("@annually", utc(2026, 6, 1), utc(2027, 1, 1), id="annually"),
        pytest.param("@monthly", utc(2026, 11, 25), utc(2026, 12, 1), id="monthly"),
        pytest.param("@weekly", utc(2026, 11, 25), utc(2026, 11, 29), id="weekly-is-sunday"),
        pytest.param("@daily", utc(2026, 11, 25, 10), utc(2026, 11, 26), id="daily"),
        pytest.param("@midnight", utc(2026, 11, 25, 10), utc(2026, 11, 26), id="midnight"),
        pytest.param("@hourly", utc(2026, 11, 25, 10, 1), utc(2026, 11, 25, 11), id="hourly-macro"),
        pytest.param("@DAILY", utc(2026, 11, 25, 10), utc(2026, 11, 26), id="macro-case"),
    ],
)
def test_next_after_in_utc(expression: str, moment: dt.datetime, expected: dt.datetime) -> None:
    """Each expression fires first at the hand-computed UTC instant after the moment."""
    fired = CronSchedule(expression).next_after(moment)
    assert fired == expected
    assert fired.utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        pytest.param("* * * * *", utc(2026, 1, 1, 10, 1), utc(2026, 1, 1, 10, 2), id="on-tick-every-minute"),
        pytest.param("0 2 * * *", utc(2026, 1, 1, 2), utc(2026, 1, 2, 2), id="on-tick-daily"),
        pytest.param(
            "* * * * *", utc(2026, 1, 1, 10, 0, 59, 999_999), utc(2026, 1, 1, 10, 1), id="just-before"
        ),
        pytest.param("* * * * *", utc(2026, 1, 1, 10, 0, 0, 1), utc(2026, 1, 1, 10, 1), id="just-after"),
        pytest.param(
            "0 10 * * *", utc(2026, 1, 1, 9, 59, 59, 500_000), utc(2026, 1, 1, 10), id="half-second"
        ),
        pytest.param("0 10 * * *", utc(2026, 1, 1, 10, 0, 30), utc(2026, 1, 2, 10), id="seconds-past-tick"),
    ],
)
def test_next_after_is_strictly_after_and_on_whole_minutes(
    expression: str, moment: dt.datetime, expected: dt.datetime
) -> None:
    """A moment on a tick moves to the next tick, and sub-minute parts of the moment never leak through."""
    fired = CronSchedule(expression).next_after(moment)
    assert fired == expected
    assert (fired.second, fired.microsecond) == (0, 0)


def test_moment_in_another_zone_is_compared_as_an_instant() -> None:
    """A moment given at +05:00 is read as the instant it denotes, not as a UTC wall time."""
    # 06:30+05:00 is 01:30Z: read as 06:30Z it would wrongly skip to the next day.
    moment = dt.datetime(2026, 1, 1, 6, 30, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    assert CronSchedule("0 2 * * *").next_after(moment) == utc(2026, 1, 1, 2)


@pytest.mark.parametrize(
    ("moment", "expected_utc", "expected_offset_hours"),
    [
        pytest.param(utc(2026, 7, 1), utc(2026, 7, 1, 8, 15), 2, id="summer-cest"),
        pytest.param(utc(2026, 12, 1), utc(2026, 12, 1, 9, 15), 1, id="winter-cet"),
        pytest.param(utc(2026, 7, 1, 8, 15), utc(2026, 7, 2, 8, 15), 2, id="on-tick-summer"),
    ],
)
def test_fields_are_read_in_the_schedule_zone(
    moment: dt.datetime, expected_utc: dt.datetime, expected_offset_hours: int
) -> None:
    """10:15 in Europe/Berlin fires at 08:15Z in summer and 09:15Z in winter, returned in Berlin time."""
    fired = CronSchedule("15 10 * * *", tz="Europe/Berlin").next_after(moment)
    assert fired == expected_utc
    assert fired.tzinfo is BERLIN
    assert fired.utcoffset() == dt.timedelta(hours=expected_offset_hours)
    assert (fired.hour, fired.minute) == (10, 15)


def test_tzinfo_object_is_accepted() -> None:
    """A fixed-offset tzinfo is used as given, not looked up by name."""
    eastern = dt.timezone(dt.timedelta(hours=-5))
    schedule = CronSchedule("0 9 * * *", tz=eastern)
    assert schedule.tz is eastern
    assert schedule.next_after(utc(2026, 1, 1)) == utc(2026, 1, 1, 14)


@pytest.mark.parametrize(
    ("expression", "moment", "expected"),
    [
        # 2026-03-29: Berlin jumps from 02:00 CET to 03:00 CEST, so 02:30 does not exist that day.
        pytest.param("30 2 * * *", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1, 30), id="gap-shifts-forward"),
        pytest.param("30 2 * * *", utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 30), id="day-after-gap"),
        # 2026-10-25: Berlin falls back from 03:00 CEST to 02:00 CET, so 02:00-02:59 happens twice.
        pytest.param("30 2 * * *", utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30), id="repeat-first-pass"),
        pytest.param(
            "30 2 * * *", utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30), id="repeat-fires-once"
        ),
        pytest.param("*/15 * * * *", utc(2026, 10, 25, 1, 10), utc(2026, 10, 25, 2), id="inside-second-pass"),
        pytest.param("*/15 * * * *", utc(2026, 10, 25, 0, 45), utc(2026, 10, 25, 2), id="skips-second-pass"),
    ],
)
def test_daylight_saving_transitions(expression: str, moment: dt.datetime, expected: dt.datetime) -> None:
    """Skipped wall times fire shifted by the gap, and repeated wall times fire only on their first pass."""
    fired = CronSchedule(expression, tz="Europe/Berlin").next_after(moment)
    # Compare in UTC: PEP 495 makes == between zones False whenever one side is an ambiguous wall time.
    assert fired.astimezone(UTC) == expected
    assert fired > moment
    # The answer is a real Berlin wall time: converting through UTC and back does not change it.
    assert fired.astimezone(UTC).astimezone(BERLIN).replace(tzinfo=None) == fired.replace(tzinfo=None)


def test_attributes_keep_the_expression_and_resolve_the_zone() -> None:
    """The original string is kept verbatim and a zone name becomes a ZoneInfo."""
    schedule = CronSchedule("@Daily", tz="Europe/Berlin")
    assert schedule.expression == "@Daily"
    assert schedule.tz is BERLIN
    assert CronSchedule("* * * * *").tz is ZoneInfo("UTC")


def test_schedules_compare_by_meaning_and_zone() -> None:
    """Equivalent spellings are equal and hash alike; a different zone, time or type is unequal."""
    assert CronSchedule("@daily") == CronSchedule("0 0 * * *")
    assert CronSchedule("0 0 * * 7") == CronSchedule("0 0 * * sun")
    assert hash(CronSchedule("@daily")) == hash(CronSchedule("0 0 * * 0-6"))
    assert CronSchedule("@daily") != CronSchedule("@daily", tz="Europe/Berlin")
    assert CronSchedule("@daily") != CronSchedule("0 1 * * *")
    not_a_schedule: object = "@daily"
    assert CronSchedule("@daily") != not_a_schedule


def test_repr_shows_expression_and_zone() -> None:
    """The repr names the class, the expression as written and the zone."""
    assert repr(CronSchedule("0 2 * * *", tz="Europe/Berlin")) == (
        "CronSchedule(expression='0 2 * * *', tz=zoneinfo.ZoneInfo(key='Europe/Berlin'))"
    )


def test_schedule_is_immutable() -> None:
    """Assigning to an attribute fails, so a schedule is safe to hash and share."""
    schedule = CronSchedule("@daily")
    with pytest.raises(dataclasses.FrozenInstanceError):
        schedule.expression = "@hourly"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute value 61 is outside 0-59"),
        ("* 24 * * *", "hour value 24 is outside 0-23"),
        ("* * 0 * *", "day-of-month value 0 is outside 1-31"),
        ("* * 32 * *", "day-of-month value 32 is outside 1-31"),
        ("* * * 13 *", "month value 13 is outside 1-12"),
        ("* * * 0 *", "month value 0 is outside 1-12"),
        ("* * * * 8", "day-of-week value 8 is outside 0-7"),
        ("0-60 * * * *", "minute value 60 is outside 0-59"),
        ("", "expected 5 fields (minute hour day-of-month month day-of-week), got 0"),
        ("   ", "expected 5 fields (minute hour day-of-month month day-of-week), got 0"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("* * * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
        ("1,,2 * * * *", "minute field has an empty list item"),
        ("* 1, * * *", "hour field has an empty list item"),
        ("*/0 * * * *", "minute step in '*/0' must be at least 1"),
        ("* 1-5/0 * * *", "hour step in '1-5/0' must be at least 1"),
        ("*/x * * * *", "minute step in '*/x' is not a number"),
        ("*/ * * * *", "minute step in '*/' is not a number"),
        ("1/2/3 * * * *", "minute step in '1/2/3' is not a number"),
        ("10-5 * * * *", "minute range '10-5' is reversed"),
        ("* * * * fri-mon", "day-of-week range 'fri-mon' is reversed"),
        ("abc * * * *", "minute field has an invalid item 'abc'"),
        ("* * * * mon-xyz", "day-of-week field has an invalid item 'mon-xyz'"),
        ("* * * foo *", "month field has an invalid item 'foo'"),
        ("* * * * jan", "day-of-week field has an invalid item 'jan'"),
        ("jan * * * *", "minute field has an invalid item 'jan'"),
        ("-1 * * * *", "minute field has an invalid item '-1'"),
        ("1-2-3 * * * *", "minute field has an invalid item '1-2-3'"),
        ("*-5 * * * *", "minute field has an invalid item '*-5'"),
        ("? * * * *", "minute field has an invalid item '?'"),
        ("\u00b2 * * * *", "minute field has an invalid item '\u00b2'"),
        ("@reboot", "unknown macro '@reboot'; use one of @yearly, @annually, @monthly, @weekly, @daily"),
        ("@daily 5", "unknown macro '@daily 5'"),
        ("0 0 30 2 *", "day-of-month never occurs in the selected month(s)"),
        ("0 0 31 apr,jun,sep,nov *", "day-of-month never occurs in the selected month(s)"),
    ],
)
def test_invalid_expressions_are_refused(expression: str, message: str) -> None:
    """Each malformed expression raises a ValueError that quotes it and names the offending field."""
    with pytest.raises(ValueError, match=re.escape(f"cron expression {expression!r}: {message}")):
        CronSchedule(expression)


@pytest.mark.parametrize("expression", ["0 0 1 * mon", "0 9 1-7 * 1-5", "0 0 15 * 0-6", "0 0 */1 * 7"])
def test_restricting_both_day_fields_is_refused(expression: str) -> None:
    """Cron ORs day-of-month with day-of-week but arq ANDs them, so restricting both is refused."""
    with pytest.raises(ValueError, match=r"both restricted.*either.*arq requires both.*two schedules"):
        CronSchedule(expression)


def test_restricting_one_day_field_is_accepted() -> None:
    """Restricting only one of the two day fields means the same in cron and arq, so it is allowed."""
    assert CronSchedule("0 0 */2 * *").next_after(utc(2026, 1, 1, 1)) == utc(2026, 1, 3)
    assert CronSchedule("0 0 * * fri").next_after(utc(2026, 1, 1, 1)) == utc(2026, 1, 2)


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "", "../etc/passwd", "/etc/localtime", "utc"])
def test_unknown_time_zone_is_refused(tz: str) -> None:
    """A zone name that zoneinfo cannot resolve raises a ValueError naming it."""
    with pytest.raises(ValueError, match=f"unknown time zone {tz!r} for cron expression '@daily'"):
        CronSchedule("@daily", tz=tz)


def test_naive_moment_is_refused() -> None:
    """A naive datetime is ambiguous, so next_after raises rather than guessing its zone."""
    with pytest.raises(ValueError, match=r"'@daily': moment .* must be timezone-aware"):
        CronSchedule("@daily").next_after(dt.datetime(2026, 1, 1))
