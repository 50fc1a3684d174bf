"""The timer's NCRONTAB schedule (`NUMERAI_SCHEDULE`, six fields, seconds first, UTC): its next firings.

Reads the forms the Functions host's NCRONTAB reads (numbers, `*`, ranges, `/step`, lists, and
day names by prefix), enough for `doctor` to set the firings against Numerai's window.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from shared.errors import SettingsError

SCHEDULE_SETTING = "NUMERAI_SCHEDULE"
DEFAULT_SCHEDULE = "0 */10 12-13 * * 6"  # function.bicep's default: Saturdays 12:00-13:50 UTC
_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
# (lowest, highest, names) of each field: second, minute, hour, day of month, month, weekday.
_FIELDS = (
    (0, 59, ()),
    (0, 59, ()),
    (0, 23, ()),
    (1, 31, ()),
    (1, 12, _MONTH_NAMES),
    (0, 6, _DAY_NAMES),
)


def next_firings(schedule: str, after: datetime, count: int) -> list[datetime]:
    """The schedule's next `count` firings after `after` (UTC), within the coming 400 days."""
    seconds, minutes, hours, days, months, weekdays = _parse(schedule)
    firings: list[datetime] = []
    day = after.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(400):
        # NCRONTAB (unlike Vixie cron) fires only on a day matching both the day of month and the weekday.
        if day.month in months and day.day in days and (day.isoweekday() % 7) in weekdays:
            for hour in sorted(hours):
                for minute in sorted(minutes):
                    for second in sorted(seconds):
                        moment = day.replace(hour=hour, minute=minute, second=second)
                        if moment > after:
                            firings.append(moment)
                            if len(firings) == count:
                                return firings
        day += timedelta(days=1)
    return firings


def _parse(schedule: str) -> list[set[int]]:
    fields = schedule.split()
    if len(fields) != len(_FIELDS):
        raise SettingsError(
            f"{SCHEDULE_SETTING} must have six fields (second minute hour day month weekday); "
            f"it is {schedule!r}"
        )
    return [_field(text, *spec, schedule) for text, spec in zip(fields, _FIELDS, strict=True)]


def _field(text: str, low: int, high: int, names: tuple[str, ...], schedule: str) -> set[int]:
    values: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        try:
            step = int(step_text) if step_text else 1
            if span == "*":
                first, last = low, high
            else:
                start, _, end = span.partition("-")
                first = _value(start, names, low)
                last = _value(end, names, low) if end else (high if step_text else first)
        except ValueError:
            raise SettingsError(
                f"{SCHEDULE_SETTING}: {part!r} in {schedule!r} is not a value, range or step NCRONTAB reads"
            ) from None
        if first > last:
            first, last = last, first
        if step < 1 or first < low or last > high:
            raise SettingsError(
                f"{SCHEDULE_SETTING}: {part!r} in {schedule!r} is outside {low}-{high}"
            )
        values.update(range(first, last + 1, step))
    return values


def _value(text: str, names: tuple[str, ...], low: int) -> int:
    if text.isdigit():
        return int(text)
    matches = [i for i, name in enumerate(names) if text and name.startswith(text.lower())]
    if len(matches) != 1:
        raise ValueError(text)
    return matches[0] + low
