"""Cron expressions as the config writes them, turned into APScheduler triggers (UTC).

Five fields are the classic crontab; a sixth, leading field gives seconds (for tests and for
sub-minute polling). The interval between two firings is what `status` calls a stream's period.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger

_CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _crontab_weekdays(field: str) -> str:
    """Crontab numbers weekdays from Sunday (0 or 7); APScheduler from Monday: use names."""
    return re.sub(r"(?<![/\w])[0-7](?![\w])", lambda m: _CRONTAB_DAYS[int(m.group())], field)


def cron_trigger(expression: str) -> CronTrigger:
    """Raises ValueError with a readable reason."""
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise ValueError(f"expected 5 cron fields (or 6 with seconds first), got {len(fields)}")
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, day, month, day_of_week = fields
    return CronTrigger(
        second=second,
        minute=minute,
        hour=hour,
        day=day,
        month=month,
        day_of_week=_crontab_weekdays(day_of_week),
        timezone=UTC,
    )


def firing_trigger(expression: str, now: datetime | None = None) -> CronTrigger:
    """`cron_trigger`, refusing an expression that parses but never fires ("0 0 30 2 *": no
    February has a 30th), which would leave a scheduler with a job that has no next run. Day of
    month and day of week must both match (APScheduler's rule; classic cron takes either)."""
    trigger = cron_trigger(expression)
    if trigger.get_next_fire_time(None, now or datetime.now(UTC)) is None:
        raise ValueError(
            "never fires (no date matches every field: e.g. a day of the month that month never "
            "has, or a day of the month and a weekday that never fall together)"
        )
    return trigger


def period(expression: str, now: datetime | None = None) -> timedelta:
    """The time between the next two firings: how often a stream is expected to succeed."""
    trigger = cron_trigger(expression)
    now = now or datetime.now(UTC)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1)) if first else None
    if first is None or second is None:
        return timedelta(days=365)
    return second - first


def last_firing(expression: str, now: datetime) -> datetime:
    """The latest firing at or before `now`: which firing a job that fires now belongs to, the
    same in every scheduler process (so they can agree to defer it once)."""
    trigger = cron_trigger(expression)
    moment = trigger.get_next_fire_time(None, now - 2 * period(expression, now))
    if moment is None or moment > now:
        return moment or now
    while True:
        following = trigger.get_next_fire_time(moment, moment + timedelta(microseconds=1))
        if following is None or following > now:
            return moment
        moment = following
