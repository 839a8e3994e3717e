"""Cron expressions as the config writes them, turned into APScheduler triggers (UTC).

Five fields are the classic crontab; a sixth, leading field gives seconds (for tests and for
sub-minute polling). The interval between two firings is what `status` calls a stream's period.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.cron import CronTrigger


def cron_trigger(expression: str) -> CronTrigger:
    """Raises ValueError with a readable reason."""
    fields = expression.split()
    if len(fields) == 5:
        return CronTrigger.from_crontab(expression, timezone=UTC)
    if len(fields) == 6:
        second, minute, hour, day, month, day_of_week = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=day_of_week,
            timezone=UTC,
        )
    raise ValueError(f"expected 5 cron fields (or 6 with seconds first), got {len(fields)}")


def period(expression: str, now: datetime | None = None) -> timedelta:
    """The time between the next two firings: how often a stream is expected to succeed."""
    trigger = cron_trigger(expression)
    now = now or datetime.now(UTC)
    first = trigger.get_next_fire_time(None, now)
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1)) if first else None
    if first is None or second is None:
        return timedelta(days=365)
    return second - first
