"""The weekdays on which the timer's NCRONTAB schedule fires, and its first firing of such a day,
for the missed-run alert.

azd runs this before every provisioning (the preprovision hook in azure.yaml) and passes
its output to infra/main.bicep as NUMERAI_SCHEDULE_WEEKDAYS; the deploy workflow runs it
too. It prints the weekdays as `2,3,4,5,6` (0 = Sunday, as NCRONTAB and KQL's
`dayofweek` count) and refuses, with exit code 2 and the reason, a schedule the alert in
infra/app/alerts.bicep cannot follow, so that a schedule such as `Sat` can no longer
leave the alert silently never firing.

The weekday field is read as the Functions host's NCRONTAB library reads it
(atifaziz/NCrontab, CrontabFieldImpl.cs and CrontabField.cs): numbers 0-6, day names
matched by case-insensitive prefix (`Sat`, `saturday`), ranges in either order,
`/step`, lists and `*`.

The minute and hour fields take the same forms (numbers, ranges, steps, lists, `*`), so
that a healing schedule such as `0 */10 12-13 * * 6` (every ten minutes while the round
can be open) passes; `--first-run` prints its first firing of a due day, `12:00:00`,
which azd passes on as NUMERAI_SCHEDULE_FIRST_RUN.

Usage: python3 infra/hooks/schedule_weekdays.py [--first-run] [SCHEDULE]; without a
schedule it reads NUMERAI_SCHEDULE, and without that the default in
infra/main.parameters.json.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

PARAMETERS = Path(__file__).resolve().parent.parent / "main.parameters.json"
DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
SATURDAY = 6
# The alert follows the first firing of each due day; the second field must be one number.
SECOND_MAX, MINUTE_MAX, HOUR_MAX = 59, 59, 23


class ScheduleError(ValueError):
    """A schedule that the missed-run alert cannot follow; the message says why."""


def default_schedule() -> str:
    """NUMERAI_SCHEDULE's default, as infra/main.parameters.json gives it to azd."""
    value = json.loads(PARAMETERS.read_text())["parameters"]["schedule"]["value"]
    match = re.fullmatch(r"\$\{NUMERAI_SCHEDULE=(.+)\}", value)
    if match is None:
        raise ScheduleError(f"{PARAMETERS.name} gives the schedule no default: {value!r}")
    return match.group(1)


def due_weekdays(schedule: str) -> list[int]:
    """The sorted weekdays (0 = Sunday) on which `schedule` fires; ScheduleError if the
    alert cannot follow it."""
    fields = _fields(schedule)
    days: set[int] = set()
    for part in fields[5].split(","):
        days |= _weekday_part(part)
    return sorted(days)


def first_run(schedule: str) -> str:
    """The schedule's first firing of a due day, as `HH:MM:SS`."""
    fields = _fields(schedule)
    minute = min(_numbers(fields[1], "minute", MINUTE_MAX))
    hour = min(_numbers(fields[2], "hour", HOUR_MAX))
    return f"{hour:02d}:{minute:02d}:{int(fields[0]):02d}"


def _fields(schedule: str) -> list[str]:
    fields = schedule.split(" ")
    if len(fields) != 6:
        raise ScheduleError(
            "needs six fields separated by single spaces: "
            "second minute hour day-of-month month weekday"
        )
    if not fields[0].isdigit() or int(fields[0]) > SECOND_MAX:
        raise ScheduleError(
            f"the second field must be one number from 0 to {SECOND_MAX}, not {fields[0]!r}"
        )
    _numbers(fields[1], "minute", MINUTE_MAX)
    _numbers(fields[2], "hour", HOUR_MAX)
    if fields[3:5] != ["*", "*"]:
        raise ScheduleError(
            "the day-of-month and month fields must be '*': the missed-run "
            "alert follows runs chosen by weekday only"
        )
    return fields


def _numbers(field: str, name: str, highest: int) -> set[int]:
    """The values a minute or hour field takes: numbers, `A-B`, `*`, each with an optional `/step`, listed."""
    values: set[int] = set()
    for part in field.split(","):
        spec, slash, step_text = part.partition("/")
        if slash and (not step_text.isdigit() or int(step_text) == 0):
            raise ScheduleError(f"{name} item {part!r} has no positive whole step after '/'")
        bounds = [0, highest] if spec == "*" else spec.split("-", 1)
        if not all(b.isdigit() and int(b) <= highest for b in map(str, bounds)):
            raise ScheduleError(
                f"the {name} field must use numbers from 0 to {highest}, not {field!r}"
            )
        low, high = (
            sorted(int(b) for b in bounds) if len(bounds) == 2 else (int(bounds[0]), int(bounds[0]))
        )
        if slash and len(bounds) == 1:
            high = highest  # NCrontab reads `N/step` as from N to the last value
        values |= set(range(low, high + 1, int(step_text) if slash else 1))
    return values


def _weekday_part(part: str) -> set[int]:
    """One item of the weekday list: `*`, `N`, `A-B`, each optionally `/step`."""
    spec, slash, step_text = part.partition("/")
    step = 1
    if slash:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ScheduleError(f"weekday item {part!r} has no positive whole step after '/'")
        step = int(step_text)
    if spec == "*":
        low, high = 0, SATURDAY
    elif "-" in spec:
        first, last = spec.split("-", 1)
        # NCrontab swaps a range written backwards: `6-2` is Tuesday to Saturday.
        low, high = sorted((_weekday(first), _weekday(last)))
    else:
        low = _weekday(spec)
        # NCrontab reads `N/step` as from N to the last weekday.
        high = SATURDAY if slash else low
    return set(range(low, high + 1, step))


def _weekday(text: str) -> int:
    """A weekday number 0-6 or the prefix of a day's English name, any case."""
    if text.isdigit():
        if int(text) > SATURDAY:
            raise ScheduleError(f"weekday {text} is out of range: use 0 (Sunday) to 6 (Saturday)")
        return int(text)
    if text.isalpha():
        for number, name in enumerate(DAY_NAMES):
            if name.startswith(text.lower()):
                return number
    raise ScheduleError(
        f"{text!r} is not a weekday: use 0 (Sunday) to 6 (Saturday), or a day's name such as Sat"
    )


def main(argv: list[str]) -> int:
    """Print the schedule's weekdays (or, with --first-run, its first firing of a due day);
    on a schedule the alert cannot follow, say why."""
    args = argv[1:]
    want_first = bool(args) and args[0] == "--first-run"
    args = args[1:] if want_first else args
    schedule = args[0] if args else os.environ.get("NUMERAI_SCHEDULE") or default_schedule()
    try:
        answer = first_run(schedule) if want_first else ",".join(map(str, due_weekdays(schedule)))
    except ScheduleError as exc:
        sys.stderr.write(f"NUMERAI_SCHEDULE {schedule!r} refused: {exc}\n")
        return 2
    sys.stdout.write(answer + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
