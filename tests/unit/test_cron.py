"""Cron expressions read as crontab reads them, and the firing a job belongs to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pipeline.cron import cron_trigger, last_firing

MONDAY = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "weekday"),
    [
        ("0 4 * * 0", "Sunday"),  # crontab: 0 and 7 are Sunday (APScheduler alone: Monday)
        ("0 4 * * 7", "Sunday"),
        ("0 4 * * 6", "Saturday"),
        ("0 4 * * 1-5", "Tuesday"),
        ("0 4 * * sun", "Sunday"),
        ("0 0 4 * * 0", "Sunday"),  # with seconds first
    ],
)
def test_weekdays_count_from_sunday_as_in_crontab(expression: str, weekday: str) -> None:
    fire = cron_trigger(expression).get_next_fire_time(None, MONDAY)
    assert fire is not None
    assert fire.strftime("%A") == weekday


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/5 * * * * *", datetime(2026, 12, 7, 5, 0, 0, tzinfo=UTC)),
        ("0 2 * * *", datetime(2026, 12, 7, 2, 0, tzinfo=UTC)),
        ("0 4 * * 0", datetime(2026, 12, 6, 4, 0, tzinfo=UTC)),
        ("0 0 1 * *", datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_a_late_firing_belongs_to_the_latest_scheduled_moment(
    expression: str, expected: datetime
) -> None:
    for late in (timedelta(0), timedelta(milliseconds=3), timedelta(seconds=4)):
        assert last_firing(expression, MONDAY + late) == expected
